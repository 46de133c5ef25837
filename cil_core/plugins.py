"""Plugin manager: loads the ``cil`` entry-point group, validates plugins, keeps the registry of
named backends, adapters, algorithms and jobs, and dispatches the three worker hooks.

Environment variables:

* ``CIL_DISABLE_PLUGINS=name1,name2`` — do not load these entry points (by entry-point name);
* ``CIL_NO_ENTRYPOINTS=1`` — load only the core's built-ins (plus plugins registered at run time).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "cil"


@dataclass
class PluginInfo:
    """One loaded plugin and what it contributes (``cil plugins`` prints these)."""

    name: str
    distribution: str
    version: str
    backends: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)


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
        self._dists: dict[str, tuple[str, str]] = {}
        self._cache: dict[str, dict[str, _Entry]] | None = None
        from . import builtin

        self.pm.register(builtin, name="cil_core.builtin")
        self._dists["cil_core.builtin"] = _dist_of("cil-core")
        if load_entrypoints and os.environ.get("CIL_NO_ENTRYPOINTS", "") not in ("1", "true", "yes"):
            self._load_entrypoints()
        self.pm.check_pending()

    # ---------------------------------------------------------------- loading
    def _load_entrypoints(self) -> None:
        blocked = {s.strip() for s in os.environ.get("CIL_DISABLE_PLUGINS", "").split(",") if s.strip()}
        for name in blocked:
            self.pm.set_blocked(name)
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken plugin must not hide the others, but must be visible
                    raise PluginError(
                        f"plugin '{ep.name}' from distribution '{dist.metadata['Name']}' failed to import: {exc!r}. "
                        f"Set CIL_DISABLE_PLUGINS={ep.name} to skip it."
                    ) from exc
                self._register(plugin, ep.name)
                self._dists[ep.name] = (dist.metadata["Name"], dist.version)

    def _register(self, plugin: Any, name: str | None) -> str:
        try:
            registered = self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginError(f"plugin {name or plugin!r} is invalid: {exc}") from exc
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
        if registered is None:
            raise PluginError(f"plugin {name!r} is blocked (CIL_DISABLE_PLUGINS)")
        self._cache = None
        return registered

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (module or instance with ``@hookimpl`` functions) at run time."""
        registered = self._register(plugin, name)
        self._dists.setdefault(registered, ("(registered at run time)", ""))
        try:
            self._collect()  # fail now, not later, on duplicate names
        except PluginError:
            self.unregister(registered)
            raise
        return registered

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            raise PluginError(f"no plugin named {name!r} is registered")
        self.pm.unregister(plugin)
        self._dists.pop(name, None)
        self._cache = None

    # ---------------------------------------------------------------- registry
    def _collect(self) -> dict[str, dict[str, _Entry]]:
        if self._cache is not None:
            return self._cache
        table: dict[str, dict[str, _Entry]] = {"backends": {}, "adapters": {}, "algorithms": {}, "jobs": {}}
        hooks = {
            "backends": self.pm.hook.cil_register_backends,
            "adapters": self.pm.hook.cil_register_adapters,
            "algorithms": self.pm.hook.cil_register_algorithms,
            "jobs": self.pm.hook.cil_register_jobs,
        }
        for section, caller in hooks.items():
            # registration order: built-ins first, then plugins in load order
            for impl in caller.get_hookimpls():
                owner = impl.plugin_name

                def register(name: str, value: Any, *, help: str = "", kind: str = "", _k: str = section,
                             _o: str = owner) -> None:
                    if name in table[_k]:
                        raise PluginError(
                            f"{_k[:-1]} name {name!r} registered by plugin '{_o}' is already registered by "
                            f"plugin '{table[_k][name].owner}'"
                        )
                    table[_k][name] = _Entry(value, _o, help, kind)

                impl.function(register=register)
        self._cache = table
        return table

    def names(self, kind: str) -> list[str]:
        return list(self._collect()[kind])

    def entry(self, kind: str, name: str) -> _Entry:
        table = self._collect()[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(f"no {kind[:-1]} named {name!r} is loaded (loaded: {known})")
        return table[name]

    def plugins(self) -> list[PluginInfo]:
        table = self._collect()
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            dist, ver = self._dists.get(name, ("?", ""))
            info = PluginInfo(name, dist, ver)
            for kind in ("backends", "adapters", "algorithms", "jobs"):
                getattr(info, kind).extend(n for n, e in table[kind].items() if e.owner == name)
            out.append(info)
        return out

    # ---------------------------------------------------------------- dispatch
    def transfer(self, backend: Any, network: Any, params: dict, n_sets: int | None = None) -> Any:
        result = self.pm.hook.cil_transfer(backend=backend, network=network, params=params, n_sets=n_sets)
        if result is None:
            raise PluginError(f"no plugin implements weight transfer for backend {backend!r}")
        return result

    def forward(self, backend: Any, deployment: Any, inputs: Any, record: bool = False) -> Any:
        result = self.pm.hook.cil_forward(backend=backend, deployment=deployment, inputs=inputs, record=record)
        if result is None:
            raise PluginError(f"no plugin implements forward for backend {backend!r}")
        return result

    def train_step(self, algorithm: Any, state: Any, batch: Any) -> Any:
        result = self.pm.hook.cil_train_step(algorithm=algorithm, state=state, batch=batch)
        if result is None:
            raise PluginError(f"no plugin implements the training step of algorithm {algorithm!r}")
        return result


def _dist_of(name: str) -> tuple[str, str]:
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return name, "(not installed)"


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
