"""Gradient-informed MH (``cil_core/training/langevin.py``, algorithm ``mala``): the proxy gradient
against the library's own single-network autograd, the acceptance ratio against an independent
recomputation of the Gaussian proposal densities, the fallback on a useless gradient, accuracy
that rises, options refused at the door, and resume bit-identical from a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import cil_core as cil
from cil_core.errors import OptionError
from cil_core.hardware.transfer import straight_through
from cil_core.network.reference import feedforward
from cil_core.options import describe
from cil_core.training.langevin import GUIDED_STEP, HOLDOUT_MIN, Langevin
from test_mh import _analog, _Dying


def _setup(breast_cancer, n=60, chip="ideal", **opts):
    net = feedforward([62, 8, 2], seed=1, bias=True)
    tr = cil.Trainer(net, chip, "mala", seed=0, **opts)
    train = breast_cancer.train.subset(torch.arange(n))
    tr.algorithm.setup(tr.state, train)
    return tr, train


def _reference_gradient(tr, theta: torch.Tensor, x, y) -> torch.Tensor:
    """The proxy gradient of one parameter set by the plain single-network path: load the set into
    the model, run the chip on it, substitute its output straight-through into the model's own
    software forward (CIL-SPL's expression) and backpropagate with torch autograd."""
    a, net = tr.algorithm, tr.network
    net.load_parameters({k: v[0] for k, v in a.parameter_sets(theta[None]).items()})
    hw = tr.state.observe(net.detached_parameters(), x).output
    params = net.synaptic_parameters()
    for p in params.values():
        p.grad = None
    readout = a.likelihood_readout(tr.readout)
    ll = -len(y) * readout.loss(straight_through(net(x), hw), y) / a.temperature
    ll.backward()
    g = torch.cat([params[n].grad.reshape(-1) for n in a.names])
    return g - theta / (a.prior_std * a.unit) ** 2


def test_proxy_gradient_matches_the_single_network_autograd(breast_cancer):
    tr, train = _setup(breast_cancer, chains=3, init="network")
    a = tr.algorithm
    theta = a.theta + 0.3 * a.unit * torch.randn(a.theta.shape, generator=torch.Generator().manual_seed(0))
    lp, ll, acc, g = a._score_grad(tr.state, theta, train.x, train.y, calibrate_rows=3)
    lp_mh, ll_mh, acc_mh = a._score3(tr.state, theta, train.x, train.y)  # MH's scoring of the same sets
    assert torch.equal(lp, lp_mh) and torch.equal(ll, ll_mh) and torch.equal(acc, acc_mh)
    for s in range(3):
        torch.testing.assert_close(g[s], _reference_gradient(tr, theta[s], train.x, train.y), rtol=1e-4, atol=1e-4)
    assert (g != 0).any(dim=1).all()


@pytest.mark.parametrize("exact_burn_in, burn_in, guided_batch",
                         [(True, 5, None), (False, 0, None), (False, 10, None), (False, 2, None), (False, 2, 16)])
def test_acceptance_ratio_matches_an_independent_recomputation(breast_cancer, exact_burn_in, burn_in, guided_batch):
    """log α = log p(θ') − log p(θ) + log q(θ|θ') − log q(θ'|θ), the densities recomputed here with
    torch.distributions.Normal from the gradients at both points (the reference gradient above), the
    log posteriors with MH's own scoring. After burn-in (and during it with exact_burn_in) the q
    terms are in; a random-walk move has none, nor has a guided burn-in move (exact_burn_in=False).
    Minibatch guided moves (guided_batch) leave the kept steps exact, on the whole data's gradient."""
    tr, train = _setup(breast_cancer, chains=4, burn_in=burn_in, exact_burn_in=exact_burn_in, langevin_share=1.0,
                       langevin_block_size=20, init="network", guided_batch=guided_batch)
    a = tr.algorithm
    x, y = train.x, train.y
    a.step(tr.state, (x, y))  # first step: the starting gradients, then a move
    for _ in range(3):
        theta, grad, share, hs, betas = a.theta.clone(), a.grad.clone(), a.share.clone(), a.h.clone(), a.beta.clone()
        if a.n_steps == burn_in > 0 and not exact_burn_in:
            # the end of a guided burn-in: h_ℓ = min(s_ℓ, 1/rms(β_ℓ u g)) over the chains (module doc), then
            # restart_at_best: every chain starts this step at the state of the chain with the best likelihood
            hs = torch.stack([torch.minimum(a.scale[i], 1 / (betas[i] * a.unit[b] * grad[:, b]).pow(2).mean().sqrt())
                              for i, b in enumerate(a.blocks)])
            best = int(torch.argmax(a.loglik))
            theta, grad = theta[best].expand_as(theta), grad[best].expand_as(grad)
        a.step(tr.state, (x, y))
        prop, blocks = a.last_proposal, a.last_blocks
        lp, _, _ = a._score3(tr.state, torch.cat([theta, prop]), x, y)
        for c in range(a.chains):
            B = blocks[c]
            layer = next(i for i, blk in enumerate(a.blocks) if set(B.tolist()) <= set(blk.tolist()))
            expected = float(lp[a.chains + c] - lp[c])
            guided = not exact_burn_in and a.n_steps <= burn_in
            # a Langevin move moves min(20, layer size) entries, a random-walk move min(16, layer size)
            if len(B) == min(20, len(a.blocks[layer])) and not guided:
                h, u, beta = float(hs[layer]), a.unit[B], float(betas[layer])  # as drawn (they adapt after)
                g_prop = _reference_gradient(tr, prop[c], x, y)
                fwd = Normal(theta[c, B] + 0.5 * h * h * u * u * beta * grad[c, B], h * u).log_prob(prop[c, B]).sum()
                rev = Normal(prop[c, B] + 0.5 * h * h * u * u * beta * g_prop[B], h * u).log_prob(theta[c, B]).sum()
                expected += float(rev - fwd)
            assert float(a.last_log_ratio[c]) == pytest.approx(expected, rel=1e-4, abs=1e-3), (c, len(B))


def test_guided_moves_are_drawn_with_a_minibatch_gradient(breast_cancer):
    """guided_batch=m: a guided burn-in step draws m of the n samples and its moves follow the
    minibatch estimate (n/m)·∇ log p(subset) − prior of the current states' proxy gradient (checked
    through the RMS state v ← 0.9 v + 0.1 (u·g)², against the single-network autograd on the subset);
    the stored gradient stays the whole data's, and no chip call is added."""
    n, m = 60, 16
    tr, train = _setup(breast_cancer, n=n, chains=3, burn_in=5, init="network", guided_batch=m)
    a = tr.algorithm
    x, y = train.x, train.y
    theta = a.theta.clone()
    gen = torch.Generator()
    gen.set_state(tr.state.generator.get_state())
    idx = torch.randperm(n, generator=gen)[:m]  # the step's first draw
    calls = tr.session.stats.calls
    a.step(tr.state, (x, y))
    assert tr.session.stats.calls - calls == 2  # the starting states, then the proposals: as without it
    full = torch.stack([_reference_gradient(tr, theta[c], x, y) for c in range(3)])
    prior = theta / (a.prior_std * a.unit) ** 2
    sub = torch.stack([_reference_gradient(tr, theta[c], x[:, idx], y[idx]) for c in range(3)])
    mb = n / m * (sub + prior) - prior
    assert not torch.allclose(mb, full, rtol=0.05, atol=1e-3)  # the minibatch estimate is not the full gradient
    expected_v = 0.9 * (a.unit * full) ** 2 + 0.1 * (a.unit * mb) ** 2
    torch.testing.assert_close(a.v, expected_v, rtol=1e-3, atol=1e-6)
    kept = ~(a.theta != theta).any(1)  # the chains whose move was rejected keep the full gradient
    torch.testing.assert_close(a.grad[kept], full[kept], rtol=1e-4, atol=1e-4)


def test_a_useless_gradient_falls_back_to_the_block_random_walk(breast_cancer):
    tr, train = _setup(breast_cancer, chains=4, langevin_share=1.0, init="network", exact_burn_in=True)
    a = tr.algorithm
    a.step(tr.state, (train.x, train.y))
    a.grad[:] = float("nan")  # as if the surrogate gradient had blown up at every current state
    theta = a.theta.clone()
    a.step(tr.state, (train.x, train.y))
    assert a.fallback_proposals == 4
    for c in range(4):  # a random-walk move from θ: mean θ, std s_ℓ u (it is still a valid MH move)
        B = a.last_blocks[c]
        assert torch.isfinite(a.last_proposal[c]).all()
        assert (a.last_proposal[c, B] != theta[c, B]).all()


@pytest.mark.parametrize("restart", [True, False])
def test_the_kept_chains_start_at_the_best_burn_in_state(breast_cancer, restart):
    """restart_at_best: the first kept step starts every chain at the burn-in chain with the best
    log-likelihood (its state moved on one block only); without it each chain goes on from its own."""
    tr, train = _setup(breast_cancer, chains=4, burn_in=3, init="network", restart_at_best=restart)
    a = tr.algorithm
    for _ in range(3):
        a.step(tr.state, (train.x, train.y))
    theta, best = a.theta.clone(), int(torch.argmax(a.loglik))
    assert not torch.equal(theta[0], theta[1])  # burn-in left the chains apart
    a.step(tr.state, (train.x, train.y))
    for c in range(4):
        outside = torch.ones(theta.shape[1], dtype=torch.bool)
        outside[a.last_blocks[c]] = False
        start = theta[best] if restart else theta[c]
        assert torch.equal(a.last_proposal[c, outside], start[outside])
        assert torch.equal(a.theta[c, outside], start[outside])


def test_accuracy_rises_on_a_small_task(breast_cancer):
    torch.set_num_threads(1)
    net = feedforward([62, 8, 2], seed=4)
    train = breast_cancer.train.subset(torch.arange(120))
    tr = cil.Trainer(net, "ideal", "mala", seed=0, chains=4, burn_in=30)
    before = tr.evaluate(breast_cancer.test)["accuracy"]
    tr.fit(train, steps=60)
    after = tr.evaluate(breast_cancer.test)["accuracy"]
    a = tr.algorithm
    assert before < 0.7 and after > 0.85, (before, after)
    assert a.langevin_proposals > 0 and a.langevin_accepts > 0
    # the guided steps adapt during burn-in and are frozen after it; the Langevin steps then adapt
    # with a gain that diminishes like adapt_rate / sqrt(t)
    eta, h = a.trace["guided_step"], a.trace["langevin_step"]
    assert eta[29] != eta[0] and eta[-1] == eta[30]
    moves = [abs(math.log(h[i + 1] / h[i])) for i in range(30, 59)]
    assert any(m > 0 for m in moves)
    assert all(m <= a.adapt_rate / math.sqrt(i - 29) + 1e-9 for i, m in zip(range(31, 60), moves)), moves


def test_every_option_is_typed_and_documented():
    rows = {r["name"]: r for r in describe(Langevin)}
    for opt in ("langevin_block_size", "exact_burn_in", "langevin_step", "langevin_target", "langevin_share",
                "min_share", "collapse_acceptance", "adapt_rate", "restart_at_best", "guided_batch", "chains", "block_size", "burn_in"):
        assert opt in rows, opt
    for r in rows.values():
        assert r["type"] != "any", r
        assert r["doc"], f"option {r['name']!r} has no description in the class docstring"


@pytest.mark.parametrize("opts, needle", [
    (dict(langevin_target=1.5), "langevin_target must lie in (0, 1)"),
    (dict(min_share=0.5), "min_share must lie in [0, 0.5)"),
    (dict(langevin_share=2.0), "langevin_share must lie in [0, 1]"),
    (dict(langevin_block_size=0), "langevin_block_size must be >= 1"),
    (dict(langevin_step=-1.0), "langevin_step must be a positive number"),
    (dict(collapse_acceptance=1.0), "collapse_acceptance must lie in [0, 1)"),
    (dict(adapt_rate=-0.1), "adapt_rate must be a number >= 0"),
    (dict(guided_batch=0), "guided_batch must be an integer >= 1 or None"),
    (dict(proposal="random-walk"), "proposal must be 'block'"),
    (dict(de_fraction=0.3), "mala does not take de_fraction"),
    (dict(likelihood="sequential"), "likelihood must be 'full'"),
    (dict(neuron_share=0.25), "neuron_share must be 0"),
    (dict(burn_in=-1), "burn_in must be >= 0"),  # MH's own checks still apply
    (dict(burn_in=10, burn_in_minibatch=0), "burn_in_minibatch must be a whole number >= 1"),
    (dict(burn_in=10, burn_in_minibatch=2.5), "option .burn_in_minibatch. of algorithm .mala. must be int"),
    (dict(burn_in=10, burn_in_minibatch=True), "option .burn_in_minibatch. of algorithm .mala. must be int"),
    (dict(burn_in=10, burn_in_minibatch=32, exact_burn_in=True), "burn_in_minibatch applies to the guided burn-in"),
    (dict(burn_in_minibatch=32), "applies to burn-in steps, but burn_in=0"),
    (dict(burn_in=10, burn_in_minibatch=32, rescore=False), "rescore=False cannot be used with it"),
    (dict(guided_block="all"), "guided_block must be 'layer' or 'network'"),
    (dict(guided_noise=-0.5), "guided_noise must be a number >= 0"),
    (dict(guided_block="network", exact_burn_in=True), "guided_block='network' applies to the guided burn-in"),
    (dict(warm_start=-1), "warm_start must be a whole number >= 0"),
    (dict(chains=4, warm_start=5), "warm_start=5 chains .* only chains=4"),
    (dict(warm_steps=0), "warm_steps must be a whole number >= 1"),
    (dict(warm_batch=0), "warm_batch must be a whole number >= 1"),
    (dict(warm_lr=0.0), "warm_lr must be a positive number"),
    (dict(warm_grad_clip=0.0), "warm_grad_clip must be a positive number"),
    (dict(warm_grad_clip=float("inf")), "warm_grad_clip must be a positive number"),
    (dict(holdout=1.0), "holdout must lie in [0, 1)"),
    (dict(holdout=-0.1), "holdout must lie in [0, 1)"),
    (dict(holdout_by="loss"), "holdout_by must be 'likelihood' or 'accuracy'"),
    (dict(holdout_rejoin=True), "holdout_rejoin=True .* needs holdout > 0"),
    (dict(warm_moves="langevin"), "warm_moves must be 'mala', 'block', 'mh' or 'auto'"),
    (dict(warm_moves="auto"), "warm_moves='auto' sets how the warm-started chains move, but warm_start=0"),
    (dict(warm_moves="mh"), "warm_moves='mh' sets how the warm-started chains move, but warm_start=0"),
    (dict(warm_start=2, warm_prefer=-1.0), "warm_prefer must be a number >= 0"),
    (dict(warm_start=2, warm_prefer=float("nan")), "warm_prefer must be a number >= 0"),
    (dict(warm_prefer=2.0), "it needs 0 < warm_start < chains .warm_start=0"),
    (dict(chains=4, warm_start=4, warm_prefer=2.0), "it needs 0 < warm_start < chains"),
    (dict(warm_start=2, warm_prefer=2.0, restart_at_best=False), "restart_at_best=True and burn_in >= 1"),
    (dict(holdout=0.2, holdout_rejoin=True, restart_at_best=False), "needs holdout > 0, restart_at_best=True"),
    (dict(holdout=0.2, holdout_rejoin=True, burn_in=0), "and burn_in >= 1"),
])
def test_out_of_range_options_are_refused(opts, needle):
    with pytest.raises(OptionError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        cil.make_algorithm("mala", **opts)


def test_wrong_option_types_are_refused_at_the_door():
    with pytest.raises(OptionError, match="option 'langevin_block_size' of algorithm 'mala' must be"):
        cil.make_algorithm("mala", langevin_block_size=2.5)
    with pytest.raises(OptionError, match="option 'exact_burn_in' of algorithm 'mala' must be bool"):
        cil.make_algorithm("mala", exact_burn_in="yes")
    with pytest.raises(OptionError, match="option 'guided_batch' of algorithm 'mala' must be"):
        cil.make_algorithm("mala", guided_batch=12.5)
    with pytest.raises(OptionError, match="burn_in_minibatch .* and guided_batch .*choose one"):
        cil.make_algorithm("mala", guided_batch=16, burn_in_minibatch=32, burn_in=10)
    with pytest.raises(OptionError, match="restart_at_best"):
        cil.make_algorithm("mala", restart_at_best=1)
    with pytest.raises(OptionError, match="unknown option 'langevin_stepsize'"):
        cil.make_algorithm("mala", langevin_stepsize=0.1)


@pytest.mark.parametrize("extra, batch_size", [({}, None), (dict(exact_burn_in=True, langevin_share=0.5), 40),
                                                ({"guided_batch": 16}, None), (dict(burn_in_minibatch=24), None),
                                                (dict(warm_start=1, warm_steps=5, holdout=0.25), None),
                                                (dict(warm_start=2, warm_steps=5, holdout=0.25, holdout_rejoin=True),
                                                 None),
                                                (dict(warm_start=1, warm_steps=5, warm_moves="mh", warm_prefer=2.0),
                                                 None)])
def test_resume_from_a_checkpoint_is_bit_identical(breast_cancer, tmp_path, extra, batch_size):
    """As MH's test: a run that dies and is resumed from its last checkpoint (new model, new trainer
    with another seed) ends with the same weights, chains, Langevin steps, shares and history as an
    uninterrupted one. Deterministic chip (noise off)."""
    train = breast_cancer.train.subset(torch.arange(80))
    opts = {"chains": 3, "burn_in": 6, "adapt_every": 3, **extra}

    def trainer(seed=0, die_at=None):
        chip = _Dying(_analog(2, noise_sigma=0.0), die_at)
        return cil.Trainer(feedforward([62, 10, 2], seed=seed), chip, "mala", seed=seed, **opts)

    ref = trainer()
    ref.fit(train, steps=16, batch_size=batch_size)
    assert ref.algorithm.n_kept == 10 * ref.algorithm.chains

    ck = tmp_path / "mala.pt"
    crashing = trainer(die_at=15)  # 2 calibration calls, the starting gradients, then 1-2 calls per step
    with pytest.raises(cil.HardwareError, match="chip lost"):
        crashing.fit(train, steps=16, batch_size=batch_size, checkpoint=ck, checkpoint_every=4)
    assert torch.load(ck, weights_only=True)["step"] >= 4

    resumed = trainer(seed=99)
    resumed.fit(train, steps=16, batch_size=batch_size, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    for k in ("theta", "grad", "sum", "chain_sum", "scale", "h", "share", "beta", "best_theta", "unit", "held_score",
              "cunit"):
        assert torch.equal(getattr(ref.algorithm, k), getattr(resumed.algorithm, k)), k
    assert ref.algorithm.logit_scale == resumed.algorithm.logit_scale
    assert ref.algorithm.total_accepts == resumed.algorithm.total_accepts
    assert ref.algorithm.langevin_accepts == resumed.algorithm.langevin_accepts
    assert [r["loss"] for r in ref.history.records] == [r["loss"] for r in resumed.history.records]
    assert not math.isnan(float(ref.algorithm.h.mean()))
    if extra.get("holdout"):  # the resumed run (another seed) fits and chooses on the checkpointed split
        assert ref.algorithm.n_holdout == 20
        assert torch.equal(ref.algorithm.holdout_index, resumed.algorithm.holdout_index)
        assert torch.isfinite(ref.algorithm.held_score).all()


@pytest.mark.parametrize("guided_block", ["layer", "network"])
def test_minibatch_burn_in_scores_on_subsets_then_on_all_the_data(breast_cancer, guided_block):
    """burn_in_minibatch=m: every guided burn-in step reads 2·C·m sample-inferences (current states and
    proposals on one fresh subset, one request), the first step after burn-in re-scores the current
    states on all the data with its proposals (one request of 2·C·N), later steps score the
    proposals only (C·N); the chains' scores are then the whole-data log posterior, and the run is
    reproducible from its seed. Accuracy rises on a small task (as the full-data test above)."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(120))
    C, m, burn = 4, 24, 30

    def run():
        tr = cil.Trainer(feedforward([62, 8, 2], seed=4), "ideal", "mala", seed=0, chains=C, burn_in=burn,
                         burn_in_minibatch=m, init="network", guided_block=guided_block)
        before = tr.evaluate(breast_cancer.test)["accuracy"]
        per_step = []
        tr.fit(train, steps=40, on_step=lambda rec: per_step.append(tr.session.stats.samples.get("train", 0)))
        return tr, before, per_step

    tr, before, seen = run()
    a = tr.algorithm
    reads = [seen[0]] + [seen[i] - seen[i - 1] for i in range(1, len(seen))]
    assert reads[0] == C * m + C * m  # the starting states (and gradients) on the first subset, then its proposals
    assert reads[1:burn] == [2 * C * m] * (burn - 1)
    assert reads[burn] == 2 * C * 120 and reads[burn + 1:] == [C * 120] * (len(reads) - burn - 1)
    # after burn-in the current states carry whole-data scores (MH's _score3 on all 120 samples)
    lp, ll, acc = a._score3(tr.state, a.theta, train.x, train.y)
    torch.testing.assert_close(a.logpost, lp)
    torch.testing.assert_close(a.loglik, ll)
    assert not a.subset_scores and a.langevin_accepts > 0
    after = tr.evaluate(breast_cancer.test)["accuracy"]
    assert before < 0.7 and after > 0.85, (before, after)

    tr2, _, _ = run()  # the subsets are drawn from the trainer's seeded generator
    for k, v in tr.network.detached_parameters().items():
        assert torch.equal(v, tr2.network.detached_parameters()[k]), k
    assert [r["loss"] for r in tr.history.records] == [r["loss"] for r in tr2.history.records]


def test_minibatch_burn_in_estimate_is_scaled_to_the_whole_set(breast_cancer):
    """A subset's log-likelihood counts N samples: -N/τ · mean CE on the subset, so on a subset of all N
    samples (any order) it equals the whole-data score, and on a proper subset it is N/m times the
    subset's own sum."""
    tr, train = _setup(breast_cancer, chains=3, init="network", burn_in=5, burn_in_minibatch=20)
    a = tr.algorithm
    theta = a.theta + 0.3 * a.unit * torch.randn(a.theta.shape, generator=torch.Generator().manual_seed(1))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(2))
    x, y = train.select(idx)
    _, ll_all, _, g_all = a._score_grad(tr.state, theta, x, y, n_like=len(train))
    _, ll_ref, _, g_ref = a._score_grad(tr.state, theta, train.x, train.y)
    torch.testing.assert_close(ll_all, ll_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_all, g_ref, rtol=1e-4, atol=1e-4)
    xs, ys = train.select(idx[:20])
    _, ll_sub, _, _ = a._score_grad(tr.state, theta, xs, ys, n_like=len(train))
    _, ll_own, _ = a._score3(tr.state, theta, xs, ys)
    torch.testing.assert_close(ll_sub, ll_own * len(train) / 20)


def test_whole_network_guided_moves_move_every_layer_then_exact_moves_one(breast_cancer):
    """guided_block="network": a guided burn-in Langevin move changes every weight of every layer (one
    RMS-normalised gradient step on the whole network, with noise); after burn-in a move changes one
    layer only (the exact per-layer kernel)."""
    tr, train = _setup(breast_cancer, chains=3, init="network", burn_in=2, guided_block="network",
                       langevin_share=1.0, restart_at_best=False)
    a = tr.algorithm
    for step in range(3):
        before = a.theta.clone()
        a.step(tr.state, (train.x, train.y))
        for c in range(3):
            changed = [bool((a.last_proposal[c, blk] != before[c, blk]).all()) for blk in a.blocks]
            unchanged = [bool((a.last_proposal[c, blk] == before[c, blk]).all()) for blk in a.blocks]
            if step < 2:
                assert all(changed), (step, c, changed)
            else:
                assert sum(changed) == 1 and sum(unchanged) == len(a.blocks) - 1, (step, c, changed)
    assert not math.isnan(float(a.eta.mean())) and (a.eta != GUIDED_STEP).all()


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_guided_noise_sets_the_noise_of_a_guided_move(breast_cancer, noise):
    """guided_noise=0: a guided move is the RMS-normalised gradient step alone, so every weight moves
    along its proxy gradient's sign; with guided_noise=1 the noise (as large as the drift) sends a
    good share of them the other way."""
    tr, train = _setup(breast_cancer, chains=3, init="network", burn_in=3, guided_block="network",
                       langevin_share=1.0, guided_noise=noise)
    a = tr.algorithm
    a.step(tr.state, (train.x, train.y))  # the first step scores the start: the gradients are known from here
    before, grad = a.theta.clone(), a.grad.clone()
    a.step(tr.state, (train.x, train.y))
    moved, g = a.last_proposal - before, grad
    live = g != 0
    agree = float((torch.sign(moved[live]) == torch.sign(g[live])).float().mean())
    if noise == 0.0:
        assert agree == 1.0
    else:
        assert 0.5 < agree < 0.95, agree


# ------------------------------------------------------------------ warm start and held-out selection
def test_holdout_splits_by_class_and_the_held_out_samples_never_enter_the_likelihood(breast_cancer):
    """holdout=0.25 on 80 samples: a class-stratified split into 60 fitted and 20 held-out samples.
    Changing the held-out samples' inputs and labels changes nothing of the chains (states, scores,
    gradients) through burn-in, the last burn-in step included (its request carries them), only
    their held-out scores; the chains' log-likelihood is the one measured on the fitted samples."""
    train = breast_cancer.train.subset(torch.arange(80))
    runs = []
    for scramble in (False, True):
        tr = cil.Trainer(feedforward([62, 8, 2], seed=1), _analog(0, noise_sigma=0.0), "mala", seed=0,
                         chains=3, burn_in=4, holdout=0.25)
        a = tr.algorithm
        a.setup(tr.state, train)
        idx = a.holdout_index
        assert len(idx) == 20 and a.n_holdout == 20 and len(a._fit) == 60
        for c in (0, 1):
            assert int((train.y[idx] == c).sum()) == round(0.25 * int((train.y == c).sum()))
        if scramble:
            xh, yh = a._held
            a._held = (torch.flip(xh, dims=[0]), 1 - yh)
        batches = list(a.batch_source(tr.state, tr._stream(train, "training data", None, shuffle=True,
                                                           time_first=None)))
        (x, y), = batches
        keep = ~torch.isin(torch.arange(80), idx)  # every step fits exactly the samples not held out
        assert torch.equal(y, train.y[keep]) and torch.equal(x, train.x[:, keep])
        for _ in range(4):
            a.step(tr.state, (x, y))
        runs.append(a)
        lp, ll, _ = a._score3(tr.state, a.theta, x, y)
        assert torch.equal(ll, a.loglik)
    ref, other = runs
    for k in ("theta", "loglik", "logpost", "grad", "acc"):
        assert torch.equal(getattr(ref, k), getattr(other, k)), k
    assert torch.isfinite(ref.held_score).all() and not torch.equal(ref.held_score, other.held_score)


def test_holdout_refuses_a_batch_size_and_skips_tiny_sets(breast_cancer):
    net = feedforward([62, 8, 2], seed=1)
    tr = cil.Trainer(net, "ideal", "mala", seed=0, chains=2, burn_in=2, holdout=0.2)
    with pytest.raises(OptionError, match="holdout=0.2 scores every step on all the samples it fits; leave fit's batch_size"):
        tr.fit(breast_cancer.train.subset(torch.arange(80)), steps=3, batch_size=16)
    tiny = breast_cancer.train.subset(torch.arange(40))  # 0.2 * 40 = 8 < HOLDOUT_MIN held-out samples: no split
    tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=2, burn_in=2, holdout=0.2)
    tr.fit(tiny, steps=4)
    assert tr.algorithm.n_holdout == 0 and tr.algorithm.holdout_index is None and tr.algorithm.n_train == 40
    assert HOLDOUT_MIN == 10


def test_warm_start_trains_in_software_without_a_chip_call(breast_cancer):
    """warm_start=2 of 3 chains: setup makes the same chip calls as without (the calibration's), the
    first two chains start at the network trained by the offline algorithm's steps (fits the
    training samples in software), the third at the calibrated init, and the network keeps the
    user's weights."""
    train = breast_cancer.train.subset(torch.arange(120))
    calls, algos = [], []
    for warm in (0, 2):
        net = feedforward([62, 8, 2], seed=1)
        before = {k: v.clone() for k, v in net.detached_parameters().items()}
        tr = cil.Trainer(net, _analog(0, noise_sigma=0.0), "mala", seed=0, chains=3, burn_in=2, warm_start=warm,
                         warm_steps=60)
        tr.algorithm.setup(tr.state, train)
        calls.append(tr.session.stats.calls)
        algos.append(tr.algorithm)
        for k, v in net.detached_parameters().items():
            assert torch.equal(v, before[k]), k
    assert calls[0] == calls[1] > 0
    cold, warm = algos
    assert torch.equal(warm.theta[2], cold.theta[0]) and torch.equal(warm.theta[0], warm.theta[1])
    assert not torch.equal(warm.theta[0], cold.theta[0])
    # each chain's tensor scales (steps, prior) are its own start's: the std of each warm tensor
    for blk in warm.blocks[:1]:
        w = warm.theta[0, blk[:62 * 8]]  # the first layer's weight tensor
        torch.testing.assert_close(warm.cunit[0, blk[0]], w.std())
    assert torch.equal(warm.cunit[2], cold.unit) and torch.equal(warm.unit, cold.unit)
    # the warm state fits the training samples in software; the random init does not
    params = warm.parameter_sets(warm.theta[[0, 2]])
    net = feedforward([62, 8, 2], seed=1)
    accs = []
    for s in range(2):
        net.load_parameters({k: v[s] for k, v in params.items()})
        accs.append(float((net(train.x).sum(0).argmax(-1) == train.y).float().mean()))
    assert accs[0] > 0.85 > accs[1], accs


@pytest.mark.parametrize("holdout", [0.0, 0.25])
def test_the_restart_chooses_the_chain_better_on_the_held_out_samples(breast_cancer, holdout):
    """A constructed case: chain 0 holds software-trained weights, chain 1 the same weights with the
    two output neurons swapped (it predicts the other class). The held-out labels are flipped, so
    chain 1 is the better one on them and chain 0 on the fitted samples: the restart after burn-in
    takes chain 1 with holdout, chain 0 without."""
    train = breast_cancer.train.subset(torch.arange(80))
    tr = cil.Trainer(feedforward([62, 8, 2], seed=1, bias=True), _analog(0, noise_sigma=0.0), "mala", seed=0,
                     chains=2, burn_in=1, warm_start=2, warm_steps=60, holdout=holdout, block_size=1,
                     langevin_share=0.0, min_share=0.0, step_size=1e-3)
    a = tr.algorithm
    a.setup(tr.state, train)
    p = a.parameter_sets(a.theta[:1])
    out_w, out_b = [n for n in a.names if n.startswith(a.names[-1].rsplit(".", 1)[0])][-2:]
    for n in (out_w, out_b):
        p[n] = p[n].flip(1)
    a.theta[1] = torch.cat([p[n].reshape(-1) for n in a.names])
    if holdout:
        xh, yh = a._held
        a._held = (xh, 1 - yh)
    x, y = (a._fit.x, a._fit.y)
    a.step(tr.state, (x, y))  # the last burn-in step (it scores the held-out samples when holding out)
    assert float(a.acc[0]) > 0.85 > 0.15 > float(a.acc[1])
    if holdout:
        assert float(a.held_score[1, 0]) > float(a.held_score[0, 0])
    a.step(tr.state, (x, y))  # the restart, then the first kept step
    assert a.restart_chain == (1 if holdout else 0)
    assert torch.equal(a.unit, a.cunit[0]) and torch.equal(a.cunit[0], a.cunit[1])


def test_holdout_rejoin_fits_every_sample_after_the_restart(breast_cancer):
    """holdout_rejoin: burn-in fits the 60 samples not held out, the restart chooses on the 20 held
    out, then every kept step fits all 80 (the current states re-scored on them) and the deployment
    candidates are scored on the training samples; the chip calls are those without holdout."""
    train = breast_cancer.train.subset(torch.arange(80))
    seen, calls = [], []
    for opts in ({}, dict(holdout=0.25, holdout_rejoin=True)):
        tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=2, burn_in=3, **opts)
        tr.fit(train, steps=6, on_step=lambda r: None)
        calls.append(tr.session.stats.calls)
        seen.append(tr.algorithm)
    a = seen[1]
    assert calls[0] == calls[1]
    assert a.rejoined and a.n_train == 80 and len(a._final_data[1]) == 80 and a.restart_chain >= 0
    lp, ll, _ = a._score3(tr.state, a.theta, train.x, train.y)
    assert torch.equal(ll, a.loglik)  # the chains' scores count all 80 samples


def _warm_move_sizes(breast_cancer, steps: int, **opts):
    """3 chains (2 warm-started) on 60 samples, burn-in 6, block moves of 4 entries: the algorithm and,
    per chain, (in burn-in, entries moved) at every step."""
    train = breast_cancer.train.subset(torch.arange(60))
    tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=3, burn_in=6, warm_start=2,
                     warm_steps=10, langevin_share=0.9, min_share=0.05, block_size=4, **opts)
    a = tr.algorithm
    a.setup(tr.state, train)
    sizes: dict[int, list] = {c: [] for c in range(3)}
    for _ in range(steps):
        burn = a.n_steps < a.burn_in
        a.step(tr.state, (train.x, train.y))
        for c in range(3):
            sizes[c].append((burn, len(a.last_blocks[c])))
    return a, sizes


def test_warm_moves_block_keeps_the_warm_chains_on_block_moves_during_burn_in(breast_cancer):
    """warm_moves="block": during burn-in the warm chains move at most block_size entries (MH's block
    moves), the other chain also moves whole layers (guided moves); after burn-in all may."""
    _, sizes = _warm_move_sizes(breast_cancer, 10, warm_moves="block", restart_at_best=False)
    for c in (0, 1):
        assert all(k <= 4 for burn, k in sizes[c] if burn)
    assert any(k > 4 for burn, k in sizes[2] if burn)
    assert any(k > 4 for c in (0, 1) for burn, k in sizes[c] if not burn)


def test_held_out_samples_join_a_request_as_dense_tensors_or_event_batches():
    """The held-out samples ride in a chip request after the step's own: dense inputs are
    concatenated along the sample axis, event batches keep each sample's events with its bin counts."""
    import numpy as np

    from cil_core.data import EventBatch
    from cil_core.training.langevin import _join

    a, b = torch.rand(5, 3, 4), torch.rand(5, 2, 4)
    assert torch.equal(_join(a, b), torch.cat([a, b], 1))
    ev = [np.zeros(k, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]) for k in (1, 2, 3)]
    ea, eb = EventBatch(a[:, :2], ev[:2], 1000.0), EventBatch(b[:, :1], ev[2:], 1000.0)
    j = _join(ea, eb)
    assert torch.equal(j.dense, torch.cat([a[:, :2], b[:, :1]], 1))
    assert [len(e) for e in j.events] == [1, 2, 3] and j.duration_us == 1000.0


def test_clearly_better_is_a_z_test_on_two_accuracies():
    """warm_prefer's rule: a - b > z * sqrt((a(1-a) + b(1-b)) / n), checked against the formula."""
    from cil_core.training.langevin import _clearly_better

    for a, b, n, z in [(0.995, 0.99, 398, 2.0), (0.9, 0.6, 398, 2.0), (0.8, 0.75, 100, 1.0), (1.0, 1.0, 50, 2.0),
                       (0.7, 0.75, 398, 0.0)]:
        se = math.sqrt((a * (1 - a) + b * (1 - b)) / n)
        assert _clearly_better(a, b, n, z) == (a - b > z * se)
    assert not _clearly_better(0.995, 0.99, 398, 2.0)  # one or two samples: noise, the warm start stays
    assert _clearly_better(0.9, 0.6, 398, 2.0)  # a chip that distorts the software solution


@pytest.mark.parametrize("acc_cold, restart", [(0.97, "warm"), (1.0, "cold")])
def test_warm_prefer_keeps_the_software_start_unless_the_chip_refutes_it(breast_cancer, acc_cold, restart):
    """warm_prefer=2: at the end of burn-in the best chain by likelihood is a random-start one; its chip
    accuracy is 0.97 or 1.0 against the best warm chain's 0.95 on 80 samples. +0.02 is within 2 standard
    errors (0.062): the warm chains go on unchanged and the other chains restart at them in rank order;
    +0.05 is beyond them (0.049): every chain restarts at the best chain, as without warm_prefer."""
    train = breast_cancer.train.subset(torch.arange(80))
    tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=4, burn_in=1, warm_start=2,
                     warm_steps=5, warm_moves="mh", warm_prefer=2.0)
    a = tr.algorithm
    a.setup(tr.state, train)
    a.step(tr.state, (train.x, train.y))  # the burn-in step: every chain scored
    a.loglik = torch.tensor([-20.0, -25.0, -10.0, -30.0])  # chain 2 (random start) ranks first, then 0, 1, 3
    a.logpost = a.loglik.clone()
    a.acc = torch.tensor([0.95, 0.94, acc_cold, 0.9])
    before = {k: getattr(a, k).clone() for k in ("theta", "cunit", "grad")}
    a._restart_at_best(80)
    if restart == "warm":
        assert a.restart_chain == 0 and a.warm.all()
        src = [0, 1, 0, 1]  # the warm chains go on; chains 2 and 3 restart at warm chains 0 and 1
    else:
        assert a.restart_chain == 2 and not a.warm.any()
        src = [2, 2, 2, 2]
    for k, v in before.items():
        assert torch.equal(getattr(a, k), v[src]), k
    assert torch.equal(a.loglik, torch.tensor([-20.0, -25.0, -10.0, -30.0])[src])


@pytest.mark.parametrize("warm_moves", ["mh", "auto"])
def test_warm_moves_mh_keeps_block_moves_for_the_whole_run(breast_cancer, warm_moves):
    """warm_moves="mh" (and "auto" on whole-data steps): the warm chains move at most block_size entries
    at every step, burn-in and kept steps alike; after a restart at a warm chain (warm_prefer) every chain
    moves so; the randomly started chain moves whole layers during burn-in."""
    a, sizes = _warm_move_sizes(breast_cancer, 12, warm_moves=warm_moves, warm_prefer=100.0)
    assert a.warm.all() and a.restart_chain in (0, 1)  # z = 100: the warm start is never refuted
    assert all(k <= 4 for c in (0, 1) for _, k in sizes[c])
    assert any(k > 4 for burn, k in sizes[2] if burn)
    assert all(k <= 4 for burn, k in sizes[2] if not burn)


def test_warm_grad_clip_clips_the_software_training(breast_cancer, monkeypatch):
    """warm_grad_clip: every software step of the warm start clips the gradient's global norm at the
    value (the offline algorithm's grad_clip), and the warm start differs from an unclipped one."""
    import cil_core.training.gradient as gradient

    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        seen.append(max_norm)
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(gradient.torch.nn.utils, "clip_grad_norm_", spy)
    train = breast_cancer.train.subset(torch.arange(120))
    thetas = []
    for clip in (None, 1e-3):
        tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=2, burn_in=2, warm_start=1,
                         warm_steps=7, warm_grad_clip=clip)
        tr.algorithm.setup(tr.state, train)
        thetas.append(tr.algorithm.theta[0].clone())
    assert seen == [1e-3] * 7
    assert not torch.equal(thetas[0], thetas[1])


def test_warm_moves_auto_guides_the_warm_chains_in_a_minibatch_burn_in(breast_cancer):
    """warm_moves="auto" with burn_in_minibatch: the warm chains make the guided moves as the others (a
    block move accepted on a subset's score random-walks away from the start), bit for bit as
    warm_moves="mala"."""
    train = breast_cancer.train.subset(torch.arange(60))
    thetas = []
    for wm in ("auto", "mala"):
        tr = cil.Trainer(feedforward([62, 8, 2], seed=1), "ideal", "mala", seed=0, chains=3, burn_in=6, warm_start=2,
                         warm_steps=10, warm_moves=wm, warm_prefer=2.0, burn_in_minibatch=20, langevin_share=0.9,
                         min_share=0.05, block_size=4)
        tr.fit(train, steps=8)
        thetas.append(tr.algorithm.theta.clone())
        if wm == "auto":
            assert tr.algorithm._warm_kind == "mala"
    assert torch.equal(*thetas)


def test_recommended_options_pass_the_door_for_any_chain_count_from_two():
    """recommended_options: half the chains warm (at least 1 and fewer than all from 2 chains on),
    warm_moves="auto", warm_prefer=2; every chain count from 2 passes mala's checks."""
    from cil_core.training.langevin import recommended_options

    assert recommended_options() == {"warm_start": 4, "warm_moves": "auto", "warm_prefer": 2.0}
    for chains in range(2, 17):
        opts = recommended_options(chains)
        assert 0 < opts["warm_start"] < chains
        cil.make_algorithm("mala", chains=chains, **opts)
