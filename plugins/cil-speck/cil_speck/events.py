"""Conversions between event streams, dense binned tensors and the flat arrays the compiled
loop reads.

Time bins. An :class:`~cil_core.EventBatch` covering ``duration_us`` is split into ``T`` equal
bins; an event at time ``t`` falls into bin ``min(T-1, floor(t * T / duration_us))`` (events with
``t < 0`` into bin 0). :func:`events_to_dense` bins with exactly this rule, and the backend bins
its output spikes with the bin of the input event that caused them.

Dense input. When a backend receives a plain tensor ``[T, B, *input_shape]`` of non-negative
integer counts, every count ``n`` at bin ``t`` and position ``(c, y, x)`` becomes ``n`` events at
the bin's start (time ``t`` µs with 1 µs bins, ``duration_us = T``). Within one bin the events
are ordered by ascending flat input index ``(c, y, x)`` (channel-major, then row, column), the
``n`` copies of one position consecutively. For a flat input ``(n,)`` the position is
``(c=i, y=0, x=0)``.

Polarity. With a 2-channel input, channel = 1 for ``p > 0`` (ON) and 0 otherwise (OFF, whether
coded 0 or -1); with a 1-channel input both polarities go to channel 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from numba import njit

from cil_core import ShapeError

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])


def time_bins(t: np.ndarray, n_bins: int, duration_us: float) -> np.ndarray:
    b = np.floor(t.astype(np.float64) * n_bins / float(duration_us)).astype(np.int64)
    return np.clip(b, 0, n_bins - 1)


def events_to_dense(events: Sequence[np.ndarray], n_bins: int, duration_us: float,
                    sensor_shape: tuple[int, int, int]) -> torch.Tensor:
    """``[T, B, C, H, W]`` event counts (float32) with the binning rule of this module."""
    C, H, W = sensor_shape
    out = np.zeros((len(events), n_bins, C, H, W), np.float32)
    for i, ev in enumerate(events):
        if len(ev) == 0:
            continue
        tb = time_bins(ev["t"], n_bins, duration_us)
        c = (ev["p"] > 0).astype(np.int64) if C == 2 else np.zeros(len(ev), np.int64)
        np.add.at(out[i], (tb, c, ev["y"].astype(np.int64), ev["x"].astype(np.int64)), 1.0)
    return torch.from_numpy(out).transpose(0, 1).contiguous()


@njit(cache=True, nogil=True)
def _count_events(counts):
    """Events per sample of ``counts[T, B, F]``; -1 for a sample holding a negative or
    non-integer count."""
    T, B, F = counts.shape
    n = np.zeros(B, np.int64)
    for t in range(T):
        for b in range(B):
            for f in range(F):
                v = counts[t, b, f]
                if v != 0:
                    k = np.int64(v)
                    if v < 0 or k != v:
                        n[b] = -1
                        return n
                    n[b] += k
    return n


@njit(cache=True, nogil=True)
def _fill_events(counts, off, hw, w, ev_c, ev_y, ev_x, ev_bin):
    """Write every sample's events at ``off[b]``: by bin, then flat index, copies consecutive."""
    T, B, F = counts.shape
    for b in range(B):
        e = off[b]
        for t in range(T):
            for f in range(F):
                k = np.int64(counts[t, b, f])
                if k == 0:
                    continue
                c = f // hw
                rem = f - c * hw
                y = rem // w
                x = rem - y * w
                for _ in range(k):
                    ev_c[e] = c
                    ev_y[e] = y
                    ev_x[e] = x
                    ev_bin[e] = t
                    e += 1


def dense_to_arrays(x: torch.Tensor):
    """Flat event arrays from a dense count tensor ``[T, B, *shape]`` (see the module docstring)."""
    xd = x.detach().cpu()
    if xd.dtype == torch.bool:
        xd = xd.to(torch.uint8)
    elif xd.dtype in (torch.float16, torch.bfloat16):
        xd = xd.to(torch.float32)
    T, B = xd.shape[:2]
    feat = xd.shape[2:]
    shape3 = (int(feat[0]), int(feat[1]), int(feat[2])) if len(feat) == 3 else (int(np.prod(feat)), 1, 1)
    counts = np.ascontiguousarray(xd.reshape(T, B, -1).numpy())
    n = _count_events(counts)
    if bool((n < 0).any()):
        raise ShapeError("speck: a dense input must hold non-negative integer event counts")
    off = np.zeros(B + 1, np.int64)
    np.cumsum(n, out=off[1:])
    total = int(off[-1])
    ev_c, ev_y, ev_x, ev_bin = (np.empty(total, np.int32) for _ in range(4))
    _fill_events(counts, off, shape3[1] * shape3[2], shape3[2], ev_c, ev_y, ev_x, ev_bin)
    return ev_c, ev_y, ev_x, ev_bin, off


def eventbatch_to_arrays(events: Sequence[np.ndarray], n_bins: int, duration_us: float,
                         input_shape: tuple[int, int, int]):
    """Flat event arrays from a list of structured event arrays (fields t, x, y, p); each
    sample's events in timestamp order (ties in the order given)."""
    C, H, W = input_shape
    if C not in (1, 2):
        raise ShapeError(f"speck: event streams need a 1- or 2-channel (polarity) input, the network has {C} channels")
    lens = np.asarray([len(ev) for ev in events], np.int64)
    off = np.zeros(len(events) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    if off[-1] == 0:
        z = np.zeros(0, np.int32)
        return z, z.copy(), z.copy(), z.copy(), off
    field = lambda name: np.concatenate([np.asarray(ev[name]) for ev in events])  # noqa: E731
    t, x, y, p = field("t"), field("x").astype(np.int64), field("y").astype(np.int64), field("p")
    back = np.diff(t) < 0
    starts = off[1:-1] - 1  # a new sample may start earlier than the last one ended
    back[starts[(starts >= 0) & (starts < len(back))]] = False
    if back.any():  # stable: by sample, then time, ties in the given order
        order = np.lexsort((t, np.repeat(np.arange(len(events)), lens)))
        t, x, y, p = t[order], x[order], y[order], p[order]
    if x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H:
        raise ShapeError(f"speck: event coordinates outside the {W}x{H} input")
    c = (p > 0).astype(np.int32) if C == 2 else np.zeros(len(p), np.int32)
    return c, y.astype(np.int32), x.astype(np.int32), time_bins(t, n_bins, duration_us).astype(np.int32), off
