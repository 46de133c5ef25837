"""A tiny non-ideal chip used by the core tests (independent of the backend plugins):
per-synapse log-normal gain mismatch, weaker inhibitory than excitatory synapses, and uniform
weight quantization, all fixed by a seed."""

from __future__ import annotations

import zlib

import torch

import cil_core as cil
from cil_core.data import as_dense
from cil_core.hardware import quantize_symmetric
from cil_core.network.executor import simulate


class FixedMismatchChip(cil.Backend):
    """Effective weight :math:`g_{ij}\,\gamma(q(w_{ij}))`: log-normal gain ``g`` (sigma), inhibitory
    gain ``gamma(w) = inhibitory * w`` for ``w < 0``, symmetric uniform quantization ``q`` (bits);
    per-neuron thresholds :math:`\theta e^{\sigma_\theta z}`."""

    max_sets = None

    def __init__(self, sigma: float = 0.5, bits: int = 4, inhibitory: float = 1.0, threshold_sigma: float = 0.0,
                 seed: int = 0) -> None:
        self.sigma, self.bits, self.inhibitory, self.seed = sigma, bits, inhibitory, seed
        self.threshold_sigma = threshold_sigma
        self._gains: dict[str, torch.Tensor] = {}

    def gains(self, name: str, shape: torch.Size) -> torch.Tensor:
        if name not in self._gains:
            g = torch.Generator().manual_seed(self.seed * 1000 + zlib.crc32(name.encode()) % 1000)
            self._gains[name] = torch.exp(self.sigma * torch.randn(shape, generator=g))
        return self._gains[name]

    def transfer(self, spec, params, n_sets=None):
        out = {}
        for k, w in params.items():
            q, scale = quantize_symmetric(w.detach(), self.bits, n_sets=n_sets)  # one scale per tensor (and set)
            out[k] = q * scale
        return cil.Deployment(self.name, spec, out, n_sets)

    def forward(self, deployment, inputs, record=False):
        shape_of = lambda t: t.shape[1:] if deployment.n_sets else t.shape
        eff = {k: torch.where(v < 0, self.inhibitory * v, v) * self.gains(k, shape_of(v))
               for k, v in deployment.params.items()}
        spec = deployment.spec
        shapes = spec.shapes()
        g = torch.Generator().manual_seed(self.seed + 7)
        neurons = [n.with_(threshold=n.threshold * torch.exp(self.threshold_sigma * torch.randn(shapes[i], generator=g)))
                   for i, n in spec.neuron_layers()]
        with torch.no_grad():
            tr = simulate(spec, eff, as_dense(inputs), n_sets=deployment.n_sets, record=record, neurons=neurons)
        return cil.Observation(tr.output, tr.layers if record else None)
