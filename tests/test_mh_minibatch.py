"""Minibatch MH (``likelihood="sequential"``, :mod:`cil_core.training.minibatch`): the sequential
test against exact decisions (a synthetic population, and full-data MH itself), its options at the
door, streamed sources (Dataset, DataLoader) read by index, resume bit for bit, and a step cost that
does not grow with the number of training samples (counted by the session)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import cil_core as cil
from cil_core.data import SpikeData
from cil_core.errors import CilError, DataError, OptionError
from cil_core.network.reference import feedforward
from cil_core.training.minibatch import MinibatchDraws, SequentialTest
from test_mh import _analog, _Dying

SEQ = dict(likelihood="sequential")


class Samples(Dataset):
    """Map-style: sample i is ``(x [T, F], label)`` of an in-memory set (no collate_fn of its own)."""

    def __init__(self, data: SpikeData) -> None:
        self.x, self.y = data.x, data.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[:, i], self.y[i]


class Stream(IterableDataset):
    def __init__(self, data: SpikeData) -> None:
        self.data = data

    def __iter__(self):
        for i in range(len(self.data)):
            yield self.data.x[:, i], self.data.y[i]


# ------------------------------------------------------------------ the test against exact decisions
def _synthetic(eps: float, max_samples: int | None = None, C: int = 400, N: int = 1000):
    """C chains, each with its own population of N differences l_i ~ N(mu_c, 1), mu_c uniform in
    [-0.1, 0.1] (the mean's standard error is 0.03: easy to very close calls), a flat prior and
    u_c uniform: exact MH accepts iff mean(l) > log(u) / N. The chains' proposals have per-sample
    cross entropy 0 and their current states l_i, so that l_i = CE_i(current) - CE_i(proposal)."""
    g = torch.Generator().manual_seed(7)
    mu = torch.empty(C, dtype=torch.float64).uniform_(-0.1, 0.1, generator=g)
    l = mu[:, None] + torch.randn(C, N, generator=g, dtype=torch.float64)
    log_u = torch.log(torch.rand(C, generator=g, dtype=torch.float64))
    exact = l.mean(1) > log_u / N
    data = SpikeData(torch.arange(N, dtype=torch.float64).reshape(1, N, 1), torch.zeros(N, dtype=torch.long))
    draws = MinibatchDraws(data, 50, torch.Generator().manual_seed(8))

    def score(rows, x, y):
        cur = l[rows][:, x[0, :, 0].long()]
        return torch.cat([cur, torch.zeros_like(cur)]), torch.zeros(2 * len(rows), dtype=torch.long)

    d = SequentialTest(50, eps, max_samples).decide(score, draws, draws.first(), torch.zeros(2 * C, dtype=torch.float64),
                                                    lambda: log_u, 1.0)
    return float((d.accept != exact).double().mean()), d.samples, d


def test_sequential_test_errs_about_at_its_level_and_reads_less_than_all():
    """epsilon = 0: every decision reads all N and equals the exact one. epsilon = 0.05 and 0.1:
    the share of decisions that differ from exact MH's stays within 2 epsilon (measured 1.2 and 1.3
    epsilon on these close calls) while a decision reads on average 55 % and 37 % of the samples;
    the cap decides by the estimate after at most max_samples."""
    wrong, read, d = _synthetic(0.0)
    assert wrong == 0.0 and set(read.tolist()) == {1000} and d.looks == 20
    cost = {}
    for eps in (0.05, 0.1):
        wrong, read, _ = _synthetic(eps)
        assert 0 < wrong <= 2 * eps, (eps, wrong)
        cost[eps] = float(read.double().mean())
    assert cost[0.1] < cost[0.05] < 0.7 * 1000, cost
    _, read, _ = _synthetic(0.05, max_samples=300)
    assert int(read.max()) == 300 and int(read.min()) == 50


def test_sequential_mh_with_one_look_takes_full_data_mh_step_for_step(breast_cancer):
    """minibatch >= N: the first look reads every sample and decides exactly, so the sequential MH is
    full-data MH bit for bit (same order of the data, same proposals, same u, same likelihood
    expressions): chains, log posteriors, traces, deployed weights and the chip's sample count."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(120))
    runs = {}
    for name, opts in (("full", {}), ("sequential", dict(SEQ, minibatch=500, epsilon=0.2))):
        net = feedforward([62, 10, 2], seed=0)
        tr = cil.Trainer(net, _analog(2, noise_sigma=0.0), "mh", seed=0, chains=3, burn_in=6, adapt_every=3,
                         rescore=True, **opts)
        tr.fit(train, steps=12)
        runs[name] = tr
    a, b = runs["full"].algorithm, runs["sequential"].algorithm
    for k in ("theta", "logpost", "loglik", "acc", "sum", "chain_sum", "scale", "best_theta"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert a.total_accepts == b.total_accepts > 0 and a.logit_scale == b.logit_scale
    assert b.trace.pop("samples_read") == [120.0] * 12
    assert a.trace == b.trace
    pa, pb = runs["full"].network.detached_parameters(), runs["sequential"].network.detached_parameters()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert runs["full"].session.stats.samples == runs["sequential"].session.stats.samples
    assert [r["loss"] for r in runs["full"].history.records] == [r["loss"] for r in runs["sequential"].history.records]


def test_sequential_mh_at_epsilon_zero_takes_full_data_mh_decisions_over_several_looks(breast_cancer):
    """epsilon = 0 with minibatches of 25: every decision reads all 120 samples in 5 looks and
    accepts exactly when full-data MH does (same chains); the log posteriors agree to rounding
    (sums over the looks). The logit scale is fixed: "auto" would choose it on the first look only."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(120))
    runs = {}
    for name, opts in (("full", {}), ("sequential", dict(SEQ, minibatch=25, epsilon=0.0))):
        tr = cil.Trainer(feedforward([62, 10, 2], seed=1), _analog(1, noise_sigma=0.0), "mh", seed=1, chains=3,
                         burn_in=6, adapt_every=3, rescore=True, logit_scale=0.3, **opts)
        tr.fit(train, steps=12)
        runs[name] = tr
    a, b = runs["full"].algorithm, runs["sequential"].algorithm
    assert torch.equal(a.theta, b.theta) and a.total_accepts == b.total_accepts > 0
    torch.testing.assert_close(a.logpost, b.logpost, rtol=1e-5, atol=1e-4)
    assert b.trace["samples_read"] == [120.0] * 12
    assert runs["full"].session.stats.samples == runs["sequential"].session.stats.samples


# ------------------------------------------------------------------ options and sources at the door
@pytest.mark.parametrize("opts, needle", [
    (dict(likelihood="stochastic"), "likelihood must be 'full'"),
    (dict(SEQ, minibatch=1), "minibatch must be a whole number >= 2"),
    (dict(SEQ, epsilon=1.0), r"epsilon must lie in \[0, 1\)"),
    (dict(SEQ, epsilon=-0.1), r"epsilon must lie in \[0, 1\)"),
    (dict(SEQ, minibatch=32, max_samples=16), r"max_samples must be None or a whole number >= minibatch \(32\)"),
    (dict(epsilon=0.1), "epsilon=0.1 apply to the minibatch likelihood only; add likelihood='sequential'"),
    (dict(minibatch=16, max_samples=64), "minibatch=16, max_samples=64 apply to the minibatch likelihood only"),
    (dict(SEQ, rescore=False), "rescore=False cannot be used with it"),
])
def test_bad_minibatch_options_are_refused(opts, needle):
    with pytest.raises(OptionError, match=needle):
        cil.make_algorithm("mh", **opts)


def test_minibatch_option_types_are_refused_at_the_door():
    with pytest.raises(OptionError, match="option 'minibatch' of algorithm 'mh' must be int"):
        cil.make_algorithm("mh", likelihood="sequential", minibatch=2.5)
    with pytest.raises(OptionError, match="option 'max_samples' of algorithm 'mh' must be int | None"):
        cil.make_algorithm("mh", likelihood="sequential", max_samples="all")


def test_fit_settings_and_sources_the_sequential_test_cannot_use_are_refused_before_any_chip_call(breast_cancer):
    train = breast_cancer.train.subset(torch.arange(64))
    tr = cil.Trainer(feedforward([62, 8, 2], seed=0), "ideal", "mh", chains=2, burn_in=1, **SEQ)
    with pytest.raises(OptionError, match="reads its own minibatches .*leave fit's batch_size unset"):
        tr.fit(train, steps=2, batch_size=16)
    batches = [(train.x[:, i:i + 16], train.y[i:i + 16]) for i in range(0, 64, 16)]
    with pytest.raises(DataError, match="reads samples by index, and a list of batches cannot be read so"):
        tr.fit(batches, steps=2)
    loader = DataLoader(Stream(breast_cancer.train), batch_size=16)
    with pytest.raises(DataError, match="a DataLoader of batches cannot be read so.*trainer.materialize"):
        tr.fit(loader, steps=2)
    assert tr.session.stats.calls == 0
    full = cil.Trainer(feedforward([62, 8, 2], seed=0), "ideal", "mh", chains=2, burn_in=1)
    with pytest.raises(DataError, match="likelihood='sequential'"):
        full.fit(Samples(train), steps=2)
    tr.fit(train, steps=2)
    with pytest.raises(CilError, match="steps on the minibatches it draws itself"):
        tr.algorithm.step(tr.state, (train.x[:, :8], train.y[:8]))


def test_a_dataset_and_a_dataloader_train_as_the_same_data_in_memory(breast_cancer):
    """The samples are read by index (a Dataset through cil's time-major collation, a batch-first
    DataLoader through its own collate_fn and the layout rule): the same chains bit for bit as the
    in-memory tensors, on a noise-free analog chip."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(100))
    sources = {"memory": train, "dataset": Samples(train),
               "loader": DataLoader(Samples(train), batch_size=7, shuffle=True)}
    algos = {}
    for name, data in sources.items():
        tr = cil.Trainer(feedforward([62, 8, 2], seed=0), _analog(0, noise_sigma=0.0), "mh", seed=4, chains=2,
                         burn_in=4, adapt_every=2, minibatch=16, epsilon=0.1, **SEQ)
        tr.fit(data, steps=8)
        algos[name] = tr.algorithm
    ref = algos["memory"]
    assert ref.trace["samples_read"] != [100.0] * 8  # the test did decide early
    for name in ("dataset", "loader"):
        assert torch.equal(ref.theta, algos[name].theta), name
        assert torch.equal(ref.logpost, algos[name].logpost), name
        assert ref.trace == algos[name].trace, name


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("source", ["memory", "dataset"])
def test_interrupted_and_resumed_minibatch_mh_equals_an_uninterrupted_run(breast_cancer, tmp_path, source):
    """A crash mid-run and a resume from the last checkpoint (new model, trainer and seed):
    weights, chains, samples, the minibatches read (their count per step) and the history equal an
    uninterrupted run's bit for bit: the order of the samples comes from the checkpointed generator."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(80))
    opts = dict(SEQ, chains=3, burn_in=6, adapt_every=3, minibatch=12, epsilon=0.1)

    def data():
        return train if source == "memory" else Samples(train)

    def trainer(seed=0, die_at=None):
        return cil.Trainer(feedforward([62, 10, 2], seed=seed), _Dying(_analog(2, noise_sigma=0.0), die_at), "mh",
                           seed=seed, **opts)

    ref = trainer()
    ref.fit(data(), steps=16)
    ck = tmp_path / "mh.pt"
    crashing = trainer(die_at=int(0.6 * ref.backend.calls))  # one chip call per look: dies about step 10
    with pytest.raises(cil.HardwareError, match="chip lost"):
        crashing.fit(data(), steps=16, checkpoint=ck, checkpoint_every=4)
    at = torch.load(ck, weights_only=True)["step"]
    assert 4 <= at < 16
    resumed = trainer(seed=99)
    resumed.fit(data(), steps=16, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    for k in ("theta", "logpost", "sum", "chain_sum", "scale", "best_theta", "unit"):
        assert torch.equal(getattr(ref.algorithm, k), getattr(resumed.algorithm, k)), k
    assert ref.algorithm.trace == resumed.algorithm.trace
    assert len(set(ref.algorithm.trace["samples_read"])) > 1  # decisions read different numbers of samples
    assert ref.algorithm.total_accepts == resumed.algorithm.total_accepts
    assert [r["loss"] for r in ref.history.records] == [r["loss"] for r in resumed.history.records]


# ------------------------------------------------------------------ cost
def _per_step_cost(data: SpikeData, temperature: float, **opts) -> list[int]:
    tr = cil.Trainer(feedforward([62, 10, 2], seed=3), _analog(3), "mh", seed=3, chains=4, burn_in=10,
                     temperature=temperature, **opts)
    seen: list[int] = []
    tr.fit(data, steps=30, on_step=lambda rec: seen.append(tr.session.stats.samples["train"]))
    return [b - a for a, b in zip(seen, seen[1:])]


def test_the_step_cost_does_not_grow_with_the_number_of_samples(breast_cancer):
    """The 398 training samples, and the same samples 4 times over (N = 1592) with temperature 4
    (the same posterior), on a noisy analog chip: full-data MH's steps cost 4 times as many
    sample-inferences (session counters: 2 x 4 chains x N), the sequential test's about the same
    (measured 0.95x) and never more than 2 x chains x max_samples."""
    torch.set_num_threads(1)
    small = breast_cancer.train
    big = SpikeData(small.x.repeat(1, 4, 1), small.y.repeat(4))
    full = {N: _per_step_cost(d, t) for N, d, t in ((398, small, 1.0), (1592, big, 4.0))}
    assert set(full[398]) == {2 * 4 * 398} and set(full[1592]) == {2 * 4 * 1592}
    seq = {N: _per_step_cost(d, t, minibatch=16, epsilon=0.1, max_samples=160, **SEQ)
           for N, d, t in ((398, small, 1.0), (1592, big, 4.0))}
    mean = {N: sum(c) / len(c) for N, c in seq.items()}
    assert 0.7 < mean[1592] / mean[398] < 1.4, mean
    assert max(max(c) for c in seq.values()) <= 2 * 4 * 160
    assert mean[1592] < 0.1 * 2 * 4 * 1592
