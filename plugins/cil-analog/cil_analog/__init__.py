"""cil-analog: a simulated analog subthreshold SNN chip (backend ``analog-mismatch``)."""

from .backend import AnalogMismatchBackend, ChipMismatch, NonIdealities

__all__ = ["AnalogMismatchBackend", "ChipMismatch", "NonIdealities"]
__version__ = "0.1.0"
