"""cil — chip-in-the-loop training for spiking neural networks.

Public API::

    import cil_core as cil
    net = cil.wrap(model)                               # any supported SNN library model
    chip = cil.make_backend("analog-mismatch", seed=3)  # any loaded backend plugin
    trainer = cil.Trainer(net, chip, algorithm="mh")    # "offline", "cil-spl", "mh", ...
    trainer.fit((x_train, y_train))
    trainer.evaluate((x_test, y_test))                  # measured on the chip
    cil.list_plugins()

Plugins implement the hooks in :mod:`cil_core.plugin.hookspecs` and are found through the ``cil``
entry-point group, or registered at run time with :func:`register`.
"""

from __future__ import annotations

from typing import Any

from .data import EventBatch, SpikeData
from .errors import (
    BackendCapacityError,
    CheckpointError,
    CilError,
    DataError,
    HardwareError,
    LockError,
    NonFiniteError,
    OptionError,
    PluginError,
    ShapeError,
    SpecError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from .hardware import Backend, Deployment, LayerObservation, Observation
from .options import validate as validate_options
from .network import (Adaptation, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, NetworkSpec, Neuron, Pool2d,
                      Recurrent, Surrogate, WrappedNetwork, simulate)
from .plugin import PluginInfo, get_manager, hookimpl, hookspec
from .plugin.adapter import AdaptedModel, ModelAdapter, qualname
from .plugin.session import HardwareSession
from .training import Algorithm, Readout, StepResult, TrainState
from .trainer import History, Trainer
from .fidelity import FidelityReport, fidelity

__version__ = "0.1.0"


def wrap(model: Any, *, adapter: str | None = None, **options: Any) -> WrappedNetwork:
    """Wrap a model from a supported SNN library so that cil can train it on hardware.

    The model is not modified or copied: its parameters are trained in place. ``adapter``
    forces a named adapter; otherwise the first loaded adapter that accepts the model type is
    used. ``options`` go to the adapter (e.g. ``input_shape=(2, 34, 34)``).

    Raises :class:`UnsupportedModelError` if no adapter accepts the model type and
    :class:`UnsupportedLayerError` naming the layer an adapter cannot express.
    """
    if isinstance(model, WrappedNetwork):
        return model
    reg = get_manager()
    if adapter is not None:
        chosen = reg.entry("adapters", adapter).value
    else:
        chosen = None
        for name in reg.names("adapters"):
            cand = reg.entry("adapters", name).value
            if cand.accepts(model):
                chosen = cand
                break
        if chosen is None:
            loaded = "; ".join(f"{n}: {reg.entry('adapters', n).value.description}" for n in reg.names("adapters"))
            raise UnsupportedModelError(
                f"no loaded adapter accepts a model of type {qualname(model)}. "
                f"Loaded adapters: {loaded or 'none (pip install a cil adapter plugin, e.g. plugins/cil-snntorch)'}"
            )
    real = getattr(chosen, "real", chosen)  # a LazyAdapter's adapter
    validate_options(getattr(real, "options_signature", None) or real.to_spec, options, f"adapter '{chosen.name}'",
                     skip=1)
    adapted = chosen.adapt(model, **options)
    if not isinstance(adapted, AdaptedModel):
        raise PluginError(f"adapter '{chosen.name}' returned {type(adapted).__name__} from adapt(), not an AdaptedModel")
    return WrappedNetwork(adapted.module, adapted.spec, chosen.name, adapted.parameters)


def make_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name`` by any loaded plugin.

    A name ``"scheme:inner"`` (e.g. ``"ray:speck"``) that is not registered as such is built by
    the factory registered as ``"scheme:"``, called as ``factory("inner", **options)``: a
    wrapper backend (distribution, remote access) around any other backend."""
    reg = get_manager()
    if ":" in name and name not in reg.names("backends"):
        scheme, inner = name.split(":", 1)
        factory = reg.entry("backends", scheme + ":").value
        backend = _build(factory, options, f"backend '{name}'", inner)
        backend.cil_options = dict(options)
        if isinstance(backend, Backend) and not backend.name:
            backend.name = name
        return backend
    backend = _build(reg.entry("backends", name).value, options, f"backend '{name}'")
    try:  # what the backend was built with: checkpoints record it and refuse to resume on another chip
        backend.cil_options = dict(options)
    except AttributeError:  # pragma: no cover - a backend object that takes no attributes
        pass
    if isinstance(backend, Backend) and not backend.name:
        backend.name = name
    return backend


def make_algorithm(name: str, **options: Any) -> Algorithm:
    """Build the training algorithm registered as ``name``."""
    algo = _build(get_manager().entry("algorithms", name).value, options, f"algorithm '{name}'")
    if not getattr(algo, "name", ""):
        algo.name = name
    return algo


def _build(factory: Any, options: dict[str, Any], what: str, *args: Any) -> Any:
    """Validate ``options`` against what ``factory`` declares, then call it; a constructor's own
    ``ValueError``/``TypeError`` about an option becomes an :class:`OptionError`."""
    validate_options(factory, dict(zip(_positional_names(factory), args)) | options, what)
    try:
        return factory(*args, **options)
    except CilError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{what}: {exc}") from exc


def _positional_names(factory: Any) -> list[str]:
    from .options import declared_options

    return list(declared_options(factory)[0])


def list_plugins() -> list[PluginInfo]:
    """The loaded plugins, their distributions and what each registers."""
    return get_manager().plugins()


def register(plugin: Any, name: str | None = None, *, replace: bool = False) -> str:
    """Register a plugin at run time, e.g. a user's own chip, and return its name.

    ``plugin`` is a :class:`Backend` subclass (registered as a backend under its ``name``
    attribute, or ``name``), or a module/object with ``@cil_core.hookimpl`` functions.
    ``replace=True`` replaces a plugin registered under the same name (a re-run notebook cell);
    registering the very same object twice is a no-op."""
    return get_manager().register(plugin, name, replace=replace)


def unregister(name: str) -> None:
    """Remove a plugin registered under ``name``."""
    get_manager().unregister(name)


__all__ = [
    "wrap", "make_backend", "make_algorithm", "list_plugins", "register", "unregister", "Trainer", "History",
    "WrappedNetwork", "NetworkSpec", "Dense", "Conv2d", "Pool2d", "Flatten", "Neuron", "Surrogate",
    "Conv1d", "BatchNorm", "Dropout", "Recurrent", "Adaptation", "fidelity", "FidelityReport",
    "Backend", "Deployment", "Observation", "LayerObservation", "Algorithm", "StepResult", "TrainState",
    "ModelAdapter", "AdaptedModel", "HardwareSession", "Readout", "SpikeData", "EventBatch", "simulate", "hookimpl", "hookspec", "PluginInfo",
    "CilError", "OptionError", "DataError", "CheckpointError", "SpecError", "ShapeError", "NonFiniteError", "UnsupportedModelError", "UnsupportedLayerError",
    "BackendCapacityError", "PluginError", "HardwareError", "LockError",
]
