"""A fast, exact test that a tensor holds no NaN or infinity.

``torch.isfinite(t).all()`` builds a boolean tensor of ``t``'s size in three elementwise passes
(``eq``, ``abs``, ``ne``) and then reduces it: on a ``[16, 398, 62]`` float input, 0.72 ms on
one core of this project's machines, against 0.02 ms for ``t.sum()``. :func:`all_finite` reduces
first and inspects only the sum:

* every element finite, and the sum finite: the answer is ``True`` without the full scan;
* an element NaN or ±inf: the sum is NaN or ±inf *whatever the order of summation*
  (``NaN + a = NaN``; ``inf + a = inf`` for finite ``a``; ``inf + (-inf) = NaN``), so a finite
  sum proves that every element is finite;
* a non-finite sum that comes from overflow of finite values (``3e38 + 3e38``) is not a
  proof of anything: the exact elementwise test then decides.

So the answer is always exactly ``bool(torch.isfinite(t).all())``; only the time differs.
"""

from __future__ import annotations

import torch


def all_finite(t: torch.Tensor) -> bool:
    """``bool(torch.isfinite(t).all())``, usually with one reduction instead of a boolean
    tensor of ``t``'s size (the argument is in the module doc). Integer and boolean tensors are
    always finite; complex tensors take the exact test."""
    if not (t.is_floating_point() or t.is_complex()):
        return True
    if t.numel() == 0:
        return True
    if t.is_floating_point() and bool(torch.isfinite(t.detach().sum())):
        return True
    return bool(torch.isfinite(t).all())


def count_non_finite(t: torch.Tensor) -> int:
    """How many elements of ``t`` are NaN or ±inf (for error messages; the full scan)."""
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    return int((~torch.isfinite(t)).sum())


__all__ = ["all_finite", "count_non_finite"]
