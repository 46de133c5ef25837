"""Hook dispatch, plugin discovery, run-time registration, clear plugin errors."""

import subprocess
import sys

import pytest
import torch

import cil_core as cil
from cil_core import hookimpl
from cil_core.network.reference import feedforward


def _fake_distributions(root, broken_import="numpy_is_not_this_xyz"):
    """Two installed distributions on a path of their own: 'cil-fake-good' registers a backend,
    'cil-fake-broken' imports a module that does not exist."""
    (root / "fake_good_plugin.py").write_text(
        "import cil_core\n"
        "from cil_core.hardware.ideal import IdealBackend\n\n"
        "class FakeChip(IdealBackend):\n    name = 'fake-chip'\n\n"
        "@cil_core.hookimpl\ndef cil_register_backends(register):\n    register('fake-chip', FakeChip)\n")
    (root / "fake_broken_plugin.py").write_text(f"import {broken_import}\n")
    for dist, ep, module in (("cil-fake-good", "fakegood", "fake_good_plugin"),
                             ("cil-fake-broken", "fakebroken", "fake_broken_plugin")):
        info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[cil]\n{ep} = {module}\n")


def _run(code_or_args, root, env_extra=None, module=False):
    import os

    env = {**os.environ, "PYTHONPATH": str(root), **(env_extra or {})}
    args = [sys.executable, "-m", *code_or_args] if module else [sys.executable, "-c", code_or_args]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)


def test_builtins_and_entry_points_are_listed(tmp_path):
    infos = {i.name: i for i in cil.list_plugins()}
    core = infos["cil_core"]
    assert "ideal" in core.backends and {"offline", "cil-spl", "mh", "mala"} <= set(core.algorithms)
    assert core.distribution == "cil-core" and not core.broken
    # a plugin is found through the 'cil' entry-point group, with its distribution and version
    _fake_distributions(tmp_path)
    r = _run("import cil_core as c; i = {p.name: p for p in c.list_plugins()}['fakegood']; "
             "print(i.distribution, i.version, i.backends, c.make_backend('fake-chip').name)", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cil-fake-good", "0.1", "['fake-chip']", "fake-chip"]


def test_a_plugin_that_fails_to_import_is_listed_as_broken_and_the_rest_works(tmp_path):
    _fake_distributions(tmp_path)
    r = _run(["cil_core.app.cli", "plugins"], tmp_path, module=True)
    assert r.returncode == 0, r.stderr
    assert "fakebroken  [cil-fake-broken 0.1]  BROKEN" in r.stdout
    assert "No module named 'numpy_is_not_this_xyz'" in r.stdout
    assert "fix         pip install numpy_is_not_this_xyz (needed by cil-fake-broken)" in r.stdout
    assert "fake-chip" in r.stdout and "ideal" in r.stdout
    # the core and the healthy plugins keep working
    code = ("import cil_core as c\nfrom cil_core.network.reference import feedforward\n"
            "t = c.Trainer(feedforward([4, 3, 2], seed=0), c.make_backend('fake-chip'), 'offline')\n"
            "print(sorted(p.name for p in c.list_plugins() if p.broken))")
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['fakebroken']"


def test_demo_runs_beside_a_broken_plugin(tmp_path):
    _fake_distributions(tmp_path)
    backend = [] if "analog-mismatch" in cil.get_manager().names("backends") else ["--backend", "ideal"]
    r = _run(["cil_core.app.cli", "demo", "--quick", "--no-progress", *backend], tmp_path, module=True)
    assert r.returncode == 0, r.stderr
    assert "mh from offline" in r.stdout


def test_installed_plugin_with_a_missing_dependency_is_named_when_its_backend_is_asked_for():
    pytest.importorskip("cil_speck")
    code = ("import sys; sys.modules['numba'] = None\n"  # as if numba were not installed
            "import cil_core as c\n"
            "c.make_backend('ideal')\n"
            "try:\n    c.make_backend('speck')\nexcept c.PluginError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no backend named 'speck' is loaded" in r.stdout
    assert "plugin 'speck' (cil-speck), which is installed but broken" in r.stdout
    assert "pip install numba" in r.stdout


def test_asking_for_a_part_whose_plugin_is_not_loaded_names_its_distribution():
    code = ("import cil_core as c\n"
            "for kind, name in (('backends', 'analog-mismatch'), ('adapters', 'norse')):\n"
            "    try:\n        c.get_manager().entry(kind, name)\n    except c.PluginError as e:\n        print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"CIL_NO_ENTRYPOINTS": "1", "PATH": ""})
    assert r.returncode == 0, r.stderr
    assert "'analog-mismatch' is provided by the distribution 'cil-analog' (plugin 'analog')" in r.stdout
    assert "'norse' is provided by the distribution 'cil-norse'" in r.stdout
    assert "entry points are not loaded (CIL_NO_ENTRYPOINTS)" in r.stdout


def test_each_installed_plugin_declares_exactly_the_parts_it_registers():
    """The cil.parts metadata (read without importing) agrees with what each plugin registers."""
    import importlib.metadata as md

    from cil_core.plugin.loader import ENTRY_POINT_GROUP, KINDS, PARTS_GROUP

    declared: dict[str, set] = {}
    for ep in md.entry_points(group=PARTS_GROUP):
        kind, name = ep.name.split(".", 1)
        declared.setdefault(ep.value.split(":")[0], set()).add((kind, name))
    reg = cil.get_manager()
    checked = 0
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if reg.pm.get_plugin(ep.name) is None or not ep.value.startswith("cil_"):
            continue
        registered = {(k, n) for k in KINDS for n in reg.names(k) if reg.entry(k, n).owner == ep.name}
        assert declared.get(ep.value.split(":")[0], set()) == registered, ep.name
        checked += 1
    assert checked >= 6


def test_a_disabled_plugin_is_named_with_its_distribution_and_why():
    code = ("import cil_core as c\n"
            "try:\n    c.make_backend('speck')\nexcept c.PluginError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"CIL_DISABLE_PLUGINS": "speck", "PATH": ""})
    assert r.returncode == 0, r.stderr
    assert "'speck' is provided by the distribution 'cil-speck' (plugin 'speck')" in r.stdout
    assert "disabled by CIL_DISABLE_PLUGINS" in r.stdout


def test_close_names_are_suggested():
    with pytest.raises(cil.PluginError, match="did you mean 'ideal'"):
        cil.make_backend("idael")


def test_a_backend_class_registers_as_a_backend_and_replace_makes_it_idempotent(registry_guard, breast_cancer):
    from cil_core.hardware.ideal import IdealBackend

    class MyChip(IdealBackend):
        name = "my-chip"

    assert cil.register(MyChip) == "my-chip"
    assert isinstance(cil.make_backend("my-chip"), MyChip)
    # a re-run notebook cell defines the class again: a plain register refuses, replace=True replaces
    class MyChip2(IdealBackend):  # noqa: N801
        name = "my-chip"

    with pytest.raises(cil.PluginError, match="already registered; pass replace=True"):
        cil.register(MyChip2)
    assert cil.register(MyChip2, replace=True) == "my-chip"
    assert isinstance(cil.make_backend("my-chip"), MyChip2)
    # the same plugin object twice is a no-op
    mod_like = _Recorder()
    assert cil.register(mod_like) == cil.register(mod_like) == "_Recorder"


def test_registering_something_that_adds_nothing_is_an_error(registry_guard):
    class NotAPlugin:
        def cil_register_backends(self, register):  # no @hookimpl
            register("x", object)

    with pytest.raises(cil.PluginError, match="no @cil_core.hookimpl functions"):
        cil.register(NotAPlugin())
    with pytest.raises(cil.PluginError, match="got the class NotAPlugin"):
        cil.register(NotAPlugin)


def test_a_hook_style_backend_without_check_is_accepted(registry_guard, breast_cancer):
    rec = _Recorder()
    cil.register(rec, name="recorder-plugin")
    chip = rec.Chip()
    del type(chip).check
    net = feedforward([62, 4, 2], seed=0)
    cil.Trainer(net, chip, "cil-spl")  # no AttributeError: check is optional


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
    out = trainer.session.run(net.spec, net.detached_parameters(), x).output
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


def test_disable_plugins_env_blocks_an_entry_point(tmp_path):
    _fake_distributions(tmp_path)
    code = "import cil_core; print(sorted(i.name for i in cil_core.list_plugins()))"
    out = _run(code, tmp_path, {"CIL_DISABLE_PLUGINS": "fakegood,fakebroken"}).stdout
    assert "fakegood" not in out and "fakebroken" not in out and "cil_core" in out
    out = _run(code, tmp_path).stdout
    assert "fakegood" in out and "fakebroken" in out


def test_cli_plugins_lists_distributions(tmp_path):
    _fake_distributions(tmp_path)
    out = _run(["cil_core.app.cli", "plugins"], tmp_path, module=True).stdout
    assert "cil_core  [cil-core" in out and "fakegood  [cil-fake-good 0.1]" in out
    assert "ideal" in out and "mh" in out and "Exact float simulation" in out


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


def test_sdk_helpers_block_an_import_and_skip_a_package_init(tmp_path, monkeypatch):
    """cil_core.plugin.sdk: a blocked module fails to import at once and is importable again after
    the block; a bare package's submodule imports without its __init__ running."""
    import importlib

    from cil_core.plugin.sdk import bare_package, blocked_modules

    pkg = tmp_path / "vendorpkg" / "chip"
    pkg.mkdir(parents=True)
    (tmp_path / "vendorpkg" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("raise RuntimeError('the __init__ must not run')\n")
    (pkg / "sim.py").write_text("VALUE = 42\n")
    (tmp_path / "stubsdk.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with blocked_modules("stubsdk"):
        with pytest.raises(ImportError):
            import stubsdk  # noqa: F401
    assert importlib.import_module("stubsdk").LOADED and "stubsdk" in sys.modules
    assert bare_package("vendorpkg.nothere") is None
    assert bare_package("vendorpkg.chip") is not None
    assert importlib.import_module("vendorpkg.chip.sim").VALUE == 42
    for name in ("stubsdk", "vendorpkg.chip.sim", "vendorpkg.chip", "vendorpkg"):
        sys.modules.pop(name, None)
