"""The ``cil`` command line.

* ``cil plugins`` — what is loaded, from which distribution, and what each registers;
* ``cil demo [...]`` — the main job (registered by a plugin as job ``demo``);
* ``cil train [--config FILE] [options]`` — train a model with a backend in the loop;
* ``cil bench NAME [...]`` — a benchmark registered by a plugin (``cil bench`` lists them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .errors import CilError


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


def _cmd_bench(argv: list[str]) -> int:
    from .plugin.manager import get_manager

    if not argv or argv[0] in ("-h", "--help"):
        reg = get_manager()
        print("usage: cil bench NAME [options]\n\nbenchmarks installed:")
        for n in reg.names("jobs"):
            e = reg.entry("jobs", n)
            if e.kind == "bench":
                print(f"  {n:<20} {e.help}  [{e.owner}]")
        return 0
    return _run_job(argv[0], "bench", argv[1:])


def _parse_kv(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise CilError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _load_object(path: str) -> Any:
    if ":" not in path:
        raise CilError(f"expected 'module:attribute', got {path!r}")
    mod, attr = path.split(":", 1)
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _cmd_train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cil train", description="train a model with a backend in the loop")
    p.add_argument("--config", type=Path, help="TOML or JSON file with the options below (command line wins)")
    p.add_argument("--model", help="'module:factory' returning a model (default: a native 62-32-2 LIF net)")
    p.add_argument("--model-opt", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", help="'breast-cancer' (bundled) or a torch file holding (x [T,N,...], y [N])")
    p.add_argument("--test-data", help="torch file for evaluation (breast-cancer brings its own split)")
    p.add_argument("--backend")
    p.add_argument("--backend-opt", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--algorithm")
    p.add_argument("--algo-opt", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--resume", type=Path)
    p.add_argument("--out", type=Path, help="write the history and metrics as JSON")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg: dict[str, Any] = {}
    if a.config:
        text = a.config.read_text()
        if a.config.suffix == ".json":
            cfg = json.loads(text)
        else:
            import tomllib

            cfg = tomllib.loads(text)
    for key in ("model", "data", "test_data", "backend", "algorithm", "epochs", "steps", "seed"):
        if getattr(a, key) is not None:
            cfg[key] = getattr(a, key)
            if key in ("epochs", "steps"):  # the run length given on the command line replaces the config's
                cfg.pop("steps" if key == "epochs" else "epochs", None)
    for key, items in (("model_options", a.model_opt), ("backend_options", a.backend_opt),
                       ("algorithm_options", a.algo_opt)):
        cfg.setdefault(key, {}).update(_parse_kv(items))

    import torch

    from . import Trainer, make_backend, wrap
    from .data.breast_cancer import load_breast_cancer_spikes

    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    data_name = cfg.get("data", "breast-cancer")
    if data_name == "breast-cancer":
        split = load_breast_cancer_spikes()
        train, test = split.train, split.test
    else:
        train = tuple(torch.load(data_name, weights_only=False))
        test = tuple(torch.load(cfg["test_data"], weights_only=False)) if cfg.get("test_data") else train
    if cfg.get("model"):
        model = _load_object(cfg["model"])(**cfg["model_options"])
        net = wrap(model)
    else:
        from .network.reference import feedforward

        opts = {"sizes": [62, 32, 2], "seed": seed, **cfg["model_options"]}
        net = feedforward(**opts)
    backend = make_backend(cfg.get("backend", "ideal"), **cfg["backend_options"])
    trainer = Trainer(net, backend, cfg.get("algorithm", "cil-spl"), seed=seed, **cfg["algorithm_options"])
    hist = trainer.fit(train, epochs=cfg.get("epochs"), steps=cfg.get("steps"), progress=not a.no_progress,
                       checkpoint=a.checkpoint, resume=a.resume)
    metrics = trainer.evaluate(test)
    print(f"{trainer.algorithm.name} on {backend.name}: chip test accuracy {metrics['accuracy']:.3f} "
          f"({metrics['n']} samples), {len(hist)} steps in {hist.wall_time:.1f} s")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"config": cfg, "metrics": metrics, "history": hist.records}, indent=2, default=str))
    return 0


COMMANDS = {
    "plugins": _cmd_plugins,
    "demo": lambda argv: _run_job("demo", "demo", argv),
    "train": _cmd_train,
    "bench": _cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
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
