"""The ideal backend: the network description executed exactly, in float.

It is the reference every other backend is compared with: on it, a wrapped model reproduces
its library's own forward pass spike for spike, and chip-in-the-loop training reduces to plain
BPTT.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import as_dense
from ..network.description import NetworkSpec, check_parameters
from ..network.executor import simulate
from .backend import Backend, Deployment, Observation
from .domains import HOLDS_EVERYTHING


class IdealBackend(Backend):
    """Exact float simulation of the network description (the reference backend)."""

    name = "ideal"
    max_sets = None
    observes_layers = True
    observes_membrane = True
    stochastic = False
    #: every trained neuron parameter, per neuron, exactly
    neuron_parameters = HOLDS_EVERYTHING

    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        check_parameters(spec, params, n_sets)
        return Deployment(self.name, spec, {k: v.detach().clone() for k, v in params.items()}, n_sets)

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        with torch.no_grad():
            tr = simulate(deployment.spec, deployment.params, as_dense(inputs), n_sets=deployment.n_sets,
                          record=record, record_membrane=record)
        return Observation(tr.output, tr.layers if record else None)
