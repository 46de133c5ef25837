"""The ToyChip backend: one :class:`cil_core.Backend` subclass, registered by the hook below (the
entry point in ``pyproject.toml`` names this module). The core calls it through a
:class:`cil_core.HardwareSession`, which turns an exception, a malformed observation or (with
``Trainer(timeout=...)``) a hanging call into a ``HardwareError`` naming the chip, and retries."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from cil_core import Backend, BackendCapacityError, Dense, Deployment, NetworkSpec, Observation, hookimpl
from cil_core.data import as_dense
from cil_core.hardware import quantize_symmetric

from .device import ToyDevice

_ids = itertools.count()


class ToyChip(Backend):
    """ToyChip (6-bit weights, per-synapse mismatch, LIF with subtract reset)."""

    name = "toy-chip"
    max_sets = 1  # one parameter set per transfer: the session sends MH's proposals one by one
    observes_layers = False  # only the output spikes can be read back
    stochastic = False  # same weights + same input -> same output

    def __init__(self, bits: int = 6, mismatch: float = 0.2, seed: int = 0) -> None:
        self.bits, self.device = bits, ToyDevice(bits, mismatch, seed)

    def check(self, spec: NetworkSpec) -> None:
        """Raise BackendCapacityError naming the limit if ``spec`` does not fit."""
        synaptic = [layer for _, layer in spec.synaptic_layers()]
        if len(synaptic) > ToyDevice.max_layers:
            raise BackendCapacityError(f"toy-chip: layers: it has {ToyDevice.max_layers}, the model {len(synaptic)}")
        for layer in synaptic:
            if not isinstance(layer, Dense):
                raise BackendCapacityError(f"toy-chip: layer type: '{layer.weight}' is not dense")
            if layer.bias is not None:
                raise BackendCapacityError(f"toy-chip: biases: no bias circuits for '{layer.bias}'; "
                                           "build the model with bias=False")
            if layer.out_features > ToyDevice.max_neurons:
                raise BackendCapacityError(f"toy-chip: neurons per layer: '{layer.weight}' needs "
                                           f"{layer.out_features}, the chip has {ToyDevice.max_neurons}")
        for _, n in spec.neuron_layers():
            if n.output != "spikes" or any(torch.as_tensor(v).numel() != 1 for v in (n.threshold, n.beta)):
                raise BackendCapacityError("toy-chip: neuron model: spiking, one threshold and leak per layer")

    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Quantize each weight matrix to integer codes with one gain per layer; write them."""
        if n_sets is not None:
            raise BackendCapacityError("toy-chip: parameter sets: it holds one at a time (max_sets=1)")
        self.check(spec)
        layers, effective = [], {}
        for i, n in spec.driven_neurons().items():  # each synaptic layer and the neurons it drives
            w, neuron = params[spec.layers[i].weight], spec.layers[n]
            codes, gain = quantize_symmetric(w.detach().cpu().double(), self.bits)  # never modify params
            layers.append((codes.to(torch.int8).numpy(), float(gain), float(neuron.threshold), float(neuron.beta)))
            effective[spec.layers[i].weight] = (codes * gain).to(w)  # software units, mismatch excluded
        dep = Deployment(self.name, spec, effective, None, {"layers": layers, "id": next(_ids)})
        self._load(dep)
        return dep

    def _load(self, dep: Deployment) -> None:
        if self.device.loaded != dep.chip["id"]:  # the device holds another deployment's weights
            self.device.write(dep.chip["layers"])
            self.device.loaded = dep.chip["id"]

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """Stream the batch, read the output spikes back: ``[T, B, n_out]``."""
        self._load(deployment)  # another deployment may have been written since this one
        x = as_dense(inputs)
        self.device.reset()  # membranes must not carry over from the previous batch
        out = torch.from_numpy(self.device.run(x.detach().cpu().numpy())).to(x.device)
        return Observation(out, None, {"weight_writes": self.device.writes})


@hookimpl
def cil_register_backends(register) -> None:
    register("toy-chip", ToyChip)
