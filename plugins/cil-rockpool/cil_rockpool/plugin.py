"""Entry point of the cil-rockpool distribution (group ``cil``). Imports rockpool lazily."""

from __future__ import annotations

from cil_core.plugin.adapter import lazy_adapter_hook

cil_register_adapters = lazy_adapter_hook(
    "cil_rockpool.adapter:RockpoolAdapter", "rockpool",
    "rockpool Sequential (torch backend) of LinearTorch and LIFTorch (taus/decays/bitshifts leak modes, per-neuron "
    "taus and thresholds, max_spikes_per_dt, Constant neuron parameters); inputs time-major [T, B, C]",
    libraries=("rockpool",))
