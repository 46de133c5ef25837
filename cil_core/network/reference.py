"""Library-free reference networks, built directly from the network description.

Useful for tests and benchmarks that must not depend on an SNN library. The neuron semantics
are snntorch's ``Leaky`` (reset by subtraction, applied at the next step), stated explicitly.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import Dense
from .neuron import Neuron, Surrogate
from .spec import NetworkSpec
from .wrapped import WrappedNetwork


def leaky_neuron(beta: float, threshold: float = 1.0, *, name: str = "", output: str = "spikes",
                 surrogate: Surrogate | None = None, dt: float = 1e-3) -> Neuron:
    """A leaky integrate-and-fire layer with snntorch ``Leaky`` semantics:
    :math:`v_t = \\beta v_{t-1} + x_t - S_{t-1}\\theta`, :math:`S_t = H(v_t - \\theta)` (strict)."""
    return Neuron(
        beta=beta, alpha=None, threshold=threshold, reset="subtract" if output == "spikes" else "none",
        reset_timing="deferred-post", current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0,
        v_min=None, fires_at_threshold=False, max_spikes_per_step=1, dt=dt, output=output,  # type: ignore[arg-type]
        surrogate=surrogate or Surrogate("atan", 2.0), name=name,
    )


def feedforward(sizes: Sequence[int], *, beta: float = 0.9, threshold: float = 1.0, bias: bool = False,
                weight_gain: float = 1.0, seed: int | None = None, readout: str = "spikes") -> WrappedNetwork:
    """A dense feed-forward LIF network ``sizes[0] -> ... -> sizes[-1]`` as a :class:`WrappedNetwork`.

    Weights are ``nn.Linear`` initialisations times ``weight_gain`` (seeded by ``seed``).
    ``readout="membrane"`` makes the last layer a non-spiking leaky integrator.
    """
    if len(sizes) < 2:
        raise ValueError("feedforward needs at least an input and an output size")
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        linears = [nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:])]
    finally:
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    with torch.no_grad():
        for lin in linears:
            lin.weight.mul_(weight_gain)
    module = nn.Sequential(*linears)
    layers: list = []
    for i, lin in enumerate(linears):
        last = i == len(linears) - 1
        layers.append(Dense(f"{i}.weight", f"{i}.bias" if bias else None, lin.in_features, lin.out_features))
        layers.append(leaky_neuron(beta, threshold, name=f"lif{i}", output=readout if last else "spikes"))
    return WrappedNetwork(module, NetworkSpec(tuple(layers), (sizes[0],), source="cil_core.network.reference.feedforward"),
                          adapter="native")
