"""Entry point of the cil-sinabs distribution (group ``cil``). Imports sinabs lazily."""

from __future__ import annotations

from cil_core import hookimpl
from cil_core.plugin.adapter import LazyAdapter


@hookimpl
def cil_register_adapters(register) -> None:
    register("sinabs", LazyAdapter(
        "cil_sinabs.adapter:SinabsAdapter", "sinabs",
        "sinabs nn.Sequential / Network: Conv2d, Linear, Flatten, SumPool2d, AvgPool2d, "
        "IAF/IAFSqueeze/LIF/LIFSqueeze (no tau_syn, no recurrence)", libraries=("sinabs",)))


@hookimpl
def cil_register_jobs(register) -> None:
    def _cil_spl(argv):
        from .bench import main

        return main(argv)

    register("cil-spl", _cil_spl, kind="bench",
             help="Liu et al. 2024 re-creation: ANN->SNN, QAT, BPTT, CIL-SPL on the Speck-style event-driven chip")
