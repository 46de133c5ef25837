"""Synaptic operators on one time step, for one or several parameter sets at once.

Activations have layout ``[S*B, *features]`` where ``S`` is the number of parameter sets. With
``sets=None`` (a single network) the weights have their plain shape and the operator is the
library's own call (``F.linear``/``F.conv2d``), so results match the libraries bit for bit;
otherwise weights carry a leading ``S`` and every set runs that same call on its own rows, so
that a Metropolis-Hastings trainer scores many proposals in a single chip call and every set
equals its single-network run bit for bit (a batched matmul or a grouped convolution over the
sets rounds differently on many shapes; so does a product whose input or output is a slice at an
offset, see :func:`fresh`). A first synaptic layer, whose input all sets share, runs each set's
own single-network call on that input (:func:`dense_shared`, :func:`conv_shared`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover  (annotations only: the kernels import no cil module at run time)
    from ..network.layers import BatchNorm, Conv1d, Conv2d, Dense, Pool2d
    from ..network.neuron import Recurrent


def dense(layer: Dense, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    """:math:`y_s = x_s W_s^T + b_s` for every set ``s``; ``x`` is ``[S*B, in]``.

    Each set is the single network's own call ``F.linear(x_s, W_s, b_s)`` on rows of its own memory
    (:func:`fresh`), so every set equals its single-network run bit for bit. Measured on random
    shapes (a 2-layer network's second layer, 736 sets): a ``bmm`` over the sets differed from the
    single runs in 197, per-set calls on slices of the step's buffer still in 136, this in 0."""
    return _linear_sets(x, w, b, sets)


def _linear_sets(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    """``F.linear`` per set on rows of its own memory (:func:`fresh`), the sets concatenated."""
    if sets is None:
        return F.linear(fresh(x), w, b)
    xs = x.reshape(sets, -1, x.shape[-1])
    return torch.cat([F.linear(fresh(xs[s]), w[s], None if b is None else b[s]) for s in range(sets)])


def fresh(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if it starts its storage, else a copy that does: MKL's product depends on where
    its input starts (a slice at an offset rounds differently on some shapes), so a set's rows and a
    single network's step are both read from memory of their own."""
    return x if x.storage_offset() == 0 else x.clone()


def dense_shared(layer: Dense, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """:math:`y_{t,s} = x_t W_s^T + b_s` for every step ``t`` and set ``s`` of an input
    ``x`` (``[T, B, in]``) that all ``S`` sets share; returns ``[T, S*B, out]``.

    Each ``(t, s)`` block is the single network's own call ``F.linear(x_t, W_s, b_s)``, so every
    set equals a single-network run bit for bit (one matmul over the stacked weights, or a bmm on
    an S-fold replicated input, round differently on some shapes), and the input is read as it
    is instead of being replicated ``S`` times. Without autograd each block is the same product
    (``F.linear`` is ``addmm(b, x, W^T)``, or ``mm(x, W^T)`` without a bias) copied into the output."""
    T, B = x.shape[:2]
    S, out = w.shape[0], w.shape[1]
    ws = w.unbind(0)
    bs = [None] * S if b is None else b.unbind(0)
    steps = [fresh(xt) for xt in x.unbind(0)]  # as a single network reads its step (dense)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
        return torch.stack([F.linear(xt, ws[s], bs[s]) for xt in steps for s in range(S)]).view(T, S * B, out)
    y = torch.empty(T, S, B, out, dtype=torch.result_type(x, w), device=x.device)
    wts = [ws_.t() for ws_ in ws]  # the same transposed views, made once instead of once per step
    for t, xt in enumerate(steps):
        dense_shared_step(xt, wts, bs, y[t])
    return y.view(T, S * B, out)


def dense_shared_step(xt: torch.Tensor, wts: list[torch.Tensor], bs: list[torch.Tensor | None] | tuple,
                      out: torch.Tensor) -> torch.Tensor:
    """One step of :func:`dense_shared` without autograd: ``out[s] = x_t W_s^T + b_s`` for every set,
    each the single network's own call (``mm(x_t, W_s^T)``, or ``addmm(b_s, x_t, W_s^T)`` with a
    bias), written into ``out`` (``[S, B, out]``); ``wts`` holds the transposed weights ``W_s^T``."""
    for s, wt in enumerate(wts):  # into a fresh result, then copied: MKL rounds a product written into
        # a view at an offset (out=out[s]) differently on many shapes (measured: 85 of 200 with B < 6,
        # 17 of 200 with B up to 400), so the sets would not equal single-network runs
        out[s].copy_(torch.mm(xt, wt) if bs[s] is None else torch.addmm(bs[s], xt, wt))
    return out


def conv_shared(layer: Conv2d | Conv1d, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """:math:`y_{t,s} = W_s * x_t + b_s` for every step ``t`` and set ``s`` of an input ``x``
    (``[T, B, C, *spatial]``) that all ``S`` sets share; returns ``[T, S*B, out, *spatial']``.

    Each block is the single network's own ``F.conv2d``/``F.conv1d(x_t, W_s, b_s)``: bit-identical
    to single-network runs (the grouped convolution on a replicated input is not, on some shapes)
    and faster than it (1.9x for a 2→12-channel 5×5 convolution on 34×34 inputs, S=32, one CPU
    thread), without the ``S``-fold copies of the input."""
    op = conv2d if x.dim() == 5 else conv1d
    T, B = x.shape[:2]
    S = w.shape[0]
    ws = w.unbind(0)
    bs = [None] * S if b is None else b.unbind(0)
    y = torch.stack([op(layer, xt, ws[s], bs[s], None) for xt in x.unbind(0) for s in range(S)])
    return y.view(T, S * B, *y.shape[2:])


def conv2d(layer: Conv2d, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    """2-D convolution; ``x`` is ``[S*B, C, H, W]`` with ``sets``. Each set is its single network's own
    ``F.conv2d`` on rows of its own memory (:func:`fresh`), so sets equal single runs bit for bit (a
    grouped convolution over the sets differed in 39 of 94 sets of random 2-layer conv networks)."""
    return _conv_sets(F.conv2d, layer, x, w, b, sets)


def conv1d(layer: Conv1d, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    """1-D convolution; ``x`` is ``[S*B, C, L]`` with ``sets``; each set as :func:`conv2d`'s."""
    return _conv_sets(F.conv1d, layer, x, w, b, sets)


def _conv_sets(op: Callable[..., torch.Tensor], layer: Conv2d | Conv1d, x: torch.Tensor, w: torch.Tensor,
               b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    if sets is None:
        return op(fresh(x), w, b, stride=layer.stride, padding=layer.padding)
    xs = x.reshape(sets, -1, *x.shape[1:])
    return torch.cat([op(fresh(xs[s]), w[s], None if b is None else b[s], stride=layer.stride,
                         padding=layer.padding) for s in range(sets)])


def pool2d(layer: Pool2d, x: torch.Tensor) -> torch.Tensor:
    """Sum, average or max pooling over strided windows, no padding. ``x`` is ``[N, C, H, W]``."""
    if layer.mode == "max":
        return F.max_pool2d(x, layer.kernel_size, layer.stride)
    return F.avg_pool2d(x, layer.kernel_size, layer.stride, divisor_override=1 if layer.mode == "sum" else None)


def batchnorm(layer: BatchNorm, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None,
              sets: int | None) -> torch.Tensor:
    """Batch norm with the layer's fixed statistics over channel dim 1 of ``x`` (``[S*B, C, ...]``).

    A single network uses torch's own ``F.batch_norm`` in inference mode (bit-identical to the
    library's ``eval()`` forward); with sets, :math:`\\gamma_s, \\beta_s` carry a leading ``S`` and
    each set is the same call on its own rows, so sets equal single runs bit for bit."""
    mean = layer.running_mean.to(x.device, x.dtype)
    var = layer.running_var.to(x.device, x.dtype)
    if sets is None:
        return F.batch_norm(x, mean, var, w, b, training=False, eps=layer.eps)
    xs = x.reshape(sets, -1, *x.shape[1:])
    return torch.cat([F.batch_norm(xs[s], mean, var, None if w is None else w[s], None if b is None else b[s],
                                   training=False, eps=layer.eps) for s in range(sets)])


def recurrent(layer: Recurrent, s_prev: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sets: int | None) -> torch.Tensor:
    """Recurrent input :math:`W s_{t-1} + b` (dense) or :math:`w \\odot s_{t-1}` (one-to-one) of a
    :class:`~cil_core.network.neuron.Recurrent`; ``s_prev`` is ``[S*B, n]``."""
    if layer.mode == "one-to-one":
        if sets is None:
            y = w * s_prev
        else:
            y = (s_prev.reshape(sets, -1, s_prev.shape[-1]) * w[:, None, :]).reshape(s_prev.shape)
        if b is not None:
            y = y + (b if sets is None else b.repeat_interleave(s_prev.shape[0] // sets, 0))
        return y
    return _linear_sets(s_prev, w, b, sets)

