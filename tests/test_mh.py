"""Metropolis-Hastings (``cil_core/training/mh.py``): the block sampler against the earlier random
walk on a small seeded mismatched chip, its options, per-layer calibration (with and without
observable hidden layers), the chip-call budget, and resume bit-identical from a checkpoint."""

from __future__ import annotations

import pytest
import torch

import cil_core as cil
from cil_core.errors import CilError, OptionError
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.reference import feedforward
from cil_core.options import describe
from cil_core.training.mh import MetropolisHastings

LEGACY = dict(proposal="random-walk", init="auto", deploy_by="posterior")  # cil's earlier sampler


def _analog(seed: int, **kw):
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    return cil.make_backend("analog-mismatch", strength=1.0, seed=seed, **kw)


# ------------------------------------------------------------------ the sampler
def test_block_sampler_beats_the_earlier_random_walk_on_a_mismatched_chip(breast_cancer):
    """62-16-2 on two seeded analog chips (strength 1), 200 training samples, 8 chains x 300 steps,
    the same chip-call budget: the default sampler is far ahead of the random walk (measured:
    93.6 / 91.8 % vs 80.7 / 80.7 % on the test split)."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(200))
    acc, samples = {}, {}
    for chip in (1, 3):
        for name, opts in (("block", {}), ("random-walk", LEGACY)):
            net = feedforward([62, 16, 2], seed=chip)
            tr = cil.Trainer(net, _analog(chip), "mh", seed=0, chains=8, burn_in=150, **opts)
            tr.fit(train, steps=300)
            acc[name, chip] = tr.evaluate(breast_cancer.test)["accuracy"]
            samples[name, chip] = tr.session.stats.samples["train"]
    for chip in (1, 3):
        assert acc["block", chip] > acc["random-walk", chip] + 0.05, acc
        assert acc["block", chip] > 0.88, acc
        # same budget: 2 x 8 sets per step (noisy chip: current states re-scored) + the final choice;
        # only the start differs (calibration: 2 layers x 13 gains on 200 samples; auto: 7 gains)
        assert samples["block", chip] - samples["random-walk", chip] == (26 - 7) * 200
        assert samples["block", chip] == (26 + 300 * 16 + 9) * 200


def test_legacy_options_give_the_random_walk_defaults():
    a = MetropolisHastings(**LEGACY)
    assert (a.step_size, a.target, a.init_gains) == (0.05, 0.25, (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0))
    b = MetropolisHastings()
    assert (b.proposal, b.step_size, b.target, b.init, b.deploy_by, b.layer_choice) == (
        "block", 1.0, 0.3, "calibrate", "likelihood", "size")
    assert b.init_gains[0] == 0.25 and b.init_gains[-1] == 16.0 and 0.5 in b.init_gains and 8.0 in b.init_gains


def test_block_proposals_move_k_weights_of_one_layer(breast_cancer):
    net = feedforward([62, 8, 4, 2], seed=0, bias=True, weight_gain=2.0)
    tr = cil.Trainer(net, "ideal", "mh", seed=0, chains=6, block_size=5, init="network")
    a = tr.algorithm
    a.setup(tr.state, breast_cancer.train.subset(torch.arange(16)))
    # a block is a layer's weight and bias together; "size" picks layers in proportion to their entries
    assert [len(b) for b in a.blocks] == [62 * 8 + 8, 8 * 4 + 4, 4 * 2 + 2]
    torch.testing.assert_close(a.layer_p, torch.tensor([504, 36, 10]) / 550.0)
    for _ in range(20):
        prop, moved, de = a._propose_block(tr.generator)
        for c in range(6):
            changed = (prop[c] != a.theta[c]).nonzero().flatten()
            assert len(changed) == 5 and not de[c]
            assert set(changed.tolist()) <= set(a.blocks[int(moved[c])].tolist())


def test_step_sizes_adapt_per_layer_and_freeze_after_burn_in(breast_cancer):
    net = feedforward([62, 12, 2], seed=0, weight_gain=2.0)
    tr = cil.Trainer(net, "ideal", "mh", seed=0, chains=8, burn_in=60, adapt_every=10, init="network",
                     layer_choice="uniform")
    tr.fit(breast_cancer.train.subset(torch.arange(100)), steps=90)
    a = tr.algorithm
    assert a.scale.shape == (2,) and not torch.equal(a.scale[0], a.scale[1])  # one step size per layer
    assert (a.scale != 1.0).all()
    sizes = a.trace["step_size"]
    assert sizes[-1] == sizes[60] and sizes[59] != sizes[0]
    assert 0.1 < a.acceptance_rate < 0.6


# ------------------------------------------------------------------ calibration
class _OutputOnly(IdealBackend):
    """The ideal chip, but it shows only the output (no hidden layers)."""

    name = "output-only"
    observes_layers = False

    def forward(self, deployment, inputs, record=False):
        obs = super().forward(deployment, inputs, False)
        return cil.Observation(obs.output, None)


def test_calibration_hits_the_target_rates_and_falls_back_to_the_software_model(breast_cancer):
    train = breast_cancer.train.subset(torch.arange(300))
    runs = {}
    for chip in (IdealBackend(), _OutputOnly()):
        net = feedforward([62, 32, 16, 2], seed=3)
        tr = cil.Trainer(net, chip, "mh", seed=0, chains=2)
        tr.algorithm.setup(tr.state, train)
        runs[chip.name] = (tr.algorithm, tr.session.stats)
    a, stats = runs["ideal"]
    b, stats_b = runs["output-only"]
    # the software model is this chip exactly: the fallback picks the same gains
    assert a.layer_gains == b.layer_gains and a.calibration_rates == b.calibration_rates
    assert len(a.layer_gains) == 3 and a.layer_gains != [1.0, 1.0, 1.0]
    # each layer fires as close to its target as the gain grid allows (0.15 hidden, 0.3 output)
    for rate, target in zip(a.calibration_rates, (0.15, 0.15, 0.3)):
        assert abs(rate - target) < 0.05, a.calibration_rates
    # one request per layer, at most 256 samples, labels unused; the output-only chip: the output layer only
    assert stats.calls == 3 and stats.samples["train"] == 3 * 13 * 256
    assert stats_b.calls == 1 and stats_b.samples["train"] == 13 * 256
    # the tensor scales follow the gains
    u0 = float(feedforward([62, 32, 16, 2], seed=3).detached_parameters()["0.weight"].std())
    assert float(a.unit[0]) == pytest.approx(u0 * a.layer_gains[0])


def test_network_init_keeps_the_weights_and_auto_scales_them(breast_cancer):
    train = breast_cancer.train.subset(torch.arange(64))
    net = feedforward([62, 8, 2], seed=0)
    w0 = torch.cat([v.flatten() for v in net.detached_parameters().values()])
    tr = cil.Trainer(net, "ideal", "mh", init="network", chains=2)
    tr.algorithm.setup(tr.state, train)
    assert torch.equal(tr.algorithm.theta[0], w0) and tr.session.stats.calls == 0
    tr = cil.Trainer(net, "ideal", "mh", chains=2, **LEGACY)
    tr.algorithm.setup(tr.state, train)
    assert torch.allclose(tr.algorithm.theta[0], tr.algorithm.init_gain * w0)


# ------------------------------------------------------------------ deployment
def test_deploy_by_likelihood_deploys_the_best_scored_candidate(breast_cancer):
    train = breast_cancer.train.subset(torch.arange(80))
    net = feedforward([62, 8, 2], seed=0, weight_gain=2.0)
    tr = cil.Trainer(net, "ideal", "mh", seed=0, chains=4, burn_in=5)
    tr.fit(train, steps=12)
    a = tr.algorithm
    cands = torch.cat([a.posterior_mean()[None], a.chain_means()])
    readout = a.likelihood_readout(tr.readout)  # the readout scaled by the chosen logit scale
    ll = [-len(train) * float(readout.loss(tr.state.observe(
        {k: v[0] for k, v in a.parameter_sets(c[None]).items()}, train.x).output, train.y)) for c in cands]
    assert a.deploy_scores == pytest.approx(ll, rel=1e-5)
    best = cands[max(range(len(ll)), key=ll.__getitem__)]
    deployed = torch.cat([v.flatten() for v in net.detached_parameters().values()])
    assert torch.equal(deployed, best)


# ------------------------------------------------------------------ options
def test_every_option_is_typed_and_documented():
    rows = describe(MetropolisHastings)
    names = [r["name"] for r in rows]
    for opt in ("proposal", "block_size", "layer_choice", "deploy_by", "init", "init_gains", "target_rates",
                "de_fraction", "step_size", "target_acceptance"):
        assert opt in names
    for r in rows:
        assert r["type"] != "any", r
        assert r["doc"], f"option {r['name']!r} has no description in the class docstring"


@pytest.mark.parametrize("opts, needle", [
    (dict(proposal="gibbs"), "proposal must be 'block' or 'random-walk'"),
    (dict(init="zeros"), "init must be 'calibrate', 'auto' or 'network'"),
    (dict(layer_choice="last"), "layer_choice must be"),
    (dict(deploy_by="accuracy"), "deploy_by must be 'likelihood' or 'posterior'"),
    (dict(block_size=0), "block_size must be >= 1"),
    (dict(target_rates=(0.15, 1.5)), "target_rates must be two firing rates"),
    (dict(de_fraction=1.5), "de_fraction must lie in"),
    (dict(de_fraction=0.3, chains=2), "needs proposal='block' and chains >= 3"),
    (dict(init_gains=(0.0, 1.0)), "init_gains must be a non-empty sequence of positive gains"),
    (dict(rescore="sometimes"), "rescore must be 'auto', True or False"),
    (dict(step_size=0.0), "step_size, temperature, prior_std > 0"),
    (dict(burn_in=-1), "burn_in must be >= 0"),
])
def test_out_of_range_options_are_refused(opts, needle):
    with pytest.raises(OptionError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        cil.make_algorithm("mh", **opts)


def test_wrong_option_types_are_refused_at_the_door():
    with pytest.raises(OptionError, match="option 'block_size' of algorithm 'mh' must be int"):
        cil.make_algorithm("mh", block_size=2.5)
    with pytest.raises(OptionError, match="option 'proposal' of algorithm 'mh' must be str"):
        cil.make_algorithm("mh", proposal=1)


# ------------------------------------------------------------------ checkpoints
class _Dying(cil.Backend):
    """Wraps a chip; every forward from call ``die_at`` on fails (the chip is gone)."""

    name = "dying"

    def __init__(self, inner, die_at: int | None = None):
        self.inner, self.die_at, self.calls = inner, die_at, 0
        self.max_sets, self.observes_layers = inner.max_sets, inner.observes_layers
        self.stochastic = inner.stochastic

    def transfer(self, spec, params, n_sets=None):
        return self.inner.transfer(spec, params, n_sets)

    def forward(self, deployment, inputs, record=False):
        self.calls += 1
        if self.die_at is not None and self.calls >= self.die_at:
            raise RuntimeError("chip lost")
        return self.inner.forward(deployment, inputs, record)


@pytest.mark.parametrize("extra, batch_size", [({}, None), (dict(de_fraction=0.5, chains=4), 40)])
def test_resume_from_a_checkpoint_is_bit_identical(breast_cancer, tmp_path, extra, batch_size):
    """A run interrupted by a crash and resumed from its last checkpoint (fresh process: new model
    object, new trainer with another seed) ends with the same weights, samples and history as an
    uninterrupted run. Deterministic chip (noise off): a noisy chip's own noise stream is not part
    of a checkpoint."""
    train = breast_cancer.train.subset(torch.arange(80))
    opts = {"chains": 3, "burn_in": 6, "adapt_every": 3, **extra}

    def chip(die_at=None):
        return _Dying(_analog(2, noise_sigma=0.0), die_at)

    def trainer(seed=0, die_at=None, **kw):
        return cil.Trainer(feedforward([62, 10, 2], seed=seed), chip(die_at), "mh", seed=seed, **opts, **kw)

    ref = trainer()
    ref.fit(train, steps=16, batch_size=batch_size)
    assert ref.algorithm.n_kept == 10 * ref.algorithm.chains

    ck = tmp_path / "mh.pt"
    crashing = trainer(die_at=14)  # 2 calibration calls, then one or two calls per step: dies after step 8
    with pytest.raises(cil.HardwareError, match="chip lost"):
        crashing.fit(train, steps=16, batch_size=batch_size, checkpoint=ck, checkpoint_every=4)
    assert torch.load(ck, weights_only=True)["step"] == 8

    resumed = trainer(seed=99)
    resumed.fit(train, steps=16, batch_size=batch_size, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    for k in ("theta", "sum", "chain_sum", "scale", "best_theta", "unit"):
        assert torch.equal(getattr(ref.algorithm, k), getattr(resumed.algorithm, k)), k
    assert ref.algorithm.layer_gains == resumed.algorithm.layer_gains
    assert ref.algorithm.logit_scale == resumed.algorithm.logit_scale  # the auto scale travels in the checkpoint
    assert ref.algorithm.total_accepts == resumed.algorithm.total_accepts
    assert [r["loss"] for r in ref.history.records] == [r["loss"] for r in resumed.history.records]


def test_step_before_setup_is_an_error(breast_cancer):
    a = MetropolisHastings()
    with pytest.raises(CilError, match="before setup"):
        a.step(None, (breast_cancer.train.x, breast_cancer.train.y))  # type: ignore[arg-type]
