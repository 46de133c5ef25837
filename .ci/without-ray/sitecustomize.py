"""A machine without Ray, inside the project's environment: ``make test-without-ray``.

Put on ``PYTHONPATH``, this makes ``ray`` and ``cil_ray`` unimportable and hides the cil-ray and
ray distributions and their entry points, so cil behaves as if ``plugins/cil-ray`` (and Ray)
were never installed. The core and its tests must not need Ray (the Ray tests skip)."""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import sys

HIDDEN = ("ray", "cil_ray")


class _NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoRay())
_distributions, _entry_points = md.distributions, md.entry_points


def _visible(dist) -> bool:
    return (dist.metadata["Name"] or "").lower() not in ("cil-ray", "ray")


def distributions(*args, **kwargs):
    return (d for d in _distributions(*args, **kwargs) if _visible(d))


def entry_points(*args, **kwargs):
    eps = _entry_points(*args, **kwargs)
    if isinstance(eps, md.EntryPoints):
        return md.EntryPoints(e for e in eps if e.value.split(".")[0].split(":")[0] not in HIDDEN)
    return eps


md.distributions, md.entry_points = distributions, entry_points
