"""The hardware-neutral network description and its runtime.

Vocabulary (plain data, importing only :mod:`cil_core.errors`): :mod:`.layers` (synaptic and
shaping layers), :mod:`.neuron` (neuron equations, recurrence, adaptation, surrogates),
:mod:`.spec` (:class:`NetworkSpec`, :data:`FEATURES`), :mod:`.observation` (what a forward
observes); :mod:`.description` re-exports the first three under their former path.

Runtime (above :mod:`cil_core.kernels`): :mod:`.executor` (the time-stepped software pass and
ideal chip), :mod:`.wrapped` (:class:`WrappedNetwork`, a description tied to the user's model)
and :mod:`.reference` (library-free reference networks)."""

from .layers import BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Pool2d
from .neuron import Adaptation, Neuron, NeuronParameter, Recurrent, Refractory, StateQuantization, Surrogate
from .observation import LayerObservation, Observation
from .spec import FEATURES, Layer, NetworkSpec, check_parameters
from .executor import NetworkTrace, simulate
from .wrapped import WrappedNetwork

__all__ = ["NetworkSpec", "FEATURES", "Adaptation", "Refractory", "StateQuantization", "BatchNorm", "Conv1d", "Dropout", "Recurrent", "Dense", "Conv2d",
           "Pool2d", "Flatten", "Layer", "Neuron", "NeuronParameter", "Surrogate", "check_parameters", "LayerObservation", "Observation",
           "simulate", "NetworkTrace", "WrappedNetwork"]
