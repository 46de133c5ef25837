"""snntorch → cil network description.

Two model shapes are accepted, unchanged:

1. ``nn.Sequential`` (nested ``nn.Sequential`` containers are flattened; parameter names keep
   their dots, ``"0.1.weight"``) of torch layers and snntorch neurons built with
   ``init_hidden=True`` (the last one may have ``output=True``). snntorch runs it one time step
   per call; cil presents time-major input ``[T, B, ...]`` and calls it ``T`` times after
   resetting every neuron's state.
2. A user ``nn.Module`` whose ``forward(x)`` loops over the time-major input itself and returns
   the output spike record ``[T, B, C]`` (or a tuple whose first element is it), as in the
   snntorch tutorials. cil finds the layer order by recording the submodule calls of a probe run
   over 3 time steps (the model in ``eval()`` mode, so batch norm statistics are not touched),
   checks that every step calls the same submodules in the same order, each once, and that the
   calls form a chain (each layer consumes the previous layer's output; a reshape between them
   becomes a ``Flatten``). A forward that uses a different submodule at each step (batch norm
   through time, ``self.bn[step](x)``, snntorch's ``BatchNormTT1d/2d``), calls a submodule at
   some steps only, or calls one submodule twice per step is refused naming the submodules:
   a chain description of step 0 would compute every later step differently.

Accepted, each spike for spike (and membrane for membrane, bit for bit) equal to snntorch's own
forward on the ideal backend and in cil's software pass, with the BPTT gradients of snntorch's
autograd (tests/test_snntorch_adapter.py, tests/test_snntorch_layers.py):

* torch layers: ``nn.Linear``, ``nn.Conv2d``, ``nn.Conv1d``, ``nn.AvgPool2d``, ``nn.MaxPool2d``
  (spiking max pooling), ``nn.BatchNorm1d/2d`` (running statistics, i.e. the model's ``eval()``
  forward; folded into the preceding conv/linear for chips that cannot normalise),
  ``nn.Dropout`` (software training passes only, never on a chip), ``nn.Flatten``,
  ``nn.Identity``;
* snntorch 1.0's ``LeakyParallel(bias=False)`` (an ``nn.RNN`` with relu and a diagonal hidden
  matrix, called once on the whole sequence): ``Dense(rnn.weight_ih_l0)`` + a neuron with
  :math:`\\beta = \\mathrm{diag}(W_{hh})`, no reset, the membrane floored at 0 and the spike taken from
  the floored membrane (``fire_on_floored``), in an ``nn.Sequential`` or a module that calls its
  layers once each, with only ``nn.Linear``, ``nn.Dropout``, ``nn.Identity`` between them;
* neurons: ``Leaky``, ``Synaptic``, ``RLeaky``, ``RSynaptic``, ``Lapicque``; surrogates
  ``atan``, ``fast_sigmoid``, ``sigmoid``, ``heaviside``, ``triangular``,
  ``straight_through_estimator``; ``graded_spikes_factor`` (scalar or per neuron) as the
  layer's spike amplitude.

Neuron semantics (snntorch 0.9-1.0, ``reset_delay=True``), with :math:`R_t = H(v_{t-1}-\\theta)`:

* ``Leaky`` subtract: :math:`v_t = \\beta v_{t-1} + x_t - R_t\\theta` → ``deferred-post``;
* ``Leaky`` zero: :math:`v_t = \\beta (1-R_t) v_{t-1} + x_t` → ``deferred-pre``;
* ``Synaptic``: :math:`i_t = \\alpha i_{t-1} + x_t`, :math:`v_t = \\beta v_{t-1} + i_t - R_t\\theta`
  (subtract) or :math:`(1-R_t)(\\beta v_{t-1} + i_t)` (zero) → ``deferred-post``;
* ``RLeaky``: :math:`u_t = (\\beta v_{t-1} + x_t) + r_t` with :math:`r_t` = ``recurrent(spk_{t-1})``
  (``Recurrent(into="membrane")``), then :math:`u_t - R_t\\theta` or :math:`u_t - R_t u_t`: both resets
  ``deferred-post`` (unlike ``Leaky``, ``RLeaky`` resets to zero *after* the decay);
* ``RSynaptic``: :math:`i_t = (\\alpha i_{t-1} + x_t) + r_t` (``Recurrent(into="current")``), then as
  ``Synaptic``;
* recurrent synapses: ``all_to_all=True`` with ``linear_features=n`` → dense, the layer's own
  ``recurrent`` ``nn.Linear`` (``"<layer>.recurrent.weight"`` / ``".bias"``; the bias acts from step 0,
  ``initial="bias"``, since snntorch applies the linear layer to zero spikes at step 0);
  ``all_to_all=False`` → one-to-one, :math:`V \\odot S_{t-1}` with the per-neuron ``V``
  (``"<layer>.V"``);
* ``Lapicque``: :math:`v_t = ((x_t R)\\tfrac{1}{RC})\\Delta t + (1 - \\Delta t/(RC))\\, v_{t-1}` (snntorch
  does not use its ``beta`` buffer in the forward): ``beta`` = :math:`1 - \\Delta t/(RC)` computed
  from the buffers as snntorch does, the input scaled by ``input_factors=(R, 1/(RC), Δt)`` one
  after the other (snntorch's float order); resets ``deferred-post``;
* graded spikes: :math:`S'_t = g\\,S_t` (``spike_amplitude``); the reset follows :math:`S_t`;
* ``reset_delay=False`` (``Leaky``, ``Synaptic``, ``RLeaky``): snntorch keeps its deferred reset
  :math:`R_t` and, right after ``fire``, resets by :math:`S_t - R_t` ("avoid double reset"):
  :math:`v_t = u_t - (S_t - R_t)\\theta` or :math:`u_t - (S_t - R_t)u_t` → ``Neuron.reset_catch_up``.
  :math:`R_t \\ne 0` only where the membrane left after a subtract reset is still above the
  threshold; the spike decision of that step then sees :math:`u_t - \\theta` (snntorch's order);
* ``state_quant=snntorch.functional.quant.state_quant(...)`` (uniform or not): the membrane (and
  ``Synaptic``'s current) is rounded to the nearest level after the state update, before
  ``fire`` (:class:`~cil_core.network.neuron.StateQuantization`, levels read from the function),
  gradient straight-through as snntorch's ``StateQuant``;
* :math:`S_t = H(v_t - \\theta)` with ``H(0) = 0``; :math:`\\alpha, \\beta` clipped to [0, 1].
* ``learn_beta`` / ``learn_alpha`` / ``learn_threshold`` / ``learn_graded_spikes_factor=True``
  (scalar or per-neuron tensors): the layer names the model's ``nn.Parameter``
  (:class:`~cil_core.network.neuron.NeuronParameter`, :func:`trained_parameters_of`); cil uses
  it as snntorch does, :math:`\\mathrm{clamp}(\\beta, 0, 1)\\,v + I` (``alpha`` alike),
  :math:`H(v - \\theta)`, :math:`R_t\\theta`, :math:`g S_t`, so values and BPTT gradients
  w.r.t. these parameters equal snntorch's, and trains it in place.

Refused, with the layer named and what to use instead (:class:`~cil_core.UnsupportedLayerError`):

* ``Alpha``: its membrane is a scaled difference of an excitatory and an inhibitory exponential
  trace, whose resets act on the traces; cil's neuron (one synaptic current, one leaky membrane)
  reproduces it only up to rounding, not spike for spike. Use ``Synaptic(alpha, beta)`` (the
  same double-exponential response to an input spike);
* ``RLeaky`` / ``RSynaptic`` with convolutional recurrence (``conv2d_channels``/``kernel_size``):
  recurrent synapses are dense or one-to-one over 1-D layers; use ``linear_features`` after a
  ``Flatten`` or ``all_to_all=False``;
* ``all_to_all=False`` with a shared (scalar) ``V``: one value tied across all neurons is not a
  set of per-synapse weights cil can train and transfer; pass ``V=torch.full((n,), v)``;
* ``learn_recurrent=False``: cil trains every synapse, so the recurrent weights would not stay
  fixed as in snntorch; a ``beta`` / ``threshold`` tensor that requires grad but is held as a
  buffer (``learn_beta=False``): no optimizer over the model's parameters trains it;
* a recurrent layer as the non-spiking readout (``output="membrane"``);
* snntorch 1.0's ``StateLeaky`` / ``LinearLeaky``: the membrane is a causal convolution of the
  whole sequence with :math:`e^{-t/\\tau}`, never reset; cil's recursion equals it only up to
  rounding (the message names ``snn.Leaky(beta=exp(-(1-beta)), reset_mechanism='none')``);
  ``LeakyParallel`` with ``bias=True`` (its ``b_hh`` is added inside the recurrence),
  ``weight_hh_enable=True``, ``learn_beta``, decays outside [0, 1] (snntorch 1.0 ignores a
  per-neuron ``beta`` and keeps nn.RNN's random ones), as the readout, or mixed with step-by-step
  neurons or with layers other than ``nn.Linear`` / ``nn.Dropout`` / ``nn.Identity``;
* ``RSynaptic(reset_delay=False)``: snntorch 1.0 cannot run it (its forward divides the ``spk``
  argument, ``None`` with ``init_hidden``, and discards the reset it computes); a ``state_quant``
  other than snntorch's own ``state_quant(...)`` function;
* ``inhibition``, ``surrogate_disable=True`` and other
  surrogates (``spike_rate_escape``, ``LSO``, ``SFS``, custom functions), other neuron types
  (``SLSTM``, ``SConv2dLSTM``, ...); ``nn.Dropout1d/2d`` (use ``nn.Dropout``),
  pooling / convolution with padding modes, dilation, groups or ``ceil_mode``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import snntorch as snn
import torch
from torch import nn

from cil_core import (
    Dense,
    NetworkSpec,
    Neuron,
    ShapeError,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.network.description import NeuronParameter, Recurrent, StateQuantization
from cil_core.plugin.adapter import (ModelAdapter, flat_children, infer_input_shape, TORCH_LAYERS, qualname,
                                     torch_layer)

NEURONS = (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic, snn.Lapicque)
SUPPORTED_NEURONS = "snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic, snn.Lapicque, snn.LeakyParallel(bias=False)"
#: snntorch 1.0's layers that take the whole sequence ``[T, B, C]`` in one call (absent before 1.0)
LEAKY_PARALLEL: tuple[type, ...] = tuple(getattr(snn, n) for n in ("LeakyParallel",) if hasattr(snn, n))
STATE_LEAKY: tuple[type, ...] = tuple(getattr(snn, n) for n in ("StateLeaky", "LinearLeaky") if hasattr(snn, n))
#: torch layers that act on every time step of a ``[T, B, C]`` sequence alike (allowed between LeakyParallel layers)
SEQUENCE_SAFE = (nn.Linear, nn.Dropout, nn.Identity)

#: What this adapter accepts, as ``(layer or option, how the description states it, what cil trains)``;
#: docs/models.md's adapter table is generated from it (``benchmarks/model_table.py``), and a test
#: checks that every neuron class :func:`neuron_of` dispatches on is named here.
ACCEPTED_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("nn.Linear, nn.Conv1d, nn.Conv2d", "Dense / Conv1d / Conv2d, one call per time step", "weight, bias"),
    ("nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity", "Pool2d avg / max (spiking max pooling), Flatten",
     "-"),
    ("nn.BatchNorm1d/2d", "BatchNorm with the running statistics; folded into the synapses for chips", "γ, β"),
    ("nn.Dropout", "Dropout: software training passes only", "-"),
    ("snn.Leaky", "subtract reset deferred-post, zero reset deferred-pre",
     "beta (learn_beta, clamp(0, 1)), threshold (learn_threshold): per layer or per neuron"),
    ("snn.Synaptic", "synaptic current alpha, reset deferred-post",
     "alpha (learn_alpha), beta (learn_beta), threshold (learn_threshold): per layer or per neuron"),
    ("snn.RLeaky", "Recurrent(into='membrane'): dense (linear_features) or one-to-one (per-neuron V)",
     "recurrent weight, bias / V; beta, threshold as Leaky"),
    ("snn.RSynaptic", "Recurrent(into='current'), dense or one-to-one",
     "recurrent weight, bias / V; alpha, beta, threshold as Synaptic"),
    ("snn.Lapicque", "beta = 1 - dt/(RC), input_factors (R, 1/(RC), dt) in snntorch's order",
     "threshold (learn_threshold); its beta is never used"),
    ("snn.LeakyParallel(bias=False)", "Dense(rnn.weight_ih_l0) + neuron with beta = diag(W_hh), no reset, membrane "
     "floored at 0 (fire_on_floored)", "rnn.weight_ih_l0; threshold (learn_threshold), the factor "
     "(learn_graded_spikes_factor)"),
    ("reset_delay=False (Leaky, Synaptic, RLeaky)", "Neuron.reset_catch_up: u - (S - R) theta / u - (S - R) u", "-"),
    ("state_quant=snntorch.functional.quant.state_quant(...)", "StateQuantization: membrane (Synaptic, RSynaptic: "
     "and current) rounded to snntorch's levels, straight-through", "-"),
    ("graded_spikes_factor (scalar or per neuron)", "spike_amplitude",
     "the factor (learn_graded_spikes_factor)"),
    ("surrogates atan, fast_sigmoid, sigmoid, heaviside, triangular, straight_through_estimator", "Surrogate", "-"),
    ("nn.Sequential (nested ones flattened), or a module whose forward loops over time",
     "a chain; a module's layer order traced over 3 probe steps", "its layers' tensors"),
)
#: What this adapter refuses, as ``(layer or option, why)`` (docs/models.md's generated table).
REFUSED_LAYERS: tuple[tuple[str, str], ...] = (
    ("snn.Alpha", "two exponential traces whose resets act on the traces: reproducible only up to rounding; use "
     "snn.Synaptic"),
    ("snn.StateLeaky, snn.LinearLeaky", "the membrane is a conv1d of the whole sequence, never reset: equal to a "
     "recursion only up to rounding; the message names the step-by-step snn.Leaky"),
    ("snn.LeakyParallel with bias=True, weight_hh_enable=True, learn_beta, decays outside [0, 1], as readout",
     "b_hh inside the recurrence, membranes coupled, decays trained or random"),
    ("snn.RSynaptic(reset_delay=False)", "snntorch 1.0 itself cannot run it (raises; discards the reset it computes)"),
    ("learn_recurrent=False", "cil trains every synapse: the recurrent ones would not stay fixed"),
    ("a neuron parameter that requires grad but is a buffer (learn_beta=False with a tensor requiring grad)",
     "no optimizer over the model's parameters trains it: use learn_beta / learn_threshold"),
    ("a state_quant other than snntorch's state_quant(...)", "an arbitrary function has no description"),
    ("a time-looping forward whose steps differ (per-step submodules, BatchNormTT, shared layers)",
     "a chain run identically at every step would compute it differently"),
    ("inhibition, surrogate_disable=True, other surrogates, SLSTM, SConv2dLSTM, nn.Dropout1d/2d, padded / "
     "dilated / grouped / ceil-mode pooling and convolution", "no counterpart in the description"),
)


def surrogate_of(layer: nn.Module, where: str) -> Surrogate:
    """Read the surrogate an snntorch neuron uses (a closure made by ``snntorch.surrogate``)."""
    fn = layer.spike_grad
    qn = getattr(fn, "__qualname__", "")
    free = dict(zip(getattr(fn, "__code__", None).co_freevars if hasattr(fn, "__code__") else (),
                    [c.cell_contents for c in (fn.__closure__ or ())] if hasattr(fn, "__closure__") else ()))
    if qn.startswith("atan."):
        return Surrogate("atan", float(free.get("alpha", 2.0)))
    if qn.startswith("fast_sigmoid."):
        return Surrogate("fast-sigmoid", float(free.get("slope", 25.0)))
    if qn.startswith("sigmoid."):
        return Surrogate("sigmoid", float(free.get("slope", 25.0)))
    if qn.startswith("heaviside."):
        return Surrogate("heaviside", 1.0)
    if qn.startswith("straight_through_estimator."):
        return Surrogate("straight-through", 1.0)
    if qn.startswith("triangular."):
        a = free.get("threshold", 1)
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise UnsupportedLayerError(f"{where}: surrogate.triangular(threshold={a!r}): cil needs a positive "
                                        "finite threshold (the surrogate's scale)")
        return Surrogate("triangular", float(a))
    raise UnsupportedLayerError(
        f"{where}: surrogate gradient {qn or fn!r} is not supported by the snntorch adapter "
        "(supported: surrogate.atan, fast_sigmoid, sigmoid, heaviside, triangular, straight_through_estimator)"
    )


def _frozen_tensor(v: torch.Tensor) -> torch.Tensor | float:
    t = v.detach().clone()
    return float(t) if t.numel() == 1 else t


def _recurrent_of(layer: nn.Module, name: str, where: str) -> Recurrent:
    """The recurrent synapses of an ``RLeaky`` / ``RSynaptic``, added where snntorch adds them:
    to the membrane after decay and integration (``RLeaky``: ``beta*mem + x + rec(spk)``) or to the
    synaptic current after its update (``RSynaptic``: ``alpha*syn + x + rec(spk)``)."""
    kind = type(layer).__name__
    into = "membrane" if isinstance(layer, snn.RLeaky) else "current"
    if not getattr(layer, "learn_recurrent", True):
        raise UnsupportedLayerError(
            f"{where}: {kind} with learn_recurrent=False: cil trains every synapse, the recurrent ones included, so "
            "they would not stay fixed as snntorch keeps them. Build the layer with learn_recurrent=True "
            "(the default) to train with cil")
    if layer.all_to_all:
        rec = layer.recurrent
        if not isinstance(rec, nn.Linear):
            raise UnsupportedLayerError(
                f"{where}: {kind} with convolutional recurrence (conv2d_channels/kernel_size) is not supported: "
                "recurrent synapses in cil are dense or one-to-one over 1-D layers. Use "
                f"{kind}(..., linear_features=n) after nn.Flatten, or all_to_all=False (one-to-one, per-neuron V)")
        return Recurrent(f"{name}.recurrent.weight", f"{name}.recurrent.bias" if rec.bias is not None else None,
                         rec.in_features, mode="dense", into=into, initial="bias")
    V = layer.V
    if not isinstance(V, nn.Parameter) or V.dim() != 1 or V.numel() < 2:
        raise UnsupportedLayerError(
            f"{where}: {kind}(all_to_all=False) with a shared V of shape {tuple(V.shape)}: one value tied across "
            "all neurons is not a set of per-synapse weights cil can train and transfer. Pass a per-neuron "
            f"V=torch.full((n,), {float(V.detach().reshape(-1)[0]):g}) (one recurrent weight per neuron)")
    return Recurrent(f"{name}.V", None, V.numel(), mode="one-to-one", into=into, initial="bias")


def neuron_of(layer: nn.Module, where: str, dt: float, output: str = "spikes", name: str = "") -> Neuron:
    """Translate one snntorch neuron layer, or raise naming what is not expressible."""
    if isinstance(layer, snn.Alpha):
        raise UnsupportedLayerError(
            f"{where}: snn.Alpha is not supported: its membrane is a scaled difference of two exponential traces "
            "(excitatory and inhibitory) whose resets act on the traces, which cil's neuron (one synaptic current, one "
            "leaky membrane) cannot reproduce spike for spike. Use snn.Synaptic(alpha, beta): the same "
            "double-exponential response to an input spike")
    if not isinstance(layer, NEURONS):
        raise UnsupportedLayerError(f"{where}: {qualname(layer)} is not supported (supported neurons: "
                                    f"{SUPPORTED_NEURONS})")
    kind = type(layer).__name__
    if getattr(layer, "inhibition", False):
        raise UnsupportedLayerError(f"{where}: {kind} with inhibition=True is not supported")
    catch_up = not getattr(layer, "reset_delay", True)
    if catch_up and isinstance(layer, snn.RSynaptic):
        raise UnsupportedLayerError(
            f"{where}: RSynaptic with reset_delay=False: snntorch 1.0's RSynaptic cannot run it (its forward divides "
            "the spk argument, None with init_hidden=True, by graded_spikes_factor, and assigns the immediate reset to "
            "a local variable it then discards), so there is no snntorch behaviour to reproduce. Use "
            "reset_delay=True, or snn.Synaptic(reset_delay=False) with a separate recurrent nn.Linear")
    quantization = quantization_of(layer, where)
    trained = trained_parameters_of(layer, where, name, output)
    g = torch.as_tensor(getattr(layer, "graded_spikes_factor", torch.tensor(1.0))).detach()
    amplitude: Any = 1.0 if bool((g == 1.0).all()) else _frozen_tensor(g)
    mech = layer.reset_mechanism
    thr = layer.threshold.detach().clone()
    readout = output == "membrane"
    recurrent = None
    gain: Any = 1.0
    factors = None
    alpha: torch.Tensor | None = None
    if isinstance(layer, snn.Lapicque):
        # snntorch: mem = x * R * (1 / (R * C)) * time_step + (1 - time_step / (R * C)) * mem; beta is not used
        R, C, ts = layer.R.detach(), layer.C.detach(), layer.time_step.detach()
        beta = (1 - (ts / (R * C))).clone()
        k = (1 / (R * C)).clone()
        factors = (R.clone(), k, ts.clone())
        gain = _frozen_tensor(R.double() * k.double() * ts.double())
        if bool(((beta < 0) | (beta > 1)).any()):
            raise UnsupportedLayerError(f"{where}: Lapicque with time_step / (R*C) outside [0, 1] (decay "
                                        f"{float(beta.reshape(-1)[0]):g}) is not a leaky neuron")
        timing = "deferred-post"
    else:
        beta = layer.beta.detach().clamp(0, 1).clone()
        if isinstance(layer, (snn.Synaptic, snn.RSynaptic)):
            alpha = layer.alpha.detach().clamp(0, 1).clone()
        # Leaky resets to zero before the decay, (1 - R) * mem; RLeaky and the others after it
        timing = "deferred-pre" if (isinstance(layer, snn.Leaky) and mech == "zero") else "deferred-post"
    if isinstance(layer, (snn.RLeaky, snn.RSynaptic)):
        if readout:
            raise UnsupportedLayerError(f"{where}: a recurrent {kind} cannot be the non-spiking readout "
                                        "(output='membrane'); add an snn.Leaky readout after it")
        recurrent = _recurrent_of(layer, name, where)
    return Neuron(
        beta=beta, alpha=alpha, threshold=thr, reset="none" if readout else mech, reset_timing=timing,
        current_timing="same-step", input_gain=gain, v_leak=0.0, v_reset=0.0, v_min=None,
        fires_at_threshold=False, max_spikes_per_step=1, dt=dt, output=output,  # type: ignore[arg-type]
        surrogate=surrogate_of(layer, where), name=where, recurrent=recurrent, spike_amplitude=amplitude,
        input_factors=factors, quantization=quantization,
        reset_catch_up=catch_up and not readout and mech != "none", trained=trained,
    )


#: snntorch attribute -> (cil neuron field, the clamp snntorch applies where it uses it)
_LEARNABLE = {"beta": ("beta", (0.0, 1.0)), "alpha": ("alpha", (0.0, 1.0)), "threshold": ("threshold", None),
              "graded_spikes_factor": ("spike_amplitude", None)}


def trained_parameters_of(layer: nn.Module, where: str, name: str, output: str = "spikes") -> tuple[NeuronParameter, ...]:
    """The neuron parameters snntorch trains in ``layer`` (``learn_beta``, ``learn_alpha``,
    ``learn_threshold``, ``learn_graded_spikes_factor``: an ``nn.Parameter`` that requires grad),
    as :class:`NeuronParameter` entries named like the model's parameters (``"<name>.beta"``).

    snntorch uses them as ``beta.clamp(0, 1) * mem`` (``alpha`` alike), ``mem - threshold`` (the
    spike and, detached, the reset signal), ``reset * threshold`` (subtract reset) and
    ``spk * graded_spikes_factor``; the entries carry the clamp, so cil's software pass computes
    the same values and gradients. ``Lapicque`` never reads its ``beta`` (its decay is
    :math:`1 - \\Delta t/(RC)`), so a learnable one gets no gradient there and is left out; a
    membrane readout (``output="membrane"``) never fires, so its threshold and spike factor are
    left out the same way. A tensor that requires grad but is not an ``nn.Parameter`` of the
    layer (snntorch registers it as a buffer) is refused: no optimizer over the model's
    parameters would train it."""
    kind = type(layer).__name__
    out: list[NeuronParameter] = []
    for attr, (field, clamp) in _LEARNABLE.items():
        value = getattr(layer, attr, None)
        if not isinstance(value, torch.Tensor) or not value.requires_grad:
            continue
        flag = f"learn_{attr}"
        if not isinstance(value, nn.Parameter):
            raise UnsupportedLayerError(
                f"{where}: {kind}'s {attr} is a tensor that requires grad but not a parameter of the layer (snntorch "
                f"keeps it as a buffer): cil trains the model's parameters. Build the layer with {flag}=True to train "
                f"{attr}, or pass a tensor without requires_grad")
        if attr == "beta" and isinstance(layer, snn.Lapicque):
            continue
        if output == "membrane" and field in ("threshold", "spike_amplitude"):
            continue
        if field == "alpha" and not isinstance(layer, (snn.Synaptic, snn.RSynaptic)):
            continue
        out.append(NeuronParameter(field, f"{name}.{attr}" if name else attr, tuple(value.shape), clamp))
    return tuple(out)


def quantization_of(layer: nn.Module, where: str) -> StateQuantization | None:
    """The quantized state of a layer built with ``state_quant=snntorch.functional.quant.state_quant(...)``:
    its levels (read from the function's closure) on the membrane, and on the synaptic current of
    ``Synaptic`` / ``RSynaptic`` (snntorch quantizes both after the state update, before ``fire``,
    which quantizes the membrane once more: a no-op on a level). Other quantizers are refused."""
    fn = getattr(layer, "state_quant", False)
    if not fn:
        return None
    kind = type(layer).__name__
    free = dict(zip(fn.__code__.co_freevars, [c.cell_contents for c in (fn.__closure__ or ())])) \
        if hasattr(fn, "__code__") else {}
    if getattr(fn, "__module__", "") != "snntorch.functional.quant" or \
            getattr(fn, "__qualname__", "") != "state_quant.<locals>.inner" or "levels" not in free:
        raise UnsupportedLayerError(
            f"{where}: {kind} with state_quant={getattr(fn, '__qualname__', fn)!r}: cil reproduces snntorch's own "
            "snntorch.functional.quant.state_quant(...) (each state rounded to the nearest of a set of levels), not "
            "other quantization functions")
    levels = torch.as_tensor(free["levels"]).detach().clone()
    if levels.dim() != 1 or levels.numel() < 2 or not levels.is_floating_point() or not bool(torch.isfinite(levels).all()):
        raise UnsupportedLayerError(f"{where}: {kind} with state_quant levels of shape {tuple(levels.shape)}: cil "
                                    "needs at least 2 finite levels")
    states = ("membrane", "current") if isinstance(layer, (snn.Synaptic, snn.RSynaptic)) else ("membrane",)
    return StateQuantization(levels, states)


def refuse_state_leaky(model: nn.Module) -> None:
    """Refuse snntorch 1.0's ``StateLeaky`` / ``LinearLeaky`` anywhere in ``model``, naming the layer.

    Their membrane is the causal convolution :math:`v_t = \\sum_{k=0}^{t} e^{-k/\\tau} x_{t-k}` with
    :math:`\\tau = 1/(1-\\beta)`, computed for the whole sequence by ``conv1d``, never reset. cil's
    neuron runs the recursion :math:`v_t = d\\,v_{t-1} + x_t` (:math:`d = e^{-1/\\tau}`), equal only up to
    float rounding (most membrane values differ in the last bits), so spikes at the threshold
    would not be reproduced exactly; with ``kernel_truncation_steps`` the filter forgets old inputs,
    which no recursion does."""
    for name, m in model.named_modules():
        if STATE_LEAKY and isinstance(m, STATE_LEAKY):
            kind = type(m).__name__
            d = float(torch.exp(-1 / m.tau.detach().reshape(-1)[0]))
            trunc = getattr(m, "kernel_truncation_steps", None)
            instead = ("nn.Linear(in_features, out_features) followed by " if kind == "LinearLeaky" else "")
            raise UnsupportedLayerError(
                f"layer '{name or qualname(model)}' ({kind}): {kind} computes the membrane of the whole sequence at once "
                "as a causal convolution of its input with the kernel exp(-t/tau), tau = 1/(1 - beta), and never resets "
                "it after a spike. cil's neuron runs the step-by-step recursion v_t = d * v_{t-1} + x_t, which equals "
                "that convolution only up to float rounding (torch's conv1d sums the taps in its own order), so spikes "
                "at the threshold would not be reproduced exactly"
                + (f"; with kernel_truncation_steps={trunc} the membrane also forgets inputs older than {trunc} steps, "
                   "which no recursion does" if trunc is not None else "")
                + f". The same dynamics step by step: {instead}snn.Leaky(beta={d:.6g}, reset_mechanism='none') (the "
                f"per-step decay is exp(-(1 - beta)) = {d:.6g}, not beta)")


def parallel_neuron_of(layer: nn.Module, where: str, dt: float, output: str = "spikes", name: str = "") -> Neuron:
    """Translate snntorch 1.0's ``LeakyParallel`` (after its input synapses, ``rnn.weight_ih_l0``).

    ``LeakyParallel`` is ``nn.RNN(nonlinearity="relu")`` with a diagonal hidden matrix
    :math:`W_{hh} = \\mathrm{diag}(\\beta)`, then a threshold without reset:

    .. math::

        h_t = \\mathrm{relu}\\big(W_{ih} x_t + \\beta \\odot h_{t-1}\\big), \\qquad S_t = H(h_t - \\theta)

    i.e. ``beta`` per neuron (the diagonal as the RNN holds it), ``reset="none"``, the membrane
    floored at 0 (``v_min=0``) and the spike taken from the floored membrane
    (``fire_on_floored``, for the gradient). Refused: ``bias=True`` (``b_hh`` is added inside the
    recurrence, :math:`(W_{ih}x_t + b_{ih}) + (\\beta h_{t-1} + b_{hh})`, a float order the
    description has no place for), ``weight_hh_enable=True`` (dense membrane-to-membrane coupling),
    ``learn_beta`` (snntorch trains the whole ``weight_hh_l0``), decays outside [0, 1].
    ``learn_threshold`` / ``learn_graded_spikes_factor`` are trained (:func:`trained_parameters_of`:
    snntorch computes ``mem - threshold`` and ``spk * graded_spikes_factor``)."""
    rnn = layer.rnn
    if output == "membrane":
        raise UnsupportedLayerError(
            f"{where}: LeakyParallel as the non-spiking readout (output='membrane'): snntorch's LeakyParallel has no "
            "readout form, and its membrane is nn.RNN's relu (gradient 0 at exactly 0), which cil's readout floor "
            "(torch.clamp) matches in value but not in gradient. End the model with spikes (output='spikes') or "
            "with a step-by-step model whose last layer is snn.Leaky")
    if rnn.bias:
        raise UnsupportedLayerError(
            f"{where}: LeakyParallel with bias=True: its nn.RNN adds the hidden bias b_hh inside the recurrence, "
            "h_t = relu((W_ih x_t + b_ih) + (beta * h_{t-1} + b_hh)), a second per-step constant in a float order cil's "
            "neuron (one synaptic bias, then beta * v + I) cannot reproduce exactly; b_hh is also trained. Build it "
            "with bias=False")
    w_hh = rnn.weight_hh_l0
    if w_hh.requires_grad:
        raise UnsupportedLayerError(
            f"{where}: LeakyParallel with learn_beta=True: snntorch trains its decays as nn.RNN's whole hidden "
            "matrix rnn.weight_hh_l0 (the off-diagonal entries included, which then couple the membranes), not as one "
            "decay per neuron, which is what cil's neuron holds. Build the layer with learn_beta=False, or use "
            "snn.Leaky(learn_beta=True) (one trainable decay per layer or neuron)")
    # learn_threshold / learn_graded_spikes_factor: snntorch uses them as mem - threshold and spk * factor
    trained = trained_parameters_of(layer, where, name)
    w = w_hh.detach()
    beta = torch.diagonal(w).clone()
    if bool((w - torch.diag(beta)).ne(0).any()):
        raise UnsupportedLayerError(
            f"{where}: LeakyParallel with a dense hidden matrix (weight_hh_enable=True): each membrane feeds every "
            "other membrane, a coupling cil's neurons do not have (recurrent synapses carry spikes). Build it with "
            "weight_hh_enable=False (the default, one decay per neuron)")
    if bool(((beta < 0) | (beta > 1)).any()):
        raise UnsupportedLayerError(
            f"{where}: LeakyParallel with decays outside [0, 1] (min {float(beta.min()):g}, max {float(beta.max()):g}; "
            "beta=None draws them from nn.RNN's initialisation): pass beta")
    fn = layer.spike_grad
    if getattr(fn, "__self__", None) is getattr(type(layer), "ATan", object()):
        sur = Surrogate("atan", 2.0)  # LeakyParallel's own ATan: alpha/2 / (1 + (pi/2 alpha x)^2), alpha = 2
    else:
        sur = surrogate_of(layer, where)
    g = torch.as_tensor(layer.graded_spikes_factor).detach()
    amplitude: Any = 1.0 if bool((g == 1.0).all()) else _frozen_tensor(g)
    return Neuron(
        beta=beta, alpha=None, threshold=layer.threshold.detach().clone(), reset="none", reset_timing="immediate",
        current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=0.0, fires_at_threshold=False,
        max_spikes_per_step=1, dt=dt, output="spikes", surrogate=sur, name=where, spike_amplitude=amplitude,
        fire_on_floored=True, trained=trained,
    )


def _is_neuron(m: nn.Module) -> bool:
    return isinstance(m, snn.SpikingNeuron) or bool(LEAKY_PARALLEL and isinstance(m, LEAKY_PARALLEL))


def _translate(named: Sequence[tuple[str, nn.Module]], input_shape: tuple[int, ...], dt: float, output: str,
               source: str) -> NetworkSpec:
    layers: list = []
    neuron_idx = [i for i, (_, m) in enumerate(named) if _is_neuron(m)]
    last_neuron = neuron_idx[-1] if neuron_idx else -1
    for i, (name, m) in enumerate(named):
        where = f"layer '{name}' ({type(m).__name__})"
        if LEAKY_PARALLEL and isinstance(m, LEAKY_PARALLEL):
            rnn = m.rnn
            layers.append(Dense(f"{name}.rnn.weight_ih_l0", None, rnn.input_size, rnn.hidden_size))
            layers.append(parallel_neuron_of(m, where, dt, output if i == last_neuron else "spikes", name))
            continue
        if isinstance(m, snn.SpikingNeuron):
            layers.append(neuron_of(m, where, dt, output if i == last_neuron else "spikes", name))
            continue
        layer = torch_layer(name, m)
        if layer is False:
            raise UnsupportedLayerError(
                f"{where}: {qualname(m)} is not supported by the snntorch adapter (supported: {TORCH_LAYERS}, "
                f"{SUPPORTED_NEURONS})"
            )
        if layer is not None:
            layers.append(layer)
    if not layers or not isinstance(layers[-1], Neuron):
        raise UnsupportedLayerError(f"{source}: the last layer must be a neuron layer, got {type(layers[-1]).__name__}")
    return NetworkSpec(tuple(layers), tuple(input_shape), source=source)


class SnnTorchAdapter(ModelAdapter):
    """cil adapter for snntorch models."""

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module) and any(_is_neuron(m) for m in model.modules())

    def to_spec(self, model: nn.Module, *, input_shape: Sequence[int] | None = None, dt: float = 1e-3,
                output: str = "spikes") -> NetworkSpec:
        """Describe ``model``. Options: ``input_shape`` (per sample; required when the first layer
        is a convolution), ``dt`` (seconds per step, documentation only), ``output``
        (``"spikes"`` or ``"membrane"``: the last neuron layer becomes a non-spiking readout)."""
        refuse_state_leaky(model)
        if _is_sequence_model(model):
            named = sequence_chain(model, input_shape)
            first = named[0][1]
            shape = ((first.rnn.input_size,) if input_shape is None and isinstance(first, LEAKY_PARALLEL)
                     else infer_input_shape(first, input_shape))
            return _translate(named, shape, dt, output, f"snntorch sequence model ({qualname(model)})")
        if isinstance(model, nn.Sequential):
            named = flat_children(model)  # nested nn.Sequential containers flattened, names keep their dots
            for name, m in named:
                if isinstance(m, snn.SpikingNeuron) and not m.init_hidden:
                    raise UnsupportedLayerError(
                        f"layer '{name}' ({type(m).__name__}): in an nn.Sequential snntorch neurons need init_hidden=True"
                    )
            shape = infer_input_shape(named[0][1], input_shape)
            return _translate(named, shape, dt, output, f"snntorch Sequential ({qualname(model)})")
        named = trace_chain(model, input_shape)
        shape = infer_input_shape(named[0][1], input_shape)
        return _translate(named, shape, dt, output, f"snntorch module {qualname(model)}")

    def run_native(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's own snntorch forward over time-major ``x``; returns output spikes ``[T, B, ...]``."""
        return run_native(model, x)


def reset_states(model: nn.Module) -> None:
    """Zero the hidden state of every snntorch neuron in ``model`` (nested ones included).

    ``snntorch.utils.reset`` looks at the top-level children only and ``RSynaptic.reset_hidden``
    leaves its previous spikes in place (they would feed the recurrent synapses at step 0 of the
    next sequence), so each neuron's own ``reset_mem`` is called instead."""
    for m in model.modules():
        if isinstance(m, snn.SpikingNeuron) and hasattr(m, "reset_mem"):
            m.reset_mem()


def _is_sequence_model(model: nn.Module) -> bool:
    """Whether ``model`` holds a layer that takes the whole sequence in one call (``LeakyParallel``)."""
    return bool(LEAKY_PARALLEL) and any(isinstance(m, LEAKY_PARALLEL) for m in model.modules())


def sequence_chain(model: nn.Module, input_shape: Sequence[int] | None) -> list[tuple[str, nn.Module]]:
    """The layers of a model built from ``LeakyParallel`` layers, which take the whole sequence
    ``[T, B, C]`` in one call: an ``nn.Sequential``, or a module whose forward calls its layers once
    each in a chain (snntorch's own example). Between them only layers that act on every time step
    alike are allowed (:data:`SEQUENCE_SAFE`); step-by-step snntorch neurons cannot be mixed in."""
    if isinstance(model, nn.Sequential):
        named = flat_children(model)
    else:
        inside = {n for n, m in model.named_modules() if LEAKY_PARALLEL and isinstance(m, LEAKY_PARALLEL)}
        leaves = [(n, m) for n, m in model.named_modules()
                  if n and (n in inside or not list(m.children())) and not any(n.startswith(p + ".") for p in inside)]
        first = leaves[0][1]
        shape = ((first.rnn.input_size,) if input_shape is None and isinstance(first, LEAKY_PARALLEL)
                 else infer_input_shape(first, input_shape))
        calls: list[tuple[str, nn.Module, Any, Any]] = []

        def hook(name: str):
            def fn(mod: nn.Module, inputs: tuple, output: Any) -> None:
                calls.append((name, mod, inputs[0] if inputs else None, output[0] if isinstance(output, tuple)
                              else output))
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(PROBE_STEPS, 1, *shape))
        except Exception as exc:
            raise UnsupportedLayerError(
                f"could not run {qualname(model)} (it holds LeakyParallel layers, which take the whole sequence) on "
                f"a time-major input [T, B, {', '.join(map(str, shape))}] to find its layer order: {exc!r}") from exc
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        names = [c[0] for c in calls]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UnsupportedLayerError(
                f"{qualname(model)}: submodules {twice} are called more than once per forward; a model of "
                "LeakyParallel layers must call each layer once, in a chain (snntorch's own example)")
        named, prev = [], None
        for name, mod, inp, out in calls:
            if prev is not None and inp is not prev:
                raise UnsupportedLayerError(
                    f"{qualname(model)} is not a feed-forward chain: layer '{name}' does not consume the output of "
                    f"'{named[-1][0]}'")
            named.append((name, mod))
            prev = out
    for name, m in named:
        where = f"layer '{name}' ({type(m).__name__})"
        if isinstance(m, snn.SpikingNeuron):
            raise UnsupportedLayerError(
                f"{where}: snntorch neurons run one time step per call, but this model holds LeakyParallel layers, "
                "which take the whole sequence [T, B, C] in one call; cil cannot run both in one model. Use "
                "LeakyParallel layers throughout, or step-by-step neurons throughout")
        if not (isinstance(m, SEQUENCE_SAFE) or isinstance(m, LEAKY_PARALLEL)):
            raise UnsupportedLayerError(
                f"{where}: in a model of LeakyParallel layers (which take the whole sequence [T, B, C]) only "
                "nn.Linear, nn.Dropout and nn.Identity may sit between them, as they act on every time step alike; "
                f"{type(m).__name__} would see the time dimension as a batch or feature dimension")
    return named


def run_native(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own snntorch forward over time-major ``x`` (an ``nn.Sequential`` is called once
    per step after its neurons are reset; a model of ``LeakyParallel`` layers once on the whole
    sequence); returns the output ``[T, B, ...]``."""
    if _is_sequence_model(model):
        out = model(x)
        return out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(model, nn.Sequential):
        reset_states(model)
        outs = []
        for t in range(x.shape[0]):
            o = model(x[t])
            outs.append(o[0] if isinstance(o, tuple) else o)
        return torch.stack(outs)
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


#: time steps of the probe run that finds a time-looping module's layer order (at least 2, so that
#: a module whose forward calls different submodules at different steps is seen doing so)
PROBE_STEPS = 3


def _parent(name: str, model: nn.Module) -> str:
    """``"bn1.0"`` → ``"'bn1' (ModuleList)"``: the container a per-step submodule belongs to
    (``""`` for a direct child of the model)."""
    parent = name.rpartition(".")[0]
    return f"'{parent}' ({type(model.get_submodule(parent)).__name__})" if parent else ""


def _check_steps(model: nn.Module, names: list[str], steps: int) -> int:
    """The number of calls per time step, after checking that every step of the probe run called
    the same submodules in the same order, each once.

    Raises :class:`UnsupportedLayerError` naming the submodules otherwise: a forward that uses a
    different submodule at each step (``self.bn[step](x)``, snntorch's ``BatchNormTT1d``) would
    be described by step 0's submodule alone and computed differently at every later step; a
    submodule called twice in one step (a shared layer) has no place in a chain of layers."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    per_step = len(names) // steps
    if len(names) % steps == 0 and all(names[k] == names[k % per_step] for k in range(len(names))):
        twice = sorted(n for n in set(names[:per_step]) if names[:per_step].count(n) > 1)
        if twice:
            raise UnsupportedLayerError(
                f"{qualname(model)}: submodule{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                f"{'are' if len(twice) > 1 else 'is'} called {counts[twice[0]] // steps} times in each time step "
                "(a layer shared between two places of the network): cil describes a chain in which each layer "
                "is its own module. Give each place its own module (copy.deepcopy the layer)")
        return per_step
    rare = [n for n in dict.fromkeys(names) if counts[n] < steps]
    if rare:
        groups: dict[str, list[str]] = {}
        for n in rare:
            groups.setdefault(_parent(n, model), []).append(n)
        which = "; ".join(f"{p + ': ' if p else ''}{', '.join(map(repr, ns))}" for p, ns in groups.items())
        if all(counts[n] == 1 for n in rare) and len(rare) > 1:
            raise UnsupportedLayerError(
                f"{qualname(model)}: its forward uses a different submodule at each time step ({which}, each called "
                f"at one of {steps} probe steps; e.g. batch norm through time, self.bn[step](x), or snntorch's "
                "BatchNormTT1d/2d). cil describes the network as one chain of layers run identically at every step, "
                "so it would run step 0's submodule at every step. Use one module for all steps (e.g. a single "
                "nn.BatchNorm1d)")
        raise UnsupportedLayerError(
            f"{qualname(model)}: its forward calls {which} at only some time steps "
            f"({', '.join(f'{n!r} at {counts[n]}' for n in rare)} of {steps} probe steps), or outside its time loop. "
            "cil describes the network "
            "as one chain of layers run identically at every step, so it cannot reproduce a forward that changes "
            "with the step. Call the same layers at every step")
    raise UnsupportedLayerError(
        f"{qualname(model)}: its forward does not call the same submodules in the same order at every time step "
        f"(calls over {steps} probe steps: {names}); cil describes the network as one chain of layers run "
        "identically at every step")


def trace_chain(model: nn.Module, input_shape: Sequence[int] | None) -> list[tuple[str, nn.Module]]:
    """Order the leaf layers of a time-looping module by recording its submodule calls.

    Runs the model once on a zero input ``[PROBE_STEPS, 1, *input_shape]`` with forward hooks on
    its leaf modules and records every call. Every step must call the same submodules in the
    same order, each once (else :class:`UnsupportedLayerError` names the submodules that differ,
    see :func:`_check_steps`); the calls of the first step must form a chain: each call's input
    is the previous call's output (or a reshape of it, which becomes a ``Flatten``). Raises
    :class:`UnsupportedLayerError` if they do not.
    """
    # leaf modules, with snntorch neurons as leaves (RLeaky / RSynaptic own their recurrent nn.Linear)
    inside_neuron = {n for n, m in model.named_modules() if isinstance(m, snn.SpikingNeuron)}
    leaves = [(n, m) for n, m in model.named_modules()
              if n and (isinstance(m, snn.SpikingNeuron) or not list(m.children()))
              and not any(n.startswith(p + ".") for p in inside_neuron)]
    if not leaves:
        raise UnsupportedLayerError(f"{qualname(model)} has no layers")
    shape = infer_input_shape(leaves[0][1], input_shape)
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(name: str):
        def fn(mod: nn.Module, inputs: tuple, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            calls.append((name, mod, inputs[0] if inputs else None, out))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    model.eval()  # batch norm must not update its running statistics on the probe input; dropout off
    try:
        with torch.no_grad():
            run_native(model, torch.zeros(PROBE_STEPS, 1, *shape))
    except Exception as exc:
        raise UnsupportedLayerError(
            f"could not run {qualname(model)} on a time-major input [T, B, {', '.join(map(str, shape))}] to find its "
            f"layer order: {exc!r}. Its forward must loop over dim 0 of the input."
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not calls:
        raise UnsupportedLayerError(f"{qualname(model)}: its forward called none of its layers")
    per_step = _check_steps(model, [c[0] for c in calls], PROBE_STEPS)
    chain: list[tuple[str, nn.Module]] = []
    prev_out: torch.Tensor | None = None
    for name, mod, inp, out in calls[:per_step]:
        if prev_out is not None and inp is not prev_out:
            same_storage = (isinstance(inp, torch.Tensor) and inp.numel() == prev_out.numel()
                            and inp.data_ptr() == prev_out.data_ptr())
            if same_storage and inp.dim() == 2 and prev_out.dim() > 2:
                chain.append((f"{name}__flatten", nn.Flatten()))
            elif not same_storage or inp.shape != prev_out.shape:
                raise UnsupportedLayerError(
                    f"{qualname(model)} is not a feed-forward chain: layer '{name}' does not consume the output of "
                    f"'{chain[-1][0]}' (recurrence, skip connections and arithmetic between layers are not supported)"
                )
        chain.append((name, mod))
        prev_out = out
    return chain
