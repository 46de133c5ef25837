"""Entry point of the cil-norse distribution (group ``cil``). Imports norse lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_norse.adapter:NorseAdapter", "norse",
    "norse SequentialState (nested ones flattened) of Linear/Conv1d/Conv2d/AvgPool2d/MaxPool2d/BatchNorm/Dropout/"
    "Flatten with LIFCell/LIFBoxCell/IAFCell/LICell/LIFRecurrentCell/LSNNCell/LSNNRecurrentCell/LILinearCell, "
    "or with the time-looping LIF/IAF/LI/LIFRecurrent/LSNN/LSNNRecurrent (per-step layers in norse.torch.Lift)",
    libraries=("norse",))
