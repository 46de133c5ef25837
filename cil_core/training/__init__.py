"""Training: the readout, the algorithm contract, the built-in algorithms (offline BPTT,
CIL-SPL, Metropolis-Hastings, gradient-informed MH) (the :class:`~cil_core.trainer.Trainer` that runs them with a chip in the loop sits above the plugin machinery, in :mod:`cil_core.trainer`)."""

from .algorithm import Algorithm, StepResult, TrainState
from .gradient import CilSpl, GradientAlgorithm, Offline
from .langevin import Langevin
from .mh import MetropolisHastings
from .readout import Readout

__all__ = ["Algorithm", "StepResult", "TrainState", "GradientAlgorithm", "Offline", "CilSpl",
           "MetropolisHastings", "Langevin", "Readout"]
