"""The compiled event loop (numba, parallel over samples; no per-event Python).

Semantics (one sample; all state integer, 16-bit saturating):

1. Input events are processed one at a time in the given order (timestamp order; ties in the
   order the caller supplies them).
2. An event ``(c, y, x)`` arriving at chip layer ``l`` is first pooled (``y // ph``,
   ``x // pw``; events beyond the last full pooling window are dropped), then adds
   ``w[o, c, ki, kj]`` to every neuron ``(o, oy, ox)`` it projects to
   (``oy*sh - padh + ki = y``), saturating each addition to ``[-32768, 32767]``.
3. Then each neuron touched by this event is checked **once**: at or above threshold it emits
   one spike and subtracts the threshold (or resets to 0); its state is then clamped to the lower
   bound ``v_min``. A neuron still above threshold stays silent until its next input event.
4. Propagation is depth-first: the output events of one layer for one incoming event leave in
   **ascending flat index order** ``(o, oy, ox)`` (channel-major, then row, then column), and
   each is processed completely through the following layers before the next one leaves. All
   events caused by an input event are processed before the next input event (no latency).
5. Output spikes of the last layer are counted in the time bin of the input event that caused them.

Parameter sets: one call runs ``S`` weight sets of the same network on the same samples. The
layer table ``lp`` then holds ``S`` blocks of ``L`` rows (block ``s`` = set ``s``: its
thresholds, lower bounds and a ``WOFF`` into the concatenated weights of all sets); every
(set, sample) pair is an independent run with its own state, all of them in one parallel loop.
``S = 1`` is the single-network call (the layout and results of a plain one-set call).

Implementation (:func:`run_events`). An event touches distinct neurons (one kernel tap each), so
steps 2 and 3 are done per neuron without changing any result. The targets of an event come from a
fan-out table built once per deployment (:func:`fan_out_table`: for every pooled input row the
``(kernel row, output row)`` pairs, for every column the *runs* of consecutive output columns;
the same targets, in the same order, as :func:`_first_tap` enumerates), so the loop does no
division (pooling factors are powers of two: a shift). State ``[Ho, Wo, O]`` and weights
``[C, KH, KW, O]`` (kernel columns reversed, :func:`loop_weights`) are channel-last, so one (row,
column run) is one contiguous block of state and of weights. It is processed 8 neurons at a time
(:func:`_block_split`, vector IR; a scalar tail when the run is not a multiple of 8), each block
returning the bits of the neurons that reached threshold, stored a byte per block (gathering
them in a register and storing a word per 64 neurons measured no faster); only runs holding a spike
are recorded (two packed words: state index and position, length and first bit word). When the
lower bound is below the
threshold, a block adds, saturates and clamps to the lower bound as if nothing fired (a neuron that
fired then still holds its value ``>= θ``), and only the neurons whose bit is set are reset
afterwards, one by one; at or above the threshold the reset happens inside the block
(:func:`_block_fused`). The bits of the runs holding a spike are read with count-trailing-zeros
(and their words zeroed once read: a run without a spike writes only zero bytes, so every word is
zero when the next event starts, with no clearing per run);
each spike becomes a key ``(o << 32) | (oy << 16) | ox`` (ascending keys are ascending flat
indices), and the spikes are pushed onto the event stack (one 64-bit word per event:
``(layer << 48) | key``) so that they are processed in the documented order: each key goes to the
stack slot given by its rank (the number of the event's keys below it; a fixed number of
comparisons per key, where an insertion sort's data-dependent branches cost ~10 % of the loop's
time; beyond 32 spikes the keys are sorted). The smallest key, which the stack would pop next, is
not read back from it: it is carried in a register (kept by a running minimum while the keys are
collected) and processed at once, because the next event's additions depend on it and a store and
load through memory lay on that path (one spiking event's threshold compares to the next event's
additions; in the integrate-only ceiling the events are known in advance and overlap); its layer
is carried apart from it, so that the next layer's parameters load before the key is known. The last
layer's spikes are only counted (their order does not matter). State and weights are held in float32 (:func:`loop_dtype`):
every value the chip holds is an integer well inside float32's exact range, so every sum,
comparison and clamp is exact and the results are those of integer arithmetic.
:func:`run_events_reference` is the straightforward loop of the same semantics (the backend's loop
before this one), kept as the cross-check of this one; :func:`integrate_only` is the benchmark's
ceiling: the same synaptic additions without any threshold, reset or propagation work
(:func:`integrate_blocks`: the same in the loop's 8-lane blocks, and with its threshold detection,
for the benchmark's checks).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# column indices of the per-layer parameter table ``lp`` (the first 20 are all that
# run_events_reference reads; the last 5 describe the fan-out table and derived constants)
(C, H, W, PH_, PW_, O, HO, WO, KH, KW, SH, SW, PADH, PADW, THR, VMIN, RZERO, WOFF, VOFF, ROFF,
 RTAB, CTAB, PSH, PSW, CSTEP) = range(25)
N_PARAMS = 25

_SAT_LO = np.int32(-32768)
_SAT_HI = np.int32(32767)


def fan_out_table(lp: np.ndarray, n_sets: int = 1) -> np.ndarray:
    """Fill the columns ``RTAB``, ``CTAB``, ``PSH``, ``PSW`` and ``CSTEP`` of ``lp`` (in place, in
    every set's block: the geometry is the same for all sets) and return the fan-out table
    ``fan`` (uint64) they point into.

    For layer ``l`` and a pooled input row ``y`` (``0 <= y < H``), the row entries are
    ``fan[a:a+3]`` for ``a`` in ``range(fan[RTAB + y], fan[RTAB + y + 1], 3)``: ``(oy * WO * O,
    ki * KW * O, oy)`` for every kernel row ``ki`` (ascending) with ``y + padh - ki = oy * sh``,
    ``0 <= oy < HO``. The column entries of a pooled input column ``x`` are *runs*
    ``fan[q:q+4]`` = ``(ox0 * O, (KW - 1 - kj) * O, ox0, n)`` for ``q`` in
    ``range(fan[CTAB + x], fan[CTAB + x + 1], 4)``: ``n`` output columns ``ox0 .. ox0 + n - 1``
    reached through kernel columns ``kj .. kj - n + 1``, whose state (``[.., Wo, O]``) and weights
    (stored with the kernel columns reversed, see :func:`loop_weights`) are both one contiguous
    block of ``n * O`` values. With column stride 1 an input column's targets are one run; else
    one run per target column, in ascending ``kj`` (descending ``ox``). An event's targets are all
    (row entry, column run) pairs, rows outer: in descending ``(oy, ox)`` order when each run is
    read backwards.
    ``PSH``/``PSW`` are log2 of the pooling factors, ``CSTEP`` = ``KH * KW * O`` (weights per input
    channel)."""
    L = lp.shape[0] // n_sets
    parts: list[np.ndarray] = []
    size = 0
    cols = np.zeros((L, 5), np.int64)

    def block(n_in: int, entries_of) -> None:
        nonlocal size
        head = np.zeros(n_in + 1, np.int64)
        entries: list[int] = []
        base = size + n_in + 1  # the entries follow the head
        for p in range(n_in):
            head[p] = base + len(entries)
            entries += entries_of(p)
        head[n_in] = base + len(entries)
        block = np.concatenate([head, np.asarray(entries, np.int64)])
        size += len(block)
        parts.append(block)

    def taps(t: int, k: int, stride: int, n_out: int) -> list[int]:
        """Kernel indices (ascending) through which padded input position t reaches an output."""
        return [kk for kk in range(k) if t - kk >= 0 and (t - kk) % stride == 0 and (t - kk) // stride < n_out]

    for l in range(L):
        row = lp[l]
        nO, kh, kw, sh, sw, nHo, nWo = (int(row[k]) for k in (O, KH, KW, SH, SW, HO, WO))
        if kh * kw > 256:
            raise ValueError(f"kernel {kh}x{kw} has more than 256 taps (the chip's limit is 16x16)")
        big = [k for k, n in (("C", row[C]), ("O", nO), ("H * pool", row[H] * row[PH_]), ("W * pool", row[W] * row[PW_]),
                              ("HO", nHo), ("WO", nWo)) if n > 65536]
        if big:  # run_events packs channel and position of an event in 16 bits each
            raise ValueError(f"layer {l}: {', '.join(big)} above 65536 (the chip's layers are at most 1024 wide)")
        for f, col in ((row[PH_], 2), (row[PW_], 3)):
            if f < 1 or f & (f - 1):
                raise ValueError(f"pooling factor {f} is not a power of two")
            cols[l, col] = int(f).bit_length() - 1

        def rows_of(y: int) -> list[int]:
            t = y + int(row[PADH])
            return [e for ki in taps(t, kh, sh, nHo) for e in ((t - ki) // sh * nWo * nO, ki * kw * nO, (t - ki) // sh)]

        def cols_of(x: int) -> list[int]:
            t = x + int(row[PADW])
            kjs = taps(t, kw, sw, nWo)
            if sw == 1 and kjs:  # consecutive columns: one run, ascending ox = descending kj
                ox0 = t - kjs[-1]
                return [ox0 * nO, (kw - 1 - kjs[-1]) * nO, ox0, len(kjs)]
            return [e for kj in kjs for e in ((t - kj) // sw * nO, (kw - 1 - kj) * nO, (t - kj) // sw, 1)]

        cols[l, 0] = size
        block(int(row[H]), rows_of)
        cols[l, 1] = size
        block(int(row[W]), cols_of)
        cols[l, 4] = kh * kw * nO
    lp[:, RTAB:CSTEP + 1] = np.tile(cols, (n_sets, 1))
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)).astype(np.uint64)


def loop_dtype(lp: np.ndarray) -> type:
    """The dtype :func:`run_events` holds state and weights in: ``np.float32`` when every value
    the chip can hold is an integer of magnitude ``<= 2**24`` (then float32 represents each one,
    and each sum, difference, comparison and clamp of two of them, exactly), else ``np.float64``
    (exact to ``2**53``). Weights are 8-bit, thresholds and sums saturate to 16 bits, so only a
    lower bound far beyond the 16-bit range (``v_min`` more than 512 thresholds) needs float64."""
    lim = int(np.abs(lp[:, VMIN]).max(initial=0)) if lp.size else 0
    return np.float32 if lim <= 2 ** 24 else np.float64


def loop_weights(weights: list[np.ndarray], dtype: type) -> np.ndarray:
    """The weights as :func:`run_events` reads them: every layer's ``[O, C, KH, KW]`` kernel laid
    out ``[C, KH, KW, O]`` with the kernel columns reversed (so that the weights of a column run
    of :func:`fan_out_table` are contiguous), all layers (and sets) concatenated, in ``dtype``
    (:func:`loop_dtype`). The same offsets ``WOFF`` as the plain ``[C, KH, KW, O]`` layout.

    The array starts on a 64-byte boundary (a cache line; numpy only promises 16 bytes), as the
    loop's state does (numba allocates it so): where the layers' channel counts are multiples of 8,
    a block of 8 weights then never straddles two cache lines. Where numpy happened to place it, the loop and its ceiling
    both ran up to ~10 % slower, by process."""
    flat = np.concatenate([np.transpose(w, (1, 2, 3, 0))[:, :, ::-1, :].ravel() for w in weights]).astype(dtype)
    size = np.dtype(dtype).itemsize
    buf = np.empty(flat.size + 64 // size, dtype)
    start = (-buf.ctypes.data % 64) // size
    out = buf[start:start + flat.size]
    out[:] = flat
    return out


@intrinsic
def _ctz(typingctx, x):
    """Count trailing zeros of a uint64 (LLVM's ``cttz``; ``x != 0``)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64), ir.IntType(1)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])

    return types.uint64(types.uint64), codegen


LANES = 8  # neurons per block of :func:`_block_split` / :func:`_block_fused`


def _splat(builder, x, n):
    """An ``n``-lane vector holding ``x`` in every lane."""
    vec = ir.VectorType(x.type, n)
    u = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(u, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _block_codegen(fused: bool):
    """LLVM IR of one block of ``LANES`` neurons: ``x = min(v + w, hi)``, ``f = x >= thr``, then
    ``v = max(x, vmin)`` (split) or ``v = max((0 if rz else x - thr) if f else x, vmin)`` (fused),
    returning the bits of ``f`` (lane ``j`` in bit ``j``). Written as vector IR because numba's
    loop does not let LLVM prove that ``v`` and ``w`` do not overlap, so it would not vectorize a
    fixed block; every operation is exact on the integer values the loop holds (no NaN, no rounding),
    so the lanes give the results of the scalar expressions."""
    def codegen(context, builder, signature, args):
        vty, _, wty = signature.args[:3]
        va = context.make_array(vty)(context, builder, args[0])
        wa = context.make_array(wty)(context, builder, args[2])
        vec = ir.VectorType(context.get_value_type(vty.dtype), LANES)
        pv = builder.bitcast(builder.gep(va.data, [args[1]]), vec.as_pointer())
        pw = builder.bitcast(builder.gep(wa.data, [args[3]]), vec.as_pointer())
        thr, vmin, hi = (_splat(builder, a, LANES) for a in args[4:7])
        x = builder.fadd(builder.load(pv, align=1), builder.load(pw, align=1))
        x = builder.select(builder.fcmp_ordered("<", x, hi), x, hi)  # min(x, hi)
        f = builder.fcmp_ordered(">=", x, thr)
        if fused:
            rst = builder.select(args[7], ir.Constant(vec, [0.0] * LANES), builder.fsub(x, thr))
            x = builder.select(f, rst, x)
        x = builder.select(builder.fcmp_ordered(">", x, vmin), x, vmin)  # max(x, vmin)
        builder.store(x, pv, align=1)
        return builder.zext(builder.bitcast(f, ir.IntType(LANES)), ir.IntType(64))
    return codegen


@intrinsic
def _block_split(typingctx, v, vb, w, wb, thr, vmin, hi):
    """``v[vb:vb+8] = max(min(v + w[wb:wb+8], hi), vmin)``; returns the bits of
    ``min(v + w, hi) >= thr`` (see :func:`_block_codegen`)."""
    if not (isinstance(v, types.Array) and isinstance(w, types.Array) and v.dtype == w.dtype == thr == vmin == hi):
        return None
    return types.uint64(v, vb, w, wb, thr, vmin, hi), _block_codegen(False)


@intrinsic
def _block_fused(typingctx, v, vb, w, wb, thr, vmin, hi, rz):
    """As :func:`_block_split`, the neurons that reach ``thr`` also reset (to 0 when ``rz``, else by
    subtracting ``thr``) before the lower bound."""
    if not (isinstance(v, types.Array) and isinstance(w, types.Array) and v.dtype == w.dtype == thr == vmin == hi):
        return None
    return types.uint64(v, vb, w, wb, thr, vmin, hi, rz), _block_codegen(True)


def _add_codegen(context, builder, signature, args):
    """LLVM IR of :func:`_block_add`."""
    vty, _, wty = signature.args[:3]
    va = context.make_array(vty)(context, builder, args[0])
    wa = context.make_array(wty)(context, builder, args[2])
    vec = ir.VectorType(context.get_value_type(vty.dtype), LANES)
    pv = builder.bitcast(builder.gep(va.data, [args[1]]), vec.as_pointer())
    pw = builder.bitcast(builder.gep(wa.data, [args[3]]), vec.as_pointer())
    lo, hi = (_splat(builder, a, LANES) for a in args[4:6])
    x = builder.fadd(builder.load(pv, align=1), builder.load(pw, align=1))
    x = builder.select(builder.fcmp_ordered("<", x, hi), x, hi)
    x = builder.select(builder.fcmp_ordered(">", x, lo), x, lo)
    builder.store(x, pv, align=1)
    return context.get_dummy_value()


@intrinsic
def _block_add(typingctx, v, vb, w, wb, lo, hi):
    """``v[vb:vb+8] = max(min(v + w[wb:wb+8], hi), lo)``: the additions of :func:`_block_split`
    alone (for :func:`integrate_blocks`)."""
    if not (isinstance(v, types.Array) and isinstance(w, types.Array) and v.dtype == w.dtype == lo == hi):
        return None
    return types.none(v, vb, w, wb, lo, hi), _add_codegen


@njit(cache=True, nogil=True, inline="always")
def _landing(lp, fan, row, c, y, x):
    """Where an event of input channel ``c`` at position ``(y, x)`` (``uint64``, before the layer's
    pooling) lands in the layer of ``lp`` row ``row``: ``(inside, n_out, state_offset,
    weight_offset, a0, a1, c0, c1)``, ``inside`` false when the pooled position lies outside the
    layer; the neurons it reaches are the fan-out table's row entries ``a0..a1`` (step 3) crossed
    with its column entries ``c0..c1`` (step 4). Inlined into every loop that walks the table."""
    y = y >> np.uint64(lp[row, PSH])
    x = x >> np.uint64(lp[row, PSW])
    z = np.uint64(0)
    if y >= np.uint64(lp[row, H]) or x >= np.uint64(lp[row, W]):
        return False, z, z, z, z, z, z, z
    ra = np.uint64(lp[row, RTAB]) + y
    ca = np.uint64(lp[row, CTAB]) + x
    return (True, np.uint64(lp[row, O]), np.uint64(lp[row, VOFF]),
            np.uint64(lp[row, WOFF]) + c * np.uint64(lp[row, CSTEP]),
            fan[ra], fan[ra + np.uint64(1)], fan[ca], fan[ca + np.uint64(1)])


@njit(cache=True, nogil=True)
def _sort_small(a, n):
    """Sort ``a[:n]`` ascending in place (insertion sort; ``np.sort`` beyond 32 values)."""
    if n > 32:
        a[:n] = np.sort(a[:n])
        return
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(cache=True, nogil=True)
def _first_tap(t, n_out, stride):
    """The smallest kernel index k >= 0 with (t - k) on the stride grid and (t - k) / stride
    < n_out: the first kernel row (or column) through which an input at padded position t
    reaches an output neuron."""
    lo = t - (n_out - 1) * stride
    if stride == 1:
        return max(lo, 0)
    k = t % stride
    if lo > k:
        k += (lo - k + stride - 1) // stride * stride
    return k


@njit(parallel=True, cache=True, nogil=True)
def run_events(ev_c, ev_y, ev_x, ev_bin, ev_off, lp, wts, fan, n_state, n_bins, n_out, rec_size, stack_cap,
               n_sets):
    """Run every sample ``b`` (events ``ev_off[b]:ev_off[b+1]``) of every parameter set ``s``
    (rows ``s*L:(s+1)*L`` of ``lp``, ``L = lp.shape[0] // n_sets``) through the chip layers.

    Memory layout: neuron state channel-last ``[Ho, Wo, O]`` per layer, weights
    ``[C, KH, KW, O]`` per layer with the kernel columns reversed (:func:`loop_weights`), so that
    the innermost loop over a column run of output positions and channels is contiguous. State
    and weights are held in the float dtype of ``wts`` (:func:`loop_dtype`: every value the chip
    can hold is an integer that this dtype represents exactly, and every operation on it (add,
    clamp, compare, subtract) is then exact: the results are those of integer arithmetic).
    ``fan`` and the columns ``RTAB..CSTEP`` of ``lp`` come from :func:`fan_out_table`. Spike order
    and recorded indices use the channel-major flat index ``(o, oy, ox)``. ``lp[:, ROFF] < 0``
    disables recording of a layer. The state and recording layout (``VOFF``, ``ROFF``) is the same
    for every set.

    Returns, with ``r = s * B + b`` (``r = b`` for one set): ``out[r, t, k]`` (output spike
    counts of the last layer per time bin), ``rec[r, t, j]`` (spike counts of every layer,
    concatenated at offsets ``lp[:, ROFF]``; empty when ``rec_size == 0``) and ``syn[r]``
    (synaptic updates). The (set, sample) pairs run in parallel, sample-major (the sets of one
    sample side by side, so a thread reads a sample's events for several sets in a row).

    Indices in the hot loops are unsigned (``np.uint64``): numba then skips its negative-index
    wrap-around. Channels and positions are packed in 16 bits each (:func:`fan_out_table` checks
    the layer sizes); an input event at a coordinate ``>= 2**16`` lies outside every layer and is
    dropped, as an out-of-range event is.
    """
    if n_state >= 2 ** 32:
        raise ValueError("run_events: a state of 2**32 or more values (the loop packs state indices in 32 bits)")
    B = ev_off.shape[0] - 1
    S = n_sets
    L = lp.shape[0] // S
    out = np.zeros((S * B, n_bins, n_out), np.int32)
    rec = np.zeros((S * B, n_bins, rec_size), np.int32)
    syn = np.zeros(S * B, np.int64)
    n_targets = 1  # an event reaches at most kh * kw positions (runs) of a layer
    n_fan = 1  # ... and at most kh * kw * O neurons
    mag = np.empty(L, np.uint64)  # ceil(2**40 / O): kk // O as (kk * mag) >> 40, exact for kk < 2**24
    for l in range(L):
        n_targets = max(n_targets, lp[l, KH] * lp[l, KW])
        n_fan = max(n_fan, lp[l, KH] * lp[l, KW] * lp[l, O])
        mag[l] = ((np.uint64(1) << np.uint64(40)) + np.uint64(lp[l, O]) - np.uint64(1)) // np.uint64(lp[l, O])
    zero = wts.dtype.type(0)
    M16 = np.uint64(0xFFFF)
    hi = wts.dtype.type(32767)
    for i in prange(S * B):
        b = i // S
        s0 = (i - b * S) * L
        r = (i - b * S) * B + b
        v = np.zeros(n_state, wts.dtype)
        stk = np.empty(stack_cap, np.uint64)  # (l << 48) | (c << 32) | (y << 16) | x
        # the runs holding a spike, two words each: (first state index << 32) | (oy << 16) | ox0, and
        # (length << 32) | first bit word (a state of 2**32 values would not fit in memory)
        t_d = np.empty(n_targets, np.uint64)
        t_w = np.empty(n_targets, np.uint64)
        keys = np.empty(n_fan, np.uint64)  # the event's spikes, (o << 32) | (oy << 16) | ox
        # bit m * O + o of the words from t_w[j]'s first: neuron (o, oy, ox0 + m) of hit run j fired; every run
        # starts at a word, its blocks write one byte each
        bits = np.zeros(n_fan // 64 + n_targets + 1, np.uint64)
        bits8 = bits.view(np.uint8)
        nsyn = 0
        for e in range(ev_off[b], ev_off[b + 1]):
            tb = ev_bin[e]
            y0 = np.uint64(ev_y[e])
            x0 = np.uint64(ev_x[e])
            if y0 > M16 or x0 > M16:
                continue
            ev = (np.uint64(ev_c[e]) << np.uint64(32)) | (y0 << np.uint64(16)) | x0
            l = np.uint64(0)
            sp = 0
            carry = True
            while True:
                if not carry:
                    if sp == 0:
                        break
                    sp -= 1
                    ev = stk[sp]
                    l = ev >> np.uint64(48)
                carry = False
                row = s0 + np.int64(l)
                inside, nO, voff, wc, a0, a1, c0, c1 = _landing(lp, fan, row, (ev >> np.uint64(32)) & M16,
                                                                (ev >> np.uint64(16)) & M16, ev & M16)
                if not inside:
                    continue
                thr = wts.dtype.type(lp[row, THR])
                vmin = wts.dtype.type(max(lp[row, VMIN], -32768))
                rz = lp[row, RZERO] == 1
                split = vmin < thr
                nwd = np.uint64(0)
                nhit = np.uint64(0)
                a = a0
                while a < a1:
                    va = voff + fan[a]
                    wa = wc + fan[a + np.uint64(1)]
                    q = c0
                    while q < c1:
                        vb = va + fan[q]
                        wb = wa + fan[q + np.uint64(1)]
                        ln = fan[q + np.uint64(3)] * nO
                        anyb = np.uint64(0)
                        nfull = ln & ~np.uint64(7)
                        fb = nwd << np.uint64(3)  # the run's first mask byte
                        for k0 in range(np.uint64(0), nfull, np.uint64(8)):
                            if split:
                                m = _block_split(v, vb + k0, wts, wb + k0, thr, vmin, hi)
                            else:
                                m = _block_fused(v, vb + k0, wts, wb + k0, thr, vmin, hi, rz)
                            bits8[fb + (k0 >> np.uint64(3))] = np.uint8(m)
                            anyb |= m
                        if nfull < ln:
                            m = np.uint64(0)
                            for k in range(nfull, ln):
                                val = min(v[vb + k] + wts[wb + k], hi)
                                f = val >= thr
                                if split:
                                    v[vb + k] = max(val, vmin)
                                elif rz:
                                    v[vb + k] = max(zero if f else val, vmin)
                                else:
                                    v[vb + k] = max(val - thr if f else val, vmin)
                                m |= np.uint64(f) << (k - nfull)
                            bits8[fb + (nfull >> np.uint64(3))] = np.uint8(m)
                            anyb |= m
                        h = np.uint64(anyb != 0)
                        t_d[nhit] = ((vb << np.uint64(32)) | (fan[a + np.uint64(2)] << np.uint64(16))
                                     | fan[q + np.uint64(2)])
                        t_w[nhit] = (ln << np.uint64(32)) | nwd
                        nhit += h
                        nwd += h * ((ln + np.uint64(63)) >> np.uint64(6))
                        nsyn += np.int64(ln)
                        q += np.uint64(4)
                    a += np.uint64(3)
                if nhit == 0:
                    continue
                mg = mag[l]
                nk = 0
                kmin = np.uint64(0xFFFFFFFFFFFFFFFF)
                for m in range(nhit):
                    tw = t_w[m]
                    td = t_d[m]
                    ln = tw >> np.uint64(32)
                    w0 = tw & np.uint64(0xFFFFFFFF)
                    vb = td >> np.uint64(32)
                    p0 = td & np.uint64(0xFFFFFFFF)
                    for wi in range((ln + np.uint64(63)) >> np.uint64(6)):
                        wd = bits[w0 + wi]
                        # zeroed once read: a run without a spike writes only zero bytes, so every word
                        # (the bytes past a run's end included) is zero when an event starts
                        bits[w0 + wi] = 0
                        while wd != 0:
                            kk = (wi << np.uint64(6)) + _ctz(wd)
                            wd &= wd - np.uint64(1)
                            if split:  # the neuron fired: reset it (it holds min(x, hi) >= thr)
                                if rz:
                                    v[vb + kk] = max(zero, vmin)
                                else:
                                    v[vb + kk] = max(v[vb + kk] - thr, vmin)
                            cm = (kk * mg) >> np.uint64(40)
                            key = ((kk - cm * nO) << np.uint64(32)) | (p0 + cm)
                            keys[nk] = key
                            kmin = min(kmin, key)
                            nk += 1
                roff = lp[row, ROFF]
                last = np.int64(l) == L - 1
                if roff >= 0 or last:
                    nHo = np.uint64(lp[row, HO])
                    nWo = np.uint64(lp[row, WO])
                    for ki in range(nk):
                        key = keys[ki]
                        flat = ((key >> np.uint64(32)) * nHo + ((key >> np.uint64(16)) & M16)) * nWo + (key & M16)
                        if roff >= 0:
                            rec[r, tb, np.uint64(roff) + flat] += 1
                        if last:
                            out[r, tb, flat] += 1
                if not last:
                    nxt = (l + np.uint64(1)) << np.uint64(48)
                    top = sp + nk - 1
                    if nk > 32:
                        _sort_small(keys, nk)
                        for ki in range(nk):
                            stk[top - ki] = nxt | keys[ki]
                    elif nk > 1:
                        for ki in range(nk):
                            key = keys[ki]
                            rank = 0
                            for kj in range(nk):
                                rank += keys[kj] < key
                            stk[top - rank] = nxt | key
                    sp += nk - 1  # the smallest key (on top) is processed next, from a register
                    ev = nxt | kmin
                    l += np.uint64(1)  # known before kmin: the next layer's parameters load early
                    carry = True
        syn[r] = nsyn
    return out, rec, syn


@njit(parallel=True, cache=True, nogil=True)
def integrate_only(tr_l, tr_c, tr_y, tr_x, tr_off, lp, wts, fan, n_state, n_sets):
    """The throughput ceiling of :func:`run_events`: only its synaptic additions. Run ``r`` (as
    in :func:`run_events`) delivers the events ``tr_off[r]:tr_off[r+1]`` (chip layer ``tr_l``,
    channel and position ``tr_c, tr_y, tr_x`` before pooling) and adds, saturating, each one's
    weights to the neurons it projects to, through the same fan-out table, state and weight
    layout and dtype as :func:`run_events`; no threshold check, reset, lower bound, spike or
    queue. Fed the events a run of :func:`run_events` delivered, it makes the same synaptic
    updates; returns their count per run."""
    R = tr_off.shape[0] - 1
    S = n_sets
    L = lp.shape[0] // S
    B = R // S
    syn = np.zeros(R, np.int64)
    lo = wts.dtype.type(-32768)
    hi = wts.dtype.type(32767)
    for i in prange(R):
        b = i // S
        s0 = (i - b * S) * L
        r = (i - b * S) * B + b
        v = np.zeros(n_state, wts.dtype)
        nsyn = 0
        for e in range(tr_off[r], tr_off[r + 1]):
            row = s0 + tr_l[e]
            inside, nO, voff, wc, a0, a1, c0, c1 = _landing(lp, fan, row, np.uint64(tr_c[e]), np.uint64(tr_y[e]),
                                                            np.uint64(tr_x[e]))
            if not inside:
                continue
            nt = np.uint64(0)
            a = a0
            while a < a1:
                va = voff + fan[a]
                wa = wc + fan[a + np.uint64(1)]
                q = c0
                while q < c1:
                    vb = va + fan[q]
                    wb = wa + fan[q + np.uint64(1)]
                    ln = fan[q + np.uint64(3)] * nO
                    for k in range(ln):
                        v[vb + k] = min(max(v[vb + k] + wts[wb + k], lo), hi)
                    nt += ln
                    q += np.uint64(4)
                a += np.uint64(3)
            nsyn += np.int64(nt)
        syn[r] = nsyn
    return syn


@njit(parallel=True, cache=True, nogil=True)
def integrate_blocks(tr_l, tr_c, tr_y, tr_x, tr_off, lp, wts, fan, n_state, n_sets, detect):
    """:func:`integrate_only` with the additions written as :func:`run_events` writes them, for the
    benchmark: 8-lane vector blocks and a scalar tail per run. ``detect=False``: the additions alone
    (:func:`_block_add`), to check that the ceiling is not slower than the loop's own way of adding.
    ``detect=True``: plus the threshold detection of the loop's first pass, nothing more: each block
    clamps to the layer's lower bound and returns its spike bits (:func:`_block_split`), which are
    stored and OR-ed per run as the loop does; no reset, run record, sort, stack or output (the bits
    are not acted on, so the replayed state drifts from the loop's; the work per block does not
    depend on the bits), which splits the loop's cost above the ceiling into detection and the
    spike path. Same arguments as :func:`integrate_only` (plus ``detect``); returns the synaptic
    updates per run and whether any bit was set in it (so that the compiler keeps the bits)."""
    R = tr_off.shape[0] - 1
    S = n_sets
    L = lp.shape[0] // S
    B = R // S
    syn = np.zeros(R, np.int64)
    hits = np.zeros(R, np.bool_)
    n_bytes = 1
    for l in range(L):
        n_bytes = max(n_bytes, lp[l, KW] * lp[l, O] // 8 + 1)
    lo = wts.dtype.type(-32768)
    hi = wts.dtype.type(32767)
    for i in prange(R):
        b = i // S
        s0 = (i - b * S) * L
        r = (i - b * S) * B + b
        v = np.zeros(n_state, wts.dtype)
        bits8 = np.zeros(n_bytes, np.uint8)
        seen = np.uint64(0)
        nsyn = 0
        for e in range(tr_off[r], tr_off[r + 1]):
            row = s0 + tr_l[e]
            inside, nO, voff, wc, a0, a1, c0, c1 = _landing(lp, fan, row, np.uint64(tr_c[e]), np.uint64(tr_y[e]),
                                                            np.uint64(tr_x[e]))
            if not inside:
                continue
            thr = wts.dtype.type(lp[row, THR])
            vmin = wts.dtype.type(max(lp[row, VMIN], -32768))
            nt = np.uint64(0)
            a = a0
            while a < a1:
                va = voff + fan[a]
                wa = wc + fan[a + np.uint64(1)]
                q = c0
                while q < c1:
                    vb = va + fan[q]
                    wb = wa + fan[q + np.uint64(1)]
                    ln = fan[q + np.uint64(3)] * nO
                    nfull = ln & ~np.uint64(7)
                    if detect:
                        anyb = np.uint64(0)
                        for k0 in range(np.uint64(0), nfull, np.uint64(8)):
                            m = _block_split(v, vb + k0, wts, wb + k0, thr, vmin, hi)
                            bits8[k0 >> np.uint64(3)] = np.uint8(m)
                            anyb |= m
                        for k in range(nfull, ln):
                            val = min(v[vb + k] + wts[wb + k], hi)
                            anyb |= np.uint64(val >= thr)
                            v[vb + k] = max(val, vmin)
                        seen |= anyb
                    else:
                        for k0 in range(np.uint64(0), nfull, np.uint64(8)):
                            _block_add(v, vb + k0, wts, wb + k0, lo, hi)
                        for k in range(nfull, ln):
                            v[vb + k] = min(max(v[vb + k] + wts[wb + k], lo), hi)
                    nt += ln
                    q += np.uint64(4)
                a += np.uint64(3)
            nsyn += np.int64(nt)
        syn[r] = nsyn
        hits[r] = seen != 0
    return syn, hits


@njit(parallel=True, cache=True, nogil=True)
def run_events_reference(ev_c, ev_y, ev_x, ev_bin, ev_off, lp, wts, n_state, n_bins, n_out, rec_size, stack_cap, n_sets=1,
                         trace=None):
    """The straightforward loop of the semantics above, as the backend ran it until the
    rewrite of :func:`run_events` (kept unchanged as its cross-check: the tests and
    ``benchmarks/speck_throughput.py`` compare the two bit for bit). Same arguments and results as
    :func:`run_events` without the fan-out table (it reads only the first 20 columns of ``lp``).

    ``trace`` (for the benchmark's ceiling; ``None``: nothing recorded, and numba compiles the
    loop without it): a tuple ``(t_l, t_c, t_y, t_x, t_n)`` of ``[S*B, cap]`` int32 arrays and an
    int64 ``[S*B]`` count; every event run ``r`` delivers to a layer (layer, channel, position
    before pooling), in processing order, is written to row ``r`` (the first ``cap``), and
    ``t_n[r]`` counts them all.

    Run every sample ``b`` (events ``ev_off[b]:ev_off[b+1]``) of every parameter set ``s``
    (rows ``s*L:(s+1)*L`` of ``lp``, ``L = lp.shape[0] // n_sets``) through the chip layers.

    Memory layout: neuron state channel-last ``[Ho, Wo, O]`` per layer, weights
    ``[C, KH, KW, O]`` per layer (so the innermost loop over output channels is contiguous);
    spike order and recorded indices use the channel-major flat index ``(o, oy, ox)``.
    ``lp[:, ROFF] < 0`` disables recording of a layer. The state and recording layout
    (``VOFF``, ``ROFF``) is the same for every set.

    Returns, with ``r = s * B + b`` (``r = b`` for one set): ``out[r, t, k]`` (output spike
    counts of the last layer per time bin), ``rec[r, t, j]`` (spike counts of every layer,
    concatenated at offsets ``lp[:, ROFF]``; empty when ``rec_size == 0``) and ``syn[r]``
    (synaptic updates). The (set, sample) pairs run in parallel, sample-major (the sets of one
    sample side by side, so a thread reads a sample's events for several sets in a row).
    """
    B = ev_off.shape[0] - 1
    S = n_sets
    L = lp.shape[0] // S
    out = np.zeros((S * B, n_bins, n_out), np.int32)
    rec = np.zeros((S * B, n_bins, rec_size), np.int32)
    syn = np.zeros(S * B, np.int64)
    n_targets = 1  # an event reaches at most kh * kw positions of a layer
    for l in range(L):
        n_targets = max(n_targets, lp[l, KH] * lp[l, KW])
    for i in prange(S * B):
        b = i // S
        s0 = (i - b * S) * L  # first row of this set's layer block
        r = (i - b * S) * B + b  # output row
        v = np.zeros(n_state, np.int32)
        s_l = np.empty(stack_cap, np.int32)
        s_c = np.empty(stack_cap, np.int32)
        s_y = np.empty(stack_cap, np.int32)
        s_x = np.empty(stack_cap, np.int32)
        t_oy = np.empty(n_targets, np.int32)  # receptive-field targets of the current event
        t_ox = np.empty(n_targets, np.int32)
        t_k = np.empty(n_targets, np.int32)
        nsyn = 0
        for e in range(ev_off[b], ev_off[b + 1]):
            tb = ev_bin[e]
            s_l[0] = 0
            s_c[0] = ev_c[e]
            s_y[0] = ev_y[e]
            s_x[0] = ev_x[e]
            sp = 1
            while sp > 0:
                sp -= 1
                l = s_l[sp]
                if trace is not None:
                    k = trace[4][r]
                    if k < trace[0].shape[1]:
                        trace[0][r, k] = l
                        trace[1][r, k] = s_c[sp]
                        trace[2][r, k] = s_y[sp]
                        trace[3][r, k] = s_x[sp]
                    trace[4][r] = k + 1
                c = s_c[sp]
                y = s_y[sp] // lp[s0 + l, PH_]
                x = s_x[sp] // lp[s0 + l, PW_]
                if y >= lp[s0 + l, H] or x >= lp[s0 + l, W]:
                    continue
                nC = lp[s0 + l, C]
                nO = lp[s0 + l, O]
                nHo = lp[s0 + l, HO]
                nWo = lp[s0 + l, WO]
                kh = lp[s0 + l, KH]
                kw = lp[s0 + l, KW]
                sh = lp[s0 + l, SH]
                sw = lp[s0 + l, SW]
                ph = lp[s0 + l, PADH]
                pw = lp[s0 + l, PADW]
                woff = lp[s0 + l, WOFF]
                voff = lp[s0 + l, VOFF]
                # the neurons (oy, ox) this event projects to, in descending flat order: kernel
                # rows ki with y + ph - ki = oy * sh, 0 <= oy < nHo, in ascending order (only
                # those: a full-input kernel of a dense layer has one), likewise columns
                ty = y + ph
                ki = _first_tap(ty, nHo, sh)
                ki_end = min(kh - 1, ty)
                tx = x + pw
                kj0 = _first_tap(tx, nWo, sw)
                kj_end = min(kw - 1, tx)
                nt = 0
                while ki <= ki_end:
                    oy = ty - ki if sh == 1 else (ty - ki) // sh
                    kj = kj0
                    while kj <= kj_end:
                        t_oy[nt] = oy
                        t_ox[nt] = tx - kj if sw == 1 else (tx - kj) // sw
                        t_k[nt] = ki * kw + kj
                        nt += 1
                        kj += sw
                    ki += sh
                # 1) integrate
                for j in range(nt):
                    base = voff + (t_oy[j] * nWo + t_ox[j]) * nO
                    wbase = woff + (c * kh * kw + t_k[j]) * nO
                    for o in range(nO):
                        idx = base + o
                        val = v[idx] + wts[wbase + o]
                        if val > 32767:
                            val = 32767
                        elif val < -32768:
                            val = -32768
                        v[idx] = val
                        nsyn += 1
                # 2) fire check, visiting touched neurons in *descending* flat order and pushing,
                #    so that the stack pops them in ascending order
                thr = lp[s0 + l, THR]
                vmin = lp[s0 + l, VMIN]
                rz = lp[s0 + l, RZERO]
                roff = lp[s0 + l, ROFF]
                last = l == L - 1
                for o in range(nO - 1, -1, -1):
                    for j in range(nt):
                        oy = t_oy[j]
                        ox = t_ox[j]
                        flat = (o * nHo + oy) * nWo + ox
                        idx = voff + (oy * nWo + ox) * nO + o
                        val = v[idx]
                        if val >= thr:
                            if rz == 1:
                                val = 0
                            else:
                                val = val - thr
                            if roff >= 0:
                                rec[r, tb, roff + flat] += 1
                            if last:
                                out[r, tb, flat] += 1
                            else:
                                s_l[sp] = l + 1
                                s_c[sp] = o
                                s_y[sp] = oy
                                s_x[sp] = ox
                                sp += 1
                        if val < vmin:
                            val = vmin
                        v[idx] = val
        syn[r] = nsyn
    return out, rec, syn


@njit(parallel=True, cache=True, nogil=True)
def integrate_only_reference(tr_l, tr_c, tr_y, tr_x, tr_off, lp, wts, n_state, n_sets):
    """:func:`integrate_only` in the layout of :func:`run_events_reference` (int32 state and
    weights ``[C, KH, KW, O]``, the targets found per event with :func:`_first_tap` and integer
    division), its additions written as well as that layout allows (a slice per target and a
    branch-free clamp, which the compiler vectorizes; the previous loop itself adds with branches
    and signed indices): the integrate-only ceiling as it stood before the rewrite, for the
    benchmark's comparison. Same arguments (without ``fan``) and result as :func:`integrate_only`."""
    R = tr_off.shape[0] - 1
    S = n_sets
    L = lp.shape[0] // S
    B = R // S
    syn = np.zeros(R, np.int64)
    n_targets = 1
    for l in range(L):
        n_targets = max(n_targets, lp[l, KH] * lp[l, KW])
    for i in prange(R):
        b = i // S
        s0 = (i - b * S) * L
        r = (i - b * S) * B + b
        v = np.zeros(n_state, np.int32)
        t_sp = np.empty(n_targets, np.int64)
        t_k = np.empty(n_targets, np.int64)
        nsyn = 0
        for e in range(tr_off[r], tr_off[r + 1]):
            l = tr_l[e]
            c = tr_c[e]
            y = tr_y[e] // lp[s0 + l, PH_]
            x = tr_x[e] // lp[s0 + l, PW_]
            if y >= lp[s0 + l, H] or x >= lp[s0 + l, W]:
                continue
            nO = lp[s0 + l, O]
            nHo = lp[s0 + l, HO]
            nWo = lp[s0 + l, WO]
            kh = lp[s0 + l, KH]
            kw = lp[s0 + l, KW]
            sh = lp[s0 + l, SH]
            sw = lp[s0 + l, SW]
            woff = lp[s0 + l, WOFF]
            voff = lp[s0 + l, VOFF]
            ty = y + lp[s0 + l, PADH]
            ki = _first_tap(ty, nHo, sh)
            ki_end = min(kh - 1, ty)
            tx = x + lp[s0 + l, PADW]
            kj0 = _first_tap(tx, nWo, sw)
            kj_end = min(kw - 1, tx)
            nt = 0
            while ki <= ki_end:
                oy = ty - ki if sh == 1 else (ty - ki) // sh
                kj = kj0
                while kj <= kj_end:
                    t_sp[nt] = oy * nWo + (tx - kj if sw == 1 else (tx - kj) // sw)
                    t_k[nt] = ki * kw + kj
                    nt += 1
                    kj += sw
                ki += sh
            for j in range(nt):  # one slice per target (an unsigned view: vectorized)
                vs = v[voff + t_sp[j] * nO:voff + (t_sp[j] + 1) * nO]
                wb = woff + (c * kh * kw + t_k[j]) * nO
                ws = wts[wb:wb + nO]
                for o in range(nO):
                    val = np.int32(vs[o]) + np.int32(ws[o])
                    vs[o] = min(max(val, -32768), 32767)
            nsyn += nt * nO
        syn[r] = nsyn
    return syn
