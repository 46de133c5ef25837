"""Network vocabulary: :class:`NetworkSpec`, the hardware-neutral description of a feed-forward
spiking network, built from the layers of :mod:`cil_core.network.layers` and
:mod:`cil_core.network.neuron`; the feature vocabulary (:data:`FEATURES`) and
:func:`check_parameters`.

Adapters (snntorch, norse, sinabs, NIR, ...) translate a model into a :class:`NetworkSpec`;
backends (the ideal float simulator, the analog-mismatch chip, the Speck-style event-driven
chip, a user's own chip) consume it. Tensors flowing between layers are time-major
``[T, B, *feature_shape]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping, Union

import torch

from ..errors import NonFiniteError, ShapeError, SpecError
from .finite import all_finite, count_non_finite
from .layers import SYNAPTIC, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Pool2d
from .neuron import Neuron, NeuronParameter, Recurrent

__all__ = ["FEATURES", "Layer", "NetworkSpec", "layer_features", "check_parameters", "check_parameter_shapes", "check_neuron_ranges"]


#: every feature :meth:`NetworkSpec.features` reports, with what it means (the vocabulary of
#: backend capabilities and of the capability table in the README)
FEATURES: dict[str, str] = {
    "dense": "fully connected synapses (nn.Linear)",
    "conv2d": "2-D convolution",
    "conv1d": "1-D convolution",
    "bias": "biases on synaptic layers",
    "pool-sum": "sum pooling (sinabs SumPool2d)",
    "pool-avg": "average pooling (nn.AvgPool2d)",
    "pool-max": "spiking max pooling (nn.MaxPool2d)",
    "batchnorm": "batch norm run as such (otherwise folded into the preceding synapses at transfer)",
    "dropout": "dropout (software training passes only; removed before every transfer)",
    "synaptic-current": "a synaptic current state (snntorch Synaptic, norse LIF, sinabs LIF with tau_syn)",
    "recurrent": "recurrent synapses (RLeaky/RSynaptic, LIFRecurrentCell, IAFRecurrent)",
    "adaptive-threshold": "adaptive threshold (norse LSNN, sinabs ALIF)",
    "multi-spike": "several spikes per neuron and step (sinabs MultiSpike)",
    "graded-spikes": "spike amplitude != 1 (snntorch graded_spikes_factor)",
    "membrane-readout": "a non-spiking leaky-integrator readout layer",
    "refractory": "an absolute refractory period (norse LIFRefracCell)",
    "quantized-state": "membrane / synaptic current held on a set of levels (snntorch state_quant)",
}

#: any layer of a :class:`NetworkSpec`
Layer = Union[Dense, Conv1d, Conv2d, Pool2d, Flatten, BatchNorm, Dropout, Neuron]


@dataclass(frozen=True)
class NetworkSpec:
    """An ordered feed-forward chain of layers plus the per-sample input shape.

    ``layers`` alternate (loosely) between synaptic layers and neuron layers; pooling and
    flatten may appear anywhere. The network's output is the last neuron layer's output
    (spikes, or membrane for a readout layer).

    ``synapse_calls`` states how the source library evaluates its feed-forward synaptic layers
    (Dense, Conv), which decides how their float sums round: ``"per-step"`` — one call per time
    step on ``[B, ...]`` (snntorch's and norse's loops); ``"all-steps"`` — one call on all
    ``T x B`` samples of a sequence, batch-major (sinabs applies its torch layers to
    ``(B, T, ...)`` / ``(B*T, ...)``). The values are equal up to rounding; the executor
    follows the statement so that the ideal backend reproduces the library bit for bit.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    source: str = ""
    synapse_calls: str = "per-step"

    def __post_init__(self) -> None:
        if self.synapse_calls not in ("per-step", "all-steps"):
            raise SpecError(f"synapse_calls must be 'per-step' or 'all-steps', got {self.synapse_calls!r}")
        if not self.layers:
            raise SpecError("a network needs at least one layer")
        if not isinstance(self.layers[-1], Neuron):
            raise SpecError(
                f"the last layer must be a neuron layer (the network's output); got {type(self.layers[-1]).__name__}"
            )
        for layer in self.layers:
            if isinstance(layer, (Neuron, BatchNorm)):
                layer.validate()
        self.shapes()  # validates the chain

    def shapes(self) -> list[tuple[int, ...]]:
        """Per-sample output shape of every layer (raises :class:`ShapeError` on a mismatch)."""
        out, shape = [], tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.out_shape(shape)
            out.append(shape)
        return out

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1]

    @property
    def n_outputs(self) -> int:
        return int(math.prod(self.output_shape))

    def tensor_layers(self) -> list[tuple[int, Layer | Recurrent]]:
        """Every layer that owns named tensors, in order, as ``(index, layer)``: synaptic layers,
        batch norms, and a neuron layer's :class:`Recurrent` synapses (at the neuron's index)."""
        out: list[tuple[int, Layer | Recurrent]] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, (Dense, Conv1d, Conv2d, BatchNorm)):
                out.append((i, layer))
            elif isinstance(layer, Neuron) and layer.recurrent is not None:
                out.append((i, layer.recurrent))
        return out

    def neuron_parameters(self) -> list[tuple[int, Neuron, NeuronParameter]]:
        """Every neuron field held as a trainable tensor (:class:`NeuronParameter`), in layer
        order, as ``(index, neuron layer, parameter)``."""
        return [(i, l, p) for i, l in self.neuron_layers() for p in l.trained]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every trainable tensor, in layer order (weights then biases), then
        the trainable neuron parameters (:meth:`neuron_parameters`)."""
        out: dict[str, tuple[int, ...]] = {}
        for _, layer in self.tensor_layers():
            for name, shape in zip((layer.weight, layer.bias), layer.param_shapes()):  # type: ignore[union-attr]
                if name is not None:
                    out[name] = shape
        for _, _, p in self.neuron_parameters():
            out.setdefault(p.name, p.shape)
        return out

    def parameter_names(self) -> list[str]:
        """Names of all trainable tensors (synapses, recurrent synapses, batch-norm affine
        terms), in layer order (weights then biases), then the trainable neuron parameters."""
        names: list[str] = []
        for _, layer in self.tensor_layers():
            names += [n for n in (layer.weight, layer.bias) if n is not None]  # type: ignore[union-attr]
        for _, _, p in self.neuron_parameters():
            if p.name not in names:
                names.append(p.name)
        return names

    def neuron_layers(self) -> list[tuple[int, Neuron]]:
        return [(i, l) for i, l in enumerate(self.layers) if isinstance(l, Neuron)]

    def synaptic_layers(self) -> list[tuple[int, Layer | Recurrent]]:
        """Every set of synapses as ``(index, layer)``: feed-forward synaptic layers and the
        :class:`Recurrent` synapses of neuron layers (reported at the neuron layer's index)."""
        return [(i, l) for i, l in self.tensor_layers() if not isinstance(l, BatchNorm)]

    def driven_neurons(self) -> dict[int, int]:
        """For every synaptic layer (by index), the index of the neuron layer it drives: the
        first neuron layer after it (pooling, batch norm and flattening in between do not
        matter; recurrent synapses drive their own layer). Several synaptic layers in a row
        drive the same neuron layer; a synaptic layer with no neuron layer after it is absent."""
        out: dict[int, int] = {}
        pending: list[int] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, SYNAPTIC):
                pending.append(i)
            elif isinstance(layer, Neuron):
                out.update((j, i) for j in pending)
                pending = []
                if layer.recurrent is not None:
                    out[i] = i
        return out

    def features(self) -> dict[str, str]:
        """What running this network needs, as ``{feature: first layer that needs it}``; the
        vocabulary of :attr:`cil_core.hardware.backend.Backend.capabilities`."""
        need: dict[str, str] = {}

        def add(feature: str, where: str) -> None:
            assert feature in FEATURES, feature
            need.setdefault(feature, where)

        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({_layer_title(layer)})"
            for feature in layer_features(layer):
                add(feature, where)
        return need

    def describe(self) -> str:
        """One line per layer with shapes: what ``cil`` thinks the model is."""
        lines = [f"input {self.input_shape}" + ("" if self.synapse_calls == "per-step"
                                                 else f" synapse_calls={self.synapse_calls}")]
        for layer, shape in zip(self.layers, self.shapes()):
            if isinstance(layer, Neuron):
                desc = (
                    f"neuron[{layer.output}] beta={_short(layer.beta)} alpha={_short(layer.alpha)} "
                    f"thr={_short(layer.threshold)} reset={layer.reset}/{layer.reset_timing}"
                )
                if layer.recurrent is not None:
                    rc = layer.recurrent
                    desc += f" recurrent={rc.mode}->{rc.into}" + ("" if rc.autapses else " no-autapses") + \
                        ("" if rc.initial == "bias" else f" initial={rc.initial}") + \
                        ("" if rc.weight_layout == "out-in" else f" weight_layout={rc.weight_layout}")
                if layer.adaptation is not None:
                    ad = layer.adaptation
                    desc += f" adaptive[{ad.form}](rho={_short(ad.rho)}, jump={_short(ad.jump)})"
                if layer.synaptic_update != "decay-then-add":
                    desc += f" synaptic_update={layer.synaptic_update}"
                if layer.input_factors is not None:
                    desc += " input_factors=(" + ", ".join(_short(f) for f in layer.input_factors) + ")"
                if not bool((torch.as_tensor(layer.spike_amplitude) == 1).all()):
                    desc += f" amplitude={_short(layer.spike_amplitude)}"
                if getattr(layer, "refractory", None) is not None:
                    desc += f" refractory={_short(layer.refractory.period)}"
                if getattr(layer, "quantization", None) is not None:
                    q = layer.quantization
                    desc += f" quantized[{'+'.join(q.states)}]({torch.as_tensor(q.levels).numel()} levels)"
                if getattr(layer, "reset_catch_up", False):
                    desc += " reset_catch_up"
                if layer.trained:
                    desc += " trained[" + ", ".join(f"{p.field}={p.name}" + ("/neuron" if p.per_neuron else "")
                                                    for p in layer.trained) + "]"
            elif isinstance(layer, BatchNorm):
                desc = f"batchnorm(weight={layer.weight}, bias={layer.bias}, C={layer.num_features}, eps={layer.eps:g})"
            else:
                desc = ", ".join(
                    f"{f.name}={getattr(layer, f.name)}" for f in fields(layer)  # type: ignore[arg-type]
                    if not (f.name == "weight_layout" and getattr(layer, f.name) == "out-in")  # the default: unsaid
                ) or type(layer).__name__
                desc = f"{layer.kind}({desc})"
            lines.append(f"{desc} -> {shape}")
        return "\n".join(lines)


def _layer_title(layer: object) -> str:
    if isinstance(layer, Neuron):
        return f"neuron '{layer.name}'" if layer.name else "neuron"
    if isinstance(layer, Pool2d):
        return f"{layer.mode} pool"
    name = getattr(layer, "weight", None)
    return f"{type(layer).__name__} '{name}'" if name else type(layer).__name__


def _short(v: object) -> str:
    if v is None:
        return "None"
    t = torch.as_tensor(v)
    if t.numel() == 1:
        return f"{float(t):.4g}"
    return f"tensor{tuple(t.shape)}"


def check_parameter_shapes(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None,
                           where: str = "") -> None:
    """Check that ``params`` holds every tensor the spec names, with the right shape (no scan of
    the values: cheap enough for every weight transfer).

    With ``n_sets`` every tensor carries a leading parameter-set dimension of that size.
    Raises :class:`SpecError` (missing) or :class:`ShapeError` naming the tensor, prefixed with
    ``where`` (e.g. ``"speck: "``).
    """
    lead = () if n_sets is None else (n_sets,)
    for name, shape in spec.tensor_shapes().items():
        if name not in params:
            raise SpecError(f"{where}parameter '{name}' is missing (given: {sorted(params)})")
        got = tuple(params[name].shape)
        if got != lead + shape:
            sets = "" if n_sets is None else f" (a leading set dimension of {n_sets}, then {shape})"
            raise ShapeError(f"{where}parameter '{name}' has shape {got}, expected {lead + shape}{sets}")


def check_parameters(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None) -> None:
    """Check that ``params`` holds every tensor the spec names, with the right shape
    (:func:`check_parameter_shapes`), all finite.

    Raises :class:`SpecError` (missing), :class:`ShapeError` or
    :class:`~cil_core.errors.NonFiniteError` naming the offending tensor.
    """
    check_parameter_shapes(spec, params, n_sets)
    for name in spec.tensor_shapes():
        t = params[name]
        if not all_finite(t):
            bad = count_non_finite(t)
            raise NonFiniteError(f"parameter '{name}' holds {bad} non-finite value(s) (NaN or inf)")


def check_neuron_ranges(spec: NetworkSpec, params: Mapping[str, torch.Tensor], where: str = "") -> None:
    """Check the trainable neuron parameters' values where they enter a chip: the value the layer
    uses (after the library's clamp, :meth:`NeuronParameter.value`) must satisfy
    :math:`0 \\le \\beta \\le 1`, :math:`0 \\le \\alpha \\le 1`, :math:`\\theta > 0`, finite.
    Raises :class:`SpecError` naming the layer, the tensor and the offending value."""
    for i, layer, p in spec.neuron_parameters():
        v = p.value(params[p.name].detach())
        bad = None
        if not all_finite(v):
            bad = "is not finite"
        elif p.field in ("beta", "alpha") and bool(((v < 0) | (v > 1)).any()):
            bad = f"must be in [0, 1] (min {float(v.min()):.6g}, max {float(v.max()):.6g})"
        elif p.field == "threshold" and bool((v <= 0).any()):
            bad = f"must be > 0 (min {float(v.min()):.6g})"
        if bad is not None:
            raise SpecError(f"{where}layer {i} ({_layer_title(layer)}): the trained {p.field} '{p.name}' {bad}; "
                            "a chip cannot hold it (clamp the parameter into its range, or lower the learning rate)")


def layer_features(layer: "Layer") -> list[str]:
    """The :data:`FEATURES` running ``layer`` needs (what :meth:`NetworkSpec.features` collects
    over a network; a chip's ``requires`` asks it of every neuron layer)."""
    need: list[str] = []

    def add(feature: str) -> None:
        assert feature in FEATURES, feature
        if feature not in need:
            need.append(feature)

    if isinstance(layer, Dense):
        add("dense")
    elif isinstance(layer, Conv2d):
        add("conv2d")
    elif isinstance(layer, Conv1d):
        add("conv1d")
    elif isinstance(layer, Pool2d):
        add(f"pool-{layer.mode}")
    elif isinstance(layer, BatchNorm):
        add("batchnorm")
    elif isinstance(layer, Dropout):
        add("dropout")
    elif isinstance(layer, Neuron):
        if layer.output == "membrane":
            add("membrane-readout")
        if layer.alpha is not None:
            add("synaptic-current")
        if layer.recurrent is not None:
            add("recurrent")
        if layer.adaptation is not None:
            add("adaptive-threshold")
        if layer.max_spikes_per_step != 1 and layer.output == "spikes":
            add("multi-spike")
        if not bool((torch.as_tensor(layer.spike_amplitude) == 1).all()) or \
                any(p.field == "spike_amplitude" for p in layer.trained):
            add("graded-spikes")
        if getattr(layer, "refractory", None) is not None:
            add("refractory")
        if getattr(layer, "quantization", None) is not None:
            add("quantized-state")
    if isinstance(layer, (Dense, Conv1d, Conv2d)) and layer.bias is not None:
        add("bias")
    return need
