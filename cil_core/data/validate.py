"""Validation of data at the door: one place that checks what a user hands to ``fit`` and
``evaluate`` against the network, casts what is safe and refuses what is not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import DataError, NonFiniteError, ShapeError
from ..network.finite import all_finite, count_non_finite
from . import EventBatch, SpikeData, as_data

if TYPE_CHECKING:  # pragma: no cover
    from ..network.description import NetworkSpec

#: input dtypes that are cast to the network's float dtype without loss of meaning
_SAFE_INPUT = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
               torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_data(data: Any, spec: "NetworkSpec", *, n_classes: int | None = None, what: str = "training data",
               dtype: torch.dtype = torch.float32) -> SpikeData:
    """Return ``data`` as :class:`SpikeData` the network can run, or raise naming the problem.

    * inputs time-major ``[T, N, *spec.input_shape]`` (:class:`ShapeError` otherwise), at least
      one time step and one sample (:class:`DataError`);
    * integer, boolean and other float inputs are cast to ``dtype`` (spike counts keep their
      values); complex or other dtypes are refused; NaN/inf raise :class:`NonFiniteError`;
    * labels: integers (float labels only when they hold whole numbers), in ``0 .. n_classes-1``
      (a hint is given for 1-based labels).
    """
    try:
        d = as_data(data)
    except (ShapeError, DataError) as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    x = d.x.dense if isinstance(d.x, EventBatch) else d.x
    want = tuple(spec.input_shape)
    if x.dim() != 2 + len(want) or tuple(x.shape[2:]) != want:
        raise ShapeError(f"{what}: inputs have shape {tuple(x.shape)}; the network expects time-major "
                         f"[T, N, {', '.join(map(str, want))}]")
    if x.shape[0] == 0:
        raise DataError(f"{what}: inputs have no time steps (shape {tuple(x.shape)})")
    if len(d) == 0:
        raise DataError(f"{what} is empty (0 samples)")
    if x.dtype not in _SAFE_INPUT:
        raise DataError(f"{what}: inputs of dtype {x.dtype} cannot be cast to {dtype}; pass spike counts or floats")
    if not all_finite(x):
        raise NonFiniteError(f"{what}: inputs hold {count_non_finite(x)} NaN or inf value(s)")
    if x.dtype != dtype:
        x = x.to(dtype)
    y = _labels(d.y, what, n_classes)
    if isinstance(d.x, EventBatch):
        return SpikeData(EventBatch(x, d.x.events, d.x.duration_us), y)
    return SpikeData(x, y)


def _labels(y: torch.Tensor, what: str, n_classes: int | None) -> torch.Tensor:
    """``y`` is already integral (:class:`SpikeData` refuses fractional labels)."""
    if n_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            hint = " (1-based labels? subtract 1)" if lo >= 1 and hi == n_classes else ""
            raise DataError(f"{what}: labels lie in {lo}..{hi}, the network has {n_classes} outputs (classes "
                            f"0..{n_classes - 1}){hint}")
    return y


__all__ = ["check_data"]
