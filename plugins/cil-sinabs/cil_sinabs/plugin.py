"""Entry point of the cil-sinabs distribution (group ``cil``). Imports sinabs lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_sinabs.adapter:SinabsAdapter", "sinabs",
    "sinabs nn.Sequential / Network: Conv2d, Linear, Flatten, SumPool2d, AvgPool2d, "
    "IAF/IAFSqueeze/LIF/LIFSqueeze (no tau_syn, no recurrence)",
    libraries=("sinabs",))
