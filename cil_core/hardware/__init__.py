"""Everything on the chip side of cil: what a backend is (:class:`Backend`), what it holds
(:class:`Deployment`) and returns (:class:`Observation`), the weight-transfer primitives
every backend shares, and the :class:`HardwareSession` through which all calls pass.

The built-in ``ideal`` backend lives in :mod:`cil_core.hardware.ideal` (imported on demand).
"""

from .observation import LayerObservation, Observation  # noqa: I001  (no cil imports: first)
from .backend import Backend, Deployment, realised_neurons
from .session import CallContext, HardwareSession, SessionStats, current_call
from .transfer import fold_batchnorm, prepare_for_backend, quantize_symmetric, straight_through, symmetric_scale

__all__ = ["Backend", "Deployment", "realised_neurons", "Observation", "LayerObservation", "HardwareSession", "SessionStats",
           "CallContext", "current_call",
           "quantize_symmetric", "straight_through", "symmetric_scale", "fold_batchnorm", "prepare_for_backend"]
