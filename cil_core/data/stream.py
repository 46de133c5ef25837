"""Streaming data at the door: in-memory tensors, torch ``Dataset``s, ``DataLoader``s and any
iterable of ``(inputs, labels)`` batches, turned into one stream of **validated, time-major**
batches ``(x [T, B, ...], y [B])`` that the trainer's epoch loop, evaluation and the fidelity
report share.

    stream = as_batches(data, door, batch_size=64, shuffle=True, generator=g)
    for x, y in stream:            # one epoch; every batch checked by check_data (validate.py)
        ...

What is accepted, and how each is batched:

* **in memory** — a :class:`~cil_core.SpikeData` or an ``(inputs [T, N, ...], labels [N])`` pair
  (inputs a tensor or an :class:`~cil_core.EventBatch`): validated whole, once, as before
  (:func:`~cil_core.data.validate.check_data`), then batched by
  :meth:`SpikeData.batches` (order: ``torch.randperm`` from the caller's generator each epoch);
* **a map-style torch Dataset** (``__getitem__`` and ``__len__``; also a map-style object that
  does not subclass torch's ``Dataset`` but has no ``__iter__``, as tonic's datasets and its
  ``DiskCachedDataset``) whose samples are
  ``(x [T, *input_shape], y)``: cil builds the ``DataLoader`` itself (``num_workers`` as asked)
  with the **same order** an in-memory set of the same samples would get (one
  ``torch.randperm(N)`` from the caller's generator per epoch, drawn in the main process), so a
  Dataset and the same data as one tensor train identically. Samples are stacked time-major
  (dim 1) by :class:`TimeMajorCollate`, zero-padded at the end to the longest ``T`` of the batch
  (tonic's ``PadTensors`` rule); a Dataset may instead name its own ``collate_fn`` attribute
  (e.g. one that returns an :class:`~cil_core.EventBatch`), which must return time-major
  ``(inputs, labels)`` batches; it is found through wrapping datasets too (``.dataset``: torch's
  ``Subset``, tonic's ``DiskCachedDataset``). Samples that are raw event streams (structured
  arrays, as a tonic dataset without ``ToFrame`` yields) need such a collate function (e.g.
  ``cil_speck.data.EventCollate``): :class:`TimeMajorCollate` refuses them naming it;
* **a DataLoader or any other iterable of ``(inputs, labels)`` batches** (a list, a generator):
  the batches are used as they come (the loader's own batch size and order). Tensor inputs may be
  time-major ``[T, B, ...]`` (tonic's ``PadTensors(batch_first=False)``) or batch-first
  ``[B, T, ...]`` (torch's default collation). The layout is ``time_first`` when given; otherwise
  it is inferred from the labels: ``B = len(labels)`` must match exactly one of dims 0 and 1.
  A batch where both match (``T == B``) before any batch settled the layout is refused
  (:class:`~cil_core.errors.ShapeError` naming the fix, ``time_first=True/False``); once settled,
  the layout holds for the stream and a batch that contradicts it is refused by index. A
  batch-first tensor is therefore never read as time-major. An iterator (a generator, anything
  with ``__next__``) can be read once: a second epoch is refused with the fix.

Every batch of a streamed source passes the same :func:`check_data` as in-memory data (shape
against the network, safe dtype casts, finiteness, labels in range), its errors naming the batch
by index (``training data, batch 3: ...``). Nothing is held beyond the batch being used: memory
is O(batch), not O(N).
"""

from __future__ import annotations

import collections.abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import CilError, DataError, OptionError, ShapeError
from . import EventBatch, SpikeData
from .validate import check_data

if TYPE_CHECKING:  # pragma: no cover
    from ..network.description import NetworkSpec

Batch = tuple[Any, torch.Tensor]


@dataclass(frozen=True)
class Door:
    """What a batch is checked against: the network's description, its number of classes, the
    float dtype inputs are cast to, the device batches are moved to and the name used in errors
    (``"training data"``)."""

    spec: "NetworkSpec"
    n_classes: int | None
    dtype: torch.dtype = torch.float32
    device: torch.device | str | None = None
    what: str = "training data"

    def check(self, data: Any, what: str | None = None) -> SpikeData:
        """``data`` (a whole in-memory set or one batch) through :func:`check_data`, moved to the device."""
        d = check_data(data, self.spec, n_classes=self.n_classes, what=what or self.what, dtype=self.dtype)
        return d if self.device is None else d.to(self.device)


def is_in_memory(data: Any) -> bool:
    """``True`` for a :class:`SpikeData` or an ``(inputs, labels)`` pair whose inputs are a
    tensor, an :class:`EventBatch` or a numpy array (today's in-memory data)."""
    if isinstance(data, SpikeData):
        return True
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and isinstance(data[0], (torch.Tensor, EventBatch, np.ndarray)))


def _is_map_dataset(data: Any) -> bool:
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, (DataLoader, IterableDataset)):
        return False
    if isinstance(data, Dataset):
        return hasattr(data, "__len__")
    # duck-typed map-style datasets that do not subclass torch's: tonic's datasets and its
    # DiskCachedDataset (__getitem__ and __len__, no __iter__); a list of batches has __iter__
    return (hasattr(data, "__getitem__") and hasattr(data, "__len__") and not hasattr(data, "__iter__")
            and not isinstance(data, (str, bytes, dict, torch.Tensor, np.ndarray)))


def source_kind(data: Any, what: str = "training data") -> str:
    """What kind of source ``data`` is: ``"in-memory"``, ``"dataset"`` (map-style torch Dataset)
    or ``"iterable"`` (a DataLoader, an iterable of batches); anything else is refused with a
    :class:`~cil_core.errors.ShapeError` naming what is accepted. Needs no network (``cil
    train`` checks what a dataset factory returned with it before building one)."""
    if is_in_memory(data):
        return "in-memory"
    if _is_map_dataset(data):
        return "dataset"
    if isinstance(data, (str, bytes, dict, torch.Tensor, np.ndarray)) or not hasattr(data, "__iter__"):
        raise ShapeError(f"{what}: expected (inputs [T, N, ...], labels [N]), SpikeData, a torch Dataset, "
                         f"a DataLoader or an iterable of (inputs, labels) batches; got {type(data).__name__}")
    return "iterable"


def dataset_collate(dataset: Any) -> Any:
    """The ``collate_fn`` a Dataset names, looked up through the datasets it wraps (``.dataset``:
    torch's ``Subset``, tonic's ``DiskCachedDataset``, ...), so that wrapping a dataset that
    collates its own samples (e.g. ``cil_speck.data.NMNISTDataset``) keeps its collation;
    ``None`` if none names one."""
    seen: set[int] = set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        collate = getattr(dataset, "collate_fn", None)
        if callable(collate):
            return collate
        dataset = getattr(dataset, "dataset", None)
    return None


class TimeMajorCollate:
    """Collate ``(x [T, ...], y)`` samples into a time-major batch ``(x [T, B, ...], y [B])``;
    samples of different length are zero-padded at the end to the longest (as tonic's
    ``PadTensors``). A plain class (picklable: works with ``num_workers > 0``)."""

    def __call__(self, items: Sequence[Any]) -> Batch:
        xs, ys = [], []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ShapeError(f"a Dataset sample must be (x [T, *input_shape], label); sample {i} of the batch "
                                 f"is {type(item).__name__}")
            raw = item[0]
            if isinstance(raw, np.ndarray) and raw.dtype.names is not None:
                raise ShapeError(f"a Dataset sample's inputs are raw events (a structured array with fields "
                                 f"{', '.join(raw.dtype.names)}), not a tensor [T, *input_shape]: bin them with a "
                                 "collate function that returns an EventBatch, e.g. DataLoader(dataset, "
                                 "collate_fn=cil_speck.data.EventCollate.for_dataset(dataset, n_bins)), or "
                                 "tonic.transforms.ToFrame")
            x = torch.as_tensor(raw)
            if x.dim() < 2:
                raise ShapeError(f"a Dataset sample's inputs must be [T, *input_shape]; got shape {tuple(x.shape)}")
            xs.append(x)
            ys.append(torch.as_tensor(item[1]).reshape(()))
        rest = xs[0].shape[1:]
        for i, x in enumerate(xs):
            if x.shape[1:] != rest:
                raise ShapeError(f"Dataset samples differ in shape beyond time: {tuple(xs[0].shape)} and "
                                 f"{tuple(x.shape)} (sample {i} of the batch)")
        T = max(x.shape[0] for x in xs)
        out = xs[0].new_zeros((T, len(xs), *rest))
        for i, x in enumerate(xs):
            out[: x.shape[0], i] = x
        return out, torch.stack(ys)


class BatchStream:
    """Validated time-major batches of one source, one epoch per iteration (see the module
    docstring). ``in_memory`` is the checked :class:`SpikeData` when the source was in memory
    (``None`` for a streamed source); ``num_batches`` / ``num_samples`` are ``None`` where the
    source does not know its length."""

    def __init__(self, data: Any, door: Door, *, batch_size: int | None, shuffle: bool = False,
                 generator: torch.Generator | None = None, time_first: bool | None = None,
                 num_workers: int = 0) -> None:
        if time_first is not None and not isinstance(time_first, bool):
            raise OptionError(f"time_first must be True, False or None (infer), got {time_first!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise OptionError(f"num_workers must be a whole number >= 0, got {num_workers!r}")
        self.door, self.batch_size, self.shuffle, self.generator = door, batch_size, shuffle, generator
        self.time_first, self.num_workers = time_first, num_workers
        self.in_memory: SpikeData | None = None
        self.dataset: Any = None
        self.source: Any = None
        self.collate: Any = None
        self._one_shot = False
        self._passes = 0
        self._taken = -1  # batches read by index so far (named in errors)
        kind = source_kind(data, door.what)
        if kind == "in-memory":
            self.in_memory = door.check(data)
        elif kind == "dataset":
            self.dataset = data
            self.collate = dataset_collate(data)
            if len(data) == 0:
                raise DataError(f"{door.what} is empty (a Dataset of 0 samples)")
        else:
            self.source = data
            # never call iter() here: a DataLoader's iterator draws its order and starts its workers
            self._one_shot = isinstance(data, collections.abc.Iterator)

    @property
    def streamed(self) -> bool:
        """``True`` unless the source was in memory."""
        return self.in_memory is None

    @property
    def num_samples(self) -> int | None:
        if self.in_memory is not None:
            return len(self.in_memory)
        if self.dataset is not None:
            return len(self.dataset)
        return None

    @property
    def num_batches(self) -> int | None:
        n = self.num_samples
        if n is not None:
            return -(-n // (self.batch_size or n))
        try:
            return len(self.source)
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Batch]:
        if self.in_memory is not None:
            yield from self.in_memory.batches(self.batch_size, shuffle=self.shuffle, generator=self.generator)
            return
        if self._one_shot and self._passes > 0:
            raise CilError(f"{self.door.what} is an iterator, read once already; pass a re-iterable source (a "
                           "DataLoader, a Dataset, a list of batches) for more than one pass")
        self._passes += 1
        batches = self._dataset_batches() if self.dataset is not None else iter(self.source)
        n = 0
        for i, batch in enumerate(batches):
            yield self._check(batch, i)
            n += 1
        if n == 0:
            raise DataError(f"{self.door.what} yielded no batch")

    # ------------------------------------------------------------ random access (minibatch MH)
    def _map_source(self) -> tuple[Any, Any] | None:
        """``(dataset, collate_fn)`` whose samples can be read by index: a map-style Dataset, or
        the Dataset under a DataLoader that batches it (``batch_size`` set); ``None`` otherwise."""
        from torch.utils.data import DataLoader

        if self.dataset is not None:
            return self.dataset, self.collate or TimeMajorCollate()
        src = self.source
        if (isinstance(src, DataLoader) and src.batch_size is not None and _is_map_dataset(src.dataset)):
            return src.dataset, src.collate_fn
        return None

    @property
    def random_access(self) -> bool:
        """Whether samples can be read by index (:meth:`take`): in-memory data, a map-style torch
        Dataset, or a DataLoader over one (its ``dataset`` and ``collate_fn``)."""
        return self.in_memory is not None or self._map_source() is not None

    @property
    def sample_count(self) -> int | None:
        """The number of samples :meth:`take` can index (``None`` without random access)."""
        if self.in_memory is not None:
            return len(self.in_memory)
        ms = self._map_source()
        return None if ms is None else len(ms[0])

    def take(self, indices: torch.Tensor) -> Batch:
        """The samples at ``indices`` as one checked time-major batch ``(x [T, B, ...], y [B])``,
        read in the main process (a DataLoader's ``dataset`` through its ``collate_fn``: its
        batch size, order and workers do not apply); needs :attr:`random_access`."""
        if self.in_memory is not None:
            return self.in_memory.select(indices)
        ms = self._map_source()
        if ms is None:
            raise CilError(f"{self.door.what}: a {type(self.source).__name__} cannot be read by index; pass a map-style "
                           "torch Dataset or a DataLoader over one")
        dataset, collate = ms
        self._taken += 1
        batch = collate([dataset[int(i)] for i in indices])
        return self._check(batch, self._taken)

    # ------------------------------------------------------------ sources
    def _dataset_batches(self) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        n = len(self.dataset)
        bs = self.batch_size or n
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        chunks = [order[i : i + bs].tolist() for i in range(0, n, bs)]
        collate = self.collate or TimeMajorCollate()
        loader = DataLoader(self.dataset, batch_sampler=chunks, collate_fn=collate, num_workers=self.num_workers)
        return iter(loader)

    def _collated_time_major(self) -> bool:
        """Batches of a Dataset collated by cil's own :class:`TimeMajorCollate` are time-major by
        construction; a Dataset's own ``collate_fn`` and every other source go through the layout rule."""
        return self.dataset is not None and self.collate is None

    def _check(self, batch: Any, i: int) -> Batch:
        what = f"{self.door.what}, batch {i}"
        if isinstance(batch, SpikeData):
            x, y = batch.x, batch.y
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            x, y = batch
        else:
            raise ShapeError(f"{what}: expected an (inputs, labels) pair, got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        y = torch.as_tensor(y)
        if isinstance(x, np.ndarray):
            x = torch.as_tensor(x)
        if isinstance(x, torch.Tensor) and not self._collated_time_major():
            x = self._time_major(x, y, what)
        d = self.door.check((x, y), what)
        return d.x, d.y

    def _time_major(self, x: torch.Tensor, y: torch.Tensor, what: str) -> torch.Tensor:
        """``x`` time-major, by ``time_first`` or by the layout the labels' length settles."""
        if x.dim() < 3 or y.dim() != 1:
            return x  # check_data names the problem
        B = y.shape[0]
        fits_tm, fits_bf = x.shape[1] == B, x.shape[0] == B
        layout = self.time_first
        if layout is None:
            if fits_tm and fits_bf:
                raise ShapeError(f"{what}: inputs {tuple(x.shape)} with {B} labels could be time-major [T, B, ...] "
                                 f"or batch-first [B, T, ...] (T = B = {B}); state the layout: time_first=True "
                                 "(tonic's PadTensors(batch_first=False)) or time_first=False (torch's default "
                                 "collation)")
            if not (fits_tm or fits_bf):
                raise ShapeError(f"{what}: inputs {tuple(x.shape)} hold neither {B} samples in dim 1 (time-major "
                                 f"[T, B, ...]) nor in dim 0 (batch-first [B, T, ...]) for {B} labels")
            self.time_first = layout = fits_tm
        if layout and not fits_tm:
            hint = ("; it looks batch-first [B, T, ...]: pass time_first=False" if fits_bf else "")
            raise ShapeError(f"{what}: inputs {tuple(x.shape)} do not hold {B} samples in dim 1 of time-major "
                             f"[T, B, ...]{hint}")
        if not layout and not fits_bf:
            hint = ("; it looks time-major [T, B, ...]: pass time_first=True" if fits_tm else "")
            raise ShapeError(f"{what}: inputs {tuple(x.shape)} do not hold {B} samples in dim 0 of batch-first "
                             f"[B, T, ...]{hint}")
        return x if layout else x.transpose(0, 1)


def as_batches(data: Any, door: Door, *, batch_size: int | None, shuffle: bool = False,
               generator: torch.Generator | None = None, time_first: bool | None = None,
               num_workers: int = 0) -> BatchStream:
    """A :class:`BatchStream` of ``data`` checked at ``door`` (see the module docstring).
    ``batch_size`` and ``shuffle`` apply to in-memory data and Datasets; a DataLoader or iterable
    keeps its own batches and order. ``generator`` draws the order each epoch."""
    return BatchStream(data, door, batch_size=batch_size, shuffle=shuffle, generator=generator,
                       time_first=time_first, num_workers=num_workers)


def materialize(data: Any, door: Door, *, time_first: bool | None = None, batch_size: int = 256,
                num_workers: int = 0, max_bytes: int | None = 4 << 30) -> SpikeData:
    """All of a (streamed) source in memory as one checked :class:`SpikeData`, batches
    concatenated in the source's order (for algorithms that need the whole training set, e.g.
    ``mh``). Raises :class:`DataError` once the dense inputs pass ``max_bytes`` (``None``: no limit)."""
    stream = as_batches(data, door, batch_size=batch_size, time_first=time_first, num_workers=num_workers)
    if stream.in_memory is not None:
        return stream.in_memory
    xs: list[torch.Tensor] = []
    events: list[np.ndarray] = []
    ys: list[torch.Tensor] = []
    duration: float | None = None
    size = 0
    for x, y in stream:
        if isinstance(x, EventBatch):
            if duration is not None and x.duration_us != duration:
                raise DataError(f"{door.what}: event batches cover different durations ({duration} and "
                                f"{x.duration_us} µs); they cannot form one EventBatch")
            duration = x.duration_us
            events.extend(x.events)
            x = x.dense
        elif duration is not None:
            raise DataError(f"{door.what}: mixes EventBatch and tensor batches")
        if xs and x.shape[0] != xs[0].shape[0]:
            raise DataError(f"{door.what}: batches have {xs[0].shape[0]} and {x.shape[0]} time steps; pad them to "
                            "one length to hold them as one tensor")
        size += x.numel() * x.element_size()
        if max_bytes is not None and size > max_bytes:
            raise DataError(f"{door.what}: more than {max_bytes / 2**30:.3g} GiB of dense inputs; stream it (an "
                            "algorithm that streams: cil-spl, offline) or raise max_bytes")
        xs.append(x)
        ys.append(y)
    dense = torch.cat(xs, 1)
    inputs: Any = EventBatch(dense, events, duration) if duration is not None else dense
    return SpikeData(inputs, torch.cat(ys))


__all__ = ["Door", "BatchStream", "TimeMajorCollate", "as_batches", "materialize", "is_in_memory", "source_kind",
           "dataset_collate"]
