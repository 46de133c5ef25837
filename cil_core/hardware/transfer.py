"""Weight-transfer primitives every chip backend shares: symmetric b-bit quantization with a
per-tensor scale, and the straight-through estimator that lets a quantized (or measured) value
carry the gradient of its software counterpart."""

from __future__ import annotations

import torch


def symmetric_scale(w: torch.Tensor, bits: int, n_sets: int | None = None) -> torch.Tensor:
    r"""Per-tensor (per-set with ``n_sets``) scale :math:`s = \max|w| / (2^{b-1}-1)`.

    A tensor of zeros gets scale 1 (so that dividing by it is safe). With ``n_sets`` the
    result has shape ``[S, 1, ..., 1]`` (broadcastable against ``w``), else it is a scalar.
    """
    levels = 2 ** (bits - 1) - 1
    if n_sets is None:
        amax = w.detach().abs().max()
    else:
        amax = w.detach().abs().reshape(w.shape[0], -1).max(1).values.view(-1, *([1] * (w.dim() - 1)))
    scale = amax / levels
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_symmetric(w: torch.Tensor, bits: int, scale: torch.Tensor | float | None = None,
                       n_sets: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Symmetric b-bit quantization: codes :math:`q = \mathrm{clip}(\mathrm{round}(w/s),
    -(2^{b-1}-1), 2^{b-1}-1)` and the scale :math:`s` (:func:`symmetric_scale` unless given).

    Returns ``(q, s)``; the value the chip realises is ``q * s``. ``q`` is a float tensor of
    integers (cast it to the chip's integer type where needed).
    """
    if bits < 2:
        raise ValueError(f"quantization needs at least 2 bits, got {bits}")
    levels = 2 ** (bits - 1) - 1
    s = symmetric_scale(w, bits, n_sets) if scale is None else torch.as_tensor(scale, dtype=w.dtype, device=w.device)
    q = torch.clamp(torch.round(w / s), -levels, levels)
    return q, s


def straight_through(software: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    r"""The value of ``measured`` with the gradient of ``software``:

    .. math:: y = x_{sw} + \mathrm{sg}[x_{hw} - x_{sw}]

    (``sg`` = stop-gradient). Used for chip-in-the-loop forward values (CIL-SPL) and for
    quantization-aware straight-through rounding."""
    return software + (measured.to(software.dtype) - software).detach()


__all__ = ["symmetric_scale", "quantize_symmetric", "straight_through"]
