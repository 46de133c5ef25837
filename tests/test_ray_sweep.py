"""``cil sweep --runner ray`` (cil-ray's ``ray`` runner) on one local Ray cluster (the fixture of
tests/test_ray.py: 2 CPUs, 4 units of the custom resource ``chip``).

The Ray runner must give exactly the local runner's results for the same grid, resume a results
file whatever runner wrote it, and fail at once when a task asks for a resource no node offers.
Skipped when Ray or cil-ray is not installed."""

from __future__ import annotations

import json
import time

import pytest

ray = pytest.importorskip("ray")
cil_ray = pytest.importorskip("cil_ray")

from cil_core.app import cli  # noqa: E402
from cil_core.app.sweep import SweepError, load_grid, run_grid, run_sweep, train_point  # noqa: E402
from cil_ray.errors import PlacementError  # noqa: E402
import test_sweep  # noqa: E402
from test_ray import cluster  # noqa: E402,F401  - the module's local cluster

GRID = test_sweep.GRID + "data_fraction = [0.5, 1.0]\n"  # the local tests' grid, one axis more


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_runner_gives_the_local_runner_results_and_resumes_its_file(cluster, tmp_path):  # noqa: F811
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    local = run_grid(path, results=tmp_path / "local.jsonl")
    t0 = time.perf_counter()
    remote = run_grid(path, results=tmp_path / "ray.jsonl", runner="ray", runner_options={"resources": {"chip": 1}})
    wall = time.perf_counter() - t0
    assert len(local.records) == len(remote.records) == 8
    assert {k: r["metrics"] for k, r in remote.records.items()} == {k: r["metrics"] for k, r in local.records.items()}
    recs = _lines(tmp_path / "ray.jsonl")  # every line parses and says where it ran
    assert len(recs) == 8 and {r["runner"] for r in recs} == {"ray"}
    assert all(r["worker"].startswith("ray node ") and r["seconds"] > 0 for r in recs)
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in recs}) > 1
    # resume: a file begun by the local runner is finished by the Ray runner, only the missing points run
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(line + "\n" for line in (tmp_path / "local.jsonl").read_text().splitlines()[:5]))
    res = run_grid(path, results=mixed, runner="ray", runner_options={"resources": {"chip": 1}})
    assert len(res.skipped) == 5 and len(res.ran) == 3
    assert [r["runner"] for r in _lines(mixed)] == ["local"] * 5 + ["ray"] * 3
    assert {k: r["metrics"] for k, r in res.records.items()} == {k: r["metrics"] for k, r in local.records.items()}
    assert wall < 60


def test_a_point_that_fails_on_a_worker_is_reported_not_written(cluster, tmp_path):  # noqa: F811
    path = tmp_path / "grid.toml"
    path.write_text(GRID.split("[grid]")[0] + "[grid]\ndata = ['breast-cancer', 'missing.pt']\n")
    g = load_grid(path)
    notes: list[str] = []
    with pytest.raises(SweepError, match=r"1 of 2 point\(s\) failed.*data=missing.pt: OptionError: data: missing.pt "
                                         r"does not exist"):
        run_sweep(g.points, train_point, results=g.results, runner="ray", base=g.base_fingerprint,
                  report=notes.append)
    assert [r["key"] for r in _lines(g.results)] == ["data=breast-cancer"]
    assert any("point data=missing.pt failed on" in n and "ray node" in n for n in notes)


def test_a_resource_nobody_offers_fails_at_once(cluster, tmp_path, capsys):  # noqa: F811
    from cil_ray.sweep import RayRunner

    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match=r"each point's task needs resources speck=1, which no node .* offers "
                                             r"\(custom resources offered: .*chip"):
        RayRunner(resources={"speck": 1})
    with pytest.raises(PlacementError, match="CPU=8"):
        RayRunner(num_cpus=8)
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    assert cli.main(["sweep", str(path), "--runner", "ray", "--runner-opt", 'resources={"speck": 1}',
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cil sweep: error: ") and "speck=1" in err
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "grid.jsonl").exists()
    assert ray.is_initialized()  # the runner leaves a cluster it did not start alone


def test_a_ray_backend_in_a_grid_is_checked_at_the_door(tmp_path):
    from cil_core.errors import OptionError

    path = tmp_path / "grid.toml"
    text = GRID.replace("[base]", "[base]\nbackend = 'ray:ideal'")
    path.write_text(text.replace("data_fraction = [0.5, 1.0]", "'backend_options.workers' = [1, 'two']"))
    with pytest.raises(OptionError, match=r"point .*backend_options.workers=two.*option 'workers' of backend "
                                          r"'ray:ideal' must be"):
        load_grid(path)
    path.write_text(text.replace("data_fraction = [0.5, 1.0]", "'backend_options.workers' = [1]"))
    assert len(load_grid(path).points) == 4  # checked without building a backend or touching a cluster


def test_each_point_asks_for_its_own_resources(cluster, tmp_path):  # noqa: F811
    from cil_core.app.sweep import Point

    def assigned(payload):  # runs in the task: what Ray gave it (pickled by value, nothing to import)
        import ray as r

        return {k: v for k, v in r.get_runtime_context().get_assigned_resources().items() if k != "CPU"}

    path = tmp_path / "grid.toml"
    path.write_text(test_sweep.GRID + "\n[sweep]\nresources = { 'board-{seed}' = 1, chip = 1 }\n")
    g = load_grid(path)
    assert [p.resources for p in g.points][:2] == [{"board-0": 1.0, "chip": 1.0}] * 2
    pts = [Point(p.key, p.options, None, {"chip": 2} if "seed=0" in p.key else {}) for p in g.points]
    res = run_sweep(pts, assigned, results=tmp_path / "r.jsonl", runner="ray",
                    runner_options={"resources": {"board-A": 1}})
    # the runner's resources for every task, a point's own added to its task only
    assert {k: r["metrics"] for k, r in res.records.items()} == {
        p.key: ({"board-A": 1.0, "chip": 2.0} if "seed=0" in p.key else {"board-A": 1.0}) for p in pts}
    # the grid's templates: no node offers board-0: the point is named at once, nothing runs
    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match=r"point algorithm_options.chains=2,seed=0 needs resources "
                                             r"board-0=1, which no node .* offers"):
        run_grid(path, runner="ray")
    assert time.perf_counter() - t0 < 10
    assert not g.results.exists() and not g.results.with_name(g.results.name + ".lock").exists()
