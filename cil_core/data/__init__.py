"""Data containers and the bundled data sets.

cil trains on **time-major** spike tensors ``[T, N, *features]`` with integer labels ``[N]``.
Event-based inputs (an :class:`EventBatch`) carry both the raw events, for event-driven
backends, and a dense binned view, for the time-stepped software model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError, ShapeError


@dataclass
class EventBatch:
    """A batch of event streams.

    ``dense``: ``[T, B, *sensor_shape]`` event counts per time bin (what a time-stepped model
    sees). ``events``: one structured numpy array per sample with fields ``t`` (µs), ``x``,
    ``y``, ``p`` (tonic's event layout), sorted by ``t``. ``duration_us``: the time span that
    ``dense`` covers, so that a backend can bin its own output the same way.
    """

    dense: torch.Tensor
    events: list[np.ndarray]
    duration_us: float

    def __post_init__(self) -> None:
        if self.dense.shape[1] != len(self.events):
            raise ShapeError(f"EventBatch: dense has batch {self.dense.shape[1]} but {len(self.events)} event streams")

    def select(self, idx: Sequence[int] | torch.Tensor) -> "EventBatch":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return EventBatch(self.dense[:, idx_t.to(self.dense.device)], [self.events[int(i)] for i in idx_t],
                          self.duration_us)

    def to(self, device: torch.device | str) -> "EventBatch":
        return EventBatch(self.dense.to(device), self.events, self.duration_us)

    @property
    def shape(self) -> torch.Size:
        return self.dense.shape


def as_dense(inputs: Any) -> torch.Tensor:
    """The time-major dense tensor of ``inputs`` (a tensor, or anything with ``.dense``)."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    dense = getattr(inputs, "dense", None)
    if isinstance(dense, torch.Tensor):
        return dense
    raise ShapeError(f"inputs of type {type(inputs).__name__} are neither a tensor nor carry a dense view (.dense)")


class SpikeData:
    """Inputs (time-major tensor ``[T, N, ...]`` or :class:`EventBatch`) with labels ``[N]``."""

    def __init__(self, x: Any, y: torch.Tensor) -> None:
        dense = as_dense(x)
        y = torch.as_tensor(y)
        if dense.dim() < 3:
            raise ShapeError(f"inputs must be time-major [T, N, *features]; got shape {tuple(dense.shape)}")
        if y.dim() != 1 or y.shape[0] != dense.shape[1]:
            raise ShapeError(
                f"labels have shape {tuple(y.shape)} but inputs hold {dense.shape[1]} samples (dim 1 of [T, N, ...])"
            )
        if y.is_floating_point() and (not torch.isfinite(y).all() or not torch.equal(y, torch.round(y))):
            raise DataError("labels must be class indices (whole numbers); got fractional or non-finite float labels")
        if y.dtype == torch.bool or y.is_complex():
            raise DataError(f"labels must be integer class indices, not {y.dtype}")
        self.x = x
        self.y = y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def select(self, idx: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if isinstance(self.x, torch.Tensor):
            return self.x[:, idx.to(self.x.device)], self.y[idx.to(self.y.device)]
        return self.x.select(idx), self.y[idx.to(self.y.device)]

    def batches(self, batch_size: int | None, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[tuple[Any, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        bs = n if batch_size is None else batch_size
        for i in range(0, n, bs):
            yield self.select(order[i : i + bs])

    def subset(self, idx: torch.Tensor) -> "SpikeData":
        return SpikeData(*self.select(idx))

    def to(self, device: torch.device | str) -> "SpikeData":
        return SpikeData(self.x.to(device), self.y.to(device))


def as_data(data: Any) -> SpikeData:
    """Accept a :class:`SpikeData` or an ``(inputs, labels)`` pair."""
    if isinstance(data, SpikeData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return SpikeData(data[0], data[1])
    raise ShapeError(f"expected (inputs [T, N, ...], labels [N]) or SpikeData, got {type(data).__name__}")


def stratified_indices(y: torch.Tensor, fraction: float, generator: torch.Generator,
                       min_per_class: int = 0) -> torch.Tensor:
    """The sorted indices of a class-stratified random share of the labels ``y``: for each class
    :math:`c` (ascending), :math:`\max(m, \mathrm{round}(f\,n_c))` of its :math:`n_c` samples drawn
    with ``generator`` (``min_per_class`` = m)."""
    idx = []
    for c in torch.unique(y):
        members = (y == c).nonzero().flatten()
        k = max(min_per_class, int(round(fraction * len(members))))
        idx.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(idx).sort().values


__all__ = ["EventBatch", "SpikeData", "as_data", "as_dense", "stratified_indices"]
