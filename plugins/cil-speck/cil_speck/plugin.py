"""Entry point of the cil-speck distribution (group ``cil``)."""

from __future__ import annotations

from cil_core import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    from .backend import SpeckBackend

    register("speck", SpeckBackend)


@hookimpl
def cil_register_datasets(register) -> None:
    from .data import NMNISTDataset

    register("nmnist", NMNISTDataset)
