"""The ``cil`` command line.

* ``cil plugins`` — what is loaded, from which distribution, and what each registers
  (broken plugins with the reason and the fix);
* ``cil describe NAME`` — an algorithm, backend or adapter and its options;
* ``cil --version``;
* ``cil demo [...]`` — the main job (registered by a plugin as job ``demo``);
* ``cil train [--config FILE] [options]`` — train a model with a backend in the loop
  (``cil train --help``; the config schema is in docs/config.md);
* ``cil plot RUN`` — draw a run's training curves (PNG).
* ``cil fidelity [options]`` — software vs chip, layer by layer, for the same weights (JSON, PNG).
* ``cil sweep GRID`` — a grid of training runs, one JSON line per finished point, resumable
  (``--runner ray`` with cil-ray; docs/distributed.md).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import CilError, DataError, OptionError
from .run import prepare


def _cmd_plugins(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil plugins", description="list loaded plugins")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from .. import list_plugins

    infos = list_plugins()
    if a.json:
        print(json.dumps([{**i.__dict__, "broken": i.broken} for i in infos], indent=2))
        return 0
    from ..plugin.registry import get_manager

    reg = get_manager()
    for i in infos:
        status = "  BROKEN" if i.broken else ""
        print(f"{i.name}  [{i.distribution} {i.version}]{status}")
        if i.broken:
            print(f"    error       {i.error}")
            print(f"    fix         {i.fix}")
            continue
        for kind in ("backends", "adapters", "algorithms", "jobs", "runners", "datasets"):
            for n in getattr(i, kind):
                print(f"    {kind[:-1]:<10} {n:<18} {_describe(reg.entry(kind, n).value, reg.entry(kind, n).help)}")
    return 0


def _describe(value: Any, help: str) -> str:
    """One line saying what a registered part is: its help, ``description`` or docstring."""
    text = help or getattr(value, "description", "") or (getattr(value, "__doc__", "") or "")
    return text.strip().splitlines()[0] if text.strip() else ""


def _run_job(name: str, kind: str, argv: list[str]) -> int:
    from ..plugin.registry import get_manager

    reg = get_manager()
    jobs = {n: reg.entry("jobs", n) for n in reg.names("jobs")}
    if name not in jobs or jobs[name].kind != kind:
        known = ", ".join(n for n, e in jobs.items() if e.kind == kind) or "none"
        raise CilError(f"no {kind} job named {name!r} is installed (installed: {known})")
    return int(jobs[name].value(argv) or 0)


def parse_kv(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict, each value read as JSON, else kept as text (a missing ``=`` is an
    :class:`OptionError` naming ``flag``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise OptionError(f"{flag}: expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _train_parser() -> argparse.ArgumentParser:
    """``cil train``'s options, one per key of :class:`~cil_core.app.config.RunConfig`."""
    from dataclasses import fields

    from .config import RunConfig

    p = argparse.ArgumentParser(prog="cil train", description="train a model with a backend (chip) in the loop; "
                                "every option can also be set in a TOML/JSON --config file (docs/config.md)")
    p.add_argument("--config", type=Path, help="TOML or JSON file with any of the keys below (command line wins)")
    for f in fields(RunConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kind = f.metadata.get("kind") or None
        if f.name in _KV_KEYS:
            p.add_argument(flag, dest=f.name, nargs="*", metavar="KEY=VALUE", help=f.metadata["help"])
        elif f.name in ("force",):
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=f.metadata["help"])
        elif f.name == "plugins":
            p.add_argument(flag, dest="plugins", action="append", metavar="MODULE", default=None,
                           help=f.metadata["help"])
        elif f.name == "progress":
            p.add_argument(flag, dest="progress", action="store_false", default=None,
                           help="do not show the progress bar")
        else:
            p.add_argument(flag, dest=f.name, metavar=kind, default=None, help=f.metadata["help"],
                           type=_TYPES.get(f.name, str))
    return p


_KV_KEYS = ("model_options", "wrap_options", "data_options", "backend_options", "algorithm_options", "readout_options")
_TYPES: dict[str, Any] = {"epochs": int, "steps": int, "batch_size": int, "seed": int, "retries": int,
                          "checkpoint_every": int, "timeout": float, "validation_split": float, "num_workers": int,
                          "time_first": lambda v: _bool(v, "--time-first")}


def _bool(value: str, flag: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise OptionError(f"{flag}: expected true or false, got {value!r}")


def _cmd_train(argv: list[str]) -> int:
    from .config import RunConfig, read_config_file

    a = _train_parser().parse_args(argv)
    raw: dict[str, Any] = read_config_file(a.config) if a.config else {}
    file_cfg = RunConfig.from_dict(raw, f"config file {a.config}")  # names the file in errors about its keys
    if "readout" in raw or "readout_options" in raw:  # a [readout] table as kind + options: the command line then wins
        raw["readout"], raw["readout_options"] = file_cfg.readout, file_cfg.readout_options
    for key, value in vars(a).items():
        if key == "config" or value is None:
            continue
        if key in _KV_KEYS:
            raw[key] = {**raw.get(key, {}), **parse_kv(value, key)}
            continue
        raw[key] = value
        if key in ("epochs", "steps"):  # the run length given on the command line replaces the config's
            raw.pop("steps" if key == "epochs" else "epochs", None)
    cfg = RunConfig.from_dict(raw, "cil train")
    return _train(cfg)


def _train(cfg: Any) -> int:
    with prepare(cfg) as run:
        return _train_run(run)


def _train_run(run: Any) -> int:
    import torch

    cfg, net, backend, val = run.cfg, run.net, run.backend, run.val
    trainer = run.trainer()
    if cfg.out:  # fail before training, not after
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    sink = None
    if cfg.metrics:
        Path(cfg.metrics).parent.mkdir(parents=True, exist_ok=True)
        sink = open(cfg.metrics, "a")  # noqa: SIM115 - closed below
    try:
        hist = trainer.fit(run.train, **run.fit_options(), progress=cfg.progress, checkpoint=cfg.checkpoint,
                           checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, force=cfg.force, on_step=None if sink is None else
                           (lambda rec: (sink.write(json.dumps(rec) + "\n"), sink.flush())))
    finally:
        if sink is not None:
            sink.close()
    metrics = trainer.evaluate(run.test)
    where = "test" if run.has_test else "training (no test data given)"
    print(f"{trainer.algorithm.name} on {backend.name}: chip {where} accuracy {metrics['accuracy']:.3f} "
          f"({metrics['n']} samples), {len(hist)} steps in {hist.wall_time:.1f} s")
    print(f"outputs: {metrics['ties']:.1%} of samples tied (top logits equal), {metrics['silent']:.1%} silent "
          "(no output spike)" + _scale_note(trainer))
    result: dict[str, Any] = {"config": cfg.as_dict(), "metrics": metrics, "split": where,
                              "chip": trainer.session.stats.as_dict(), "history": hist.records}
    if val is not None:
        result["validation"] = trainer.evaluate(val)
        print(f"chip validation accuracy {result['validation']['accuracy']:.3f} ({len(val)} samples held out; "
              f"{result['validation']['ties']:.1%} tied, {result['validation']['silent']:.1%} silent)")
    if cfg.export:
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.module.state_dict(), cfg.export)
        print(f"trained model ({type(net.module).__name__} state_dict, adapter {net.adapter}) saved to {cfg.export}")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _scale_note(trainer: Any) -> str:
    """``; MH likelihood logit scale λ = ...`` for an algorithm that chose one (MH), else nothing."""
    lam = getattr(trainer.algorithm, "logit_scale", None)
    if not isinstance(lam, float):
        return ""
    how = "auto" if getattr(trainer.algorithm, "logit_scale_option", None) == "auto" else "set"
    return f"; MH likelihood logit scale {lam:.3g} ({how})"


def _cmd_plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil plot", description="draw a run's loss, chip accuracy and, for MH, "
                                "acceptance, step size and log-posterior traces (PNG)")
    p.add_argument("run", type=Path, help="a --out JSON file or a --metrics JSON Lines file of cil train")
    p.add_argument("-o", "--output", type=Path, help="the PNG to write (default: RUN with .png)")
    a = p.parse_args(argv)
    if not a.run.is_file():
        raise OptionError(f"{a.run} does not exist")
    text = a.run.read_text()
    try:
        if a.run.suffix == ".json" or text.lstrip().startswith("{") and "\n{" not in text.strip():
            records = json.loads(text)["history"]
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{a.run} is neither a cil train --out JSON nor a --metrics JSON Lines file: {exc}") from exc
    if not records:
        raise DataError(f"{a.run} holds no training steps")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OptionError("cil plot needs matplotlib: pip install matplotlib") from exc
    keys = [k for k in ("loss", "hardware_accuracy", "software_accuracy", "acceptance", "step_size", "log_posterior")
            if any(k in r for r in records)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1)
        ax.set_ylabel(key.replace("hardware_", "chip ").replace("_", " "))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out = a.output or a.run.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def _cmd_fidelity(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil fidelity", description="run the same weights in software and on a backend "
                                "and report, per layer, how faithfully the chip reproduces them (spike-count "
                                "correlation, rate error, first divergence, membrane RMSE; output agreement)")
    p.add_argument("--config", type=Path, help="TOML or JSON file with cil train's keys (model, data, backend, ...)")
    p.add_argument("--plugin", dest="plugins", action="append", metavar="MODULE",
                   help="a module to import and register first (a one-file backend); repeat for several")
    p.add_argument("--model", help="'module:factory' returning a model (default: the library-free LIF net)")
    p.add_argument("--model-opt", dest="model_options", nargs="*", metavar="KEY=VALUE", help="model factory options")
    p.add_argument("--wrap-opt", dest="wrap_options", nargs="*", metavar="KEY=VALUE",
                   help="cil.wrap options for the factory's model (input_shape=[2,34,34])")
    p.add_argument("--weights", type=Path, help="load the weights from a cil train --checkpoint or --export file")
    p.add_argument("--data", help="'breast-cancer' (its test split), a torch file of (x, y), a registered data set "
                   "'NAME:ROOT' (its test split) or a dataset factory 'module:function'")
    p.add_argument("--data-opt", dest="data_options", nargs="*", metavar="KEY=VALUE", help="data set / factory options")
    p.add_argument("--test-data", dest="test_data", help="data compared instead of --data (the same forms)")
    p.add_argument("--time-first", dest="time_first", type=_TYPES["time_first"],
                   help="layout of a DataLoader's tensor batches (true: [T, B, ...]; default: inferred)")
    p.add_argument("--num-workers", dest="num_workers", type=int, help="DataLoader worker processes for a Dataset")
    p.add_argument("--backend", help="registered backend name (cil plugins)")
    p.add_argument("--backend-opt", dest="backend_options", nargs="*", metavar="KEY=VALUE", help="backend options")
    p.add_argument("--readout", help="'rate' or 'max-membrane'")
    p.add_argument("--readout-opt", dest="readout_options", nargs="*", metavar="KEY=VALUE",
                   help="readout options (scale=0.2)")
    p.add_argument("--seed", type=int, help="seeds the default model's init")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="samples per chip call (default 256)")
    p.add_argument("--sample", type=int, default=0, help="the sample whose raster --plot draws")
    p.add_argument("--retries", type=int, help="retries of a failed chip call")
    p.add_argument("--timeout", type=float, help="seconds one chip call may take")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, help="draw per-layer divergence and a software-vs-chip raster (PNG)")
    a = p.parse_args(argv)
    from .config import RunConfig, read_config_file
    from ..fidelity import fidelity

    keys = ("plugins", "model", "model_options", "wrap_options", "data", "data_options", "test_data", "time_first", "num_workers",
            "backend", "backend_options", "readout", "readout_options", "seed", "batch_size", "retries", "timeout")
    raw: dict[str, Any] = read_config_file(a.config) if a.config else {}
    # a training config serves as is: its training-only keys are ignored here, unknown keys still fail
    raw = {k: v for k, v in raw.items() if k in keys or k not in RunConfig.keys()}
    for key in keys:
        value = getattr(a, key)
        if value is None:
            continue
        raw[key] = {**raw.get(key, {}), **parse_kv(value, key)} if key.endswith("_options") else value
    cfg = RunConfig.from_dict(raw, "cil fidelity")
    for path in (a.out, a.plot):  # fail before the chip runs, not after
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    with prepare(cfg, split_validation=False, weights=a.weights) as run:
        report = fidelity(run.net, run.backend, run.test, batch_size=cfg.batch_size or 256, readout=cfg.make_readout(),
                          sample=a.sample, retries=cfg.retries, timeout=cfg.timeout, time_first=cfg.time_first,
                          num_workers=cfg.num_workers)
        has_test = run.has_test
    print(f"fidelity on the {'test' if has_test else 'given'} data")
    print(report.table())
    if a.out is not None:
        report.to_json(a.out)
        print(f"wrote {a.out}")
    if a.plot is not None:
        report.plot(a.plot)
        print(f"wrote {a.plot}")
    return 0


def _cmd_describe(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil describe", description="what an algorithm, backend or adapter is, "
                                "and its options (name, type, default, meaning)")
    p.add_argument("name", help="a registered algorithm, backend or adapter name (see cil plugins)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from ..options import describe
    from ..plugin.registry import get_manager

    reg = get_manager()
    found = [(kind, reg.entry(kind, a.name)) for kind in ("algorithms", "backends", "adapters", "runners", "datasets")
             if a.name in reg.names(kind)]
    if not found:
        reg.entry("backends" if ":" in a.name else "algorithms", a.name)  # raises with close matches
        known = ", ".join(sorted(set(reg.names("algorithms")) | set(reg.names("backends")) | set(reg.names("adapters"))
                                 | set(reg.names("runners")) | set(reg.names("datasets"))))
        raise CilError(f"nothing named {a.name!r} is registered (known: {known})")
    out = []
    for kind, entry in found:
        value = entry.value
        if kind == "adapters":
            real = getattr(value, "real", value)
            factory = getattr(real, "options_signature", None) or real.to_spec
            rows = describe(factory)[1:]  # the first parameter is the model
            text = value.description
        else:
            factory, rows = value, describe(value)
            text = (inspect.getdoc(value) or "").split("\n\n")[0]
        item = {"kind": kind[:-1], "name": a.name, "plugin": entry.owner, "description": text, "options": rows}
        if kind == "backends":  # which trained neuron parameters (snntorch learn_beta, ...) the chip holds
            from ..network.neuron import NEURON_PARAMETER_FIELDS
            from .capabilities import neuron_parameter_support

            item["trained_neuron_parameters"] = {f: neuron_parameter_support(value, f) for f in NEURON_PARAMETER_FIELDS}
        out.append(item)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for item in out:
        print(f"{item['kind']} {item['name']!r} (plugin {item['plugin']})")
        print("  " + item["description"].replace("\n", "\n  "))
        held = item.get("trained_neuron_parameters")
        if held and set(held.values()) == {"not declared"}:
            print("  trained neuron parameters held: not declared (the backend checks them itself; a wrapper such "
                  "as ray:<backend> holds what the backend it wraps holds)")
        elif held:
            print("  trained neuron parameters held: " + "; ".join(f"{f} {v}" for f, v in held.items()))
        if not item["options"]:
            print("  options: none")
            continue
        w = max(len(r["name"]) for r in item["options"])
        t = max(len(r["type"]) for r in item["options"])
        print("  options:")
        for r in item["options"]:
            print(f"    {r['name']:<{w}}  {r['type']:<{t}}  default {r['default']}" + (f"  — {r['doc']}" if r["doc"] else ""))
    return 0


def _cmd_sweep(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil sweep", description="run a grid of cil train runs ([base] config x [grid] "
                                "axes, TOML or JSON), one JSON line per finished point in the results file; a rerun "
                                "skips the points already there (docs/distributed.md)")
    p.add_argument("grid", type=Path, help="grid file with the tables [base], [grid] and optionally [sweep]")
    p.add_argument("--results", type=Path, help="JSON Lines results file (default: [sweep] results, else GRID.jsonl)")
    p.add_argument("--runner", default="local", help="who runs the points: local (default) or a plugin's (ray)")
    p.add_argument("--jobs", type=int, help="local runner: worker processes (default 1: in this process)")
    p.add_argument("--address", help="ray runner: the Ray head (host:port, 'auto', or 'local' for a private cluster)")
    p.add_argument("--runner-opt", dest="runner_options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further runner options (cil plugins lists runners; e.g. resources='{\"chip\": 1}')")
    p.add_argument("--list", action="store_true", help="list the points and whether each is done; run nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="do not show the progress bar")
    a = p.parse_args(argv)
    from .sweep import load_grid, read_results, run_sweep, train_point

    grid = load_grid(a.grid, results=a.results)
    opts = parse_kv(a.runner_options, "--runner-opt")
    if a.jobs is not None:
        opts["jobs"] = a.jobs
    if a.address is not None:
        opts["address"] = a.address
    if a.list:
        done = read_results(grid.results) if grid.results.exists() else {}
        for pt in grid.points:
            print(f"{'done' if pt.key in done else 'todo'}  {pt.key}")
        print(f"{sum(pt.key in done for pt in grid.points)} of {len(grid.points)} points done ({grid.results})")
        return 0
    res = run_sweep(grid.points, train_point, results=grid.results, runner=a.runner, runner_options=opts,
                    threads=grid.threads, base=grid.base_fingerprint, progress=a.progress)
    print("chip accuracy  point")
    for pt in grid.points:
        m = res.records[pt.key].get("metrics") or {}
        acc = f"{m['accuracy']:.3f}" if isinstance(m.get("accuracy"), float) else "-"
        print(f"{acc:>13}  {pt.key}")
    print(f"{len(grid.points)} points: {len(res.skipped)} already done, {len(res.ran)} run now (runner {a.runner}); "
          f"results in {res.results}")
    return 0


COMMANDS = {
    "plugins": _cmd_plugins,
    "describe": _cmd_describe,
    "demo": lambda argv: _run_job("demo", "demo", argv),
    "train": _cmd_train,
    "plot": _cmd_plot,
    "fidelity": _cmd_fidelity,
    "sweep": _cmd_sweep,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"cil {__version__}")
        return 0
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"cil: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        return cmd(argv[1:])
    except CilError as exc:
        print(f"cil {argv[0]}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
