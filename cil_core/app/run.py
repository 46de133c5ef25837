"""Building a run from a configuration: the data, the network, the backend and the trainer that
``cil train``, ``cil fidelity`` and every sweep point use (one code path, so the three cannot
drift apart).

    with prepare(cfg) as run:          # seeds torch, loads and splits the data, builds net + backend
        trainer = run.trainer()
        ...                            # the backend is closed on leaving the block
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, DataError, OptionError


def _import_here(module: str, key: str) -> Any:
    """``import module``, from the current folder too (as ``python -m`` would); an
    :class:`OptionError` under ``key`` when it cannot be imported."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionError(f"{key}: cannot import module {module!r} ({exc}); run cil from the folder that holds it "
                          "or install it") from exc


def load_object(path: str) -> Any:
    """``module:attribute``, importable from the current folder too (as ``python -m`` would)."""
    if ":" not in path:
        raise OptionError(f"model: expected 'module:factory', got {path!r}")
    mod, attr = path.split(":", 1)
    obj = _import_here(mod, "model")
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"model: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise OptionError(f"model: {path!r} is not callable")
    return obj


def load_plugin(module: str) -> list[str]:
    """Import ``module`` (from the current folder too) and register what it provides: the module
    itself when it has ``@cil.hookimpl`` functions, else every :class:`~cil_core.Backend` subclass it
    defines with a ``name``. Returns the names registered; an :class:`OptionError` names a module
    that cannot be imported or provides nothing. Registering what the module already registered
    itself on import is a no-op."""
    import inspect

    from ..hardware.backend import Backend
    from ..plugin.factories import register
    from ..plugin.registry import get_manager

    if not isinstance(module, str) or not module or ":" in module:
        raise OptionError(f"plugin: expected a module name ('mychip', 'pkg.chip'), got {module!r}")
    mod = _import_here(module, "plugin")
    if any(get_manager().pm.parse_hookimpl_opts(mod, attr) for attr in dir(mod)):
        return [register(mod)]
    backends = [c for c in vars(mod).values() if inspect.isclass(c) and issubclass(c, Backend) and
                c.__module__ == mod.__name__ and not inspect.isabstract(c) and getattr(c, "name", "")]
    if not backends:
        raise OptionError(f"plugin: module {module!r} defines no Backend subclass with a name and no "
                          "@cil.hookimpl functions: give your backend class a name (name = 'my-chip')")
    return [register(c) for c in backends]


def load_data(cfg: Any) -> tuple[Any, Any, bool]:
    """``(train, test, has_test)`` named by the config (``breast-cancer`` or torch files)."""
    if cfg.data == "breast-cancer":
        from ..data.breast_cancer import load_breast_cancer_spikes

        split = load_breast_cancer_spikes()
        return split.train, split.test, True
    train = load_pair(cfg.data, "data")
    if cfg.test_data:
        return train, load_pair(cfg.test_data, "test_data"), True
    return train, train, False


def load_pair(path: str, key: str) -> Any:
    """A torch file of ``(x [T, N, ...], y [N])`` or ``{'x': ..., 'y': ...}`` as :class:`SpikeData`."""
    import torch

    from ..data import as_data

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


def build_network(cfg: Any, train: Any) -> Any:
    """The wrapped network of a run: ``cfg.model`` (``module:factory``) called with
    ``cfg.model_options``, or the library-free LIF net sized to the data."""
    from .. import wrap
    from ..data import as_data

    if cfg.model:
        return wrap(load_object(cfg.model)(**cfg.model_options))
    from ..network.reference import feedforward

    n_in = int(as_data(train).x.shape[2])
    try:
        return feedforward(**{"sizes": [n_in, 32, 2], "seed": cfg.seed, **cfg.model_options})
    except TypeError as exc:
        raise OptionError(f"model_options: {exc}") from exc


def load_weights(net: Any, path: Path) -> None:
    """Weights from a cil checkpoint (by parameter name) or the model's own state_dict."""
    import torch

    if not path.is_file():
        raise OptionError(f"weights: {path} does not exist")
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"weights: {path} cannot be read as a torch file: {type(exc).__name__}: {exc}") from exc
    try:
        if isinstance(blob, dict) and isinstance(blob.get("weights"), dict):  # a cil train --checkpoint
            net.load_parameters(blob["weights"])
        elif isinstance(blob, dict):  # a cil train --export (the model's state_dict)
            net.module.load_state_dict(blob)
        else:
            raise CheckpointError(f"weights: {path} holds {type(blob).__name__}, not a checkpoint or a state_dict")
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"weights: {path} does not fit the model: {exc}") from exc


@dataclass
class Run:
    """What a configuration builds: the data (``val`` is the held-out share of ``train`` when
    ``validation_split`` is set), the wrapped network and the backend. A context manager: leaving
    it closes the backend (a Ray worker, a board connection)."""

    cfg: Any
    train: Any
    test: Any
    has_test: bool
    val: Any
    net: Any
    backend: Any

    def trainer(self) -> Any:
        """The :class:`~cil_core.Trainer` the configuration describes."""
        from .. import Trainer

        cfg = self.cfg
        return Trainer(self.net, self.backend, cfg.algorithm, seed=cfg.seed, readout=cfg.make_readout(), retries=cfg.retries,
                       timeout=cfg.timeout, device=cfg.device, **cfg.algorithm_options)

    def fit_options(self) -> dict[str, Any]:
        """The run length and batch size of :meth:`Trainer.fit`."""
        cfg = self.cfg
        return {"epochs": cfg.epochs, "steps": cfg.steps, "batch_size": -1 if cfg.batch_size is None else cfg.batch_size}

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prepare(cfg: Any, *, data_fraction: float | None = None, split_validation: bool = True,
            weights: Path | None = None) -> Run:
    """Seed torch with ``cfg.seed``, load the data (a stratified ``data_fraction`` of the training
    set if given; ``cfg.validation_split`` held out when ``split_validation``), build the network
    (loading ``weights`` if given) and the backend."""
    import torch

    from .. import make_backend
    from ..data import as_data

    for module in cfg.plugins:  # before the network and the backend: a one-file backend may provide either
        load_plugin(module)
    torch.manual_seed(cfg.seed)
    train, test, has_test = load_data(cfg)
    train = as_data(train)
    if data_fraction is not None:
        train = subset_fraction(train, float(data_fraction), cfg.seed)
    val = None
    if split_validation and cfg.validation_split:
        n_val = max(1, int(round(cfg.validation_split * len(train))))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    net = build_network(cfg, train)
    if weights is not None:
        load_weights(net, weights)
    backend = make_backend(cfg.backend, **cfg.backend_options)
    return Run(cfg, train, test, has_test, val, net, backend)


__all__ = ["Run", "prepare", "load_object", "load_plugin", "load_data", "load_pair", "build_network", "load_weights",
           "subset_fraction"]
