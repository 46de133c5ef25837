"""sinabs models → cil network description.

Supported (anything else raises :class:`~cil_core.UnsupportedLayerError` naming the layer):

* containers: ``nn.Sequential`` (nested allowed) and ``sinabs.network.Network`` (its
  ``spiking_model``);
* synapses: ``nn.Conv2d`` (groups=1, dilation=1, zero padding), ``nn.Linear``;
* shape: ``nn.Flatten`` (see *layouts*), ``nn.Identity``, ``nn.Dropout`` (identity in the
  description; the software pass never drops), ``sinabs.layers.FlattenTime`` /
  ``UnflattenTime`` at the ends of the model (layout markers only);
* pooling: ``sinabs.layers.SumPool2d`` (→ ``Pool2d(mode="sum")``), ``nn.AvgPool2d``
  (→ ``mode="avg"``), both without padding or ceil mode;
* neurons: ``IAF``, ``IAFSqueeze``, ``LIF``, ``LIFSqueeze`` without synaptic current
  (``tau_syn=None``) and without recurrence.

Neuron semantics, stated explicitly in every :class:`~cil_core.Neuron` (sinabs 3.x,
``sinabs.layers.functional.lif``):

* ``v_t = alpha * v_{t-1} + g * x_t`` with ``alpha = exp(-1/tau_mem)`` (1 for IAF) and
  ``g = 1 - alpha`` when ``norm_input=True`` (LIF default), else 1;
* spikes from the membrane *after* integration, at or above threshold (``fires_at_threshold``):
  ``MultiSpike`` → ``max_spikes_per_step=None`` (``floor(v/θ)`` spikes), ``SingleSpike`` → 1,
  ``MaxSpike(n)`` → n;
* reset in the same step (``reset_timing="immediate"``): ``MembraneSubtract`` → subtract
  (n·θ for n spikes), ``MembraneReset(0)`` → zero;
* ``min_v_mem`` → ``v_min``, applied after the reset;
* surrogate: ``SingleExponential(w, s)`` → ``Surrogate("exponential", slope=θ·w, scale=s/(θ·w))``
  (identical to sinabs' gradient); other surrogates fall back to that with a warning.

Layouts. cil is time-major ``[T, B, ...]``. sinabs layers take ``(B, T, ...)``; the *Squeeze
layers take ``(B*T, ...)`` (batch-major: row ``b*T + t``). A model containing any squeezed
layer (or starting with ``FlattenTime``) is run natively on ``x.transpose(0, 1).reshape(B*T, ...)``;
otherwise on ``x.transpose(0, 1)`` (``(B, T, ...)``). In the squeezed layout ``nn.Flatten`` must
flatten from dim 1, in the ``(B, T, ...)`` layout from dim 2 (otherwise it would mix time into
features and is rejected).

Spec parameter names are the model's own ``named_parameters()`` names (e.g. ``"0.weight"`` or
``"spiking_model.0.weight"``), so training through cil updates the sinabs model in place.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from cil_core import (
    Conv2d,
    Dense,
    Flatten,
    NetworkSpec,
    Neuron,
    Pool2d,
    SpecError,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.plugin.adapter import ModelAdapter, pair, torch_layer


def _sinabs():
    import sinabs.layers as sl  # safe: never touches sinabs.backend.dynapcnn

    return sl


def _root(model: Any) -> tuple[nn.Module, str]:
    """The Sequential that holds the layers, and the prefix of its parameter names."""
    try:
        from sinabs.network import Network
    except Exception:  # pragma: no cover
        Network = ()  # type: ignore[assignment]
    if Network and isinstance(model, Network):
        return model.spiking_model, "spiking_model."
    return model, ""


def _flat_modules(seq: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential):
            out.extend(_flat_modules(m, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", m))
    return out


def _is_squeezed(mods: list[tuple[str, nn.Module]]) -> bool:
    from sinabs.layers.reshape import SqueezeMixin

    sl = _sinabs()
    return any(isinstance(m, (SqueezeMixin, sl.FlattenTime)) for _, m in mods)


class SinabsAdapter(ModelAdapter):
    """Adapter for sinabs models (nn.Sequential / sinabs Network of sinabs and torch layers)."""

    # ------------------------------------------------------------------ API
    def accepts(self, model: Any) -> bool:
        try:
            import sinabs.layers as sl
            from sinabs.network import Network
        except Exception:  # pragma: no cover
            return False
        if isinstance(model, Network):
            return True
        if not isinstance(model, nn.Sequential):
            return False
        return any(isinstance(m, sl.StatefulLayer) for m in model.modules())

    def to_spec(self, model: Any, input_shape: tuple[int, ...] | None = None, dt: float = 1e-3) -> NetworkSpec:
        sl = _sinabs()
        root, prefix = _root(model)
        mods = _flat_modules(root, prefix)
        squeezed = _is_squeezed(mods)
        layers: list = []
        for i, (name, m) in enumerate(mods):
            where = f"layer '{name}' ({type(m).__name__})"
            if isinstance(m, (sl.FlattenTime, sl.UnflattenTime)):
                if not (i == 0 and isinstance(m, sl.FlattenTime)) and not (
                        i == len(mods) - 1 and isinstance(m, sl.UnflattenTime)):
                    raise UnsupportedLayerError(
                        f"sinabs adapter: {where}: FlattenTime only as the first and UnflattenTime only as the last layer")
            elif isinstance(m, nn.Flatten):
                want = 1 if squeezed else 2
                if m.start_dim != want or m.end_dim != -1:
                    raise UnsupportedLayerError(
                        f"sinabs adapter: {where}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) would mix time "
                        f"or batch into features; in this model's {'(B*T, ...)' if squeezed else '(B, T, ...)'} layout "
                        f"use nn.Flatten(start_dim={want})")
                layers.append(Flatten())
            elif isinstance(m, nn.Dropout):
                continue
            elif isinstance(m, sl.SumPool2d):
                if m.ceil_mode:
                    raise UnsupportedLayerError(f"sinabs adapter: {where}: ceil_mode=True")
                k = pair(m.kernel_size)
                layers.append(Pool2d(k, pair(m.stride if m.stride is not None else m.kernel_size), "sum"))
            elif isinstance(m, sl.StatefulLayer):
                layers.append(self._neuron(name, m, dt))
            elif (layer := torch_layer(name, m)) is not False:
                if layer is not None:
                    layers.append(layer)
            else:
                raise UnsupportedLayerError(f"sinabs adapter: {where} has no equivalent in the cil network description")
        if input_shape is None:
            first = next((l for l in layers if not isinstance(l, Neuron)), None)
            if isinstance(first, Dense):
                input_shape = (first.in_features,)
            else:
                raise SpecError("sinabs adapter: cannot infer the per-sample input shape of a model that does not "
                                "start with nn.Linear; pass input_shape=(C, H, W)")
        return NetworkSpec(tuple(layers), tuple(int(v) for v in input_shape),
                           source=f"sinabs:{type(model).__name__}")

    def run_native(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return run_sinabs(model, x)

    # ------------------------------------------------------------------ neurons
    def _neuron(self, name: str, m: nn.Module, dt: float) -> Neuron:
        from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike, SingleExponential, SingleSpike

        sl = _sinabs()
        where = f"layer '{name}' ({type(m).__name__})"
        allowed = (sl.IAF, sl.IAFSqueeze, sl.LIF, sl.LIFSqueeze)
        if not isinstance(m, allowed) or isinstance(m, (sl.IAFRecurrent, sl.LIFRecurrent)):
            raise UnsupportedLayerError(f"sinabs adapter: {where}: only IAF, IAFSqueeze, LIF, LIFSqueeze are supported")
        if getattr(m, "tau_syn", None) is not None or getattr(m, "alpha_syn", None) is not None:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: synaptic current (tau_syn) is not supported")
        if m.spike_threshold is None or m.spike_fn is None:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: a non-spiking layer (spike_fn=None) is not supported")
        thr = m.spike_threshold.detach().clone().to(torch.float32)
        if thr.dim() == 0 or thr.numel() == 1:
            thr = thr.reshape(())
        fn = m.spike_fn
        if fn is MultiSpike:
            max_spikes: int | None = None
        elif fn is SingleSpike:
            max_spikes = 1
        elif isinstance(fn, MaxSpike):
            max_spikes = fn.max_num_spikes_per_bin
        else:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: spike_fn {fn!r} (use MultiSpike, SingleSpike or MaxSpike)")
        rf = m.reset_fn
        if isinstance(rf, MembraneSubtract):
            if rf.subtract_value is not None and float(rf.subtract_value) != float(thr.flatten()[0]) or (
                    rf.subtract_value is not None and thr.numel() != 1):
                raise UnsupportedLayerError(f"sinabs adapter: {where}: MembraneSubtract(subtract_value) != threshold")
            reset = "subtract"
        elif isinstance(rf, MembraneReset):
            if float(rf.reset_value) != 0.0:
                # sinabs adds reset_value to *every* neuron each step, spiking or not
                raise UnsupportedLayerError(f"sinabs adapter: {where}: MembraneReset(reset_value != 0)")
            reset = "zero"
        else:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: reset_fn {rf!r}")
        if isinstance(m, (sl.IAF, sl.IAFSqueeze)):
            beta: Any = 1.0
            gain: Any = 1.0
        else:
            alpha = m.alpha_mem_calculated.detach().clone().to(torch.float32)
            beta = alpha.reshape(()) if alpha.numel() == 1 else alpha
            gain = (1 - beta) if m.norm_input else 1.0
        vmin = None if m.min_v_mem is None else float(m.min_v_mem)
        sg = m.surrogate_grad_fn
        t0 = float(thr.flatten()[0]) if thr.numel() == 1 else float(thr.mean())
        if isinstance(sg, SingleExponential):
            w = t0 * sg.grad_width
            surrogate = Surrogate("exponential", slope=w, scale=sg.grad_scale / w)
        else:
            warnings.warn(f"sinabs adapter: {where}: surrogate {type(sg).__name__} has no exact equivalent; "
                          "the software pass uses SingleExponential(0.5, 1.0)", stacklevel=3)
            surrogate = Surrogate("exponential", slope=0.5 * t0, scale=1.0 / (0.5 * t0))
        return Neuron(beta=beta, alpha=None, threshold=thr, reset=reset, reset_timing="immediate",  # type: ignore[arg-type]
                      current_timing="same-step", input_gain=gain, v_leak=0.0, v_reset=0.0, v_min=vmin,
                      fires_at_threshold=True, max_spikes_per_step=max_spikes, dt=dt, output="spikes",
                      surrogate=surrogate, name=name)


def _reset_states(model: nn.Module) -> None:
    sl = _sinabs()
    for m in model.modules():
        if isinstance(m, sl.StatefulLayer):
            for bname, buf in list(m.named_buffers(recurse=False)):
                m.register_buffer(bname, torch.zeros(0, device=buf.device, dtype=buf.dtype))


def run_sinabs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own sinabs forward on a time-major input ``x`` ``[T, B, ...]``; returns
    ``[T, B, *out]``. Neuron states are reset first (each call is a fresh presentation)."""
    from sinabs.layers.reshape import SqueezeMixin

    sl = _sinabs()
    root, prefix = _root(model)
    mods = _flat_modules(root, prefix)
    squeezed = _is_squeezed(mods)
    T, B = x.shape[:2]
    _reset_states(model)
    saved = []
    for _, m in mods:  # squeezed layers: let them infer T from the batch size of this call
        if isinstance(m, SqueezeMixin):
            saved.append((m, m.batch_size, m.num_timesteps))
            m.batch_size, m.num_timesteps = int(B), -1
        elif isinstance(m, sl.UnflattenTime):
            saved.append((m, m.batch_size, None))
            m.batch_size = int(B)
    try:
        xb = x.transpose(0, 1)
        if squeezed and not isinstance(mods[0][1], sl.FlattenTime):
            xb = xb.reshape(B * T, *x.shape[2:])
        y = model(xb)
    finally:
        for m, bs, nt in saved:
            m.batch_size = bs
            if nt is not None:
                m.num_timesteps = nt
        _reset_states(model)
    if y.shape[0] == B * T and (squeezed and not isinstance(mods[-1][1], sl.UnflattenTime)):
        y = y.reshape(B, T, *y.shape[1:])
    return y.transpose(0, 1)
