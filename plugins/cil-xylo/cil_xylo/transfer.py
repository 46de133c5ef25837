r"""Weight transfer: cil's network description onto a Xylo core's integer registers.

The network Xylo runs is ``Dense -> Neuron (hidden) -> Dense -> Neuron (output)``, both neuron
layers with a synaptic current; the hidden layer may be recurrent and both may have biases.
Every limit is read from the chip's declaration (:class:`~cil_xylo.chip.XyloChip`).

**Units.** Per population (hidden, output) with software weights :math:`W` (input gain :math:`g`
folded in: :math:`\tilde W = gW`), threshold :math:`\theta`, decays :math:`\alpha, \beta`, the chip
runs (see :mod:`cil_xylo.engine`) :math:`I_t = \alpha(I_{t-1} + W_c x_t)`,
:math:`V_t = \beta V_{t-1} + I_t + b_c`. snntorch's ``Synaptic`` (``synaptic_update=
"decay-then-add"``) has :math:`i_t = \alpha i_{t-1} + \tilde W x_t`, so with :math:`W_c = s\tilde W`
the chip's current is :math:`I = s\alpha\, i` and its membrane :math:`V = \kappa v` with
:math:`\kappa = s\alpha`; the integer threshold is therefore :math:`\theta_c = s\alpha\theta`.
For ``"add-then-decay"`` (sinabs ``tau_syn``; the chip's own order) :math:`\kappa = s`,
:math:`\theta_c = s\theta`. The scale :math:`s` and the per-matrix shifts come from
:func:`cil_core.hardware.domains.quantize_population` on :math:`\tilde W` and
:math:`\theta_{eff} = \kappa\theta/s`.

**Biases.** The chip adds its bias to the membrane each step; the software adds :math:`b` to the
current, which reaches the membrane as :math:`\tilde b/(1-\alpha)` per step in steady state
(:math:`\alpha\tilde b/(1-\alpha)` for add-then-decay, :math:`\times\alpha` in chip units either
way): :math:`b_c = \mathrm{round}(s\alpha\tilde b/(1-\alpha))`. The first steps differ (the software
current builds up, the chip's bias acts in full from step 0). A recurrent bias is folded in.

**Decays.** :math:`\beta = 1 - 2^{-k_m}`, :math:`\alpha = 1 - 2^{-k_s}`; any other value is refused
naming the nearest values (``round_decays=True``: the nearest, with a warning).

**What the chip holds, in software units** (``Deployment.params``): :math:`q\,2^k/(s g)` per
matrix, the bias :math:`b_c (1-\alpha)/(s\alpha g)`; the realised :math:`\beta, \alpha, \theta` per
neuron layer in ``Deployment.chip["neurons"]`` and in ``Deployment.spec`` (its neuron layers
carry them).

**What stays different** from snntorch's ``Synaptic`` even with every parameter representable:
the chip resets at once by subtraction and may emit up to 31 spikes per hidden neuron and step
(snntorch: one spike, the reset one step later, :math:`v_t = \beta v_{t-1} + i_t - S_{t-1}\theta`);
it fires at :math:`V \ge \theta` (snntorch: :math:`>`); its decays round towards zero with at least
one unit (``v -= max(|v| >> k, 1)``); it saturates at 16 bits; the output layer is one step late
(the backend re-aligns it, see :class:`~cil_xylo.backend.XyloBackend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from cil_core.errors import BackendCapacityError
from cil_core.hardware.domains import quantize_population
from cil_core.network.description import Dense, Flatten, NetworkSpec, Neuron

from .chip import XyloChip
from .engine import XyloNetwork

__all__ = ["XyloLayout", "layout", "to_chip", "Transferred"]


@dataclass(frozen=True)
class XyloLayout:
    """Which layers of a network the chip's parts hold."""

    dense_in: Dense
    hidden: Neuron
    hidden_index: int
    dense_out: Dense
    output: Neuron
    output_index: int

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.dense_in.in_features, self.dense_in.out_features, self.dense_out.out_features


def _title(layer: object) -> str:
    if isinstance(layer, Neuron):
        return "Neuron"
    return type(layer).__name__


def layout(spec: NetworkSpec, chip: XyloChip) -> XyloLayout:
    """The chip's parts for ``spec``, or a :class:`BackendCapacityError` naming the limit and the
    fix: the chain, sizes, and each neuron layer's semantics the chip cannot run."""
    layers = [l for l in spec.layers if not isinstance(l, Flatten)]
    if len(spec.input_shape) != 1 and not isinstance(spec.layers[0], Flatten):
        raise BackendCapacityError(f"{chip.name}: the input has shape {spec.input_shape}; the chip takes 1-D input "
                                   "channels: flatten the input")
    chain = " -> ".join(_title(l) for l in layers)
    # sizes, a synaptic current in every neuron, one hidden population: the chip's declaration
    chip.requirements.check(spec)
    if [type(l) for l in layers] != [Dense, Neuron, Dense, Neuron]:
        raise BackendCapacityError(f"{chip.name}: the network is {chain}; the chip runs exactly {chip.chain}: build "
                                   "the model as Linear, spiking layer, Linear, spiking layer")
    dense_in, hidden, dense_out, output = layers  # type: ignore[misc]
    hidden_index = next(i for i, l in enumerate(spec.layers) if l is hidden)  # by identity: layers hold tensors
    lay = XyloLayout(dense_in, hidden, hidden_index, dense_out, output, len(spec.layers) - 1)  # type: ignore[arg-type]
    for neuron, role in ((hidden, "hidden"), (output, "output")):
        _check_neuron(neuron, role, chip)
    return lay


def _check_neuron(n: Neuron, role: str, chip: XyloChip) -> None:
    where = f"the {role} layer" + (f" '{n.name}'" if n.name else "")

    def refuse(what: str, fix: str) -> None:
        raise BackendCapacityError(f"{chip.name}: {where} {what}: {fix}")

    if n.output != "spikes":
        refuse("is a membrane readout", "the chip's output neurons spike (read out spike counts, readout='rate')")
    if n.reset != "subtract":
        refuse(f"resets by '{n.reset}'; the chip subtracts the threshold", "use reset_mechanism='subtract'")
    if n.current_timing != "same-step":
        refuse("feeds the previous step's current to the membrane", "use a neuron whose current acts in its own step")
    if float(n.v_leak) != 0.0 or (n.v_init not in (None, 0.0)) or n.v_min is not None:
        refuse("has a resting potential, a start value or a lower bound", "the chip's membrane rests at 0, starts at "
               "0 and has no lower bound but its 16-bit range")
    if n.adaptation is not None:
        refuse("has an adaptive threshold", "the chip's threshold is fixed")
    if not bool((torch.as_tensor(n.spike_amplitude) == 1).all()):
        refuse("emits graded spikes", "use graded_spikes_factor=1")
    if n.recurrent is not None:
        if role == "output" or not chip.has_recurrent:
            refuse("is recurrent; only the hidden population has recurrent synapses", "drop the output recurrence")
        if n.recurrent.into == "membrane":
            refuse("adds its recurrent input to the membrane; the chip adds it to the synaptic current",
                   "use snn.RSynaptic (recurrence into the current)")


def _vec(v: object, n: int) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64).expand(n).clone() if torch.as_tensor(v).numel() == 1 \
        else torch.as_tensor(v, dtype=torch.float64).reshape(n).clone()


@dataclass
class Transferred:
    """The result of :func:`to_chip`: the integer network, what it realises in software units
    (``params`` keyed like the spec, ``neurons`` per neuron layer index), the realised spec, and
    per population the membrane factor :math:`\\kappa` (chip units per software unit, ``[S, n]``)."""

    network: XyloNetwork
    params: dict[str, torch.Tensor]
    neurons: dict[int, dict[str, torch.Tensor]]
    spec: NetworkSpec
    kappa_hidden: np.ndarray
    kappa_output: np.ndarray


def _population(chip: XyloChip, neuron: Neuron, n: int, mats: dict[str, torch.Tensor],
                bias: torch.Tensor | None, S: int, where: str, round_decays: bool, target: int) -> dict:
    """Quantize one population: ``mats`` are the matrices driving it, ``[S, n_post, n_pre]``."""
    mode = "nearest" if round_decays else "refuse"
    km, beta = chip.beta.realise(_vec(neuron.beta, n), where=where, chip=chip.name, mode=mode)
    ks, alpha = chip.alpha.realise(_vec(neuron.alpha, n), where=where, chip=chip.name, mode=mode)
    g = _vec(neuron.input_gain, n)
    thr = _vec(neuron.threshold, n)
    dta = neuron.synaptic_update == "decay-then-add"
    a_fac = alpha if dta else torch.ones_like(alpha)  # kappa = s * a_fac
    scaled = {k: m.double() * g.reshape(1, n, 1) for k, m in mats.items()}
    pop = quantize_population(scaled, thr * a_fac, weight_bits=chip.weight_bits, shifts=chip.weight_shift,
                              thresholds=chip.threshold, target=target, n_sets=S, where=where, chip=chip.name)
    s = pop.scale.reshape(S, 1)  # [S, 1]
    realised = {k: pop.realised(k) / g.reshape(1, n, 1) for k in mats}
    thr_real = (pop.threshold / (s * a_fac.reshape(1, n)))  # [S, n]
    if bias is not None:
        btil = bias.double() * g.reshape(1, n)
        bc = chip.bias.clip(torch.round(s * alpha * btil / (1 - alpha)))
        b_real = bc * (1 - alpha) / (s * alpha * g)
    else:
        bc, b_real = torch.zeros(S, n, dtype=torch.float64), None
    return {"pop": pop, "realised": realised, "bias_code": bc, "bias_real": b_real, "beta": beta, "alpha": alpha,
            "km": km, "ks": ks, "threshold": thr_real, "kappa": (s * a_fac.reshape(1, n)).numpy()}


def to_chip(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None, chip: XyloChip, *,
            round_decays: bool = False, threshold_target: int = 2 ** 12) -> Transferred:
    """Map ``params`` (``n_sets`` leading sets, or none) of ``spec`` onto ``chip`` (see the module
    docstring). Raises :class:`BackendCapacityError` naming the limit."""
    lay = layout(spec, chip)
    S = 1 if n_sets is None else n_sets
    lead = (lambda t: t.detach().unsqueeze(0)) if n_sets is None else (lambda t: t.detach())  # noqa: E731
    nin, nh, no = lay.sizes
    h, o = lay.hidden, lay.output
    # ---- hidden population: input synapses (+ recurrent synapses), bias
    mats = {"in": lead(params[lay.dense_in.weight]).double()}  # [S, nh, nin]
    rec = h.recurrent
    if rec is not None:
        w = lead(params[rec.weight]).double()
        if rec.mode == "one-to-one":
            w = torch.diag_embed(w)
        if not rec.autapses:
            w = w * (1 - torch.eye(nh, dtype=w.dtype))
        mats["rec"] = w  # [S, post, pre]
    b_in = lead(params[lay.dense_in.bias]).double() if lay.dense_in.bias else None
    b_rec = lead(params[rec.bias]).double() if rec is not None and rec.bias else None
    b_h = None if b_in is None and b_rec is None else \
        (b_in if b_in is not None else 0) + (b_rec if b_rec is not None else 0)  # type: ignore[operator]
    ph = _population(chip, h, nh, mats, b_h, S, f"the hidden layer '{h.name or lay.dense_in.weight}'",
                     round_decays, threshold_target)
    # ---- output population
    b_o = lead(params[lay.dense_out.bias]).double() if lay.dense_out.bias else None
    po = _population(chip, o, no, {"out": lead(params[lay.dense_out.weight]).double()}, b_o, S,
                     f"the output layer '{o.name or lay.dense_out.weight}'", round_decays, threshold_target)

    def np8(t: torch.Tensor) -> np.ndarray:
        return t.numpy().astype(np.int8)

    popH, popO = ph["pop"], po["pop"]
    net = XyloNetwork(
        w_in=np8(popH.codes["in"].transpose(1, 2)), w_rec=np8(popH.codes["rec"].transpose(1, 2)) if rec else None,
        w_out=np8(popO.codes["out"].transpose(1, 2)),
        shift_in=popH.shifts["in"].numpy().reshape(S), shift_rec=(popH.shifts["rec"].numpy().reshape(S) if rec
                                                                  else np.zeros(S, np.int64)),
        shift_out=popO.shifts["out"].numpy().reshape(S),
        dash_mem=np.broadcast_to(ph["km"].numpy(), (S, nh)).copy(), dash_syn=np.broadcast_to(ph["ks"].numpy(), (S, nh)).copy(),
        threshold=popH.threshold.numpy().astype(np.int64).reshape(S, nh), bias=ph["bias_code"].numpy().astype(np.int64),
        dash_mem_out=np.broadcast_to(po["km"].numpy(), (S, no)).copy(),
        dash_syn_out=np.broadcast_to(po["ks"].numpy(), (S, no)).copy(),
        threshold_out=popO.threshold.numpy().astype(np.int64).reshape(S, no),
        bias_out=po["bias_code"].numpy().astype(np.int64))
    # ---- what the chip realises, in software units, shaped as the caller's tensors
    unlead = (lambda t: t[0]) if n_sets is None else (lambda t: t)  # noqa: E731
    out: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        out[name] = unlead(t).to(params[name].dtype)

    put(lay.dense_in.weight, ph["realised"]["in"])
    if rec is not None:
        w = ph["realised"]["rec"]
        put(rec.weight, torch.diagonal(w, dim1=-2, dim2=-1) if rec.mode == "one-to-one" else w)
        if rec.bias:
            put(rec.bias, b_rec)  # type: ignore[arg-type]  (the chip holds the sum; the split keeps b_rec)
    if lay.dense_in.bias:
        put(lay.dense_in.bias, ph["bias_real"] - (b_rec if b_rec is not None else 0))
    put(lay.dense_out.weight, po["realised"]["out"])
    if lay.dense_out.bias:
        put(lay.dense_out.bias, po["bias_real"])
    neurons = {}
    layers = list(spec.layers)
    for idx, p, neuron in ((lay.hidden_index, ph, h), (lay.output_index, po, o)):
        thr = p["threshold"]
        neurons[idx] = {"beta": p["beta"], "alpha": p["alpha"], "threshold": thr}
        beta = p["beta"]
        alpha = p["alpha"]
        new = {"beta": float(beta[0]) if bool((beta == beta[0]).all()) else beta.float(),
               "alpha": float(alpha[0]) if bool((alpha == alpha[0]).all()) else alpha.float()}
        if bool(torch.allclose(thr, thr.reshape(-1)[:1].expand_as(thr), rtol=1e-9, atol=0)):
            new["threshold"] = float(thr.reshape(-1)[0])
        elif S == 1:
            new["threshold"] = thr[0].float()
        if any(_differs(getattr(neuron, k), v) for k, v in new.items()):
            layers[idx] = neuron.with_(**new)
    changed = any(a is not b for a, b in zip(layers, spec.layers))  # by identity: layers hold tensors
    real_spec = spec if not changed else NetworkSpec(tuple(layers), spec.input_shape, spec.source,
                                                                     spec.synapse_calls)
    return Transferred(net, out, neurons, real_spec, ph["kappa"], po["kappa"])


def _differs(a: object, b: object) -> bool:
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if ta.shape != tb.shape:
        return True
    return not torch.allclose(ta, tb, rtol=1e-6, atol=0)
