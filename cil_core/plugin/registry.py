"""The plugin registry: the table of named backends, adapters, algorithms, jobs and sweep
runners that the loaded plugins register, run-time registration, and dispatch of the training
step. Finding and loading plugins is :mod:`cil_core.plugin.loader`'s; building parts by name is
:mod:`cil_core.plugin.factories`'.

A plugin whose registration hook raises is isolated like one that fails to import (recorded
as broken, the rest keeps working).

Environment variables:

* ``CIL_DISABLE_PLUGINS=name1,name2`` — do not load these entry points (by entry-point name);
* ``CIL_NO_ENTRYPOINTS=1`` — load only the core's built-ins (plus plugins registered at run time).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from ..errors import PluginError
from . import hookspecs, loader
from .chip_hooks import RegistryChipHooks
from .loader import KINDS, PluginInfo


@dataclass
class _Entry:
    value: Any
    owner: str
    help: str = ""
    kind: str = ""


class Registry:
    """Wraps a :class:`pluggy.PluginManager`; one instance per process (see :func:`get_manager`)."""

    def __init__(self, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._cache: dict[str, dict[str, _Entry]] | None = None
        self._runtime: set[str] = set()
        self.broken: dict[str, PluginInfo] = {}
        loader.register_builtins(self.pm)
        if load_entrypoints and loader.entrypoints_enabled():
            self._load_entrypoints()

    # ---------------------------------------------------------------- loading
    def _load_entrypoints(self) -> None:
        for name, exc, dist in loader.load_entrypoints(self.pm, skip=set(self.broken)):
            self.broken[name] = loader.broken_info(name, exc, dist)
        self._cache = None

    def _mark_broken(self, name: str, exc: BaseException) -> None:
        """Isolate an installed plugin whose registration hook failed."""
        plugin = self.pm.get_plugin(name)
        dist = None
        if plugin is not None:
            dist = loader.dist_of_plugin(self.pm, plugin)
            self.pm.unregister(plugin)
        self.broken[name] = loader.broken_info(name, exc, dist)
        self._cache = None

    # ---------------------------------------------------------------- run-time registration
    def register(self, plugin: Any, name: str | None = None, *, replace: bool = False) -> str:
        """Register a plugin at run time and return its name.

        ``plugin`` is a module or object with ``@hookimpl`` functions, or a
        :class:`~cil_core.hardware.Backend` subclass (registered as a backend under its ``name``
        attribute, or ``name``). The plugin name defaults to the module/class name.
        Registering the same object again returns its name; ``replace=True`` first removes a
        plugin already registered under the same name (e.g. a re-run notebook cell)."""
        plugin, name = _as_plugin(plugin, name)
        if not any(self.pm.parse_hookimpl_opts(plugin, attr) for attr in dir(plugin)):
            raise PluginError(f"{plugin!r} has no @cil_core.hookimpl functions, so registering it would add nothing; "
                              "decorate its hook functions with @cil_core.hookimpl, or register a Backend subclass")
        existing = self.pm.get_plugin(name)
        if existing is plugin:
            return name
        if existing is not None:
            if not replace:
                raise PluginError(f"a plugin named {name!r} is already registered; pass replace=True to replace it "
                                  "(e.g. when re-running a notebook cell) or choose another name")
            self.unregister(name)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
        self._runtime.add(name)
        self._cache = None
        try:
            self._collect()  # fail now, not later, on duplicate names
        except PluginError:
            self.unregister(name)
            raise
        return name

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            raise PluginError(f"no plugin named {name!r} is registered")
        self.pm.unregister(plugin)
        self._runtime.discard(name)
        self._cache = None

    # ---------------------------------------------------------------- the table
    def _collect(self) -> dict[str, dict[str, _Entry]]:
        while self._cache is None:
            try:
                self._cache = self._collect_once()
            except _PluginFailed as failed:  # an installed plugin's registration hook failed: isolate it
                self._mark_broken(failed.plugin, failed.cause)
        return self._cache

    def _collect_once(self) -> dict[str, dict[str, _Entry]]:
        table: dict[str, dict[str, _Entry]] = {k: {} for k in KINDS}
        hooks = {k: getattr(self.pm.hook, f"cil_register_{k}") for k in KINDS}
        for section, caller in hooks.items():
            for impl in caller.get_hookimpls():  # registration order: built-ins first
                owner = impl.plugin_name

                def register(name: str, value: Any, *, help: str = "", kind: str = "", _k: str = section,
                             _o: str = owner) -> None:
                    if name in table[_k]:
                        raise PluginError(f"{_k[:-1]} name {name!r} registered by plugin '{_o}' is already "
                                          f"registered by plugin '{table[_k][name].owner}'")
                    table[_k][name] = _Entry(value, _o, help, kind)

                try:
                    impl.function(register=register)
                except Exception as exc:
                    if owner in self._runtime or _builtin(owner):
                        raise exc if isinstance(exc, PluginError) else PluginError(
                            f"plugin '{owner}' failed to register its {section}: {exc!r}") from exc
                    raise _PluginFailed(owner, exc) from exc
        return table

    def names(self, kind: str) -> list[str]:
        return list(self._collect()[kind])

    def entry(self, kind: str, name: str) -> _Entry:
        table = self._collect()[kind]
        if name in table:
            return table[name]
        raise PluginError(self._missing_message(kind, name, table))

    def _missing_message(self, kind: str, name: str, table: dict[str, _Entry]) -> str:
        what = kind[:-1]
        msg = f"no {what} named {name!r} is loaded (loaded: {', '.join(sorted(table)) or 'none'})"
        declared = loader.declared_provider(kind, name)
        if declared is not None:
            dist, plugin = declared
            b = self.broken.get(plugin)
            if b is not None:
                return (f"{msg}. It comes from plugin '{b.name}' ({b.distribution}), which is installed but broken: "
                        f"{b.error}. Fix: {b.fix}")
            if self.pm.is_blocked(plugin):
                why = f"disabled by CIL_DISABLE_PLUGINS: take '{plugin}' out of it"
            elif not loader.entrypoints_enabled():
                why = "entry points are not loaded (CIL_NO_ENTRYPOINTS): unset it"
            else:
                why = f"its plugin is not loaded: reinstall it (pip install -e plugins/{dist}, or pip install {dist})"
            return f"{msg}. The {what} {name!r} is provided by the distribution '{dist}' (plugin '{plugin}'), " \
                   f"which is installed but {why}"
        close = difflib.get_close_matches(name, list(table), n=1)
        if close:
            return f"{msg}; did you mean {close[0]!r}?"
        return (f"{msg}. No installed distribution declares it: pip install the cil plugin that provides it "
                "(cil plugins lists what is installed)")

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with what it contributes, then the broken ones."""
        table = self._collect()
        dists = {id(p): (d.project_name, d.version) for p, d in self.pm.list_plugin_distinfo()}
        out: dict[str, PluginInfo] = {}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            shown = loader.BUILTIN_PREFIX if _builtin(name) else name  # the built-ins are listed as one
            if shown not in out:
                if shown == loader.BUILTIN_PREFIX:
                    dist = loader.installed("cil-core")
                elif name in self._runtime:
                    dist = ("(registered at run time)", "")
                else:
                    dist = dists.get(id(plugin), ("?", ""))
                out[shown] = PluginInfo(shown, *dist)
            for kind in KINDS:
                getattr(out[shown], kind).extend(n for n, e in table[kind].items() if e.owner == name)
        return list(out.values()) + list(self.broken.values())

    # ---------------------------------------------------------------- dispatch
    def chip_hooks(self) -> RegistryChipHooks:
        """The chip hooks of this registry's plugins, typed (what a session is handed)."""
        return RegistryChipHooks(self.pm)

    def train_step(self, algorithm: Any, state: Any, batch: Any) -> Any:
        result = self.pm.hook.cil_train_step(algorithm=algorithm, state=state, batch=batch)
        if result is None:
            raise PluginError(f"no plugin implements the training step of algorithm {algorithm!r}")
        return result


class _PluginFailed(Exception):
    def __init__(self, plugin: str, cause: BaseException) -> None:
        super().__init__(plugin)
        self.plugin, self.cause = plugin, cause


def _as_plugin(plugin: Any, name: str | None) -> tuple[Any, str]:
    """A Backend subclass becomes a one-hook plugin; other classes are refused (their hook
    functions would be unbound)."""
    if inspect.isclass(plugin):
        from ..hardware.backend import Backend

        if not issubclass(plugin, Backend):
            raise PluginError(f"register() got the class {plugin.__name__}; pass an instance or a module with "
                              "@cil_core.hookimpl functions, or a cil_core.Backend subclass")
        backend_cls = plugin
        backend = name or backend_cls.name or backend_cls.__name__.lower()

        class _BackendPlugin:
            @hookspecs.hookimpl
            def cil_register_backends(self, register: Callable[..., None]) -> None:
                register(backend, backend_cls)

            def __repr__(self) -> str:
                return f"<backend plugin {backend!r} ({backend_cls.__qualname__})>"

        return _BackendPlugin(), name or backend
    if name is None:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return plugin, name


def _builtin(plugin_name: str) -> bool:
    return any(plugin_name == name for name, _ in loader.BUILTIN_PLUGINS)


_MANAGER: Registry | None = None


def get_manager() -> Registry:
    """The process-wide registry, created (and entry points loaded) on first use."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = Registry()
    return _MANAGER


def reset_manager(load_entrypoints: bool = True) -> Registry:
    """Forget all run-time registrations and reload (tests use it)."""
    global _MANAGER
    _MANAGER = Registry(load_entrypoints=load_entrypoints)
    return _MANAGER


__all__ = ["Registry", "PluginInfo", "get_manager", "reset_manager"]
