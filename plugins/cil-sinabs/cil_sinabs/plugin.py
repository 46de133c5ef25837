"""Entry point of the cil-sinabs distribution (group ``cil``). Imports sinabs lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_sinabs.adapter:SinabsAdapter", "sinabs",
    "sinabs nn.Sequential / Network (from_model): Conv1d/2d, Linear, Flatten, SumPool2d, AvgPool2d, MaxPool2d, "
    "BatchNorm, Dropout; IAF/LIF (tau_syn, Squeeze, Recurrent), ALIF, ExpLeak",
    libraries=("sinabs",))
