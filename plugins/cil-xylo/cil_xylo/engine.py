r"""Two engines that run a Xylo core: the vendor's simulator and a batched re-implementation.

Both run the integer network of a :class:`XyloNetwork` (S parameter sets) on input spike counts
``[T, B, Nin]`` and return output spikes, and with ``record`` the hidden spikes and the hidden and
output membranes, all ``[T, S, B, n]``.

* :func:`run_xylosim` — the reference: rockpool's ``XyloSim.from_specification`` (xylosim's
  C++ core, which SynSense describes as bit-accurate), one parameter set and one sample at a
  time (``reset_state`` before every sample).
* :func:`run_fast` — a numba kernel that scores all ``S x B`` (set, sample) pairs in one call,
  in parallel, **bit-exact** with xylosim (tested on random networks, saturating ones included).

The core step, per time step ``t`` (xylosim's ``XyloLayer::evolve`` and ``XyloIAFNeuron``),
with :math:`\mathrm{sat}(x) = \mathrm{clip}(x, -2^{15}, 2^{15}-1)` applied after *every* single
addition (so the order of the additions matters and is kept), :math:`d_k(x) = x \gg k`, or
:math:`\mathrm{sign}(x)` where that is 0:

1. input spikes: for every channel ``c`` in order, :math:`n = \min(x_{t,c}, 15)` times
   :math:`I_j \leftarrow \mathrm{sat}(I_j + W^{in}_{cj} 2^{k_{in}})` (the engine adds
   :math:`n W` at once: repeated additions of one sign saturate at the same value);
2. recurrent spikes of step ``t-1``: for every hidden ``h`` in order, :math:`\min(S_{t-1,h}, 31)`
   times :math:`I_j \leftarrow \mathrm{sat}(I_j + W^{rec}_{hj} 2^{k_{rec}})`;
3. the same hidden spikes of step ``t-1`` into the output currents with :math:`W^{out} 2^{k_{out}}`
   (so the output sees the hidden layer **one step late**);
4. every hidden neuron, then every output neuron:
   :math:`I \leftarrow I - d_{k_s}(I)` (decay *after* the input was added),
   :math:`\Delta = \mathrm{sat}(\mathrm{sat}(-d_{k_m}(V) + I) + b)`, :math:`V \leftarrow \mathrm{sat}(V + \Delta)`,
   then while :math:`V \ge \theta` and fewer than the cap (31 hidden, 1 output):
   one spike, :math:`V \leftarrow V - \theta` (immediate subtract reset, several spikes per step).

Membranes are recorded after the reset (xylosim's ``Vmem``).

**Saturation** (``saturation=True``): per set, sample and layer, the number of neuron-steps in
which an addition to the neuron's synaptic current (1.–3.) or to its membrane (4.: the
:math:`\mathrm{sat}` of :math:`\Delta` or of :math:`V + \Delta`) was clipped at a 16-bit rail.
The recorded state cannot show this: the current is recorded after its decay and the membrane
after the reset, so a clipped value rarely sits at a rail when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["XyloNetwork", "run_fast", "run_xylosim", "saturation", "SATURATION_KEYS", "ENGINES"]

STATE_MIN, STATE_MAX = -(2 ** 15), 2 ** 15 - 1


@dataclass
class XyloNetwork:
    """The integer network a Xylo core holds, for ``S`` parameter sets (leading dimension).

    Weights are signed 8-bit codes (``int8``) with one left shift per matrix and set
    (``shift_*``: ``[S]``); ``w_in`` ``[S, Nin, Nh]``, ``w_rec`` ``[S, Nh, Nh]`` (pre, post) or
    ``None``, ``w_out`` ``[S, Nh, No]``; neuron registers ``[S, Nh]`` / ``[S, No]``: bit-shift
    decays ``dash_mem``/``dash_syn``, thresholds, biases (int16).

    ``n_ien``/``n_oen`` (Xylo IMU): only the first ``n_ien`` hidden neurons receive input synapses
    and only the last ``n_oen`` have output synapses (``None``: all); ``synapses``: synapses per
    hidden neuron in rockpool's specification (2 for Audio 2/3, 1 for IMU). The engines run the
    full matrices, whose other rows/columns are zero."""

    w_in: np.ndarray
    w_rec: np.ndarray | None
    w_out: np.ndarray
    shift_in: np.ndarray
    shift_rec: np.ndarray
    shift_out: np.ndarray
    dash_mem: np.ndarray
    dash_syn: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    dash_mem_out: np.ndarray
    dash_syn_out: np.ndarray
    threshold_out: np.ndarray
    bias_out: np.ndarray
    n_ien: int | None = None
    n_oen: int | None = None
    synapses: int = 2

    @property
    def n_sets(self) -> int:
        return int(self.w_in.shape[0])

    @property
    def sizes(self) -> tuple[int, int, int]:
        return int(self.w_in.shape[1]), int(self.w_in.shape[2]), int(self.w_out.shape[2])

    def specification(self, s: int = 0) -> dict:
        """Set ``s`` as the keyword arguments of rockpool's ``XyloSim.from_specification``
        (with two synapses per hidden neuron the second is unused: its weights are zero). With
        ``n_ien``/``n_oen`` the layout of rockpool's Xylo IMU mapper: ``weights_in``
        ``(Nin, n_ien, 1)``, ``weights_out`` ``(n_oen, No)`` for the *last* ``n_oen`` hidden neurons."""
        nin, nh, no = self.sizes
        ien = nh if self.n_ien is None else self.n_ien
        oen = nh if self.n_oen is None else self.n_oen
        if self.w_in[s][:, ien:].any() or self.w_out[s][:nh - oen].any():
            raise ValueError(f"set {s}: input weights beyond the first {ien} or output weights before the last {oen} "
                             "hidden neurons, which the chip has no synapses for")
        w_in = np.zeros((nin, ien, self.synapses), np.int8)
        w_in[:, :, 0] = self.w_in[s][:, :ien]
        w_rec = np.zeros((nh, nh, self.synapses), np.int8)
        if self.w_rec is not None:
            w_rec[:, :, 0] = self.w_rec[s]
        return dict(weights_in=w_in, weights_rec=w_rec, weights_out=self.w_out[s][nh - oen:].astype(np.int8),
                    dash_mem=self.dash_mem[s].astype(int), dash_mem_out=self.dash_mem_out[s].astype(int),
                    dash_syn=self.dash_syn[s].astype(int), dash_syn_2=self.dash_syn[s].astype(int),
                    dash_syn_out=self.dash_syn_out[s].astype(int),
                    threshold=self.threshold[s].astype(int), threshold_out=self.threshold_out[s].astype(int),
                    bias=self.bias[s].astype(int), bias_out=self.bias_out[s].astype(int),
                    weight_shift_in=int(self.shift_in[s]), weight_shift_rec=int(self.shift_rec[s]),
                    weight_shift_out=int(self.shift_out[s]))

    @classmethod
    def from_specification(cls, spec: dict) -> "XyloNetwork":
        """One set from the keyword arguments of ``XyloSim.from_specification`` (e.g. rockpool's
        ``mapper`` + ``channel_quantize``), the inverse of :meth:`specification`; a hidden
        neuron's second synapse must be unused (zero weights), as the engines run one."""
        def first(w: np.ndarray, name: str) -> np.ndarray:
            w = np.asarray(w)
            if w.ndim == 3:
                if w.shape[2] > 1 and np.any(w[:, :, 1:]):
                    raise ValueError(f"{name}: the hidden neurons' second synapse is used; the engines run one")
                w = w[:, :, 0]
            return w.astype(np.int8)[None]

        def reg(name: str) -> np.ndarray:
            return np.asarray(spec[name]).astype(np.int64)[None]

        w_rec = first(spec["weights_rec"], "weights_rec") if spec.get("weights_rec") is not None else None
        return cls(w_in=first(spec["weights_in"], "weights_in"), w_rec=w_rec,
                   w_out=np.asarray(spec["weights_out"]).astype(np.int8)[None],
                   shift_in=np.array([int(spec.get("weight_shift_in", 0))]),
                   shift_rec=np.array([int(spec.get("weight_shift_rec", 0))]),
                   shift_out=np.array([int(spec.get("weight_shift_out", 0))]),
                   dash_mem=reg("dash_mem"), dash_syn=reg("dash_syn"), threshold=reg("threshold"), bias=reg("bias"),
                   dash_mem_out=reg("dash_mem_out"), dash_syn_out=reg("dash_syn_out"),
                   threshold_out=reg("threshold_out"), bias_out=reg("bias_out"))

    def integer_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``codes << shift`` of the three matrices (int32), as the core adds them."""
        def sh(w: np.ndarray, k: np.ndarray) -> np.ndarray:
            return w.astype(np.int32) << k.astype(np.int32).reshape(-1, 1, 1)
        nh = self.sizes[1]
        rec = sh(self.w_rec, self.shift_rec) if self.w_rec is not None else np.zeros((self.n_sets, nh, nh), np.int32)
        return sh(self.w_in, self.shift_in), rec, sh(self.w_out, self.shift_out)


@numba.njit(cache=True, inline="always")
def _sat(x: int) -> int:
    if x > STATE_MAX:
        return STATE_MAX
    if x < STATE_MIN:
        return STATE_MIN
    return x


@numba.njit(cache=True, inline="always")
def _decay(v: int, dash: int) -> int:
    dv = v >> dash
    if dv == 0:
        if v > 0:
            dv = 1
        elif v < 0:
            dv = -1
    return dv


@numba.njit(cache=True, inline="always")
def _clipped(x: int) -> int:
    """1 if :func:`_sat` clips ``x``, else 0."""
    return 1 if (x > STATE_MAX or x < STATE_MIN) else 0


@numba.njit(cache=True, inline="always")
def _add_spikes(acc, clip, w, s: int, r: int, n: int, count: bool) -> None:
    r"""``n`` spikes of presynaptic row ``r`` through set ``s``'s weights ``w`` ``[S, pre, post]``
    into the currents ``acc``: for every target ``j`` in order,
    :math:`\mathrm{acc}_j \leftarrow \mathrm{sat}(\mathrm{acc}_j + n\,w_{s r j})` (zero weights
    skipped); with ``count``, ``clip[j]`` set to 1 where that addition was clipped."""
    for j in range(acc.shape[0]):
        wj = w[s, r, j]
        if wj == 0:
            continue
        if count:
            clip[j] |= _clipped(acc[j] + n * wj)
        acc[j] = _sat(acc[j] + n * wj)


@numba.njit(cache=True, inline="always")
def _evolve(i: int, v: int, dash_syn: int, dash_mem: int, thr: int, bias: int, cap: int, count: bool):
    """One neuron's step; returns ``(i, v, spikes, clipped)``, ``clipped`` 1 if a membrane
    addition hit a 16-bit rail (counted only with ``count``; else 0)."""
    i = i - _decay(i, dash_syn)
    dv = -_decay(v, dash_mem)
    if dv == 32768:  # int16_t dv_mem = -(-32768) wraps in the C++ core
        dv = -32768
    c = 0
    if count:
        c = _clipped(dv + i)
    dv = _sat(dv + i)
    if count:
        c |= _clipped(dv + bias)
    dv = _sat(dv + bias)
    if count:
        c |= _clipped(v + dv)
    v = _sat(v + dv)
    n = 0
    while v >= thr and n < cap:
        n += 1
        v -= thr
    return i, v, n, c


def _kernel_source(count: bool):
    """The kernel's Python source with ``count`` (count the clipped additions into ``sat``) a
    constant of the closure: numba compiles it away, so a run that does not count pays nothing
    for it."""
    def _kernel_py(x, w_in, w_rec, w_out, dm, ds, th, bias, dmo, dso, tho, biaso, has_rec,  # pragma: no cover
                   in_cap, hid_cap, out_cap, record, out_spk, hid_spk, vmem, vmem_out, sat):
        T, B, nin = x.shape
        S, _, nh = w_in.shape
        no = w_out.shape[2]
        for sb in numba.prange(S * B):
            s = sb // B
            b = sb - s * B
            isyn = np.zeros(nh, np.int64)
            v = np.zeros(nh, np.int64)
            isyn_o = np.zeros(no, np.int64)
            v_o = np.zeros(no, np.int64)
            prev = np.zeros(nh, np.int64)
            ci = np.zeros(nh, np.int64)  # per step: the neuron's current was clipped
            ci_o = np.zeros(no, np.int64)
            for t in range(T):
                if count:
                    ci[:] = 0
                    ci_o[:] = 0
                # 1. input spikes, channel by channel, each spike one saturating addition
                for c in range(nin):
                    n = x[t, b, c]
                    if n > in_cap:
                        n = in_cap
                    if n <= 0:
                        continue
                    _add_spikes(isyn, ci, w_in, s, c, n, count)
                # 2./3. the hidden spikes of step t-1 into the hidden (recurrent) and output currents
                for h in range(nh):
                    n = prev[h]
                    if n > hid_cap:
                        n = hid_cap
                    if n <= 0:
                        continue
                    if has_rec:
                        _add_spikes(isyn, ci, w_rec, s, h, n, count)
                    _add_spikes(isyn_o, ci_o, w_out, s, h, n, count)
                # 4. neurons: hidden, then output
                for j in range(nh):
                    i2, v2, n, cv = _evolve(isyn[j], v[j], ds[s, j], dm[s, j], th[s, j], bias[s, j], hid_cap, count)
                    if count:
                        sat[s, b, 0] += ci[j]
                        sat[s, b, 1] += cv
                    isyn[j] = i2
                    v[j] = v2
                    prev[j] = n
                    if record:
                        hid_spk[t, s, b, j] = n
                        vmem[t, s, b, j] = v2
                for o in range(no):
                    i2, v2, n, cv = _evolve(isyn_o[o], v_o[o], dso[s, o], dmo[s, o], tho[s, o], biaso[s, o], out_cap, count)
                    if count:
                        sat[s, b, 2] += ci_o[o]
                        sat[s, b, 3] += cv
                    isyn_o[o] = i2
                    v_o[o] = v2
                    out_spk[t, s, b, o] = n
                    if record:
                        vmem_out[t, s, b, o] = v2

    return _kernel_py


#: the kernel over all (set, sample) pairs: in parallel (numba's threads) and on one thread
#: (``[counting]``: ``False`` plain, ``True`` counting saturation)
_kernel_par = [numba.njit(cache=True, parallel=True)(_kernel_source(c)) for c in (False, True)]
_kernel_seq = [numba.njit(cache=True)(_kernel_source(c)) for c in (False, True)]
#: fewer (set, sample) pairs than this run on one thread: waking the thread pool (and its spinning
#: beside torch's own threads) costs more than it saves on small calls
PARALLEL_MIN_PAIRS = 256


def run_fast(net: XyloNetwork, x: np.ndarray, record: bool = False, *, input_cap: int = 15, hidden_cap: int = 31,
             output_cap: int = 1, parallel: bool | None = None, saturation: bool = False) -> dict[str, np.ndarray]:
    """Run all ``S`` sets on all ``B`` samples of ``x`` (spike counts ``[T, B, Nin]``) in one
    numba call, the (set, sample) pairs spread over numba's threads (``parallel=None``: when
    there are at least :data:`PARALLEL_MIN_PAIRS` of them and more than one thread). Returns
    ``{"output": [T, S, B, No]}`` and, with ``record``, ``"spikes"``/``"vmem"`` ``[T, S, B, Nh]``
    and ``"vmem_out"`` ``[T, S, B, No]`` (int); with ``saturation``, ``"saturation"`` ``[S, B, 4]``:
    the neuron-steps whose hidden current, hidden membrane, output current, output membrane
    was clipped at a 16-bit rail (module doc; out of ``T·Nh`` or ``T·No`` neuron-steps)."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    T, B, _ = x.shape
    S = net.n_sets
    nin, nh, no = net.sizes
    w_in, w_rec, w_out = net.integer_weights()
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    out = np.zeros((T, S, B, no), np.uint8)
    shape_h = (T, S, B, nh) if record else (1, 1, 1, 1)
    shape_o = (T, S, B, no) if record else (1, 1, 1, 1)
    hid = np.zeros(shape_h, np.uint8)
    vmem = np.zeros(shape_h, np.int16)
    vmem_out = np.zeros(shape_o, np.int16)
    sat = np.zeros((S, B, 4), np.int64)
    if parallel is None:
        parallel = S * B >= PARALLEL_MIN_PAIRS and numba.get_num_threads() > 1
    kernel = (_kernel_par if parallel else _kernel_seq)[bool(saturation)]
    kernel(x, i32(w_in), i32(w_rec), i32(w_out), i32(net.dash_mem), i32(net.dash_syn), i32(net.threshold),
            i32(net.bias), i32(net.dash_mem_out), i32(net.dash_syn_out), i32(net.threshold_out), i32(net.bias_out),
            net.w_rec is not None, input_cap, hidden_cap, output_cap, record, out, hid, vmem, vmem_out, sat)
    res = {"output": out}
    if record:
        res.update(spikes=hid, vmem=vmem, vmem_out=vmem_out)
    if saturation:
        res["saturation"] = sat
    return res


#: the four counts of ``run_fast(..., saturation=True)["saturation"]``, in order
SATURATION_KEYS = ("hidden current", "hidden membrane", "output current", "output membrane")


def saturation(net: XyloNetwork, x: np.ndarray) -> dict[str, float]:
    """The share of neuron-steps (over all sets, samples and steps of ``x``, spike counts
    ``[T, B, Nin]``) in which each state of :data:`SATURATION_KEYS` was clipped at a 16-bit rail
    (:func:`run_fast` with ``saturation=True``)."""
    x = np.asarray(x)
    counts = run_fast(net, x, saturation=True)["saturation"].sum((0, 1))
    _, nh, no = net.sizes
    pairs = x.shape[0] * x.shape[1] * net.n_sets
    return {k: float(c) / (pairs * n) for k, c, n in zip(SATURATION_KEYS, counts, (nh, nh, no, no))}


def run_xylosim(net: XyloNetwork, x: np.ndarray, record: bool = False, *,
                package: str | None = None) -> dict[str, np.ndarray]:
    """The same as :func:`run_fast` through the vendor's simulator: rockpool's
    ``XyloSim.from_specification`` per set, ``reset_state()`` and ``evolve`` per sample
    (``package``: the rockpool subpackage whose ``XyloSim`` runs, default Audio 2's)."""
    from .sdk import xylo_sim_class

    XyloSim = xylo_sim_class(package)
    x = np.asarray(x).astype(np.int64)
    T, B, _ = x.shape
    S = net.n_sets
    _, nh, no = net.sizes
    out = np.zeros((T, S, B, no), np.uint8)
    hid = np.zeros((T, S, B, nh), np.uint8) if record else None
    vmem = np.zeros((T, S, B, nh), np.int16) if record else None
    vmem_out = np.zeros((T, S, B, no), np.int16) if record else None
    for s in range(S):
        sim = XyloSim.from_specification(**net.specification(s), output_mode="Spike")
        for b in range(B):
            sim.reset_state()
            o, _, rec = sim.evolve(x[:, b], record=record)
            out[:, s, b] = o
            if record:
                hid[:, s, b] = rec["Spikes"]
                vmem[:, s, b] = rec["Vmem"]
                vmem_out[:, s, b] = rec["Vmem_out"]
    res = {"output": out}
    if record:
        res.update(spikes=hid, vmem=vmem, vmem_out=vmem_out)
    return res


#: the engines the backend's ``engine`` option names
ENGINES = {"fast": run_fast, "xylosim": run_xylosim}
