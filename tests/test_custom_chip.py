"""The custom-chip template (examples/custom_chip_plugin): its hooks honour the contract, it
trains a model, and it installs with pip into a fresh environment where ``cil plugins`` lists it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import cil_core as cil
from cil_core.network.reference import feedforward

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "custom_chip_plugin"


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


def test_template_hooks_follow_the_contract(toychip, breast_cancer):
    chip = cil.make_backend("toy-chip", seed=1)
    net = feedforward([breast_cancer.n_inputs, 8, 2], beta=0.9, weight_gain=3.0, seed=0)
    reg = cil.HardwareSession(chip)
    x = breast_cancer.test.x[:, :20]
    params = net.detached_parameters()
    dep = reg.transfer(net.spec, params)
    # transfer: quantized weights in software units, params untouched
    for k, v in dep.params.items():
        assert v.shape == params[k].shape and not torch.equal(v, params[k])
        assert torch.allclose(v, params[k], atol=float(params[k].abs().max()) / 31)
    assert torch.equal(params["0.weight"], net.detached_parameters()["0.weight"])
    first = reg.forward(dep, x).output
    assert first.shape == (x.shape[0], 20, 2) and set(first.unique().tolist()) <= {0.0, 1.0}
    # no state leaks from one call to the next
    assert torch.equal(reg.forward(dep, x).output, first)
    # a forward with an older deployment re-writes that deployment's weights first
    other = reg.transfer(net.spec, {k: -v for k, v in params.items()})
    assert not torch.equal(reg.forward(other, x).output, first)
    assert torch.equal(reg.forward(dep, x).output, first)
    # the chip differs from the ideal simulation (mismatch), which is why chip-in-the-loop helps
    ideal = cil.make_backend("ideal")
    assert not torch.equal(ideal.forward(ideal.transfer(net.spec, params), x).output, first)


def test_template_limits_are_reported(toychip, breast_cancer):
    net = feedforward([breast_cancer.n_inputs, 8, 2], bias=True, seed=0)
    with pytest.raises(cil.BackendCapacityError, match="no bias circuits: '0.bias'"):
        cil.Trainer(net, "toy-chip", "cil-spl")


def test_template_installs_with_pip_and_trains(tmp_path):
    """pip-install the template into a fresh environment layered on this one, then use it there
    only through its entry point: ``cil plugins`` lists it and a model trains on it."""
    src = tmp_path / "template"
    shutil.copytree(TEMPLATE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # see this interpreter's packages (cil-core, torch, pip, setuptools) from the new environment
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_cil_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)], check=True,
                   cwd=tmp_path)

    listing = subprocess.run([py, "-m", "cil_core.cli", "plugins"], check=True, capture_output=True, text=True,
                             cwd=tmp_path).stdout
    block = listing[listing.index("toychip  [cil-toychip 0.1.0]"):]
    assert "backends    toy-chip" in block.splitlines()[1]

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
    # the template folder itself stays clean (the build ran on a copy)
    assert not (TEMPLATE / "build").exists() and not list(TEMPLATE.glob("*.egg-info"))
