"""Mapping of a :class:`~cil_core.NetworkSpec` onto the Speck / DYNAP-CNN core layout, the
chip-constraint checks, and the weight transfer (quantization).

A *chip layer* is what one DYNAP-CNN core does: optional sum pooling of the incoming events
(coordinates divided by the pooling factor, stride = kernel), a convolution (a fully connected
layer is a convolution whose kernel covers the whole input), and a layer of integrate-and-fire
neurons with 16-bit saturating integer state.

Spec layers map as follows: ``Pool2d`` (stride = kernel, factors in {1, 2, 4, 8}) is the pooling
of the *next* chip layer's input (the input pooling of the sensor layer when it comes first),
so it must come after a neuron layer (on spikes), never between a synaptic layer and its neurons;
``mode="avg"`` becomes sum pooling with the next synaptic layer's weights divided by the window
area (what the chip does); ``Flatten`` followed by ``Dense`` is a convolution with a
``(H, W)`` kernel over the flattened ``(C, H, W)`` map (torch's flatten order); a ``Dense`` on a
flat ``(n,)`` input sees it as ``(n, 1, 1)``. Every synaptic layer must be followed by a neuron
layer.

Weight transfer, per chip layer (software weights ``W``, threshold ``θ``, lower bound ``v_min``):
``s = min(127 / max|W|, 32767 / θ)``; ``w = clip(round(s·W), -128, 127)`` (8-bit signed),
``θ_q = clip(round(s·θ), 1, 32767)``, ``v_min,q = max(round(s·v_min), -32768)`` (no lower bound
→ -32768, the 16-bit floor). The neuron state saturates in ``[-32768, 32767]``. The effective
weights reported back in software units are ``w · θ / θ_q`` (the integer network is exactly the
software network with these weights and an unchanged threshold, as long as nothing saturates).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from cil_core import BackendCapacityError, BatchNorm, Conv2d, Dense, Flatten, NetworkSpec, Neuron, Pool2d

#: documented chip limits (Liu et al. 2024; sinabs "Speck" docs; sinabs.validate_memory_speck)
MAX_LAYERS = 9
MAX_KERNEL = 16
STRIDES = (1, 2, 4, 8)
POOLS = (1, 2, 4, 8)
MAX_FEATURES = 1024
MAX_INPUT = 128
WEIGHT_MIN, WEIGHT_MAX = -128, 127
STATE_MIN, STATE_MAX = -32768, 32767
#: (kernel memory, neuron memory) per core, in Ki words: cores 0-2, 3-4, 5-6, 7-8
CORES = [(16, 64)] * 3 + [(32, 32)] * 2 + [(64, 16)] * 2 + [(16, 16)] * 2


@dataclass
class ChipLayer:
    """One DYNAP-CNN core's worth of network."""

    weight: str
    bias: str | None
    dense: bool  # the spec layer is Dense (weights reshaped to a full-input kernel)
    pre_shape: tuple[int, int, int]  # (C, H, W) of the incoming events, before pooling
    pool: tuple[int, int]
    in_shape: tuple[int, int, int]  # conv input, after pooling
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight_scale: float  # product of 1/area of the avg pools folded into this layer
    neuron: Neuron | None = None
    neuron_index: int = -1
    spec_out_shape: tuple[int, ...] = ()

    @property
    def kernel_memory(self) -> float:
        kh, kw = self.kernel
        return self.in_shape[0] * 2 ** (math.ceil(math.log2(max(1, kh * kw))) + math.ceil(math.log2(max(1, self.out_shape[0]))))

    @property
    def neuron_memory(self) -> float:
        o, h, w = self.out_shape
        return o * 2 ** (math.ceil(math.log2(max(1, h))) + math.ceil(math.log2(max(1, w))))


@dataclass
class ChipMap:
    layers: list[ChipLayer]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    cores: list[int] = field(default_factory=list)


def _err(limit: str, msg: str) -> BackendCapacityError:
    return BackendCapacityError(f"speck: {limit}: {msg}")


def _as3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    if len(shape) == 1:
        return (int(shape[0]), 1, 1)
    raise _err("input shape", f"feature shape {shape} is neither (C, H, W) nor (n,)")


def _scalar(v, what: str, where: str) -> float:
    t = torch.as_tensor(v, dtype=torch.float64)
    if t.numel() > 1 and not bool((t == t.flatten()[0]).all()):
        raise _err(what, f"{where}: the chip has one {what} per layer; got per-neuron values")
    return float(t.flatten()[0])


def check_neuron(n: Neuron, where: str) -> None:
    """Raise unless ``n`` is the chip's integrate-and-fire neuron."""
    if n.output != "spikes":
        raise _err("neuron model", f"{where}: a non-spiking readout (output='membrane') cannot run on the chip")
    if _scalar(n.beta, "leak", where) != 1.0 or float(n.v_leak) != 0.0:
        raise _err("leak", f"{where}: the chip's neurons integrate without exponential decay (beta must be 1); "
                           "train with IAF / tau_mem=inf")
    if n.alpha is not None:
        raise _err("neuron model", f"{where}: the chip has no synaptic current (alpha must be None)")
    if _scalar(n.input_gain, "input gain", where) != 1.0:
        raise _err("neuron model", f"{where}: input_gain must be 1")
    if getattr(n, "v_init", None) not in (None, 0.0):
        raise _err("neuron model", f"{where}: the chip's neurons start at 0 (v_init={n.v_init})")
    if n.reset == "none":
        raise _err("neuron model", f"{where}: the chip always resets after a spike (reset='none' is impossible)")
    if getattr(n, "refractory", None) is not None:
        raise _err("neuron model", f"{where}: the chip's neurons have no refractory period")
    if getattr(n, "quantization", None) is not None:
        raise _err("neuron model", f"{where}: the chip holds its own 16-bit integer state, not the model's "
                                   "quantization levels (state_quant)")
    if n.reset == "zero" and float(n.v_reset) != 0.0:
        raise _err("neuron model", f"{where}: reset to a non-zero potential")
    _scalar(n.threshold, "threshold", where)


def map_spec(spec: NetworkSpec, drop_biases: bool = False) -> ChipMap:
    """Lay ``spec`` out on chip layers and check every documented limit (raises
    :class:`~cil_core.BackendCapacityError` naming the limit)."""
    shapes = spec.shapes()
    shape = tuple(spec.input_shape)
    if len(shape) == 3 and (shape[1] > MAX_INPUT or shape[2] > MAX_INPUT):
        raise _err("input size", f"input {shape[1]}x{shape[2]} exceeds the sensor's {MAX_INPUT}x{MAX_INPUT}")
    pool = [1, 1]
    wscale = 1.0
    pre_shape: tuple[int, ...] | None = None  # shape before the pending pooling
    flat_src: tuple[int, ...] | None = None
    layers: list[ChipLayer] = []
    nidx = 0
    for li, (layer, out) in enumerate(zip(spec.layers, shapes)):
        if isinstance(layer, Pool2d):
            if layers and layers[-1].neuron is None:
                raise _err("pooling", f"pooling layer {li} sits between the synaptic layer '{layers[-1].weight}' and "
                                      "its neuron layer; the chip pools a layer's output spikes, after its neurons. "
                                      "Put the pooling after the neuron layer (pool the spikes)")
            if layer.stride != layer.kernel_size:
                raise _err("pooling", f"pooling layer {li}: stride {layer.stride} != kernel {layer.kernel_size}; "
                                      "the chip pools with stride = kernel")
            if pre_shape is None:
                pre_shape = shape
            pool = [pool[0] * layer.kernel_size[0], pool[1] * layer.kernel_size[1]]
            if pool[0] not in POOLS or pool[1] not in POOLS:
                raise _err("pooling", f"pooling layer {li}: factor {tuple(pool)} not in {POOLS}")
            if layer.mode == "avg":
                wscale /= layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, Flatten):
            flat_src = shape if len(shape) == 3 else flat_src
        elif isinstance(layer, (Conv2d, Dense)):
            if layers and layers[-1].neuron is None:
                raise _err("layer structure", f"synaptic layer '{layer.weight}' follows synaptic layer "
                                              f"'{layers[-1].weight}' without a neuron layer in between")
            if layer.bias is not None and not drop_biases:
                raise _err("biases", f"layer '{layer.weight}' has a bias ('{layer.bias}'); the chip has none. "
                                     "Build the model with bias=False or create the backend with drop_biases=True")
            if isinstance(layer, Dense):
                src = flat_src if (len(shape) == 1 and flat_src is not None) else shape
                if pool != [1, 1] and flat_src is None:
                    raise _err("pooling", f"pooling right before the fully connected layer '{layer.weight}' "
                                          "must come before its Flatten")
                in3 = _as3(tuple(src))
                kernel, stride, padding = (in3[1], in3[2]), (1, 1), (0, 0)
                out3 = (layer.out_features, 1, 1)
                pre3 = _as3(pre_shape) if pre_shape is not None else in3
            else:
                in3 = _as3(shape)
                kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
                out3 = _as3(out)
                pre3 = _as3(pre_shape) if pre_shape is not None else in3
            name = f"layer '{layer.weight}'"
            if kernel[0] > MAX_KERNEL or kernel[1] > MAX_KERNEL:
                raise _err("kernel size", f"{name}: kernel {kernel[0]}x{kernel[1]} exceeds {MAX_KERNEL}x{MAX_KERNEL}")
            if stride[0] not in STRIDES or stride[1] not in STRIDES:
                raise _err("stride", f"{name}: stride {stride} not in {STRIDES}")
            if in3[0] > MAX_FEATURES or out3[0] > MAX_FEATURES:
                raise _err("features per layer", f"{name}: {in3[0]} input / {out3[0]} output features; the chip "
                                                 f"allows at most {MAX_FEATURES}")
            if padding[0] >= kernel[0] and padding[0] > 0 or padding[1] >= kernel[1] and padding[1] > 0:
                raise _err("padding", f"{name}: padding {padding} must be smaller than the kernel {kernel}")
            layers.append(ChipLayer(layer.weight, layer.bias, isinstance(layer, Dense), pre3, (pool[0], pool[1]),
                                    in3, out3, kernel, stride, padding, wscale))
            pool, wscale, pre_shape, flat_src = [1, 1], 1.0, None, None
        elif isinstance(layer, Neuron):
            where = f"neuron layer {li} ('{layer.name or li}')"
            if not layers or layers[-1].neuron is not None:
                raise _err("layer structure", f"{where} has no synaptic layer of its own")
            check_neuron(layer, where)
            layers[-1].neuron = layer
            layers[-1].neuron_index = nidx
            layers[-1].spec_out_shape = tuple(out)
            nidx += 1
        elif isinstance(layer, BatchNorm):  # whoever calls the chip: never drop a layer it does not run
            raise _err("layer type", f"layer {li} is a batch norm, which the chip does not run; fold it into the "
                                     "preceding synaptic layer first (cil_core.hardware.fold_batchnorm; a "
                                     "HardwareSession folds it at transfer for a backend without 'batchnorm')")
        else:
            raise _err("layer type", f"layer {li} is a {type(layer).__name__}, which the chip does not run "
                                     "(it runs Dense, Conv2d, Pool2d (sum/avg), Flatten and neuron layers)")
        shape = out
    if len(layers) > MAX_LAYERS:
        raise _err("layers", f"the network needs {len(layers)} chip layers; the chip has {MAX_LAYERS}")
    cores = assign_cores(layers)
    return ChipMap(layers, _as3(tuple(spec.input_shape)), tuple(spec.output_shape), cores)


def assign_cores(layers: list[ChipLayer]) -> list[int]:
    """Give every layer a core whose kernel and neuron memories hold it (backtracking)."""
    need = [(l.kernel_memory / 1024, l.neuron_memory / 1024) for l in layers]
    for i, (k, n) in enumerate(need):
        if not any(k <= ck and n <= cn for ck, cn in CORES):
            raise _err("per-core memory", f"layer '{layers[i].weight}' needs {k:g}Ki kernel and {n:g}Ki neuron memory; "
                                          "no core has both (cores: 16Ki/64Ki x3, 32Ki/32Ki x2, 64Ki/16Ki x2, 16Ki/16Ki x2)")
    order = sorted(range(len(layers)), key=lambda i: -max(need[i]))
    used = [False] * len(CORES)
    assign = [-1] * len(layers)

    def go(j: int) -> bool:
        if j == len(order):
            return True
        i = order[j]
        for c, (ck, cn) in enumerate(CORES):
            if not used[c] and need[i][0] <= ck and need[i][1] <= cn:
                used[c], assign[i] = True, c
                if go(j + 1):
                    return True
                used[c] = False
        return False

    if not go(0):
        raise _err("per-core memory", "the layers' kernel/neuron memories "
                   f"{[(round(k, 2), round(n, 2)) for k, n in need]} Ki cannot all be placed on distinct cores")
    return assign


@dataclass
class Quantized:
    weights: list[np.ndarray]  # int32 [O, C, KH, KW] per chip layer
    thresholds: list[int]
    v_mins: list[int]
    scales: list[float]
    effective: dict[str, torch.Tensor]  # software-unit weights keyed by spec name


def quantize(cmap: ChipMap, params: dict[str, torch.Tensor], drop_biases: bool = False) -> Quantized:
    """Per-layer scaling into 8-bit weights and 16-bit thresholds (see the module docstring)."""
    ws, thrs, vmins, scales, eff = [], [], [], [], {}
    for cl in cmap.layers:
        assert cl.neuron is not None
        W = params[cl.weight].detach().to(torch.float64).cpu()
        if cl.bias is not None:
            if not drop_biases:
                raise _err("biases", f"layer '{cl.weight}' has a bias; the chip has none")
            if bool((params[cl.bias] != 0).any()):
                warnings.warn(f"speck: dropping the non-zero bias '{cl.bias}' (drop_biases=True)", stacklevel=3)
        W4 = W.reshape(cl.out_shape[0], cl.in_shape[0], *cl.kernel) * cl.weight_scale
        theta = float(torch.as_tensor(cl.neuron.threshold, dtype=torch.float64).flatten()[0])
        wmax = float(W4.abs().max()) if W4.numel() else 0.0
        s = STATE_MAX / theta
        if wmax > 0:
            s = min(s, WEIGHT_MAX / wmax)
        wq = torch.clamp(torch.round(W4 * s), WEIGHT_MIN, WEIGHT_MAX)
        tq = int(min(max(round(theta * s), 1), STATE_MAX))
        vm = cl.neuron.v_min
        vq = STATE_MIN if vm is None else int(max(round(vm * s), STATE_MIN))
        ws.append(np.ascontiguousarray(wq.numpy().astype(np.int32)))
        thrs.append(tq)
        vmins.append(vq)
        scales.append(s)
        eff_w = (wq * (theta / tq) / cl.weight_scale).reshape(params[cl.weight].shape)
        eff[cl.weight] = eff_w.to(params[cl.weight].dtype)
        if cl.bias is not None:
            eff[cl.bias] = torch.zeros_like(params[cl.bias])
    return Quantized(ws, thrs, vmins, scales, eff)
