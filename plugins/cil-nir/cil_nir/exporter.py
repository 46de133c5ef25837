"""cil network (as trained, or as deployed on a backend) → NIR graph.

The inverse of :mod:`cil_nir.importer` under the same conventions (Euler discretization,
:math:`\\tau = dt/(1-\\beta)`, :math:`R = g\\,\\tau/dt`, ``IF`` for non-leaky neurons, ``CubaLIF``
for neurons with a synaptic current, ``LI`` / ``I`` for a membrane readout). Every neuron
parameter is written **per neuron** (an array of the layer's shape): NIR readers disagree on
scalars, and per-neuron arrays are what every tool reads back.

What NIR 1.0 cannot state — a reset other than subtract-at-once, a deferred reset, a spike at
exactly the threshold, several spikes per step, a membrane floor, the current timing, the
surrogate — is written into each node's ``metadata`` under ``cil_*`` keys, so that
:func:`cil_nir.from_nir` restores the network exactly; other tools ignore it, so for them the
graph is an approximation: :func:`to_nir` warns (``strict=True`` raises instead). The graph's
``metadata`` holds ``dt`` (seconds) and ``discretization="euler"``.

Recurrent synapses are a ``Linear`` / ``Affine`` node on the edges ``neuron → <neuron>_rec →
neuron`` (the NIR paper's braille form, read back by :func:`cil_nir.from_nir`); one-to-one
synapses are written as a diagonal matrix, and where the recurrent input enters (``into``) or
that it is zero at step 0 (``initial``) goes into the neuron node's metadata when NIR's reading
(summed with the feed-forward input, bias from step 0) differs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from cil_core import (Conv1d, Conv2d, Dense, Deployment, Flatten, NetworkSpec, Neuron, Pool2d, SpecError,
                      UnsupportedLayerError)
from cil_core.hardware.transfer import fold_batchnorm

from .importer import META


class NIRSemanticsWarning(UserWarning):
    """The exported graph relies on cil metadata that other NIR readers ignore."""


def _arr(v: Any, shape: tuple[int, ...]) -> np.ndarray:
    t = torch.as_tensor(v, dtype=torch.float64).detach().cpu()
    # float64: tau = dt / (1 - beta) read back as 1 - dt / tau must give the same float32 beta
    return np.ascontiguousarray(torch.broadcast_to(t, shape).numpy())


def _source(obj: Any) -> tuple[NetworkSpec, dict[str, torch.Tensor]]:
    """(spec, parameters) of a WrappedNetwork, a Deployment, or a Trainer (its deployed weights)."""
    from cil_core import Trainer, WrappedNetwork

    if isinstance(obj, Trainer):
        obj = obj.deploy()
    if isinstance(obj, Deployment):
        if obj.n_sets is not None:
            raise SpecError("export one parameter set: the deployment holds several (n_sets)")
        return obj.spec, {k: v.detach().cpu() for k, v in obj.params.items()}
    if isinstance(obj, WrappedNetwork):
        # trained neuron parameters (beta, threshold, ...) exported with their current values
        from cil_core.hardware.transfer import write_neuron_parameters

        return write_neuron_parameters(obj.spec, {k: v.cpu() for k, v in obj.detached_parameters().items()},
                                       chip="nir")
    raise TypeError(f"to_nir exports a WrappedNetwork, a Deployment or a Trainer, not {type(obj).__name__}")


def _neuron_node(n: Neuron, shape: tuple[int, ...], where: str, lossy: list[str]) -> nir.NIRNode:
    dt = float(n.dt)
    beta = torch.as_tensor(n.beta, dtype=torch.float64)
    gain = torch.as_tensor(n.input_gain, dtype=torch.float64)
    thr = n.threshold
    meta: dict[str, Any] = {}

    def note(key: str, value: Any, reason: str | None) -> None:
        meta[META + key] = value
        if reason:
            lossy.append(f"{where}: {reason}")

    readout = n.output == "membrane"
    if not readout:
        if n.reset != "subtract":
            note("reset", n.reset, f"reset={n.reset!r} (NIR states subtract)")
            note("v_reset", float(n.v_reset), None)
        if n.reset_timing != "immediate":
            note("reset_timing", n.reset_timing, f"reset_timing={n.reset_timing!r} (NIR resets at once)")
        if n.fires_at_threshold:
            note("fires_at_threshold", 1, "spikes at v == threshold (NIR: v > threshold)")
        if n.max_spikes_per_step != 1:
            note("max_spikes_per_step", 0 if n.max_spikes_per_step is None else int(n.max_spikes_per_step),
                 "several spikes per step")
    if n.v_min is not None:
        note("v_min", float(n.v_min), "a membrane floor v_min")
    if n.alpha is not None and n.current_timing != "same-step":
        note("current_timing", n.current_timing, "the membrane integrates the previous step's current")
    meta[META + "surrogate"] = n.surrogate.name
    meta[META + "surrogate_slope"] = float(n.surrogate.slope)
    meta[META + "surrogate_scale"] = float(n.surrogate.scale)

    leaky = bool((beta != 1).any())
    v0 = float(n.v_leak if n.v_init is None else n.v_init)
    if (leaky and v0 != float(n.v_leak)) or (not leaky and v0 != 0.0):
        note("v_init", v0, f"the membrane starts at {v0:g} (NIR: at v_leak, or 0 without leak)")
    if leaky and bool((beta == 1).any()):
        raise UnsupportedLayerError(f"{where}: a layer mixing leaky (beta < 1) and non-leaky neurons cannot be "
                                    "written as one NIR node")
    if bool((beta <= 0).any()) or bool((beta > 1).any()):
        raise UnsupportedLayerError(f"{where}: beta outside (0, 1] has no NIR time constant")
    tau = dt / (1.0 - beta) if leaky else None
    if n.alpha is not None:
        alpha = torch.as_tensor(n.alpha, dtype=torch.float64)
        if readout or not leaky or bool((alpha <= 0).any()) or bool((alpha >= 1).any()):
            raise UnsupportedLayerError(f"{where}: a synaptic current is exported only with spiking, leaky neurons "
                                        "and 0 < alpha < 1 (NIR CubaLIF)")
        tau_syn = dt / (1.0 - alpha)
        return nir.CubaLIF(tau_syn=_arr(tau_syn, shape), tau_mem=_arr(tau, shape), r=_arr(tau / dt, shape),
                           v_leak=_arr(n.v_leak, shape), v_threshold=_arr(thr, shape),
                           w_in=_arr(gain * tau_syn / dt, shape), metadata=meta)
    if readout:
        if leaky:
            return nir.LI(tau=_arr(tau, shape), r=_arr(gain * tau / dt, shape), v_leak=_arr(n.v_leak, shape),
                          metadata=meta)
        return nir.I(r=_arr(gain, shape), metadata=meta)
    if leaky:
        return nir.LIF(tau=_arr(tau, shape), r=_arr(gain * tau / dt, shape), v_leak=_arr(n.v_leak, shape),
                       v_threshold=_arr(thr, shape), metadata=meta)
    return nir.IF(r=_arr(gain, shape), v_threshold=_arr(thr, shape), metadata=meta)


def _recurrent_node(n: Neuron, node: nir.NIRNode, params: dict[str, torch.Tensor], where: str,
                    lossy: list[str]) -> nir.NIRNode:
    """The recurrent synapses of neuron layer ``n`` as a ``Linear`` / ``Affine`` node on the edges
    ``neuron → w_rec → neuron`` (how :func:`cil_nir.from_nir` reads them: previous-step spikes, into
    a ``CubaLIF``'s current or a ``LIF``'s input). A one-to-one ``w`` is written as ``diag(w)``,
    ``autapses=False`` as a zero diagonal; where the spikes enter (``into``) and the step-0 input
    (``initial``), when NIR's reading differs, go into the neuron node's metadata (noted as lossy)."""
    rec = n.recurrent
    assert rec is not None
    w = params[rec.weight].double()
    if rec.weight_layout == "in-out":  # held [from, to] (rockpool's w_rec): NIR's weight is [to, from]
        w = w.T
    if rec.mode == "one-to-one":
        w = torch.diag(w.reshape(-1))
        lossy.append(f"{where}: one-to-one recurrent synapses written as a diagonal matrix (an import trains the "
                     "off-diagonal entries too)")
    elif not rec.autapses:
        w = w * (1 - torch.eye(w.shape[0], dtype=w.dtype))
        lossy.append(f"{where}: recurrent synapses without autapses written with a zero diagonal (an import trains it)")
    natural = "current" if n.alpha is not None else "input"
    into = "input" if (rec.into == "current" and n.alpha is None) else rec.into
    meta = node.metadata if node.metadata is not None else {}
    if into != natural:
        meta[META + "recurrent_into"] = rec.into
        lossy.append(f"{where}: recurrent input added to the {rec.into} (NIR sums it with the feed-forward input)")
    if rec.initial != "bias":
        meta[META + "recurrent_initial"] = rec.initial
        lossy.append(f"{where}: recurrent input zero at step 0 (NIR: the synapses' bias acts from step 0)")
    node.metadata = meta
    w32 = w.numpy().astype(np.float32)
    if rec.bias is None:
        return nir.Linear(weight=w32)
    return nir.Affine(weight=w32, bias=params[rec.bias].double().numpy().astype(np.float32))


def to_nir(source: Any, *, strict: bool = False) -> nir.NIRGraph:
    """The network as a ``nir.NIRGraph``.

    ``source``: a :class:`~cil_core.WrappedNetwork` (its current weights), a
    :class:`~cil_core.Deployment` (the weights a backend realised after the weight transfer:
    quantized, clipped), or a :class:`~cil_core.Trainer` (its network deployed on its backend now).
    ``strict``: raise :class:`~cil_core.UnsupportedLayerError` instead of warning when a neuron's
    semantics need cil's metadata (see the module docstring).
    """
    spec, params = _source(source)
    # what a chip would hold: dropout removed, batch norm folded into the synapses before it
    spec, params = fold_batchnorm(spec, params)
    shapes = [tuple(spec.input_shape)] + [tuple(s) for s in spec.shapes()]
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(spec.input_shape))}
    names = ["input"]
    lossy: list[str] = []
    rec_nodes: dict[str, tuple[str, nir.NIRNode]] = {}
    dts = {float(n.dt) for _, n in spec.neuron_layers()}
    if len(dts) != 1:
        raise UnsupportedLayerError(f"neuron layers use different time steps {sorted(dts)}; NIR export needs one dt")
    for i, layer in enumerate(spec.layers):
        shape_in, shape_out = shapes[i], shapes[i + 1]
        name = f"{i}_{layer.kind}"
        where = f"layer {i} ({layer.kind})"
        if isinstance(layer, Dense):
            w = params[layer.weight].double()
            if layer.weight_layout == "in-out":  # held [in, out] by the model (rockpool): NIR's weight is [out, in]
                w = w.T
            w = w.numpy().astype(np.float32)
            # a bias-free layer is written as Affine with a zero bias (more readers know Affine than
            # Linear); the metadata tells cil_nir.from_nir not to create a bias
            b = params[layer.bias].double().numpy().astype(np.float32) if layer.bias is not None \
                else np.zeros(layer.out_features, np.float32)
            node: nir.NIRNode = nir.Affine(weight=w, bias=b, metadata={} if layer.bias is not None
                                           else {META + "bias": 0})
        elif isinstance(layer, Conv2d):
            w = params[layer.weight].double().numpy().astype(np.float32)
            b = params[layer.bias].double().numpy().astype(np.float32) if layer.bias is not None \
                else np.zeros(layer.out_channels, np.float32)
            node = nir.Conv2d(input_shape=tuple(shape_in[1:]), weight=w, stride=layer.stride, padding=layer.padding,
                              dilation=1, groups=1, bias=b)
            if layer.bias is None:  # nir.Conv2d takes no metadata argument
                node.metadata = {META + "bias": 0}
        elif isinstance(layer, Conv1d):
            w = params[layer.weight].double().numpy().astype(np.float32)
            b = params[layer.bias].double().numpy().astype(np.float32) if layer.bias is not None \
                else np.zeros(layer.out_channels, np.float32)
            node = nir.Conv1d(input_shape=int(shape_in[1]), weight=w, stride=layer.stride, padding=layer.padding,
                              dilation=1, groups=1, bias=b)
            if layer.bias is None:  # as for Conv2d: a zero bias written for a layer without one
                node.metadata = {META + "bias": 0}
        elif isinstance(layer, Pool2d):
            if layer.mode == "max":
                raise UnsupportedLayerError(f"{where}: NIR 1.0 has no max-pooling node; export a model with "
                                            "nn.AvgPool2d / sinabs SumPool2d")
            cls = nir.SumPool2d if layer.mode == "sum" else nir.AvgPool2d
            node = cls(kernel_size=np.array(layer.kernel_size), stride=np.array(layer.stride), padding=np.array([0, 0]))
        elif isinstance(layer, Flatten):
            # NIR shapes carry no batch dimension: flattening all features starts at dim 0
            node = nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=0, end_dim=-1)
        elif isinstance(layer, Neuron):
            for what, present in (("an adaptive threshold", layer.adaptation is not None),
                                  ("graded spikes", not bool((torch.as_tensor(layer.spike_amplitude) == 1).all())),
                                  ("a synaptic current updated as alpha * (i + x) (sinabs tau_syn)",
                                   getattr(layer, "synaptic_update", "decay-then-add") != "decay-then-add"),
                                  ("a refractory period", getattr(layer, "refractory", None) is not None),
                                  ("a quantized state (state_quant)", getattr(layer, "quantization", None) is not None),
                                  ("a catch-up reset (snntorch reset_delay=False)",
                                   getattr(layer, "reset_catch_up", False))):
                if present:
                    raise UnsupportedLayerError(f"{where}: NIR export of a neuron layer with {what} is not supported "
                                                "(NIR 1.0 has no node for it)")
            node = _neuron_node(layer, shape_out, where, lossy)
            if layer.recurrent is not None:
                rec_nodes[name] = (f"{name}_rec", _recurrent_node(layer, node, params, where, lossy))
        else:  # pragma: no cover
            raise UnsupportedLayerError(f"{where}: no NIR equivalent")
        nodes[name] = node
        names.append(name)
    nodes["output"] = nir.Output(output_type=np.array(shapes[-1]))
    names.append("output")
    edges = list(zip(names[:-1], names[1:]))
    for neuron, (rec_name, rec_node) in rec_nodes.items():  # neuron -> w_rec -> neuron
        nodes[rec_name] = rec_node
        edges += [(neuron, rec_name), (rec_name, neuron)]
    if lossy:
        msg = ("NIR 1.0 cannot state these semantics; they are kept in cil_* node metadata (cil_nir.from_nir "
               "restores them, other tools ignore them): " + "; ".join(lossy))
        if strict:
            raise UnsupportedLayerError(msg)
        warnings.warn(msg, NIRSemanticsWarning, stacklevel=2)
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": dts.pop(), "discretization": "euler", "generator": "cil-nir",
                                  "source": spec.source})


def export(source: Any, path: str | Path, *, strict: bool = False) -> nir.NIRGraph:
    """:func:`to_nir` and write the graph to ``path`` (a ``.nir`` HDF5 file)."""
    graph = to_nir(source, strict=strict)
    nir.write(str(path), graph)
    return graph


__all__ = ["to_nir", "export", "NIRSemanticsWarning"]
