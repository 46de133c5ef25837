"""The main job (`make demo` / `cil demo`) in quick mode: table, JSON, and the chip-in-the-loop
methods ahead of the offline baseline on the analog chip."""

import json

import pytest

pytest.importorskip("cil_analog")


def test_demo_quick(tmp_path, capsys):
    from cil_core.app.demo import main

    out = tmp_path / "demo.json"
    assert main(["--quick", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    acc = {r["algorithm"]: r["chip_test_accuracy"] for r in res["rows"]}
    assert list(acc) == ["offline", "cil-spl", "mh", "mh from offline"]
    for name in acc:
        assert name in printed
    assert res["backend"] == "analog-mismatch" and res["strength"] == 1.0
    # on this chip the offline network loses accuracy; chip-in-the-loop training recovers it
    offline_sw = res["rows"][0]["software_test_accuracy"]
    assert acc["offline"] < offline_sw - 0.05
    assert acc["cil-spl"] > acc["offline"]
    assert acc["mh from offline"] > acc["offline"] + 0.05
