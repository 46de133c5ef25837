"""Weight-transfer primitives every chip backend shares: symmetric b-bit quantization with a
per-tensor scale, the straight-through estimator that lets a quantized (or measured) value
carry the gradient of its software counterpart, and the preparation of a network for a chip
(dropout removed, batch norm folded into the preceding synapses) that the session applies
before every weight transfer."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch

from ..errors import BackendCapacityError
from ..network.description import (SYNAPTIC, BatchNorm, Dense, Dropout, NetworkSpec, check_neuron_ranges,
                                    resolve_neuron)
from ..network.neuron import Neuron


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


def _in_out(layer: object) -> bool:
    """A ``Dense`` whose model holds the weight as ``[in, out]`` (``weight_layout="in-out"``), or
    a neuron whose recurrent weight is held ``[from, to]``."""
    if isinstance(layer, Neuron):
        return layer.recurrent is not None and layer.recurrent.weight_layout == "in-out"
    return isinstance(layer, Dense) and layer.weight_layout == "in-out"


def _out_in(layer: object) -> object:
    """``layer`` with its weights described ``[out, in]`` (see :func:`_in_out`)."""
    if isinstance(layer, Neuron):
        return replace(layer, recurrent=replace(layer.recurrent, weight_layout="out-in"))
    return replace(layer, weight_layout="out-in")


def _weight_name(layer: object) -> str:
    return layer.recurrent.weight if isinstance(layer, Neuron) else layer.weight  # type: ignore[union-attr]


def _folded_spec(spec: NetworkSpec, fold: bool) -> tuple[NetworkSpec, list[tuple[int, int, str | None]]]:
    """The spec without dropout (and, with ``fold``, without batch norm) and, per folded batch
    norm, ``(synaptic index in spec, bn index in spec, new bias name or None)``."""
    layers: list = []
    folds: list[tuple[int, int, str | None]] = []
    last_syn: int | None = None  # index into spec.layers of the synaptic layer right before (dropout skipped)
    out_pos: dict[int, int] = {}
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Dropout):
            continue
        if isinstance(layer, BatchNorm) and fold:
            if last_syn is None:
                raise BackendCapacityError(
                    f"layer {i} (BatchNorm) does not directly follow a Linear/Conv layer, so it cannot be folded into "
                    "synaptic weights for the chip; place each BatchNorm right after the Linear/Conv it normalises")
            syn = spec.layers[last_syn]
            new_bias = None if syn.bias is not None else f"{syn.weight}:bn-bias"  # type: ignore[union-attr]
            k = out_pos[last_syn]
            layers[k] = replace(layers[k], bias=syn.bias if syn.bias is not None else new_bias)  # type: ignore[union-attr]
            folds.append((last_syn, i, new_bias))
            last_syn = None
            continue
        out_pos[i] = len(layers)
        layers.append(_out_in(layer) if _in_out(layer) else layer)
        last_syn = i if isinstance(layer, SYNAPTIC) else None
    return NetworkSpec(tuple(layers), spec.input_shape, source=spec.source, synapse_calls=spec.synapse_calls), folds


#: per (spec, fold): (spec, the spec a chip receives, the folds, that spec's features); the
#: structure is computed once per network, a weight transfer only folds tensors
_PREPARED: dict[tuple[int, bool], tuple[NetworkSpec, NetworkSpec, list, dict[str, str]]] = {}


def _prepared(spec: NetworkSpec, fold: bool) -> tuple[NetworkSpec, list[tuple[int, int, str | None]], dict[str, str]]:
    """Cached :func:`_folded_spec` (the spec itself when it has no dropout or batch norm) and
    the features of the result."""
    key = (id(spec), fold)
    hit = _PREPARED.get(key)
    if hit is None or hit[0] is not spec:
        if len(_PREPARED) > 64:
            _PREPARED.clear()
        new_spec, folds = _folded_spec(spec, fold) \
            if any(isinstance(l, (BatchNorm, Dropout)) or _in_out(l) for l in spec.layers) else (spec, [])
        hit = (spec, new_spec, folds, new_spec.features())
        _PREPARED[key] = hit
    return hit[1], hit[2], hit[3]


def _folds_for(backend: object) -> bool:
    """Whether ``backend`` needs batch norm folded (it does not list ``"batchnorm"``)."""
    caps = getattr(backend, "capabilities", None)
    return caps is not None and "batchnorm" not in caps


def fold_batchnorm(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None, *,
                   fold: bool = True) -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    r"""What a chip holds for ``spec``: dropout removed, every ``Dense`` weight as ``[out, in]``
    (a ``weight_layout="in-out"`` weight transposed) and every batch norm folded into the
    synaptic layer right before it, as deployment tool-chains do. With
    :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}` per output channel,

    .. math:: W' = s \odot W, \qquad b' = s\,(b - \mu) + \beta

    (a missing bias becomes ``"<weight>:bn-bias"``). With ``fold=False`` only dropout is removed.
    Works on a leading set dimension (``n_sets``). The structure is computed once per spec.
    Raises :class:`~cil_core.errors.BackendCapacityError` for a batch norm that does not follow
    a synaptic layer directly."""
    new_spec, folds, _ = _prepared(spec, fold)
    out = dict(params)
    for layer in spec.layers:  # weights held [in, out] (rockpool) reach the chip as [out, in]
        if _in_out(layer):
            out[_weight_name(layer)] = params[_weight_name(layer)].transpose(-1, -2).contiguous()
    for syn_i, bn_i, new_bias in folds:
        syn, bn = spec.layers[syn_i], spec.layers[bn_i]
        w = out[syn.weight]  # type: ignore[union-attr]
        lead = 0 if n_sets is None else 1
        C = bn.num_features  # type: ignore[union-attr]
        var = bn.running_var.to(w.device, w.dtype)  # type: ignore[union-attr]
        mean = bn.running_mean.to(w.device, w.dtype)  # type: ignore[union-attr]
        gamma = params[bn.weight] if bn.weight is not None else torch.ones(C, dtype=w.dtype)  # type: ignore[union-attr]
        beta = params[bn.bias] if bn.bias is not None else torch.zeros(C, dtype=w.dtype)  # type: ignore[union-attr]
        scale = gamma / torch.sqrt(var + bn.eps)  # type: ignore[union-attr]  # [C] or [S, C]
        if n_sets is not None and scale.dim() == 1:
            scale = scale.expand(n_sets, C)
        if n_sets is not None and beta.dim() == 1:
            beta = beta.expand(n_sets, C)
        extra = (1,) * (w.dim() - lead - 1)
        out[syn.weight] = w * scale.reshape(*scale.shape, *extra)  # type: ignore[union-attr]
        b = params[syn.bias] if syn.bias is not None else None  # type: ignore[union-attr]
        b0 = torch.zeros_like(scale) if b is None else b
        out[syn.bias if new_bias is None else new_bias] = (b0 - mean) * scale + beta  # type: ignore[union-attr]
        for n in (bn.weight, bn.bias):  # type: ignore[union-attr]
            if n is not None:
                out.pop(n, None)
    return new_spec, out


def chip_spec(backend: object, spec: NetworkSpec) -> NetworkSpec:
    """The structure ``backend`` receives for ``spec`` (see :func:`prepare_for_backend`),
    checked against its capabilities and its requirements (``requires``:
    :class:`~cil_core.hardware.domains.Requirements`); needs no tensors and is computed once per
    network."""
    new_spec, _, features = _prepared(spec, _folds_for(backend))
    _refuse_missing(backend, features)
    requires = getattr(backend, "requires", None)
    if requires is not None:  # what the chip must be given (Requirements): a synaptic current, sizes, ...
        requires.check(new_spec, f"backend '{getattr(backend, 'name', '') or type(backend).__name__}'")
    _refuse_neuron_parameters(backend, new_spec)
    return new_spec


def prepare_for_backend(backend: object, spec: NetworkSpec, params: Mapping[str, torch.Tensor],
                        n_sets: int | None = None) -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    """The network and tensors ``backend`` receives at weight transfer: dropout removed, batch
    norm folded unless the backend lists ``"batchnorm"`` among its capabilities, and every
    remaining feature checked against them (:func:`chip_spec`).

    Trainable neuron parameters (:class:`~cil_core.network.neuron.NeuronParameter`) enter the
    chip here: their current values (after the library's clamp) are checked against their valid
    ranges (:func:`~cil_core.network.spec.check_neuron_ranges`) and written into the neuron
    layers of the spec the backend receives, which then names no neuron parameter (the chip holds
    values, not the model's tensors); their tensors are left out of the parameters it receives."""
    chip_spec(backend, spec)
    new_spec, out = fold_batchnorm(spec, params, n_sets, fold=_folds_for(backend))
    return write_neuron_parameters(new_spec, out, n_sets, chip=getattr(backend, "name", "") or type(backend).__name__)


def write_neuron_parameters(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None, *,
                            chip: str = "chip") -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    """``spec`` with the current values of its trained neuron parameters written into its neuron
    layers (after the library's clamp; checked against 0 <= beta, alpha <= 1, threshold > 0 with
    :func:`~cil_core.network.spec.check_neuron_ranges`, the error naming ``chip`` and the layer),
    and ``params`` without their tensors: what a chip receives. ``(spec, params)`` unchanged when
    nothing is trained. A backend whose ``transfer`` may be called directly (not through a
    session) calls it first; on an already written spec it is a no-op."""
    out = dict(params)
    trained = spec.neuron_parameters()
    if not trained:
        return spec, out
    lead = (lambda t: t) if n_sets is None else (lambda t: t[0])
    check_neuron_ranges(spec, {p.name: lead(out[p.name]) for _, _, p in trained}, where=f"backend '{chip}': ")
    resolved = _resolved_spec(spec, out, n_sets)
    for _, _, p in trained:
        out.pop(p.name, None)
    return resolved, out


#: per chip spec: (that spec, the neuron values last written into it, the resolved spec), so that a
#: transfer of unchanged neuron parameters hands the backend the same spec object (backends cache
#: per-network constants by spec identity)
_RESOLVED: dict[int, tuple[NetworkSpec, list[torch.Tensor], NetworkSpec]] = {}


def _resolved_spec(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None) -> NetworkSpec:
    """``spec`` with every trained neuron field replaced by its current value
    (:func:`~cil_core.network.neuron.resolve_neuron` with ``detach=True``)."""
    layers = [resolve_neuron(l, params, n_sets=n_sets, detach=True) if isinstance(l, Neuron) else l
              for l in spec.layers]
    values = [torch.as_tensor(getattr(l, p.field)) for l0, l in zip(spec.layers, layers) if isinstance(l0, Neuron)
              for p in l0.trained]
    hit = _RESOLVED.get(id(spec))
    if hit is not None and hit[0] is spec and len(hit[1]) == len(values) and \
            all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(hit[1], values)):
        return hit[2]
    out = NetworkSpec(tuple(layers), spec.input_shape, source=spec.source, synapse_calls=spec.synapse_calls)
    if len(_RESOLVED) > 64:
        _RESOLVED.clear()
    _RESOLVED[id(spec)] = (spec, values, out)
    return out


def _refuse_neuron_parameters(backend: object, spec: NetworkSpec) -> None:
    """Refuse a trained neuron parameter ``backend`` does not declare it holds (its
    ``neuron_parameters``: ``{field: HeldParameter}``), or holds only per layer while the model
    trains one per neuron, naming the layer, the tensor and what to change (the backend's
    ``neuron_parameter_hints[field]`` where given). A backend that declares no ``capabilities``
    either accepts everything here (a custom chip that checks for itself); one that declares
    capabilities but no ``neuron_parameters`` holds no trained neuron parameter."""
    trained = spec.neuron_parameters()
    if not trained or getattr(backend, "capabilities", None) is None and \
            getattr(backend, "neuron_parameters", None) is None:
        return
    held = getattr(backend, "neuron_parameters", None) or {}
    hints = getattr(backend, "neuron_parameter_hints", {}) or {}
    name = getattr(backend, "name", "") or type(backend).__name__
    for i, layer, p in trained:
        where = f"layer {i} (neuron '{layer.name}')" if layer.name else f"layer {i} (neuron)"
        h = held.get(p.field)
        hint = hints.get(p.field)
        if h is None:
            raise BackendCapacityError(
                f"backend '{name}' cannot hold {where}'s trained {p.field} '{p.name}': the chip holds no trained "
                f"{p.field}" + (f"; {hint}" if hint else "") + f". Freeze it (build the layer without learning "
                f"{p.field}, or {p.name}.requires_grad_(False)) or run a backend that holds it")
        if not h.holds(p.per_neuron):
            raise BackendCapacityError(
                f"backend '{name}' cannot hold {where}'s trained {p.field} '{p.name}' of shape {p.shape}: the chip "
                f"holds one {p.field} per layer" + (f"; {hint}" if hint else "") + f". Train one value for the "
                f"layer (a scalar {p.field}) or freeze it")


def _refuse_missing(backend: object, features: Mapping[str, str]) -> None:
    caps = getattr(backend, "capabilities", None)
    if caps is None:
        return
    hints = getattr(backend, "capability_hints", {}) or {}
    name = getattr(backend, "name", "") or type(backend).__name__
    for feature, where in features.items():
        if feature in caps or feature in ("dropout", "batchnorm"):  # removed / folded before transfer
            continue
        hint = hints.get(feature)
        raise BackendCapacityError(f"backend '{name}' cannot run {where}: it does not support '{feature}'"
                                   + (f"; {hint}" if hint else ""))


__all__ = ["symmetric_scale", "quantize_symmetric", "straight_through", "fold_batchnorm", "prepare_for_backend",
           "chip_spec", "write_neuron_parameters"]
