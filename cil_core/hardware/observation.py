"""What a chip returns: :class:`Observation` (the output, and optionally per-layer activity
as :class:`LayerObservation`). Plain torch containers, free of any other cil module, so that
the software executor (which injects observations) and the hardware side share them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerObservation:
    """Observed activity of one neuron layer: ``spikes`` and optionally ``membrane``, each
    ``[T, (S,) B, *features]``."""

    spikes: torch.Tensor
    membrane: torch.Tensor | None = None


@dataclass
class Observation:
    """What a forward on hardware returns.

    ``output``: the network output in the software model's time bins, ``[T, B, *out]``
    (``[T, S, B, *out]`` for ``S`` parameter sets): output spikes per bin, or the readout
    membrane for a membrane-output network. ``layers``: per neuron layer observations when
    recorded and observable (``None`` otherwise). ``meta``: backend-specific figures (event
    counts, synaptic operations, energy estimates).
    """

    output: torch.Tensor
    layers: list[LayerObservation] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


__all__ = ["LayerObservation", "Observation"]
