"""Building named parts: :func:`wrap` (a model through its adapter), :func:`make_backend`,
:func:`make_algorithm`, and run-time registration. The facade (:mod:`cil_core`) re-exports
them; the trainer and the fidelity report build their parts through them.

Options are validated against what each factory declares before it is called
(:func:`cil_core.options.validate`), so a misspelt option is an :class:`OptionError` naming it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import CilError, OptionError, PluginError, UnsupportedModelError
from ..hardware.backend import Backend
from ..network.wrapped import WrappedNetwork
from ..options import declared_options, validate
from ..training.algorithm import Algorithm
from .adapter import AdaptedModel, qualname
from .loader import PluginInfo
from .registry import Registry, get_manager


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
    validate(getattr(real, "options_signature", None) or real.to_spec, options, f"adapter '{chosen.name}'", skip=1)
    adapted = chosen.adapt(model, **options)
    if not isinstance(adapted, AdaptedModel):
        raise PluginError(f"adapter '{chosen.name}' returned {type(adapted).__name__} from adapt(), not an AdaptedModel")
    return WrappedNetwork(adapted.module, adapted.spec, chosen.name, adapted.parameters)


def backend_factory(name: str, registry: Registry | None = None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The factory that builds backend ``name`` and its positional arguments.

    A name ``"scheme:inner"`` (e.g. ``"ray:speck"``) that is not registered as such is built by
    the factory registered as ``"scheme:"``, called as ``factory("inner", **options)``: a
    wrapper backend (distribution, remote access) around any other backend."""
    reg = registry or get_manager()
    if ":" in name and name not in reg.names("backends"):
        scheme, inner = name.split(":", 1)
        return reg.entry("backends", scheme + ":").value, (inner,)
    return reg.entry("backends", name).value, ()


def check_backend_options(name: str, options: dict[str, Any], registry: Registry | None = None) -> None:
    """Validate ``options`` for backend ``name`` against its factory's declaration, building nothing."""
    factory, args = backend_factory(name, registry)
    validate(factory, dict(zip(declared_options(factory)[0], args)) | options, f"backend '{name}'")


def make_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name`` by any loaded plugin (``"scheme:inner"``: see
    :func:`backend_factory`)."""
    factory, args = backend_factory(name)
    backend = _build(factory, options, f"backend '{name}'", *args)
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
    validate(factory, dict(zip(declared_options(factory)[0], args)) | options, what)
    try:
        return factory(*args, **options)
    except CilError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{what}: {exc}") from exc


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


__all__ = ["wrap", "make_backend", "make_algorithm", "backend_factory", "check_backend_options", "list_plugins",
           "register", "unregister"]
