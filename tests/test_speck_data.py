"""Event data: the synthetic N-MNIST-like digits (offline) and tonic's N-MNIST loader on a tiny
set written in the N-MNIST binary format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("cil_speck")

from cil_core import EventBatch  # noqa: E402
from cil_speck.data import DURATION_US, load_nmnist, synthetic_nmnist, write_nmnist_bin  # noqa: E402
from cil_speck.events import EVENT_DTYPE  # noqa: E402


def test_synthetic_nmnist_is_seeded_and_consistent():
    a = synthetic_nmnist(train=False, n_bins=6, n_samples=12, seed=3)
    b = synthetic_nmnist(train=False, n_bins=6, n_samples=12, seed=3)
    assert isinstance(a.x, EventBatch) and a.x.dense.shape == (6, 12, 2, 34, 34)
    assert torch.equal(a.x.dense, b.x.dense) and torch.equal(a.y, b.y)
    for ev, d in zip(a.x.events, a.x.dense.unbind(1)):
        assert len(ev) > 500 and np.all(np.diff(ev["t"]) >= 0)
        assert ev["t"].min() >= 0 and ev["t"].max() < DURATION_US
        assert ev["x"].max() < 34 and ev["y"].max() < 34 and set(np.unique(ev["p"])) == {0, 1}
        assert float(d.sum()) == len(ev)
    train = synthetic_nmnist(train=True, n_bins=6, n_samples=5)
    assert not torch.equal(train.y, a.y[:5]) or not torch.equal(train.x.dense, a.x.dense[:, :5])


def test_tonic_nmnist_loads_offline(tmp_path):
    """tonic's NMNIST loads without a download when <root>/NMNIST/train.zip exists and at least
    10,000 .bin files sit under NMNIST/Train/<digit>/ (files here hold 3 events each)."""
    pytest.importorskip("tonic", reason="tonic is not installed (load_nmnist reads N-MNIST through it)")
    root = tmp_path / "NMNIST"
    (root / "Train").mkdir(parents=True)
    (root / "train.zip").write_bytes(b"")
    rng = np.random.default_rng(0)
    written = {}
    for digit in range(10):
        d = root / "Train" / str(digit)
        d.mkdir()
        for i in range(1000):
            ev = np.zeros(3, EVENT_DTYPE)
            ev["x"], ev["y"] = rng.integers(0, 34, 3), rng.integers(0, 34, 3)
            ev["t"] = np.sort(rng.integers(0, 300_000, 3))
            ev["p"] = rng.integers(0, 2, 3)
            write_nmnist_bin(d / f"{i:05d}.bin", ev)
            written[(digit, i)] = ev
    data = load_nmnist(tmp_path, train=True, n_bins=5, n_samples=16, seed=1)
    assert len(data) == 16 and data.x.dense.shape == (5, 16, 2, 34, 34)
    assert float(data.x.dense.sum()) == 48
    # the sorted file list is digit-major: index = digit * 1000 + i
    idx = np.sort(np.random.default_rng(1).choice(10_000, 16, replace=False))
    for k, j in enumerate(idx):
        want = written[(int(j) // 1000, int(j) % 1000)]
        got = data.x.events[k]
        assert int(data.y[k]) == int(j) // 1000
        for f in ("x", "y", "t", "p"):
            np.testing.assert_array_equal(got[f], want[f])
