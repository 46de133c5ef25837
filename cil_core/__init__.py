"""cil — chip-in-the-loop training for spiking neural networks.

Public API::

    import cil_core as cil
    net = cil.wrap(model)                               # any supported SNN library model
    chip = cil.make_backend("analog-mismatch", seed=3)  # any loaded backend plugin
    trainer = cil.Trainer(net, chip, algorithm="mh")    # "offline", "cil-spl", "mh", ...
    trainer.fit((x_train, y_train))
    trainer.evaluate((x_test, y_test))                  # measured on the chip
    cil.list_plugins()

Plugins implement the hooks in :mod:`cil_core.plugin.hookspecs` and are found through the ``cil``
entry-point group, or registered at run time with :func:`register`.
"""

from __future__ import annotations

from .data import EventBatch, SpikeData
from .errors import (
    BackendCapacityError,
    CheckpointError,
    CilError,
    DataError,
    HardwareError,
    LockError,
    NonFiniteError,
    OptionError,
    PluginError,
    ShapeError,
    SpecError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from .hardware import Backend, Deployment, LayerObservation, Observation
from .network import (Adaptation, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, NetworkSpec, Neuron,
                      NeuronParameter, Pool2d, Recurrent, Refractory, StateQuantization, Surrogate, WrappedNetwork, simulate)
from .plugin import PluginInfo, get_manager, hookimpl, hookspec
from .plugin.adapter import AdaptedModel, ModelAdapter
from .plugin.factories import list_plugins, make_algorithm, make_backend, register, unregister, wrap
from .plugin.session import HardwareSession
from .training import Algorithm, Readout, StepResult, TrainState
from .trainer import History, Trainer
from .fidelity import FidelityReport, fidelity

__version__ = "0.1.0"


__all__ = [
    "wrap", "make_backend", "make_algorithm", "list_plugins", "register", "unregister", "Trainer", "History",
    "WrappedNetwork", "NetworkSpec", "Dense", "Conv2d", "Pool2d", "Flatten", "Neuron", "NeuronParameter", "Surrogate",
    "Conv1d", "BatchNorm", "Dropout", "Recurrent", "Adaptation", "Refractory", "StateQuantization", "fidelity", "FidelityReport",
    "Backend", "Deployment", "Observation", "LayerObservation", "Algorithm", "StepResult", "TrainState",
    "ModelAdapter", "AdaptedModel", "HardwareSession", "Readout", "SpikeData", "EventBatch", "simulate", "hookimpl", "hookspec", "PluginInfo",
    "CilError", "OptionError", "DataError", "CheckpointError", "SpecError", "ShapeError", "NonFiniteError", "UnsupportedModelError", "UnsupportedLayerError",
    "BackendCapacityError", "PluginError", "HardwareError", "LockError",
]
