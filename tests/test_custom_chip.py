"""The custom-chip template (examples/custom_chip_plugin): its own test (the backend contract,
``test_toychip.py``, collected here), 6-bit codes and mismatch, training, and a pip install into
a fresh environment where ``cil plugins`` lists it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

import cil_core as cil
from cil_core.network.reference import feedforward

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "custom_chip_plugin"

sys.path.insert(0, str(TEMPLATE))
try:  # the template's own test, collected as part of this module
    from test_toychip import test_toychip_meets_the_backend_contract  # noqa: F401
finally:
    sys.path.remove(str(TEMPLATE))


@pytest.fixture
def toychip(registry_guard):
    """The template's plugin module, registered at run time (unless it is pip-installed already)."""
    sys.path.insert(0, str(TEMPLATE))
    try:
        from cil_toychip import plugin

        if "toy-chip" not in registry_guard.names("backends"):
            cil.register(plugin, "toychip-under-test")
        yield plugin
    finally:
        sys.path.remove(str(TEMPLATE))


def test_template_trains_a_model_on_the_toy_chip(toychip, breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 16, 2], beta=0.9, weight_gain=3.0, seed=0)
    trainer = cil.Trainer(net, "toy-chip", "cil-spl", lr=1e-2, seed=0)
    before = trainer.evaluate(breast_cancer.test)["accuracy"]
    trainer.fit(breast_cancer.train, epochs=2, batch_size=64)
    after = trainer.evaluate(breast_cancer.test)["accuracy"]
    assert after > 0.85 and after > before + 0.3


def test_template_holds_6_bit_codes_and_a_seeded_mismatch(toychip, breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 8, 2], beta=0.9, weight_gain=3.0, seed=0)
    params, x = net.detached_parameters(), breast_cancer.test.x[:, :20]

    def run(**options):
        session = cil.HardwareSession(cil.make_backend("toy-chip", **options))
        dep = session.transfer(net.spec, params)
        return dep, session.forward(dep, x).output

    dep, out = run(seed=1)
    for (codes, gain, threshold, leak), name in zip(dep.chip["layers"], net.spec.parameter_names()):
        w = params[name]
        assert codes.dtype == np.int8 and np.abs(codes).max() == 31 and threshold == 1.0 and leak == 0.9
        assert gain == pytest.approx(float(w.abs().max()) / 31)
        # the deployed weights: the codes in software units, within half a code of the software weights
        assert torch.equal(dep.params[name], torch.from_numpy(codes).double().mul(gain).float())
        assert float((dep.params[name] - w).abs().max()) <= gain / 2 + 1e-6 and not torch.equal(dep.params[name], w)
    # the hidden mismatch is fixed by the seed and changes what the chip computes
    assert torch.equal(run(seed=1)[1], out)
    assert not torch.equal(run(seed=2)[1], out) and not torch.equal(run(mismatch=0.0)[1], out)


def test_template_limits_are_reported(toychip, breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 8, 2], bias=True, seed=0)
    with pytest.raises(cil.BackendCapacityError, match="biases: no bias circuits for '0.bias'"):
        cil.Trainer(net, "toy-chip", "cil-spl")


def test_template_installs_with_pip_and_trains(tmp_path):
    """pip-install the template into a fresh environment layered on this one, then use it there
    only through its entry point: ``cil plugins`` lists it and a model trains on it."""
    before = sorted(p.relative_to(TEMPLATE) for p in TEMPLATE.rglob("*") if "__pycache__" not in p.parts)
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # see this interpreter's packages (cil-core, torch, pip, setuptools) from the new environment
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_cil_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    # installed from the template folder itself, as its README says: the build backend (flit_core) writes
    # nothing into it
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(TEMPLATE)], check=True,
                   cwd=tmp_path)
    after = sorted(p.relative_to(TEMPLATE) for p in TEMPLATE.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, sorted(set(after) - set(before))

    listing = subprocess.run([py, "-m", "cil_core.app.cli", "plugins"], check=True, capture_output=True, text=True,
                             cwd=tmp_path).stdout
    block = listing[listing.index("toychip  [cil-toychip 0.1.0]"):]
    assert block.splitlines()[1].split()[:2] == ["backend", "toy-chip"]

    script = (
        "import cil_core as cil, torch\n"
        "from cil_core.network.reference import feedforward\n"
        "from cil_core.data.breast_cancer import load_breast_cancer_spikes\n"
        "torch.set_num_threads(1)\n"
        "d = load_breast_cancer_spikes(num_steps=16, seed=0)\n"
        "net = feedforward([d.n_inputs, 16, 2], beta=0.9, weight_gain=3.0, seed=0)\n"
        "t = cil.Trainer(net, cil.make_backend('toy-chip'), 'cil-spl', lr=1e-2, seed=0)\n"
        "t.fit(d.train, epochs=1, batch_size=64)\n"
        "print(type(t.backend).__module__, t.evaluate(d.test)['accuracy'])\n"
    )
    out = subprocess.run([py, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert out[0] == "cil_toychip.plugin" and float(out[1]) > 0.8
    assert not (TEMPLATE / "build").exists() and not list(TEMPLATE.glob("*.egg-info"))
