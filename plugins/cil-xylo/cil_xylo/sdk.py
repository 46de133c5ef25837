"""The vendor's SDK, imported without ``samna``.

rockpool 2.9–3.1 cannot import ``rockpool.devices.xylo`` on a machine without SynSense's
``samna``: that package's ``__init__`` imports ``syns65302``, whose ``__init__`` imports
``afe_samna_pdm``, which runs ``import samna`` outside any guard. The ``samna`` on the package
registry is a stub that tries to download the real SDK from an unreachable host *when imported*,
so that import must never run. The simulator itself does not need samna: the chip subpackage
``rockpool.devices.xylo.syns61201`` (Xylo Audio 2) guards its samna parts and gives
``XyloSim`` (over ``xylosim``'s C++ core) without it.

:func:`xylo_audio2` therefore registers ``rockpool.devices.xylo`` in ``sys.modules`` as a bare
package (a :class:`types.ModuleType` whose ``__path__`` is the folder, so its submodules import
and its ``__init__`` never runs) and imports ``rockpool.devices.xylo.syns61201`` directly. It
never creates a fake ``samna`` module: rockpool's ``backend_available("samna")`` would then
report samna present and its guarded imports would re-raise.

``import rockpool`` itself tries ``import samna``: ``rockpool.utilities.backend_management``
evaluates ``check_samna_available()`` (a ``try: import samna``) when it is imported. Where the
registry's stub is installed (``sinabs`` requires ``samna``, so it is in every environment that
has cil-sinabs), that import starts ``pip install --force-reinstall samna`` from SynSense's index
in a subprocess. So while rockpool is imported, :func:`blocked_samna` puts ``None`` under
``sys.modules["samna"]`` — Python's own way of making an import fail at once (``ImportError``),
not a module — and removes it afterwards: rockpool records samna as unavailable, nothing runs,
and ``samna`` is absent from ``sys.modules`` after the import (tested after a training run).

If a rockpool release moves the subpackage or ``XyloSim``, the import fails with a
:class:`~cil_core.errors.PluginError` naming the rockpool version, the path that failed and the
versions this plugin is written for.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from typing import Any

from cil_core.errors import PluginError
from cil_core.plugin.sdk import bare_package as _bare_package
from cil_core.plugin.sdk import blocked_modules

#: the rockpool and xylosim releases this plugin is written and tested for
ROCKPOOL_VERSION = "3.1.0"
XYLOSIM_VERSION = "0.1.3"
#: the package whose ``__init__`` must not run, and the chip subpackage imported instead
XYLO_PACKAGE = "rockpool.devices.xylo"
AUDIO2_PACKAGE = "rockpool.devices.xylo.syns61201"

_cache: dict[str, Any] = {}


def _versions() -> str:
    from importlib import metadata

    out = []
    for dist in ("rockpool", "xylosim"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def _fail(step: str, exc: BaseException | None) -> PluginError:
    cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return PluginError(
        f"cil-xylo cannot load the Xylo simulator: {step}{cause} (installed: {_versions()}; cil-xylo is written "
        f"for rockpool=={ROCKPOOL_VERSION} and xylosim=={XYLOSIM_VERSION}: pip install rockpool=={ROCKPOOL_VERSION} "
        f"xylosim=={XYLOSIM_VERSION})")


def blocked_samna() -> contextlib.AbstractContextManager[None]:
    """``import samna`` fails at once while the block runs (:func:`cil_core.plugin.sdk.blocked_modules`)."""
    return blocked_modules("samna")


def bare_package(name: str) -> types.ModuleType:
    """``name`` registered without running its ``__init__`` (:func:`cil_core.plugin.sdk.bare_package`);
    a :class:`PluginError` naming the rockpool release if the package is not where it should be."""
    mod = _bare_package(name)
    if mod is None:
        raise _fail(f"the package {name} is not where rockpool {ROCKPOOL_VERSION} has it", None)
    return mod


def xylo_audio2() -> types.ModuleType:
    """rockpool's Xylo Audio 2 subpackage (``XyloSim``), imported without samna (see the module
    docstring). Raises :class:`~cil_core.errors.PluginError` naming the cause if rockpool or
    xylosim is missing or a rockpool release moved the code."""
    return xylo_subpackage(AUDIO2_PACKAGE)


def xylo_subpackage(package: str) -> types.ModuleType:
    """A chip subpackage of ``rockpool.devices.xylo`` (``syns61201``: Audio 2; ``syns63300``: IMU,
    whose ``XyloSim`` rockpool also uses for Audio 3), imported without samna and without
    running ``rockpool.devices.xylo``'s ``__init__``; a :class:`PluginError` naming the cause if
    it cannot be."""
    hit = _cache.get(package)
    if hit is not None:
        return hit
    with blocked_samna():
        try:
            import rockpool  # noqa: F401  (its __init__ tries `import samna`: blocked)
        except Exception as exc:  # pragma: no cover - depends on the installation
            raise _fail("import rockpool failed", exc) from exc
        try:
            import xylosim.v2  # noqa: F401
        except Exception as exc:  # pragma: no cover
            raise _fail("import xylosim.v2 (the C++ core) failed", exc) from exc
        try:
            importlib.import_module("rockpool.devices")  # a docstring only
            bare_package(XYLO_PACKAGE)
            mod = importlib.import_module(package)
        except PluginError:
            raise
        except Exception as exc:
            raise _fail(f"import {package} failed", exc) from exc
    sim = getattr(mod, "XyloSim", None)
    if sim is None or not hasattr(sim, "from_specification") or getattr(sim, "__name__", "") != "XyloSim":
        raise _fail(f"{package}.XyloSim is missing or is rockpool's placeholder (its xylo_sim module "
                    "did not import)", None)
    _cache[package] = mod
    return mod


def xylo_sim_class(package: str | None = None) -> Any:
    """``XyloSim`` of ``package`` (default ``rockpool.devices.xylo.syns61201``, see
    :func:`xylo_subpackage`)."""
    return xylo_subpackage(package or AUDIO2_PACKAGE).XyloSim


__all__ = ["xylo_audio2", "xylo_subpackage", "xylo_sim_class", "bare_package", "blocked_samna", "ROCKPOOL_VERSION", "XYLOSIM_VERSION"]
