"""snntorch tutorial 7's pipeline, offline: tonic's NMNIST dataset over N-MNIST-format files on
disk (synthetic digits written by cil_speck.data.write_nmnist_bin in tonic's folder layout),
``transforms.ToFrame``, ``DataLoader(collate_fn=tonic.collation.PadTensors(batch_first=False))``
and ``Trainer.fit(loader)`` with no extra option: the same training and accuracy as the same
frames as one tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic", reason="tonic is not installed")
snn = pytest.importorskip("snntorch")
pytest.importorskip("cil_speck")

from torch.utils.data import DataLoader, Subset  # noqa: E402

import cil_core as cil  # noqa: E402
from cil_core.errors import ShapeError  # noqa: E402
from cil_speck.data import (DURATION_US, NMNISTDataset, digits_to_events, load_nmnist,  # noqa: E402
                            write_nmnist_bin)

PER_CLASS = 8  # distinct synthetic streams per digit; tonic wants >= 10,000 files, the rest repeat them
T = 6


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("nmnist")
    folder = root / "NMNIST" / "Train"
    (root / "NMNIST" / "train.zip").parent.mkdir(parents=True)
    (root / "NMNIST" / "train.zip").write_bytes(b"")
    for digit in range(10):
        idx = np.flatnonzero(d.target == digit)[:PER_CLASS]
        streams = digits_to_events(d.images[idx] / 16.0, seed=digit)
        blobs = []
        for k, ev in enumerate(streams):
            path = folder / str(digit) / f"{k:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_nmnist_bin(path, ev)
            blobs.append(path.read_bytes())
        for k in range(PER_CLASS, 1000):  # tonic checks for at least 10,000 .bin files
            (folder / str(digit) / f"{k:05d}.bin").write_bytes(blobs[k % PER_CLASS])
    return root


class SeededOrder(torch.utils.data.Sampler):
    """One ``torch.randperm(n)`` per epoch from its own seeded generator (what the trainer draws
    for in-memory data)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def _frames_dataset(root):
    """Tutorial 7: tonic.datasets.NMNIST + ToFrame; the first PER_CLASS files of every digit."""
    to_frame = tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size, n_time_bins=T)
    ds = tonic.datasets.NMNIST(save_to=str(root), train=True, transform=to_frame)
    idx = [digit * 1000 + k for digit in range(10) for k in range(PER_CLASS)]
    return Subset(ds, idx)


def _net(seed=0):
    import torch.nn as nn

    torch.manual_seed(seed)
    grad = snn.surrogate.atan()
    model = nn.Sequential(nn.Conv2d(2, 4, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
                          nn.Conv2d(4, 8, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
                          nn.Flatten(), nn.Linear(8 * 5 * 5, 10),
                          snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True))
    with torch.no_grad():  # strong enough to fire on a few events per bin
        for layer in (model[0], model[3], model[7]):
            layer.weight.mul_(4.0)
    return cil.wrap(model, input_shape=(2, 34, 34))


def _trainer(**kw):
    return cil.Trainer(_net(), "ideal", "cil-spl", seed=5, lr=2e-2, **kw)


def test_tutorial_7_loader_trains_as_the_same_frames_as_one_tensor(nmnist_root):
    ds = _frames_dataset(nmnist_root)
    # the same frames as one tensor [T, N, 2, 34, 34]
    x = torch.stack([torch.as_tensor(ds[i][0], dtype=torch.float32) for i in range(len(ds))], 1)
    y = torch.as_tensor([ds[i][1] for i in range(len(ds))])
    assert x.shape == (T, 80, 2, 34, 34) and float(x.sum()) > 0
    ref = _trainer()
    ref.fit((x, y), epochs=2, batch_size=16)
    want = ref.evaluate((x, y), batch_size=16)
    assert len(set(ref.history.column("loss"))) > 1 and want["accuracy"] > 0.1  # it learns something

    # a sampler drawing torch.randperm(N) per epoch from a generator seeded as the trainer's visits
    # the samples in the order the trainer draws for the tensor: the same training, bit for bit
    pad = tonic.collation.PadTensors(batch_first=False)
    loader = DataLoader(ds, batch_size=16, sampler=SeededOrder(len(ds), seed=5), collate_fn=pad)
    tr = _trainer()
    tr.fit(loader, epochs=2)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, tr.network.detached_parameters()[k]), k
    assert tr.history.column("loss") == ref.history.column("loss")
    assert tr.evaluate(DataLoader(ds, batch_size=16, collate_fn=pad)) == want
    # torch's default collation (batch-first) is recognised as such, with worker processes too
    assert tr.evaluate(DataLoader(ds, batch_size=16, num_workers=2)) == want
    # tutorial 7 as written (shuffle=True, num_workers=2): trains, and evaluates as the tensor
    tr = _trainer()
    tr.fit(DataLoader(ds, batch_size=16, shuffle=True, collate_fn=pad, num_workers=2), epochs=1)
    assert len(tr.history) == 5
    eval_loader = DataLoader(ds, batch_size=16, collate_fn=pad, num_workers=2)
    assert tr.evaluate(eval_loader) == tr.evaluate((x, y), batch_size=16)


def test_bad_layouts_get_a_cil_error(nmnist_root):
    ds = _frames_dataset(nmnist_root)
    tr = _trainer()
    square = DataLoader(ds, batch_size=T, collate_fn=tonic.collation.PadTensors(batch_first=False))  # B = T
    with pytest.raises(ShapeError, match="training data, batch 0: .*state the layout: time_first=True"):
        tr.fit(square, epochs=1)
    tr.fit(square, steps=2, time_first=True)
    with pytest.raises(ShapeError, match="looks batch-first.*time_first=False"):
        tr.evaluate(DataLoader(ds, batch_size=10), time_first=True)
    with pytest.raises(ShapeError, match=r"expects time-major \[T, N, 2, 34, 34\]"):  # no ToFrame channel layout
        tr.evaluate([(torch.zeros(T, 10, 34, 34, 2), torch.zeros(10, dtype=torch.long))])


def test_nmnist_dataset_is_lazy_and_streams_events_as_load_nmnist_holds_them(nmnist_root):
    ds = NMNISTDataset(nmnist_root, n_bins=5, n_samples=40, seed=2)
    held = load_nmnist(nmnist_root, n_bins=5, n_samples=40, seed=2)
    assert len(ds) == 40 and not hasattr(ds, "dense")
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # workers started by spawn/forkserver receive it pickled
    assert np.array_equal(again[3][0], ds[3][0])
    xb, yb = ds.collate_fn([ds[i] for i in range(10)])
    assert torch.equal(xb.dense, held.x.dense[:, :10]) and torch.equal(yb, held.y[:10])
    assert xb.duration_us == DURATION_US and len(xb.events) == 10
    net = cil.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 34 * 34, 10),
                                       snn.Leaky(beta=0.5, init_hidden=True, output=True)), input_shape=(2, 34, 34))
    tr = cil.Trainer(net, "ideal", "cil-spl", seed=1, num_workers=2)
    assert tr.evaluate(ds, batch_size=8) == tr.evaluate(held, batch_size=8)
