"""Entry point of the cil-norse distribution (group ``cil``). Imports norse lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_norse.adapter:NorseAdapter", "norse",
    "norse SequentialState of Linear/Conv2d/AvgPool2d/Flatten with LIFCell/LIFBoxCell/IAFCell/LICell, "
    "or with the time-looping LIF/IAF/LI (convolutions in norse.torch.Lift)",
    libraries=("norse",))
