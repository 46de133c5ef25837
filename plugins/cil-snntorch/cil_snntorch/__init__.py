"""cil plugin: wrap snntorch models unchanged (see :mod:`cil_snntorch.adapter`)."""

from .adapter import SnnTorchAdapter, run_native

__all__ = ["SnnTorchAdapter", "run_native"]
