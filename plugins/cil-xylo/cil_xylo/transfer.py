r"""Weight transfer: cil's network description onto a Xylo core's integer registers.

The network Xylo runs is ``Dense -> Neuron (hidden) -> Dense -> Neuron (output)``, both neuron
layers with a synaptic current; the hidden layer may be recurrent and both may have biases.
Xylo IMU runs a chain ``Dense -> Neuron (hidden 0) -> Dense -> Neuron (hidden 1) [-> ...] ->
Dense -> Neuron (output)``: the hidden layers are consecutive blocks ``[o_k, o_k + n_k)`` of one
hidden population, the input synapses drive block 0, ``Dense`` ``k -> k+1`` is the block
``[o_{k+1}.., o_k..]`` of the recurrent matrix (a layer's own recurrence its diagonal block), the
output synapses leave from the last block (rockpool's IMU mapper's layout). The whole hidden
population is quantized on one scale. Every limit is read from the chip's declaration
(:class:`~cil_xylo.chip.XyloChip`).

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
    """Which layers of a network the chip's parts hold: ``dense[0]`` the input synapses,
    ``dense[k]`` (``0 < k < L``) hidden layer ``k-1`` -> ``k`` (blocks of the recurrent matrix),
    ``dense[L]`` the output synapses; ``hidden`` the ``L`` hidden neuron layers (one population,
    in this order), ``output`` the output layer; ``*_index`` their positions in ``spec.layers``."""

    dense: tuple[Dense, ...]
    hidden: tuple[Neuron, ...]
    hidden_indices: tuple[int, ...]
    output: Neuron
    output_index: int

    @property
    def dense_in(self) -> Dense:
        return self.dense[0]

    @property
    def dense_out(self) -> Dense:
        return self.dense[-1]

    @property
    def neurons(self) -> list[tuple[int, Neuron]]:
        """``(index in spec.layers, neuron)`` of every neuron layer, the output last."""
        return [*zip(self.hidden_indices, self.hidden), (self.output_index, self.output)]

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each hidden layer in the chip's hidden population."""
        out, o = [], 0
        for d in self.dense[:-1]:
            out.append((o, o + d.out_features))
            o += d.out_features
        return out

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Input channels, hidden neurons (all layers), output neurons."""
        return self.dense_in.in_features, self.blocks[-1][1], self.dense_out.out_features


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
    # sizes, a synaptic current in every neuron, the number of hidden layers: the chip's declaration
    chip.requirements.check(spec)
    if len(layers) < 4 or len(layers) % 2 or [type(l) for l in layers] != [Dense, Neuron] * (len(layers) // 2):
        raise BackendCapacityError(f"{chip.name}: the network is {chain}; the chip runs exactly {chip.chain}: build "
                                   "the model as Linear, spiking layer, Linear, spiking layer, ...")
    dense, neurons = tuple(layers[0::2]), layers[1::2]
    index = [next(i for i, l in enumerate(spec.layers) if l is n) for n in neurons]  # by identity: layers hold tensors
    lay = XyloLayout(dense, tuple(neurons[:-1]), tuple(index[:-1]), neurons[-1], index[-1])  # type: ignore[arg-type]
    for k, neuron in enumerate(lay.hidden):
        _check_neuron(neuron, "hidden", chip)
    _check_neuron(lay.output, "output", chip)
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
    (``params`` keyed like the spec, ``neurons`` per neuron layer index), the realised spec, per
    population the membrane factor :math:`\\kappa` (chip units per software unit, ``[S, n]``), and
    the hidden layers' ``(start, stop)`` blocks in the hidden population."""

    network: XyloNetwork
    params: dict[str, torch.Tensor]
    neurons: dict[int, dict[str, torch.Tensor]]
    spec: NetworkSpec
    kappa_hidden: np.ndarray
    kappa_output: np.ndarray
    blocks: list[tuple[int, int]]


def _population(chip: XyloChip, layers: list[tuple[Neuron, int, str]], mats: dict[str, torch.Tensor],
                bias: torch.Tensor | None, S: int, round_decays: bool, target: int) -> dict:
    """Quantize one population made of the neuron layers ``layers`` (``(neuron, size, where)``, in
    the population's order): ``mats`` are the matrices driving it, ``[S, n_post, n_pre]``."""
    mode = "nearest" if round_decays else "refuse"
    km, beta, ks, alpha, g, thr, a_fac = ([] for _ in range(7))
    for neuron, n, where in layers:
        k, b = chip.beta.realise(_vec(neuron.beta, n), where=where, chip=chip.name, mode=mode)
        km.append(k), beta.append(b)
        k, a = chip.alpha.realise(_vec(neuron.alpha, n), where=where, chip=chip.name, mode=mode)
        ks.append(k), alpha.append(a)
        g.append(_vec(neuron.input_gain, n))
        thr.append(_vec(neuron.threshold, n))
        # kappa = s * a_fac: decay-then-add currents are alpha times smaller than the chip's
        a_fac.append(a if neuron.synaptic_update == "decay-then-add" else torch.ones_like(a))
    km_, beta_, ks_, alpha_, g_, thr_, a_ = (torch.cat(v) for v in (km, beta, ks, alpha, g, thr, a_fac))
    n = int(g_.numel())
    scaled = {k: m.double() * g_.reshape(1, n, 1) for k, m in mats.items()}
    pop = quantize_population(scaled, thr_ * a_, weight_bits=chip.weight_bits, shifts=chip.weight_shift,
                              thresholds=chip.threshold, target=target, n_sets=S, where=layers[0][2], chip=chip.name)
    s = pop.scale.reshape(S, 1)  # [S, 1]
    realised = {k: pop.realised(k) / g_.reshape(1, n, 1) for k in mats}
    thr_real = (pop.threshold / (s * a_.reshape(1, n)))  # [S, n]
    if bias is not None:
        btil = bias.double() * g_.reshape(1, n)
        bc = chip.bias.clip(torch.round(s * alpha_ * btil / (1 - alpha_)))
        b_real = bc * (1 - alpha_) / (s * alpha_ * g_)
    else:
        bc, b_real = torch.zeros(S, n, dtype=torch.float64), None
    return {"pop": pop, "realised": realised, "bias_code": bc, "bias_real": b_real, "beta": beta_, "alpha": alpha_,
            "km": km_, "ks": ks_, "threshold": thr_real, "kappa": (s * a_.reshape(1, n)).numpy()}


def to_chip(spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None, chip: XyloChip, *,
            round_decays: bool = False, threshold_target: int = 2 ** 12) -> Transferred:
    """Map ``params`` (``n_sets`` leading sets, or none) of ``spec`` onto ``chip`` (see the module
    docstring). Raises :class:`BackendCapacityError` naming the limit."""
    lay = layout(spec, chip)
    S = 1 if n_sets is None else n_sets
    lead = (lambda t: t.detach().unsqueeze(0)) if n_sets is None else (lambda t: t.detach())  # noqa: E731
    nin, nh, no = lay.sizes
    blocks = lay.blocks
    L = len(lay.hidden)
    o = lay.output

    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(S, *shape, dtype=torch.float64)

    # ---- hidden population: input synapses into the first layer; the recurrent matrix holds each
    # layer's own recurrent synapses (diagonal blocks) and layer k -> k+1 (blocks below the diagonal)
    a0, z0 = blocks[0]
    w_in = zeros(nh, nin)
    w_in[:, a0:z0] = lead(params[lay.dense_in.weight]).double()
    mats = {"in": w_in}
    recs = [n.recurrent for n in lay.hidden]
    has_rec = L > 1 or any(r is not None for r in recs)
    b_h = zeros(nh) if any(d.bias for d in lay.dense[:-1]) or any(r is not None and r.bias for r in recs) else None
    b_rec: dict[int, torch.Tensor] = {}
    if has_rec:
        w_rec = zeros(nh, nh)  # [S, post, pre]
        for k, (a, z) in enumerate(blocks):
            if k > 0:
                pa, pz = blocks[k - 1]
                w_rec[:, a:z, pa:pz] = lead(params[lay.dense[k].weight]).double()
            rec = recs[k]
            if rec is not None:
                w = lead(params[rec.weight]).double()
                if rec.mode == "one-to-one":
                    w = torch.diag_embed(w)
                if not rec.autapses:
                    w = w * (1 - torch.eye(z - a, dtype=w.dtype))
                w_rec[:, a:z, a:z] = w
        mats["rec"] = w_rec
    for k, (a, z) in enumerate(blocks):
        if b_h is None:
            break
        if lay.dense[k].bias:
            b_h[:, a:z] += lead(params[lay.dense[k].bias]).double()
        if recs[k] is not None and recs[k].bias:  # type: ignore[union-attr]
            b_rec[k] = lead(params[recs[k].bias]).double()  # type: ignore[union-attr]
            b_h[:, a:z] += b_rec[k]

    def named(n: Neuron, d: Dense, role: str) -> str:
        return f"the {role} layer '{n.name or d.weight}'"

    ph = _population(chip, [(n, z - a, named(n, lay.dense[k], "hidden")) for k, (n, (a, z))
                            in enumerate(zip(lay.hidden, blocks))], mats, b_h, S, round_decays, threshold_target)
    # ---- output population: the output synapses leave from the last hidden layer
    aL, zL = blocks[-1]
    w_out = zeros(no, nh)
    w_out[:, :, aL:zL] = lead(params[lay.dense_out.weight]).double()
    b_o = lead(params[lay.dense_out.bias]).double() if lay.dense_out.bias else None
    po = _population(chip, [(o, no, named(o, lay.dense_out, "output"))], {"out": w_out}, b_o, S, round_decays,
                     threshold_target)

    def np8(t: torch.Tensor) -> np.ndarray:
        return t.numpy().astype(np.int8)

    popH, popO = ph["pop"], po["pop"]
    net = XyloNetwork(
        w_in=np8(popH.codes["in"].transpose(1, 2)), w_rec=np8(popH.codes["rec"].transpose(1, 2)) if has_rec else None,
        w_out=np8(popO.codes["out"].transpose(1, 2)),
        shift_in=popH.shifts["in"].numpy().reshape(S), shift_rec=(popH.shifts["rec"].numpy().reshape(S) if has_rec
                                                                  else np.zeros(S, np.int64)),
        shift_out=popO.shifts["out"].numpy().reshape(S),
        dash_mem=np.broadcast_to(ph["km"].numpy(), (S, nh)).copy(), dash_syn=np.broadcast_to(ph["ks"].numpy(), (S, nh)).copy(),
        threshold=popH.threshold.numpy().astype(np.int64).reshape(S, nh), bias=ph["bias_code"].numpy().astype(np.int64),
        dash_mem_out=np.broadcast_to(po["km"].numpy(), (S, no)).copy(),
        dash_syn_out=np.broadcast_to(po["ks"].numpy(), (S, no)).copy(),
        threshold_out=popO.threshold.numpy().astype(np.int64).reshape(S, no),
        bias_out=po["bias_code"].numpy().astype(np.int64),
        n_ien=(z0 - a0) if chip.first_hidden is not None else None,
        n_oen=(zL - aL) if chip.last_hidden is not None else None, synapses=chip.synapses)
    # ---- what the chip realises, in software units, shaped as the caller's tensors
    unlead = (lambda t: t[0]) if n_sets is None else (lambda t: t)  # noqa: E731
    out: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        out[name] = unlead(t).to(params[name].dtype)

    put(lay.dense_in.weight, ph["realised"]["in"][:, a0:z0])
    for k, (a, z) in enumerate(blocks):
        if k > 0:
            pa, pz = blocks[k - 1]
            put(lay.dense[k].weight, ph["realised"]["rec"][:, a:z, pa:pz])
        rec = recs[k]
        if rec is not None:
            w = ph["realised"]["rec"][:, a:z, a:z]
            put(rec.weight, torch.diagonal(w, dim1=-2, dim2=-1) if rec.mode == "one-to-one" else w)
            if rec.bias:
                put(rec.bias, b_rec[k])  # the chip holds the sum; the split keeps b_rec
        if lay.dense[k].bias:
            put(lay.dense[k].bias, ph["bias_real"][:, a:z] - b_rec.get(k, 0))
    put(lay.dense_out.weight, po["realised"]["out"][:, :, aL:zL])
    if lay.dense_out.bias:
        put(lay.dense_out.bias, po["bias_real"])
    neurons = {}
    layers = list(spec.layers)
    parts = [(idx, ph, n, a, z) for idx, n, (a, z) in zip(lay.hidden_indices, lay.hidden, blocks)]
    parts.append((lay.output_index, po, o, 0, no))
    for idx, p, neuron, a, z in parts:
        thr = p["threshold"][:, a:z]
        beta, alpha = p["beta"][a:z], p["alpha"][a:z]
        neurons[idx] = {"beta": beta, "alpha": alpha, "threshold": thr}
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
    return Transferred(net, out, neurons, real_spec, ph["kappa"], po["kappa"], blocks)


def _differs(a: object, b: object) -> bool:
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if ta.shape != tb.shape:
        return True
    return not torch.allclose(ta, tb, rtol=1e-6, atol=0)
