"""cil-xylo: SynSense Xylo Audio 2 in cil's loop (backend ``xylo``), through the vendor's
bit-accurate simulator (rockpool's ``XyloSim`` over ``xylosim``) and a batched engine checked
bit-exact against it. Importing this package imports neither rockpool nor samna; rockpool is
imported (without samna, see :mod:`cil_xylo.sdk`) only when the ``xylosim`` engine runs."""

from .backend import XyloBackend
from .chip import AUDIO2, AUDIO3, CHIPS, IMU, XyloChip
from .engine import XyloNetwork, run_fast, run_xylosim
from .transfer import layout, to_chip

__all__ = ["XyloBackend", "XyloChip", "AUDIO2", "AUDIO3", "IMU", "CHIPS", "XyloNetwork", "run_fast", "run_xylosim", "layout", "to_chip"]
__version__ = "0.1.0"
