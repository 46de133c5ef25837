"""Finding plugins: the built-ins by module name, installed plugins through the ``cil``
entry-point group, and the parts installed distributions declare without being imported.

Built-ins are registered exactly like external plugins, by module name (as pytest's
``default_plugins`` and datasette's ``DEFAULT_PLUGINS`` are): :data:`BUILTIN_PLUGINS` names the
library's own plugin and the application's, so the library never imports the application layer.

A plugin that fails to import is *broken*: :func:`broken_info` records the reason and a fix, and
everything else keeps working.

**Declared parts.** A distribution may declare the names it provides in a second entry-point
group, ``cil.parts`` (``"backends.speck" = "cil_speck.plugin"``): metadata only, read without
importing anything, so that asking for a part whose plugin is disabled, broken or not loaded
names the distribution that provides it (:func:`declared_provider`). The core names no plugin
itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import pluggy

ENTRY_POINT_GROUP = "cil"
PARTS_GROUP = "cil.parts"
KINDS = ("backends", "adapters", "algorithms", "jobs", "runners", "datasets")

#: the core's own plugins, registered by module name in this order: the library's (ideal
#: backend, algorithms, the Backend/Algorithm bridge) and the application's (demo job, local
#: sweep runner). ``cil plugins`` lists them together as ``cil_core``.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("cil_core", "cil_core.plugin.builtin"),
    ("cil_core.app", "cil_core.app.builtin"),
)
BUILTIN_PREFIX = "cil_core"

#: import names whose pip distribution is called differently
_PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python", "PIL": "pillow"}


@dataclass
class PluginInfo:
    """One plugin and what it contributes (``cil plugins`` prints these). ``error`` and ``fix``
    are set for a broken plugin (then it contributes nothing)."""

    name: str
    distribution: str
    version: str
    backends: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    runners: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    error: str = ""
    fix: str = ""

    @property
    def broken(self) -> bool:
        return bool(self.error)


def entrypoints_enabled() -> bool:
    """False when ``CIL_NO_ENTRYPOINTS`` asks for the built-ins only."""
    return os.environ.get("CIL_NO_ENTRYPOINTS", "") not in ("1", "true", "yes")


def disabled_plugins() -> list[str]:
    """Entry-point names listed in ``CIL_DISABLE_PLUGINS``."""
    return [n for n in (s.strip() for s in os.environ.get("CIL_DISABLE_PLUGINS", "").split(",")) if n]


def register_builtins(pm: pluggy.PluginManager) -> None:
    """Import and register :data:`BUILTIN_PLUGINS` (a failure here is the core's own bug: it raises)."""
    for name, module in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module), name=name)


def load_entrypoints(pm: pluggy.PluginManager, skip: set[str]) -> Iterator[tuple[str, BaseException, tuple[str, str]]]:
    """Load every ``cil`` entry point not registered, blocked or in ``skip``; yield
    ``(name, exception, (distribution, version))`` for each that fails, after unregistering it."""
    for name in disabled_plugins():
        pm.set_blocked(name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name) or ep.name in skip:
            continue
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            pm.check_pending()
        except Exception as exc:  # isolate: report it, keep the others
            plugin = pm.get_plugin(ep.name)
            if plugin is not None:
                pm.unregister(plugin)
            yield ep.name, exc, dist_name(ep)


def declared_provider(kind: str, name: str) -> tuple[str, str] | None:
    """``(distribution, entry-point name)`` of an installed distribution that declares ``name``
    among its ``kind`` in the ``cil.parts`` group, or ``None``."""
    key = f"{kind}.{name}"
    for ep in importlib.metadata.entry_points(group=PARTS_GROUP):
        if ep.name == key:
            plugin = ep.value.split(":")[0]
            for cil_ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if cil_ep.value.split(":")[0] == plugin:
                    return dist_name(ep)[0], cil_ep.name
            return dist_name(ep)[0], plugin
    return None


def dist_name(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", ""
    return dist.metadata["Name"], dist.version


def dist_of_plugin(pm: pluggy.PluginManager, plugin: Any) -> tuple[str, str]:
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return dist.project_name, dist.version
    return "", ""


def installed(name: str) -> tuple[str, str]:
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return name, "(not installed)"


def broken_info(name: str, exc: BaseException, dist: tuple[str, str] | None) -> PluginInfo:
    """The :class:`PluginInfo` of a plugin that failed, with the reason and a fix."""
    dist = dist or ("?", "")
    return PluginInfo(name, dist[0], dist[1], error=f"{type(exc).__name__}: {exc}", fix=fix_for(name, dist[0], exc))


def fix_for(plugin: str, dist: str, exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        return f"pip install {_PIP_NAMES.get(top, top)} (needed by {dist}), or set CIL_DISABLE_PLUGINS={plugin}"
    return f"reinstall {dist} (pip install -e plugins/{dist}), or set CIL_DISABLE_PLUGINS={plugin} to skip it"


__all__ = ["ENTRY_POINT_GROUP", "PARTS_GROUP", "KINDS", "BUILTIN_PLUGINS", "PluginInfo", "register_builtins",
           "load_entrypoints", "declared_provider", "broken_info", "installed"]
