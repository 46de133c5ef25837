"""``cil sweep``: a grid of ``cil train`` runs, results appended to a JSON Lines file, resumable.

A sweep is a base run configuration (the keys of :class:`~cil_core.app.config.RunConfig`, the schema
of ``cil train --config``) and a grid of axes; every combination of axis values is one *point*,
one training run. The grid file is TOML or JSON (recognised by content)::

    [sweep]                          # optional: the sweep's own settings
    results = "runs/grid.jsonl"      # default: the grid file with the suffix .jsonl
    threads = 1                      # torch and numba threads per point (local and remote alike)
    resources = { "board-{backend_options.seed}" = 1 }   # per task; templates of the point's keys

    [base]                           # any cil train config key (docs/config.md), and data_fraction
    backend = "analog-mismatch"
    steps = 200

    [algorithm_options.mh]           # optional: options of the points whose algorithm is mh
    chains = 8
    [algorithm_options.cil-spl]      # ... and of those whose algorithm is cil-spl
    lr = 0.01
    [backend_options.analog-mismatch]  # likewise per backend
    noise_seed = 7

    [grid]                           # axes: a key of [base] (or OPTIONS_TABLE.NAME) = [values]
    "backend_options.seed" = [0, 1, 2]        # the chip
    "backend_options.strength" = [0.5, 1.0]
    seed = [0, 1]
    data_fraction = [0.05, 1.0]               # stratified share of the training set
    algorithm = ["mh", "cil-spl"]

A point's options are [base]'s, then the table ``[algorithm_options.NAME]`` of its algorithm
(``[backend_options.NAME]`` of its backend) merged over them, then its axis values. Every point is
checked at the door with the same rules as ``cil train`` (unknown keys and options named, with the
closest match; an option its algorithm does not take names the point, the table, the algorithm
and the option); a per-name table that applies to no point is an error. The ``[sweep] resources``
templates are formatted with each point's keys (``{seed}``, ``{algorithm}``, ``{backend}``,
``{backend_options.NAME}``, ``{data_fraction}``, ...; a key the point lacks is an error) into
:attr:`Point.resources`, which runners that place tasks honour (Ray: per task) and the local
runner ignores. Its **key** is made of its axis values, ordered by axis name
(``algorithm=mh,backend_options.seed=0,...``), so it does not depend on the order of the axes in
the file. Each finished point is appended to the results file as one JSON line (one ``write`` of
the whole line, flushed and synced): ``key``, ``options`` (its axis values), ``metrics``,
``seconds``, ``host``, ``pid``, ``runner``, ``worker``, ``threads`` (torch's and numba's threads
per point), ``base`` (a fingerprint of the base config, per-name tables included) and ``finished``. Running the sweep again skips the keys
already in the file (a point that failed is not written, so it runs again); a corrupt or truncated line (an interrupted
write) is reported and ignored. A line whose key belongs to this grid but whose ``base``
differs was computed with another base config: that is an error (use another results file). So is
one computed with another ``threads``: a point's float results depend on the thread count (a
matrix product splits its sums differently), so a table must not mix counts (records written
before ``threads`` was recorded are taken as they are).
One sweep at a time writes a results file: it holds ``fcntl.flock`` on ``RESULTS.lock`` (which
names the holder: pid, host, user, since) from start to end, and a second sweep on the same file
fails at once with a :class:`~cil_core.errors.LockError` naming the first. The lock dies with its
process; reading the file (``--list``, :func:`read_results`) takes no lock. (flock is local to a
machine: two hosts writing one results file on a network file system are not kept apart.)

**Runners** run the points: a runner is registered by a plugin under the registry kind
``runners`` (hook :func:`~cil_core.plugin.hookspecs.cil_register_runners`); ``factory(**options)``
returns an object with ``run(fn, payloads, threads)`` yielding ``(index, outcome)`` pairs as
points finish (``outcome`` is what :func:`execute` returns, computed wherever the runner likes)
and ``close()``; a ``run`` that also takes the keywords ``resources`` (one dict per payload) and
``keys`` (the points' keys, for messages) gets them. The core registers ``local``
(:class:`LocalRunner`: in this process, or ``jobs`` worker processes); the ``cil-ray`` plugin
registers ``ray`` (one Ray task per point).
The core never imports Ray.

:func:`run_sweep` is the engine behind the grid file, and takes any picklable point function:
the re-creation benchmarks use it with their own.
"""


from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...errors import OptionError
from .grid import Point, SweepError, load_grid
from .points import train_point
from .results import ResultsFile
from .runners import LocalRunner, make_runner


# ----------------------------------------------------------------------------- the engine
@dataclass
class SweepResult:
    """What :func:`run_sweep` did: every point's record (from the file or run now), in grid order."""

    records: dict[str, dict[str, Any]]
    skipped: list[str]
    ran: list[str]
    failed: dict[str, dict[str, Any]]
    notes: list[str]
    results: Path


def run_sweep(points: Sequence[Point], fn: Callable[[Any], Any] = train_point, *, results: str | Path,
              runner: str | Any = "local", runner_options: Mapping[str, Any] | None = None, threads: int = 1,
              base: str = "", progress: bool = False, report: Callable[[str], None] | None = None,
              on_result: Callable[[Point, dict[str, Any]], None] | None = None, raise_on_failure: bool = True,
              fresh: bool = False) -> SweepResult:
    """Run every point whose key is not in ``results`` yet with ``runner`` and append one record
    per finished point. ``fn(point.payload)`` (picklable, importable by the workers) returns the
    point's metrics (any JSON-able value). ``base`` is a fingerprint of what all points share:
    a record of one of these keys with another ``base`` is an error. Failed points are not
    written; with ``raise_on_failure`` a :class:`SweepError` names them at the end. ``fresh``
    empties the results file first (under the lock) instead of resuming it.

    The sweep holds ``RESULTS.lock`` (:meth:`ResultsFile.lock`) from start to end: a second sweep
    on the same results file fails at once with a :class:`~cil_core.errors.LockError`. Each
    point's ``resources`` go to the runner as ``run(..., resources=[...])`` when its ``run`` takes
    that keyword (a runner that does not is told nothing and a warning says so), and the points'
    keys as ``keys=[...]`` likewise (for its messages)."""
    report = report or (lambda msg: print(f"cil sweep: warning: {msg}", file=sys.stderr))
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise OptionError(f"sweep: two points have the key {dup!r}")
    by_key = {p.key: p for p in points}
    rf = ResultsFile(results)
    with rf.lock():
        if fresh and rf.path.exists():
            rf.path.unlink()
        return _run_locked(points, keys, by_key, rf, fn, runner, runner_options, threads, base, progress, report,
                           on_result, raise_on_failure)


def _accepts(method: Callable[..., Any], name: str) -> bool:
    """Whether ``method`` takes the keyword ``name`` (or any keyword)."""
    import inspect

    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in params)


def _run_locked(points: Sequence[Point], keys: list[str], by_key: dict[str, Point], rf: ResultsFile,
                fn: Callable[[Any], Any], runner: str | Any, runner_options: Mapping[str, Any] | None, threads: int,
                base: str, progress: bool, report: Callable[[str], None],
                on_result: Callable[[Point, dict[str, Any]], None] | None, raise_on_failure: bool) -> SweepResult:
    old, notes = rf.read()
    for n in notes:
        report(n)
    done: dict[str, dict[str, Any]] = {}
    stray = 0
    for rec in old:
        if rec["key"] not in by_key:
            stray += 1
            continue
        if rec.get("base", "") != base:
            raise OptionError(f"results file {rf.path} holds point {rec['key']!r} computed with another base config "
                              f"(fingerprint {rec.get('base')!r}, this sweep's {base!r}); give another results file "
                              "(--results) or remove it to start over")
        if rec.get("threads", threads) != threads:
            raise OptionError(f"results file {rf.path} holds point {rec['key']!r} computed with {rec['threads']} "
                              f"thread(s) per point, this sweep runs {threads}: float results depend on the thread "
                              f"count; resume with threads = {rec['threads']}, or give another results file "
                              "(--results)")
        done[rec["key"]] = rec
    if stray:
        notes.append(f"results file {rf.path}: {stray} record(s) of points not in this grid "
                     "(kept in the file; this sweep neither reruns nor returns them)")
        report(notes[-1])
    todo = [p for p in points if p.key not in done]
    skipped = [k for k in keys if k in done]
    if isinstance(runner, str):
        rname = runner
        # nothing left to run: no runner is built (a Ray runner would connect to its cluster for nothing)
        if todo:
            runner_obj = make_runner(runner, **dict(runner_options or {}))
        else:
            from ...options import validate
            from ...plugin.registry import get_manager

            # a misspelt runner or option is still named
            validate(get_manager().entry("runners", runner).value, dict(runner_options or {}), f"runner '{runner}'")
            runner_obj = LocalRunner()
    else:
        rname, runner_obj = getattr(runner, "name", type(runner).__name__), runner
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(points), initial=len(skipped), desc=f"sweep ({rname})", unit="point")
    ran: list[str] = []
    failed: dict[str, dict[str, Any]] = {}
    try:
        if todo:
            extra: dict[str, Any] = {}
            needs = [dict(p.resources) for p in todo]
            if any(needs):
                if _accepts(runner_obj.run, "resources"):
                    extra["resources"] = needs
                else:
                    notes.append(f"runner {rname!r} takes no per-point resources; the points' resources are ignored")
                    report(notes[-1])
            if _accepts(runner_obj.run, "keys"):
                extra["keys"] = [p.key for p in todo]
            for i, out in runner_obj.run(fn, [p.payload for p in todo], threads, **extra):
                p = todo[i]
                if not out.get("ok"):
                    failed[p.key] = out
                    report(f"point {p.key} failed on {out.get('host')} ({out.get('worker')}): {out.get('error')}")
                else:
                    rec = {"key": p.key, "options": p.options, "metrics": out["metrics"],
                           "seconds": round(float(out["seconds"]), 4), "host": out.get("host"), "pid": out.get("pid"),
                           "runner": rname, "worker": out.get("worker"), "threads": threads, "base": base,
                           "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                    rf.append(rec)
                    done[p.key] = rec
                    ran.append(p.key)
                    if on_result is not None:
                        on_result(p, rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"failed {len(failed)}" if failed else "", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        runner_obj.close()
    result = SweepResult({k: done[k] for k in keys if k in done}, skipped, ran, failed, notes, rf.path)
    if failed and raise_on_failure:
        first_key, first = next(iter(failed.items()))
        raise SweepError(f"{len(failed)} of {len(todo)} point(s) failed (not written; a rerun tries them again); "
                         f"first: {first_key}: {first.get('error')}"
                         + (f"\n{first['traceback']}" if first.get("traceback") else ""))
    return result


def run_grid(path: str | Path, *, results: str | Path | None = None, runner: str = "local",
             runner_options: Mapping[str, Any] | None = None, progress: bool = False,
             report: Callable[[str], None] | None = None, raise_on_failure: bool = True) -> SweepResult:
    """Load a grid file and run it (see :func:`run_sweep`)."""
    g = load_grid(path, results=results)
    return run_sweep(g.points, train_point, results=g.results, runner=runner, runner_options=runner_options,
                     threads=g.threads, base=g.base_fingerprint, progress=progress, report=report,
                     raise_on_failure=raise_on_failure)
