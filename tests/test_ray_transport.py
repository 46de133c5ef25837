"""cil-ray's numpy transport: what crosses to and from a worker comes back exactly (no cluster needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ray")
transport = pytest.importorskip("cil_ray.transport")

from cil_core.hardware import LayerObservation, Observation  # noqa: E402


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, dtype and shape, and the same sign of every zero."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) and \
        np.array_equal(np.signbit(a), np.signbit(b))


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["binary", "counts", "graded", "negative-zero", "nan", "large"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1),
       shape=st.sampled_from([(16, 1024), (3, 7, 1000), (40000,), (5, 4097)]))
def test_compact_round_trip_is_exact(kind, dtype, seed, shape):
    rng = np.random.default_rng(seed)
    a = {"binary": lambda: rng.random(shape) < 0.3,
         "counts": lambda: rng.integers(0, 256, shape),
         "graded": lambda: rng.random(shape) * 0.5,
         "negative-zero": lambda: -(rng.random(shape) < 0.5).astype(float),
         "nan": lambda: np.where(rng.random(shape) < 0.01, np.nan, 1.0),
         "large": lambda: rng.integers(0, 300, shape)}[kind]().astype(dtype)
    packed = transport.compact(a)
    back = transport.expand(packed)
    assert _same(back, a) or (kind == "nan" and np.array_equal(back, a, equal_nan=True) and back.dtype == a.dtype)
    if kind == "binary":
        assert packed[0] == "bits" and transport.nbytes(packed) <= a.size // 8 + 1, "binary spikes travel as bits"
    elif kind == "counts":
        assert packed[0] == "u8" and transport.nbytes(packed) == a.size
    else:
        assert packed is a, "anything that is not a small count travels as it is"


def test_small_arrays_travel_as_they_are():
    a = np.ones((4, 4), np.float32)
    assert transport.compact(a) is a


def test_observation_round_trip_keeps_layers_and_membranes():
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(16, 3, 500, 8, generator=g) < 0.2).float()
    mem = torch.randn(16, 3, 500, 8, generator=g)
    out = (torch.rand(16, 3, 500, 2, generator=g) < 0.5).float()
    obs = Observation(out, [LayerObservation(spikes, mem), LayerObservation(out, None)], {"k": 1})
    packed = transport.pack_observation(obs)
    assert transport.observation_bytes(packed) < spikes.numel() + mem.numel() * 4, "spikes travel compacted"
    back = transport.unpack_observation(packed)
    assert torch.equal(back.output, out) and back.meta == {"k": 1}
    assert torch.equal(back.layers[0].spikes, spikes) and torch.equal(back.layers[0].membrane, mem)
    assert torch.equal(back.layers[1].spikes, out) and back.layers[1].membrane is None


def test_inputs_travel_as_bits_when_binary_and_come_back_exactly():
    """(EventBatch inputs cross to ray:speck workers in tests/test_ray.py.)"""
    g = torch.Generator().manual_seed(1)
    spikes = (torch.rand(16, 64, 62, generator=g) < 0.1).float()
    packed = transport.pack_inputs(spikes)
    assert transport.nbytes(packed[1]) <= spikes.numel() // 8 + 1
    assert torch.equal(transport.unpack_inputs(packed), spikes)
    shard = transport.unpack_inputs(transport.pack_inputs(spikes, 10, 30))
    assert torch.equal(shard, spikes[:, 10:30])
    analog = torch.rand(16, 64, 62, generator=g)
    assert torch.equal(transport.unpack_inputs(transport.pack_inputs(analog)), analog)
