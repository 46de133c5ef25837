"""``cil sweep``: grid files checked at the door, stable keys, one JSON line per finished point,
resume that runs only the missing points, corrupt lines reported and ignored, failed points not
written, the local runner in-process and in worker processes giving the same results, runners
contributed by plugins, per-algorithm/per-backend option tables, per-point resources and the
lock that keeps a second sweep off a results file. (The Ray runner: tests/test_ray_sweep.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cil_core as cil
from cil_core.app import cli
from cil_core.errors import LockError, OptionError, PluginError
from cil_core.app.sweep import (LocalRunner, Point, ResultsFile, SweepError, load_grid, make_runner, point_key,
                            read_results, run_grid, run_sweep)

GRID = """
[base]
algorithm = "mh"
steps = 6
model_options = { sizes = [62, 8, 2], weight_gain = 2.0 }
algorithm_options = { burn_in = 2 }

[grid]
seed = [0, 1]
"algorithm_options.chains" = [2, 4]
"""

# an algorithm axis, each algorithm with options of its own, and a backend table
GRID_ALGO = """
[base]
steps = 6
backend = "analog-mismatch"
model_options = { sizes = [62, 8, 2], weight_gain = 2.0 }
backend_options = { strength = 0.5 }

[algorithm_options.mh]
chains = 4
burn_in = 2

[algorithm_options.cil-spl]
lr = 0.05

[backend_options.analog-mismatch]
strength = 1.0
seed = 3

[grid]
algorithm = ["mh", "cil-spl"]
"backend_options.seed" = [0, 1]
"""


def _grid(tmp_path: Path, text: str = GRID, name: str = "grid.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- a counting point function
CALLS: list = []


def counted(payload):
    CALLS.append(payload)
    if payload.get("fail"):
        raise ValueError(f"point {payload['i']} broke")
    return {"double": 2 * payload["i"]}


def _points(n: int, fail: tuple = ()) -> list[Point]:
    return [Point(point_key({"i": i}), {"i": i}, {"i": i, "fail": i in fail}) for i in range(n)]


# ----------------------------------------------------------------------------- the grid file
def test_points_keys_and_validation_of_a_grid_file(tmp_path):
    g = load_grid(_grid(tmp_path))
    assert len(g.points) == 4
    assert g.results == tmp_path / "grid.jsonl"
    keys = [p.key for p in g.points]
    assert "algorithm_options.chains=2,seed=0" in keys
    p = next(p for p in g.points if p.key == "algorithm_options.chains=4,seed=1")
    # the dotted axis lands in its table, merged with the base's entries
    assert p.payload["config"]["algorithm_options"] == {"burn_in": 2, "chains": 4}
    assert p.payload["config"]["seed"] == 1
    # the key does not depend on the order of the axes in the file
    swapped = GRID.replace('seed = [0, 1]\n"algorithm_options.chains" = [2, 4]',
                           '"algorithm_options.chains" = [2, 4]\nseed = [0, 1]')
    assert swapped != GRID
    assert sorted(p.key for p in load_grid(_grid(tmp_path, swapped, "b.toml")).points) == sorted(keys)
    # TOML's unquoted dotted key is the same axis
    unquoted = GRID.replace('"algorithm_options.chains"', "algorithm_options.chains")
    assert [p.key for p in load_grid(_grid(tmp_path, unquoted, "c.toml")).points] == keys
    # a JSON grid file (recognised by content) is the same grid
    js = {"base": {"algorithm": "mh", "steps": 6, "model_options": {"sizes": [62, 8, 2], "weight_gain": 2.0},
                   "algorithm_options": {"burn_in": 2}},
          "grid": {"seed": [0, 1], "algorithm_options.chains": [2, 4]}}
    gj = load_grid(_grid(tmp_path, json.dumps(js), "grid.json"))
    assert [p.key for p in gj.points] == keys and gj.base_fingerprint == g.base_fingerprint


@pytest.mark.parametrize("text, words", [
    (GRID.replace("seed = [0, 1]", "algoritm = ['mh']"), ["[grid]", "'algoritm'", "did you mean 'algorithm'"]),
    (GRID.replace("steps = 6", "stepz = 6"), ["[base]", "'stepz'", "did you mean 'steps'"]),
    (GRID.replace("seed = [0, 1]", "seed = []"), ["axis 'seed' is empty"]),
    (GRID.replace("seed = [0, 1]", "seed = 3"), ["axis 'seed' must be a list"]),
    (GRID.replace("seed = [0, 1]", "seed = [0, 0]"), ["axis 'seed' lists 0 twice"]),
    (GRID.replace("seed = [0, 1]", "seed = ['x']"), ["seed must be int", "'x'"]),
    (GRID.replace("seed = [0, 1]", "data_fracton = [0.5]"), ["'data_fracton'", "did you mean 'data_fraction'"]),
    (GRID.replace("seed = [0, 1]", "data_fraction = [0.0]"), ["data_fraction must lie in (0, 1]"]),
    (GRID.replace("seed = [0, 1]", "'backend_options.strenght' = [1.0]"),
     ["point", "unknown option 'strenght' for backend 'ideal'"]),
    (GRID.replace("seed = [0, 1]", "'algorithm_options.chain' = [2]"),
     ["unknown option 'chain' for algorithm 'mh'", "did you mean 'chains'"]),
    (GRID.replace("seed = [0, 1]", "'bakend_options.seed' = [2]"), ["'bakend_options.seed'", "backend_options"]),
    (GRID.replace("[base]", "[base]\ncheckpoint = 'ck.pt'"), ["'checkpoint'", "same checkpoint"]),
    (GRID + "\n[grids]\nx = 1\n", ["unknown table 'grids'"]),
    (GRID + "\n[sweep]\nresult = 'r.jsonl'\n", ["[sweep]", "'result'", "did you mean 'results'"]),
    (GRID.split("[grid]")[0], ["[grid] is missing or empty"]),
    (GRID_ALGO.replace("lr = 0.05", "lrr = 0.05"),
     ["unknown option 'lrr' for algorithm 'cil-spl'", "point algorithm=cil-spl", "[algorithm_options.cil-spl]",
      "did you mean 'lr'"]),
    (GRID_ALGO.replace("lr = 0.05", "chains = 8"), ["unknown option 'chains' for algorithm 'cil-spl'"]),
    (GRID_ALGO.replace("[algorithm_options.cil-spl]", "[algorithm_options.cil_spl]"),
     ["[algorithm_options.cil_spl] applies to no point", "did you mean 'cil-spl'"]),
    (GRID_ALGO.replace('algorithm = ["mh", "cil-spl"]', 'algorithm = ["mh"]'),
     ["[algorithm_options.cil-spl] applies to no point", "algorithms: mh"]),
    (GRID_ALGO.replace("[backend_options.analog-mismatch]", "[backend_options.speck]"),
     ["[backend_options.speck] applies to no point"]),
    (GRID_ALGO.replace("[algorithm_options.mh]\n", "[algorithm_options]\n"), ["holds one table per algorithm"]),
    (GRID + "\n[sweep]\nresources = { 'board-{backend_options.serial}' = 1 }\n",
     ["resource template 'board-{backend_options.serial}' names 'backend_options.serial'", "point"]),
    (GRID + "\n[sweep]\nresources = { 'board-{' = 1 }\n", ["template 'board-{' is malformed"]),
    (GRID + "\n[sweep]\nresources = { 'board-{0}' = 1 }\n", ["each {...} names a key of the point"]),
    (GRID + "\n[sweep]\nresources = { 'chip' = 0 }\n", ["resources must map resource names"]),
])
def test_bad_grid_files_are_cil_errors_naming_the_key(tmp_path, capsys, text, words):
    path = _grid(tmp_path, text)
    with pytest.raises(OptionError) as err:
        load_grid(path)
    for w in words:
        assert w in str(err.value)
    assert cli.main(["sweep", str(path), "--no-progress"]) == 1  # the CLI: one line, exit code 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("cil sweep: error: ") and words[0] in line
    assert not (tmp_path / "grid.jsonl").exists()


# ----------------------------------------------------------------------------- per-name tables, resources
def test_per_algorithm_and_per_backend_tables_apply_to_their_points_only(tmp_path):
    g = load_grid(_grid(tmp_path, GRID_ALGO))
    pts = {p.key: p for p in g.points}
    # the key is made of the axis values only
    assert sorted(pts) == ["algorithm=cil-spl,backend_options.seed=0", "algorithm=cil-spl,backend_options.seed=1",
                           "algorithm=mh,backend_options.seed=0", "algorithm=mh,backend_options.seed=1"]
    mh, spl = pts["algorithm=mh,backend_options.seed=1"], pts["algorithm=cil-spl,backend_options.seed=1"]
    assert mh.payload["config"]["algorithm_options"] == {"chains": 4, "burn_in": 2}
    assert spl.payload["config"]["algorithm_options"] == {"lr": 0.05}
    # the backend table over [base] (strength 0.5 -> 1.0), the axis over the table (seed 3 -> 1)
    assert mh.payload["config"]["backend_options"] == {"strength": 1.0, "seed": 1}
    res = run_grid(g.source.split("grid file ")[1], results=tmp_path / "algo.jsonl")
    # really applied: each point is the run of the same options given in [base]
    one = GRID.replace('seed = [0, 1]\n"algorithm_options.chains" = [2, 4]', '"backend_options.seed" = [1]').replace(
        'algorithm_options = { burn_in = 2 }', 'algorithm_options = { burn_in = 2, chains = 4 }\n'
        'backend = "analog-mismatch"\nbackend_options = { strength = 1.0 }')
    ref_mh = run_grid(_grid(tmp_path, one, "mh.toml")).records["backend_options.seed=1"]["metrics"]
    assert res.records[mh.key]["metrics"] == ref_mh
    spl_default = one.replace('algorithm = "mh"', 'algorithm = "cil-spl"').replace(
        "algorithm_options = { burn_in = 2, chains = 4 }", "")
    ref_spl = run_grid(_grid(tmp_path, spl_default, "spl.toml")).records["backend_options.seed=1"]["metrics"]
    with_lr = spl_default.replace('"cil-spl"', '"cil-spl"\nalgorithm_options = { lr = 0.05 }')
    ref_spl_lr = run_grid(_grid(tmp_path, with_lr, "spl_lr.toml")).records["backend_options.seed=1"]["metrics"]
    assert res.records[spl.key]["metrics"] == ref_spl_lr != ref_spl  # lr 0.05, not the default 0.005
    # the tables are part of the base fingerprint: a changed table is refused like a changed [base]
    changed = _grid(tmp_path, GRID_ALGO.replace("lr = 0.05", "lr = 0.02"), "changed.toml")
    assert load_grid(changed).base_fingerprint != g.base_fingerprint
    with pytest.raises(OptionError, match="computed with another base config"):
        run_grid(changed, results=tmp_path / "algo.jsonl")
    # a grid without tables keeps the fingerprint of [base] alone (older results files resume)
    from cil_core.app.sweep import fingerprint

    plain = load_grid(_grid(tmp_path))
    assert plain.base_fingerprint == fingerprint(plain.base)


def test_per_point_resources_are_formatted_and_handed_to_runners_that_take_them(tmp_path, registry_guard):
    text = GRID_ALGO + '\n[sweep]\nresources = { "board-{backend_options.seed}" = 1, "{algorithm}-slot" = 0.5 }\n'
    g = load_grid(_grid(tmp_path, text))
    assert {p.key: p.resources for p in g.points}["algorithm=cil-spl,backend_options.seed=1"] == {
        "board-1": 1.0, "cil-spl-slot": 0.5}
    # a value of [base] or of a table is a key of the point too
    g2 = load_grid(_grid(tmp_path, GRID + "\n[sweep]\nresources = { 'chip-{algorithm}-{seed:02d}' = 2 }\n", "b.toml"))
    assert [p.resources for p in g2.points][:2] == [{"chip-mh-00": 2.0}, {"chip-mh-00": 2.0}]
    got: dict = {}

    class Recording(_ReversedRunner):
        def run(self, fn, payloads, threads=1, resources=None, keys=None):
            got.update(zip(keys, resources))
            yield from super().run(fn, payloads, threads)

    class Plugin:
        @cil.hookimpl
        def cil_register_runners(self, register):
            register("recording", Recording)
            register("reversed", _ReversedRunner)

    cil.register(Plugin(), "recording-runner")
    pts = [Point(p.key, p.options, {"i": i}, p.resources) for i, p in enumerate(g.points)]
    run_sweep(pts, counted, results=tmp_path / "r.jsonl", runner="recording")
    assert got == {p.key: p.resources for p in g.points}
    # a runner whose run takes no resources still runs, and a warning says they are ignored
    notes: list[str] = []
    res = run_sweep(pts, counted, results=tmp_path / "s.jsonl", runner="reversed", report=notes.append)
    assert len(res.ran) == 4 and any("'reversed' takes no per-point resources" in n for n in notes)
    # the local runner takes them and has nothing to place
    assert len(run_sweep(pts, counted, results=tmp_path / "t.jsonl").ran) == 4


# ----------------------------------------------------------------------------- the lock
HOLD = """
import sys, time
from cil_core.app.sweep import ResultsFile
with ResultsFile(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_sweep_on_a_results_file_fails_at_once_naming_the_holder(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    run_sweep(_points(2), counted, results=results)
    assert not (tmp_path / "r.jsonl.lock").exists()  # released and removed
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(results)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        info = json.loads((tmp_path / "r.jsonl.lock").read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname() and info["since"]
        t0 = time.perf_counter()
        CALLS.clear()
        with pytest.raises(LockError, match=rf"results file .*r.jsonl is being written by another sweep: pid "
                                            rf"{holder.pid} on {socket.gethostname()} \(user {info['user']}, since"):
            run_sweep(_points(3), counted, results=results)
        assert time.perf_counter() - t0 < 2 and CALLS == []
        # the CLI: one line, exit code 1; --list needs no lock
        path = _grid(tmp_path)
        assert cli.main(["sweep", str(path), "--results", str(results), "--no-progress"]) == 1
        assert "cil sweep: error: results file" in capsys.readouterr().err
        assert cli.main(["sweep", str(path), "--results", str(results), "--list"]) == 0
        assert "0 of 4 points done" in capsys.readouterr().out
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the lock dies with its process
        holder.wait()
    assert (tmp_path / "r.jsonl.lock").exists()  # left behind by the killed holder, but not held
    res = run_sweep(_points(3), counted, results=results)
    assert res.ran == ["i=2"] and res.skipped == ["i=0", "i=1"]
    assert not (tmp_path / "r.jsonl.lock").exists()
    # fresh: the file is emptied under the lock
    assert run_sweep(_points(3), counted, results=results, fresh=True).ran == ["i=0", "i=1", "i=2"]
    assert len(_lines(results)) == 3


# ----------------------------------------------------------------------------- results, resume
def test_cli_sweep_writes_one_parsable_line_per_point_and_resumes(tmp_path, capsys):
    path = _grid(tmp_path)
    assert cli.main(["sweep", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "4/4" in err  # the progress bar: done/total
    recs = _lines(tmp_path / "grid.jsonl")
    assert len(recs) == 4
    for r in recs:
        assert set(r) >= {"key", "options", "metrics", "seconds", "host", "pid", "runner", "worker", "base", "finished"}
        assert 0 <= r["metrics"]["accuracy"] <= 1 and r["metrics"]["steps"] == 6 and r["metrics"]["n"] == 171
        assert r["runner"] == "local"
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in recs}) > 1  # the points differ
    assert "4 points: 0 already done, 4 run now" in out
    # a wider grid: only the new points run, the finished lines stay as they were
    before = (tmp_path / "grid.jsonl").read_text()
    wider = _grid(tmp_path, GRID.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    res = run_grid(wider)
    assert sorted(res.ran) == ["algorithm_options.chains=2,seed=2", "algorithm_options.chains=4,seed=2"]
    assert len(res.skipped) == 4 and len(res.records) == 6
    text = (tmp_path / "grid.jsonl").read_text()
    assert text.startswith(before) and len(_lines(tmp_path / "grid.jsonl")) == 6
    # nothing left: nothing runs
    assert cli.main(["sweep", str(wider), "--no-progress"]) == 0
    assert "6 points: 6 already done, 0 run now" in capsys.readouterr().out
    assert cli.main(["sweep", str(wider), "--list"]) == 0
    assert "6 of 6 points done" in capsys.readouterr().out
    # another [base] with the same results file: refused, not mixed
    changed = _grid(tmp_path, GRID.replace("steps = 6", "steps = 7"))
    with pytest.raises(OptionError, match="computed with another base config"):
        run_grid(changed)
    # ... but retries/timeout do not change results: resumable with other values
    assert run_grid(_grid(tmp_path, GRID.replace("steps = 6", "steps = 6\nretries = 2"))).ran == []


def test_a_point_is_the_cil_train_run_of_its_config(tmp_path, capsys):
    path = _grid(tmp_path)
    point = load_grid(path).points[-1]
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(point.payload["config"]))
    assert cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "run_out.json"), "--no-progress"]) == 0
    trained = json.loads((tmp_path / "run_out.json").read_text())
    rec = run_grid(path).records[point.key]
    assert rec["metrics"]["accuracy"] == trained["metrics"]["accuracy"]
    assert rec["metrics"]["loss"] == trained["metrics"]["loss"]
    assert rec["metrics"]["final_loss"] == trained["history"][-1]["loss"]


def test_resume_runs_only_the_missing_points(tmp_path):
    CALLS.clear()
    results = tmp_path / "r.jsonl"
    res = run_sweep(_points(3), counted, results=results)
    assert [c["i"] for c in CALLS] == [0, 1, 2] and res.ran == ["i=0", "i=1", "i=2"]
    CALLS.clear()
    res = run_sweep(_points(5), counted, results=results)
    assert [c["i"] for c in CALLS] == [3, 4]
    assert res.skipped == ["i=0", "i=1", "i=2"] and res.ran == ["i=3", "i=4"]
    assert [r["metrics"]["double"] for r in _lines(results)] == [0, 2, 4, 6, 8]
    assert [r["key"] for r in res.records.values()] == [f"i={i}" for i in range(5)]


def test_resuming_with_another_thread_count_is_refused_naming_both(tmp_path):
    """A record keeps the threads it ran with; a resume at another count would mix float results
    of two counts in one table, so it is refused before any point runs. Records written before
    ``threads`` was recorded resume as they are."""
    results = tmp_path / "r.jsonl"
    run_sweep(_points(2), counted, results=results, threads=2)
    assert [r["threads"] for r in _lines(results)] == [2, 2]
    CALLS.clear()
    with pytest.raises(OptionError, match=r"point 'i=0' computed with 2 thread\(s\) per point, this sweep runs 1"):
        run_sweep(_points(3), counted, results=results, threads=1)
    assert CALLS == []
    res = run_sweep(_points(3), counted, results=results, threads=2)
    assert res.ran == ["i=2"]
    old = [{k: v for k, v in r.items() if k != "threads"} for r in _lines(results)]
    results.write_text("".join(json.dumps(r) + "\n" for r in old))
    res = run_sweep(_points(4), counted, results=results, threads=1)
    assert res.skipped == ["i=0", "i=1", "i=2"] and res.ran == ["i=3"]


def test_a_truncated_or_corrupt_line_is_reported_and_ignored(tmp_path):
    results = tmp_path / "r.jsonl"
    run_sweep(_points(3), counted, results=results)
    text = results.read_text().splitlines(keepends=True)
    # the last line cut in the middle of a write, and a garbage line in the middle
    results.write_text(text[0] + "garbage\n" + text[1] + text[2][:25])
    notes: list[str] = []
    CALLS.clear()
    res = run_sweep(_points(3), counted, results=results, report=notes.append)
    assert [c["i"] for c in CALLS] == [2]  # only the point of the truncated line runs again
    assert any("last line is truncated" in n for n in notes) and any("line 2 is not a sweep record" in n for n in notes)
    # the new record starts a line of its own: every complete record parses, the old garbage stays reported
    recs, notes2 = ResultsFile(results).read()
    assert [r["key"] for r in recs] == ["i=0", "i=1", "i=2"]
    assert len(notes2) == 2 and all("ignored" in n for n in notes2)
    assert set(read_results(results)) == {"i=0", "i=1", "i=2"}
    assert res.records["i=2"]["metrics"] == {"double": 4}


def test_failed_points_are_reported_not_written_and_run_again(tmp_path):
    results = tmp_path / "r.jsonl"
    notes: list[str] = []
    with pytest.raises(SweepError, match=r"1 of 4 point\(s\) failed.*i=2: ValueError: point 2 broke"):
        run_sweep(_points(4, fail=(2,)), counted, results=results, report=notes.append)
    assert [r["key"] for r in _lines(results)] == ["i=0", "i=1", "i=3"]
    assert any("point i=2 failed" in n for n in notes)
    CALLS.clear()
    res = run_sweep(_points(4), counted, results=results)
    assert [c["i"] for c in CALLS] == [2] and res.ran == ["i=2"]


def test_worker_processes_give_the_same_results_as_one_process(tmp_path):
    path = _grid(tmp_path)
    one = run_grid(path, results=tmp_path / "one.jsonl")
    two = run_grid(path, results=tmp_path / "two.jsonl", runner_options={"jobs": 2})
    assert {k: r["metrics"] for k, r in one.records.items()} == {k: r["metrics"] for k, r in two.records.items()}
    assert len({r["pid"] for r in two.records.values()}) == 2  # really two worker processes
    assert {r["worker"] for r in one.records.values()} == {"main process"}


_THREADS_SEEN = """
import json, sys
import numba, torch
from cil_core.app.sweep import execute

@numba.njit(parallel=True)
def spread(n):
    s = 0.0
    for i in numba.prange(n):
        s += i
    return s

def point(n):  # a parallel numba kernel, then a torch op: the thread counts they ran with
    spread(n)
    torch.ones(n).cumsum(0)
    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()}

torch.set_num_threads(2)
seen = [execute(point, 10_000, threads=int(t))["metrics"] for t in sys.argv[1:]]
print(json.dumps({"seen": seen, "after": [torch.get_num_threads(), numba.get_num_threads()],
                  "pool": numba.config.NUMBA_NUM_THREADS}))
"""


def test_a_point_runs_with_the_sweeps_threads_in_torch_and_numba():
    """``threads`` holds for numba's pool too, in a fresh process as a worker is: the backends'
    numba kernels (speck, xylo) used all cores whatever the sweep said, and with numba's OpenMP
    layer the pool's start also set torch's OpenMP thread count back to numba's (a 1-thread point
    ran with 2 torch threads). Both are restored after the point."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to limit")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    run = subprocess.run([sys.executable, "-c", _THREADS_SEEN, "1", "3"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    pool = got["pool"]
    assert got["seen"] == [{"torch": 1, "numba": 1}, {"torch": 3, "numba": min(3, pool)}]
    assert got["after"] == [2, pool]


# ----------------------------------------------------------------------------- runners from plugins
class _ReversedRunner:
    """A runner of a plugin's own: runs the points last to first."""

    name = "reversed"

    def __init__(self, tag: str = "r") -> None:
        self.tag = tag
        self.closed = False

    def run(self, fn, payloads, threads=1):
        from cil_core.app.sweep import execute

        for i in reversed(range(len(payloads))):
            yield i, {**execute(fn, payloads[i], threads), "worker": self.tag}

    def close(self):
        self.closed = True


class _RunnerPlugin:
    @cil.hookimpl
    def cil_register_runners(self, register):
        register("reversed", _ReversedRunner)


def test_a_plugin_registers_a_runner(tmp_path, registry_guard):
    assert "local" in registry_guard.names("runners")
    with pytest.raises(PluginError, match="no runner named 'reversed'"):
        make_runner("reversed")
    # a runner whose plugin is not loaded: named with its distribution where one is installed
    from cil_core.plugin.loader import declared_provider

    msg = registry_guard._missing_message("runners", "ray", {})
    if declared_provider("runners", "ray") is not None:
        assert "provided by the distribution 'cil-ray'" in msg and "pip install -e plugins/cil-ray" in msg
    else:  # make test-without-ray: nothing declares it
        assert "No installed distribution declares it" in msg
    cil.register(_RunnerPlugin(), "reversed-runner")
    assert registry_guard.entry("runners", "reversed").owner == "reversed-runner"
    assert any(i.runners == ["reversed"] for i in cil.list_plugins())
    with pytest.raises(OptionError, match="unknown option 'tags' for runner 'reversed'"):
        make_runner("reversed", tags="x")
    with pytest.raises(OptionError, match="jobs must be a whole number"):
        make_runner("local", jobs=0)
    CALLS.clear()
    res = run_sweep(_points(3), counted, results=tmp_path / "r.jsonl", runner="reversed",
                    runner_options={"tag": "mine"})
    assert [c["i"] for c in CALLS] == [2, 1, 0]
    assert [r["key"] for r in _lines(tmp_path / "r.jsonl")] == ["i=2", "i=1", "i=0"]  # in the order they finished
    assert list(res.records) == ["i=0", "i=1", "i=2"]  # in grid order
    assert {r["runner"] for r in res.records.values()} == {"reversed"}
    assert {r["worker"] for r in res.records.values()} == {"mine"}
    runner = _ReversedRunner()
    run_sweep(_points(1), counted, results=tmp_path / "s.jsonl", runner=runner)
    assert runner.closed
    assert isinstance(make_runner("local", jobs=2), LocalRunner)


def test_the_core_never_imports_ray():
    import re

    root = Path(__file__).resolve().parent.parent / "cil_core"
    pattern = re.compile(r"^\s*(from|import)\s+ray\b", re.M)
    assert [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))] == []
