"""The ``cil`` command line.

* ``cil plugins`` — what is loaded, from which distribution, and what each registers
  (broken plugins with the reason and the fix);
* ``cil describe NAME`` — an algorithm, backend or adapter and its options;
* ``cil --version``;
* ``cil demo [...]`` — the main job (registered by a plugin as job ``demo``);
* ``cil train [--config FILE] [options]`` — train a model with a backend in the loop
  (``cil train --help``; the config schema is in docs/config.md);
* ``cil plot RUN`` — draw a run's training curves (PNG).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import CilError, DataError, OptionError


def _cmd_plugins(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil plugins", description="list loaded plugins")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from . import list_plugins

    infos = list_plugins()
    if a.json:
        print(json.dumps([{**i.__dict__, "broken": i.broken} for i in infos], indent=2))
        return 0
    from .plugin.manager import get_manager

    reg = get_manager()
    for i in infos:
        status = "  BROKEN" if i.broken else ""
        print(f"{i.name}  [{i.distribution} {i.version}]{status}")
        if i.broken:
            print(f"    error       {i.error}")
            print(f"    fix         {i.fix}")
            continue
        for kind in ("backends", "adapters", "algorithms", "jobs"):
            for n in getattr(i, kind):
                print(f"    {kind[:-1]:<10} {n:<18} {_describe(reg.entry(kind, n).value, reg.entry(kind, n).help)}")
    return 0


def _describe(value: Any, help: str) -> str:
    """One line saying what a registered part is: its help, ``description`` or docstring."""
    text = help or getattr(value, "description", "") or (getattr(value, "__doc__", "") or "")
    return text.strip().splitlines()[0] if text.strip() else ""


def _run_job(name: str, kind: str, argv: list[str]) -> int:
    from .plugin.manager import get_manager

    reg = get_manager()
    jobs = {n: reg.entry("jobs", n) for n in reg.names("jobs")}
    if name not in jobs or jobs[name].kind != kind:
        known = ", ".join(n for n, e in jobs.items() if e.kind == kind) or "none"
        raise CilError(f"no {kind} job named {name!r} is installed (installed: {known})")
    return int(jobs[name].value(argv) or 0)


def _parse_kv(items: list[str], flag: str) -> dict[str, Any]:
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


def _load_object(path: str) -> Any:
    """``module:attribute``, importable from the current folder too (as ``python -m`` would)."""
    if ":" not in path:
        raise OptionError(f"model: expected 'module:factory', got {path!r}")
    mod, attr = path.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod)
    except ImportError as exc:
        raise OptionError(f"model: cannot import module {mod!r} ({exc}); run cil from the folder that holds it "
                          "or install it") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"model: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise OptionError(f"model: {path!r} is not callable")
    return obj


def _train_parser() -> argparse.ArgumentParser:
    """``cil train``'s options, one per key of :class:`~cil_core.config.RunConfig`."""
    from dataclasses import fields

    from .config import RunConfig

    p = argparse.ArgumentParser(prog="cil train", description="train a model with a backend (chip) in the loop; "
                                "every option can also be set in a TOML/JSON --config file (docs/config.md)")
    p.add_argument("--config", type=Path, help="TOML or JSON file with any of the keys below (command line wins)")
    for f in fields(RunConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kind = f.metadata.get("kind") or None
        if f.name in ("model_options", "backend_options", "algorithm_options"):
            p.add_argument(flag, dest=f.name, nargs="*", metavar="KEY=VALUE", help=f.metadata["help"])
        elif f.name in ("force",):
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=f.metadata["help"])
        elif f.name == "progress":
            p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                           help="do not show the progress bar")
        else:
            p.add_argument(flag, dest=f.name, metavar=kind, default=None, help=f.metadata["help"],
                           type=_TYPES.get(f.name, str))
    return p


_TYPES: dict[str, Any] = {"epochs": int, "steps": int, "batch_size": int, "seed": int, "retries": int,
                          "checkpoint_every": int, "timeout": float, "validation_split": float}


def _cmd_train(argv: list[str]) -> int:
    from .config import RunConfig, read_config_file

    a = _train_parser().parse_args(argv)
    raw: dict[str, Any] = read_config_file(a.config) if a.config else {}
    RunConfig.from_dict(raw, f"config file {a.config}")  # names the file in errors about its keys
    for key, value in vars(a).items():
        if key == "config" or value is None:
            continue
        if key in ("model_options", "backend_options", "algorithm_options"):
            raw[key] = {**raw.get(key, {}), **_parse_kv(value, key)}
            continue
        raw[key] = value
        if key in ("epochs", "steps"):  # the run length given on the command line replaces the config's
            raw.pop("steps" if key == "epochs" else "epochs", None)
    cfg = RunConfig.from_dict(raw, "cil train")
    return _train(cfg)


def _load_data(cfg: Any) -> tuple[Any, Any, bool]:
    """(train, test, has_test) from the config."""
    if cfg.data == "breast-cancer":
        from .data.breast_cancer import load_breast_cancer_spikes

        split = load_breast_cancer_spikes()
        return split.train, split.test, True
    train = _load_pair(cfg.data, "data")
    if cfg.test_data:
        return train, _load_pair(cfg.test_data, "test_data"), True
    return train, train, False


def _load_pair(path: str, key: str) -> Any:
    import torch

    from .data import as_data

    p = Path(path)
    if not p.is_file():
        raise OptionError(f"{key}: {path} does not exist (use 'breast-cancer' or a torch file of (x, y))")
    try:
        obj = torch.load(p, weights_only=True)
    except Exception as exc:
        raise DataError(f"{key}: {path} cannot be read as a torch file of tensors: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, dict) and {"x", "y"} <= set(obj):
        obj = (obj["x"], obj["y"])
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{key}: {path} must hold (x [T, N, ...], y [N]) or {{'x': ..., 'y': ...}}")
    return as_data(tuple(obj))


def _train(cfg: Any) -> int:
    import torch

    from . import Trainer, make_backend, wrap
    from .data import as_data

    torch.manual_seed(cfg.seed)
    train, test, has_test = _load_data(cfg)
    val = None
    if cfg.validation_split:
        train = as_data(train)
        n_val = max(1, int(round(cfg.validation_split * len(train))))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    if cfg.model:
        net = wrap(_load_object(cfg.model)(**cfg.model_options))
    else:
        from .network.reference import feedforward

        n_in = int(as_data(train).x.shape[2]) if hasattr(as_data(train).x, "shape") else 62
        try:
            net = feedforward(**{"sizes": [n_in, 32, 2], "seed": cfg.seed, **cfg.model_options})
        except TypeError as exc:
            raise OptionError(f"model_options: {exc}") from exc
    backend = make_backend(cfg.backend, **cfg.backend_options)
    trainer = Trainer(net, backend, cfg.algorithm, seed=cfg.seed, readout=cfg.readout, retries=cfg.retries,
                      timeout=cfg.timeout, device=cfg.device, **cfg.algorithm_options)
    if cfg.out:  # fail before training, not after
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    sink = None
    if cfg.metrics:
        Path(cfg.metrics).parent.mkdir(parents=True, exist_ok=True)
        sink = open(cfg.metrics, "a")  # noqa: SIM115 - closed below
    try:
        hist = trainer.fit(train, epochs=cfg.epochs, steps=cfg.steps,
                           batch_size=-1 if cfg.batch_size is None else cfg.batch_size, progress=cfg.progress,
                           checkpoint=cfg.checkpoint, checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                           force=cfg.force, on_step=None if sink is None else
                           (lambda rec: (sink.write(json.dumps(rec) + "\n"), sink.flush())))
    finally:
        if sink is not None:
            sink.close()
    metrics = trainer.evaluate(test)
    where = "test" if has_test else "training (no test data given)"
    print(f"{trainer.algorithm.name} on {backend.name}: chip {where} accuracy {metrics['accuracy']:.3f} "
          f"({metrics['n']} samples), {len(hist)} steps in {hist.wall_time:.1f} s")
    result: dict[str, Any] = {"config": cfg.as_dict(), "metrics": metrics, "split": where,
                              "chip": trainer.session.stats.as_dict(), "history": hist.records}
    if val is not None:
        result["validation"] = trainer.evaluate(val)
        print(f"chip validation accuracy {result['validation']['accuracy']:.3f} ({len(val)} samples held out)")
    if cfg.export:
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.module.state_dict(), cfg.export)
        print(f"trained model ({type(net.module).__name__} state_dict, adapter {net.adapter}) saved to {cfg.export}")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


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


def _cmd_describe(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil describe", description="what an algorithm, backend or adapter is, "
                                "and its options (name, type, default, meaning)")
    p.add_argument("name", help="a registered algorithm, backend or adapter name (see cil plugins)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from .options import describe
    from .plugin.manager import get_manager

    reg = get_manager()
    found = [(kind, reg.entry(kind, a.name)) for kind in ("algorithms", "backends", "adapters")
             if a.name in reg.names(kind)]
    if not found:
        reg.entry("backends" if ":" in a.name else "algorithms", a.name)  # raises with close matches
        known = ", ".join(sorted(set(reg.names("algorithms")) | set(reg.names("backends")) | set(reg.names("adapters"))))
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
        out.append({"kind": kind[:-1], "name": a.name, "plugin": entry.owner, "description": text, "options": rows})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for item in out:
        print(f"{item['kind']} {item['name']!r} (plugin {item['plugin']})")
        print("  " + item["description"].replace("\n", "\n  "))
        if not item["options"]:
            print("  options: none")
            continue
        w = max(len(r["name"]) for r in item["options"])
        t = max(len(r["type"]) for r in item["options"])
        print("  options:")
        for r in item["options"]:
            print(f"    {r['name']:<{w}}  {r['type']:<{t}}  default {r['default']}" + (f"  — {r['doc']}" if r["doc"] else ""))
    return 0


COMMANDS = {
    "plugins": _cmd_plugins,
    "describe": _cmd_describe,
    "demo": lambda argv: _run_job("demo", "demo", argv),
    "train": _cmd_train,
    "plot": _cmd_plot,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

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
