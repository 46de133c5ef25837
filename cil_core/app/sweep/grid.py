"""A sweep's grid: the grid file (load_grid), its points (Point, point_key, fingerprint) and their checks."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...errors import CilError, OptionError

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
    from ..config import RunConfig

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
    from ..config import read_config_file

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
    from ..config import RunConfig

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
    from ..config import RunConfig

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
    from ...options import validate
    from ...plugin.factories import check_backend_options
    from ...plugin.registry import get_manager

    reg = get_manager()
    try:
        check_backend_options(cfg.backend, cfg.backend_options, reg)
        validate(reg.entry("algorithms", cfg.algorithm).value, cfg.algorithm_options,
                 f"algorithm '{cfg.algorithm}'")
    except CilError as exc:
        raise type(exc)(f"{where}: {exc}") from exc


# ----------------------------------------------------------------------------- running one point
