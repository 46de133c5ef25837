"""Entry point of the cil-snntorch distribution (group ``cil``). Imports snntorch lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_snntorch.adapter:SnnTorchAdapter", "snntorch",
    "nn.Sequential of Linear/Conv2d/AvgPool2d/Flatten with snn.Leaky/snn.Synaptic (init_hidden=True), "
    "or a module whose forward loops over time-major input",
    libraries=("snntorch",))
