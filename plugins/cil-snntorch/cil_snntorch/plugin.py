"""Entry point of the cil-snntorch distribution (group ``cil``)."""

from __future__ import annotations

from cil_core import hookimpl

from .adapter import SnnTorchAdapter


@hookimpl
def cil_register_adapters(register) -> None:
    register("snntorch", SnnTorchAdapter())


@hookimpl
def cil_register_jobs(register) -> None:
    from .demo import main

    register("demo", main, help="breast-cancer snntorch net on the analog-mismatch chip: offline vs CIL-SPL vs MH",
             kind="demo")
