"""What the core does when a hardware adapter misbehaves: clear errors naming the adapter,
retries, a per-call timeout, and checkpoints from which training resumes exactly."""

from __future__ import annotations

import time

import pytest
import torch

import cil_core as cil
from cil_core.hardware.ideal import IdealBackend
from cil_core.errors import BackendCapacityError, CilError, HardwareError, NonFiniteError
from cil_core.network.reference import feedforward


class FaultyChip(IdealBackend):
    """The ideal chip with scripted faults: ``faults`` maps a forward-call number (1-based) to
    what goes wrong on that call."""

    name = "faulty-chip"

    def __init__(self, faults: dict[int, str] | None = None, sleep: float = 1.0) -> None:
        self.faults = dict(faults or {})
        self.sleep = sleep
        self.calls = 0

    def forward(self, deployment, inputs, record=False):
        self.calls += 1
        fault = self.faults.get(self.calls)
        if fault == "raise":
            raise RuntimeError("USB link lost")
        if fault == "sleep":
            time.sleep(self.sleep)
        obs = super().forward(deployment, inputs, record)
        if fault == "nan":
            obs.output[0].fill_(float("nan"))
        elif fault == "inf":
            obs.output[-1].fill_(float("inf"))
        elif fault == "shape":
            obs.output = obs.output[:-1]
        elif fault == "type":
            return obs.output
        elif fault == "none":
            return None
        elif fault == "layers-count":
            obs.layers = obs.layers[:-1]
        elif fault == "layers-shape":
            obs.layers[0].spikes = obs.layers[0].spikes[:, :, :-1]
        elif fault == "layers-nan":
            obs.layers[0].membrane[3] = float("nan")
        return obs


def small_net(data, seed: int = 0) -> cil.WrappedNetwork:
    return feedforward([data.n_inputs, 12, 2], beta=0.9, weight_gain=3.0, seed=seed)


def subset(data, n: int):
    return data.train.subset(torch.arange(n))


# ------------------------------------------------------------------ errors naming the adapter
@pytest.mark.parametrize("fault, needle", [
    ("raise", "failed during forward: RuntimeError('USB link lost')"),
    ("nan", "non-finite output"),
    ("inf", "non-finite output"),
    ("shape", "returned output of shape"),
    ("type", "returned Tensor, not an Observation"),
    ("none", "returned None from forward"),
])
def test_misbehaving_adapter_gives_error_naming_it(fault, needle, breast_cancer):
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: fault}), "cil-spl")
    with pytest.raises(HardwareError, match="faulty-chip") as info:
        trainer.evaluate(breast_cancer.test)
    assert needle in str(info.value)
    assert info.value.backend == "faulty-chip"


@pytest.mark.parametrize("fault, needle", [
    ("layers-count", "observed 1 layers, the network has 2"),
    ("layers-shape", "layer 0 spikes have shape"),
    ("layers-nan", "layer 0 membrane hold non-finite values"),
])
def test_malformed_layer_observations_are_named(fault, needle, breast_cancer):
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: fault}), "cil-spl", observe="layers")
    x, y = subset(breast_cancer, 16).select(torch.arange(16))
    with pytest.raises(HardwareError, match="faulty-chip") as info:
        trainer.state.observe(trainer.network.detached_parameters(), x, record=True)
    assert needle in str(info.value)


def test_hook_plugin_failures_are_named_too(registry_guard, breast_cancer):
    """A chip served through the hooks (no Backend subclass) is guarded the same way."""

    class HookChip:
        name = "hook-chip"
        max_sets = 1
        observes_layers = observes_membrane = stochastic = False

        def check(self, spec):
            pass

    class Plugin:
        @cil.hookimpl
        def cil_transfer(self, backend, spec, params, n_sets):
            if not isinstance(backend, HookChip):
                return None
            return cil.Deployment("hook-chip", spec, params, n_sets)

        @cil.hookimpl
        def cil_forward(self, backend, deployment, inputs, record):
            if not isinstance(backend, HookChip):
                return None
            raise OSError("device busy")

    cil.register(Plugin(), "hook-chip-plugin")
    trainer = cil.Trainer(small_net(breast_cancer), HookChip(), "cil-spl")
    with pytest.raises(HardwareError, match=r"backend 'hook-chip' failed during forward: OSError\('device busy'\)"):
        trainer.evaluate(breast_cancer.test)


def test_transfer_returning_garbage_is_named(breast_cancer):
    class BadTransfer(IdealBackend):
        name = "bad-transfer"

        def transfer(self, spec, params, n_sets=None):
            return params

    trainer = cil.Trainer(small_net(breast_cancer), BadTransfer(), "cil-spl")
    with pytest.raises(HardwareError, match="'bad-transfer' returned dict from weight transfer"):
        trainer.evaluate(breast_cancer.test)


# ------------------------------------------------------------------ retries
def test_retries_recover_from_transient_faults_with_identical_result(breast_cancer):
    data = subset(breast_cancer, 96)
    ref = small_net(breast_cancer)
    cil.Trainer(ref, FaultyChip(), "cil-spl", seed=1).fit(data, epochs=2, batch_size=32)

    net = small_net(breast_cancer)
    chip = FaultyChip({2: "raise", 4: "nan", 5: "shape"})  # step 2 fails once, step 3 twice
    trainer = cil.Trainer(net, chip, "cil-spl", seed=1, retries=2)
    trainer.fit(data, epochs=2, batch_size=32)
    assert chip.calls == 6 + 3
    assert trainer.session.stats.calls == 6
    for k, p in net.synaptic_parameters().items():
        assert torch.equal(p, ref.synaptic_parameters()[k]), k


def test_retries_exhausted_reports_attempts(breast_cancer):
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: "raise", 2: "raise", 3: "raise"}), "cil-spl",
                          retries=2)
    with pytest.raises(HardwareError, match=r"faulty-chip.*USB link lost.*\(failed 3 times\)"):
        trainer.fit(subset(breast_cancer, 32), steps=1, batch_size=32)
    # without retries the first failure stops training, and the weights are untouched
    net = small_net(breast_cancer)
    before = net.detached_parameters()
    with pytest.raises(HardwareError):
        cil.Trainer(net, FaultyChip({1: "raise"}), "cil-spl").fit(subset(breast_cancer, 32), steps=1, batch_size=32)
    for k, v in net.synaptic_parameters().items():
        assert torch.equal(v, before[k])


def test_deterministic_errors_are_not_retried(breast_cancer):
    class TooSmall(FaultyChip):
        name = "too-small"

        def transfer(self, spec, params, n_sets=None):
            self.calls += 1
            raise BackendCapacityError("too-small holds 4 neurons, the model needs 14")

    chip = TooSmall()
    trainer = cil.Trainer(small_net(breast_cancer), chip, "cil-spl", retries=5)
    with pytest.raises(BackendCapacityError, match="holds 4 neurons"):
        trainer.evaluate(breast_cancer.test)
    assert chip.calls == 1


# ------------------------------------------------------------------ timeout
def test_timeout_names_the_adapter_and_retry_succeeds(breast_cancer):
    x = breast_cancer.test
    t0 = time.perf_counter()
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: "sleep"}, sleep=1.5), "cil-spl", timeout=0.2)
    with pytest.raises(HardwareError, match=r"backend 'faulty-chip' did not answer within 0.2 s"):
        trainer.evaluate(x)
    assert time.perf_counter() - t0 < 1.2

    ref = cil.Trainer(small_net(breast_cancer), FaultyChip(), "cil-spl").evaluate(x)
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: "sleep"}, sleep=1.5), "cil-spl", timeout=0.2,
                          retries=1)
    assert trainer.evaluate(x) == ref


def test_timeout_path_keeps_results_errors_and_gradients(breast_cancer):
    data = subset(breast_cancer, 64)
    ref = small_net(breast_cancer)
    cil.Trainer(ref, FaultyChip(), "cil-spl", seed=2).fit(data, steps=2, batch_size=32)
    net = small_net(breast_cancer)
    cil.Trainer(net, FaultyChip(), "cil-spl", seed=2, timeout=30).fit(data, steps=2, batch_size=32)
    for k, p in net.synaptic_parameters().items():
        assert torch.equal(p, ref.synaptic_parameters()[k]), k
    # an exception inside the worker thread reaches the caller, named
    trainer = cil.Trainer(small_net(breast_cancer), FaultyChip({1: "nan"}), "cil-spl", timeout=30)
    with pytest.raises(HardwareError, match="faulty-chip.*non-finite"):
        trainer.evaluate(breast_cancer.test)


# ------------------------------------------------------------------ checkpoint / resume
def _mh_state(algo) -> dict:
    return {k: algo.state_dict()[k] for k in ("theta", "sum", "n_kept", "total_accepts", "best_theta", "scale")}


def test_mh_resumes_after_a_crash_without_losing_samples(tmp_path, breast_cancer):
    data = subset(breast_cancer, 64)
    opts = dict(chains=3, burn_in=4, adapt_every=2, step_size=0.1)
    ref = small_net(breast_cancer)
    ref_tr = cil.Trainer(ref, FaultyChip(), "mh", seed=3, **opts)
    ref_tr.fit(data, steps=12)

    ckpt = tmp_path / "mh.pt"
    net = small_net(breast_cancer)
    # the chip dies for good during step 10 (one forward per step: a deterministic chip and the
    # full training set, so the current states are not re-scored)
    dying = FaultyChip({k: "raise" for k in range(11, 100)})
    tr = cil.Trainer(net, dying, "mh", seed=3, retries=1, **opts)
    with pytest.raises(HardwareError, match="faulty-chip"):
        tr.fit(data, steps=12, checkpoint=ckpt, checkpoint_every=4)
    assert ckpt.exists() and not ckpt.with_suffix(".pt.tmp").exists()
    blob = torch.load(ckpt, weights_only=False)
    assert blob["step"] == 8 and blob["algorithm_state"]["n_kept"] == (8 - 4) * 3

    # a fresh process: new model object, new trainer, healthy chip
    net2 = small_net(breast_cancer, seed=99)
    tr2 = cil.Trainer(net2, FaultyChip(), "mh", seed=123, **opts)
    tr2.fit(data, steps=12, resume=ckpt)
    assert tr2.state.step == 12 and len(tr2.history) == 12
    for k, v in _mh_state(ref_tr.algorithm).items():
        w = _mh_state(tr2.algorithm)[k]
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(w)), k
    for k, p in net2.synaptic_parameters().items():
        assert torch.equal(p, ref.synaptic_parameters()[k]), k
    assert tr2.history.column("loss") == ref_tr.history.column("loss")


def test_gradient_training_resumes_with_optimizer_state(tmp_path, breast_cancer):
    data = subset(breast_cancer, 48)
    ref = small_net(breast_cancer)
    ref_tr = cil.Trainer(ref, FaultyChip(), "cil-spl", seed=4, lr=1e-2)
    ref_tr.fit(data, steps=8, batch_size=None)

    ckpt = tmp_path / "spl.pt"
    net = small_net(breast_cancer)
    tr = cil.Trainer(net, FaultyChip({6: "raise"}), "cil-spl", seed=4, lr=1e-2)
    with pytest.raises(HardwareError):
        tr.fit(data, steps=8, batch_size=None, checkpoint=ckpt, checkpoint_every=4)
    net2 = small_net(breast_cancer, seed=5)
    tr2 = cil.Trainer(net2, FaultyChip(), "cil-spl", seed=4, lr=1e-2)
    tr2.fit(data, steps=8, batch_size=None, resume=ckpt)
    adam_ref = ref_tr.algorithm.optimizer.state_dict()["state"]
    adam = tr2.algorithm.optimizer.state_dict()["state"]
    assert adam[0]["step"] == adam_ref[0]["step"] == 8
    assert torch.equal(adam[0]["exp_avg_sq"], adam_ref[0]["exp_avg_sq"])
    for k, p in net2.synaptic_parameters().items():
        assert torch.equal(p, ref.synaptic_parameters()[k]), k


def test_bad_checkpoints_are_refused(tmp_path, breast_cancer):
    data = subset(breast_cancer, 32)
    ckpt = tmp_path / "c.pt"
    tr = cil.Trainer(small_net(breast_cancer), FaultyChip(), "cil-spl")
    tr.fit(data, steps=1, batch_size=None, checkpoint=ckpt)
    with pytest.raises(CilError, match="written by algorithm 'cil-spl', not 'mh'"):
        cil.Trainer(small_net(breast_cancer), FaultyChip(), "mh").fit(data, steps=2, resume=ckpt)
    blob = torch.load(ckpt, weights_only=False)
    name = next(iter(blob["weights"]))
    blob["weights"][name][0, 0] = float("nan")
    torch.save(blob, ckpt)
    net = small_net(breast_cancer)
    before = net.detached_parameters()
    with pytest.raises(NonFiniteError, match=f"parameter '{name}' is not finite"):
        cil.Trainer(net, FaultyChip(), "cil-spl").fit(data, steps=2, batch_size=None, resume=ckpt)
    for k, p in net.synaptic_parameters().items():
        assert torch.equal(p, before[k])
