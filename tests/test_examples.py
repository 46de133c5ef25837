"""Every script in examples/ runs (quick mode) and reports sensible accuracies."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick"], capture_output=True, text=True,
                          timeout=300, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout
    result = {k: float(v) for k, v in re.findall(r"(\S+)=([0-9.]+)", line[-1])}
    assert all(0.0 <= v <= 1.0 for v in result.values()), result
    return result


def test_snntorch_mh_on_analog():
    pytest.importorskip("snntorch")
    pytest.importorskip("cil_snntorch", reason="the cil-snntorch plugin is not installed")
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    r = run_example("snntorch_mh_analog.py")
    assert r["mh"] > 0.55  # from 0.37 before training, after 20 MH steps on 64 samples


def test_norse_cil_spl_on_analog():
    pytest.importorskip("norse.torch")
    pytest.importorskip("cil_norse", reason="the cil-norse plugin is not installed")
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    r = run_example("norse_cil_spl.py")
    assert r["cil-spl"] > 0.7


def test_sinabs_cil_spl_on_speck():
    pytest.importorskip("sinabs")
    pytest.importorskip("cil_sinabs", reason="the cil-sinabs plugin is not installed")
    pytest.importorskip("cil_speck", reason="the cil-speck plugin is not installed")
    run_example("sinabs_speck_cil_spl.py")  # quick mode: one epoch on 64 streams, a smoke test


def test_custom_chip():
    r = run_example("custom_chip.py")
    assert r["cil-spl"] > 0.8 and r["offline"] > 0.8
