"""Hook dispatch, plugin discovery, run-time registration, clear plugin errors."""

import subprocess
import sys

import pytest
import torch

import cil_core as cil
from cil_core import hookimpl
from cil_core.network.reference import feedforward


def test_builtins_and_entry_points_are_listed():
    infos = {i.name: i for i in cil.list_plugins()}
    core = infos["cil_core"]
    assert "ideal" in core.backends and {"offline", "cil-spl", "mh"} <= set(core.algorithms)
    assert core.distribution == "cil-core"
    # the snntorch adapter is found through the 'cil' entry-point group, with its distribution
    assert infos["snntorch"].distribution == "cil-snntorch"
    assert "snntorch" in infos["snntorch"].adapters


class _Recorder:
    """A plugin registered at run time: a backend served through the hooks directly
    (no Backend subclass), to check that dispatch reaches it."""

    def __init__(self):
        self.calls = []

    class Chip:  # plain object: only this plugin's hook implementations serve it
        name = "recorder-chip"
        max_sets = 1
        observes_layers = False
        observes_membrane = False
        stochastic = False

        def check(self, spec):
            pass

    @hookimpl
    def cil_register_backends(self, register):
        register("recorder", self.Chip)

    @hookimpl
    def cil_transfer(self, backend, spec, params, n_sets):
        if not isinstance(backend, self.Chip):
            return None
        self.calls.append("transfer")
        return cil.Deployment("recorder", spec, {k: v * 2.0 for k, v in params.items()}, n_sets)

    @hookimpl
    def cil_forward(self, backend, deployment, inputs, record):
        if not isinstance(backend, self.Chip):
            return None
        self.calls.append("forward")
        return cil.Observation(cil.simulate(deployment.spec, deployment.params, inputs).output)


def test_runtime_registered_plugin_receives_transfer_and_forward(registry_guard, breast_cancer):
    rec = _Recorder()
    name = cil.register(rec, name="recorder-plugin")
    assert name == "recorder-plugin"
    assert "recorder" in {n for i in cil.list_plugins() for n in i.backends}
    net = feedforward([62, 8, 2], seed=1, weight_gain=2.0)
    trainer = cil.Trainer(net, cil.make_backend("recorder"), "cil-spl")
    x, y = breast_cancer.test.x[:, :20], breast_cancer.test.y[:20]
    out = trainer.state.observe(net.detached_parameters(), x).output
    # the chip doubled the weights: compare with an independent run of doubled weights
    ref = cil.simulate(net.spec, {k: 2 * v for k, v in net.detached_parameters().items()}, x).output
    assert torch.equal(out, ref)
    assert rec.calls == ["transfer", "forward"]
    trainer.fit((x, y), epochs=1, batch_size=10)
    assert rec.calls.count("forward") == 3


def test_duplicate_backend_name_is_rejected(registry_guard):
    class Dup:
        @hookimpl
        def cil_register_backends(self, register):
            register("ideal", object)

    with pytest.raises(cil.PluginError, match="'ideal'.*already registered by plugin 'cil_core'"):
        cil.register(Dup(), name="dup")


def test_misspelt_hook_fails_loudly(registry_guard):
    class Typo:
        @hookimpl
        def cil_register_backend(self, register):  # missing 's'
            pass

    with pytest.raises(cil.PluginError, match="unknown hook 'cil_register_backend'"):
        cil.register(Typo(), name="typo")
    assert "typo" not in {i.name for i in cil.list_plugins()}


def test_unknown_names_are_explained():
    with pytest.raises(cil.PluginError, match="no backend named 'nope' is loaded \\(loaded: .*ideal"):
        cil.make_backend("nope")
    with pytest.raises(cil.PluginError, match="no algorithm named 'sgd'"):
        cil.Trainer(feedforward([4, 2], seed=0), "ideal", "sgd")


def test_disable_plugins_env_blocks_an_entry_point():
    code = "import cil_core; print(sorted(i.name for i in cil_core.list_plugins()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"CIL_DISABLE_PLUGINS": "snntorch", "PATH": ""}).stdout
    assert "snntorch" not in out and "cil_core" in out


def test_cli_plugins_lists_distributions():
    out = subprocess.run([sys.executable, "-m", "cil_core.cli", "plugins"], capture_output=True, text=True,
                         check=True).stdout
    assert "cil_core  [cil-core" in out and "snntorch  [cil-snntorch" in out
    assert "ideal" in out and "mh" in out


def test_forward_guard_names_the_backend_on_bad_output(registry_guard, breast_cancer):
    class Broken(cil.Backend):
        name = "broken-chip"

        def __init__(self, mode):
            self.mode = mode

        def transfer(self, spec, params, n_sets=None):
            return cil.Deployment(self.name, spec, params, n_sets)

        def forward(self, deployment, inputs, record=False):
            T, B = inputs.shape[:2]
            if self.mode == "raise":
                raise OSError("USB link lost")
            if self.mode == "nan":
                return cil.Observation(torch.full((T, B, 2), float("nan")))
            return cil.Observation(torch.zeros(T, B, 3))

    net = feedforward([62, 4, 2], seed=0)
    x = breast_cancer.test.x[:, :5]
    for mode, msg in (("raise", "failed during forward: OSError"), ("nan", "non-finite"), ("shape", "shape")):
        trainer = cil.Trainer(net, Broken(mode), "cil-spl")
        with pytest.raises(cil.HardwareError, match=f"broken-chip.*{msg}|{msg}.*broken-chip") as info:
            trainer.state.observe(net.detached_parameters(), x)
        assert info.value.backend == "broken-chip"
