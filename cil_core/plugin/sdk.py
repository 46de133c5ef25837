"""Importing a vendor's SDK safely, for the plugins that drive one (cil-xylo, cil-rockpool).

Vendor packages sometimes import, at import time, something that must not run here: rockpool
runs ``import samna`` when it loads, and the ``samna`` on the package registry is a stub that
pip-installs SynSense's SDK from an unreachable host *when imported*. :func:`blocked_modules`
makes such an import fail at once for the duration of a block (``sys.modules[name] = None`` is
Python's own way of saying "this module cannot be imported": ``ImportError``, no finder runs), so
the vendor package records the module as unavailable; the entry is removed afterwards. A fake
module would be wrong: the package would then believe the SDK present.

:func:`bare_package` registers a package without running its ``__init__`` (a module whose
``__path__`` is the package's folder), for a package whose ``__init__`` imports what must not be
imported while the submodule that is needed does not.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def blocked_modules(*names: str) -> Iterator[None]:
    """While the block runs, ``import NAME`` raises ``ImportError`` at once for each of ``names``;
    afterwards the entries are removed again (a module someone really imported before is left
    alone)."""
    blocked = [n for n in names if n not in sys.modules]
    for n in blocked:
        sys.modules[n] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for n in blocked:
            if n in sys.modules and sys.modules[n] is None:
                del sys.modules[n]


def bare_package(name: str) -> types.ModuleType | None:
    """Register the package ``name`` in ``sys.modules`` without running its ``__init__``, so that
    ``import name.sub`` works; ``None`` if the package is not found (the caller names the cause).
    A package already imported (bare or not) is returned as it is."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    parent, _, child = name.rpartition(".")
    spec = importlib.util.find_spec(parent) if parent else None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = next((Path(p) / child for p in locations if (Path(p) / child / "__init__.py").is_file()), None)
    if folder is None:
        return None
    mod = types.ModuleType(name, f"{name} registered without running its __init__ (cil_core.plugin.sdk)")
    mod.__path__ = [str(folder)]  # type: ignore[attr-defined]
    mod.__package__ = name
    sys.modules[name] = mod
    if parent:
        setattr(importlib.import_module(parent), child, mod)
    return mod


__all__ = ["blocked_modules", "bare_package"]
