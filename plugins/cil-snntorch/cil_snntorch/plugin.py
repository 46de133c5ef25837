"""Entry point of the cil-snntorch distribution (group ``cil``). Imports snntorch lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_snntorch.adapter:SnnTorchAdapter", "snntorch",
    "nn.Sequential (nested ones flattened) of Linear/Conv1d/Conv2d/AvgPool2d/MaxPool2d/BatchNorm/Dropout/Flatten "
    "with snn.Leaky/Synaptic/RLeaky/RSynaptic/Lapicque (init_hidden=True), or a module whose forward loops over "
    "time-major input",
    libraries=("snntorch",))
