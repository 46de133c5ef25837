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
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# column indices of the per-layer parameter table ``lp``
C, H, W, PH_, PW_, O, HO, WO, KH, KW, SH, SW, PADH, PADW, THR, VMIN, RZERO, WOFF, VOFF, ROFF = range(20)
N_PARAMS = 20


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
def run_events(ev_c, ev_y, ev_x, ev_bin, ev_off, lp, wts, n_state, n_bins, n_out, rec_size, stack_cap, n_sets=1):
    """Run every sample ``b`` (events ``ev_off[b]:ev_off[b+1]``) of every parameter set ``s``
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
