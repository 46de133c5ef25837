"""Streaming data at the door (cil_core/data/stream.py): Datasets, DataLoaders and iterables of
batches train and evaluate exactly as the same data held as one tensor; layouts are stated or
inferred only where unambiguous; every batch is checked, the first bad one named by index."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import cil_core as cil
from cil_core.errors import CilError, DataError, NonFiniteError, ShapeError
from cil_core.network.reference import feedforward


class SampleDataset(Dataset):
    """Samples ``(x [T, F], y)`` of a time-major tensor ``[T, N, F]`` (module level: picklable)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int):
        return self.x[:, i], self.y[i]


def _time_major(items):
    """tonic's PadTensors(batch_first=False) for equal lengths: [T, B, ...]."""
    xs, ys = zip(*items)
    return torch.stack(xs, 1), torch.as_tensor(ys)


@pytest.fixture
def data(breast_cancer):
    return breast_cancer.train.subset(torch.arange(96)), breast_cancer.test.subset(torch.arange(70))


def _trainer(seed=0, algorithm="cil-spl", **kw):
    if algorithm != "mh":
        kw.setdefault("lr", 1e-2)
    return cil.Trainer(feedforward([62, 10, 2], seed=seed), "ideal", algorithm, seed=3, **kw)


def _weights(tr):
    return tr.network.detached_parameters()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_trains_exactly_as_the_same_data_as_one_tensor(data, workers):
    train, test = data
    ref = _trainer()
    ref.fit(train, epochs=2, batch_size=32)
    tr = _trainer(num_workers=workers)
    tr.fit(SampleDataset(train.x, train.y), epochs=2, batch_size=32)
    assert _same(_weights(ref), _weights(tr))
    assert tr.history.column("loss") == ref.history.column("loss")
    # what cil adds to a worker DataLoader pickles (spawn/forkserver start methods need that)
    import pickle

    from cil_core.data.stream import TimeMajorCollate

    items = [SampleDataset(train.x, train.y)[i] for i in range(3)]
    collate = pickle.loads(pickle.dumps(TimeMajorCollate()))
    assert torch.equal(collate(items)[0], train.x[:, :3])
    assert tr.evaluate(SampleDataset(test.x, test.y), batch_size=16) == ref.evaluate(test, batch_size=16)


def test_loaders_of_either_layout_evaluate_as_the_tensor(data):
    train, test = data
    tr = _trainer()
    tr.fit(train, epochs=1, batch_size=32)
    want, want_sw = tr.evaluate(test, batch_size=10), tr.evaluate_software(test, batch_size=10)
    ds = SampleDataset(test.x, test.y)
    batch_first = DataLoader(ds, batch_size=10)  # torch's default collation: [B, T, F]
    time_major = DataLoader(ds, batch_size=10, collate_fn=_time_major)
    assert next(iter(batch_first))[0].shape == (10, 16, 62) and next(iter(time_major))[0].shape == (16, 10, 62)
    for loader in (batch_first, time_major):
        assert tr.evaluate(loader) == want
        assert tr.evaluate_software(loader) == want_sw
    # a plain list of batches, and a generator, too
    batches = [(test.x[:, i:i + 20], test.y[i:i + 20]) for i in range(0, 70, 20)]
    want = tr.evaluate(test, batch_size=20)  # the loss sums in the same groups
    assert tr.evaluate(batches) == want
    assert tr.evaluate(b for b in batches) == want


def test_fit_on_a_loader_matches_fit_on_its_batches_in_memory(data):
    """A DataLoader's own order and batches: the same steps as those batches handed in one by one."""
    train, _ = data
    loader = DataLoader(SampleDataset(train.x, train.y), batch_size=32, collate_fn=_time_major)
    a = _trainer()
    a.fit(loader, epochs=1)
    b = _trainer()
    b.fit([(x.clone(), y.clone()) for x, y in loader], epochs=1)
    assert _same(_weights(a), _weights(b)) and len(a.history) == 3


def test_ambiguous_layout_is_refused_with_the_fix_and_stated_layouts_are_checked(breast_cancer):
    x, y = breast_cancer.train.x[:, :16], breast_cancer.train.y[:16]  # T = B = 16
    tr = _trainer()
    with pytest.raises(ShapeError, match=r"batch 0: .*time_first=True.*time_first=False"):
        tr.evaluate([(x, y)])
    assert tr.evaluate([(x, y)], time_first=True) == tr.evaluate((x, y))
    assert tr.evaluate([(x.transpose(0, 1), y)], time_first=False) == tr.evaluate((x, y))
    x2, y2 = breast_cancer.train.x[:, :10], breast_cancer.train.y[:10]
    with pytest.raises(ShapeError, match=r"batch 0: .*looks time-major.*time_first=True"):
        tr.evaluate([(x2, y2)], time_first=False)
    with pytest.raises(ShapeError, match=r"batch 0: .*looks batch-first.*time_first=False"):
        _trainer(time_first=True).evaluate([(x2.transpose(0, 1), y2)])
    # the layout settled by batch 0 holds: a later batch-first batch is refused, a T = B batch follows it
    with pytest.raises(ShapeError, match=r"batch 1: .*looks batch-first"):
        tr.evaluate([(x2, y2), (x2.transpose(0, 1), y2)])
    assert tr.evaluate([(x2, y2), (x, y)])["n"] == 26


def test_the_first_bad_batch_is_named_by_index(breast_cancer):
    x, y = breast_cancer.train.x[:, :30], breast_cancer.train.y[:30]
    bad = x[:, 20:30].clone()
    bad[3, 2, 5] = float("nan")
    tr = _trainer()
    batches = [(x[:, :10], y[:10]), (x[:, 10:20], y[:10:20]), (bad, y[20:30])]
    with pytest.raises(ShapeError, match="training data, batch 1"):
        tr.fit(batches, epochs=1)
    batches[1] = (x[:, 10:20], y[10:20])
    with pytest.raises(NonFiniteError, match="training data, batch 2: inputs hold 1 NaN"):
        tr.fit(batches, epochs=1)
    with pytest.raises(DataError, match="evaluation data, batch 0: labels lie in 1..2"):
        tr.evaluate([(x[:, :10], torch.full((10,), 2) - (torch.arange(10) % 2))])
    with pytest.raises(ShapeError, match="batch 0: expected an \\(inputs, labels\\) pair"):
        tr.evaluate([x])
    with pytest.raises(ShapeError, match="a torch Dataset, a DataLoader"):
        tr.fit(42)


def test_mh_refuses_a_stream_naming_the_fix_and_trains_on_it_materialized(data):
    train, _ = data
    loader = DataLoader(SampleDataset(train.x, train.y), batch_size=32)  # batch-first
    tr = _trainer(algorithm="mh", chains=2, burn_in=2)
    with pytest.raises(DataError, match=r"'mh' needs the whole training set.*trainer.materialize"):
        tr.fit(loader, steps=2)
    held = tr.materialize(loader)
    assert torch.equal(held.x, train.x) and torch.equal(held.y, train.y)
    tr.fit(held, steps=3)
    assert len(tr.history) == 3
    with pytest.raises(DataError, match="more than"):
        tr.materialize(loader, max_bytes=1000)


def test_an_iterator_is_read_once_and_a_loader_keeps_its_batch_size(data):
    train, _ = data
    gen = ((train.x[:, i:i + 32], train.y[i:i + 32]) for i in range(0, 96, 32))
    tr = _trainer()
    with pytest.raises(CilError, match="iterator, read once already"):
        tr.fit(gen, epochs=2)
    gen = ((train.x[:, i:i + 32], train.y[i:i + 32]) for i in range(0, 96, 32))
    _trainer().fit(gen, steps=3)
    with pytest.raises(cil.OptionError, match="set the batch size on the DataLoader"):
        tr.fit(DataLoader(SampleDataset(train.x, train.y), batch_size=8), epochs=1, batch_size=16)


def test_resume_with_a_dataset_is_bit_identical_at_an_epoch_boundary(data, tmp_path):
    train, _ = data
    ds = SampleDataset(train.x, train.y)
    ref = _trainer()
    ref.fit(ds, epochs=4, batch_size=32)
    ck = tmp_path / "spl.pt"
    first = _trainer()
    first.fit(ds, epochs=2, batch_size=32, checkpoint=ck)
    resumed = _trainer(seed=9)
    resumed.fit(ds, epochs=4, batch_size=32, resume=ck)
    assert _same(_weights(ref), _weights(resumed))
    assert resumed.history.column("loss") == ref.history.column("loss")


def test_fidelity_streams_a_loader_with_the_tensors_figures(data):
    _, test = data
    net = feedforward([62, 10, 2], seed=1)
    want = cil.fidelity(net, "analog-mismatch", test, batch_size=10, sample=40).to_dict()
    loader = DataLoader(TensorDataset(test.x.transpose(0, 1), test.y), batch_size=10)  # batch-first
    got = cil.fidelity(net, "analog-mismatch", loader, sample=40).to_dict()
    assert got == want
    with pytest.raises(cil.OptionError, match="sample must be an index"):
        cil.fidelity(net, "ideal", loader, sample=70)


class TrackedSpikes(Dataset):
    """Samples generated on demand; records how many of its sample tensors are alive at once."""

    def __init__(self, n: int) -> None:
        import weakref

        self.n, self.live, self.peak = n, weakref.WeakSet(), 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x = (torch.rand(16, 62, generator=torch.Generator().manual_seed(i)) < 0.2).float()
        self.live.add(x)
        self.peak = max(self.peak, len(self.live))
        return x, i % 2


def test_the_data_path_holds_one_batch_not_the_data_set():
    """Memory O(batch): however many samples a Dataset has, no more than one batch of them is
    alive at once during fit and evaluate (benchmarks/stream_memory.py measures the peak RSS)."""
    for n in (32, 320):
        ds = TrackedSpikes(n)
        tr = _trainer()
        tr.fit(ds, epochs=1, batch_size=32)
        assert len(tr.history) == n // 32 and ds.peak <= 32, (n, ds.peak)
        assert tr.evaluate(ds, batch_size=64)["n"] == n and ds.peak <= 64

    import weakref

    live: weakref.WeakSet = weakref.WeakSet()
    peak = 0

    def batches():
        nonlocal peak
        for i in range(20):
            x = torch.rand(16, 10, 62).round()
            live.add(x)
            peak = max(peak, len(live))
            yield x, torch.arange(10) % 2
            del x

    assert _trainer().evaluate(batches())["n"] == 200 and peak <= 2
