"""The hardware-neutral network description (layers and neuron equations), its time-stepped
executor (the software pass and the ideal chip), the :class:`WrappedNetwork` that ties a
description to the user's model, and library-free reference networks."""

from .description import (FEATURES, Adaptation, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Layer, NetworkSpec,
                          Neuron, Pool2d, Recurrent, Surrogate, check_parameters)
from .executor import NetworkTrace, simulate
from .wrapped import WrappedNetwork

__all__ = ["NetworkSpec", "FEATURES", "Adaptation", "BatchNorm", "Conv1d", "Dropout", "Recurrent", "Dense", "Conv2d", "Pool2d", "Flatten", "Layer", "Neuron", "Surrogate",
           "check_parameters", "simulate", "NetworkTrace", "WrappedNetwork"]
