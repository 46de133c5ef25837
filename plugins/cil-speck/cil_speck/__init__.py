"""cil-speck: a Speck / DYNAP-CNN-style event-driven chip backend (numba) and event data.

No sinabs, no samna: this package is MIT. tonic (GPL-3.0) is only imported lazily by
:func:`cil_speck.data.load_nmnist`.
"""

from .backend import SpeckBackend

__all__ = ["SpeckBackend"]
