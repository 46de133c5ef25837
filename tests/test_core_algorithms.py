"""Algorithms on small fixed cases: MH adaptation and improvement on a non-ideal chip,
CIL-SPL beating offline on a mismatched chip, training state never lost."""

import pytest
import torch

import cil_core as cil
from chips import FixedMismatchChip
from cil_core.network.reference import feedforward


def _mh(net, chip, **kw):
    opts = dict(chains=4, burn_in=100, adapt_every=10, init="network")
    opts.update(kw)
    return cil.Trainer(net, chip, "mh", seed=0, **opts)


@pytest.mark.parametrize("proposal, start", [("random-walk", 3.0), ("random-walk", 1e-4), ("block", 30.0),
                                             ("block", 1e-4)])
def test_mh_step_size_adapts_toward_target_acceptance(breast_cancer, proposal, start):
    net = feedforward([62, 12, 2], seed=0, weight_gain=2.0)
    tr = _mh(net, "ideal", proposal=proposal, step_size=start, target_acceptance=0.3, burn_in=120)
    tr.fit(breast_cancer.train.subset(torch.arange(100)), steps=180)
    algo = tr.algorithm
    sizes = algo.trace["step_size"]
    if start > 1:
        assert sizes[119] < start / 5, "a far too large step must shrink during burn-in"
    else:
        assert sizes[119] > start * 5, "a far too small step must grow during burn-in"
    assert sizes[-1] == sizes[120], "the step size is frozen after burn-in"
    post = algo.trace["acceptance"][120:]
    assert 0.1 <= sum(post) / len(post) <= 0.6


def test_mh_raises_training_accuracy_on_a_mismatched_chip(breast_cancer):
    net = feedforward([62, 16, 2], seed=0, weight_gain=2.0)
    chip = FixedMismatchChip(sigma=0.6, bits=3, seed=1)
    chip.name = "fixed-mismatch"
    train = breast_cancer.train.subset(torch.arange(150))
    tr = _mh(net, chip, burn_in=100, init="calibrate")
    before = tr.evaluate(train)["accuracy"]
    tr.fit(train, steps=200)
    after = tr.evaluate(train)["accuracy"]
    assert after >= before + 0.15, (before, after)
    assert after >= 0.8, (before, after)
    # the deployed weights are the posterior mean (or a chain's mean): not the last state
    assert tr.algorithm.n_kept == 4 * 100
    lp = tr.history.column("log_posterior")
    assert max(lp[-50:]) > lp[0]


def test_cil_spl_beats_offline_on_a_mismatched_chip(breast_cancer):
    res = {}
    for algo in ("offline", "cil-spl"):
        net = feedforward([62, 16, 2], seed=0, weight_gain=2.0)
        chip = FixedMismatchChip(sigma=0.5, bits=3, inhibitory=0.5, threshold_sigma=0.6, seed=1)
        chip.name = "fixed-mismatch"
        tr = cil.Trainer(net, chip, algo, seed=0, lr=1e-2)
        tr.fit(breast_cancer.train, epochs=15, batch_size=64)
        res[algo] = tr.evaluate(breast_cancer.test)["accuracy"]
    assert res["cil-spl"] > res["offline"] + 0.03, res


def test_diverging_update_keeps_previous_weights(breast_cancer):
    net = feedforward([62, 8, 2], seed=0, weight_gain=2.0)
    tr = cil.Trainer(net, "ideal", "offline", lr=float("inf"), optimizer="sgd")
    before = net.detached_parameters()
    with pytest.raises(cil.CilError, match="non-finite weights.*kept"):
        tr.fit(breast_cancer.train, epochs=1)
    for k, v in net.detached_parameters().items():
        assert torch.equal(v, before[k])


def test_mh_batched_and_unbatched_scoring_agree(breast_cancer):
    """Scoring all proposals in one call (parameter sets) must equal one call per proposal."""
    runs, gains = {}, {}
    for batched in (True, False):
        net = feedforward([62, 8, 2], seed=0, weight_gain=2.0)
        tr = _mh(net, "ideal", batched=batched, burn_in=5, chains=3, init="calibrate")
        tr.fit(breast_cancer.train, steps=10)
        runs[batched] = torch.tensor(tr.history.column("log_posterior"))
        gains[batched] = tr.algorithm.layer_gains
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-5, atol=1e-3)
    assert gains[True] == gains[False]
