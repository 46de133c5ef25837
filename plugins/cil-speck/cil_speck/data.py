"""Event data for the Speck-style backend.

**synthetic N-MNIST-like digits** (:func:`synthetic_nmnist`; offline, no download). The 1,797 8x8
digits that scikit-learn ships (``load_digits``) are upscaled bilinearly to 24x24, placed on a
34x34 canvas and moved along N-MNIST's three saccades (the triangle (0,0) → (3.5,7) → (7,0) →
(0,0) pixels, 105 ms each, as in tonic's ``NMNIST.stabilize``). A simulated DVS pixel compares
the log intensity ``log(I + 0.2)`` of every frame (``frames_per_saccade`` per saccade) with its
last reference level and emits ``floor(|Δ| / C)`` events (at most ``max_events_per_frame``) of
polarity ON (p = 1, brighter) or OFF (p = 0), moving its reference by that many ``C``; event
times are the frame time plus a uniform jitter inside the frame. Output: 2x34x34 events, tonic's
field names (x, y, t in µs, p). This is **synthetic** data, not N-MNIST: accuracies on it are
not comparable with published N-MNIST figures. Generation is vectorized over samples (numpy) and
nothing is cached.

**N-MNIST** (:func:`load_nmnist`, via ``tonic.datasets.NMNIST``) when it is present: put the
archives and the extracted folders under ``<root>/NMNIST/`` —
``<root>/NMNIST/train.zip`` and ``<root>/NMNIST/Train/<digit>/*.bin`` (≥ 10,000 files; likewise
``test.zip`` and ``Test/``); tonic then loads offline. Each event is 5 bytes: x, y, then polarity
(bit 7) and a 23-bit big-endian µs timestamp (:func:`write_nmnist_bin` writes this format).

Both return a :class:`~cil_core.SpikeData` whose inputs are an :class:`~cil_core.EventBatch`:
raw events for the event-driven chip and a dense ``[T, N, 2, 34, 34]`` view (binning rule of
:mod:`cil_speck.events`) for the time-stepped software model.

**Lazily** (:class:`NMNISTDataset`): a torch ``Dataset`` over the same files whose samples are
``(events, label)`` (one file read per sample, nothing held) and whose ``collate_fn``
(:class:`EventCollate`) bins one batch at a time into an :class:`~cil_core.EventBatch`, so
``Trainer.fit(NMNISTDataset(root))`` streams N-MNIST with memory O(batch) and the event-driven
chip still sees each batch's raw events. ``load_nmnist`` is this dataset collated whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cil_core import EventBatch, SpikeData
from cil_core.errors import DataError, OptionError, ShapeError

from .events import EVENT_DTYPE, events_to_dense

SENSOR = (2, 34, 34)
SACCADE_US = 105_000
DURATION_US = 3 * SACCADE_US
_TRIANGLE = np.array([(0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0)])  # (dx, dy)


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Bilinear sub-pixel shift of ``[N, H, W]`` images (zeros enter at the border)."""
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    N, H, W = img.shape
    pad = np.zeros((N, H + 2, W + 2), img.dtype)
    pad[:, 1:-1, 1:-1] = img

    def at(ox: int, oy: int) -> np.ndarray:
        out = np.zeros_like(img)
        ys, xs = slice(max(0, oy), min(H, H + oy)), slice(max(0, ox), min(W, W + ox))
        yd, xd = slice(max(0, -oy), min(H, H - oy)), slice(max(0, -ox), min(W, W - ox))
        out[:, ys, xs] = img[:, yd, xd]
        return out

    return ((1 - fx) * (1 - fy) * at(ix, iy) + fx * (1 - fy) * at(ix + 1, iy)
            + (1 - fx) * fy * at(ix, iy + 1) + fx * fy * at(ix + 1, iy + 1))


def digits_to_events(images: np.ndarray, seed: int = 0, frames_per_saccade: int = 12, contrast: float = 0.4,
                     max_events_per_frame: int = 2) -> list[np.ndarray]:
    """Simulated saccade + DVS conversion of ``[N, h, w]`` intensity images in [0, 1]."""
    rng = np.random.default_rng(seed)
    N = images.shape[0]
    up = torch.nn.functional.interpolate(torch.as_tensor(images, dtype=torch.float32)[:, None], size=(24, 24),
                                         mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    canvas = np.zeros((N, 34, 34), np.float32)
    canvas[:, 1:25, 1:25] = up
    ref = np.log(canvas + 0.2)
    n_frames = 3 * frames_per_saccade
    frame_us = DURATION_US / n_frames
    parts: list[tuple[np.ndarray, ...]] = []
    for k in range(1, n_frames + 1):
        seg, frac = divmod(k / frames_per_saccade, 1.0)
        seg = int(min(seg, 2)) if k < n_frames else 2
        frac = 1.0 if k == n_frames else (k - seg * frames_per_saccade) / frames_per_saccade
        dx, dy = _TRIANGLE[seg] + frac * (_TRIANGLE[seg + 1] - _TRIANGLE[seg])
        level = np.log(_shift(canvas, dx, dy) + 0.2)
        diff = level - ref
        n = np.minimum(np.floor(np.abs(diff) / contrast), max_events_per_frame).astype(np.int64)
        ref += np.sign(diff) * n * contrast
        s, y, x = np.nonzero(n)
        cnt = n[s, y, x]
        pol = (diff[s, y, x] > 0).astype(np.int8)
        s, y, x, pol = (np.repeat(a, cnt) for a in (s, y, x, pol))
        t = ((k - 1) * frame_us + rng.uniform(0, frame_us, len(s))).astype(np.int64)
        parts.append((s, t, x, y, pol))
    s, t, x, y, p = (np.concatenate([pp[i] for pp in parts]) for i in range(5))
    order = np.lexsort((t, s))
    s, t, x, y, p = s[order], t[order], x[order], y[order], p[order]
    ev = np.zeros(len(s), EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    splits = np.cumsum(np.bincount(s, minlength=N))[:-1]
    return np.split(ev, splits)


def synthetic_nmnist(train: bool = True, n_bins: int = 15, n_samples: int | None = None, seed: int = 0,
                     test_fraction: float = 0.3, **dvs) -> SpikeData:
    """The synthetic N-MNIST-like digit set (see the module docstring): a seeded, stratified-free
    split of sklearn's 1,797 digits (``test_fraction`` for the test part), at most ``n_samples``."""
    images, labels = digit_split(train, test_fraction)
    if n_samples is not None:
        images, labels = images[:n_samples], labels[:n_samples]
    events = digits_to_events(images, seed=seed + (0 if train else 1), **dvs)
    dense = events_to_dense(events, n_bins, DURATION_US, SENSOR)
    return SpikeData(EventBatch(dense, events, float(DURATION_US)), torch.as_tensor(labels))


def digit_split(train: bool = True, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """The training (or test) part of sklearn's 1,797 8x8 digits as ``(images [N, 8, 8] in [0, 1],
    labels [N])``: a fixed seeded permutation (independent of any other seed), its first
    ``test_fraction`` the test part (539 digits at 0.3; 1,258 for training)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(1234).permutation(len(d.target))
    n_test = int(round(test_fraction * len(perm)))
    idx = perm[n_test:] if train else perm[:n_test]
    return d.images[idx] / 16.0, d.target[idx]


# --------------------------------------------------------------------------- N-MNIST (tonic)
def write_nmnist_bin(path: str | Path, events: np.ndarray) -> None:
    """Write events (fields x, y, t, p) in the N-MNIST binary format (5 bytes per event)."""
    x = events["x"].astype(np.uint32)
    y = events["y"].astype(np.uint32)
    t = events["t"].astype(np.uint32) & 0x7FFFFF
    p = (events["p"] > 0).astype(np.uint32)
    buf = np.zeros((len(events), 5), np.uint8)
    buf[:, 0], buf[:, 1] = x, y
    buf[:, 2] = (p << 7) | (t >> 16)
    buf[:, 3], buf[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    Path(path).write_bytes(buf.tobytes())


def as_event_array(events: np.ndarray) -> np.ndarray:
    """Any structured array with fields x, y, t, p (tonic's layout) as this package's
    :data:`~cil_speck.events.EVENT_DTYPE`, sorted by time (stable)."""
    out = np.zeros(len(events), EVENT_DTYPE)
    for f in ("x", "y", "t", "p"):
        out[f] = events[f]
    return out[np.argsort(out["t"], kind="stable")]


def tonic_sensor(sensor_size: Sequence[int]) -> tuple[int, int, int]:
    """tonic's ``sensor_size`` ``(W, H, P)`` (e.g. ``NMNIST.sensor_size == (34, 34, 2)``) as the
    ``(C, H, W)`` input shape of a network (``P`` polarities as channels)."""
    if len(sensor_size) != 3 or any(int(v) < 1 for v in sensor_size):
        raise ShapeError(f"a tonic sensor_size is (width, height, polarities), got {tuple(sensor_size)!r}")
    w, h, p = (int(v) for v in sensor_size)
    return (p, h, w)


class EventCollate:
    """Collate ``(events, label)`` samples into ``(EventBatch, labels [B])``: the raw events (as
    :func:`as_event_array`) and their dense ``[n_bins, B, *sensor]`` view (:mod:`cil_speck.events`'s
    binning over ``duration_us``: bin ``min(n_bins-1, floor(t n_bins / duration_us))``, channel 1
    for ``p > 0`` with a 2-channel sensor). The event-driven ``speck`` backend runs the events of
    the batch, the time-stepped software model its dense view; nothing beyond one batch is ever
    binned. ``events`` may be any structured array with fields ``x, y, t, p`` — what a tonic
    dataset yields without ``ToFrame`` (:meth:`for_dataset` reads its ``sensor_size``).

    Every sample is checked: a sample that is not raw events (e.g. frames after ``ToFrame``),
    lacks a field, holds an event outside the sensor or a fractional/negative label is refused
    with a :class:`~cil_core.errors.ShapeError` / :class:`~cil_core.errors.DataError` naming
    the sample of the batch. A plain class: picklable, works with ``num_workers > 0``."""

    def __init__(self, n_bins: int, duration_us: float = float(DURATION_US),
                 sensor: tuple[int, int, int] = SENSOR) -> None:
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise OptionError(f"EventCollate: n_bins must be a whole number >= 1, got {n_bins!r}")
        if isinstance(duration_us, bool) or not isinstance(duration_us, (int, float)) or not duration_us > 0:
            raise OptionError(f"EventCollate: duration_us must be a positive number of µs, got {duration_us!r}")
        if len(sensor) != 3 or any(int(v) < 1 for v in sensor):
            raise OptionError(f"EventCollate: sensor is (channels, height, width), got {tuple(sensor)!r}")
        self.n_bins, self.duration_us, self.sensor = int(n_bins), float(duration_us), tuple(int(v) for v in sensor)

    @classmethod
    def for_dataset(cls, dataset: Any, n_bins: int, duration_us: float | None = None) -> "EventCollate":
        """The collate function of a tonic dataset's raw events: the sensor from its
        ``sensor_size`` (looked up through wrappers: ``.dataset``), the duration ``duration_us``
        (N-MNIST's 315 ms by default for ``tonic.datasets.NMNIST``; other datasets must state it)."""
        size, ds = None, dataset
        while ds is not None and size is None:
            size = getattr(ds, "sensor_size", None)
            if size is None:
                ds = getattr(ds, "dataset", None)
        if size is None:
            raise OptionError(f"EventCollate.for_dataset: {type(dataset).__name__} has no sensor_size (nor does a "
                              "dataset it wraps); give the sensor yourself: EventCollate(n_bins, duration_us, "
                              "sensor=(C, H, W))")
        if duration_us is None:
            if type(ds).__name__ != "NMNIST":
                raise OptionError(f"EventCollate.for_dataset: state duration_us, the time span the {n_bins} bins "
                                  f"cover, for {type(ds).__name__} (only N-MNIST's {DURATION_US} µs is known)")
            duration_us = float(SACCADE_US if getattr(ds, "first_saccade_only", False) else DURATION_US)
        return cls(n_bins, duration_us, tonic_sensor(size))

    def __call__(self, items: Sequence[tuple[np.ndarray, int]]) -> tuple[EventBatch, torch.Tensor]:
        C, H, W = self.sensor
        events, labels = [], []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ShapeError(f"EventCollate: a sample must be (events, label); sample {i} of the batch is "
                                 f"{type(item).__name__}")
            ev, y = item
            names = getattr(getattr(ev, "dtype", None), "names", None)
            if names is None:
                shape = tuple(getattr(ev, "shape", ()))
                raise ShapeError(f"EventCollate: sample {i} of the batch is not raw events (a structured array with "
                                 f"fields x, y, t, p) but {type(ev).__name__} of shape {shape}; frames (e.g. after "
                                 "tonic's ToFrame) are collated by tonic.collation.PadTensors(batch_first=False)")
            missing = [f for f in ("x", "y", "t", "p") if f not in names]
            if missing:
                raise ShapeError(f"EventCollate: the events of sample {i} of the batch lack the field(s) "
                                 f"{', '.join(missing)} (they have {', '.join(names)})")
            ev = as_event_array(ev)
            if len(ev) and (ev["x"].min() < 0 or ev["y"].min() < 0 or ev["x"].max() >= W or ev["y"].max() >= H):
                raise ShapeError(f"EventCollate: sample {i} of the batch has events outside the {W}x{H} sensor "
                                 f"(x in [{ev['x'].min()}, {ev['x'].max()}], y in [{ev['y'].min()}, {ev['y'].max()}])")
            label = np.asarray(y)
            if label.size != 1 or not np.issubdtype(label.dtype, np.integer) and float(label) != int(label):
                raise DataError(f"EventCollate: the label of sample {i} of the batch must be one class index, got {y!r}")
            events.append(ev)
            labels.append(int(label))
        dense = events_to_dense(events, self.n_bins, self.duration_us, self.sensor)  # type: ignore[arg-type]
        return EventBatch(dense, events, self.duration_us), torch.as_tensor(labels)


def check_nmnist_folder(root: str | Path, train: bool = True) -> None:
    """Refuse, naming what is missing, a ``root`` that does not hold N-MNIST in tonic's layout
    (``<root>/NMNIST/train.zip`` and ``<root>/NMNIST/Train/<digit>/*.bin``, at least 10,000
    files; ``test.zip``, ``Test/`` likewise), instead of letting tonic start a download."""
    import tonic

    base = Path(root) / "NMNIST"
    ds = tonic.datasets.NMNIST
    archive = base / (ds.train_filename if train else ds.test_filename)
    folder = base / (ds.train_folder if train else ds.test_folder)
    n = sum(1 for _ in folder.rglob("*.bin")) if folder.is_dir() else 0
    if not archive.is_file() or n < 10_000:
        missing = (f"{folder} holds {n} .bin files (tonic needs >= 10,000)" if n < 10_000 else f"{archive} is missing")
        raise DataError(f"N-MNIST ({'train' if train else 'test'} split) is not under {root}: {missing}. Put the "
                        f"archive and its extracted folder there ({archive.name}, {folder.name}/<digit>/*.bin), or "
                        "pass download=True to let tonic fetch them")


class NMNISTDataset(torch.utils.data.Dataset):
    """N-MNIST from ``<root>/NMNIST`` through ``tonic.datasets.NMNIST``, read lazily: sample ``i``
    is ``(events, label)`` of one file (events as :func:`as_event_array`), and ``collate_fn`` (an
    :class:`EventCollate`, used by :class:`~cil_core.Trainer` for a Dataset, or passed to your own
    ``DataLoader``) bins a batch into an :class:`~cil_core.EventBatch` of ``n_bins`` time bins.
    ``n_samples`` draws a seeded random subset (the same one :func:`load_nmnist` draws);
    ``transform`` is an optional tonic transform applied to every sample's events (it must keep
    the fields x, y, t, p); ``download`` lets tonic fetch a missing split (otherwise a folder
    without N-MNIST is refused with a :class:`~cil_core.errors.DataError` naming what is missing)."""

    def __init__(self, root: str | Path, train: bool = True, n_bins: int = 15, n_samples: int | None = None,
                 seed: int = 0, first_saccade_only: bool = False, transform=None, download: bool = False) -> None:
        import tonic

        if not download:
            check_nmnist_folder(root, train)
        self.source = tonic.datasets.NMNIST(save_to=str(root), train=train, first_saccade_only=first_saccade_only,
                                            transform=transform)
        idx = np.arange(len(self.source))
        if n_samples is not None and n_samples < len(self.source):
            idx = np.sort(np.random.default_rng(seed).choice(len(self.source), n_samples, replace=False))
        self.indices = idx
        self.duration_us = float(SACCADE_US if first_saccade_only else DURATION_US)
        self.collate_fn = EventCollate(n_bins, self.duration_us, SENSOR)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        ev, y = self.source[int(self.indices[i])]
        return as_event_array(ev), int(y)


def load_nmnist(root: str | Path, train: bool = True, n_bins: int = 15, n_samples: int | None = None,
                seed: int = 0, first_saccade_only: bool = False, transform=None) -> SpikeData:
    """N-MNIST from ``<root>/NMNIST`` through ``tonic.datasets.NMNIST`` (offline when present,
    see the module docstring), **all in memory** (``N x n_bins x 2 x 34 x 34`` float32 plus every
    event list: 8.3 GB for the 60,000 training streams at 15 bins). :class:`NMNISTDataset` (same
    arguments) streams instead. ``n_samples`` draws a seeded random subset; ``transform`` is an
    optional tonic transform applied to every sample's events."""
    ds = NMNISTDataset(root, train, n_bins, n_samples, seed, first_saccade_only, transform)
    x, y = ds.collate_fn([ds[i] for i in range(len(ds))])
    return SpikeData(x, y)
