"""Readouts and losses on a network output ``[T, B, C]`` (or ``[T, S, B, C]``).

* ``"rate"``: logits are spike counts times a scale, :math:`z_c = s \\sum_t S_{t,c}`; loss is
  the cross entropy :math:`-\\log \\mathrm{softmax}(z)_y` (snntorch's ``ce_count_loss`` for s = 1).
  Prediction: :math:`\\arg\\max_c z_c` (ties go to the lowest class index).
* ``"max-membrane"``: logits are the maximum over time of a readout membrane,
  :math:`z_c = \\max_t v_{t,c}` (Cramer et al. 2020); loss is the cross entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import OptionError


@dataclass(frozen=True)
class Readout:
    """How network outputs become class scores. ``scale`` multiplies the logits."""

    kind: str = "rate"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("rate", "max-membrane"):
            raise OptionError(f"unknown readout {self.kind!r}; use 'rate' or 'max-membrane'")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise OptionError(f"readout scale must be a positive number, got {self.scale!r}")

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        """``[T, ..., C]`` → ``[..., C]`` (time is reduced, the last dimension holds the classes)."""
        if self.kind == "rate":
            return output.sum(0) * self.scale
        return output.max(0).values * self.scale

    def loss(self, output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross entropy of the logits; with a set dimension, one value per set (``reduction``
        ``"mean"`` or ``"sum"`` over the samples) or ``[S, B]`` per set and sample (``"none"``)."""
        z = self.logits(output)
        if z.dim() == 3:  # [S, B, C]
            S, B, C = z.shape
            ce = F.cross_entropy(z.reshape(S * B, C), target.repeat(S), reduction="none").view(S, B)
            if reduction == "none":
                return ce
            return ce.mean(1) if reduction == "mean" else ce.sum(1)
        return F.cross_entropy(z, target, reduction=reduction)

    def correct(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Number of correct predictions (per set with a set dimension)."""
        pred = self.logits(output).argmax(-1)
        return (pred == target).sum(-1)
