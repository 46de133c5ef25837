"""Entry point of the ``cil`` plugin group: registers the ``xylo`` backend."""

from __future__ import annotations

from cil_core import hookimpl

from .backend import XyloBackend


@hookimpl
def cil_register_backends(register) -> None:
    register("xylo", XyloBackend)
