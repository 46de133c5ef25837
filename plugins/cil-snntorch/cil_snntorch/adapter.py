"""snntorch → cil network description.

Two model shapes are accepted, unchanged:

1. ``nn.Sequential`` of ``nn.Linear`` / ``nn.Conv2d`` / ``nn.AvgPool2d`` / ``nn.Flatten`` and
   snntorch ``Leaky`` / ``Synaptic`` neurons built with ``init_hidden=True`` (the last one may
   have ``output=True``). snntorch runs it one time step per call; cil presents time-major
   input ``[T, B, ...]`` and calls it ``T`` times after ``snntorch.utils.reset``.
2. A user ``nn.Module`` whose ``forward(x)`` loops over the time-major input itself and returns
   the output spike record ``[T, B, C]`` (or a tuple whose first element is it), as in the
   snntorch tutorials. cil finds the layer order by recording the submodule calls of one time
   step and checks that they form a chain (each layer consumes the previous layer's output;
   a reshape between them becomes a ``Flatten``).

Neuron semantics (snntorch 0.9-1.0, ``reset_delay=True``), with :math:`R_t = H(v_{t-1}-\\theta)`:

* ``Leaky`` subtract: :math:`v_t = \\beta v_{t-1} + x_t - R_t\\theta` → ``deferred-post``;
* ``Leaky`` zero: :math:`v_t = \\beta (1-R_t) v_{t-1} + x_t` → ``deferred-pre``;
* ``Synaptic``: :math:`i_t = \\alpha i_{t-1} + x_t`, :math:`v_t = \\beta v_{t-1} + i_t - R_t\\theta`
  (subtract) or :math:`(1-R_t)(\\beta v_{t-1} + i_t)` (zero) → ``deferred-post``;
* :math:`S_t = H(v_t - \\theta)` with ``H(0) = 0``; :math:`\\alpha, \\beta` clipped to [0, 1].

Not expressible (an :class:`~cil_core.UnsupportedLayerError` names the layer): ``reset_delay=False``,
``inhibition``, ``state_quant``, ``graded_spikes_factor != 1``, other neuron types, max pooling,
and surrogates other than atan / fast_sigmoid / sigmoid / heaviside.
"""

from __future__ import annotations

from typing import Any, Sequence

import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

from cil_core import (
    NetworkSpec,
    Neuron,
    ShapeError,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.plugin.adapter import ModelAdapter, infer_input_shape, TORCH_LAYERS, qualname, torch_layer

NEURONS = (snn.Leaky, snn.Synaptic)


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
    raise UnsupportedLayerError(
        f"{where}: surrogate gradient {qn or fn!r} is not supported by the snntorch adapter "
        "(supported: surrogate.atan, fast_sigmoid, sigmoid, heaviside)"
    )


def neuron_of(layer: nn.Module, where: str, dt: float, output: str = "spikes") -> Neuron:
    """Translate one snntorch neuron layer, or raise naming what is not expressible."""
    if not isinstance(layer, NEURONS):
        raise UnsupportedLayerError(f"{where}: {qualname(layer)} is not supported (supported neurons: snn.Leaky, snn.Synaptic)")
    for attr, bad, what in (("inhibition", True, "inhibition=True"), ("reset_delay", False, "reset_delay=False")):
        if getattr(layer, attr, not bad) == bad:
            raise UnsupportedLayerError(f"{where}: {type(layer).__name__} with {what} is not supported")
    if getattr(layer, "state_quant", False):
        raise UnsupportedLayerError(f"{where}: {type(layer).__name__} with state_quant is not supported")
    g = getattr(layer, "graded_spikes_factor", torch.tensor(1.0))
    if not torch.all(torch.as_tensor(g) == 1.0):
        raise UnsupportedLayerError(f"{where}: graded_spikes_factor != 1 is not supported")
    for attr, flag in (("beta", "learn_beta"), ("threshold", "learn_threshold"), ("alpha", "learn_alpha")):
        value = getattr(layer, attr, None)
        if isinstance(value, nn.Parameter) and value.requires_grad:
            raise UnsupportedLayerError(
                f"{where}: {type(layer).__name__} with {flag}=True: cil trains synaptic weights only, so {attr} would "
                f"stay frozen while snntorch's own BPTT trains it. Build the layer with {flag}=False (or freeze it: "
                f"layer.{attr}.requires_grad_(False)) to train with cil")
    mech = layer.reset_mechanism
    beta = layer.beta.detach().clamp(0, 1).clone()
    thr = layer.threshold.detach().clone()
    if isinstance(layer, snn.Synaptic):
        alpha: torch.Tensor | None = layer.alpha.detach().clamp(0, 1).clone()
        timing = "deferred-post"
    else:
        alpha = None
        timing = "deferred-pre" if mech == "zero" else "deferred-post"
    readout = output == "membrane"
    return Neuron(
        beta=beta, alpha=alpha, threshold=thr, reset="none" if readout else mech, reset_timing=timing,
        current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=None,
        fires_at_threshold=False, max_spikes_per_step=1, dt=dt, output=output,  # type: ignore[arg-type]
        surrogate=surrogate_of(layer, where), name=where,
    )


def _translate(named: Sequence[tuple[str, nn.Module]], input_shape: tuple[int, ...], dt: float, output: str,
               source: str) -> NetworkSpec:
    layers: list = []
    neuron_idx = [i for i, (_, m) in enumerate(named) if isinstance(m, NEURONS)]
    last_neuron = neuron_idx[-1] if neuron_idx else -1
    for i, (name, m) in enumerate(named):
        where = f"layer '{name}' ({type(m).__name__})"
        if isinstance(m, NEURONS):
            layers.append(neuron_of(m, where, dt, output if i == last_neuron else "spikes"))
            continue
        layer = torch_layer(name, m)
        if layer is False:
            raise UnsupportedLayerError(
                f"{where}: {qualname(m)} is not supported by the snntorch adapter (supported: {TORCH_LAYERS}, "
                "snn.Leaky, snn.Synaptic)"
            )
        if layer is not None:
            layers.append(layer)
    if not layers or not isinstance(layers[-1], Neuron):
        raise UnsupportedLayerError(f"{source}: the last layer must be a neuron layer, got {type(layers[-1]).__name__}")
    return NetworkSpec(tuple(layers), tuple(input_shape), source=source)


class SnnTorchAdapter(ModelAdapter):
    """cil adapter for snntorch models."""

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module) and any(isinstance(m, snn.SpikingNeuron) for m in model.modules())

    def to_spec(self, model: nn.Module, *, input_shape: Sequence[int] | None = None, dt: float = 1e-3,
                output: str = "spikes") -> NetworkSpec:
        """Describe ``model``. Options: ``input_shape`` (per sample; required when the first layer
        is a convolution), ``dt`` (seconds per step, documentation only), ``output``
        (``"spikes"`` or ``"membrane"``: the last neuron layer becomes a non-spiking readout)."""
        if isinstance(model, nn.Sequential):
            for name, m in model.named_children():
                if isinstance(m, NEURONS) and not m.init_hidden:
                    raise UnsupportedLayerError(
                        f"layer '{name}' ({type(m).__name__}): in an nn.Sequential snntorch neurons need init_hidden=True"
                    )
            named = list(model.named_children())
            shape = infer_input_shape(named[0][1], input_shape)
            return _translate(named, shape, dt, output, f"snntorch Sequential ({qualname(model)})")
        named = trace_chain(model, input_shape)
        shape = infer_input_shape(named[0][1], input_shape)
        return _translate(named, shape, dt, output, f"snntorch module {qualname(model)}")

    def run_native(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's own snntorch forward over time-major ``x``; returns output spikes ``[T, B, ...]``."""
        return run_native(model, x)


def run_native(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, nn.Sequential):
        snn_utils.reset(model)
        outs = []
        for t in range(x.shape[0]):
            o = model(x[t])
            outs.append(o[0] if isinstance(o, tuple) else o)
        return torch.stack(outs)
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def trace_chain(model: nn.Module, input_shape: Sequence[int] | None) -> list[tuple[str, nn.Module]]:
    """Order the leaf layers of a time-looping module by recording one time step of calls.

    Runs the model once on a zero input ``[2, 1, *input_shape]`` with forward hooks on its leaf
    modules, keeps the calls of the first time step (until a module repeats), and checks that
    each call's input is the previous call's output (or a reshape of it, which becomes a
    ``Flatten``). Raises :class:`UnsupportedLayerError` if the calls do not form a chain.
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    if not leaves:
        raise UnsupportedLayerError(f"{qualname(model)} has no layers")
    shape = infer_input_shape(leaves[0][1], input_shape)
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    seen: set[str] = set()
    done = [False]

    def hook(name: str):
        def fn(mod: nn.Module, inputs: tuple, output: Any) -> None:
            if done[0]:
                return
            if name in seen:
                done[0] = True
                return
            seen.add(name)
            out = output[0] if isinstance(output, tuple) else output
            calls.append((name, mod, inputs[0], out))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    try:
        with torch.no_grad():
            run_native(model, torch.zeros(2, 1, *shape))
    except Exception as exc:
        raise UnsupportedLayerError(
            f"could not run {qualname(model)} on a time-major input [T, B, {', '.join(map(str, shape))}] to find its "
            f"layer order: {exc!r}. Its forward must loop over dim 0 of the input."
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    chain: list[tuple[str, nn.Module]] = []
    prev_out: torch.Tensor | None = None
    for name, mod, inp, out in calls:
        if prev_out is not None and inp is not prev_out:
            same_storage = inp.numel() == prev_out.numel() and inp.data_ptr() == prev_out.data_ptr()
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
