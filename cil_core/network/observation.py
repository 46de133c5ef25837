"""What a forward pass observes: :class:`Observation` (the network output, and optionally
per-layer activity as :class:`LayerObservation`).

Plain torch containers that import no other cil module: part of the network vocabulary, so
that the software executor (which records and injects layer observations) and every backend
(which returns them) share one definition. ``cil_core.hardware.observation`` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerObservation:
    """Observed activity of one neuron layer over ``T`` steps, each tensor
    ``[T, (S,) B, *features]`` (``S``: parameter sets, when several run at once).

    ``spikes``: the layer's output per step: spike counts (0/1, or up to
    ``max_spikes_per_step``) times ``spike_amplitude``; for a readout layer
    (``output="membrane"``) its membrane, the same tensor as ``membrane``.

    ``membrane`` (``None`` when not recorded or not observable): the membrane potential
    :math:`v_t` in the model's own units (those of the layer's ``threshold`` and ``v_leak``),
    as the software executor (:func:`cil_core.kernels.neuron.run_neuron_layer`) defines it.
    Entry ``t`` is the state at the end of step ``t``, after the input :math:`x_t` was
    integrated and membrane noise added, and:

    * ``reset_timing="immediate"``: **after** the reset by this step's own spikes;
    * ``"deferred-pre"`` / ``"deferred-post"``: **before** the reset by this step's spikes
      (that reset acts in step ``t + 1``: before the decay, or after the integration), as
      snntorch reports ``mem``; it includes the reset by step ``t - 1``'s spikes;
    * a readout layer (no reset): the leaky-integrated input;

    then floored at ``v_min`` when the layer has one.

    A backend that reports membranes reports them at this point of the step: the executor
    substitutes an observed membrane for exactly this value (straight-through), and
    :mod:`cil_core.fidelity` compares the two.
    """

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
