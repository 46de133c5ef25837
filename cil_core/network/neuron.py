"""Network vocabulary: a layer of neurons (:class:`Neuron`), with its optional recurrent
synapses (:class:`Recurrent`), adaptive threshold (:class:`Adaptation`) and the surrogate
derivative of its spike function (:class:`Surrogate`).

Every neuron layer states its decay, threshold, reset mechanism, reset timing and spike
condition explicitly; nothing is implied by the library the model came from. Time is discrete:
step ``t`` has length ``dt`` seconds. The time loop that runs these equations is
:func:`cil_core.kernels.neuron.run_neuron_layer`.

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

Optional neuron features (each ``None`` / 1 by default, see :class:`Recurrent`,
:class:`Adaptation`):

* recurrence: :math:`r_t = W_{\\rm rec} S'_{t-1} (+ b)` (or :math:`w \\odot S'_{t-1}` one-to-one),
  added to the input (``into="input"``: :math:`x_t + r_t` before the synaptic current), to the
  synaptic current after its update (``"current"``) or to the membrane after decay and
  integration, before a deferred reset (``"membrane"``);
* adaptive threshold: :math:`\\theta_t = \\theta + a'_t` with the adaptation state of
  :class:`Adaptation`;
* graded spikes: the layer emits :math:`S'_t = g\\,S_t` (snntorch ``graded_spikes_factor``); the
  reset follows :math:`S_t`;
* refractory period (:class:`Refractory`, norse ``LIFRefracCell``): after a spike the neuron is
  silent and its membrane held for :math:`\\lceil \\rho_{\\rm reset} \\rceil` steps;
* quantized state (:class:`StateQuantization`, snntorch ``state_quant``): the membrane (and the
  synaptic current) is rounded to the nearest of a set of levels after each update, before the
  spike decision, as a digital chip holds it;
* a catch-up reset (``reset_catch_up``, snntorch ``reset_delay=False``): with a deferred reset
  :math:`R_t`, the layer also resets right after its spike decision, by the spike net of the
  deferred reset already applied: :math:`v_t = u_t - (S_t - R_t)\\,\\theta` (subtract) or
  :math:`u_t - (S_t - R_t)\\,u_t` (zero, :math:`v_{\\rm reset} = 0`). Each spike is then reset in
  the step it is emitted; :math:`R_t` is non-zero only where the membrane left after a reset is
  still above the threshold, and the spike decision at that step sees the membrane after
  :math:`R_t` (snntorch's float order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Union

import torch

from ..errors import ShapeError, SpecError

Scalar = Union[float, torch.Tensor]
Reset = Literal["subtract", "zero", "none"]
ResetTiming = Literal["immediate", "deferred-pre", "deferred-post"]
CurrentTiming = Literal["same-step", "previous-step"]

__all__ = ["Surrogate", "Recurrent", "Adaptation", "Refractory", "StateQuantization", "NeuronParameter", "Neuron",
           "NEURON_PARAMETER_FIELDS", "resolve_neuron", "Scalar", "Reset", "ResetTiming", "CurrentTiming"]

#: the neuron fields that can name a trainable tensor of the user's model (see :class:`NeuronParameter`)
NEURON_PARAMETER_FIELDS: tuple[str, ...] = ("beta", "alpha", "threshold", "spike_amplitude")


@dataclass(frozen=True)
class Surrogate:
    """Surrogate derivative :math:`\\partial S/\\partial v` used by the *software* pass only.

    ``name``: ``"atan"`` (snntorch default, :math:`\\frac{a/2}{1 + (\\pi a x / 2)^2}`),
    ``"superspike"`` (:math:`1/(a|x| + 1)^2`, Zenke & Ganguli; BrainScaleS-2 uses a=50),
    ``"fast-sigmoid"`` (:math:`1/(a|x| + 1)^2`, same as superspike, snntorch's naming),
    ``"sigmoid"`` (:math:`a\\,\\sigma(ax)(1-\\sigma(ax))`), ``"exponential"``
    (:math:`s\\,e^{-|x|/w}` with sinabs' SingleExponential w = a, s = scale),
    ``"heaviside"`` (straight-through where :math:`S=1`), ``"triangular"``
    (snntorch's ``triangular``, exactly as that library defines it: :math:`+a` for :math:`x < 0`,
    :math:`-a` for :math:`x \\ge 0`; ``slope`` = its ``threshold`` argument),
    ``"straight-through"`` (:math:`\\partial S/\\partial x = 1`, snntorch's
    ``straight_through_estimator``), ``"box"`` (:math:`s\\,[x \\ge -a]`: rockpool's ``StepPWL``,
    :math:`\\partial S/\\partial v = [v \\ge \\theta - w]/\\theta` with ``slope`` = its
    ``learning_window`` w and ``scale`` = 1/θ).
    ``x`` is :math:`v - \\theta` in the model's own membrane units.
    """

    name: str = "atan"
    slope: float = 2.0
    scale: float = 1.0

    NAMES = ("atan", "superspike", "fast-sigmoid", "sigmoid", "exponential", "heaviside", "triangular",
             "straight-through", "box")

    def __post_init__(self) -> None:
        if self.name not in self.NAMES:
            raise SpecError(f"unknown surrogate {self.name!r}; known: {', '.join(self.NAMES)}")
        for f in ("slope", "scale"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SpecError(f"surrogate {self.name!r}: {f} must be a positive finite number, got {v!r}")



@dataclass(frozen=True)
class Recurrent:
    """Recurrent synapses of one neuron layer (a field of :class:`Neuron`).

    At step ``t`` the layer receives :math:`r_t = W S'_{t-1} + b` (``mode="dense"``, ``W`` is
    ``[n, n]``, torch's ``F.linear``) or :math:`r_t = w \\odot S'_{t-1}` (``mode="one-to-one"``,
    ``w`` is ``[n]``), from its own output spikes of the previous step (:math:`S'_{-1} = 0`).
    ``into`` says where :math:`r_t` is added (float order matters for spike-exactness):

    * ``"input"``: :math:`x_t + r_t`, before anything else (sinabs' recurrent layers);
    * ``"current"``: to the synaptic current after its update,
      :math:`i_t = (\\alpha i_{t-1} + x_t) + r_t` (snntorch ``RSynaptic``, norse
      ``LIFRecurrentCell``); equals ``"input"`` for a layer without synaptic current;
    * ``"membrane"``: to the membrane after decay and integration,
      :math:`u_t = (\\beta v_{t-1} + x_t) + r_t` (snntorch ``RLeaky``);
    * ``"current-before-decay"`` (``synaptic_update="add-then-decay"`` only): to the sum the
      synaptic current decays, :math:`i_t = \\alpha\\,((i_{t-1} + x_t) + r_t)` (rockpool's
      ``LIFTorch(has_rec=True)``; Xylo's order).

    ``weight_layout="in-out"`` (dense only): the model holds :math:`A = W^\\top` (``[from, to]``,
    rockpool's ``w_rec``) and the software pass computes ``F.linear(S, A.T)`` on that view;
    backends receive ``W`` (``[to, from]``) and an ``"out-in"`` layer.

    Only layers with 1-D features ``(n,)`` can be recurrent.

    ``autapses=False`` (dense only; norse's recurrent cells' default) excludes self-connections:
    the diagonal of ``W`` is held at zero (masked in the forward pass, so it gets no gradient
    and no chip runs it, and zeroed when trained values are written back into the model).

    ``initial`` is what the layer receives at step 0: ``"bias"`` (the synapses applied to
    :math:`S'_{-1} = 0`, i.e. :math:`r_0 = b`; snntorch) or ``"zero"`` (nothing: sinabs' recurrent
    layers start from a zero recurrent input, so their bias first acts at step 1)."""

    weight: str
    bias: str | None
    features: int
    mode: Literal["dense", "one-to-one"] = "dense"
    into: Literal["input", "current", "membrane", "current-before-decay"] = "input"
    autapses: bool = True
    initial: Literal["bias", "zero"] = "bias"
    weight_layout: Literal["out-in", "in-out"] = "out-in"

    kind = "recurrent"

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "one-to-one"):
            raise SpecError(f"unknown recurrent mode {self.mode!r}; use 'dense' or 'one-to-one'")
        if self.into not in ("input", "current", "membrane", "current-before-decay"):
            raise SpecError(f"unknown recurrent target {self.into!r}; use 'input', 'current', 'membrane' or "
                            "'current-before-decay'")
        if self.weight_layout not in ("out-in", "in-out") or (self.weight_layout == "in-out" and self.mode != "dense"):
            raise SpecError(f"recurrent weight_layout {self.weight_layout!r}: use 'out-in', or 'in-out' for dense "
                            "synapses")
        if not self.autapses and self.mode != "dense":
            raise SpecError("autapses=False applies to dense recurrent synapses only")
        if self.initial not in ("bias", "zero"):
            raise SpecError(f"unknown recurrent initial input {self.initial!r}; use 'bias' or 'zero'")

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the weight and bias tensors."""
        w = (self.features, self.features) if self.mode == "dense" else (self.features,)
        return w, (self.features,)


@dataclass(frozen=True)
class Adaptation:
    """Adaptive threshold (ALIF / LSNN): the layer fires when :math:`v_t \\ge \\theta + a'_t`
    (or ``>`` per ``fires_at_threshold``), with the adaptation state ``a`` (:math:`a_{-1} = 0`):

    .. math::

        a'_t &= \\rho\\, a_{t-1}            &&\\text{(form="decay")}\\\\
        a'_t &= a_{t-1} + k\\,(0 - a_{t-1})  &&\\text{(form="euler", } k = 1 - \\rho\\text{)}\\\\
        a_t  &= a'_t + j\\, S_t

    ``rho`` (scalar or per neuron) is the decay per step and ``jump`` :math:`j` the threshold
    increase per spike. Needs ``reset_timing="immediate"``; a subtract reset removes the
    threshold in force, :math:`\\theta + a'_t`.

    ``form="euler-threshold"`` (norse's ``LSNN`` float order): the state is the whole threshold
    :math:`b` (:math:`b_{-1} = \\theta`), :math:`b'_t = b_{t-1} + k\\,(\\theta - b_{t-1})`, the
    layer fires when :math:`v_t > b'_t` and :math:`b_t = b'_t + j\\,S_t` (mathematically the
    same as ``"euler"``, :math:`b = \\theta + a`; the floats differ). ``rate`` is :math:`k`
    itself (``dt * tau_adapt_inv`` as norse computes it; ``None``: :math:`1 - \\rho`), used by
    both Euler forms; ``rho`` must then equal :math:`1 - k`.

    ``form="lowpass"`` (sinabs ``ALIF``): the state is a low-pass of the spikes,
    :math:`b_t = \\rho\\, b_{t-1} + (1 - \\rho)\\, S_t` (:math:`b_{-1} = 0`), and the threshold in
    force is :math:`\\theta_t = \\theta + j\\, b_{t-1}` (``jump`` :math:`j` = sinabs'
    ``adapt_scale``; each spike raises the threshold by :math:`j(1-\\rho)`).

    ``spike_gradient`` (software pass only): ``"full"`` differentiates the spike decision with
    respect to :math:`v_t - \\theta_t` (the adaptive threshold gets a gradient too; norse);
    ``"membrane-relative"`` lets it flow to the membrane only and scales the surrogate with the
    threshold in force, :math:`\\frac{\\theta}{\\theta_t}\\,\\sigma'\\big((v_t-\\theta_t)\\,\\theta/\\theta_t\\big)`
    (sinabs' spike functions: no gradient to the threshold, a surrogate width proportional to
    it). Forward values are the same."""

    rho: Scalar
    jump: Scalar
    form: Literal["decay", "euler", "euler-threshold", "lowpass"] = "decay"
    rate: Scalar | None = None
    spike_gradient: Literal["full", "membrane-relative"] = "full"

    kind = "adaptation"

    def validate(self, where: str) -> None:
        if self.form not in ("decay", "euler", "euler-threshold", "lowpass"):
            raise SpecError(f"neuron '{where}': unknown adaptation form {self.form!r}")
        if self.spike_gradient not in ("full", "membrane-relative"):
            raise SpecError(f"neuron '{where}': unknown adaptation spike_gradient {self.spike_gradient!r}")
        if self.rate is not None:
            if self.form == "decay":
                raise SpecError(f"neuron '{where}': adaptation rate needs form 'euler' or 'euler-threshold'")
            k = torch.as_tensor(self.rate, dtype=torch.float64)
            if not torch.isfinite(k).all() or not torch.allclose(torch.as_tensor(self.rho, dtype=torch.float64),
                                                                 1 - k, rtol=1e-5, atol=1e-7):
                raise SpecError(f"neuron '{where}': adaptation rho must equal 1 - rate")
        for f in ("rho", "jump"):
            t = torch.as_tensor(getattr(self, f), dtype=torch.float64)
            if not torch.isfinite(t).all():
                raise SpecError(f"neuron '{where}': adaptation {f} is not finite")
        if bool(((torch.as_tensor(self.rho) < 0) | (torch.as_tensor(self.rho) > 1)).any()):
            raise SpecError(f"neuron '{where}': adaptation rho must be in [0, 1]")


@dataclass(frozen=True)
class Refractory:
    """Absolute refractory period of a neuron layer (a field of :class:`Neuron`; norse's
    ``LIFRefracCell`` / ``LIFRefracRecurrentCell`` / ``LIFRefracRecurrent``,
    ``compute_refractory_update``).

    Each neuron has a refractory counter :math:`\\rho` (:math:`\\rho_{-1} = 0`). With
    :math:`v^*_t` and :math:`S^*_t` the membrane (after this step's reset) and the spike of the
    layer's ordinary dynamics, and :math:`v_{t-1}` the membrane the step started from:

    .. math::

        m_t  &= H(\\rho_{t-1})  \\qquad (\\rho_{t-1} > 0)\\\\
        v_t  &= (1 - m_t)\\, v^*_t + m_t\\, v_{t-1}\\\\
        S_t  &= (1 - m_t)\\, S^*_t\\\\
        \\rho_t &= (1 - S_t)\\,\\mathrm{relu}(\\rho_{t-1} - m_t) + S_t\\, \\rho_{\\rm reset}

    in this float order (norse's). After a spike the neuron is silent and its membrane frozen
    for :math:`\\lceil \\rho_{\\rm reset} \\rceil` steps (the counter falls by one per step and
    is clamped at 0); the synaptic current keeps integrating. ``period`` is
    :math:`\\rho_{\\rm reset}` in steps (scalar or per neuron; 0: no refractory period).

    Software pass: :math:`m_t` takes the layer's surrogate gradient at :math:`\\rho_{t-1}` (norse
    thresholds the counter with the spike function), so gradients flow through the counter as in
    norse's BPTT. Needs ``reset_timing="immediate"``, one spike per step, a spiking layer and no
    adaptive threshold."""

    period: Scalar

    kind = "refractory"

    def validate(self, where: str) -> None:
        t = torch.as_tensor(self.period, dtype=torch.float64)
        if not torch.isfinite(t).all() or bool((t < 0).any()):
            raise SpecError(f"neuron '{where}': the refractory period must be finite and >= 0 (steps)")


@dataclass(frozen=True)
class StateQuantization:
    """A neuron layer's state held on a set of levels (a field of :class:`Neuron`; snntorch's
    ``state_quant``, e.g. ``snntorch.functional.quant.state_quant(num_bits=8, uniform=True)``):
    what a digital chip with a few bits of membrane holds.

    After each update of a state named in ``states`` (``"membrane"``: after decay, integration,
    recurrence and a deferred reset, before the spike decision; ``"current"``: the synaptic
    current after its update), the value is replaced by the nearest level,

    .. math:: q(x) = \\ell_{k^*}, \\qquad k^* = \\min \\operatorname{arg\\,min}_k |\\ell_k - x|

    (the first of equidistant levels; values outside the range go to the extreme level).
    ``levels`` is a 1-D tensor (uniform or not). Software pass: straight-through,
    :math:`\\partial q/\\partial x = 1` (snntorch's ``StateQuant``). A catch-up reset
    (``Neuron.reset_catch_up``) acts after the quantization and is not quantized again."""

    levels: torch.Tensor
    states: tuple[str, ...] = ("membrane",)

    kind = "state-quantization"

    def validate(self, where: str) -> None:
        lv = torch.as_tensor(self.levels)
        if lv.dim() != 1 or lv.numel() < 2 or not lv.is_floating_point() or not torch.isfinite(lv).all():
            raise SpecError(f"neuron '{where}': quantization levels must be a 1-D float tensor of at least 2 finite "
                            "values")
        bad = [s for s in self.states if s not in ("membrane", "current")]
        if bad or not self.states:
            raise SpecError(f"neuron '{where}': quantized states must be 'membrane' and/or 'current', got "
                            f"{self.states!r}")


@dataclass(frozen=True)
class NeuronParameter:
    """A neuron field held as a **trainable tensor** of the user's model (a field of
    :class:`Neuron`, ``Neuron.trained``), named like a synaptic layer names its weight.

    ``field`` is one of :data:`NEURON_PARAMETER_FIELDS` (``"beta"``, ``"alpha"``,
    ``"threshold"``, ``"spike_amplitude"``), ``name`` the parameter's name in the wrapped model
    (e.g. ``"1.beta"``) and ``shape`` its shape (``()`` one value for the layer, otherwise
    broadcastable to the layer's features: per neuron). At every pass the layer uses

    .. math:: p = \\mathrm{clamp}(P, \\ell, h) \\quad (\\text{``clamp`` } = (\\ell, h)), \\qquad p = P \\quad (\\text{``clamp`` } = \\text{None})

    with :math:`P` the model's tensor, computed with torch's ``clamp`` as the library does
    (snntorch: ``beta.clamp(0, 1) * mem``), so the software pass differentiates through
    :math:`P` with the library's gradient (``clamp`` passes the gradient for
    :math:`\\ell \\le P \\le h`). The value of the :class:`Neuron` field itself is the value when
    the model was wrapped (what describes the layer); :func:`resolve_neuron` substitutes the
    current one."""

    field: str
    name: str
    shape: tuple[int, ...]
    clamp: tuple[float, float] | None = None

    kind = "neuron-parameter"

    def __post_init__(self) -> None:
        if self.field not in NEURON_PARAMETER_FIELDS:
            raise SpecError(f"neuron parameter '{self.name}': unknown field {self.field!r}; trainable neuron fields: "
                            f"{', '.join(NEURON_PARAMETER_FIELDS)}")
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"neuron parameter for {self.field!r} needs the name of a tensor of the model")

    @property
    def per_neuron(self) -> bool:
        """Whether the tensor holds more than one value (per-neuron granularity)."""
        return math.prod(self.shape) > 1

    def value(self, t: torch.Tensor) -> torch.Tensor:
        """The value the layer uses: ``t.clamp(*clamp)`` or ``t`` (keeps autograd)."""
        return t if self.clamp is None else t.clamp(self.clamp[0], self.clamp[1])


def resolve_neuron(n: "Neuron", params, *, n_sets: int | None = None, detach: bool = False) -> "Neuron":
    """``n`` with every field named in ``n.trained`` replaced by the current value of its tensor
    in ``params`` (:meth:`NeuronParameter.value`, autograd kept unless ``detach``); ``n`` itself
    when nothing is trained. With ``detach`` the result holds plain values and no ``trained``
    entries (what a chip receives).

    With parameter sets (``n_sets``) the tensors carry a leading set dimension; the neuron layer
    holds one value per layer or neuron for all sets, so every set must hold the same neuron
    parameters (set 0 is used), else :class:`SpecError`."""
    if not n.trained:
        return n
    changes: dict = {}
    for p in n.trained:
        t = params[p.name]
        if n_sets is not None:
            if not bool((t == t[:1]).all()):
                raise SpecError(f"neuron '{n.name}': the parameter sets hold different values of the neuron parameter "
                                f"'{p.name}' ({p.field}); a neuron layer runs one value for all sets (propose neuron "
                                "parameters one set at a time)")
            t = t[0]
        v = p.value(t)
        changes[p.field] = v.detach().clone() if detach else v
    if detach:
        changes["trained"] = ()
    return replace(n, **changes)


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
    #: recurrent synapses (``None``: none)
    recurrent: Recurrent | None = None
    #: adaptive threshold (``None``: fixed threshold)
    adaptation: Adaptation | None = None
    #: spike amplitude :math:`g` (snntorch ``graded_spikes_factor``): the layer emits g * S
    spike_amplitude: Scalar = 1.0
    #: an immediate reset (and an adaptive threshold's jump) takes the spike without its
    #: surrogate gradient (norse's recurrent ``lif_step`` / ``lsnn_step`` detach it); forward
    #: values are unchanged
    detach_reset: bool = False
    #: float form of the synaptic current: ``"decay-then-add"`` :math:`i_t = \\alpha i_{t-1} + x_t`
    #: (snntorch, norse), ``"add-then-decay"`` :math:`i_t = \\alpha (i_{t-1} + x_t)` (sinabs
    #: ``tau_syn``: the input is decayed in its own step)
    synaptic_update: Literal["decay-then-add", "add-then-decay"] = "decay-then-add"
    #: the input is multiplied by these factors one after the other, :math:`((x f_1) f_2) \cdots`,
    #: instead of by ``input_gain`` (snntorch ``Lapicque``'s float order,
    #: :math:`x R \cdot \frac{1}{RC} \cdot \Delta t`); ``input_gain`` must equal their product
    #: (backends that ignore the factors see the same dynamics up to rounding). ``None``: ``input_gain``
    input_factors: tuple[Scalar, ...] | None = None
    #: the spike is taken from the floored membrane, :math:`S_t = H(\mathrm{relu}(u_t - v_{\min}) + v_{\min} - \theta)`,
    #: instead of from :math:`u_t` (snntorch ``LeakyParallel``: ``nn.RNN``'s relu, then the threshold). Needs
    #: ``v_min`` below every threshold, so forward values are unchanged; the surrogate gradient is then zero where
    #: :math:`u_t < v_{\min}` (software pass only, as ``detach_reset``)
    fire_on_floored: bool = False
    #: absolute refractory period (``None``: none)
    refractory: Refractory | None = None
    #: membrane (and current) held on a set of levels (``None``: full float precision)
    quantization: StateQuantization | None = None
    #: with a deferred reset, also reset right after the spike decision by :math:`S_t - R_t`
    #: (snntorch ``reset_delay=False``; see the module doc)
    reset_catch_up: bool = False
    #: neuron fields held as trainable tensors of the model (:class:`NeuronParameter`); ``()``: all fixed
    trained: tuple[NeuronParameter, ...] = ()

    kind = "neuron"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.recurrent is not None and tuple(in_shape) != (self.recurrent.features,):
            raise ShapeError(f"neuron '{self.name}': recurrent synapses over {self.recurrent.features} neurons, but the "
                             f"layer has features {in_shape} (only 1-D layers can be recurrent)")
        return in_shape

    def with_(self, **changes) -> "Neuron":
        """A copy with some fields replaced (backends use it for per-chip parameters).

        Replacing ``beta`` or ``input_gain`` (``alpha``) without new rates drops ``mem_rate`` and
        ``syn_rate`` (``syn_rate``): the copy then follows the changed decay, not the old Euler rates."""
        if ("beta" in changes or "input_gain" in changes) and "mem_rate" not in changes:
            changes.setdefault("mem_rate", None)
            changes.setdefault("syn_rate", None)
        if "input_gain" in changes and "input_factors" not in changes:
            changes["input_factors"] = None
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
        if self.synaptic_update not in ("decay-then-add", "add-then-decay"):
            raise SpecError(f"neuron '{self.name}': unknown synaptic_update {self.synaptic_update!r}")
        if self.synaptic_update == "add-then-decay" and self.syn_rate is not None:
            raise SpecError(f"neuron '{self.name}': synaptic_update='add-then-decay' has no Euler-rate form (syn_rate)")
        if self.output not in ("spikes", "membrane"):
            raise SpecError(f"neuron '{self.name}': unknown output {self.output!r}")
        if self.max_spikes_per_step is not None and self.max_spikes_per_step < 1:
            raise SpecError(f"neuron '{self.name}': max_spikes_per_step must be >= 1 or None (unbounded)")
        if self.output == "membrane" and (self.recurrent is not None or self.adaptation is not None):
            raise SpecError(f"neuron '{self.name}': a non-spiking readout layer cannot be recurrent or adaptive")
        if self.recurrent is not None and self.recurrent.into == "current-before-decay" and (
                self.alpha is None or self.synaptic_update != "add-then-decay"):
            raise SpecError(f"neuron '{self.name}': recurrent into='current-before-decay' needs a synaptic current "
                            "with synaptic_update='add-then-decay'")
        if self.adaptation is not None:
            self.adaptation.validate(self.name)
            if self.reset_timing != "immediate":
                raise SpecError(f"neuron '{self.name}': an adaptive threshold needs reset_timing='immediate'")
            if self.adaptation.spike_gradient == "membrane-relative" and self.max_spikes_per_step != 1:
                raise SpecError(f"neuron '{self.name}': spike_gradient='membrane-relative' needs max_spikes_per_step=1")
        if self.refractory is not None:
            self.refractory.validate(self.name)
            if (self.reset_timing != "immediate" or self.max_spikes_per_step != 1 or self.output != "spikes"
                    or self.adaptation is not None):
                raise SpecError(f"neuron '{self.name}': a refractory period needs a spiking layer with "
                                "reset_timing='immediate', one spike per step and no adaptive threshold")
        if self.quantization is not None:
            self.quantization.validate(self.name)
        if self.reset_catch_up and (self.reset_timing == "immediate" or self.max_spikes_per_step != 1
                                    or self.reset == "none" or (self.reset == "zero" and self.v_reset != 0.0)):
            raise SpecError(f"neuron '{self.name}': reset_catch_up needs a deferred subtract or zero (to 0) reset "
                            "and one spike per step")
        if self.fire_on_floored and (self.v_min is None or self.output != "spikes"
                                     or bool((torch.as_tensor(self.threshold) <= self.v_min).any())):
            raise SpecError(f"neuron '{self.name}': fire_on_floored needs a spiking layer with v_min below every "
                            "threshold")
        amp = torch.as_tensor(self.spike_amplitude, dtype=torch.float64)
        if not torch.isfinite(amp).all():
            raise SpecError(f"neuron '{self.name}': spike_amplitude is not finite")
        if self.input_factors is not None:
            if self.mem_rate is not None:
                raise SpecError(f"neuron '{self.name}': input_factors and mem_rate exclude each other")
            prod = torch.ones((), dtype=torch.float64)
            for f in self.input_factors:
                t = torch.as_tensor(f, dtype=torch.float64)
                if not torch.isfinite(t).all():
                    raise SpecError(f"neuron '{self.name}': input_factors are not finite")
                prod = prod * t
            if not torch.allclose(torch.as_tensor(self.input_gain, dtype=torch.float64), prod, rtol=1e-5, atol=1e-7):
                raise SpecError(f"neuron '{self.name}': input_gain must equal the product of input_factors")
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
        seen: set[str] = set()
        for p in self.trained:
            if not isinstance(p, NeuronParameter):
                raise SpecError(f"neuron '{self.name}': trained entries must be NeuronParameter, got {type(p).__name__}")
            if p.field in seen:
                raise SpecError(f"neuron '{self.name}': {p.field} is named twice in trained")
            seen.add(p.field)
            if p.field == "alpha" and self.alpha is None:
                raise SpecError(f"neuron '{self.name}': a trained alpha ('{p.name}') needs a synaptic current")
            if p.field in ("beta", "alpha") and (self.mem_rate is not None or self.syn_rate is not None):
                raise SpecError(f"neuron '{self.name}': a trained {p.field} ('{p.name}') cannot be combined with the "
                                "Euler rates (mem_rate / syn_rate), which restate it as constants")
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
