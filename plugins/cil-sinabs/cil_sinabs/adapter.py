"""sinabs models → cil network description.

Accepted (each spike for spike equal to sinabs' own forward on the ideal backend, and with the
BPTT gradients of sinabs' own autograd; tests/test_sinabs_adapter.py, tests/test_sinabs_layers.py):

* containers: ``nn.Sequential`` (nested ones flattened; parameter names keep their dots) and
  ``sinabs.network.Network`` (its ``spiking_model``), so ``sinabs.from_model`` conversions;
* synapses: ``nn.Conv2d``, ``nn.Conv1d`` (groups=1, dilation=1, zero padding), ``nn.Linear``;
* shape: ``nn.Flatten`` (see *layouts*), ``nn.Identity``, ``sinabs.layers.FlattenTime`` /
  ``UnflattenTime`` at the ends of the model (layout markers only);
* pooling: ``sinabs.layers.SumPool2d`` (→ ``Pool2d(mode="sum")``), ``nn.AvgPool2d``
  (→ ``"avg"``), ``nn.MaxPool2d`` (→ ``"max"``, spiking max pooling), without padding or ceil mode;
* ``nn.BatchNorm1d/2d`` (→ :class:`~cil_core.BatchNorm` with the running statistics, i.e. the
  model's ``eval()`` forward; folded into the preceding conv/linear for chips that cannot run it)
  in the squeezed ``(B*T, ...)`` layout only; ``nn.Dropout`` (→ :class:`~cil_core.Dropout`,
  software training passes only);
* neurons: ``IAF``, ``LIF`` and their ``Squeeze`` variants, with or without ``tau_syn``;
  ``IAFRecurrent`` / ``LIFRecurrent`` with ``rec_connect=nn.Linear(n, n)``; ``ALIF``,
  ``ALIFRecurrent`` (sinabs 3.1 has no ``ALIFSqueeze``); ``ExpLeak`` / ``ExpLeakSqueeze`` and any layer with
  ``spike_fn=None`` (a non-spiking membrane readout, ``output="membrane"``).

Neuron semantics, stated explicitly in every :class:`~cil_core.Neuron` (sinabs 3.x,
``sinabs.layers.functional.lif`` / ``alif``):

* synaptic current (``tau_syn``): ``i_t = alpha_syn * (i_{t-1} + x_t)`` (the input is decayed in
  its own step: ``synaptic_update="add-then-decay"``), else ``i_t = x_t``;
* ``v_t = alpha * v_{t-1} + g * i_t`` with ``alpha = exp(-1/tau_mem)`` (1 for IAF) and
  ``g = 1 - alpha`` when ``norm_input=True`` (LIF/ALIF default, ExpLeak: False), else 1;
* spikes from the membrane *after* integration, at or above threshold (``fires_at_threshold``):
  ``MultiSpike`` → ``max_spikes_per_step=None`` (``floor(v/θ)`` spikes), ``SingleSpike`` → 1,
  ``MaxSpike(n)`` → n;
* reset in the same step (``reset_timing="immediate"``): ``MembraneSubtract`` → subtract
  (n·θ for n spikes), ``MembraneReset(0)`` → zero, without a gradient through the spike
  (``detach_reset``: sinabs computes ``v * (spikes == 0)``);
* ``min_v_mem`` → ``v_min``, applied after the reset;
* recurrence: ``rec_connect(spikes_{t-1})`` is added to the input before anything else
  (``Recurrent(into="input")``), and nothing at step 0 (``initial="zero"``: a bias of
  ``rec_connect`` first acts at step 1);
* ALIF: threshold ``b0 + adapt_scale * b_{t-1}``, ``b_t = rho * b_{t-1} + (1 - rho) * S_t`` with
  ``rho = exp(-1/tau_adapt)`` (``Adaptation(form="lowpass", jump=adapt_scale)``); the subtract
  reset removes the threshold in force; sinabs' spike function gives the threshold no gradient
  and scales its surrogate with it (``spike_gradient="membrane-relative"``);
* surrogate: ``SingleExponential(w, s)`` → ``Surrogate("exponential", slope=θ·w, scale=s/(θ·w))``
  (identical to sinabs' gradient); other surrogates fall back to that with a warning.

Refused, with the layer named and what to use instead (:class:`~cil_core.UnsupportedLayerError`):

* ``rec_connect`` other than a square ``nn.Linear`` (e.g. a convolution: recurrent synapses are
  dense over 1-D layers in the description);
* a non-spiking layer (``ExpLeak``) with ``min_v_mem``: sinabs outputs the membrane *before*
  clipping it and keeps the clipped one, which the readout layer cannot state;
* ``ALIF`` with ``spike_fn`` other than ``SingleSpike``, with ``MembraneReset``, with a per-neuron
  threshold, or with ``tau_syn`` and ``norm_input=True`` (sinabs' ALIF then keeps the scaled
  current as its synaptic state, a dynamics no other layer has);
* ``MembraneReset(reset_value != 0)`` (sinabs adds the value to every neuron every step),
  ``MembraneSubtract(subtract_value != threshold)``, other spike or reset functions;
* batch norm in the ``(B, T, ...)`` layout (it would normalise over time), channel dropout,
  and any other module (``nn.ReLU``, ...).

Layouts. cil is time-major ``[T, B, ...]``. sinabs layers take ``(B, T, ...)``; the *Squeeze
layers take ``(B*T, ...)`` (batch-major: row ``b*T + t``). A model containing any squeezed
layer (or starting with ``FlattenTime``) is run natively on ``x.transpose(0, 1).reshape(B*T, ...)``;
otherwise on ``x.transpose(0, 1)`` (``(B, T, ...)``). In the squeezed layout ``nn.Flatten`` must
flatten from dim 1, in the ``(B, T, ...)`` layout from dim 2 (otherwise it would mix time into
features and is rejected).

Known difference: sinabs' ``SumPool2d`` is ``nn.LPPool2d(p=1)``, whose gradient is zero out of a
window without spikes; cil's sum pooling passes it (forward values are identical).

Spec parameter names are the model's own ``named_parameters()`` names (e.g. ``"0.weight"``,
``"spiking_model.0.weight"``, ``"1.rec_connect.weight"``), so training through cil updates the
sinabs model in place.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from cil_core import (
    Adaptation,
    Flatten,
    NetworkSpec,
    Neuron,
    NeuronParameter,
    Pool2d,
    Recurrent,
    Surrogate,
    UnsupportedLayerError,
)
from cil_core.plugin.adapter import ModelAdapter, flat_children, infer_input_shape, pair, torch_layer


#: What this adapter accepts, as ``(layer, how the description states it, what cil trains)``;
#: docs/models.md's adapter table is generated from it (``benchmarks/model_table.py``).
ACCEPTED_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("nn.Linear, nn.Conv1d, nn.Conv2d", "Dense / Conv1d / Conv2d, one call on all (sample, step) pairs "
     "(synapse_calls='all-steps')", "weight, bias"),
    ("SumPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity, FlattenTime / UnflattenTime at the ends",
     "Pool2d sum / avg / max, Flatten, layout markers", "-"),
    ("nn.BatchNorm1d/2d (squeezed layout), nn.Dropout", "BatchNorm (running statistics; folded for chips), Dropout",
     "γ, β"),
    ("IAF, IAFSqueeze, LIF, LIFSqueeze (with or without tau_syn)", "immediate reset, fires at threshold; tau_syn: "
     "synaptic_update='add-then-decay'; min_v_mem: v_min", "alpha_mem, alpha_syn with train_alphas=True, "
     "norm_input=False (beta, alpha: per layer or per neuron); tau_mem, tau_syn (train_alphas=False: the decay is "
     "exp(-1/tau)) and threshold held fixed"),
    ("MultiSpike, SingleSpike, MaxSpike(n); MembraneSubtract, MembraneReset(0)", "max_spikes_per_step None / 1 / n; "
     "subtract / zero reset with the spike detached", "-"),
    ("IAFRecurrent, LIFRecurrent with rec_connect=nn.Linear(n, n)", "Recurrent(into='input', initial='zero')",
     "rec_connect weight, bias"),
    ("ALIF, ALIFRecurrent", "Adaptation(form='lowpass', spike_gradient='membrane-relative')", "none"),
    ("ExpLeak, ExpLeakSqueeze, spike_fn=None", "non-spiking readout", "none"),
    ("nn.Sequential, sinabs.network.Network (from_model)", "a chain", "its layers' tensors"),
)
#: What this adapter refuses, as ``(layer, why)`` (docs/models.md's generated table).
REFUSED_LAYERS: tuple[tuple[str, str], ...] = (
    ("train_alphas=True with norm_input=True, or on ALIF", "norm_input scales the input by 1 - alpha_mem: one "
     "tensor driving the decay and the input gain, which a NeuronParameter (one field) cannot express; ALIF's "
     "adaptation decay is no trainable field"),
    ("rec_connect other than a square nn.Linear", "recurrent synapses are dense over 1-D layers"),
    ("ExpLeak with min_v_mem", "sinabs outputs the unclipped membrane but keeps the clipped one"),
    ("ALIF with spike_fn other than SingleSpike, MembraneReset, per-neuron threshold, tau_syn with norm_input",
     "dynamics no other layer has"),
    ("MembraneReset(reset_value != 0), MembraneSubtract(subtract_value != threshold), other spike / reset "
     "functions", "no counterpart in the description"),
    ("batch norm in the (B, T, ...) layout, channel dropout, any other module", "would normalise over time / no "
     "counterpart"),
)

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
        mods = flat_children(root, prefix)
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
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not squeezed:
                raise UnsupportedLayerError(
                    f"sinabs adapter: {where}: in this model's (B, T, ...) layout BatchNorm would normalise over time; "
                    "use the squeezed layers (IAFSqueeze, LIFSqueeze, ...) so that it sees (B*T, C, ...)")
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
        first = next((m for _, m in mods if not isinstance(m, (sl.FlattenTime, sl.UnflattenTime, sl.StatefulLayer))),
                     None)
        return NetworkSpec(tuple(layers), infer_input_shape(first, input_shape),
                           source=f"sinabs:{type(model).__name__}", synapse_calls="all-steps")

    def run_native(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return run_sinabs(model, x)

    # ------------------------------------------------------------------ neurons
    @staticmethod
    def _trained_alphas(name: str, m: nn.Module, where: str, is_alif: bool) -> tuple[NeuronParameter, ...]:
        """The decays sinabs trains with ``train_alphas=True`` (``alpha_mem``, ``alpha_syn``: nn.Parameters
        used as they are, :math:`v_t = \\alpha_{mem} v_{t-1} + i_t`, :math:`i_t = \\alpha_{syn}(i_{t-1} + x_t)`)
        as neuron parameters ``beta`` / ``alpha`` named ``"<layer>.alpha_mem"`` / ``"<layer>.alpha_syn"``.

        The rule for sinabs' time constants: with ``train_alphas=False`` (sinabs' default) the
        decay is :math:`e^{-1/\\tau}`, a function of ``tau_mem`` / ``tau_syn`` (nn.Parameters that
        require grad by default) which cil's :class:`NeuronParameter` (a field's value itself,
        clamped) cannot express: they are accepted and **held fixed** at their values when the
        model is trained through cil (the synapses are trained). To train a sinabs decay through
        cil, build the layer with ``train_alphas=True`` and ``norm_input=False``. Refused:
        ``train_alphas=True`` with ``norm_input=True`` (the input is scaled by
        :math:`1 - \\alpha_{mem}`: one tensor driving the decay and the input gain) and on ``ALIF``."""
        if not getattr(m, "train_alphas", False):
            return ()
        if is_alif:
            raise UnsupportedLayerError(
                f"sinabs adapter: {where} with train_alphas=True: ALIF's trained decays (alpha_mem, alpha_adapt) are "
                "not mapped (an adaptation decay is not a trainable field of cil's description); build it with "
                "train_alphas=False (the decays are then held fixed)")
        out = []
        a_mem = getattr(m, "alpha_mem", None)
        if isinstance(a_mem, nn.Parameter) and a_mem.requires_grad:
            if m.norm_input:
                raise UnsupportedLayerError(
                    f"sinabs adapter: {where} with train_alphas=True and norm_input=True: sinabs scales the input by "
                    "(1 - alpha_mem), so one trained tensor drives both the decay and the input gain, which cil's "
                    "NeuronParameter (one field, the tensor's value) cannot express exactly; build the layer with "
                    "norm_input=False to train alpha_mem through cil, or train_alphas=False to hold it fixed")
            out.append(NeuronParameter("beta", f"{name}.alpha_mem", tuple(a_mem.shape), None))
        a_syn = getattr(m, "alpha_syn", None)
        if isinstance(a_syn, nn.Parameter) and a_syn.requires_grad:
            out.append(NeuronParameter("alpha", f"{name}.alpha_syn", tuple(a_syn.shape), None))
        return tuple(out)

    def _neuron(self, name: str, m: nn.Module, dt: float) -> Neuron:
        from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike, SingleExponential, SingleSpike

        sl = _sinabs()
        where = f"layer '{name}' ({type(m).__name__})"
        is_alif = isinstance(m, sl.ALIF)
        if not isinstance(m, (sl.LIF, sl.ALIF)):
            raise UnsupportedLayerError(
                f"sinabs adapter: {where} has no equivalent in the cil network description; use IAF, LIF, ExpLeak, "
                "ALIF (or their Squeeze / Recurrent variants)")
        trained = self._trained_alphas(name, m, where, is_alif)

        # ---- decay, input normalisation, synaptic current (sinabs' float order)
        if isinstance(m, (sl.IAF, sl.IAFSqueeze, sl.IAFRecurrent)) and not trained:
            beta: Any = 1.0
            gain: Any = 1.0
        else:
            a_mem = m.alpha_mem_calculated.detach().clone().to(torch.float32)
            beta = a_mem.reshape(()) if a_mem.numel() == 1 else a_mem
            gain = (1 - beta) if m.norm_input else 1.0
        a_syn = m.alpha_syn_calculated
        alpha: Any = None
        if a_syn is not None:
            if is_alif and m.norm_input:
                # sinabs' ALIF stores the norm_input-scaled current as its synaptic state
                raise UnsupportedLayerError(
                    f"sinabs adapter: {where}: ALIF with tau_syn and norm_input=True (sinabs keeps the scaled current as "
                    "the synaptic state, a dynamics no other layer has); use norm_input=False or LIF(tau_syn=...)")
            a_syn = a_syn.detach().clone().to(torch.float32)
            alpha = a_syn.reshape(()) if a_syn.numel() == 1 else a_syn
        vmin = None if m.min_v_mem is None else float(m.min_v_mem)

        # ---- recurrence: rec_connect(spikes) is added to the next step's input, none at step 0
        recurrent = None
        rec = getattr(m, "rec_connect", None)
        if rec is not None:
            if not isinstance(rec, nn.Linear) or rec.in_features != rec.out_features:
                raise UnsupportedLayerError(
                    f"sinabs adapter: {where}: rec_connect {type(rec).__name__} is not supported; use "
                    "rec_connect=nn.Linear(n, n) (dense recurrent synapses)")
            recurrent = Recurrent(f"{name}.rec_connect.weight",
                                  f"{name}.rec_connect.bias" if rec.bias is not None else None,
                                  rec.in_features, mode="dense", into="input", initial="zero")

        common = dict(alpha=alpha, current_timing="same-step", input_gain=gain, v_leak=0.0, v_reset=0.0,
                      dt=dt, name=name, recurrent=recurrent, trained=trained,
                      synaptic_update="add-then-decay" if alpha is not None else "decay-then-add")

        # ---- non-spiking (ExpLeak, spike_fn=None): the membrane is the output
        spike_fn = getattr(m, "spike_fn", None)
        if spike_fn is None:
            if recurrent is not None:
                raise UnsupportedLayerError(f"sinabs adapter: {where}: a non-spiking recurrent layer is not supported")
            if vmin is not None:
                # sinabs outputs the membrane *before* clipping it to min_v_mem
                raise UnsupportedLayerError(
                    f"sinabs adapter: {where}: a non-spiking layer with min_v_mem (sinabs outputs the unclipped "
                    "membrane but keeps the clipped one); use min_v_mem=None")
            return Neuron(beta=beta, threshold=1.0, reset="none", reset_timing="immediate", v_min=None,  # type: ignore[arg-type]
                          fires_at_threshold=True, max_spikes_per_step=1, output="membrane", **common)

        # ---- spikes, reset, threshold
        thr_src = m.b0 if is_alif else m.spike_threshold
        if thr_src is None:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: spike_threshold=None with a spike_fn")
        thr = torch.as_tensor(thr_src).detach().clone().to(torch.float32)
        if thr.dim() == 0 or thr.numel() == 1:
            thr = thr.reshape(())
        fn = spike_fn
        if fn is MultiSpike:
            max_spikes: int | None = None
        elif fn is SingleSpike:
            max_spikes = 1
        elif isinstance(fn, MaxSpike):
            max_spikes = fn.max_num_spikes_per_bin
        else:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: spike_fn {fn!r} (use MultiSpike, SingleSpike or MaxSpike)")
        rf = m.reset_fn
        detach_reset = False
        if isinstance(rf, MembraneSubtract):
            if rf.subtract_value is not None and float(rf.subtract_value) != float(thr.flatten()[0]) or (
                    rf.subtract_value is not None and thr.numel() != 1):
                raise UnsupportedLayerError(f"sinabs adapter: {where}: MembraneSubtract(subtract_value) != threshold; "
                                            "use MembraneSubtract() (subtracts the threshold)")
            reset = "subtract"
        elif isinstance(rf, MembraneReset):
            if float(rf.reset_value) != 0.0:
                # sinabs adds reset_value to *every* neuron each step, spiking or not
                raise UnsupportedLayerError(f"sinabs adapter: {where}: MembraneReset(reset_value != 0) (sinabs adds "
                                            "reset_value to every neuron every step); use MembraneReset() or MembraneSubtract()")
            reset = "zero"
            detach_reset = True  # v * (spikes == 0): no gradient through the spike
        else:
            raise UnsupportedLayerError(f"sinabs adapter: {where}: reset_fn {rf!r}; use MembraneSubtract or MembraneReset")

        # ---- adaptive threshold (ALIF): b0 + adapt_scale * b, b low-passes the spikes
        adaptation = None
        if is_alif:
            if fn is not SingleSpike:
                raise UnsupportedLayerError(f"sinabs adapter: {where}: ALIF with spike_fn {getattr(fn, '__name__', fn)!r}; "
                                            "use spike_fn=SingleSpike (ALIF's default)")
            if not isinstance(rf, MembraneSubtract):
                raise UnsupportedLayerError(f"sinabs adapter: {where}: ALIF with MembraneReset; use MembraneSubtract "
                                            "(ALIF's default)")
            if thr.numel() != 1:
                raise UnsupportedLayerError(f"sinabs adapter: {where}: ALIF with a per-neuron spike_threshold; use a "
                                            "scalar threshold")
            rho = m.alpha_adapt_calculated.detach().clone().to(torch.float32)
            scale = m.adapt_scale
            jump: Any = scale.detach().clone().to(torch.float32) if isinstance(scale, torch.Tensor) else float(scale)
            adaptation = Adaptation(rho=rho.reshape(()) if rho.numel() == 1 else rho, jump=jump, form="lowpass",
                                    spike_gradient="membrane-relative")
            if not isinstance(thr_src, torch.Tensor):  # b0 a Python number: keep it one (same float op)
                thr = float(thr_src)  # type: ignore[assignment]

        sg = m.surrogate_grad_fn
        t0 = float(torch.as_tensor(thr).flatten()[0]) if torch.as_tensor(thr).numel() == 1 else float(torch.as_tensor(thr).mean())
        if isinstance(sg, SingleExponential):
            w = t0 * sg.grad_width
            surrogate = Surrogate("exponential", slope=w, scale=sg.grad_scale / w)
        else:
            warnings.warn(f"sinabs adapter: {where}: surrogate {type(sg).__name__} has no exact equivalent; "
                          "the software pass uses SingleExponential(0.5, 1.0)", stacklevel=3)
            surrogate = Surrogate("exponential", slope=0.5 * t0, scale=1.0 / (0.5 * t0))
        return Neuron(beta=beta, threshold=thr, reset=reset, reset_timing="immediate",  # type: ignore[arg-type]
                      v_min=vmin, fires_at_threshold=True, max_spikes_per_step=max_spikes, output="spikes",
                      surrogate=surrogate, adaptation=adaptation, detach_reset=detach_reset, **common)


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
    mods = flat_children(root, prefix)
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
