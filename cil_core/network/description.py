"""Hardware-neutral description of a feed-forward spiking network.

Adapters (snntorch, norse, sinabs, NIR, ...) translate a model into a :class:`NetworkSpec`;
backends (the ideal float simulator, the analog-mismatch chip, the Speck-style event-driven
chip, a user's own chip) consume it. The description is *explicit*: every neuron layer states
its decay, threshold, reset mechanism, reset timing and spike condition. Nothing is implied by
the library the model came from.

Synaptic layers refer to their trainable tensors by **name** (the name the parameter has in the
wrapped model, e.g. ``"0.weight"``); the values live in the model, so training updates the user's
own model in place.

Time is discrete: step ``t`` has length ``dt`` seconds. Tensors flowing between layers are
time-major ``[T, B, *feature_shape]``.

Neuron dynamics (one layer, all quantities per neuron; ``H`` is the Heaviside step, with
``H(0) = 1`` iff ``fires_at_threshold``):

.. math::

    i_t &= \\alpha\\, i_{t-1} + x_t                    &&\\text{(synaptic current; absent if } \\alpha \\text{ is None, then } i_t = x_t)\\\\
    I_t &= i_t \\;\\text{or}\\; i_{t-1}                &&\\text{(current\\_timing = "same-step" / "previous-step")}\\\\
    u_t &= v_{\\rm leak} + \\beta\\,(v_{t-1} - v_{\\rm leak}) + g\\, I_t   &&\\text{(decay + integration, } g = \\text{input\\_gain)}\\\\
    S_t &= H(v_t - \\theta)

and the reset, according to ``reset_timing``:

* ``"immediate"``: :math:`v_t = r(u_t)` where ``r`` is applied where :math:`S_t = 1`.
* ``"deferred-pre"`` (snntorch ``Leaky`` with reset-to-zero): the reset signal
  :math:`R_t = H(v_{t-1} - \\theta)` is applied to the *previous* membrane before decay:
  :math:`u_t = v_{\\rm leak} + \\beta (r_{R_t}(v_{t-1}) - v_{\\rm leak}) + g I_t`, :math:`v_t = u_t`.
* ``"deferred-post"`` (snntorch subtract reset, ``Synaptic`` zero reset): :math:`R_t` is applied
  after decay and integration: :math:`v_t = r_{R_t}(u_t)`.

with ``r`` = subtract (:math:`v - \\theta`), zero (:math:`v_{\\rm reset}`) or none. With
``max_spikes_per_step = n != 1`` (``None``: unbounded) a neuron emits :math:`\\min(n, \\lfloor v/\\theta \\rfloor)` spikes
and subtracts that many thresholds (sinabs ``MultiSpike``); a zero reset then applies wherever at
least one spike occurred. ``v_min`` clamps the membrane from below after the reset (computed as
:math:`\mathrm{relu}(v - v_{\min}) + v_{\min}`, sinabs' expression).

Forward-Euler form (norse). When ``mem_rate`` :math:`k_m` (and, with a synaptic current,
``syn_rate`` :math:`k_s`) are set, the same dynamics are evaluated in norse's floating-point
order, :math:`i_t = (i_{t-1} + (-k_s)\\, i_{t-1}) + x_t` and
:math:`u_t = v_{t-1} + k_m\\,((v_{\\rm leak} - v_{t-1}) + I_t)`; ``beta`` and ``alpha`` must then
equal :math:`1 - k_m` and :math:`1 - k_s` and ``input_gain`` equal :math:`k_m` (backends that
ignore the rates see the same dynamics up to rounding). ``v_init`` is the membrane at
:math:`t = 0` (``None``: :math:`v_{\\rm leak}`; norse's ``IAFCell`` starts at ``v_reset``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal, Mapping, Union

import torch

from ..errors import ShapeError, SpecError

Scalar = Union[float, torch.Tensor]
Reset = Literal["subtract", "zero", "none"]
ResetTiming = Literal["immediate", "deferred-pre", "deferred-post"]
CurrentTiming = Literal["same-step", "previous-step"]

__all__ = [
    "Dense",
    "Conv2d",
    "Pool2d",
    "Flatten",
    "Neuron",
    "Surrogate",
    "NetworkSpec",
    "Layer",
]


@dataclass(frozen=True)
class Surrogate:
    """Surrogate derivative :math:`\\partial S/\\partial v` used by the *software* pass only.

    ``name``: ``"atan"`` (snntorch default, :math:`\\frac{a/2}{1 + (\\pi a x / 2)^2}`),
    ``"superspike"`` (:math:`1/(a|x| + 1)^2`, Zenke & Ganguli; BrainScaleS-2 uses a=50),
    ``"fast-sigmoid"`` (:math:`1/(a|x| + 1)^2`, same as superspike, snntorch's naming),
    ``"sigmoid"`` (:math:`a\\,\\sigma(ax)(1-\\sigma(ax))`), ``"exponential"``
    (:math:`s\\,e^{-|x|/w}` with sinabs' SingleExponential w = a, s = scale),
    ``"heaviside"`` (straight-through where :math:`S=1`).
    ``x`` is :math:`v - \\theta` in the model's own membrane units.
    """

    name: str = "atan"
    slope: float = 2.0
    scale: float = 1.0

    NAMES = ("atan", "superspike", "fast-sigmoid", "sigmoid", "exponential", "heaviside")

    def __post_init__(self) -> None:
        if self.name not in self.NAMES:
            raise SpecError(f"unknown surrogate {self.name!r}; known: {', '.join(self.NAMES)}")
        for f in ("slope", "scale"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SpecError(f"surrogate {self.name!r}: {f} must be a positive finite number, got {v!r}")


@dataclass(frozen=True)
class Dense:
    """Fully connected synapses: :math:`y = x W^T (+ b)`; ``W`` has shape ``[out, in]``."""

    weight: str
    bias: str | None
    in_features: int
    out_features: int

    kind = "dense"

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the weight and bias tensors."""
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
class Pool2d:
    """Spatial pooling without padding. ``mode="sum"`` adds the inputs in each window;
    ``mode="avg"`` divides that sum by ``kh*kw`` (what an event-driven chip does by scaling the
    next layer's weights)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    mode: Literal["sum", "avg"]

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
class Neuron:
    """A layer of spiking (or, with ``output="membrane"``, non-spiking readout) neurons.

    All fields are required: an adapter states the semantics of its library explicitly.
    ``beta``, ``alpha``, ``threshold`` may be scalars or tensors broadcastable to the layer's
    feature shape (per-neuron values). ``dt`` is in seconds and only documents the time base
    (used by exporters and by backends that model physical time constants).
    """

    beta: Scalar
    alpha: Scalar | None
    threshold: Scalar
    reset: Reset
    reset_timing: ResetTiming
    current_timing: CurrentTiming
    input_gain: Scalar
    v_leak: float
    v_reset: float
    v_min: float | None
    fires_at_threshold: bool
    max_spikes_per_step: int | None
    dt: float
    output: Literal["spikes", "membrane"]
    surrogate: Surrogate = field(default_factory=Surrogate)
    name: str = ""
    #: forward-Euler step factors dt/tau_mem and dt/tau_syn (norse's float order; see the module doc)
    mem_rate: Scalar | None = None
    syn_rate: Scalar | None = None
    #: membrane at t = 0 (``None``: ``v_leak``)
    v_init: float | None = None

    kind = "neuron"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def with_(self, **changes) -> "Neuron":
        """A copy with some fields replaced (backends use it for per-chip parameters).

        Replacing ``beta`` or ``input_gain`` (``alpha``) without new rates drops ``mem_rate`` and
        ``syn_rate`` (``syn_rate``): the copy then follows the changed decay, not the old Euler rates."""
        if ("beta" in changes or "input_gain" in changes) and "mem_rate" not in changes:
            changes.setdefault("mem_rate", None)
            changes.setdefault("syn_rate", None)
        if "alpha" in changes and "syn_rate" not in changes:
            changes["syn_rate"] = None
        return replace(self, **changes)

    def validate(self) -> None:
        if self.reset not in ("subtract", "zero", "none"):
            raise SpecError(f"neuron '{self.name}': unknown reset {self.reset!r}")
        if self.reset_timing not in ("immediate", "deferred-pre", "deferred-post"):
            raise SpecError(f"neuron '{self.name}': unknown reset_timing {self.reset_timing!r}")
        if self.current_timing not in ("same-step", "previous-step"):
            raise SpecError(f"neuron '{self.name}': unknown current_timing {self.current_timing!r}")
        if self.output not in ("spikes", "membrane"):
            raise SpecError(f"neuron '{self.name}': unknown output {self.output!r}")
        if self.max_spikes_per_step is not None and self.max_spikes_per_step < 1:
            raise SpecError(f"neuron '{self.name}': max_spikes_per_step must be >= 1 or None (unbounded)")
        if self.syn_rate is not None and (self.alpha is None or self.mem_rate is None):
            raise SpecError(f"neuron '{self.name}': syn_rate needs a synaptic current (alpha) and mem_rate")
        for f in ("beta", "alpha", "threshold", "input_gain", "mem_rate", "syn_rate"):
            v = getattr(self, f)
            if v is None:
                continue
            t = torch.as_tensor(v, dtype=torch.float64)
            if not torch.isfinite(t).all():
                raise SpecError(f"neuron '{self.name}': {f} is not finite")
        if bool((torch.as_tensor(self.threshold) <= 0).any()):
            raise SpecError(f"neuron '{self.name}': threshold must be > 0")
        # the Euler rates restate the decays: beta = 1 - k_m, input_gain = k_m, alpha = 1 - k_s
        pairs = []
        if self.mem_rate is not None:
            pairs += [("beta", self.beta, "1 - mem_rate", 1 - torch.as_tensor(self.mem_rate, dtype=torch.float64)),
                      ("input_gain", self.input_gain, "mem_rate", torch.as_tensor(self.mem_rate, dtype=torch.float64))]
        if self.syn_rate is not None:
            pairs.append(("alpha", self.alpha, "1 - syn_rate", 1 - torch.as_tensor(self.syn_rate, dtype=torch.float64)))
        for f, v, what, want in pairs:
            have = torch.as_tensor(v, dtype=torch.float64)
            if not torch.allclose(have, want, rtol=1e-5, atol=1e-7):
                raise SpecError(f"neuron '{self.name}': {f} must equal {what} when the Euler rates are given")


Layer = Union[Dense, Conv2d, Pool2d, Flatten, Neuron]
SYNAPTIC = (Dense, Conv2d)


@dataclass(frozen=True)
class NetworkSpec:
    """An ordered feed-forward chain of layers plus the per-sample input shape.

    ``layers`` alternate (loosely) between synaptic layers and neuron layers; pooling and
    flatten may appear anywhere. The network's output is the last neuron layer's output
    (spikes, or membrane for a readout layer).
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.layers:
            raise SpecError("a network needs at least one layer")
        if not isinstance(self.layers[-1], Neuron):
            raise SpecError(
                f"the last layer must be a neuron layer (the network's output); got {type(self.layers[-1]).__name__}"
            )
        for layer in self.layers:
            if isinstance(layer, Neuron):
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

    def parameter_names(self) -> list[str]:
        """Names of all trainable synaptic tensors, in layer order (weights then biases)."""
        names: list[str] = []
        for layer in self.layers:
            if isinstance(layer, SYNAPTIC):
                names.append(layer.weight)
                if layer.bias is not None:
                    names.append(layer.bias)
        return names

    def neuron_layers(self) -> list[tuple[int, Neuron]]:
        return [(i, l) for i, l in enumerate(self.layers) if isinstance(l, Neuron)]

    def synaptic_layers(self) -> list[tuple[int, Layer]]:
        return [(i, l) for i, l in enumerate(self.layers) if isinstance(l, SYNAPTIC)]

    def driven_neurons(self) -> dict[int, int]:
        """For every synaptic layer (by index), the index of the neuron layer it drives: the
        first neuron layer after it (pooling and flattening in between do not matter). Several
        synaptic layers in a row drive the same neuron layer; a synaptic layer with no neuron
        layer after it is absent."""
        out: dict[int, int] = {}
        pending: list[int] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, SYNAPTIC):
                pending.append(i)
            elif isinstance(layer, Neuron):
                out.update((j, i) for j in pending)
                pending = []
        return out

    def describe(self) -> str:
        """One line per layer with shapes: what ``cil`` thinks the model is."""
        lines = [f"input {self.input_shape}"]
        for layer, shape in zip(self.layers, self.shapes()):
            if isinstance(layer, Neuron):
                desc = (
                    f"neuron[{layer.output}] beta={_short(layer.beta)} alpha={_short(layer.alpha)} "
                    f"thr={_short(layer.threshold)} reset={layer.reset}/{layer.reset_timing}"
                )
            else:
                desc = ", ".join(
                    f"{f.name}={getattr(layer, f.name)}" for f in fields(layer)  # type: ignore[arg-type]
                ) or type(layer).__name__
                desc = f"{layer.kind}({desc})"
            lines.append(f"{desc} -> {shape}")
        return "\n".join(lines)


def _short(v: object) -> str:
    if v is None:
        return "None"
    t = torch.as_tensor(v)
    if t.numel() == 1:
        return f"{float(t):.4g}"
    return f"tensor{tuple(t.shape)}"


def check_parameters(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None) -> None:
    """Check that ``params`` holds every tensor the spec names, with the right shape, all finite.

    With ``n_sets`` every tensor carries a leading parameter-set dimension of that size.
    Raises :class:`SpecError` (missing), :class:`ShapeError` or
    :class:`~cil_core.errors.NonFiniteError` naming the offending tensor.
    """
    from ..errors import NonFiniteError

    lead = () if n_sets is None else (n_sets,)
    for layer in spec.layers:
        if not isinstance(layer, SYNAPTIC):
            continue
        wshape, bshape = layer.param_shapes()
        for name, shape in ((layer.weight, wshape), (layer.bias, bshape)):
            if name is None:
                continue
            if name not in params:
                raise SpecError(f"parameter '{name}' is missing")
            t = params[name]
            if tuple(t.shape) != lead + shape:
                raise ShapeError(f"parameter '{name}' has shape {tuple(t.shape)}, expected {lead + shape}")
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise NonFiniteError(f"parameter '{name}' holds {bad} non-finite value(s) (NaN or inf)")

