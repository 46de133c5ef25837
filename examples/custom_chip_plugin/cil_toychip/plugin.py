"""The ToyChip hardware adapter: three hook implementations and a backend handle.

cil finds this module through the entry point in ``pyproject.toml`` (group ``cil``) and calls

* :func:`cil_register_backends` once, to learn the name ``"toy-chip"``;
* :func:`cil_transfer` for every weight transfer (software weights → chip registers);
* :func:`cil_forward` for every forward on hardware (input spikes → observed output spikes).

The two worker hooks are ``firstresult`` hooks shared by every installed chip: each answers
``None`` for backends that are not its own, so all chips coexist. The core wraps them: an
exception raised here, a malformed or non-finite observation, or (with ``Trainer(timeout=...)``)
a call that hangs becomes a :class:`cil_core.HardwareError` naming ``"toy-chip"``, and
``Trainer(retries=n)`` retries it.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from cil_core import BackendCapacityError, Dense, Deployment, Neuron, Observation, hookimpl
from cil_core.data import as_dense

from .device import ToyDevice

_ids = itertools.count()


class ToyChip:
    """ToyChip (6-bit weights, per-synapse mismatch, LIF with subtract reset).

    The object the user gets from ``cil_core.make_backend("toy-chip")``. It owns the device
    connection and states what the chip can do; the hooks below do the work.
    """

    name = "toy-chip"
    max_sets = 1               # one parameter set per forward (MH then scores proposals one by one)
    observes_layers = False    # only the output spikes can be read back
    observes_membrane = False
    stochastic = False         # same weights + same input → same output

    def __init__(self, bits: int = 6, mismatch: float = 0.2, seed: int = 0) -> None:
        self.device = ToyDevice(bits=bits, mismatch=mismatch, seed=seed)

    def check(self, spec: Any) -> None:
        """Raise :class:`BackendCapacityError` naming the limit if ``spec`` does not fit."""
        dense = [layer for _, layer in spec.synaptic_layers()]
        if any(not isinstance(layer, Dense) for layer in dense):
            raise BackendCapacityError("toy-chip supports dense (fully connected) layers only")
        if len(dense) > ToyDevice.max_layers:
            raise BackendCapacityError(f"toy-chip holds {ToyDevice.max_layers} layers, the model has {len(dense)}")
        for layer in dense:
            if layer.bias is not None:
                raise BackendCapacityError(f"toy-chip has no bias circuits: '{layer.bias}' cannot be transferred")
            if layer.out_features > ToyDevice.max_neurons:
                raise BackendCapacityError(f"toy-chip has {ToyDevice.max_neurons} neurons per layer, "
                                           f"'{layer.weight}' needs {layer.out_features}")
        for _, n in spec.neuron_layers():
            if n.output != "spikes":
                raise BackendCapacityError("toy-chip neurons always spike: a membrane readout cannot run on it")
            for what in ("threshold", "beta"):
                if torch.as_tensor(getattr(n, what)).numel() != 1:
                    raise BackendCapacityError(f"toy-chip has one {what} register per layer, not per neuron")

    def describe(self) -> str:
        return "ToyChip (template): 6-bit dense weights with mismatch, LIF neurons, output spikes only"


@hookimpl
def cil_register_backends(register) -> None:
    register("toy-chip", ToyChip)


@hookimpl
def cil_transfer(backend: Any, spec: Any, params: dict[str, torch.Tensor], n_sets: int | None):
    """Weight transfer: quantize each weight matrix to integer codes, write them to the device."""
    if not isinstance(backend, ToyChip):
        return None                                  # not our chip: let another plugin answer
    if n_sets is not None:
        raise BackendCapacityError("toy-chip holds one parameter set at a time")
    backend.check(spec)
    dev = backend.device
    dense = [layer for _, layer in spec.synaptic_layers()]
    neurons: list[Neuron] = [n for _, n in spec.neuron_layers()]
    dev.configure(len(dense))
    effective, chip = {}, {"codes": [], "gains": [], "id": next(_ids)}
    for k, (layer, n) in enumerate(zip(dense, neurons)):
        w = params[layer.weight].detach().cpu().double()  # never modify params
        gain = float(w.abs().max()) / dev.qmax or 1.0
        codes = torch.clamp(torch.round(w / gain), -dev.qmax, dev.qmax).to(torch.int8).numpy()
        dev.write_layer(k, codes, gain, float(n.threshold), float(n.beta))
        effective[layer.weight] = torch.from_numpy(codes.astype(np.float32) * gain).to(params[layer.weight].device)
        chip["codes"].append(codes)
        chip["gains"].append(gain)
    dev.loaded = chip["id"]
    # params: what the chip realises, in software units (quantized; the hidden mismatch excluded)
    return Deployment("toy-chip", spec, effective, None, chip)


@hookimpl
def cil_forward(backend: Any, deployment: Deployment, inputs: Any, record: bool):
    """Forward on hardware: stream the batch, read the output spikes back."""
    if not isinstance(backend, ToyChip):
        return None
    dev = backend.device
    if dev.loaded != deployment.chip["id"]:
        # the registers hold another deployment's weights (weights change only when written):
        # write this deployment's codes again before running
        neurons = [n for _, n in deployment.spec.neuron_layers()]
        dev.configure(len(deployment.chip["codes"]))
        for k, (codes, gain) in enumerate(zip(deployment.chip["codes"], deployment.chip["gains"])):
            dev.write_layer(k, codes, gain, float(neurons[k].threshold), float(neurons[k].beta))
        dev.loaded = deployment.chip["id"]
    x = as_dense(inputs)
    dev.reset()  # membranes must not carry over from the previous batch
    out = dev.run(x.detach().cpu().numpy())
    # output in the software model's time bins: [T, B, n_out]; no per-layer observations
    return Observation(torch.from_numpy(out).to(x.device), None, {"weight_writes": dev.writes})
