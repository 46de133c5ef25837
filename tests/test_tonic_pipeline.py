"""snntorch tutorial 7's pipeline, offline: tonic's NMNIST dataset over N-MNIST-format files on
disk (synthetic digits written by cil_speck.data.write_nmnist_bin in tonic's folder layout),
``transforms.ToFrame``, ``DataLoader(collate_fn=tonic.collation.PadTensors(batch_first=False))``
and ``Trainer.fit(loader)`` with no extra option: the same training and accuracy as the same
frames as one tensor."""

from __future__ import annotations

import os

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
    (root / "NMNIST").mkdir(parents=True)
    for split, offset in (("Train", 0), ("Test", PER_CLASS)):
        folder = root / "NMNIST" / split
        (root / "NMNIST" / f"{split.lower()}.zip").write_bytes(b"")
        for digit in range(10):
            idx = np.flatnonzero(d.target == digit)[offset:offset + PER_CLASS]
            streams = digits_to_events(d.images[idx] / 16.0, seed=digit)
            for k, ev in enumerate(streams):
                path = folder / str(digit) / f"{k:05d}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_nmnist_bin(path, ev)
            for k in range(PER_CLASS, 1000):  # tonic checks for at least 10,000 .bin files: hard links to the first
                os.link(folder / str(digit) / f"{k % PER_CLASS:05d}.bin", folder / str(digit) / f"{k:05d}.bin")
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


# --------------------------------------------------------------------------- raw events, DiskCachedDataset
SUBSET = [digit * 1000 + k for digit in range(10) for k in range(PER_CLASS)]


def speck_model(n_bins: int = T, seed: int = 0):
    """SumPool 4 -> Dense 128 -> 10 with IAF neurons (sinabs), non-negative weights: every event
    only raises a membrane, so with multi-spike subtract reset the output count of a sample is
    floor(total input / threshold) whatever the order and timing of its events."""
    import sinabs.layers as sl

    torch.manual_seed(seed)
    lin = torch.nn.Linear(2 * 8 * 8, 10, bias=False)
    with torch.no_grad():
        lin.weight.uniform_(0.0, 0.05)
    return torch.nn.Sequential(sl.SumPool2d(4), torch.nn.Flatten(), lin, sl.IAFSqueeze(num_timesteps=n_bins))


def speck_net(n_bins: int = T):
    """The model factory of cil train (--model test_tonic_pipeline:speck_net): the network wrapped
    with its input shape (a pool-first model needs it)."""
    return cil.wrap(speck_model(n_bins), input_shape=(2, 34, 34))


def raw_loader(root, train: bool = True, n_bins: int = T, num_workers: int = 0, batch_size: int = 16):
    """A dataset factory (cil train --data module:function): tonic's NMNIST without ToFrame and
    cil_speck's EventCollate, in a DataLoader."""
    from cil_speck.data import EventCollate

    raw = tonic.datasets.NMNIST(save_to=str(root), train=train)
    return DataLoader(Subset(raw, SUBSET), batch_size=batch_size, collate_fn=EventCollate.for_dataset(raw, n_bins),
                      num_workers=num_workers)


def test_raw_tonic_events_reach_speck_as_events_and_agree_with_the_binned_path(nmnist_root, monkeypatch):
    import pickle

    from cil_core import EventBatch
    from cil_speck import SpeckBackend
    from cil_speck.data import EventCollate, as_event_array
    from cil_speck.events import events_to_dense

    raw = tonic.datasets.NMNIST(save_to=str(nmnist_root), train=True)  # samples: structured arrays (x, y, t, p)
    collate = EventCollate.for_dataset(raw, T)
    assert (collate.sensor, collate.duration_us, collate.n_bins) == ((2, 34, 34), DURATION_US, T)
    assert pickle.loads(pickle.dumps(collate)).sensor == (2, 34, 34)
    seen: list = []
    forward = SpeckBackend.forward

    def spy(self, deployment, inputs, record=False):
        seen.append(inputs)
        return forward(self, deployment, inputs, record)

    monkeypatch.setattr(SpeckBackend, "forward", spy)
    tr = cil.Trainer(cil.wrap(speck_model(), input_shape=(2, 34, 34)), "speck", "cil-spl", seed=0)
    loader = raw_loader(nmnist_root, num_workers=2)
    got = tr.evaluate(loader)
    # speck ran the batches' own events: exactly what tonic read from the files, sample by sample
    assert len(seen) == 5 and all(isinstance(x, EventBatch) for x in seen)
    events = [ev for x in seen for ev in x.events]
    for k, i in enumerate(SUBSET):
        assert np.array_equal(events[k], as_event_array(raw[i][0])), i
    assert sum(len(e) for e in events) > 10_000
    # the same events held in memory as one EventBatch: the same chip result
    x_all, y_all = collate([raw[i] for i in SUBSET])
    assert tr.evaluate((x_all, y_all), batch_size=16) == got
    # the binned path: speck on the dense counts (events at the bins' starts) agrees for this net (order-free)
    dense = events_to_dense([as_event_array(raw[i][0]) for i in SUBSET], T, DURATION_US, (2, 34, 34))
    assert torch.equal(dense, x_all.dense)
    seen.clear()
    assert tr.evaluate((dense, y_all), batch_size=16) == got
    assert all(isinstance(x, torch.Tensor) for x in seen)
    assert got["silent"] < 0.5 and 0 < got["accuracy"]  # outputs fire: the comparison is not between silent nets
    # the software model reads the dense view of the raw batches: the same as the binned tensor
    assert tr.evaluate_software(loader) == tr.evaluate_software((dense, y_all), batch_size=16)
    # and training streams the raw events through the chip too (CIL-SPL: forward on speck)
    seen.clear()
    tr.fit(loader, epochs=1)
    assert len(tr.history) == 5 and all(isinstance(x, EventBatch) for x in seen)


def test_event_collate_refuses_what_is_not_raw_events(nmnist_root):
    from cil_core.errors import DataError, OptionError
    from cil_speck.data import EventCollate

    collate = EventCollate(T)
    ev = tonic.datasets.NMNIST(save_to=str(nmnist_root), train=True)[0][0]
    with pytest.raises(ShapeError, match="sample 1 of the batch is not raw events .*PadTensors"):
        collate([(ev, 0), (np.zeros((T, 2, 34, 34)), 1)])
    with pytest.raises(ShapeError, match="lack the field.*p"):
        collate([(ev[["x", "y", "t"]], 0)])
    bad = ev.copy()
    bad["x"][3] = 40
    with pytest.raises(ShapeError, match="sample 0 of the batch has events outside the 34x34 sensor"):
        collate([(bad, 0)])
    with pytest.raises(DataError, match="one class index"):
        collate([(ev, 1.5)])
    with pytest.raises(OptionError, match="n_bins"):
        EventCollate(0)
    with pytest.raises(OptionError, match="state duration_us"):
        EventCollate.for_dataset(tonic.datasets.POKERDVS.__new__(tonic.datasets.POKERDVS), T)
    # a raw-event dataset handed to the trainer without a collate function: the fix is named
    tr = _trainer()
    raw = Subset(tonic.datasets.NMNIST(save_to=str(nmnist_root), train=True), SUBSET[:4])
    with pytest.raises(ShapeError, match="raw events .*EventCollate"):
        tr.evaluate(raw)


def test_disk_cached_dataset_streams_through_the_door_with_workers(nmnist_root, tmp_path):
    ds = NMNISTDataset(nmnist_root, n_bins=T, n_samples=48, seed=1)
    net = cil.wrap(speck_model(), input_shape=(2, 34, 34))
    tr = cil.Trainer(net, "speck", "cil-spl", seed=3, num_workers=2)
    want = tr.evaluate(ds, batch_size=16)
    cached = tonic.DiskCachedDataset(ds, cache_path=str(tmp_path / "cache"))
    # tonic's DiskCachedDataset is no torch Dataset; its collation comes from the dataset it wraps
    assert tr.evaluate(cached, batch_size=16) == want  # first pass writes the cache (in the workers)
    assert len(list((tmp_path / "cache").glob("*.hdf5"))) == 48
    assert tr.evaluate(cached, batch_size=16) == want  # second pass reads it
    # raw tonic events cached, in a user's DataLoader with workers
    from cil_speck.data import EventCollate

    raw = tonic.datasets.NMNIST(save_to=str(nmnist_root), train=True)
    sub = Subset(raw, SUBSET)
    raw_cached = tonic.DiskCachedDataset(sub, cache_path=str(tmp_path / "raw"))
    loader = DataLoader(raw_cached, batch_size=16, collate_fn=EventCollate.for_dataset(raw_cached, T), num_workers=2)
    ref = tr.evaluate(DataLoader(sub, batch_size=16, collate_fn=EventCollate.for_dataset(raw, T)))
    assert tr.evaluate(loader) == ref and tr.evaluate(loader) == ref
    fit_a = cil.Trainer(cil.wrap(speck_model(), input_shape=(2, 34, 34)), "speck", "cil-spl", seed=3, num_workers=2,
                        lr=1e-2)
    fit_a.fit(cached, epochs=1, batch_size=16)
    fit_b = cil.Trainer(cil.wrap(speck_model(), input_shape=(2, 34, 34)), "speck", "cil-spl", seed=3, lr=1e-2)
    fit_b.fit(ds, epochs=1, batch_size=16)
    assert fit_a.history.column("loss") == fit_b.history.column("loss") and len(fit_a.history) == 3


# --------------------------------------------------------------------------- cil train --data
def not_data(n: int = 1):
    """A dataset factory that returns something the door refuses."""
    return "x" * n


def _cil(*args):
    from cil_core.app.cli import main

    return main(list(args))


def test_cil_train_reads_nmnist_by_root_folder_as_the_python_api_does(nmnist_root, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = _cil("train", "--data", f"nmnist:{nmnist_root}", "--data-opt", "n_bins=6", "n_samples=40",
              "--model", "test_tonic_pipeline:speck_net", "--model-opt", "n_bins=6", "--backend", "speck",
              "--epochs", "1", "--batch-size", "16", "--algo-opt", "lr=0.01", "--no-progress", "--out", str(out))
    assert rc == 0, capsys.readouterr().err
    assert "cil-spl on speck: chip test accuracy" in capsys.readouterr().out
    import json

    res = json.loads(out.read_text())
    tr = cil.Trainer(cil.wrap(speck_model(6), input_shape=(2, 34, 34)), "speck", "cil-spl", seed=0, lr=0.01)
    tr.fit(NMNISTDataset(nmnist_root, n_bins=6, n_samples=40), epochs=1, batch_size=16)
    want = tr.evaluate(NMNISTDataset(nmnist_root, train=False, n_bins=6, n_samples=40))
    assert res["metrics"]["n"] == 40 and res["metrics"]["accuracy"] == want["accuracy"]
    assert res["metrics"]["loss"] == pytest.approx(want["loss"], rel=1e-6) and len(res["history"]) == 3
    assert _cil("plugins") == 0 and "dataset    nmnist" in capsys.readouterr().out
    # cil fidelity reads the same data set, its test split streamed
    assert _cil("fidelity", "--data", f"nmnist:{nmnist_root}", "--data-opt", "n_bins=6", "n_samples=16",
                "--model", "test_tonic_pipeline:speck_net", "--model-opt", "n_bins=6", "--backend", "speck",
                "--batch-size", "8", "--num-workers", "1") == 0, capsys.readouterr().err
    assert "fidelity on the test data" in capsys.readouterr().out


def test_cil_train_takes_a_dataset_factory_from_a_config_file(nmnist_root, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'data = "test_tonic_pipeline:raw_loader"\nmodel = "test_tonic_pipeline:speck_net"\n'
                   f'backend = "speck"\nepochs = 1\n[data_options]\nroot = "{nmnist_root}"\nnum_workers = 1\n')
    assert _cil("train", "--config", str(cfg), "--no-progress") == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "chip test accuracy" in text and "5 steps" in text and "(80 samples)" in text  # test split: train=False


@pytest.mark.parametrize("args, message", [
    (["--data", "nmnist"], "data set 'nmnist' reads a folder: give it as nmnist:ROOT"),
    (["--data", "{root}", "--data-opt", "n_bins=6"], "is a file, not a data set"),
    (["--data", "nmnist:{root}", "--data-opt", "n_bin=6"], "unknown option 'n_bin' .*did you mean 'n_bins'"),
    (["--data", "nmnist:{root}", "--data-opt", "n_bins=six"], "option 'n_bins' .* must be int"),
    (["--data", "nmnist:{root}", "--data-opt", "train=false"], "data_options cannot hold 'train'"),
    (["--data", "nmnist:{root}", "--data-opt", "root=/elsewhere"], "the folder is given twice"),
    (["--data", "no_such_module:make"], "data: cannot import module 'no_such_module'.*registered data set"),
    (["--data", "test_tonic_pipeline:not_data"], "data 'test_tonic_pipeline:not_data': expected .*got str "
                                                 r"\(what the factory returned\)"),
    (["--data", "test_tonic_pipeline:raw_loader", "--data-opt", "root={root}", "--validation-split", "0.2"],
     "validation_split: a DataLoader .*cannot be split"),
    (["--data", "nmnist:{root}", "--model", None], "model: a streamed data set .*needs a model"),
    (["--data", "nmnist:{root}/nowhere"], r"N-MNIST \(train split\) is not under .*nowhere.*holds 0 .bin files.*download=True"),
])
def test_cil_train_data_errors_are_named_at_the_door(nmnist_root, capsys, args, message):
    import re

    args = [a.format(root=nmnist_root) if isinstance(a, str) else a for a in args]
    model = [] if None in args else ["--model", "test_tonic_pipeline:speck_net"]
    args = [a for a in args if a is not None and a != "--model"]
    assert _cil("train", *args, *model, "--backend", "speck", "--steps", "1", "--no-progress") == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
