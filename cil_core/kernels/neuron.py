"""Time loop of one neuron layer (pure function, vectorised over batch and neurons).

The equations are those of :class:`cil_core.network.description.Neuron`. The loop over time steps is the only
Python loop; everything inside a step is a tensor operation over ``[N, *features]``.

The order of floating-point operations follows the libraries' own (snntorch:
``beta * mem + input - reset * threshold``) so that the ideal backend reproduces a wrapped
model spike for spike, not merely to within a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover  (kernels import no other cil module)
    from ..network.description import Neuron
from .surrogate import multi_spike, spike

#: ``noise(t, like) -> tensor`` added to the membrane before the spike decision at step ``t``.
MembraneNoise = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class LayerTrace:
    """What one neuron layer did over ``T`` steps: ``spikes`` and ``membrane`` are
    ``[T, N, *features]`` (membrane as the library reports it: after the reset for
    ``"immediate"``, before a deferred reset)."""

    spikes: torch.Tensor
    membrane: Optional[torch.Tensor]


def _param(v, like: torch.Tensor) -> torch.Tensor | float:
    if isinstance(v, torch.Tensor):
        return v.to(device=like.device, dtype=like.dtype)
    return float(v)


def _is(v, value: float) -> bool:
    return not isinstance(v, torch.Tensor) and float(v) == value


def run_neuron_layer(
    n: Neuron,
    x: torch.Tensor,
    *,
    record_membrane: bool = False,
    observed_spikes: torch.Tensor | None = None,
    observed_membrane: torch.Tensor | None = None,
    membrane_noise: MembraneNoise | None = None,
    recurrent_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LayerTrace:
    """Run neuron layer ``n`` on its input current ``x`` (``[T, N, *features]``).

    ``recurrent_input(s_prev) -> r_t`` gives the recurrent synapses' contribution from the
    layer's previous output spikes (required iff ``n.recurrent`` is set; see
    :class:`~cil_core.network.description.Recurrent` for where it is added).

    ``observed_spikes`` / ``observed_membrane`` (same shape as ``x``) inject hardware
    observations by straight-through substitution: the forward value is the observation, the
    gradient flows through the software expression (Cramer et al. 2020). The reset then follows
    the observed spikes, as it did on the chip.
    """
    T = x.shape[0]
    steps = x.unbind(0)  # one autograd node for all steps (x[t] would allocate a full gradient per step)
    x0 = steps[0]
    beta = _param(n.beta, x0)
    alpha = None if n.alpha is None else _param(n.alpha, x0)
    thr = _param(n.threshold, x0)
    gain = _param(n.input_gain, x0)
    leak = float(n.v_leak)
    v_reset = float(n.v_reset)
    strict = not n.fires_at_threshold
    readout = n.output == "membrane"
    multi = n.max_spikes_per_step != 1

    v_init = leak if n.v_init is None else float(n.v_init)
    # forward-Euler form (norse): rates dt/tau, used in norse's own float order
    k_mem = None if n.mem_rate is None else _param(n.mem_rate, x0)
    neg_k_syn = None if n.syn_rate is None else -_param(n.syn_rate, x0)
    factors = None if getattr(n, "input_factors", None) is None else [_param(f, x0) for f in n.input_factors]
    v = torch.full_like(x0, v_init) if v_init != 0.0 else torch.zeros_like(x0)
    cur = torch.zeros_like(x0) if alpha is not None else None
    spikes: list[torch.Tensor] = []
    membranes: list[torch.Tensor] = []
    deferred = n.reset_timing != "immediate"
    rec_into = None if n.recurrent is None else n.recurrent.into
    if rec_into is not None and recurrent_input is None:
        raise ValueError("a recurrent neuron layer needs recurrent_input")
    if rec_into == "current" and alpha is None:
        rec_into = "input"
    s_prev = torch.zeros_like(x0) if rec_into is not None else None
    rec_initial = None if n.recurrent is None else n.recurrent.initial
    add_then_decay = n.synaptic_update == "add-then-decay"
    adapt = n.adaptation
    if adapt is not None:
        rho = _param(adapt.rho, x0)
        jump = _param(adapt.jump, x0)
        k_adapt = (1.0 - rho) if adapt.rate is None else _param(adapt.rate, x0)
        # "euler-threshold" keeps the whole threshold b (starts at theta), the others a = b - theta
        a = torch.zeros_like(x0) if adapt.form != "euler-threshold" else torch.zeros_like(x0) + thr
    amp = _param(n.spike_amplitude, x0)
    graded = not _is(amp, 1.0)
    thr0 = thr

    relative_grad = adapt is not None and adapt.spike_gradient == "membrane-relative"

    def fire(u: torch.Tensor) -> torch.Tensor:
        if relative_grad and torch.is_grad_enabled() and u.requires_grad:
            # sinabs' spike functions: the gradient flows to the membrane only, through a
            # surrogate whose width scales with the threshold in force; forward value H(u - thr)
            thr_d = thr.detach() if isinstance(thr, torch.Tensor) else thr
            ratio = thr_d / thr0
            soft = spike((u - thr_d) / ratio, n.surrogate, n.fires_at_threshold)
            hard = (((u - thr_d) > 0) if strict else ((u - thr_d) >= 0)).to(u.dtype)
            return soft + (hard - soft).detach()
        if multi:
            cap = n.max_spikes_per_step if n.max_spikes_per_step is not None else torch.finfo(u.dtype).max
            return multi_spike(u / thr, cap, n.surrogate, thr, n.fires_at_threshold)
        return spike(u - thr, n.surrogate, n.fires_at_threshold)

    def apply_reset(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if n.reset == "subtract":
            return u - s * thr
        if n.reset == "zero":
            if multi:
                # several spikes in one step (sinabs MultiSpike + MembraneReset): reset where any
                # spike occurred, as sinabs does (v * (s == 0) + v_reset); no gradient through s
                keep = (s == 0).to(u.dtype)
                return u * keep if v_reset == 0.0 else u * keep + (1 - keep) * v_reset
            if v_reset == 0.0:
                return u - u * s
            return (1 - s) * u + s * v_reset
        return u

    for t in range(T):
        xt = steps[t]
        # sinabs' recurrent layers receive nothing at step 0 (Recurrent.initial == "zero")
        r_t = recurrent_input(s_prev) if rec_into is not None and (t > 0 or rec_initial == "bias") else None
        if rec_into == "input" and r_t is not None:
            xt = xt + r_t
        if adapt is not None:
            if adapt.form == "euler-threshold":
                a = a + k_adapt * (thr0 - a)
                thr = a
            elif adapt.form == "lowpass":  # sinabs ALIF: b0 + adapt_scale * b
                thr = thr0 + jump * a
            else:
                a = a + k_adapt * (0.0 - a) if adapt.form == "euler" else rho * a
                thr = thr0 + a
        if cur is not None:
            if neg_k_syn is not None:
                new_cur = (cur + neg_k_syn * cur) + xt
            elif add_then_decay:  # sinabs tau_syn: alpha * (i + x)
                new_cur = alpha * (cur + xt)
            else:
                new_cur = alpha * cur + xt
            if rec_into == "current" and r_t is not None:
                new_cur = new_cur + r_t
            current = new_cur if n.current_timing == "same-step" else cur
            cur = new_cur
        else:
            current = xt
        if factors is not None:  # snntorch Lapicque: ((x * R) * (1 / (R C))) * dt, one rounding per factor
            for f in factors:
                current = current * f
        elif k_mem is None and not _is(gain, 1.0):
            current = gain * current

        if deferred and n.reset != "none" and not readout:
            # reset signal from the stored (un-reset) membrane of the previous step, no gradient
            r = ((v - thr) > 0) if strict else ((v - thr) >= 0)
            r = r.to(v.dtype)
        else:
            r = None

        if n.reset_timing == "deferred-pre" and r is not None:
            v_prev = (1 - r) * v if (n.reset == "zero" and v_reset == 0.0) else apply_reset(v, r)
        else:
            v_prev = v
        if k_mem is not None:
            u = v_prev + k_mem * ((leak - v_prev) + current)
        elif leak != 0.0:
            u = leak + beta * (v_prev - leak) + current
        elif _is(beta, 1.0):
            u = v_prev + current
        else:
            u = beta * v_prev + current
        if rec_into == "membrane" and r_t is not None:
            u = u + r_t
        if n.reset_timing == "deferred-post" and r is not None:
            u = apply_reset(u, r)
        if membrane_noise is not None:
            u = u + membrane_noise(t, u)

        if readout:
            v = u
            if observed_membrane is not None:
                v = v + (observed_membrane[t] - v).detach()
            if n.v_min is not None:
                v = torch.clamp(v, min=n.v_min)
            spikes.append(v)
            continue

        s = fire(u)
        if observed_spikes is not None:  # observations are the layer's output, g * S for graded spikes
            obs_t = observed_spikes[t] / amp if graded else observed_spikes[t]
            s = s + (obs_t - s).detach()
        s_fb = s.detach() if n.detach_reset else s  # what the reset and the adaptation see
        if n.reset_timing == "immediate" and n.reset != "none":
            v = apply_reset(u, s_fb)
        else:
            v = u
        if n.v_min is not None:
            # relu(v - v_min) + v_min (sinabs' own float expression, so wrapped sinabs models
            # match spike for spike; mathematically max(v, v_min))
            v = torch.relu(v - n.v_min) + n.v_min
        if observed_membrane is not None:
            v = v + (observed_membrane[t] - v).detach()
        if adapt is not None:
            a = rho * a + k_adapt * s_fb if adapt.form == "lowpass" else a + jump * s_fb
        if graded:
            s = s * amp
        if rec_into is not None:
            s_prev = s
        spikes.append(s)
        if record_membrane:
            membranes.append(v)

    out = torch.stack(spikes)
    if readout:
        return LayerTrace(spikes=out, membrane=out)
    return LayerTrace(spikes=out, membrane=torch.stack(membranes) if record_membrane else None)
