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


def dense_to_arrays(x: torch.Tensor):
    """Flat event arrays from a dense count tensor ``[T, B, *shape]`` (see the module docstring)."""
    xd = x.detach().cpu()
    if xd.is_floating_point():
        if bool((xd < 0).any()) or bool((xd != torch.round(xd)).any()):
            raise ShapeError("speck: a dense input must hold non-negative integer event counts")
    T, B = xd.shape[:2]
    feat = xd.shape[2:]
    shape3 = (int(feat[0]), int(feat[1]), int(feat[2])) if len(feat) == 3 else (int(np.prod(feat)), 1, 1)
    counts = xd.reshape(T, B, -1).permute(1, 0, 2).numpy().astype(np.int64)  # [B, T, F]
    b, t, f = np.nonzero(counts)  # row-major: by sample, then bin, then flat index
    n = counts[b, t, f]
    b, t, f = np.repeat(b, n), np.repeat(t, n), np.repeat(f, n)
    c, rem = np.divmod(f, shape3[1] * shape3[2])
    yy, xx = np.divmod(rem, shape3[2])
    off = np.zeros(B + 1, np.int64)
    np.cumsum(np.bincount(b, minlength=B), out=off[1:])
    return (c.astype(np.int32), yy.astype(np.int32), xx.astype(np.int32), t.astype(np.int32), off)


def eventbatch_to_arrays(events: Sequence[np.ndarray], n_bins: int, duration_us: float,
                         input_shape: tuple[int, int, int]):
    """Flat event arrays from a list of structured event arrays (fields t, x, y, p)."""
    C, H, W = input_shape
    if C not in (1, 2):
        raise ShapeError(f"speck: event streams need a 1- or 2-channel (polarity) input, the network has {C} channels")
    cs, ys, xs, bs, lens = [], [], [], [], []
    for ev in events:
        order = np.argsort(ev["t"], kind="stable")
        ev = ev[order]
        x = ev["x"].astype(np.int64)
        y = ev["y"].astype(np.int64)
        if len(ev) and (x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H):
            raise ShapeError(f"speck: event coordinates outside the {W}x{H} input")
        cs.append((ev["p"] > 0).astype(np.int32) if C == 2 else np.zeros(len(ev), np.int32))
        ys.append(y.astype(np.int32))
        xs.append(x.astype(np.int32))
        bs.append(time_bins(ev["t"], n_bins, duration_us).astype(np.int32))
        lens.append(len(ev))
    off = np.zeros(len(events) + 1, np.int64)
    np.cumsum(np.asarray(lens, np.int64), out=off[1:])
    cat = (lambda a: np.concatenate(a) if a else np.zeros(0, np.int32))
    return cat(cs), cat(ys), cat(xs), cat(bs), off
