"""The `cil` command line: train from a config file, errors, job listing."""

import json
import subprocess
import sys


def cil(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cil_core.app.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_train_from_config_file_writes_results(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'algorithm = "cil-spl"\nbackend = "ideal"\nepochs = 4\nseed = 3\n'
        '[algorithm_options]\nlr = 0.01\n[model_options]\nsizes = [62, 16, 2]\nweight_gain = 2.0\n'
    )
    out = tmp_path / "res.json"
    r = cil("train", "--config", str(cfg), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "cil-spl on ideal: chip test accuracy" in r.stdout
    res = json.loads(out.read_text())
    assert res["config"]["seed"] == 3 and res["metrics"]["n"] == 171
    assert len(res["history"]) == 4 * 7  # 398 samples / 64 per batch = 7 batches per epoch
    assert res["metrics"]["accuracy"] > 0.8


def test_command_line_options_override_config(tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"algorithm": "offline", "epochs": 1, "backend": "ideal"}))
    r = cil("train", "--config", str(cfg), "--algorithm", "mh", "--steps", "3", "--algo-opt", "burn_in=1",
            "chains=2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mh on ideal") and "3 steps" in r.stdout


def test_errors_are_reported_without_traceback():
    r = cil("train", "--backend", "no-such-chip", "--no-progress")
    assert r.returncode == 1 and "no backend named 'no-such-chip'" in r.stderr and "Traceback" not in r.stderr
    assert cil("frobnicate").returncode == 2


def test_config_typos_and_bad_values_are_named(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('algoritm = "mh"\n')
    r = cil("train", "--config", str(cfg), "--no-progress")
    assert r.returncode == 1 and "unknown key 'algoritm'; did you mean 'algorithm'?" in r.stderr
    assert "Traceback" not in r.stderr
    cfg.write_text('epochs = "three"\n')
    r = cil("train", "--config", str(cfg), "--no-progress")
    assert r.returncode == 1 and "epochs must be int | None, got 'three'" in r.stderr
    r = cil("train", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cil("train", "--algo-opt", "chain=8", "--algorithm", "mh", "--no-progress")
    assert r.returncode == 1 and "did you mean 'chains'" in r.stderr


def test_every_key_of_a_json_config_is_used_whatever_its_extension(tmp_path):
    out, ck, metrics, export = (tmp_path / n for n in ("res.json", "ck.pt", "m.jsonl", "model.pt"))
    cfg = tmp_path / "run.toml"  # JSON content, recognised as such
    cfg.write_text(json.dumps({"algorithm": "cil-spl", "backend": "ideal", "epochs": 1, "seed": 1,
                               "model_options": {"sizes": [62, 8, 2]}, "out": str(out), "checkpoint": str(ck),
                               "metrics": str(metrics), "export": str(export), "validation_split": 0.25,
                               "progress": False}))
    r = cil("train", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    n_train = 398 - round(0.25 * 398)
    assert res["chip"]["samples"]["train"] == n_train and res["validation"]["n"] == round(0.25 * 398)
    assert ck.is_file() and export.is_file()
    lines = metrics.read_text().splitlines()
    assert len(lines) == len(res["history"]) == -(-n_train // 64)
    assert "chip validation accuracy" in r.stdout
    # an existing checkpoint is not overwritten by a second run
    r = cil("train", "--config", str(cfg))
    assert r.returncode == 1 and "already exists" in r.stderr


def test_plot_draws_the_curves_of_a_run(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    metrics = tmp_path / "m.jsonl"
    r = cil("train", "--algorithm", "mh", "--steps", "4", "--algo-opt", "burn_in=2", "chains=2",
            "--metrics", str(metrics), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = cil("plot", str(metrics), "-o", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.jsonl").write_text("not json\n")
    r = cil("plot", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 1 and "neither a cil train --out JSON nor" in r.stderr


def test_model_factory_is_imported_from_the_current_folder_and_no_test_data_is_said(tmp_path):
    (tmp_path / "mymodel.py").write_text(
        "from cil_core.network.reference import feedforward\n\ndef make(hidden=4):\n"
        "    return feedforward([62, hidden, 2], seed=0)\n")
    import torch

    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    d = load_breast_cancer_spikes()
    torch.save((d.train.x[:, :50], d.train.y[:50]), tmp_path / "train.pt")
    r = subprocess.run([sys.executable, "-c", "import sys; from cil_core.app.cli import main; sys.exit(main())", "train",
                        "--model", "mymodel:make", "--model-opt", "hidden=5", "--data", "train.pt", "--epochs", "1",
                        "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "chip training (no test data given) accuracy" in r.stdout


def test_docs_config_table_is_the_schema():
    from pathlib import Path

    from cil_core.app.config import markdown_table

    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    assert markdown_table() in doc


ONE_FILE_CHIP = '''
import torch
import cil_core as cil
from cil_core.hardware.ideal import IdealBackend


class HalfChip(IdealBackend):
    """A one-file chip: the ideal backend with every weight halved."""

    name = "half-chip"

    def transfer(self, spec, params, n_sets=None):
        return super().transfer(spec, {k: v / 2 for k, v in params.items()}, n_sets)
'''


def test_a_one_file_backend_reaches_train_and_fidelity_with_plugin(tmp_path):
    """--plugin imports the module from the current folder and registers its Backend subclass; no
    --model is involved (the default network), and without --plugin the name is unknown."""
    (tmp_path / "halfchip.py").write_text(ONE_FILE_CHIP)
    out = tmp_path / "res.json"
    r = cil("train", "--plugin", "halfchip", "--backend", "half-chip", "--algorithm", "cil-spl", "--epochs", "1",
            "--out", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cil-spl on half-chip")
    assert json.loads(out.read_text())["config"]["plugins"] == ["halfchip"]
    cfg = tmp_path / "run.toml"
    cfg.write_text('plugins = ["halfchip"]\nbackend = "half-chip"\n')
    r = cil("fidelity", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0 and "half-chip" in r.stdout, r.stderr
    r = cil("train", "--backend", "half-chip", "--epochs", "1", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "no backend named 'half-chip'" in r.stderr
    (tmp_path / "empty.py").write_text("x = 1\n")
    r = cil("train", "--plugin", "empty", "--backend", "half-chip", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "module 'empty' defines no Backend subclass" in r.stderr, r.stderr
    r = cil("train", "--plugin", "no_such_module_xyz", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "cannot import module 'no_such_module_xyz'" in r.stderr, r.stderr


def test_wrap_options_reach_cil_wrap_for_a_factory_model(tmp_path):
    """A factory model whose first layer does not state its input size trains once --wrap-opt gives it;
    without it the error names the flag; on the default net the key is refused."""
    (tmp_path / "flatnet.py").write_text(
        "import torch, torch.nn as nn, snntorch as snn\n"
        "def net():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(62, 8), snn.Leaky(beta=0.9, init_hidden=True),\n"
        "                         nn.Linear(8, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True))\n")
    base = ("train", "--model", "flatnet:net", "--algorithm", "cil-spl", "--epochs", "1", "--no-progress")
    r = cil(*base, cwd=tmp_path)
    assert r.returncode == 1 and "the first layer is Flatten" in r.stderr and "--wrap-opt input_shape" in r.stderr
    assert "Traceback" not in r.stderr
    r = cil(*base, "--wrap-opt", "input_shape=[62]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cil-spl on ideal")
    r = cil(*base, "--wrap-opt", "input_shap=[62]", cwd=tmp_path)
    assert r.returncode == 1 and "input_shap" in r.stderr and "Traceback" not in r.stderr
    r = cil("train", "--wrap-opt", "input_shape=[62]", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "wrap_options" in r.stderr and "default" in r.stderr
