"""Metropolis-Hastings over trainable neuron parameters (issue 20): snntorch ``learn_beta`` /
``learn_threshold`` / ``learn_graded_spikes_factor`` tensors are proposed within their valid ranges
(0 <= beta, alpha <= 1; threshold, spike amplitude > 0) with their own step sizes
(``neuron_share``, ``neuron_steps``, validated at the door), raise the accuracy of a model whose
thresholds are mis-set, and resume bit-identical from a checkpoint."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
pytest.importorskip("cil_snntorch", reason="the cil-snntorch plugin is not installed")

import cil_core as cil  # noqa: E402
from cil_core.errors import OptionError, SpecError  # noqa: E402
from cil_core.options import describe  # noqa: E402
from cil_core.training.mh import NEURON_STEP_MAX, MetropolisHastings  # noqa: E402


def _model(thr: float = 1.0, seed: int = 0, beta: float = 0.9, learn_beta: bool = True, graded: bool = True
           ) -> nn.Module:
    """62 -> 16 -> 2 snntorch Leaky with per-neuron trainable thresholds (and beta, graded factor)."""
    torch.manual_seed(seed)

    def leaky(n: int, **kw) -> nn.Module:
        return snn.Leaky(beta=torch.full((n,), beta), threshold=torch.full((n,), thr), learn_threshold=True,
                         learn_beta=learn_beta, init_hidden=True, **kw)

    hidden = leaky(16, graded_spikes_factor=torch.ones(16), learn_graded_spikes_factor=True) if graded else leaky(16)
    return nn.Sequential(nn.Linear(62, 16), hidden, nn.Linear(16, 2), leaky(2, output=True))


def _ranges_hold(alg: MetropolisHastings, theta: torch.Tensor) -> None:
    for blk, f in zip(alg.nblocks, alg.nfields):
        v = theta[:, blk]
        assert bool(torch.isfinite(v).all()), f
        if f in ("beta", "alpha"):
            assert bool(((v >= 0) & (v <= 1)).all()), (f, v.min(), v.max())
        else:
            assert bool((v > 0).all()), (f, v.min())


# ------------------------------------------------------------------ options at the door
def test_neuron_options_are_validated_at_the_door():
    with pytest.raises(OptionError, match=r"neuron_share must lie in \[0, 1\]"):
        MetropolisHastings(neuron_share=1.5)
    with pytest.raises(OptionError, match=r"neuron_share"):
        MetropolisHastings(neuron_share=True)
    with pytest.raises(OptionError, match=r"unknown neuron field 'tau'.*beta, alpha, threshold, spike_amplitude"):
        MetropolisHastings(neuron_steps={"tau": 0.1})
    with pytest.raises(OptionError, match=r"neuron_steps\['beta'\] must lie in \(0, 0.5\]"):
        MetropolisHastings(neuron_steps={"beta": 0.7})
    with pytest.raises(OptionError, match=r"neuron_steps\['threshold'\] must lie in \(0, 1.0\].*logarithm"):
        MetropolisHastings(neuron_steps={"threshold": 0.0})
    a = MetropolisHastings(neuron_steps={"threshold": 0.2})
    assert a.neuron_steps == {"beta": 0.02, "alpha": 0.02, "threshold": 0.2, "spike_amplitude": 0.05}
    with pytest.raises(OptionError, match="neuron_steps"):  # the options door (cil train, make_algorithm)
        cil.make_algorithm("mh", neuron_steps=0.1)
    rows = {r["name"]: r for r in describe(MetropolisHastings)}
    assert "trained neuron parameter" in rows["neuron_share"]["doc"]
    assert "logarithm" in rows["neuron_steps"]["doc"]
    assert "Gaussian prior on the logarithm" in rows["neuron_prior_std"]["doc"]
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "1", "Flat"):
        with pytest.raises(OptionError, match=r"neuron_prior_std must be a positive number .* or None or 'flat'"):
            MetropolisHastings(neuron_prior_std=bad)
    assert MetropolisHastings(neuron_prior_std=None).neuron_prior_std is None
    flat = MetropolisHastings(neuron_prior_std="flat")  # None where a config cannot write None (TOML)
    assert flat.neuron_prior_std is None and flat.options["neuron_prior_std"] is None
    assert MetropolisHastings().neuron_prior_std == 1.0


def test_a_start_outside_the_valid_range_is_refused_by_name(breast_cancer):
    m = _model()
    with torch.no_grad():
        m[1].graded_spikes_factor[3] = -0.5
    tr = cil.Trainer(cil.wrap(m), "ideal", "mh", seed=0, chains=2, init="network")
    with pytest.raises(SpecError, match=r"spike amplitude '1.graded_spikes_factor'.*> 0.*neuron_share=0"):
        tr.fit(breast_cancer.train.subset(torch.arange(20)), steps=1)
    m = _model()
    net = cil.wrap(m)
    with torch.no_grad():  # e.g. after gradient training
        m[3].threshold.fill_(-1.0)
    tr = cil.Trainer(net, "ideal", "mh", seed=0, chains=2, init="network")
    with pytest.raises(SpecError, match=r"MH cannot start from layer 3 .*threshold '3.threshold' must be > 0"):
        tr.fit(breast_cancer.train.subset(torch.arange(20)), steps=1)


# ------------------------------------------------------------------ ranges (property)
def _setup(proposal: str, share: float, steps: dict, data) -> MetropolisHastings:
    tr = cil.Trainer(cil.wrap(_model()), "ideal", "mh", seed=0, chains=5, init="network", proposal=proposal,
                     neuron_share=share, neuron_steps=steps, block_size=4)
    tr.algorithm.setup(tr.state, data)
    return tr.algorithm


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only data
@given(proposal=st.sampled_from(["block", "random-walk"]), share=st.floats(0.05, 1.0),
       beta_step=st.floats(1e-4, NEURON_STEP_MAX["beta"]), log_step=st.floats(1e-4, NEURON_STEP_MAX["threshold"]),
       seed=st.integers(0, 2 ** 31 - 1),
       start=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
       positive=st.lists(st.floats(1e-30, 1e30), min_size=5, max_size=5))
def test_neuron_proposals_never_leave_their_ranges(breast_cancer, proposal, share, beta_step, log_step, seed, start,
                                                   positive):
    alg = _setup(proposal, share, {"beta": beta_step, "threshold": log_step, "spike_amplitude": log_step},
                 breast_cancer.train.subset(torch.arange(8)))
    # chains started anywhere in the ranges, boundaries included (beta 0 or 1, tiny and huge thresholds)
    for blk, f in zip(alg.nblocks, alg.nfields):
        vals = torch.tensor(start if f in ("beta", "alpha") else positive, dtype=alg.theta.dtype)
        alg.theta[:, blk] = vals[torch.arange(len(blk)) % 5]
    if proposal == "block":
        alg.scale[len(alg.blocks):] = alg.nstep_max  # the largest step the adaptation allows
    else:
        alg.scale.fill_(alg.step_size * 50.0)  # a chain factor far above 1: the cap holds the neuron steps
    g = torch.Generator().manual_seed(seed)
    propose = alg._propose_block if proposal == "block" else alg._propose_random_walk
    moved = torch.zeros(alg.theta.shape[1], dtype=torch.bool)
    for _ in range(30):
        prop, _, _ = propose(g)
        _ranges_hold(alg, prop)
        moved |= (prop != alg.theta).any(0)
        alg.theta = prop  # walk on: every state is a proposal's
    assert bool(moved[alg.nidx].any())


def test_the_random_walk_moves_neuron_parameters_with_their_own_steps(breast_cancer):
    alg = _setup("random-walk", 0.25, {"beta": 0.01}, breast_cancer.train.subset(torch.arange(8)))
    prop, _, _ = alg._propose_random_walk(torch.Generator().manual_seed(0))
    blk = alg.nblocks[alg.nfields.index("beta")]
    d = (prop[:, blk] - alg.theta[:, blk]).abs()
    assert 0 < float(d.max()) < 0.06  # about 0.01 x |N(0, 1)|, never the weights' scale
    alg0 = _setup("random-walk", 0.0, {}, breast_cancer.train.subset(torch.arange(8)))
    prop, _, _ = alg0._propose_random_walk(torch.Generator().manual_seed(0))
    assert torch.equal(prop[:, alg0.nidx], alg0.theta[:, alg0.nidx])  # neuron_share=0: held fixed


# ------------------------------------------------------------------ learning
def test_mh_over_thresholds_alone_raises_the_accuracy_of_a_mis_set_model(breast_cancer):
    """Thresholds set 2x too high (the network almost never fires a right answer: 30 % test accuracy);
    ``neuron_share=1`` moves only the neuron parameters, the weights stay as they are: the learned
    thresholds raise the accuracy (measured 0.30 -> 0.76 with ideal, 4 chains x 100 steps)."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(200))
    net = cil.wrap(_model(thr=2.0, learn_beta=False, graded=False))
    w0 = {k: v for k, v in net.detached_parameters().items() if not k.endswith("threshold")}
    tr = cil.Trainer(net, "ideal", "mh", seed=0, chains=4, burn_in=60, init="network", neuron_share=1.0)
    before = tr.evaluate(breast_cancer.test)["accuracy"]
    tr.fit(train, steps=100)
    after = tr.evaluate(breast_cancer.test)["accuracy"]
    assert after > before + 0.3, (before, after)
    p = net.detached_parameters()
    for k, v in w0.items():
        torch.testing.assert_close(p[k], v, rtol=1e-6, atol=1e-7)  # only thresholds moved (a mean: rounding)
    assert not torch.equal(p["1.threshold"], torch.full((16,), 2.0))
    _ranges_hold(tr.algorithm, tr.algorithm.theta)
    # every set scored in one call held one neuron value: the chains were scored in separate requests
    assert tr.session.stats.calls_by_purpose["train"] > 100


# ------------------------------------------------------------------ the prior in the logarithm
def _thresholds_only(seed: int = 0) -> nn.Module:
    return _model(seed=seed, learn_beta=False, graded=False)  # trained thresholds (16 hidden, 2 output) only


def test_the_log_prior_of_a_threshold_is_gaussian_in_its_logarithm_around_the_start(breast_cancer):
    """log p = the weights' Gaussian prior − ½ Σ ((log θ − log θ₀) / σ_n)² over the moved thresholds,
    computed here from the definition; ``neuron_prior_std=None`` adds nothing for them; β (flat on
    [0, 1]) adds nothing either."""
    train = breast_cancer.train.subset(torch.arange(8))
    for sigma in (0.5, 2.0, None):
        tr = cil.Trainer(cil.wrap(_model()), "ideal", "mh", seed=0, chains=3, init="network", neuron_prior_std=sigma)
        alg = tr.algorithm
        alg.setup(tr.state, train)
        theta = alg.theta.clone()
        names = list(tr.network.detached_parameters())
        g = torch.Generator().manual_seed(1)
        for blk, (name, _) in zip(alg.nblocks, alg._nparams):
            if name.endswith("threshold"):
                theta[:, blk] = theta[:, blk] * torch.exp(torch.randn(3, len(blk), generator=g))
            else:  # beta, graded factor: moved too, but their prior adds nothing (beta) or is in the log (factor)
                theta[:, blk] = theta[:, blk] * 0.9
        start = alg.theta[0]
        want = torch.zeros(3)
        offset = 0
        for n, size in zip(names, alg.sizes):
            cols = slice(offset, offset + size)
            offset += size
            if not n.split(".")[1] in ("threshold", "beta", "graded_spikes_factor"):
                want -= 0.5 * ((theta[:, cols] / (alg.prior_std * alg.unit[cols])) ** 2).sum(-1)
            elif sigma is not None and n.split(".")[1] in ("threshold", "graded_spikes_factor"):
                want -= 0.5 * (((theta[:, cols].log() - start[cols].log()) / sigma) ** 2).sum(-1)
        torch.testing.assert_close(alg.log_prior(theta), want, rtol=1e-5, atol=1e-4)
        assert torch.equal(alg.log_prior(alg.theta)[0], alg.log_prior(alg.theta)[1])


def test_with_a_flat_likelihood_the_thresholds_sample_their_prior(breast_cancer):
    """A likelihood made flat (temperature 1e12) leaves the prior as the target: the chains' log
    thresholds, kept after burn-in, have the prior's mean and spread (z = (log θ − log θ₀)/σ_n:
    mean ≈ 0, mean square ≈ 1), which holds only with the log-normal move's Hastings factor in the
    acceptance. Under the flat prior in the logarithm (``neuron_prior_std=None``) nothing holds them:
    the same run's thresholds wander off by many e-folds."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(4))
    batch = (train.x, train.y)

    def run(sigma, steps=1000, burn_in=200):
        tr = cil.Trainer(cil.wrap(_thresholds_only()), "ideal", "mh", seed=0, chains=4, init="network",
                         neuron_share=1.0, temperature=1e12, burn_in=burn_in, adapt_every=20, neuron_prior_std=sigma)
        alg = tr.algorithm
        alg.setup(tr.state, train)
        cols = alg.log_cols
        log0 = alg.theta[0, cols].log()
        kept = []
        for i in range(steps):
            alg.step(tr.state, batch)
            if i >= burn_in and i % 2 == 0:
                kept.append(alg.theta[:, cols].log() - log0)
        return torch.stack(kept)  # [kept, chains, entries]

    # measured on seeds 0-3: mean -0.08 to 0.04, mean square 0.95 to 1.23 (both widths)
    z = run(1.0)
    assert abs(float(z.mean())) < 0.2, float(z.mean())
    assert 0.75 < float((z ** 2).mean()) < 1.4, float((z ** 2).mean())
    wide = run(0.25) / 0.25  # another width: the same standard normal in its own units
    assert abs(float(wide.mean())) < 0.2 and 0.75 < float((wide ** 2).mean()) < 1.4, float((wide ** 2).mean())
    flat = run(None, steps=400)
    assert float((flat ** 2).mean()) > 10, float((flat ** 2).mean())


def test_a_checkpoint_from_before_the_threshold_prior_resumes_only_with_the_flat_prior(breast_cancer, tmp_path):
    """A checkpoint written before ``neuron_prior_std`` existed ran the flat prior in the logarithm:
    where thresholds move, resuming it with today's default is refused naming the option; with
    ``neuron_prior_std=None`` it resumes and ends as an uninterrupted run with that prior. A model
    without trained neuron parameters resumes such a checkpoint with the default (the option changes
    nothing there)."""
    train = breast_cancer.train.subset(torch.arange(60))

    def trainer(model, **kw):
        return cil.Trainer(cil.wrap(model), "ideal", "mh", seed=0, chains=2, burn_in=2, **kw)

    def old_checkpoint(model, path, **kw):
        trainer(model, **kw).fit(train, steps=3, checkpoint=path, checkpoint_every=3)
        blob = torch.load(path, weights_only=True)
        del blob["compat"]["algorithm_options"]["neuron_prior_std"]
        del blob["algorithm_state"]["log_center"]
        torch.save(blob, path)

    ck = tmp_path / "old.pt"
    old_checkpoint(_thresholds_only(), ck, neuron_prior_std=None)
    with pytest.raises(cil.CheckpointError, match=r"neuron_prior_std: None in the checkpoint, 1.0 now"):
        trainer(_thresholds_only()).fit(train, steps=6, resume=ck)
    ref = trainer(_thresholds_only(), neuron_prior_std=None)
    ref.fit(train, steps=6)
    resumed = trainer(_thresholds_only(), neuron_prior_std=None)
    resumed.fit(train, steps=6, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k

    plain = nn.Sequential(nn.Linear(62, 8), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Linear(8, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    ck2 = tmp_path / "old_plain.pt"
    torch.manual_seed(0)
    old_checkpoint(plain, ck2)
    trainer(plain).fit(train, steps=6, resume=ck2)  # the default: no threshold moves, nothing to refuse


# ------------------------------------------------------------------ checkpoints
def test_resume_with_neuron_moves_is_bit_identical(breast_cancer, tmp_path):
    from test_mh import _Dying

    train = breast_cancer.train.subset(torch.arange(60))
    opts = {"chains": 3, "burn_in": 6, "adapt_every": 3, "neuron_share": 0.5}

    def trainer(seed=0, die_at=None):
        return cil.Trainer(cil.wrap(_model(seed=seed)), _Dying(cil.make_backend("ideal"), die_at), "mh", seed=seed,
                           **opts)

    ref = trainer()
    ref.fit(train, steps=14)
    ck = tmp_path / "mh.pt"
    crashing = trainer(die_at=40)
    with pytest.raises(cil.HardwareError, match="chip lost"):
        crashing.fit(train, steps=14, checkpoint=ck, checkpoint_every=4)
    step = torch.load(ck, weights_only=True)["step"]
    assert 0 < step < 14
    resumed = trainer(seed=99)
    resumed.fit(train, steps=14, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    for k in ("theta", "sum", "chain_sum", "scale", "best_theta"):
        assert torch.equal(getattr(ref.algorithm, k), getattr(resumed.algorithm, k)), k
    assert len(ref.algorithm.scale) == len(ref.algorithm.blocks) + 5  # 2 layers + 5 neuron tensors (beta, threshold x 2; graded factor)
    moved = ref.algorithm.theta[:, ref.algorithm.nidx] != torch.cat(
        [v.reshape(-1) for k, v in cil.wrap(_model()).detached_parameters().items() if k.split(".")[1] in
         ("threshold", "beta", "graded_spikes_factor")])
    assert bool(moved.any())  # the neuron parameters did move before and after the crash
    assert [r["loss"] for r in ref.history.records] == [r["loss"] for r in resumed.history.records]


def test_a_checkpoint_from_before_neuron_moves_resumes_with_them_fixed(breast_cancer, tmp_path):
    """A checkpoint written before ``neuron_share`` existed held the neuron parameters fixed: resuming
    it with today's default is refused naming the option; with ``neuron_share=0`` it resumes and ends
    as an uninterrupted run with them fixed."""
    train = breast_cancer.train.subset(torch.arange(60))

    def trainer(**kw):
        return cil.Trainer(cil.wrap(_model()), "ideal", "mh", seed=0, chains=2, burn_in=2, **kw)

    ref = trainer(neuron_share=0.0)
    ref.fit(train, steps=6)
    ck = tmp_path / "old.pt"
    trainer(neuron_share=0.0).fit(train, steps=3, checkpoint=ck, checkpoint_every=3)
    blob = torch.load(ck, weights_only=True)
    for k in ("neuron_share", "neuron_steps"):
        del blob["compat"]["algorithm_options"][k]
    torch.save(blob, ck)
    with pytest.raises(cil.CheckpointError, match=r"neuron_share: 0.0 in the checkpoint, 0.25 now"):
        trainer().fit(train, steps=6, resume=ck)
    resumed = trainer(neuron_share=0.0)
    resumed.fit(train, steps=6, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    assert torch.equal(ref.network.detached_parameters()["1.threshold"], torch.ones(16))


# ------------------------------------------------------------------ a chip's finite domain (Xylo's bit-shift decays)
def _xylo_synaptic(beta, *, learn_alpha: bool = False, learn_threshold: bool = False, seed: int = 0) -> nn.Module:
    """16 -> 16 -> 2 snntorch Synaptic with a trained (per-neuron when ``beta`` is a tensor) hidden beta."""
    torch.manual_seed(seed)
    hidden = snn.Synaptic(alpha=torch.full((16,), 0.5) if learn_alpha else 0.5, beta=beta, learn_beta=True,
                          learn_alpha=learn_alpha, threshold=torch.ones(16) if learn_threshold else 1.0,
                          learn_threshold=learn_threshold, init_hidden=True)
    return nn.Sequential(nn.Linear(16, 16, bias=False), hidden, nn.Linear(16, 2, bias=False),
                         snn.Synaptic(alpha=0.5, beta=0.875, init_hidden=True, output=True))


@pytest.fixture(scope="module")
def data16():
    pytest.importorskip("cil_xylo")
    from cil_core.data.breast_cancer import load_breast_cancer_pca

    split = load_breast_cancer_pca(12, seed=0)
    return split.train.subset(torch.arange(120)), split.test


def _held(values: torch.Tensor, table: list[float]) -> bool:
    t = torch.tensor(table, dtype=values.dtype)
    return bool((values.reshape(-1, 1) == t).any(-1).all())


@pytest.mark.parametrize("proposal", ["block", "random-walk"])
def test_mh_moves_a_trained_beta_on_xylo_over_the_decays_the_chip_holds(data16, proposal):
    """A trained beta (per neuron, with a trained alpha and threshold beside it) on Xylo, whose decays
    are 1 - 2^-k: MH proposes only such values (every proposal checked), the fit runs to the end (it
    used to stop at the first neuron move with "beta=0.862 ... nearest 0.75 and 0.875"), beta moves,
    and the deployed network holds decays the chip runs exactly."""
    from cil_xylo import XyloBackend

    train, test = data16
    chip = XyloBackend()
    decays = chip.chip.beta.values()
    beta0 = torch.tensor([decays[k] for k in (1, 2, 3, 4) * 4])
    net = cil.wrap(_xylo_synaptic(beta0, learn_alpha=True, learn_threshold=True))
    tr = cil.Trainer(net, chip, "mh", seed=0, chains=4, burn_in=8, adapt_every=4, init="network",
                     proposal=proposal, neuron_share=0.5)
    alg = tr.algorithm
    seen: list[torch.Tensor] = []
    propose = alg._propose_block if proposal == "block" else alg._propose_random_walk

    def spy(g):
        out = propose(g)
        seen.append(out[0].clone())
        return out

    if proposal == "block":
        alg._propose_block = spy
    else:
        alg._propose_random_walk = spy
    tr.fit(train, steps=16)
    assert len(seen) == 16
    fields = dict(zip(alg.nfields, alg.nblocks))
    assert set(fields) == {"beta", "alpha", "threshold"}
    assert set(alg.tables) == {alg.nfields.index("beta"), alg.nfields.index("alpha")}  # Xylo's thresholds: scaled
    for prop in seen:
        assert _held(prop[:, fields["beta"]], decays)
        assert _held(prop[:, fields["alpha"]], chip.chip.alpha.values())
        assert bool((prop[:, fields["threshold"]] > 0).all())
    moved = torch.stack(seen)[:, :, fields["beta"]] != beta0
    assert bool(moved.any()), "no proposal moved beta"
    beta = net.detached_parameters()["1.beta"]
    assert _held(beta, decays) and _held(net.detached_parameters()["1.alpha"], chip.chip.alpha.values())
    dep = cil.HardwareSession(XyloBackend()).transfer(net.spec, net.detached_parameters())  # no refusal
    assert torch.equal(torch.as_tensor(dep.chip["neurons"][1]["beta"], dtype=beta.dtype), beta)
    assert 0.0 <= tr.evaluate(test)["accuracy"] <= 1.0


def test_the_walk_over_held_values_is_symmetric_its_flat_target_is_uniform(data16):
    """Every proposal accepted (a flat likelihood, the uniform prior over held values): a symmetric
    proposal leaves the uniform distribution over the 16 held decays invariant, a biased one (e.g.
    clamped at the ends) does not. 4000 moves of 16 entries x 5 chains from one value: every decay
    is visited within 20 % of the uniform frequency, the ends included."""
    from cil_xylo import XyloBackend

    train, _ = data16
    chip = XyloBackend()
    decays = chip.chip.beta.values()
    tr = cil.Trainer(cil.wrap(_xylo_synaptic(torch.full((16,), 0.875))), chip, "mh", seed=0, chains=5,
                     init="network", neuron_share=1.0)
    alg = tr.algorithm
    alg.setup(tr.state, train)
    assert tr.session.stats.calls == 0  # the set-up (init="network") called no chip
    alg.scale[len(alg.blocks):] = 1.5  # offsets of 1 to 4 values
    g = torch.Generator().manual_seed(0)
    blk = alg.nblocks[0]
    counts = torch.zeros(len(decays))
    table = torch.tensor(decays, dtype=alg.theta.dtype)
    for i in range(4000):
        prop, _, _ = alg._propose_block(g)
        alg.theta = prop
        if i >= 200:
            counts += (prop[:, blk].reshape(-1, 1) == table).sum(0)
    assert counts.sum() == 3800 * 5 * 16
    freq = counts / counts.sum()
    assert bool(((freq - 1 / 16).abs() < 0.2 / 16).all()), freq


def test_a_trained_beta_the_chip_cannot_hold_is_refused_before_the_first_call(data16):
    """A beta trained to a value Xylo does not hold after the network was wrapped (the capacity check
    saw the held one): MH refuses it at set-up, before any chip call, naming the nearest held decays
    and the option that rounds; with ``round_decays=True`` it runs, and ends on a held value."""
    from cil_core.errors import BackendCapacityError
    from cil_xylo import XyloBackend

    train, _ = data16

    def trained_offline() -> cil.WrappedNetwork:  # wrapped with a held beta, then trained (e.g. offline) to 0.9
        net = cil.wrap(_xylo_synaptic(0.875))
        with torch.no_grad():
            net.module[1].beta.fill_(0.9)
        return net

    tr = cil.Trainer(trained_offline(), XyloBackend(), "mh", seed=0, chains=2)
    with pytest.raises(BackendCapacityError, match=r"MH moves the trained beta '1.beta' over the values the chip "
                                                   r"holds.*beta=0\.9.*0\.875 \(k=3\) and 0\.9375 \(k=4\).*round_decays=True"):
        tr.fit(train, steps=2)
    assert tr.session.stats.calls == 0
    # a chip that rounds runs the nearest value (and says so); the moves then land on held values
    chip = XyloBackend(round_decays=True)
    tr = cil.Trainer(trained_offline(), chip, "mh", seed=0, chains=2, init="network", neuron_share=1.0)
    with pytest.warns(UserWarning, match="nearest value it holds"):
        tr.fit(train, steps=3)
    assert _held(tr.network.detached_parameters()["1.beta"], chip.chip.beta.values())


def test_a_checkpoint_from_before_the_walk_over_held_values_is_refused_on_resume(data16, tmp_path):
    """MH on Xylo with a trained beta: a run interrupted by a crash resumes bit-identical; a checkpoint
    written before the walk over held values (its beta step in value units: no ``index_steps``
    record) is refused with a named CheckpointError instead of reading its value step as an index
    step."""
    from cil_xylo import XyloBackend

    class DyingXylo(XyloBackend):  # the chip is lost from call die_at on
        def __init__(self, die_at=None):
            super().__init__()
            self.die_at, self.n = die_at, 0

        def forward(self, deployment, inputs, record=False):
            self.n += 1
            if self.die_at is not None and self.n >= self.die_at:
                raise RuntimeError("chip lost")
            return super().forward(deployment, inputs, record)

    train, _ = data16
    decays = XyloBackend().chip.beta.values()
    beta0 = torch.tensor([decays[k] for k in (1, 2, 3, 4) * 4])

    def trainer(die_at=None):
        return cil.Trainer(cil.wrap(_xylo_synaptic(beta0.clone())), DyingXylo(die_at), "mh", seed=0, chains=2, burn_in=4,
                           adapt_every=2, init="network", neuron_share=0.5)

    ref = trainer()
    ref.fit(train, steps=10)
    ck = tmp_path / "xylo.pt"
    with pytest.raises(cil.HardwareError, match="chip lost"):
        trainer(die_at=12).fit(train, steps=10, checkpoint=ck, checkpoint_every=3)
    blob = torch.load(ck, weights_only=True)
    assert 0 < blob["step"] < 10
    resumed = trainer()
    resumed.fit(train, steps=10, resume=ck)
    for k, v in ref.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k]), k
    assert blob["algorithm_state"]["index_steps"] == [0]  # the hidden beta's tensor
    del blob["algorithm_state"]["index_steps"]
    torch.save(blob, ck)
    with pytest.raises(cil.CheckpointError, match=r"before MH moved neuron fields.*\(beta\).*index units"):
        trainer().fit(train, steps=10, resume=ck)
