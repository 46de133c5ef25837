"""norse → cil network description.

Accepted, unchanged: a ``norse.torch.SequentialState`` of synaptic and passive layers
(``nn.Linear``, ``nn.Conv2d``, ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Identity``) and norse
neurons, in one of two forms:

* **cells** (``LIFCell``, ``LIFBoxCell``, ``IAFCell``, ``LICell``): the model processes one time
  step per call, ``out, state = model(x[t], state)``; cil loops over the time-major input.
* **time-looping modules** (``LIF``, ``IAF``, ``LI``): the model takes the whole ``[T, B, ...]``
  input at once; convolutions, pooling and flatten must then be wrapped in ``norse.torch.Lift``
  (a bare ``nn.Linear`` works on ``[T, B, F]`` as it is).

Neuron semantics (norse 1.1, ``functional/lif.py``, ``lif_box.py``, ``iaf.py``,
``leaky_integrator.py``), all forward Euler with step ``dt`` (seconds), :math:`k = dt\\,\\tau^{-1}`:

* ``LIFCell`` / ``LIF``: :math:`i' = i + x_t` (the input joins the current *before* the
  membrane update, so ``current_timing="same-step"``),
  :math:`v' = v + k_m((v_{leak} - v) + i')`, :math:`z = H(v' - v_{th})` (strict),
  :math:`v = (1-z)v' + z\\,v_{reset}` (immediate reset), :math:`i = i' + (-k_s) i'`.
* ``LIFBoxCell``: the same without the current; ``reset_value`` → zero reset, ``reset_subtract``
  → subtract reset. norse sums the bracket as :math:`(x + v_{leak}) - v`; cil as
  :math:`(v_{leak} - v) + x`: identical for ``v_leak = 0``, equal up to rounding otherwise.
* ``IAFCell`` / ``IAF``: :math:`v' = v + x_t`, zero reset to ``v_reset``; the membrane starts at
  ``v_reset`` (``Neuron.v_init``), not at a leak potential.
* ``LICell`` / ``LI``: the LIF membrane without threshold: a non-spiking readout
  (``output="membrane"``), allowed as the last neuron layer only.

The IR gets ``beta = 1 - k_m``, ``alpha = 1 - k_s``, ``input_gain = k_m`` (what backends that model
decays use) and the rates themselves (``mem_rate``, ``syn_rate``), with which the ideal backend
evaluates norse's float expressions in norse's order: a wrapped model reproduces
``model(x)`` spike for spike. The rates are computed with the same torch expression norse uses
(``dt * p.tau_mem_inv``), so they are bit-identical.

Surrogate: norse's default ``method="super"`` is SuperSpike with the derivative
:math:`1/(|x| + 1)^2` (norse ignores ``alpha`` there) → ``Surrogate("superspike", 1.0)``.

Not expressible (an :class:`~cil_core.UnsupportedLayerError` names the layer): other surrogate
methods (``tanh``, ``triangle``, ``circ``, ``heavi_erfc``, ``heaviside``, ``adjoint``),
per-neuron ``v_leak`` / ``v_reset``, thresholds <= 0 (shift the voltages so that
``v_th > 0``), recurrent cells, other neuron types (LSNN, AdEx, CobaLIF, refractory, ...),
max pooling, and a mix of cells and time-looping modules.
"""

from __future__ import annotations

from typing import Any, Sequence

import norse.torch as norse
import torch
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell
from torch import nn

from cil_core import (
    Flatten,
    NetworkSpec,
    Neuron,
    ShapeError,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.plugin.adapter import ModelAdapter, infer_input_shape, qualname, torch_layer

CELLS = (norse.LIFCell, norse.LIFBoxCell, norse.IAFCell, norse.LICell)
TIME_MODULES = (norse.LIF, norse.IAF, norse.LI)
NEURONS = CELLS + TIME_MODULES
READOUTS = (norse.LICell, norse.LI)
ANY_NORSE_NEURON = (SNNCell, SNN, SNNRecurrentCell, SNNRecurrent)


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


def neuron_of(layer: nn.Module, where: str) -> Neuron:
    """Translate one norse neuron module, or raise naming what is not expressible."""
    if not isinstance(layer, NEURONS):
        raise UnsupportedLayerError(
            f"{where}: {qualname(layer)} is not supported by the norse adapter (supported neurons: LIFCell, "
            "LIFBoxCell, IAFCell, LICell, LIF, IAF, LI)"
        )
    p, dt = layer.p, float(layer.dt)
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
    return Neuron(beta=1 - k_mem, alpha=1 - k_syn, threshold=thr, reset="zero", input_gain=k_mem, v_leak=v_leak,
                  v_reset=v_reset, output="spikes", surrogate=_surrogate(p, where), mem_rate=k_mem, syn_rate=k_syn,
                  **common)


def _check_threshold(thr: torch.Tensor, where: str) -> None:
    if bool((thr <= 0).any()):
        raise UnsupportedLayerError(f"{where}: threshold v_th <= 0 is not supported; shift the voltages "
                                    "(v_leak, v_th, v_reset) so that v_th > 0")


def _synapse(name: str, m: nn.Module, where: str, time_major: bool) -> Any:
    """The IR layer of a non-neuron module (``None`` for an identity). The torch layers every
    library shares are described by :func:`cil_core.plugin.adapter.torch_layer`; this adds norse's
    ``Lift`` and the time-major layout of models built from time-looping modules."""
    if isinstance(m, norse.Lift):
        if not time_major:
            raise UnsupportedLayerError(f"{where}: norse.Lift loops over time; it cannot sit between cells "
                                        "(use the bare module)")
        return _synapse(f"{name}.lifted_module", m.lifted_module, where, time_major=False)
    if time_major and isinstance(m, (nn.Conv2d, nn.AvgPool2d)):
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
            f"{where}: {qualname(m)} is not supported by the norse adapter (supported: nn.Linear, nn.Conv2d, "
            "nn.AvgPool2d, nn.Flatten, nn.Identity, norse.torch.Lift of those, and LIFCell, LIFBoxCell, IAFCell, "
            "LICell, LIF, IAF, LI)"
        )
    return layer


def is_time_major(model: nn.Module) -> bool:
    """True if ``model``'s neurons loop over time themselves (``LIF``, ``IAF``, ``LI``)."""
    return any(isinstance(m, TIME_MODULES) for m in model.children())


class NorseAdapter(ModelAdapter):
    """cil adapter for norse models."""

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module) and any(isinstance(m, ANY_NORSE_NEURON) for m in model.modules())

    def to_spec(self, model: nn.Module, *, input_shape: Sequence[int] | None = None) -> NetworkSpec:
        """Describe ``model``. Options: ``input_shape`` (per sample; required when the first layer
        is a convolution). The time step is each neuron's own ``dt``."""
        if not isinstance(model, norse.SequentialState):
            raise UnsupportedLayerError(
                f"{qualname(model)}: the norse adapter wraps a norse.torch.SequentialState (put the layers in one)"
            )
        named = list(model.named_children())
        if not named:
            raise UnsupportedLayerError("the SequentialState is empty")
        kinds = {("cell" if isinstance(m, CELLS) else "time") for _, m in named if isinstance(m, NEURONS)}
        if len(kinds) > 1:
            raise UnsupportedLayerError("the model mixes norse cells (one time step per call) with time-looping "
                                        "modules (LIF, IAF, LI); use one kind")
        time_major = kinds == {"time"}
        neuron_idx = [i for i, (_, m) in enumerate(named) if isinstance(m, ANY_NORSE_NEURON)]
        if not neuron_idx:
            raise UnsupportedLayerError(f"{qualname(model)}: no norse neuron layer found")
        layers: list = []
        for i, (name, m) in enumerate(named):
            where = f"layer '{name}' ({type(m).__name__})"
            if isinstance(m, ANY_NORSE_NEURON):
                n = neuron_of(m, where)
                if n.output == "membrane" and i != neuron_idx[-1]:
                    raise UnsupportedLayerError(f"{where}: a leaky integrator (non-spiking) is only supported as "
                                                "the last neuron layer (the readout)")
                layers.append(n)
            else:
                layer = _synapse(name, m, where, time_major)
                if layer is not None:
                    layers.append(layer)
        if not isinstance(layers[-1], Neuron):
            raise UnsupportedLayerError(f"the last layer must be a neuron layer (the output), got "
                                        f"{type(layers[-1]).__name__}")
        first = named[0][1]
        shape = infer_input_shape(first.lifted_module if isinstance(first, norse.Lift) else first, input_shape)
        return NetworkSpec(tuple(layers), shape, source=f"norse SequentialState ({qualname(model)})")

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
