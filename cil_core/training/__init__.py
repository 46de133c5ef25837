"""Training: the readout, the algorithm contract, the built-in algorithms (offline BPTT,
CIL-SPL, Metropolis-Hastings) and the :class:`Trainer` that runs them with a chip in the loop."""

from .algorithm import Algorithm, StepResult, TrainState
from .gradient import CilSpl, GradientAlgorithm, Offline
from .mh import MetropolisHastings
from .readout import Readout
from .trainer import History, Trainer

__all__ = ["Algorithm", "StepResult", "TrainState", "GradientAlgorithm", "Offline", "CilSpl",
           "MetropolisHastings", "Readout", "Trainer", "History"]
