"""Building a run from a configuration: the data, the network, the backend and the trainer that
``cil train``, ``cil fidelity`` and every sweep point use (one code path, so the three cannot
drift apart).

    with prepare(cfg) as run:          # seeds torch, loads and splits the data, builds net + backend
        trainer = run.trainer()
        ...                            # the backend is closed on leaving the block
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, CilError, DataError, OptionError, ShapeError


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


def load_object(path: str, key: str = "model") -> Any:
    """``module:attribute``, importable from the current folder too (as ``python -m`` would);
    errors name the config ``key`` it came from."""
    if ":" not in path:
        raise OptionError(f"{key}: expected 'module:factory', got {path!r}")
    mod, attr = path.split(":", 1)
    obj = _import_here(mod, key)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"{key}: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise OptionError(f"{key}: {path!r} is not callable")
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
    """``(train, test, has_test)`` named by the config: ``breast-cancer``, a torch file, a
    registered data set by root folder (``NAME:ROOT``, e.g. ``nmnist:/data``) or a dataset
    factory (``module:function``); see :func:`load_source`. ``test_data`` takes the same forms;
    without it, a data set or factory that has a ``train`` parameter gives its ``train=False``
    split as the test data, anything else is evaluated on the training data."""
    if cfg.data == "breast-cancer":
        from ..data.breast_cancer import load_breast_cancer_spikes

        split = load_breast_cancer_spikes()
        return split.train, split.test, True
    train = load_source(cfg.data, "data", cfg.data_options, train=True)
    if cfg.test_data:
        return train, load_source(cfg.test_data, "test_data", cfg.data_options, train=False), True
    if _has_train_split(cfg.data):
        return train, load_source(cfg.data, "data", cfg.data_options, train=False), True
    return train, train, False


def _factory(value: str, key: str) -> tuple[Any, str | None] | None:
    """``(factory, root)`` for ``NAME:ROOT`` / ``NAME`` (a registered data set) or
    ``module:function``; ``None`` for anything else (a file)."""
    name, _, rest = value.partition(":")
    datasets = _registered_datasets()
    if name in datasets:
        from ..plugin.registry import get_manager

        return get_manager().entry("datasets", name).value, (rest or None)
    if ":" in value and not Path(value).exists():  # module:function (its errors name the registered data sets)
        try:
            return load_object(value, key), None
        except OptionError as exc:
            raise OptionError(f"{exc} ({value!r} is no registered data set either: "
                              f"{', '.join(datasets) or 'none loaded'}; cil plugins lists them)") from exc
    return None


def _has_train_split(value: str) -> bool:
    found = _factory(value, "data")
    return found is not None and "train" in inspect.signature(found[0]).parameters


def load_source(value: str, key: str, options: dict[str, Any], *, train: bool) -> Any:
    """What ``data`` / ``test_data`` names, checked at the door (before any network is built):

    * ``NAME:ROOT`` — a data set a plugin registered (``cil plugins``; cil-speck: ``nmnist``,
      tonic's N-MNIST read lazily from ``ROOT/NMNIST``), built as ``factory(ROOT, train=...,
      **options)``;
    * ``module:function`` — a dataset factory of yours, called with ``options`` (and
      ``train=True/False`` if it has a ``train`` parameter), returning in-memory data, a torch
      ``Dataset``, a ``DataLoader`` or an iterable of batches;
    * a torch file of ``(x, y)`` (``options`` must then be empty).

    ``options`` are checked against the factory's signature; what the factory returns must be a
    source :meth:`~cil_core.Trainer.fit` accepts (:class:`OptionError` / :class:`DataError`
    naming the key otherwise)."""
    from ..data.stream import source_kind
    from ..errors import ShapeError
    from ..options import validate

    found = _factory(value, key)
    if found is None:
        if options:
            raise OptionError(f"data_options {sorted(options)} were given, but {key} = {value!r} is a file, not a "
                              "data set or dataset factory")
        return load_pair(value, key)
    factory, root = found
    params = inspect.signature(factory).parameters
    kwargs = dict(options)
    if "train" in params:
        if "train" in kwargs:
            raise OptionError("data_options cannot hold 'train': the training data are read with train=True and the "
                              "test data with train=False")
        kwargs["train"] = train
    name = value.split(":", 1)[0]
    if root is not None:
        first = next(iter(params))
        if first in kwargs:
            raise OptionError(f"{key}: the folder is given twice: {value!r} and data_options {first}="
                              f"{kwargs[first]!r}; give it once")
        kwargs = {first: root, **kwargs}
    elif name in _registered_datasets() and next(iter(params)) not in kwargs:
        raise OptionError(f"{key}: data set {name!r} reads a folder: give it as {name}:ROOT (e.g. {name}:/data, "
                          f"the folder holding {name.upper()}/)")
    validate(factory, kwargs, f"{key} {value!r}")
    try:
        src = factory(**kwargs)
    except CilError:
        raise  # already named (e.g. a folder without the data set)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{key} {value!r} could not be loaded: {type(exc).__name__}: {exc}") from exc
    try:
        kind = source_kind(src, f"{key} {value!r}")
    except ShapeError as exc:
        raise DataError(f"{exc} (what the factory returned)") from exc
    if kind == "in-memory":
        from ..data import as_data

        return as_data(src)
    return src


def _registered_datasets() -> list[str]:
    from ..plugin.registry import get_manager

    return get_manager().names("datasets")


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
    """A share of ``data`` drawn with ``seed``: stratified (at least one sample per class) for
    in-memory data; for a torch ``Dataset`` a seeded uniform draw of ``round(fraction * N)``
    samples (at least one; not stratified: that would read every label) as a ``Subset``. A
    DataLoader or iterable cannot be subset (:class:`OptionError`)."""
    import torch

    if fraction >= 1.0:
        return data
    g = torch.Generator().manual_seed(1000 + seed)
    if not _in_memory(data):
        return _dataset_part(data, "data_fraction", lambda n: torch.randperm(n, generator=g)[:max(1, round(fraction * n))])
    from ..data import stratified_indices

    return data.subset(stratified_indices(data.y, fraction, g, min_per_class=1))


def _in_memory(data: Any) -> bool:
    from ..data import SpikeData

    return isinstance(data, SpikeData)


def _require_dataset(data: Any, key: str) -> None:
    from ..data.stream import source_kind

    if source_kind(data) != "dataset":
        raise OptionError(f"{key}: a {type(data).__name__} (it batches and orders its own data) cannot be split or "
                          f"subset; return a torch Dataset from the data factory, or drop {key}")


def _dataset_part(data: Any, key: str, draw: Any) -> Any:
    """``Subset(data, sorted(draw(len(data))))`` for a map-style Dataset; refused for other streams."""
    from torch.utils.data import Subset

    _require_dataset(data, key)
    return Subset(data, draw(len(data)).sort().values.tolist())


def build_network(cfg: Any, train: Any) -> Any:
    """The wrapped network of a run: ``cfg.model`` (``module:factory``) called with
    ``cfg.model_options``, or the library-free LIF net sized to the data."""
    from .. import wrap
    from ..data import as_data

    if cfg.model:
        model = load_object(cfg.model)(**cfg.model_options)
        try:
            return wrap(model, **cfg.wrap_options)
        except ShapeError as exc:
            if "input_shape" in cfg.wrap_options or "pass input_shape" not in str(exc):
                raise
            raise ShapeError(f"{exc} (from cil train / cil fidelity: --wrap-opt input_shape=[...], or "
                             "wrap_options = { input_shape = [...] } in a config file)") from exc
    if cfg.wrap_options:
        raise OptionError(f"wrap_options: {sorted(cfg.wrap_options)} apply to a factory's model ('model'); the default "
                          "LIF net is cil's own and is not wrapped")
    if not _in_memory(train):
        raise OptionError(f"model: a streamed data set ({type(train).__name__}) needs a model ('module:factory'); the "
                          "default LIF net is sized to in-memory data")
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
                       timeout=cfg.timeout, device=cfg.device, time_first=cfg.time_first, num_workers=cfg.num_workers,
                       **cfg.algorithm_options)

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

    for module in cfg.plugins:  # before the network and the backend: a one-file backend may provide either
        load_plugin(module)
    torch.manual_seed(cfg.seed)
    train, test, has_test = load_data(cfg)  # in-memory data as SpikeData, streams as they are
    if data_fraction is not None:
        train = subset_fraction(train, float(data_fraction), cfg.seed)
    val = None
    if split_validation and cfg.validation_split:
        if not _in_memory(train):
            _require_dataset(train, "validation_split")
        n = len(train)
        n_val = max(1, int(round(cfg.validation_split * n)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
        if _in_memory(train):
            val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
        else:
            whole = train
            val = _dataset_part(whole, "validation_split", lambda _: order[:n_val])
            train = _dataset_part(whole, "validation_split", lambda _: order[n_val:])
    net = build_network(cfg, train)
    if weights is not None:
        load_weights(net, weights)
    backend = make_backend(cfg.backend, **cfg.backend_options)
    return Run(cfg, train, test, has_test, val, net, backend)


__all__ = ["Run", "prepare", "load_object", "load_plugin", "load_data", "load_source", "load_pair", "build_network",
           "load_weights",
           "subset_fraction"]
