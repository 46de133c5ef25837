"""Training algorithms that ship with the core (registered like any plugin's)."""

from .base import Algorithm, StepResult, TrainState
from .gradient import CilSpl, GradientAlgorithm, Offline
from .mh import MetropolisHastings

__all__ = ["Algorithm", "StepResult", "TrainState", "GradientAlgorithm", "Offline", "CilSpl", "MetropolisHastings"]
