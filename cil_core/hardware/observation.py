"""Re-export: :class:`Observation` and :class:`LayerObservation` are part of the network
vocabulary and live in :mod:`cil_core.network.observation` (this path keeps working)."""

from ..network.observation import LayerObservation, Observation

__all__ = ["LayerObservation", "Observation"]
