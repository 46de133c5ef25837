"""Backends: what a chip (or a simulator of one) must provide.

A backend does two things, each dispatched through a hook (see :mod:`cil_core.hookspecs`):

* ``transfer(network, params, n_sets)`` → :class:`Deployment` — weight transfer;
* ``forward(deployment, inputs, record)`` → :class:`Observation` — forward on hardware.

Subclass :class:`Backend` and register a factory through ``cil_register_backends``; the core's
built-in hook implementations call these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .ir import NetworkSpec
from .simulate import LayerObservation

if TYPE_CHECKING:  # pragma: no cover
    from .network import WrappedNetwork


@dataclass
class Deployment:
    """What a backend holds after a weight transfer.

    ``params``: the effective synaptic tensors the chip realises, expressed in the software
    model's units (after scaling, quantization and clipping, before any hidden per-chip
    mismatch), keyed like ``spec.parameter_names()``; with ``n_sets`` each carries a leading set
    dimension. ``chip``: chip-native values (integer codes, scale factors, ...), free-form.
    """

    backend: str
    spec: NetworkSpec
    params: dict[str, torch.Tensor]
    n_sets: int | None = None
    chip: dict[str, Any] = field(default_factory=dict)


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


class Backend(ABC):
    """Base class of chips and chip simulators.

    Class attributes a subclass may override:

    * ``name`` — the registered name (set by the registry if left empty);
    * ``max_sets`` — how many parameter sets one forward can hold (``None``: no limit). MH
      scores that many proposals per call;
    * ``observes_layers`` — whether ``forward(record=True)`` returns per-layer spikes;
    * ``observes_membrane`` — whether it returns per-layer membranes too;
    * ``stochastic`` — whether two identical calls may return different outputs.
    """

    name: str = ""
    max_sets: int | None = 1
    observes_layers: bool = False
    observes_membrane: bool = False
    stochastic: bool = False

    def check(self, spec: NetworkSpec) -> None:
        """Raise :class:`~cil_core.errors.BackendCapacityError` naming the limit if ``spec``
        does not fit this backend. Default: everything fits."""

    @abstractmethod
    def transfer(
        self, network: "WrappedNetwork", params: dict[str, torch.Tensor], n_sets: int | None = None
    ) -> Deployment:
        """Weight transfer (see :func:`cil_core.hookspecs.cil_transfer`)."""

    @abstractmethod
    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """Forward on hardware (see :func:`cil_core.hookspecs.cil_forward`)."""

    def describe(self) -> str:
        """One line saying what this backend is (shown by ``cil plugins``)."""
        return (self.__doc__ or self.name).strip().splitlines()[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
