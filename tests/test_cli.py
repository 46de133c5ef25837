"""The `cil` command line: train from a config file, errors, job listing."""

import json
import subprocess
import sys


def cil(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cil_core.cli", *args], capture_output=True, text=True, cwd=cwd)


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
    r = cil("bench", "no-such-bench")
    assert r.returncode == 1 and "no bench job named 'no-such-bench'" in r.stderr
