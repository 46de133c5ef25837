"""cil-analog: a simulated analog subthreshold SNN chip (backend ``analog-mismatch``) and the
Metropolis-Hastings vs backprop re-creation benchmark (Safa et al. 2024)."""

from .backend import AnalogMismatchBackend, ChipMismatch, NonIdealities

__all__ = ["AnalogMismatchBackend", "ChipMismatch", "NonIdealities"]
__version__ = "0.1.0"
