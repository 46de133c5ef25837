"""Network vocabulary: the synaptic and shaping layers of a :class:`~cil_core.network.spec.NetworkSpec`
(everything but the neurons, see :mod:`cil_core.network.neuron`).

Synaptic layers (:class:`Dense`, :class:`Conv1d`, :class:`Conv2d`) refer to their trainable
tensors by **name** (the name the parameter has in the wrapped model, e.g. ``"0.weight"``); the
values live in the model, so training updates the user's own model in place. Shapes are per
sample, without the time and batch dimensions.

Non-neuron layers besides synapses: :class:`Pool2d` (sum, average or *spiking max pooling*:
:math:`y = \\max_{window} x`, on binary spikes a logical OR), :class:`BatchNorm` (inference
statistics, :math:`y = \\gamma (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon} + \\beta`, folded into the
preceding synaptic layer for chips that cannot run it, see
:func:`cil_core.hardware.transfer.fold_batchnorm`), :class:`Dropout` (software training passes
only; never on a chip), :class:`Conv1d`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ShapeError, SpecError

__all__ = ["Dense", "Conv1d", "Conv2d", "Pool2d", "Flatten", "BatchNorm", "Dropout", "SYNAPTIC"]


@dataclass(frozen=True)
class Dense:
    """Fully connected synapses: :math:`y = x W^T (+ b)`; ``W`` has shape ``[out, in]``.

    ``weight_layout="in-out"``: the model holds the weight as ``A = W^T`` (shape ``[in, out]``,
    rockpool's ``LinearTorch``: :math:`y = x A + b`, computed as ``F.linear(x, A.T, b)``, the
    library's own call on the same strided view). Only the software pass sees this layout:
    every backend receives ``[out, in]`` weights and a ``"out-in"`` layer
    (:func:`cil_core.hardware.transfer.prepare_for_backend`)."""

    weight: str
    bias: str | None
    in_features: int
    out_features: int
    weight_layout: Literal["out-in", "in-out"] = "out-in"

    kind = "dense"

    def __post_init__(self) -> None:
        if self.weight_layout not in ("out-in", "in-out"):
            raise SpecError(f"Dense layer '{self.weight}': unknown weight_layout {self.weight_layout!r}; use 'out-in' "
                            "or 'in-out'")

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the weight and bias tensors (the weight as the model holds it)."""
        if self.weight_layout == "in-out":
            return (self.in_features, self.out_features), (self.out_features,)
        return (self.out_features, self.in_features), (self.out_features,)

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.in_features,):
            raise ShapeError(f"Dense layer '{self.weight}' expects input features ({self.in_features},), got {in_shape}")
        return (self.out_features,)


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution synapses, weight ``[out_channels, in_channels, kh, kw]``."""

    weight: str
    bias: str | None
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    kind = "conv2d"

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the weight and bias tensors."""
        return (self.out_channels, self.in_channels, *self.kernel_size), (self.out_channels,)

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise ShapeError(
                f"Conv2d layer '{self.weight}' expects input (C={self.in_channels}, H, W), got {in_shape}"
            )
        _, h, w = in_shape
        ho = (h + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        if ho <= 0 or wo <= 0:
            raise ShapeError(f"Conv2d layer '{self.weight}': input {in_shape} is smaller than the kernel")
        return (self.out_channels, ho, wo)


@dataclass(frozen=True)
class Conv1d:
    """1-D convolution synapses, weight ``[out_channels, in_channels, k]``; input ``(C, L)``."""

    weight: str
    bias: str | None
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int

    kind = "conv1d"

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the weight and bias tensors."""
        return (self.out_channels, self.in_channels, self.kernel_size), (self.out_channels,)

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2 or in_shape[0] != self.in_channels:
            raise ShapeError(f"Conv1d layer '{self.weight}' expects input (C={self.in_channels}, L), got {in_shape}")
        lo = (in_shape[1] + 2 * self.padding - self.kernel_size) // self.stride + 1
        if lo <= 0:
            raise ShapeError(f"Conv1d layer '{self.weight}': input {in_shape} is shorter than the kernel")
        return (self.out_channels, lo)


@dataclass(frozen=True)
class Pool2d:
    """Spatial pooling without padding. ``mode="sum"`` adds the inputs in each window;
    ``mode="avg"`` divides that sum by ``kh*kw`` (what an event-driven chip does by scaling the
    next layer's weights); ``mode="max"`` takes the window's maximum (spiking max pooling: on
    binary spikes, a spike if any input in the window spiked; the gradient flows to the
    maximum, as in torch's ``max_pool2d``)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    mode: Literal["sum", "avg", "max"]

    def __post_init__(self) -> None:
        if self.mode not in ("sum", "avg", "max"):
            raise SpecError(f"unknown pooling mode {self.mode!r}; use 'sum', 'avg' or 'max'")

    kind = "pool2d"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise ShapeError(f"Pool2d expects input (C, H, W), got {in_shape}")
        c, h, w = in_shape
        return (
            c,
            (h - self.kernel_size[0]) // self.stride[0] + 1,
            (w - self.kernel_size[1]) // self.stride[1] + 1,
        )


@dataclass(frozen=True)
class Flatten:
    """Flatten all feature dimensions (keeps time and batch)."""

    kind = "flatten"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(math.prod(in_shape)),)


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation with fixed (inference) statistics, over the channel dimension (the
    first feature dimension of ``(C,)``, ``(C, L)`` or ``(C, H, W)``):

    .. math:: y = \\gamma\\,\\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta

    ``weight`` / ``bias`` name the trainable :math:`\\gamma, \\beta` (``None``: 1 and 0, torch's
    ``affine=False``); ``running_mean`` / ``running_var`` are the model's statistics when it
    was wrapped (constants: cil trains synapses and the affine terms, the statistics are not
    updated). Chips that cannot run it get it folded into the preceding synaptic layer at weight
    transfer (:func:`cil_core.hardware.transfer.fold_batchnorm`)."""

    weight: str | None
    bias: str | None
    num_features: int
    running_mean: torch.Tensor
    running_var: torch.Tensor
    eps: float

    kind = "batchnorm"

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.num_features,), (self.num_features,)

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not in_shape or in_shape[0] != self.num_features:
            raise ShapeError(f"BatchNorm over {self.num_features} channels got input {in_shape}")
        return in_shape

    def validate(self) -> None:
        for f in ("running_mean", "running_var"):
            t = torch.as_tensor(getattr(self, f))
            if tuple(t.shape) != (self.num_features,):
                raise SpecError(f"BatchNorm {f} has shape {tuple(t.shape)}, expected ({self.num_features},)")
            if not torch.isfinite(t).all():
                raise SpecError(f"BatchNorm {f} is not finite")
        if bool((torch.as_tensor(self.running_var) < 0).any()) or not self.eps > 0:
            raise SpecError("BatchNorm needs running_var >= 0 and eps > 0")


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability ``p``: active in software training passes only (autograd on and
    the wrapped network in ``train()`` mode); an identity on every chip and in evaluation."""

    p: float

    kind = "dropout"

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise SpecError(f"dropout probability must be in [0, 1), got {self.p!r}")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape



#: feed-forward synaptic layers (a neuron layer's :class:`Recurrent` synapses are synaptic too,
#: see :meth:`NetworkSpec.synaptic_layers`)
SYNAPTIC = (Dense, Conv1d, Conv2d)
