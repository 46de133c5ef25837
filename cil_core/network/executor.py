"""Time-stepped execution of a :class:`~cil_core.network.spec.NetworkSpec` in torch.

One function serves three roles:

* the **software pass** of every trainer (autograd on, surrogate gradients),
* the **ideal backend** (autograd off, exact float semantics),
* the numerical core of simulated non-ideal backends, which pass effective weights,
  per-neuron overrides and a membrane-noise source.

Synaptic layers are evaluated as the source library evaluates them (``spec.synapse_calls``):
one time step at a time, with the same tensor shapes as snntorch's and norse's step-by-step
loops, or in one call over all steps of a sequence as sinabs does, so the float results match
those libraries bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from ..errors import NonFiniteError, ShapeError
from ..kernels import synapse
from .finite import all_finite
from ..kernels.neuron import LayerTrace, MembraneNoise, leaky_steps, plain_leaky, run_neuron_layer
from .layers import BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Pool2d
from .neuron import Neuron, resolve_neuron
from .observation import LayerObservation
from .spec import NetworkSpec, check_parameters


@dataclass
class NetworkTrace:
    """Result of :func:`simulate`.

    ``output`` is the last neuron layer's output, ``[T, B, *out]`` (or ``[T, S, B, *out]`` with
    parameter sets): spikes, or membrane for a readout layer. ``layers`` holds one
    :class:`LayerObservation` per neuron layer when recording was asked for.
    """

    output: torch.Tensor
    layers: list[LayerObservation] = field(default_factory=list)


def check_input(spec: NetworkSpec, x: torch.Tensor) -> None:
    """Raise :class:`ShapeError` unless ``x`` is time-major ``[T, B, *spec.input_shape]`` and finite."""
    want = tuple(spec.input_shape)
    if x.dim() != 2 + len(want) or tuple(x.shape[2:]) != want:
        raise ShapeError(
            f"input has shape {tuple(x.shape)}; the network expects time-major [T, B, {', '.join(map(str, want))}]"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"input has shape {tuple(x.shape)}: no time steps or no samples")
    if not all_finite(x):
        raise NonFiniteError("input holds non-finite values (NaN or inf)")



def _weight(layer: Dense | Conv2d | Conv1d, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The layer's weight as ``[(S,) out, in]``: a ``Dense(weight_layout="in-out")`` weight is
    read through its transposed view, as the library itself calls ``F.linear(x, A.T, b)``."""
    w = params[layer.weight]
    if isinstance(layer, Dense) and layer.weight_layout == "in-out":
        return w.transpose(-1, -2)
    return w

def simulate(
    spec: NetworkSpec,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    *,
    n_sets: int | None = None,
    record: bool = False,
    record_membrane: bool = False,
    observations: Sequence[LayerObservation | None] | None = None,
    neurons: Sequence[Neuron] | None = None,
    membrane_noise: Sequence[MembraneNoise | None] | None = None,
    validate: bool = True,
    training: bool = False,
) -> NetworkTrace:
    """Run ``spec`` with synaptic tensors ``params`` on input ``x`` (``[T, B, *input_shape]``).

    Args:
        n_sets: if given, every tensor in ``params`` has a leading dimension of this size and
            all sets run on the same input at once; outputs get a set dimension after time.
        record: keep every neuron layer's spikes (and, with ``record_membrane``, membranes).
        observations: one entry per neuron layer (``None`` to skip a layer): hardware
            observations substituted straight-through (forward = observation, gradient =
            software expression).
        neurons: replacement neuron descriptions, one per neuron layer (a backend's per-chip
            thresholds and leaks, the values a deployment realises); a field they still name as
            trained is read from ``params``.
        membrane_noise: one noise source (or ``None``) per neuron layer.
        training: apply :class:`~cil_core.network.layers.Dropout` layers (a software
            training pass); otherwise they are identities, as on every chip.
    """
    if validate:
        check_input(spec, x)
        check_parameters(spec, params, n_sets)
    S = 1 if n_sets is None else n_sets
    T = x.shape[0]
    # layout [T, S*B, *features]; sets are stacked along the batch dimension. With sets, h stays
    # the input every set shares, [T, B, *features], up to the first layer that depends on the set
    # (``shared``): a leading Dense/Conv layer then runs each set's own single-network call on it
    # (synapse.dense_shared, conv_shared) instead of one batched call on S replicated copies.
    h = x
    shared = n_sets is not None

    def per_step(fn) -> torch.Tensor:  # one call per time step, like the libraries' own loops
        return torch.stack([fn(ht) for ht in h.unbind(0)])

    traces: list[LayerObservation] = []
    k = 0
    skip = False  # the neuron layer after a fused leading dense layer (_dense_then_leaky) is done
    for i, layer in enumerate(spec.layers):
        if skip:
            skip = False
            continue
        if shared:
            nxt = spec.layers[i + 1] if i + 1 < len(spec.layers) else None
            if (isinstance(layer, Dense) and isinstance(nxt, Neuron) and not torch.is_grad_enabled()
                    and (observations is None or observations[k] is None)
                    and (membrane_noise is None or membrane_noise[k] is None)):
                n = resolve_neuron(neurons[k] if neurons is not None else nxt, params, n_sets=n_sets)
                tr = _dense_then_leaky(layer, n, h, params, record_membrane)
                if tr is not None:
                    h = tr.spikes
                    if record:
                        traces.append(LayerObservation(_sets(h, n_sets), _sets(tr.membrane, n_sets)))
                    k += 1
                    shared = False
                    skip = True
                    continue
            if isinstance(layer, (Dense, Conv2d, Conv1d)):
                w = _weight(layer, params)
                b = None if layer.bias is None else params[layer.bias]
                h = (synapse.dense_shared if isinstance(layer, Dense) else synapse.conv_shared)(layer, h, w, b)
                shared = False
                continue
            # pooling, flattening and inactive dropout are the same for every set and run below on
            # the shared input; anything else (neurons, batch norm's per-set γ/β, a dropout mask per
            # set) needs one copy of the input per set
            same_for_all = isinstance(layer, (Pool2d, Flatten)) or (
                isinstance(layer, Dropout) and not (training and layer.p > 0))
            if not same_for_all:
                h = _replicate(h, S)
                shared = False
        if isinstance(layer, Neuron):
            # a layer's trainable neuron parameters (beta, threshold, ...) are read from ``params``
            # here, so the software pass differentiates through the model's own tensors
            n = resolve_neuron(neurons[k] if neurons is not None else layer, params, n_sets=n_sets)
            obs = observations[k] if observations is not None else None
            noise = membrane_noise[k] if membrane_noise is not None else None

            def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t.reshape(h.shape)

            rec = None
            if n.recurrent is not None:
                rl = n.recurrent
                rw = params[rl.weight]
                if rl.weight_layout == "in-out":  # held [from, to] (rockpool's w_rec): F.linear(s, A.T) as rockpool
                    rw = rw.transpose(-1, -2)
                rb = None if rl.bias is None else params[rl.bias]
                if not rl.autapses:  # no self-connections: the diagonal is held at zero (and gets no gradient)
                    rw = rw.masked_fill(torch.eye(rl.features, dtype=torch.bool, device=rw.device), 0.0)

                def rec(s_prev: torch.Tensor, rl=rl, rw=rw, rb=rb) -> torch.Tensor:
                    return synapse.recurrent(rl, s_prev, rw, rb, n_sets)

            tr: LayerTrace = run_neuron_layer(
                n,
                h,
                record_membrane=record_membrane,
                observed_spikes=None if obs is None else _flat(obs.spikes),
                observed_membrane=None if obs is None else _flat(obs.membrane),
                membrane_noise=noise,
                recurrent_input=rec,
            )
            h = tr.spikes
            if record:
                traces.append(LayerObservation(_sets(h, n_sets), _sets(tr.membrane, n_sets)))
            k += 1
        elif isinstance(layer, (Dense, Conv2d, Conv1d)):
            op = synapse.dense if isinstance(layer, Dense) else synapse.conv2d if isinstance(layer, Conv2d) \
                else synapse.conv1d
            w = _weight(layer, params)
            b = None if layer.bias is None else params[layer.bias]
            if spec.synapse_calls == "all-steps":  # one call on every (sample, step), batch-major
                TT, SB = h.shape[:2]
                o = op(layer, h.transpose(0, 1).reshape(SB * TT, *h.shape[2:]), w, b, n_sets)
                h = o.reshape(SB, TT, *o.shape[1:]).transpose(0, 1)
            else:
                h = per_step(lambda xt: op(layer, xt, w, b, n_sets))
        elif isinstance(layer, Pool2d):
            h = per_step(lambda xt: synapse.pool2d(layer, xt))
        elif isinstance(layer, BatchNorm):
            g = None if layer.weight is None else params[layer.weight]
            b = None if layer.bias is None else params[layer.bias]
            h = per_step(lambda xt: synapse.batchnorm(layer, xt, g, b, n_sets))
        elif isinstance(layer, Dropout):
            if training and layer.p > 0:
                h = torch.nn.functional.dropout(h, layer.p, training=True)
        elif isinstance(layer, Flatten):
            h = h.reshape(T, h.shape[1], -1)  # [T, S*B, ...], or [T, B, ...] while shared
        else:  # pragma: no cover - NetworkSpec validation prevents this
            raise TypeError(f"unknown layer {layer!r}")
    if shared:  # no set-dependent layer at all
        h = _replicate(h, S)
    return NetworkTrace(output=_sets(h, n_sets), layers=traces)


def _dense_then_leaky(layer: Dense, n: Neuron, x: torch.Tensor, params: Mapping[str, torch.Tensor],
                      record_membrane: bool) -> LayerTrace | None:
    """With parameter sets: a leading dense layer on the input ``x`` (``[T, B, in]``, shared by all
    sets) and the plain leaky neuron layer after it (:func:`~cil_core.kernels.neuron.plain_leaky`),
    without autograd, step by step: the products of step ``t``
    (:func:`~cil_core.kernels.synapse.dense_shared_step`, each set's own single-network call) go
    into one buffer that the neuron step reads at once (:func:`~cil_core.kernels.neuron.leaky_steps`),
    instead of all steps' products first. The same calls on the same values as
    :func:`~cil_core.kernels.synapse.dense_shared` and the general neuron loop, so the same spikes
    bit for bit; the ``[T, S*B, out]`` currents are never held, which keeps each step's data in
    cache (8 sets of 398 samples x 32 neurons, T = 16: 6.5 MB of currents, 0.4 MB per step; the
    MH benchmark's 8-set chip call, 150 interleaved calls on one loaded core: fastest 6.85 ->
    6.19 ms, lower quartile 7.37 -> 6.75 ms). A single network keeps its per-step calls and
    separate neuron loop (its currents, 0.8 MB here, fit in cache anyway), so its path is
    unchanged. ``None`` when the neuron layer is not plain."""
    w = _weight(layer, params)
    b = None if layer.bias is None else params[layer.bias]
    T, B = x.shape[:2]
    S, out = w.shape[0], w.shape[1]
    cur = torch.empty(S, B, out, dtype=torch.result_type(x, w), device=x.device)
    like = cur.view(S * B, out)
    plain = plain_leaky(n, like)
    if plain is None:
        return None
    wts = [ws.t() for ws in w.unbind(0)]
    bs = [None] * S if b is None else list(b.unbind(0))

    def current(t: int) -> torch.Tensor:
        synapse.dense_shared_step(synapse.fresh(x[t]), wts, bs, cur)
        return like

    return leaky_steps(n, T, like, current, record_membrane, plain)


def _replicate(h: torch.Tensor, S: int) -> torch.Tensor:
    """The shared ``[T, B, ...]`` → ``[T, S*B, ...]``, the same ``B`` samples once per set."""
    if S == 1:
        return h
    T, B = h.shape[:2]
    return h.unsqueeze(1).expand(T, S, *h.shape[1:]).reshape(T, S * B, *h.shape[2:])


def _sets(t: torch.Tensor | None, n_sets: int | None) -> torch.Tensor | None:
    """``[T, S*B, ...]`` → ``[T, S, B, ...]`` with parameter sets; unchanged for a single network."""
    if t is None or n_sets is None:
        return t
    return t.reshape(t.shape[0], n_sets, t.shape[1] // n_sets, *t.shape[2:])
