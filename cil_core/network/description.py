"""Re-export of the network vocabulary under its former module path.

The description now lives in :mod:`cil_core.network.layers` (synaptic and shaping layers),
:mod:`cil_core.network.neuron` (neurons, recurrence, adaptation, surrogates) and
:mod:`cil_core.network.spec` (:class:`NetworkSpec`, :data:`FEATURES`, :func:`check_parameters`).
This module keeps ``from cil_core.network.description import ...`` working, and with it every
network saved before the split: a pickle (``torch.save`` of a wrapped network) records each
class as ``cil_core.network.description.<name>``, which resolves here.
"""

from .layers import SYNAPTIC, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Pool2d
from .neuron import (Adaptation, CurrentTiming, Neuron, NeuronParameter, Recurrent, Refractory, Reset, ResetTiming,
                     Scalar, StateQuantization, Surrogate, resolve_neuron)
from .spec import FEATURES, Layer, NetworkSpec, check_neuron_ranges, check_parameters

__all__ = [
    "FEATURES", "Dense", "Conv1d", "Conv2d", "BatchNorm", "Dropout", "Recurrent", "Adaptation", "Refractory",
    "StateQuantization", "Pool2d",
    "Flatten", "Neuron", "Surrogate", "NetworkSpec", "Layer", "SYNAPTIC", "check_parameters",
    "Scalar", "Reset", "ResetTiming", "CurrentTiming", "NeuronParameter", "resolve_neuron", "check_neuron_ranges",
]
