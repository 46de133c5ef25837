"""Entry point of the cil-nir distribution (group ``cil``). Imports nir lazily."""

from __future__ import annotations

import os
from typing import Any

from cil_core.plugin.adapter import LazyAdapter, lazy_adapter_hook


class _LazyNirAdapter(LazyAdapter):
    """Also accepts ``.nir`` file paths (a str or path object has no ``nir`` module to look at)."""

    def accepts(self, model: Any) -> bool:
        if isinstance(model, (str, os.PathLike)):
            return str(model).endswith(".nir")
        return super().accepts(model)


cil_register_adapters = lazy_adapter_hook(
    "cil_nir.importer:NirAdapter", "nir",
    "NIR graphs (nir.NIRGraph or a .nir file; options dt, reset, discretization) and cil_nir.NIRNetwork: "
    "chains of Affine/Linear/Conv2d/SumPool2d/AvgPool2d/Flatten with LIF/CubaLIF/IF/LI/I",
    libraries=("nir", "cil_nir"), adapter_class=_LazyNirAdapter)
