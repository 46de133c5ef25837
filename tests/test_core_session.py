"""The hardware session: the one owner of every transfer + forward."""

import pytest
import torch

import cil_core as cil
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.reference import feedforward


class _Capped(IdealBackend):
    """The ideal chip, able to hold only ``cap`` parameter sets per call; counts its calls."""

    def __init__(self, cap):
        self.max_sets, self.n_calls, self.sizes = cap, 0, []

    def transfer(self, spec, params, n_sets=None):
        self.n_calls += 1
        self.sizes.append(n_sets)
        return super().transfer(spec, params, n_sets)


def _sets(net, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: v.unsqueeze(0) * (1 + torch.rand((S, *v.shape), generator=g))
            for k, v in net.detached_parameters().items()}


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_sets_are_split_by_max_sets_and_layer_observations_are_kept(cap):
    net = feedforward([6, 5, 3], seed=1, weight_gain=3.0)
    x = (torch.rand(10, 4, 6) < 0.5).float()
    params = _sets(net, 5)
    reference = cil.simulate(net.spec, params, x, n_sets=5, record=True, record_membrane=True)
    chip = _Capped(cap)
    obs = cil.HardwareSession(chip).run(net.spec, params, x, n_sets=5, record=True)
    assert chip.n_calls == -(-5 // cap)
    assert all(s is None for s in chip.sizes) if cap == 1 else max(chip.sizes) == cap
    assert torch.equal(obs.output, reference.output)
    assert obs.layers is not None and len(obs.layers) == 2
    for got, want in zip(obs.layers, reference.layers):
        # spikes exactly; membranes up to the rounding of batched vs per-set matmuls
        assert torch.equal(got.spikes, want.spikes) and torch.allclose(got.membrane, want.membrane, atol=1e-5)


def test_counts_calls_and_sample_inferences_per_purpose(breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 8, 2], seed=0, weight_gain=2.0)
    trainer = cil.Trainer(net, "ideal", "cil-spl", seed=0)
    trainer.fit(breast_cancer.train, epochs=1, batch_size=100)
    n_train = len(breast_cancer.train)
    stats = trainer.session.stats
    assert stats.calls == 4 and stats.samples == {"train": n_train}
    trainer.evaluate(breast_cancer.test, batch_size=100)
    assert stats.samples == {"train": n_train, "eval": len(breast_cancer.test)}
    assert stats.calls_by_purpose == {"train": 4, "eval": 2} and stats.calls == 6


def test_mh_counts_every_proposal_set(breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 8, 2], seed=0, weight_gain=2.0)
    trainer = cil.Trainer(net, _Capped(3), "mh", seed=0, chains=4, burn_in=2, init="network")
    trainer.fit(breast_cancer.train, steps=3)
    # setup scores the 4 starting states, each step 4 proposals (a deterministic chip and the
    # full training set: no re-scoring), finish the pooled mean and 4 chain means; all samples each
    assert trainer.session.stats.samples["train"] == (4 + 3 * 4 + 5) * len(breast_cancer.train)


def test_retries_and_failures_are_counted(breast_cancer):
    class Flaky(IdealBackend):
        name = "flaky"

        def __init__(self):
            self.n = 0

        def forward(self, deployment, inputs, record=False):
            self.n += 1
            if self.n % 2 == 1:
                raise OSError("link reset")
            return super().forward(deployment, inputs, record)

    net = feedforward([breast_cancer.n_inputs, 4, 2], seed=0)
    session = cil.HardwareSession(Flaky(), retries=1)
    x = breast_cancer.test.x[:, :7]
    obs = session.run(net.spec, net.detached_parameters(), x, purpose="eval")
    assert obs.output.shape[1] == 7
    assert session.stats.failures == 1 and session.stats.calls == 1 and session.stats.samples == {"eval": 7}
    with pytest.raises(cil.HardwareError, match="flaky.*link reset"):
        cil.HardwareSession(Flaky(), retries=0).run(net.spec, net.detached_parameters(), x)


def test_transfer_receives_the_description_not_the_users_module():
    seen = []

    class Spy(IdealBackend):
        def transfer(self, spec, params, n_sets=None):
            seen.append(type(spec))
            return super().transfer(spec, params, n_sets)

    net = feedforward([4, 3, 2], seed=0)
    cil.HardwareSession(Spy()).run(net.spec, net.detached_parameters(), torch.zeros(3, 2, 4))
    assert seen == [cil.NetworkSpec]


class _Watching(IdealBackend):
    """The ideal chip, noting the session's call context of every forward (and in which thread)."""

    def __init__(self, enforces=False):
        self.enforces_timeout = enforces
        self.seen = []

    def forward(self, deployment, inputs, record=False):
        import threading

        from cil_core.hardware import current_call

        self.seen.append((current_call(), threading.current_thread() is threading.main_thread()))
        if len(self.seen) == 1 and getattr(self, "fail_first", False):
            raise RuntimeError("link dropped")
        return super().forward(deployment, inputs, record)


@pytest.mark.parametrize("timeout, enforces", [(None, False), (5.0, False), (5.0, True)])
def test_a_backend_sees_the_calls_purpose_timeout_and_attempt(timeout, enforces):
    from cil_core.hardware import CallContext, current_call

    net = feedforward([4, 3, 2], seed=0)
    x = (torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    chip = _Watching(enforces)
    chip.fail_first = True
    session = cil.HardwareSession(chip, retries=1, timeout=timeout)
    session.run(net.spec, net.detached_parameters(), x, purpose="eval")
    assert [c for c, _ in chip.seen] == [CallContext("eval", timeout, 0), CallContext("eval", timeout, 1)]
    # a thread only where the session must enforce a timeout itself
    assert all(main == (timeout is None or enforces) for _, main in chip.seen)
    assert current_call() is None, "the context ends with the call"


def test_a_call_in_the_timeout_thread_keeps_the_callers_numba_threads():
    """numba's thread count is per thread: a call the session runs in a thread of its own (to
    enforce a timeout) runs its numba kernels with the count the caller set, not numba's default
    of one per core."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to limit")

    class Counting(IdealBackend):
        seen: list = []

        def forward(self, deployment, inputs, record=False):
            import threading

            self.seen.append((numba.get_num_threads(), threading.current_thread() is threading.main_thread()))
            return super().forward(deployment, inputs, record)

    net = feedforward([4, 3, 2], seed=0)
    x = (torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        chip = Counting()
        cil.HardwareSession(chip, timeout=30.0).run(net.spec, net.detached_parameters(), x)
    finally:
        numba.set_num_threads(before)
    assert chip.seen == [(1, False)]


def test_deploy_goes_through_the_session_timeout_retries_and_counters():
    """Trainer.deploy() is a session call like any other: a transfer slower than the timeout is
    a HardwareError, a transient failure is retried, and the call is counted."""
    import time

    class SlowTransfer(IdealBackend):
        name = "slow-transfer"
        delay = 1.5
        fail_first = 0

        def transfer(self, spec, params, n_sets=None):
            if self.fail_first:
                self.fail_first -= 1
                raise OSError("transient")
            time.sleep(self.delay)
            return super().transfer(spec, params, n_sets)

    net = cil.wrap(feedforward([4, 3, 2], seed=0))
    slow = SlowTransfer()
    trainer = cil.Trainer(net, slow, "cil-spl", timeout=0.5)
    with pytest.raises(cil.HardwareError, match="did not answer within 0.5 s \\(weight transfer\\)"):
        trainer.deploy()
    assert trainer.session.stats.failures == 1 and trainer.session.stats.calls == 0
    slow.delay, slow.fail_first = 0.0, 1
    trainer = cil.Trainer(net, slow, "cil-spl", retries=1, timeout=5.0)
    dep = trainer.deploy()
    assert isinstance(dep, cil.Deployment)
    assert trainer.session.stats.calls_by_purpose == {"deploy": 1} and trainer.session.stats.failures == 1
    assert trainer.session.stats.samples == {}  # a transfer runs no samples
