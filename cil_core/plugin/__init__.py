"""Plugin machinery: the hook specifications (the contract), the registry that loads plugins
from the ``cil`` entry-point group and isolates broken ones, the core's own plugin, and the
adapter protocol with the torch-layer translation every adapter shares."""

from .hookspecs import hookimpl, hookspec
from .loader import PluginInfo
from .registry import Registry, get_manager, reset_manager

__all__ = ["hookimpl", "hookspec", "PluginInfo", "Registry", "get_manager", "reset_manager"]
