"""Synaptic operators on one time step, for one or several parameter sets at once.

Activations have layout ``[S, B, *features]`` where ``S`` is the number of parameter sets
(``S = 1`` for a single network). Weights carry the same leading ``S``. Several sets run as one
batched matmul (dense) or one grouped convolution (conv2d), so that a Metropolis-Hastings
trainer can score many proposals in a single call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ir import Conv2d, Dense, Flatten, Pool2d


def dense(layer: Dense, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """:math:`y_s = x_s W_s^T + b_s` for every set ``s``; ``x`` is ``[S, B, in]``."""
    if w.shape[0] == 1:
        return F.linear(x[0], w[0], None if b is None else b[0]).unsqueeze(0)
    y = torch.bmm(x, w.transpose(1, 2))
    return y if b is None else y + b[:, None, :]


def conv2d(layer: Conv2d, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """2-D convolution; several sets run as one grouped convolution. ``x`` is ``[S, B, C, H, W]``."""
    S, B = x.shape[:2]
    if S == 1:
        y = F.conv2d(x[0], w[0], None if b is None else b[0], stride=layer.stride, padding=layer.padding)
        return y.unsqueeze(0)
    xs = x.permute(1, 0, 2, 3, 4).reshape(B, S * x.shape[2], *x.shape[3:])
    y = F.conv2d(xs, w.reshape(S * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1),
                 stride=layer.stride, padding=layer.padding, groups=S)
    return y.reshape(B, S, -1, *y.shape[2:]).permute(1, 0, 2, 3, 4)


def pool2d(layer: Pool2d, x: torch.Tensor) -> torch.Tensor:
    """Sum (or average) pooling over non-overlapping or strided windows."""
    S, B = x.shape[:2]
    y = F.avg_pool2d(
        x.reshape(S * B, *x.shape[2:]),
        layer.kernel_size,
        layer.stride,
        divisor_override=1 if layer.mode == "sum" else None,
    )
    return y.reshape(S, B, *y.shape[1:])


def flatten(layer: Flatten, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)
