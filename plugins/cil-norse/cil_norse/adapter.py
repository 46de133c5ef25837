"""norse → cil network description.

Accepted, unchanged: a ``norse.torch.SequentialState`` (nested ``SequentialState`` /
``nn.Sequential`` containers are flattened; parameter names keep their dots, ``"1.0.weight"``) of
synaptic and passive layers (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.AvgPool2d``,
``nn.MaxPool2d`` (spiking max pooling), ``nn.BatchNorm1d/2d`` (running statistics, as in
``eval()``; folded into the preceding synapses for chips without batch norm), ``nn.Dropout``
(software training passes only), ``nn.Flatten``, ``nn.Identity``) and norse neurons, in one of
two forms:

* **cells** (``LIFCell``, ``LIFBoxCell``, ``IAFCell``, ``LICell``, ``LIFRecurrentCell``,
  ``LSNNCell``, ``LSNNRecurrentCell``, ``LILinearCell``): the model processes one time step per
  call, ``out, state = model(x[t], state)``; cil loops over the time-major input.
* **time-looping modules** (``LIF``, ``IAF``, ``LI``, ``LIFRecurrent``, ``LSNN``,
  ``LSNNRecurrent``): the model takes the whole ``[T, B, ...]`` input at once; convolutions,
  pooling, batch norm and flatten must then be wrapped in ``norse.torch.Lift`` (a bare
  ``nn.Linear`` or ``nn.Dropout`` works on ``[T, B, F]`` as it is).

Neuron semantics (norse 1.1, ``functional/lif.py``, ``lif_box.py``, ``iaf.py``, ``lsnn.py``,
``leaky_integrator.py``), all forward Euler with step ``dt`` (seconds), :math:`k = dt\\,\\tau^{-1}`:

* ``LIFCell`` / ``LIF``: :math:`i' = i + x_t` (the input joins the current *before* the
  membrane update, so ``current_timing="same-step"``),
  :math:`v' = v + k_m((v_{leak} - v) + i')`, :math:`z = H(v' - v_{th})` (strict),
  :math:`v = (1-z)v' + z\\,v_{reset}` (immediate reset), :math:`i = i' + (-k_s) i'`.
* ``LIFRecurrentCell`` / ``LIFRecurrent`` (``lif_step``): its ``input_weights`` become a
  :class:`~cil_core.Dense` layer named ``"<cell>.input_weights"`` (no bias), its
  ``recurrent_weights`` a dense :class:`~cil_core.Recurrent` ``"<cell>.recurrent_weights"``
  added to the current after the input, :math:`i' = (i + W_{in} x_t) + W_{rec} z_{t-1}`
  (``into="current"``, ``current_timing="same-step"``); ``autapses=False`` (norse's default)
  becomes ``Recurrent(autapses=False)`` (diagonal held at zero, as norse's init and gradient
  hook do). ``lif_step`` resets with the spike detached (``Neuron.detach_reset``).
* ``LSNNCell`` / ``LSNN`` (``lsnn_feed_forward_step``) and ``LSNNRecurrentCell`` /
  ``LSNNRecurrent`` (``lsnn_step``): the membrane integrates the *previous* step's current
  (``current_timing="previous-step"``); the threshold is norse's ``b``:
  ``Adaptation(form="euler-threshold", rate=dt * tau_adapt_inv, jump=p.beta)``,
  :math:`b' = b + k_a(v_{th} - b)`, :math:`z = H(v' - b')`, :math:`b = b' + \\beta z`. The
  recurrent variant adds :math:`W_{rec} z_{t-1}` to the current after the input and detaches
  the spike in the reset and the threshold jump, as ``lsnn_step`` does.
* ``LIFRefracCell``, ``LIFRefracRecurrentCell``, ``LIFRefracRecurrent`` (``lif_refrac*_step``):
  the LIF (recurrent) step, then norse's ``compute_refractory_update``:
  :class:`~cil_core.network.neuron.Refractory` with ``period = rho_reset``: while the counter
  :math:`\\rho > 0` the neuron is silent and its membrane held,
  :math:`\\rho' = (1 - z)\\,\\mathrm{relu}(\\rho - H(\\rho)) + z\\,\\rho_{reset}` (the counter's
  Heaviside takes the SuperSpike surrogate, as in norse). norse 1.1 has no feed-forward
  time-looping ``LIFRefrac``.
* ``LIFBoxCell``: the LIF membrane without the current; ``reset_value`` → zero reset,
  ``reset_subtract`` → subtract reset. norse sums the bracket as :math:`(x + v_{leak}) - v`; cil
  as :math:`(v_{leak} - v) + x`: identical for ``v_leak = 0``, equal up to rounding otherwise.
* ``IAFCell`` / ``IAF``: :math:`v' = v + x_t`, zero reset to ``v_reset``; the membrane starts at
  ``v_reset`` (``Neuron.v_init``), not at a leak potential.
* ``LICell`` / ``LI``: the LIF membrane without threshold: a non-spiking readout
  (``output="membrane"``), allowed as the last neuron layer only. ``LILinearCell``
  (``li_step``) is a ``Dense`` ``"<cell>.input_weights"`` followed by that readout.

The IR gets ``beta = 1 - k_m``, ``alpha = 1 - k_s``, ``input_gain = k_m`` (what backends that model
decays use) and the rates themselves (``mem_rate``, ``syn_rate``), with which the ideal backend
evaluates norse's float expressions in norse's order: a wrapped model reproduces
``model(x)`` spike for spike. The rates are computed with the same torch expression norse uses
(``dt * p.tau_mem_inv``), so they are bit-identical.

Surrogate: norse's default ``method="super"`` is SuperSpike with the derivative
:math:`1/(|x| + 1)^2` (norse ignores ``alpha`` there) → ``Surrogate("superspike", 1.0)``.

Refused (an :class:`~cil_core.UnsupportedLayerError` names the layer and what to use instead):

* ``LIFAdExCell`` / ``LIFAdEx`` / ``LIFAdExRecurrentCell`` / ``LIFAdExRecurrent``: the
  exponential spike-initiation term :math:`\\Delta_T e^{(v - v_{th})/\\Delta_T}` and the
  adaptation *current* driven by the membrane (:math:`a' \\propto a_{cur}(v - v_{leak}) - a`,
  subtracted from the membrane) have no counterpart in the description (its adaptation moves
  the threshold); use ``LSNNCell`` (adaptive threshold) or ``LIFCell``.
* ``norse.torch.models.conv.ConvNet`` / ``ConvNet4``: their ``forward`` is a hand-written time
  loop (not a ``SequentialState``), and it multiplies ``conv2``'s output by 10
  (``z = 10 * self.conv2(z)``), a fixed output scale the description has no place for
  (scaling ``conv2``'s weight and bias instead changes the float rounding). Everything else in
  it (max pooling, ``LILinearCell``, ``relu`` of spikes) is supported: write the network as a
  ``SequentialState`` (see ``tests/test_norse_layers.py``).
* ``RecurrentSequential`` (feeds the output back into the input), other surrogate methods
  (``tanh``, ``triangle``, ``circ``, ``heavi_erfc``, ``heaviside``, ``adjoint``), per-neuron
  ``v_leak`` / ``v_reset``, thresholds <= 0 (shift the voltages so that ``v_th > 0``), other
  neuron types (CobaLIF, LIFAdExRefrac, LIFMCRefrac, LIFEx, Izhikevich, multi-compartment, ...), sparse inputs,
  a plain ``nn.Sequential`` holding a norse neuron inside a ``SequentialState`` (norse itself
  cannot run it: use a nested ``SequentialState``), and a mix of cells and time-looping modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import norse.torch as norse
import torch
from norse.torch.functional.lif import lif_feed_forward_step, lif_step
from norse.torch.functional.lif_refrac import lif_refrac_feed_forward_step, lif_refrac_step
from norse.torch.functional.lsnn import lsnn_feed_forward_step, lsnn_step
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell
from torch import nn

from cil_core import (
    Adaptation,
    Dense,
    Flatten,
    NetworkSpec,
    Neuron,
    Recurrent,
    ShapeError,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.network.neuron import NeuronParameter, Refractory
from cil_core.plugin.adapter import AdaptedModel, ModelAdapter, infer_input_shape, qualname, torch_layer

#: LIF with an absolute refractory period (norse 1.1 has no feed-forward time-looping ``LIFRefrac``)
REFRAC_FF = tuple(getattr(norse, n) for n in ("LIFRefracCell", "LIFRefrac") if hasattr(norse, n))
REFRAC_REC = tuple(getattr(norse, n) for n in ("LIFRefracRecurrentCell", "LIFRefracRecurrent") if hasattr(norse, n))
REFRAC = REFRAC_FF + REFRAC_REC
RECURRENT_LIF = (norse.LIFRecurrentCell, norse.LIFRecurrent) + REFRAC_REC
LSNN_FF = (norse.LSNNCell, norse.LSNN)
LSNN_REC = (norse.LSNNRecurrentCell, norse.LSNNRecurrent)
CELLS = (norse.LIFCell, norse.LIFBoxCell, norse.IAFCell, norse.LICell, norse.LIFRecurrentCell, norse.LSNNCell,
         norse.LSNNRecurrentCell, norse.LILinearCell) + tuple(c for c in REFRAC if c.__name__.endswith("Cell"))
TIME_MODULES = (norse.LIF, norse.IAF, norse.LI, norse.LIFRecurrent, norse.LSNN, norse.LSNNRecurrent) + \
    tuple(c for c in REFRAC if not c.__name__.endswith("Cell"))
NEURONS = CELLS + TIME_MODULES
READOUTS = (norse.LICell, norse.LI, norse.LILinearCell)
#: every norse neuron module (LILinearCell is a plain nn.Module in norse)
ANY_NORSE_NEURON = (SNNCell, SNN, SNNRecurrentCell, SNNRecurrent, norse.LILinearCell)
ADEX = (norse.LIFAdExCell, norse.LIFAdEx, norse.LIFAdExRecurrentCell, norse.LIFAdExRecurrent)
#: What this adapter accepts, as ``(layer, how the description states it, what cil trains)``;
#: docs/models.md's adapter table is generated from it (``benchmarks/model_table.py``), and a test
#: checks that every class of :data:`NEURONS` is named here.
ACCEPTED_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("nn.Linear, nn.Conv1d, nn.Conv2d (in Lift between time-looping modules)", "Dense / Conv1d / Conv2d",
     "weight, bias"),
    ("nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity", "Pool2d avg / max, Flatten", "-"),
    ("nn.BatchNorm1d/2d", "BatchNorm with the running statistics; folded for chips", "γ, β"),
    ("nn.Dropout", "Dropout: software training passes only", "-"),
    ("LIFCell, LIF", "forward-Euler LIF in norse's float order (mem_rate, syn_rate), zero reset", "threshold "
     "(p.v_th as nn.Parameter, named '<layer>.p.v_th'): per layer or per neuron; tau_mem_inv, tau_syn_inv fixed"),
    ("LIFBoxCell", "LIF membrane without current; reset_value / reset_subtract", "threshold (p.v_th as nn.Parameter)"),
    ("IAFCell, IAF", "integrate-and-fire, v_init = v_reset", "threshold (p.v_th as nn.Parameter)"),
    ("LICell, LI", "non-spiking leaky-integrator readout (last neuron layer)", "none"),
    ("LILinearCell", "Dense(input_weights) + readout", "input_weights"),
    ("LIFRecurrentCell, LIFRecurrent", "Dense(input_weights) + Recurrent(into='current', autapses), detached reset",
     "input_weights, recurrent_weights; threshold (p.v_th as nn.Parameter)"),
    ("LSNNCell, LSNN, LSNNRecurrentCell, LSNNRecurrent", "Adaptation(form='euler-threshold'), previous-step current",
     "(input_weights, recurrent_weights)"),
    ("LIFRefracCell, LIFRefracRecurrentCell, LIFRefracRecurrent", "LIF / recurrent LIF + Refractory(period = "
     "rho_reset), the counter's Heaviside with SuperSpike's gradient", "(input_weights, recurrent_weights); "
     "threshold (p.lif.v_th as nn.Parameter)"),
    ("SequentialState (nested ones flattened)", "a chain; cells stepped by cil, time-looping modules as they are",
     "its layers' tensors"),
)
#: What this adapter refuses, as ``(layer, why)`` (docs/models.md's generated table).
REFUSED_LAYERS: tuple[tuple[str, str], ...] = (
    ("tau_mem_inv / tau_syn_inv held as nn.Parameter", "norse's decay and input gain are both functions of the "
     "rate (1 - dt*tau_inv, dt*tau_inv): one tensor driving two fields, which a NeuronParameter (one field, "
     "clamped) cannot express exactly"),
    ("v_leak, v_reset, tau_adapt_inv, an LSNN's beta, rho_reset held as nn.Parameter", "not trainable fields of "
     "the description"),
    ("an LSNN's v_th held as nn.Parameter", "the threshold lives in the adaptation state (b starts at v_th): "
     "forward equal, but cil's gradient through that state is not norse's"),
    ("LIFAdExCell and its variants (LIFAdExRefrac too)", "exponential spike initiation and a membrane-driven "
     "adaptation current have no counterpart; use LSNNCell or LIFCell"),
    ("norse.torch.models.conv.ConvNet / ConvNet4", "its loop multiplies conv2's output by 10; write it as a "
     "SequentialState"),
    ("RecurrentSequential, adjoint=True, surrogate methods other than 'super'", "no counterpart / other gradients"),
    ("per-neuron v_leak / v_reset, v_th <= 0, sparse inputs", "scalars in the description; shift the voltages"),
    ("CobaLIF, LIFEx, Izhikevich, LIFMC, LIFMCRefrac, other neuron types", "no counterpart in the description"),
)

SUPPORTED = ("LIFCell, LIFBoxCell, IAFCell, LICell, LIFRecurrentCell, LSNNCell, LSNNRecurrentCell, LILinearCell, "
             "LIFRefracCell, LIFRefracRecurrentCell, LIF, IAF, LI, LIFRecurrent, LSNN, LSNNRecurrent, "
             "LIFRefracRecurrent")


def _tensor(v: Any) -> torch.Tensor:
    """A detached float32 copy of a norse parameter (which may be a float, a tensor or a Parameter)."""
    return torch.as_tensor(v).detach().clone().to(torch.float32)


def _rate(dt: float, tau_inv: Any) -> torch.Tensor:
    """``dt * tau_inv`` evaluated exactly as norse's step functions evaluate it."""
    return _tensor(dt * (tau_inv.detach() if isinstance(tau_inv, torch.Tensor) else tau_inv))


def _scalar(v: Any, what: str, where: str) -> float:
    t = torch.as_tensor(v).detach()
    if t.numel() != 1:
        raise UnsupportedLayerError(f"{where}: per-neuron {what} (shape {tuple(t.shape)}) is not supported; "
                                    "use a scalar")
    return float(t)


def _surrogate(p: Any, where: str) -> Surrogate:
    method = getattr(p, "method", "super")
    if method == "super":
        return Surrogate("superspike", 1.0)
    raise UnsupportedLayerError(
        f"{where}: threshold method {method!r} is not supported by the norse adapter (supported: 'super', "
        "norse's default SuperSpike)"
    )


def _refuse_neuron(layer: nn.Module, where: str) -> None:
    if isinstance(layer, ADEX):
        raise UnsupportedLayerError(
            f"{where}: {type(layer).__name__} is not supported: its exponential spike-initiation term "
            "(delta_T * exp((v - v_th) / delta_T)) and its membrane-driven adaptation current have no counterpart in "
            "cil's neuron description (cil's adaptation moves the threshold); use LSNNCell / LSNNRecurrentCell "
            "(adaptive threshold) or LIFCell instead")
    raise UnsupportedLayerError(
        f"{where}: {qualname(layer)} is not supported by the norse adapter (supported neurons: {SUPPORTED})")


#: why a norse neuron parameter held as an nn.Parameter cannot be trained through cil, by field
_UNTRAINABLE = {
    "tau_mem_inv": "norse computes both the decay and the input gain from it (1 - dt*tau_mem_inv and "
                   "dt*tau_mem_inv, in its Euler order): one tensor driving two neuron fields, which cil's "
                   "NeuronParameter (one field, the tensor's value clamped) cannot express exactly",
    "tau_syn_inv": "norse's synaptic decay is 1 - dt*tau_syn_inv, a function of the tensor that cil's "
                   "NeuronParameter (the field's value itself, clamped) cannot express exactly",
    "tau_adapt_inv": "an adaptation rate is not a trainable field of cil's description",
    "beta": "an adaptation jump is not a trainable field of cil's description",
    "v_leak": "the resting potential is not a trainable field of cil's description",
    "v_reset": "the reset potential is not a trainable field of cil's description",
    "rho_reset": "the refractory period is a count of steps, not a trainable field",
}


def trained_parameters_of(layer: nn.Module, where: str, name: str) -> tuple[tuple[NeuronParameter, ...],
                                                                           dict[str, torch.Tensor]]:
    """The neuron parameters of a norse neuron that norse's BPTT trains — fields of its parameter
    tuple (``LIFParameters`` and the like; ``p.lif`` of a refractory cell) held as an
    ``nn.Parameter`` that requires grad — as :class:`NeuronParameter` entries, with the tensors
    themselves by the names they are given (``"<layer>.p.v_th"``: norse keeps the tuple as a plain
    attribute, so the tensors are not among the module's ``named_parameters()``; the optimizer of a
    norse user lists them by hand, cil's trainer takes them from the wrapped network).

    Accepted: the threshold ``v_th`` of a spiking neuron, used as norse uses it, :math:`z =
    H(v - v_{th})` with the surrogate's gradient to ``v_th`` (``clamp`` None). Refused, naming the
    field and why (:data:`_UNTRAINABLE`): the rates ``tau_mem_inv`` / ``tau_syn_inv`` /
    ``tau_adapt_inv`` (norse's decay is a function of them), ``v_leak``, ``v_reset``, an
    adaptation jump, a refractory period, and any field of a non-spiking readout (``LI``). A plain
    tensor that happens to require grad is not counted: norse's default parameter tensors are
    shared objects that other code may mark."""
    def walk(obj: Any, prefix: str):
        fields = obj._asdict() if hasattr(obj, "_asdict") else {}
        for k, v in fields.items():
            if isinstance(v, nn.Parameter) and v.requires_grad:
                yield prefix + k, k, v
            elif hasattr(v, "_asdict"):
                yield from walk(v, prefix + k + ".")

    out: list[NeuronParameter] = []
    tensors: dict[str, torch.Tensor] = {}
    for path, field, value in walk(getattr(layer, "p", None), "p."):
        if field == "v_th" and isinstance(layer, LSNN_FF + LSNN_REC):
            raise UnsupportedLayerError(
                f"{where}: trainable neuron parameter {path} (nn.Parameter) of an LSNN: norse keeps the threshold in "
                "the adaptation state (b starts at v_th and relaxes towards it each step), and cil's gradient with "
                "respect to v_th through that state is not norse's (measured: forward equal, gradients differ); pass "
                f"{path} as a tensor without requires_grad (e.g. {path}.detach()), or train the threshold of a "
                "LIFCell / LIFRecurrentCell")
        if field == "v_th" and not isinstance(layer, READOUTS):
            full = f"{name}.{path}" if name else path
            out.append(NeuronParameter("threshold", full, tuple(value.shape), None))
            tensors[full] = value
            continue
        why = _UNTRAINABLE.get(field, "it is not a trainable field of cil's description")
        raise UnsupportedLayerError(
            f"{where}: trainable neuron parameter {path} (nn.Parameter): {why}; norse's own BPTT would train it "
            f"while cil could not. cil trains a norse neuron's threshold (p.v_th as an nn.Parameter); pass "
            f"{path} as a tensor without requires_grad (e.g. {path}.detach()) to keep it fixed")
    return tuple(out), tensors


def _check_activation(layer: nn.Module, expected: Any, where: str) -> None:
    if getattr(layer, "activation", expected) is not expected:
        raise UnsupportedLayerError(f"{where}: the adjoint (or a replaced) activation is not supported; construct "
                                    "the module without adjoint=True")


def neuron_of(layer: nn.Module, where: str, name: str = "") -> Neuron:
    """Translate one norse neuron module (without its synapses), or raise naming what is not
    expressible; a trainable threshold is named ``"<name>.p.v_th"`` (:func:`trained_parameters_of`).
    Recurrent cells: see :func:`layers_of`."""
    if not isinstance(layer, NEURONS):
        _refuse_neuron(layer, where)
    trained, _ = trained_parameters_of(layer, where, name)
    n = _fixed_neuron_of(layer, where)
    return n if not trained else dataclasses.replace(n, trained=trained)


def _fixed_neuron_of(layer: nn.Module, where: str) -> Neuron:
    p, dt = (layer.p.lif if isinstance(layer, REFRAC) else layer.p), float(layer.dt)
    common = dict(reset_timing="immediate", current_timing="same-step", v_min=None, fires_at_threshold=False,
                  max_spikes_per_step=1, dt=dt, name=where)
    if isinstance(layer, (norse.IAFCell, norse.IAF)):
        thr = _tensor(p.v_th)
        v_reset = _scalar(p.v_reset, "v_reset", where)
        _check_threshold(thr, where)
        return Neuron(beta=1.0, alpha=None, threshold=thr, reset="zero", input_gain=1.0, v_leak=0.0,
                      v_reset=v_reset, output="spikes", surrogate=_surrogate(p, where), v_init=v_reset, **common)
    k_mem = _rate(dt, p.tau_mem_inv)
    v_leak = _scalar(p.v_leak, "v_leak", where)
    if isinstance(layer, READOUTS):
        k_syn = _rate(dt, p.tau_syn_inv)
        return Neuron(beta=1 - k_mem, alpha=1 - k_syn, threshold=1.0, reset="none", input_gain=k_mem,
                      v_leak=v_leak, v_reset=0.0, output="membrane", mem_rate=k_mem, syn_rate=k_syn, **common)
    thr = _tensor(p.v_th)
    _check_threshold(thr, where)
    v_reset = _scalar(p.v_reset, "v_reset", where)
    if isinstance(layer, norse.LIFBoxCell):
        method = getattr(p, "reset_method", reset_value)
        if method is reset_value:
            reset = "zero"
        elif method is reset_subtract:
            reset = "subtract"
        else:
            raise UnsupportedLayerError(f"{where}: reset_method {method!r} is not supported "
                                        "(supported: reset_value, reset_subtract)")
        return Neuron(beta=1 - k_mem, alpha=None, threshold=thr, reset=reset, input_gain=k_mem, v_leak=v_leak,
                      v_reset=v_reset, output="spikes", surrogate=_surrogate(p, where), mem_rate=k_mem, **common)
    k_syn = _rate(dt, p.tau_syn_inv)
    extra: dict[str, Any] = {}
    if isinstance(layer, LSNN_FF + LSNN_REC):
        _check_activation(layer, lsnn_step if isinstance(layer, LSNN_REC) else lsnn_feed_forward_step, where)
        k_ad = _rate(dt, p.tau_adapt_inv)
        # lsnn: the membrane integrates state.i, the current before this step's input
        common["current_timing"] = "previous-step"
        extra["adaptation"] = Adaptation(rho=1 - k_ad, jump=_tensor(p.beta), form="euler-threshold", rate=k_ad)
        extra["detach_reset"] = isinstance(layer, LSNN_REC)  # lsnn_step detaches z in the reset and in b
    elif isinstance(layer, RECURRENT_LIF):
        _check_activation(layer, lif_refrac_step if isinstance(layer, REFRAC) else lif_step, where)
        extra["detach_reset"] = True  # lif_step: (1 - z.detach()) * v + z.detach() * v_reset
    elif isinstance(layer, (norse.LIFCell, norse.LIF)):
        _check_activation(layer, lif_feed_forward_step, where)
    elif isinstance(layer, REFRAC_FF):
        _check_activation(layer, lif_refrac_feed_forward_step, where)
    if isinstance(layer, REFRAC):
        # compute_refractory_update: silent and membrane held while the counter rho > 0; rho_reset on a spike
        extra["refractory"] = Refractory(period=_refractory_period(layer.p.rho_reset, where))
    return Neuron(beta=1 - k_mem, alpha=1 - k_syn, threshold=thr, reset="zero", input_gain=k_mem, v_leak=v_leak,
                  v_reset=v_reset, output="spikes", surrogate=_surrogate(p, where), mem_rate=k_mem, syn_rate=k_syn,
                  **common, **extra)


def _refractory_period(rho_reset: Any, where: str) -> Any:
    t = _tensor(rho_reset)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise UnsupportedLayerError(f"{where}: rho_reset must be finite and >= 0 (the refractory period in steps)")
    return float(t) if t.numel() == 1 else t


def layers_of(name: str, layer: nn.Module, where: str, params: dict[str, torch.Tensor]) -> list:
    """The IR layers of one norse neuron module: the neuron, preceded by a :class:`Dense` for the
    input weights of recurrent cells and ``LILinearCell`` (and carrying their recurrent synapses)."""
    n = neuron_of(layer, where, name)
    if not isinstance(layer, (SNNRecurrentCell, SNNRecurrent, norse.LILinearCell)):
        return [n]
    fan_in, hidden = int(layer.input_size), int(layer.hidden_size)
    w_in = f"{name}.input_weights"
    if w_in not in params:
        raise UnsupportedLayerError(f"{where}: input_weights is not an nn.Parameter of the model (pass an "
                                    "nn.Parameter, or leave it to norse)")
    dense = Dense(w_in, None, fan_in, hidden)
    if isinstance(layer, norse.LILinearCell):
        return [dense, n]
    w_rec = f"{name}.recurrent_weights"
    if w_rec not in params:
        raise UnsupportedLayerError(f"{where}: recurrent_weights is not an nn.Parameter of the model (pass an "
                                    "nn.Parameter, or leave it to norse)")
    autapses = bool(layer.autapses)
    if not autapses and bool((torch.diagonal(params[w_rec].detach()) != 0).any()):
        raise UnsupportedLayerError(
            f"{where}: autapses=False but recurrent_weights has a non-zero diagonal (norse zeroes it only at "
            "construction, and its forward would use it); zero the diagonal or construct the cell with autapses=True")
    rec = Recurrent(w_rec, None, hidden, mode="dense", into="current", autapses=autapses)
    return [dense, n.with_(recurrent=rec)]


def _check_threshold(thr: torch.Tensor, where: str) -> None:
    if bool((thr <= 0).any()):
        raise UnsupportedLayerError(f"{where}: threshold v_th <= 0 is not supported; shift the voltages "
                                    "(v_leak, v_th, v_reset) so that v_th > 0")


#: torch layers that act on one time step's [B, ...] and must be lifted between time-looping modules
_PER_STEP = (nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d)


def _synapse(name: str, m: nn.Module, where: str, time_major: bool) -> Any:
    """The IR layer of a non-neuron module (``None`` for an identity). The torch layers every
    library shares are described by :func:`cil_core.plugin.adapter.torch_layer`; this adds norse's
    ``Lift`` and the time-major layout of models built from time-looping modules."""
    if isinstance(m, norse.Lift):
        if not time_major:
            raise UnsupportedLayerError(f"{where}: norse.Lift loops over time; it cannot sit between cells "
                                        "(use the bare module)")
        return _synapse(f"{name}.lifted_module", m.lifted_module, where, time_major=False)
    if isinstance(m, norse.RecurrentSequential):
        raise UnsupportedLayerError(f"{where}: RecurrentSequential (output fed back into the input) is not "
                                    "supported; use LIFRecurrentCell or LSNNRecurrentCell for recurrence")
    if time_major and isinstance(m, _PER_STEP):
        raise UnsupportedLayerError(f"{where}: between time-looping modules a {type(m).__name__} must be wrapped in "
                                    "norse.torch.Lift")
    if time_major and isinstance(m, nn.Flatten):  # [T, B, ...]: flatten the features from dim 2
        if m.start_dim != 2 or m.end_dim != -1:
            raise UnsupportedLayerError(f"{where}: between time-looping modules only Flatten(start_dim=2) "
                                        "(or Lift(Flatten())) is supported")
        return Flatten()
    if isinstance(m, nn.Dropout) and m.p == 0:
        return None
    layer = torch_layer(name, m)
    if layer is False:
        raise UnsupportedLayerError(
            f"{where}: {qualname(m)} is not supported by the norse adapter (supported: nn.Linear, nn.Conv1d, "
            "nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm1d/2d, nn.Dropout, nn.Flatten, nn.Identity, "
            f"norse.torch.Lift of those, nested SequentialState, and the neurons {SUPPORTED})"
        )
    return layer


def _flat(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The children of a ``SequentialState`` in call order, nested ``SequentialState`` /
    ``nn.Sequential`` flattened (names keep their dots). A plain ``nn.Sequential`` calls its
    children without state, so it may hold no norse neuron (norse could not run it either)."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            if not isinstance(m, norse.SequentialState) and any(isinstance(c, ANY_NORSE_NEURON) for c in m.modules()):
                raise UnsupportedLayerError(
                    f"layer '{full}' (nn.Sequential) holds a norse neuron: nn.Sequential calls it without state "
                    "(norse cannot run that either); use a nested norse.torch.SequentialState")
            out += _flat(m, full + ".")
        else:
            out.append((full, m))
    return out


def is_time_major(model: nn.Module) -> bool:
    """True if ``model``'s neurons loop over time themselves (``LIF``, ``IAF``, ``LI``, ...)."""
    return any(isinstance(m, TIME_MODULES) for m in model.modules())


class NorseAdapter(ModelAdapter):
    """cil adapter for norse models."""

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module) and any(isinstance(m, ANY_NORSE_NEURON) for m in model.modules())

    def to_spec(self, model: nn.Module, *, input_shape: Sequence[int] | None = None) -> NetworkSpec:
        """Describe ``model``. Options: ``input_shape`` (per sample; required when the first layer
        is a convolution). The time step is each neuron's own ``dt``."""
        if not isinstance(model, norse.SequentialState):
            from norse.torch.models.conv import ConvNet, ConvNet4

            if isinstance(model, (ConvNet, ConvNet4)):
                raise UnsupportedLayerError(
                    f"{qualname(model)}: its forward is a hand-written time loop that multiplies conv2's output by "
                    "10 (z = 10 * self.conv2(z)), a fixed output scale cil's description has no place for; its other "
                    "parts (max pooling, LILinearCell, relu of spikes) are supported: write the network as a "
                    "norse.torch.SequentialState (Conv2d, LIFCell, MaxPool2d, ..., LILinearCell)")
            raise UnsupportedLayerError(
                f"{qualname(model)}: the norse adapter wraps a norse.torch.SequentialState (put the layers in one)"
            )
        named = _flat(model)
        if not named:
            raise UnsupportedLayerError("the SequentialState is empty")
        kinds = {("cell" if isinstance(m, CELLS) else "time") for _, m in named if isinstance(m, NEURONS)}
        if len(kinds) > 1:
            raise UnsupportedLayerError("the model mixes norse cells (one time step per call) with time-looping "
                                        "modules (LIF, IAF, LI, LIFRecurrent, LSNN, LSNNRecurrent); use one kind")
        time_major = kinds == {"time"}
        neuron_idx = [i for i, (_, m) in enumerate(named) if isinstance(m, ANY_NORSE_NEURON)]
        if not neuron_idx:
            raise UnsupportedLayerError(f"{qualname(model)}: no norse neuron layer found")
        params = dict(model.named_parameters())
        layers: list = []
        for i, (name, m) in enumerate(named):
            where = f"layer '{name}' ({type(m).__name__})"
            if isinstance(m, ANY_NORSE_NEURON):
                new = layers_of(name, m, where, params)
                if new[-1].output == "membrane" and i != neuron_idx[-1]:
                    raise UnsupportedLayerError(f"{where}: a leaky integrator (non-spiking) is only supported as "
                                                "the last neuron layer (the readout)")
                layers += new
            else:
                layer = _synapse(name, m, where, time_major)
                if layer is not None:
                    layers.append(layer)
        if not isinstance(layers[-1], Neuron):
            raise UnsupportedLayerError(f"the last layer must be a neuron layer (the output), got "
                                        f"{type(layers[-1]).__name__}")
        first = named[0][1]
        first = first.lifted_module if isinstance(first, norse.Lift) else first
        if input_shape is None and isinstance(first, (SNNRecurrentCell, SNNRecurrent, norse.LILinearCell)):
            input_shape = (int(first.input_size),)
        shape = infer_input_shape(first, input_shape)
        return NetworkSpec(tuple(layers), shape, source=f"norse SequentialState ({qualname(model)})")

    def adapt(self, model: Any, **options: Any) -> AdaptedModel:
        """The description, the model, and its tensors: the module's parameters and the trainable
        thresholds norse keeps in its parameter tuples (``"<layer>.p.v_th"``, not registered as
        module parameters)."""
        spec = self.to_spec(model, **options)
        if not spec.neuron_parameters():
            return AdaptedModel(spec, model)
        params = dict(model.named_parameters())
        seen: dict[int, str] = {}
        for name, m in _flat(model):
            if isinstance(m, ANY_NORSE_NEURON):
                for k, t in trained_parameters_of(m, "", name)[1].items():
                    if id(t) in seen:  # one tensor under two names would be stepped twice by an optimizer
                        raise UnsupportedLayerError(
                            f"the trainable threshold {k} is the same nn.Parameter as {seen[id(t)]} (one parameter "
                            "tuple shared by two layers): give each layer its own tensor (e.g. "
                            "nn.Parameter(v_th.detach().clone())) or pass it without requires_grad")
                    seen[id(t)] = k
                    params[k] = t
        return AdaptedModel(spec, model, params)

    def run_native(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's own norse forward over time-major ``x``; returns the output ``[T, B, ...]``."""
        return run_native(model, x)


def run_native(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a norse ``SequentialState`` on time-major ``x`` from its initial state (a fresh state
    per call: no state leaks between calls)."""
    if is_time_major(model):
        out, _ = model(x)
        return out
    state = None
    outs = []
    for t in range(x.shape[0]):
        o, state = model(x[t], state)
        outs.append(o)
    return torch.stack(outs)
