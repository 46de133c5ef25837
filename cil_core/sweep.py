"""``cil sweep``: a grid of ``cil train`` runs, results appended to a JSON Lines file, resumable.

A sweep is a base run configuration (the keys of :class:`~cil_core.config.RunConfig`, the schema
of ``cil train --config``) and a grid of axes; every combination of axis values is one *point*,
one training run. The grid file is TOML or JSON (recognised by content)::

    [sweep]                          # optional: the sweep's own settings
    results = "runs/grid.jsonl"      # default: the grid file with the suffix .jsonl
    threads = 1                      # torch threads per point (local and remote alike)
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
``seconds``, ``host``, ``pid``, ``runner``, ``worker``, ``base`` (a fingerprint of the base
config, per-name tables included) and ``finished``. Running the sweep again skips the keys
already in the file (a point that failed is not written, so it runs again); a corrupt or truncated line (an interrupted
write) is reported and ignored. A line whose key belongs to this grid but whose ``base``
differs was computed with another base config: that is an error (use another results file).
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

import contextlib
import datetime
import difflib
import getpass
import hashlib
import itertools
import json
import os
import socket
import string
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .errors import CilError, LockError, OptionError

#: the keys a sweep point has besides RunConfig's
EXTRA_KEYS = ("data_fraction",)
#: RunConfig keys that would make every point write the same file, or ask something else of the run
REFUSED_KEYS = {"checkpoint": "every point would write the same checkpoint",
                "resume": "a sweep point starts from scratch",
                "force": "a sweep point writes no checkpoint",
                "out": "the sweep writes its own results file ([sweep] results)",
                "metrics": "the sweep writes its own results file ([sweep] results)",
                "export": "every point would write the same file",
                "progress": "the sweep shows one progress bar for all points"}
#: option tables of RunConfig whose entries an axis may name as TABLE.NAME
OPTION_TABLES = ("backend_options", "algorithm_options", "model_options")
#: keys of the [sweep] table
SWEEP_KEYS = ("results", "threads", "resources")
#: top-level tables of per-name options: table -> the config key whose value picks the entry
#: ([algorithm_options.mh] applies to the points whose algorithm is mh)
NAMED_TABLES = {"algorithm_options": "algorithm", "backend_options": "backend"}
#: keys of the base config that change where or how patiently a point runs, not its result
#: (left out of the base fingerprint, so that a sweep can be resumed with other values)
PLACEMENT_KEYS = ("retries", "timeout")


class SweepError(CilError, RuntimeError):
    """Points of a sweep failed; the message names them and their errors (finished points are in the
    results file, a rerun tries the failed ones again)."""


# ----------------------------------------------------------------------------- points
@dataclass
class Point:
    """One grid point: its key, its axis values, what the point function receives and the
    resources its task asks a runner for (e.g. ``{"board-SN1": 1}``; runners that place tasks
    honour them, the local runner ignores them)."""

    key: str
    options: dict[str, Any]
    payload: Any
    resources: dict[str, float] = field(default_factory=dict)


def point_key(options: Mapping[str, Any]) -> str:
    """The stable key of a point: ``axis=value`` pairs ordered by axis name (strings as they are,
    other values as JSON)."""
    parts = []
    for name in sorted(options):
        v = options[name]
        parts.append(f"{name}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}")
    return ",".join(parts)


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able object (its canonical JSON)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Grid:
    """A parsed, validated grid file."""

    base: dict[str, Any]
    axes: dict[str, list[Any]]
    results: Path
    threads: int = 1
    source: str = "grid"
    points: list[Point] = field(default_factory=list)
    #: per-name option tables: {"algorithm_options": {"mh": {...}}, "backend_options": {...}}
    named: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: [sweep] resources: resource name template -> amount per task
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def base_fingerprint(self) -> str:
        base = {k: v for k, v in self.base.items() if k not in PLACEMENT_KEYS}
        named = {t: v for t, v in self.named.items() if v}
        # without per-name tables, the fingerprint of [base] alone (results files written before them resume)
        return fingerprint({"base": base, "named": named} if named else base)


def _check_key(key: str, where: str) -> None:
    """An axis or base key: a RunConfig key (checked by RunConfig itself), TABLE.NAME or an extra key."""
    from .config import RunConfig

    if key in REFUSED_KEYS:
        raise OptionError(f"{where}: key {key!r} cannot be used in a sweep: {REFUSED_KEYS[key]}")
    if key in EXTRA_KEYS:
        return
    close = difflib.get_close_matches(key, EXTRA_KEYS, n=1, cutoff=0.8)
    if close and key not in RunConfig.keys():
        raise OptionError(f"{where}: unknown key {key!r}; did you mean {close[0]!r}?")
    if "." in key:
        table, _, name = key.partition(".")
        if table not in OPTION_TABLES or not name:
            raise OptionError(f"{where}: unknown key {key!r}; a dotted key names an entry of one of "
                              f"{', '.join(OPTION_TABLES)} (e.g. 'backend_options.seed')")
        return
    RunConfig.from_dict({key: RunConfig().as_dict()[key]} if key in RunConfig.keys() else {key: None}, where)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    if "." in key:
        table, _, name = key.partition(".")
        raw[table] = {**raw.get(table, {}), name: value}
    elif key in OPTION_TABLES and isinstance(value, dict):
        raw[key] = {**raw.get(key, {}), **value}
    else:
        raw[key] = value


def load_grid(path: str | Path, *, results: str | Path | None = None) -> Grid:
    """Read and validate a grid file (see the module doc); every point is checked like a ``cil
    train`` config, its backend and algorithm options against their declarations."""
    from .config import read_config_file

    path = Path(path)
    raw = read_config_file(path)
    src = f"grid file {path}"
    tables = ("base", "grid", "sweep", *NAMED_TABLES)
    unknown = [k for k in raw if k not in tables]
    if unknown:
        raise OptionError(f"{src}: unknown table {unknown[0]!r} (a grid file has the tables [base], [grid] and "
                          "optionally [sweep], [algorithm_options.NAME] and [backend_options.NAME])")
    for table in tables:
        if not isinstance(raw.get(table, {}), dict):
            raise OptionError(f"{src}: [{table}] must be a table of keys, not {type(raw[table]).__name__}")
    base, grid, sweep = dict(raw.get("base", {})), dict(raw.get("grid", {})), dict(raw.get("sweep", {}))
    named: dict[str, dict[str, dict[str, Any]]] = {}
    for table, picker in NAMED_TABLES.items():
        for name, opts in raw.get(table, {}).items():
            if not isinstance(opts, dict):
                raise OptionError(f"{src}: [{table}] holds one table per {picker} (e.g. [{table}.NAME] with its "
                                  f"options), but {name!r} is {opts!r}; options of every point belong in [base] "
                                  f"{table}")
            named.setdefault(table, {})[name] = dict(opts)
    for key in sweep:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(key, SWEEP_KEYS, n=1)
            raise OptionError(f"{src} [sweep]: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                              + f" (valid keys: {', '.join(SWEEP_KEYS)})")
    threads = sweep.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise OptionError(f"{src} [sweep]: threads must be a whole number >= 1, got {threads!r}")
    if "results" in sweep and not isinstance(sweep["results"], str):
        raise OptionError(f"{src} [sweep]: results must be a file name, got {sweep['results']!r}")
    resources = sweep.get("resources", {})
    if not isinstance(resources, dict) or not all(
            isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in resources.items()):
        raise OptionError(f"{src} [sweep]: resources must map resource names (templates such as "
                          f"'board-{{backend_options.serial}}') to positive amounts, got {resources!r}")
    for template in resources:
        _template_fields(template, f"{src} [sweep] resources")
    for key in base:
        _check_key(key, f"{src} [base]")
    if not grid:
        raise OptionError(f"{src}: [grid] is missing or empty; give at least one axis, e.g. seed = [0, 1, 2] "
                          "(a single run is cil train --config)")
    flat: dict[str, Any] = {}
    for key, values in grid.items():  # TOML's unquoted dotted keys (backend_options.seed = [...]) nest
        if key in OPTION_TABLES and isinstance(values, dict):
            flat.update({f"{key}.{name}": v for name, v in values.items()})
        else:
            flat[key] = values
    axes: dict[str, list[Any]] = {}
    for key, values in flat.items():
        _check_key(key, f"{src} [grid]")
        if not isinstance(values, list):
            raise OptionError(f"{src} [grid]: axis {key!r} must be a list of values, got {values!r} (a fixed value "
                              "belongs in [base])")
        if not values:
            raise OptionError(f"{src} [grid]: axis {key!r} is empty; give at least one value")
        seen: list[str] = []
        for v in values:
            canon = json.dumps(v, sort_keys=True, default=str)
            if canon in seen:
                raise OptionError(f"{src} [grid]: axis {key!r} lists {v!r} twice")
            seen.append(canon)
        axes[key] = list(values)
    if results is None:
        res = Path(sweep["results"]) if "results" in sweep else path.with_suffix(".jsonl")
        if not res.is_absolute() and "results" in sweep:
            res = path.parent / res
    else:
        res = Path(results)
    if res.resolve() == path.resolve():
        raise OptionError(f"{src}: the results file would be the grid file itself; name another ([sweep] results "
                          "or --results)")
    g = Grid(base, axes, res, threads, src, named=named, resources={k: float(v) for k, v in resources.items()})
    g.points = [_make_point(g, dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    for table, picker in NAMED_TABLES.items():  # a table no point uses is a mistake (a misspelt name?)
        used = sorted({str(p.payload["config"].get(picker, getattr(_defaults(), picker))) for p in g.points})
        for name in named.get(table, {}):
            if name not in used:
                close = difflib.get_close_matches(name, used, n=1)
                raise OptionError(f"{src}: [{table}.{name}] applies to no point: no point has {picker} {name!r} "
                                  f"(the points' {picker}s: {', '.join(used)})"
                                  + (f"; did you mean {close[0]!r}?" if close else ""))
    return g


def _defaults() -> Any:
    from .config import RunConfig

    return RunConfig()


def _template_fields(template: str, where: str) -> list[str]:
    """The field names of a resource template ('board-{backend_options.serial}'), checked."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise OptionError(f"{where}: template {template!r} is malformed ({exc}); write a literal brace as {{{{ or "
                          "}}") from None
    for f in fields:
        if not f or f.isdigit() or "[" in f:
            raise OptionError(f"{where}: template {template!r}: each {{...}} names a key of the point, e.g. "
                              f"{{backend_options.serial}} or {{seed}}, not {{{f}}}")
    return fields


def _point_values(raw: Mapping[str, Any], fraction: Any) -> dict[str, Any]:
    """The values a resource template may name: the point's config keys, TABLE.NAME for the
    entries of its option tables, and data_fraction."""
    vals: dict[str, Any] = {k: v for k, v in raw.items() if k not in OPTION_TABLES}
    for table in OPTION_TABLES:
        for name, v in (raw.get(table) or {}).items():
            vals[f"{table}.{name}"] = v
    if fraction is not None:
        vals["data_fraction"] = fraction
    return vals


def point_resources(templates: Mapping[str, float], values: Mapping[str, Any], where: str) -> dict[str, float]:
    """Format each resource template with the point's values (see :func:`_point_values`); a field
    the point lacks is an :class:`OptionError` naming it and the closest key."""
    fmt = string.Formatter()
    out: dict[str, float] = {}
    for template, amount in templates.items():
        parts = []
        for literal, f, spec, conv in fmt.parse(template):
            parts.append(literal)
            if f is None:
                continue
            if f not in values:
                close = difflib.get_close_matches(f, list(values), n=1)
                raise OptionError(f"{where}: resource template {template!r} names {f!r}, which this point does not "
                                  f"have" + (f"; did you mean {close[0]!r}?" if close else "")
                                  + f" (the point's keys: {', '.join(sorted(values))})")
            v = values[f]
            parts.append(format(fmt.convert_field(v, conv) if conv else v, spec or ""))
        name = "".join(parts)
        if name in out:
            raise OptionError(f"{where}: two resource templates give the same resource {name!r}")
        out[name] = float(amount)
    return out


def _make_point(grid: Grid, options: dict[str, Any]) -> Point:
    from .config import RunConfig

    key = point_key(options)
    base = json.loads(json.dumps(grid.base))  # plain copies
    raw: dict[str, Any] = {}
    for k, v in [*base.items(), *options.items()]:
        _set(raw, k, v)
    # per-name tables: over [base]'s table, under the axes (an axis value is what varies)
    applied = []
    for table, picker in NAMED_TABLES.items():
        name = str(raw.get(picker, getattr(_defaults(), picker)))
        extra = grid.named.get(table, {}).get(name)
        if extra is not None:
            applied.append(f"[{table}.{name}]")
            base[table] = {**base.get(table, {}), **json.loads(json.dumps(extra))}
    if applied:
        raw = {}
        for k, v in [*base.items(), *options.items()]:
            _set(raw, k, v)
    fraction = raw.pop("data_fraction", None)
    where = f"{grid.source}, point {key}" + (f" (with {' and '.join(applied)})" if applied else "")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction <= 1):
        raise OptionError(f"{where}: data_fraction must lie in (0, 1], got {fraction!r}")
    cfg = RunConfig.from_dict(raw, where)
    check_config(cfg, where)
    resources = point_resources(grid.resources, _point_values({**cfg.as_dict(), **raw}, fraction), where)
    return Point(key, options, {"config": raw, "data_fraction": fraction}, resources)


def check_config(cfg: Any, where: str) -> None:
    """The backend, algorithm and their options exist (checked against their declarations, without
    building anything)."""
    from .options import validate
    from .plugin.manager import get_manager

    reg = get_manager()
    try:
        name = cfg.backend
        if ":" in name and name not in reg.names("backends"):
            from . import _positional_names

            scheme, inner = name.split(":", 1)  # a wrapper scheme (ray:...): built as factory(inner, **options)
            factory = reg.entry("backends", scheme + ":").value
            validate(factory, dict(zip(_positional_names(factory), [inner])) | cfg.backend_options, f"backend '{name}'")
        else:
            validate(reg.entry("backends", name).value, cfg.backend_options, f"backend '{name}'")
        validate(reg.entry("algorithms", cfg.algorithm).value, cfg.algorithm_options,
                 f"algorithm '{cfg.algorithm}'")
    except CilError as exc:
        raise type(exc)(f"{where}: {exc}") from exc


# ----------------------------------------------------------------------------- running one point
def execute(fn: Callable[[Any], Any], payload: Any, threads: int = 1) -> dict[str, Any]:
    """Run ``fn(payload)`` with ``threads`` torch threads; never raises. Returns the *outcome*:
    ``{"ok": True, "metrics": ...}`` or ``{"ok": False, "error": ..., "error_type": ..., "traceback": ...}``,
    with ``seconds``, ``host`` and ``pid``. Runners call this wherever they run a point."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out: dict[str, Any]
    try:
        out = {"ok": True, "metrics": fn(payload)}
    except BaseException as exc:  # noqa: BLE001 - reported per point, the sweep goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
               "cil_error": isinstance(exc, CilError),
               "traceback": "" if isinstance(exc, CilError) else traceback.format_exc(limit=8)}
    finally:
        torch.set_num_threads(before)
    out.update(seconds=time.perf_counter() - t0, host=socket.gethostname(), pid=os.getpid())
    return out


def subset_fraction(data: Any, fraction: float, seed: int) -> Any:
    """A stratified share of ``data`` (at least one sample per class), drawn with ``seed``."""
    import torch

    if fraction >= 1.0:
        return data
    g = torch.Generator().manual_seed(1000 + seed)
    idx = []
    for c in torch.unique(data.y):
        members = (data.y == c).nonzero().flatten()
        k = max(1, int(round(fraction * len(members))))
        idx.append(members[torch.randperm(len(members), generator=g)[:k]])
    return data.subset(torch.cat(idx).sort().values)


def train_point(payload: dict[str, Any]) -> dict[str, Any]:
    """The point function of a grid file: one ``cil train`` run (without its output files),
    returning the chip's test metrics and a few counts. Deterministic for a deterministic backend."""
    import torch

    from . import Trainer, make_backend
    from .cli import _build_network, _load_data
    from .config import RunConfig
    from .data import as_data

    cfg = RunConfig.from_dict(payload["config"], "sweep point")
    torch.manual_seed(cfg.seed)
    train, test, has_test = _load_data(cfg)
    train = as_data(train)
    if payload.get("data_fraction") is not None:
        train = subset_fraction(train, float(payload["data_fraction"]), cfg.seed)
    val = None
    if cfg.validation_split:
        n_val = max(1, int(round(cfg.validation_split * len(train))))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    net = _build_network(cfg, train)
    backend = make_backend(cfg.backend, **cfg.backend_options)
    try:
        trainer = Trainer(net, backend, cfg.algorithm, seed=cfg.seed, readout=cfg.readout, retries=cfg.retries,
                          timeout=cfg.timeout, device=cfg.device, **cfg.algorithm_options)
        hist = trainer.fit(train, epochs=cfg.epochs, steps=cfg.steps,
                           batch_size=-1 if cfg.batch_size is None else cfg.batch_size, progress=False)
        ev = trainer.evaluate(test)
        out = {"accuracy": ev["accuracy"], "loss": ev["loss"], "n": ev["n"],
               "split": "test" if has_test else "training", "n_train": len(train), "steps": len(hist),
               "final_loss": hist.records[-1]["loss"] if hist.records else None,
               "chip_calls": trainer.session.stats.calls}
        if val is not None:
            v = trainer.evaluate(val)
            out.update(validation_accuracy=v["accuracy"], validation_loss=v["loss"])
        return out
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


# ----------------------------------------------------------------------------- runners
class LocalRunner:
    """Runs sweep points on this machine, one after the other or in worker processes.

    Options: ``jobs`` (worker processes; 1: in this process, one point after the other). A
    point's resources are not placed here (the grid's templates are still checked at the door)."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise OptionError(f"runner 'local': jobs must be a whole number >= 1, got {jobs!r}")
        self.jobs = jobs

    def run(self, fn: Callable[[Any], Any], payloads: Sequence[Any], threads: int = 1,
            resources: Sequence[Mapping[str, float]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        del resources  # one machine: nothing to place
        if self.jobs == 1 or len(payloads) <= 1:
            for i, p in enumerate(payloads):
                yield i, {**execute(fn, p, threads), "worker": "main process"}
            return
        import multiprocessing

        # spawn: a forked child of a process that has run torch's thread pools can hang
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(payloads)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(execute, fn, p, threads): i for i, p in enumerate(payloads)}
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    try:
                        out = fut.result()
                    except Exception as exc:  # the worker process died
                        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
                               "seconds": 0.0, "host": socket.gethostname(), "pid": None}
                    yield i, {**out, "worker": f"process {out.get('pid')}"}
            finally:
                for fut in futures:
                    fut.cancel()

    def close(self) -> None:
        pass


def make_runner(name: str, **options: Any) -> Any:
    """Build the runner registered as ``name`` (``local``; ``ray`` with cil-ray installed), its
    options checked against its declaration."""
    from .options import validate
    from .plugin.manager import get_manager

    factory = get_manager().entry("runners", name).value
    validate(factory, options, f"runner '{name}'")
    try:
        return factory(**options)
    except CilError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(f"runner '{name}': {exc}") from exc


# ----------------------------------------------------------------------------- the results file
class ResultsFile:
    """The JSON Lines file of a sweep: one record per finished point, appended one whole line at
    a time (a single ``write`` on an ``O_APPEND`` descriptor, then ``fsync``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The records in the file, and a note per line that is not one (ignored)."""
        if not self.path.exists():
            return [], []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        records, notes = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            last = n == len(lines) or (n == len(lines) - 1 and complete)
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                    raise ValueError("not a sweep record (no 'key')")
            except ValueError as exc:
                what = ("its last line is truncated (an interrupted write?)" if last and not complete
                        else f"line {n} is not a sweep record ({str(exc)[:80]})")
                notes.append(f"results file {self.path}: {what}; ignored, that point runs again")
                continue
            records.append(rec)
        return records, notes

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = b"\n" + line  # never glue a record to a truncated line
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the results file for one writer: ``fcntl.flock`` on ``RESULTS.lock``, which says who
        holds it (pid, host, user, since). A second holder fails at once with a :class:`LockError`
        naming the first; the lock goes with its process (a killed sweep leaves no stale lock, only
        possibly the side file, which the next sweep takes over). The side file is removed on release."""
        import fcntl

        lp = self.lock_path
        lp.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 4096).decode(errors="replace").strip()
                finally:
                    os.close(fd)
                try:
                    h = json.loads(holder)
                    who = (f"pid {h.get('pid')} on {h.get('host')} (user {h.get('user')}, since "
                           f"{h.get('since')})")
                except ValueError:
                    who = "a process that has not written its name yet"
                raise LockError(f"results file {self.path} is being written by another sweep: {who}; wait for it "
                                f"to end, or give another results file (--results). The lock ({lp}) is released "
                                "when that process ends") from None
            try:  # the file we locked may have been removed by its previous holder meanwhile: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(lp))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            try:
                user = getpass.getuser()
            except Exception:  # pragma: no cover - no user name (a container without passwd entry)
                user = str(os.getuid())
            info = {"pid": os.getpid(), "host": socket.gethostname(), "user": user,
                    "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "results": str(self.path)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            yield lp
        finally:
            try:
                os.unlink(lp)  # while holding it: a waiter that opened it before re-checks and locks a new one
            except FileNotFoundError:  # pragma: no cover
                pass
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


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
        done[rec["key"]] = rec
    if stray:
        notes.append(f"results file {rf.path}: {stray} record(s) of points not in this grid (kept, not used)")
        report(notes[-1])
    todo = [p for p in points if p.key not in done]
    skipped = [k for k in keys if k in done]
    if isinstance(runner, str):
        rname = runner
        # nothing left to run: no runner is built (a Ray runner would connect to its cluster for nothing)
        if todo:
            runner_obj = make_runner(runner, **dict(runner_options or {}))
        else:
            from .options import validate
            from .plugin.manager import get_manager

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
                           "runner": rname, "worker": out.get("worker"), "base": base,
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


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a results file by key (the last one of a key wins); bad lines are skipped."""
    records, _ = ResultsFile(path).read()
    return {r["key"]: r for r in records}


__all__ = ["Point", "Grid", "LocalRunner", "ResultsFile", "SweepResult", "SweepError", "load_grid", "run_grid",
           "run_sweep", "execute", "train_point", "make_runner", "read_results", "point_key", "fingerprint",
           "subset_fraction"]
