"""Time loop of one neuron layer (pure function, vectorised over batch and neurons).

The equations are those of :class:`cil_core.network.neuron.Neuron`. Each part of one time step
(synaptic current, membrane, reset signal, reset, catch-up reset, state quantization, floor,
refractory counter, adaptation) is a small named function
with its equation; :func:`run_neuron_layer` is the one loop over time steps that composes them:
everything inside a step is a tensor operation over ``[N, *features]``. Without autograd a plain
leaky layer (snntorch ``Leaky``; :func:`plain_leaky` says which) runs the same operations in
:func:`leaky_steps`, in buffers made once, with its input current given one step at a time (so
that :func:`~cil_core.network.executor.simulate` can compute it step by step too).

The order of floating-point operations follows the libraries' own (snntorch:
``beta * mem + input - reset * threshold``) so that the ideal backend reproduces a wrapped
model spike for spike, not merely to within a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover  (annotations only: the kernels import no cil module at run time)
    from ..network.neuron import Neuron, Surrogate
from .surrogate import heaviside, multi_spike, spike

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


# ---------------------------------------------------------------- step functions
# One time step of one part of the dynamics, on tensors [N, *features]; each keeps the float
# order of the library it reproduces.

def current_decay_then_add(i: torch.Tensor, x: torch.Tensor, alpha) -> torch.Tensor:
    """Synaptic current :math:`i_t = \\alpha\\, i_{t-1} + x_t` (snntorch ``Synaptic``)."""
    return alpha * i + x


def current_add_then_decay(i: torch.Tensor, x: torch.Tensor, alpha) -> torch.Tensor:
    """Synaptic current :math:`i_t = \\alpha\\, (i_{t-1} + x_t)` (sinabs ``tau_syn``)."""
    return alpha * (i + x)


def current_euler(i: torch.Tensor, x: torch.Tensor, neg_k_syn) -> torch.Tensor:
    """Synaptic current, forward Euler: :math:`i_t = (i_{t-1} + (-k_s)\\, i_{t-1}) + x_t` (norse)."""
    return (i + neg_k_syn * i) + x


def membrane_euler(v: torch.Tensor, current: torch.Tensor, k_mem, leak: float) -> torch.Tensor:
    """Membrane, forward Euler: :math:`u_t = v_{t-1} + k_m\\,((v_{\\rm leak} - v_{t-1}) + I_t)` (norse)."""
    return v + k_mem * ((leak - v) + current)


def membrane_decay(v: torch.Tensor, current: torch.Tensor, beta, leak: float) -> torch.Tensor:
    """Membrane: :math:`u_t = v_{\\rm leak} + \\beta\\,(v_{t-1} - v_{\\rm leak}) + I_t`; with
    :math:`v_{\\rm leak} = 0` :math:`\\beta v_{t-1} + I_t` (snntorch), and with :math:`\\beta = 1`
    too :math:`v_{t-1} + I_t` (integrate-and-fire)."""
    if leak != 0.0:
        return leak + beta * (v - leak) + current
    if _is(beta, 1.0):
        return v + current
    return beta * v + current


def reset_signal(v: torch.Tensor, thr, strict: bool) -> torch.Tensor:
    """Deferred reset signal :math:`R_t = H(v_{t-1} - \\theta)` from the stored (un-reset)
    membrane, without gradient (``>`` if ``strict`` else ``>=``)."""
    return heaviside(v - thr, not strict)


def reset(u: torch.Tensor, s: torch.Tensor, how: str, thr, v_reset: float, multi: bool) -> torch.Tensor:
    """Reset where :math:`S = s` spiked: ``"subtract"`` :math:`u - s\\,\\theta`; ``"zero"``
    :math:`u - u\\,s` (:math:`v_{\\rm reset} = 0`) or :math:`(1 - s)\\,u + s\\,v_{\\rm reset}`, and
    with several spikes per step (sinabs ``MembraneReset``) :math:`u\\,[s = 0] + [s \\ne 0]\\,v_{\\rm reset}`
    (no gradient through ``s``); ``"none"`` leaves ``u``."""
    if how == "subtract":
        return u - s if _is(thr, 1.0) else u - s * thr  # s * 1.0 is s, exactly
    if how == "zero":
        if multi:
            keep = (s == 0).to(u.dtype)
            return u * keep if v_reset == 0.0 else u * keep + (1 - keep) * v_reset
        if v_reset == 0.0:
            return u - u * s
        return (1 - s) * u + s * v_reset
    return u


def floor_membrane(v: torch.Tensor, v_min: float) -> torch.Tensor:
    """:math:`\\mathrm{relu}(v - v_{\\min}) + v_{\\min}` (sinabs' float expression for
    :math:`\\max(v, v_{\\min})`, so wrapped sinabs models match spike for spike)."""
    return torch.relu(v - v_min) + v_min


def adaptation_decay(a: torch.Tensor, form: str, rho, k, thr0) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Adaptation state and threshold in force before the spike decision
    (:class:`~cil_core.network.neuron.Adaptation`): ``"decay"`` :math:`a' = \\rho a`,
    ``"euler"`` :math:`a' = a + k (0 - a)`, both :math:`\\theta_t = \\theta + a'`;
    ``"euler-threshold"`` :math:`b' = b + k(\\theta - b)`, :math:`\\theta_t = b'`; ``"lowpass"``
    :math:`\\theta_t = \\theta + j\\, b` (state unchanged here; ``k`` is then ``jump``)."""
    if form == "euler-threshold":
        a = a + k * (thr0 - a)
        return a, a
    if form == "lowpass":  # sinabs ALIF: b0 + adapt_scale * b
        return a, thr0 + k * a
    a = a + k * (0.0 - a) if form == "euler" else rho * a
    return a, thr0 + a


def adaptation_jump(a: torch.Tensor, s: torch.Tensor, form: str, rho, k, jump) -> torch.Tensor:
    """Adaptation after the spike: :math:`a = a' + j\\, S_t`; ``"lowpass"``
    :math:`b_t = \\rho\\, b_{t-1} + k\\, S_t` (:math:`k = 1 - \\rho`)."""
    return rho * a + k * s if form == "lowpass" else a + jump * s


def catch_up_reset(u: torch.Tensor, s: torch.Tensor, r: torch.Tensor, how: str, thr) -> torch.Tensor:
    """Reset right after the spike decision, net of the deferred reset :math:`R_t` already applied
    (snntorch ``reset_delay=False``): :math:`u - (S - R)\\,\\theta` (subtract) or
    :math:`u - (S - R)\\,u` (zero to 0)."""
    d = s - r
    return u - d * thr if how == "subtract" else u - d * u


class _Quantize(torch.autograd.Function):
    """Nearest level forward, identity backward (snntorch's ``StateQuant``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _nearest_level(x, levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


def _nearest_level(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    # snntorch's float operations: |levels - x| per value, the index of the (first) minimum
    idx = torch.min(torch.abs(levels - x.reshape(-1, 1)), dim=-1)[1]
    return levels[idx].reshape(x.shape)


def quantize_state(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """:math:`q(x)`: each value replaced by the nearest of ``levels`` (the first of equidistant
    ones), with a straight-through gradient
    (:class:`~cil_core.network.neuron.StateQuantization`)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Quantize.apply(x, levels)
    return _nearest_level(x, levels)


def refractory_step(v_new: torch.Tensor, v_old: torch.Tensor, s: torch.Tensor, rho: torch.Tensor,
                    period: torch.Tensor | float, surrogate: Surrogate) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the refractory counter (:class:`~cil_core.network.neuron.Refractory`, norse's
    ``compute_refractory_update``, same float order): :math:`m = H(\\rho)` (with the layer's
    surrogate gradient at :math:`\\rho`), :math:`v = (1 - m) v^* + m\\, v_{t-1}`,
    :math:`S = (1 - m) S^*`, :math:`\\rho' = (1 - S)\\,\\mathrm{relu}(\\rho - m) + S \\rho_{\\rm reset}`.
    Returns ``(v, S, rho')``."""
    m = spike(rho, surrogate, False)
    v = (1 - m) * v_new + m * v_old
    s = (1 - m) * s
    rho = (1 - s) * torch.relu(rho - m) + s * period
    return v, s, rho


def straight_through(software: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Forward value ``observed``, gradient through ``software`` (Cramer et al. 2020)."""
    return software + (observed - software).detach()


# ---------------------------------------------------------------- the time loop

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
    :class:`~cil_core.network.neuron.Recurrent` for where it is added).

    ``observed_spikes`` / ``observed_membrane`` (same shape as ``x``) inject hardware
    observations by straight-through substitution: the forward value is the observation, the
    gradient flows through the software expression (Cramer et al. 2020). The reset then follows
    the observed spikes, as it did on the chip.
    """
    T = x.shape[0]
    plain = (plain_leaky(n, x[0]) if observed_spikes is None and observed_membrane is None
             and membrane_noise is None and recurrent_input is None else None)
    if plain is not None:
        return leaky_steps(n, T, x[0], x.__getitem__, record_membrane, plain)
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
    refrac = getattr(n, "refractory", None)
    if refrac is not None:
        period = _param(refrac.period, x0)
        rho = torch.zeros_like(x0)
    quant = getattr(n, "quantization", None)
    if quant is not None:
        levels = torch.as_tensor(quant.levels).to(device=x0.device, dtype=x0.dtype)
        quant_mem, quant_cur = "membrane" in quant.states, "current" in quant.states
    catch_up = getattr(n, "reset_catch_up", False)
    fire_on_floored = getattr(n, "fire_on_floored", False) and n.v_min is not None
    # Without autograd (a backend's forward) two shortcuts that change no value: a plain spiking
    # layer writes its spikes S_t = H(u_t - θ) straight into the output tensor (no stack at the
    # end), and when the stored membrane is u itself and θ fixed (deferred reset, no floor, no
    # observed membrane, no adaptation) the deferred reset signal R_{t+1} = H(v_t - θ) is the
    # same expression on the same values as S_t, so S_t is used instead of recomputing it.
    # Refractory masks, quantized states, catch-up resets and firing on the floored membrane
    # take the general path.
    direct = (not torch.is_grad_enabled() and not readout and not multi and not graded
              and observed_spikes is None and refrac is None and quant is None and not catch_up
              and not fire_on_floored)
    reuse_spike_as_reset = (direct and deferred and n.reset != "none" and n.v_min is None
                            and observed_membrane is None and adapt is None)
    out_buf: torch.Tensor | None = None
    s_last: torch.Tensor | None = None

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

    if alpha is None:
        update_current, current_arg = None, None
    elif neg_k_syn is not None:
        update_current, current_arg = current_euler, neg_k_syn
    elif add_then_decay:
        update_current, current_arg = current_add_then_decay, alpha
    else:
        update_current, current_arg = current_decay_then_add, alpha

    for t in range(T):
        xt = steps[t]
        v_old = v  # the membrane the step starts from (a refractory neuron keeps it)
        # sinabs' recurrent layers receive nothing at step 0 (Recurrent.initial == "zero")
        r_t = recurrent_input(s_prev) if rec_into is not None and (t > 0 or rec_initial == "bias") else None
        if rec_into == "input" and r_t is not None:
            xt = xt + r_t
        if adapt is not None:
            a, thr = adaptation_decay(a, adapt.form, rho, jump if adapt.form == "lowpass" else k_adapt, thr0)
        if cur is not None:
            if rec_into == "current-before-decay":  # rockpool LIFTorch(has_rec): alpha * ((i + x) + r)
                new_cur = current_arg * ((cur + xt) + r_t) if r_t is not None else update_current(cur, xt, current_arg)
            else:
                new_cur = update_current(cur, xt, current_arg)
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
            r = s_last if reuse_spike_as_reset and s_last is not None else reset_signal(v, thr, strict)
        else:
            r = None

        if n.reset_timing == "deferred-pre" and r is not None:
            v_prev = (1 - r) * v if (n.reset == "zero" and v_reset == 0.0) else reset(v, r, n.reset, thr, v_reset, multi)
        else:
            v_prev = v
        u = membrane_euler(v_prev, current, k_mem, leak) if k_mem is not None else \
            membrane_decay(v_prev, current, beta, leak)
        if rec_into == "membrane" and r_t is not None:
            u = u + r_t
        if n.reset_timing == "deferred-post" and r is not None:
            u = reset(u, r, n.reset, thr, v_reset, multi)
        if quant is not None:  # snntorch state_quant: after the state update, before the spike decision
            if quant_mem:
                u = quantize_state(u, levels)
            if quant_cur and cur is not None:
                cur = quantize_state(cur, levels)
        if membrane_noise is not None:
            u = u + membrane_noise(t, u)

        if readout:
            v = u
            if observed_membrane is not None:
                v = straight_through(v, observed_membrane[t])
            if n.v_min is not None:  # a readout's floor is torch.clamp (not floor_membrane's relu form)
                v = torch.clamp(v, min=n.v_min)
            spikes.append(v)
            continue

        if direct:  # = fire(u) without autograd: H(u - θ), written into the output
            if out_buf is None:
                out_buf = torch.empty((T, *u.shape), dtype=u.dtype, device=u.device)
            s = heaviside(u - thr, n.fires_at_threshold, out=out_buf[t])
            s_last = s
        else:
            # LeakyParallel (nn.RNN + relu) thresholds the floored membrane: same value, its gradient
            s = fire(floor_membrane(u, n.v_min) if fire_on_floored else u)
        if observed_spikes is not None:  # observations are the layer's output, g * S for graded spikes
            obs_t = observed_spikes[t] / amp if graded else observed_spikes[t]
            s = straight_through(s, obs_t)
        s_fb = s.detach() if n.detach_reset else s  # what the reset and the adaptation see
        if n.reset_timing == "immediate" and n.reset != "none":
            v = reset(u, s_fb, n.reset, thr, v_reset, multi)
        elif catch_up and r is not None:  # snntorch reset_delay=False
            v = catch_up_reset(u, s_fb, r, n.reset, thr)
        else:
            v = u
        if n.v_min is not None:
            v = floor_membrane(v, n.v_min)
        if refrac is not None:
            v, s, rho = refractory_step(v, v_old, s, rho, period, n.surrogate)
            if observed_spikes is not None:  # the output is what the chip emitted
                s = straight_through(s, obs_t)
        if observed_membrane is not None:
            v = straight_through(v, observed_membrane[t])
        if adapt is not None:
            a = adaptation_jump(a, s_fb, adapt.form, rho, k_adapt, jump)
        if graded:
            s = s * amp
        if rec_into is not None:
            s_prev = s
        if not direct:
            spikes.append(s)
        if record_membrane:
            membranes.append(v)

    out = out_buf if direct and out_buf is not None else torch.stack(spikes)
    if readout:
        return LayerTrace(spikes=out, membrane=out)
    return LayerTrace(spikes=out, membrane=torch.stack(membranes) if record_membrane else None)


def plain_leaky(n: Neuron, like: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float, float] | None:
    """``(beta, threshold, v_init)`` in ``like``'s dtype when ``n`` is a plain leaky layer that
    :func:`leaky_steps` runs exactly as :func:`run_neuron_layer`'s general loop does, else
    ``None``: no autograd, spikes of amplitude 1 out (one per step), a deferred subtractive reset
    after the membrane update (snntorch ``Leaky``), no synaptic current, input factors, Euler rates,
    input gain, leak potential, floor, recurrence, adaptation, refractory period, quantization or
    catch-up reset, and β and θ that broadcast to ``like``'s shape (one step of the layer's input).
    The caller adds: no observations and no membrane noise."""
    if (torch.is_grad_enabled() or n.output == "membrane" or n.max_spikes_per_step != 1
            or not _is(n.spike_amplitude, 1.0) or n.reset != "subtract" or n.reset_timing != "deferred-post"
            or n.alpha is not None or getattr(n, "input_factors", None) is not None or n.mem_rate is not None
            or not _is(n.input_gain, 1.0) or float(n.v_leak) != 0.0 or n.v_min is not None
            or n.recurrent is not None or n.adaptation is not None or getattr(n, "refractory", None) is not None
            or getattr(n, "quantization", None) is not None or getattr(n, "reset_catch_up", False)):
        return None
    beta, thr = _param(n.beta, like), _param(n.threshold, like)
    if any(isinstance(p, torch.Tensor) and torch.broadcast_shapes(p.shape, like.shape) != like.shape
           for p in (beta, thr)):
        return None
    return beta, thr, 0.0 if n.v_init is None else float(n.v_init)


def leaky_steps(n: Neuron, T: int, like: torch.Tensor, current: Callable[[int], torch.Tensor],
                record_membrane: bool, params: tuple[torch.Tensor | float, torch.Tensor | float, float]) -> LayerTrace:
    """``T`` steps of a plain leaky layer (:func:`plain_leaky` must accept ``n``) whose input
    current at step ``t`` is ``current(t)`` (shaped like ``like``), asked for in step order and read
    before the next is asked for, so a caller may compute each step's current into one reused
    buffer (:func:`~cil_core.network.executor.simulate` runs a leading dense layer's products that
    way). The general loop's operations in its order, bit for bit (``beta * v + x``, ``u - s`` or
    ``u - s * thr``, ``heaviside(u - thr)``):

    .. math:: u_t = \\beta v_{t-1} + x_t - R_t\\,\\theta,\\qquad S_t = H(u_t - \\theta),\\qquad v_t = u_t,

    with :math:`R_0 = H(v_0 - \\theta)` and :math:`R_t = S_{t-1}` (the general loop's
    ``reuse_spike_as_reset``), written into buffers made once: spikes straight into the output,
    the membrane into the recorded membrane or into two alternating buffers. ``params``: what
    :func:`plain_leaky` returned for ``n`` and ``like`` (not ``None``: the caller asks it first)."""
    beta, thr, v_init = params
    fires_at_threshold = n.fires_at_threshold
    out = torch.empty((T, *like.shape), dtype=like.dtype, device=like.device)
    mem = torch.empty_like(out) if record_membrane else None
    spare = [torch.empty_like(like), torch.empty_like(like)]
    tmp = torch.empty_like(like)
    unit_beta, unit_thr = _is(beta, 1.0), _is(thr, 1.0)
    v = torch.full_like(like, v_init) if v_init != 0.0 else torch.zeros_like(like)
    r = reset_signal(v, thr, not fires_at_threshold)
    for t in range(T):
        u = mem[t] if mem is not None else spare[t % 2]
        xt = current(t)
        if unit_beta:
            torch.add(v, xt, out=u)
        else:
            torch.mul(v, beta, out=u)
            u.add_(xt)
        if unit_thr:
            u.sub_(r)
        else:
            u.sub_(torch.mul(r, thr, out=tmp))
        heaviside(torch.sub(u, thr, out=tmp), fires_at_threshold, out=out[t])
        r = out[t]
        v = u
    return LayerTrace(spikes=out, membrane=mem)
