"""Entry point of the ``cil`` plugin group: registers the ``analog-mismatch`` backend (the
MH-vs-backprop re-creation is ``benchmarks/mh_vs_backprop.py`` in the repository)."""

from __future__ import annotations

from cil_core import hookimpl

from .backend import AnalogMismatchBackend


@hookimpl
def cil_register_backends(register) -> None:
    register("analog-mismatch", AnalogMismatchBackend)
