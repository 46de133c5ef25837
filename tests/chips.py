"""A tiny non-ideal chip used by the core tests (independent of the backend plugins):
per-synapse gain mismatch and 4-bit weight quantization, both fixed by a seed."""

from __future__ import annotations

import torch

import cil_core as cil
from cil_core.data import as_dense
from cil_core.simulate import simulate


class FixedMismatchChip(cil.Backend):
    """Per-synapse log-normal gain (sigma) and symmetric uniform quantization (bits)."""

    max_sets = None

    def __init__(self, sigma: float = 0.5, bits: int = 4, seed: int = 0) -> None:
        self.sigma, self.bits, self.seed = sigma, bits, seed
        self._gains: dict[str, torch.Tensor] = {}

    def gains(self, name: str, shape: torch.Size) -> torch.Tensor:
        if name not in self._gains:
            g = torch.Generator().manual_seed(self.seed + hash(name) % 1000)
            self._gains[name] = torch.exp(self.sigma * torch.randn(shape, generator=g))
        return self._gains[name]

    def transfer(self, network, params, n_sets=None):
        out = {}
        levels = 2 ** (self.bits - 1) - 1
        for k, w in params.items():
            wmax = w.detach().abs().amax(dim=tuple(range(1 if n_sets else 0, w.dim())), keepdim=True).clamp_min(1e-8)
            out[k] = torch.round(w.detach() / wmax * levels) / levels * wmax
        return cil.Deployment(self.name, network.spec, out, n_sets)

    def forward(self, deployment, inputs, record=False):
        shape_of = lambda t: t.shape[1:] if deployment.n_sets else t.shape
        eff = {k: v * self.gains(k, shape_of(v)) for k, v in deployment.params.items()}
        with torch.no_grad():
            tr = simulate(deployment.spec, eff, as_dense(inputs), n_sets=deployment.n_sets, record=record)
        return cil.Observation(tr.output, tr.layers if record else None)
