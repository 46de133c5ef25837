"""NIR graph → trainable cil network.

NIR describes neurons as continuous-time ODEs; cil runs discrete time steps. The conventions
used here, stated because NIR tools differ on each of them (the known pitfalls):

**Time step.** A NIR graph carries no ``dt``. Pass ``dt`` (seconds per step) to
:func:`from_nir`, or it is read from the graph's ``metadata["dt"]`` (graphs written by
:func:`cil_nir.to_nir` carry it); otherwise a :class:`~cil_core.SpecError` asks for it.

**Discretization** (``discretization="euler"``, the default, as snntorch and norse do; or
``"exact"``, the exponential integrator). With :math:`k = dt/\\tau`:

* ``LIF`` (:math:`\\tau\\dot v = (v_{leak} - v) + R I`): :math:`\\beta = 1 - k` (exact:
  :math:`e^{-k}`), input gain :math:`g = kR` (exact: :math:`R(1 - e^{-k})`), so
  :math:`v_t = v_{leak} + \\beta (v_{t-1} - v_{leak}) + g\\,x_t` where :math:`x_t` is the
  synaptic layer's output at step ``t`` (a spike counts as 1 per step).
* ``CubaLIF`` (:math:`\\tau_{syn}\\dot I = -I + w_{in} S`): :math:`\\alpha = 1 - dt/\\tau_{syn}`,
  :math:`i_t = \\alpha i_{t-1} + x_t`, the membrane integrates the *updated* current
  (``current_timing="same-step"``), gain :math:`g = (dt R/\\tau_{mem})(dt/\\tau_{syn}) w_{in}`.
* Under ``"euler"`` every time constant must be at least ``dt``: :math:`\\tau < dt` gives a
  negative decay (the membrane would flip sign every step; cil's exporter never writes one).
  Such a graph is refused (:class:`~cil_core.SpecError`, :func:`check_time_step`) naming each
  node and the largest ``dt`` that works, :math:`\\min \\tau` over the graph, or suggesting
  ``"exact"``. norse's ``to_nir`` writes :math:`\\tau = dt/\\tau^{-1}` (1000× too small at its
  default ``dt = 1e-3``), which is the usual way to meet this.
* ``IF`` (:math:`\\dot v = R I`): :math:`v_t = v_{t-1} + R x_t` — no ``dt`` factor (there is
  no time constant to scale; this is how sinabs and snntorch read and write ``IF``).
* ``LI`` / ``I``: the membrane equation of ``LIF`` / ``IF`` without threshold: a non-spiking
  readout (``output="membrane"``), allowed as the last neuron layer only.

**Spike and reset.** NIR 1.0 states :math:`z = H(v - v_{thr})` with a strict ``>`` and the
reset :math:`v \\leftarrow v - v_{thr}` (subtract), applied at once (``"immediate"``). Several
exporters write zero-reset neurons as plain ``LIF`` nodes anyway; ``reset="zero"`` imports them
as such. Graphs written by :func:`cil_nir.to_nir` carry cil's exact semantics (reset, timing,
``v_reset``, surrogate) in node metadata, and those are restored.

**Parameter shapes.** Scalars and per-neuron arrays are both accepted: a parameter with one
value is a scalar, one with as many values as the layer has neurons is reshaped to the layer's
feature shape, one with one value per channel of a convolutional layer is broadcast over
space. ``v_leak`` must be uniform within a layer (``Neuron.v_leak`` is a scalar). Thresholds must
be positive.

**Graph shape.** One ``Input``, one ``Output``, and a chain between them (no branches).
Nested ``NIRGraph`` nodes (subgraphs, as snntorch writes recurrent layers) are inlined first;
an edge to ``"sub"`` or ``"sub.input"`` enters the subgraph, one from ``"sub"`` / ``"sub.output"``
leaves it. **Recurrence**: a ``Linear`` / ``Affine`` node whose only input and output is one
neuron node (``lif → w_rec → lif``, the NIR paper's braille graph) becomes that layer's dense
recurrent synapses (:class:`~cil_core.network.description.Recurrent`): the edge delivers the
previous step's spikes, :math:`r_t = W S_{t-1} + b` (:math:`S_{-1} = 0`, so the bias acts from
step 0), summed with the feed-forward input as NIR sums a node's inputs — into the synaptic
current of a ``CubaLIF`` (:math:`i_t = (\\alpha i_{t-1} + x_t) + r_t`), into the input of a ``LIF``
or ``IF`` — so the input gain scales both alike. Any other cycle is refused naming its node. ``Flatten`` with ``start_dim`` 0 (NIR's convention: no batch
dimension) or 1 (written by tools that count the batch) and ``end_dim=-1`` flattens all features.

Supported nodes: ``Input``, ``Output``, ``Affine``, ``Linear``, ``Conv1d``, ``Conv2d``, ``SumPool2d``,
``AvgPool2d``, ``Flatten``, ``LIF``, ``CubaLIF``, ``IF``, ``LI``, ``I``. Any other node
(``Delay``, ``Threshold``, ``Scale``, a nested ``NIRGraph``, ...) raises
:class:`~cil_core.UnsupportedLayerError` naming it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from cil_core import (
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    NetworkSpec,
    Neuron,
    Pool2d,
    ShapeError,
    SpecError,
    Surrogate,
    UnsupportedLayerError,
    WrappedNetwork,
)
from cil_core.network.description import Recurrent
from cil_core.network.executor import simulate
from cil_core.plugin.adapter import AdaptedModel, pair

NEURON_NODES = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.I)
META = "cil_"  # prefix of the node-metadata keys cil writes
#: What the importer accepts, as ``(node or graph form, how the description states it, what cil trains)``;
#: docs/models.md's adapter table is generated from it (``benchmarks/model_table.py``), and a test
#: checks that every class of :data:`NEURON_NODES` is named here.
ACCEPTED_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("Affine, Linear", "Dense", "weight, bias"),
    ("Conv1d, Conv2d", "Conv1d / Conv2d (integer, 'valid' or odd-kernel 'same' padding)", "weight, bias"),
    ("SumPool2d, AvgPool2d, Flatten", "Pool2d sum / avg, Flatten", "-"),
    ("LIF, CubaLIF, IF", "forward Euler (or 'exact'), subtract reset at once, strict threshold; cil_* metadata "
     "restores cil's own semantics", "none: tau, r, v_threshold fixed"),
    ("LI, I", "non-spiking readout (last neuron layer)", "none"),
    ("neuron -> Linear/Affine -> same neuron", "dense Recurrent added where the feed-forward input enters",
     "recurrent weight, bias"),
    ("nested NIRGraph (subgraphs)", "inlined", "-"),
    ("a chain from Input to Output, dt given or in metadata", "NetworkSpec of a cil_nir.NIRNetwork", "all tensors"),
)
#: What the importer refuses, as ``(node or graph form, why)`` (docs/models.md's generated table).
REFUSED_LAYERS: tuple[tuple[str, str], ...] = (
    ("time constants below dt under forward Euler", "the decay 1 - dt/tau is negative; the message names the nodes "
     "and the largest dt"),
    ("branches, cycles other than neuron -> w_rec -> neuron", "the description is a chain"),
    ("Delay, Threshold, Scale, other nodes; grouped or dilated convolutions", "no counterpart in the description"),
)


def _text(v: Any) -> Any:
    """Metadata read back from HDF5 comes as bytes or numpy scalars."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _is_file(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and str(source).endswith(".nir")


def read_graph(source: Any) -> nir.NIRGraph:
    """A ``nir.NIRGraph`` from a graph object or a ``.nir`` file path."""
    if isinstance(source, nir.NIRGraph):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"NIR file {path} does not exist")
        graph = nir.read(path)
        if not isinstance(graph, nir.NIRGraph):
            raise UnsupportedLayerError(f"{path} holds a single {type(graph).__name__} node, not a NIRGraph")
        return graph
    raise TypeError(f"expected a nir.NIRGraph or a path to a .nir file, got {type(source).__name__}")


@dataclass
class FlatGraph:
    """A NIR graph with its subgraphs inlined (node names ``"<subgraph>.<node>"``) and its
    recurrent synapses set apart: ``recurrent[neuron] = (name, node)`` for every ``Linear`` /
    ``Affine`` node whose only input and only output is the same neuron node (``nodes`` and
    ``edges`` then hold the feed-forward part only)."""

    nodes: dict[str, Any]
    edges: list[tuple[str, str]]
    metadata: dict[str, Any]
    recurrent: dict[str, tuple[str, Any]] = field(default_factory=dict)


def _inline(nodes: dict[str, Any], edges: list[tuple[str, str]]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Replace every nested ``NIRGraph`` node by its nodes. An edge into the subgraph (named by
    the subgraph or by its input node, ``"lif1"`` / ``"lif1.input"``) goes to what its ``Input``
    feeds; an edge out of it leaves from what feeds its ``Output``."""
    nodes, edges = dict(nodes), list(edges)
    for name in [k for k, n in nodes.items() if isinstance(n, nir.NIRGraph)]:
        sub = nodes.pop(name)
        sub_nodes, sub_edges = _inline(sub.nodes, list(sub.edges))
        ins = [k for k, n in sub_nodes.items() if isinstance(n, nir.Input)]
        outs = [k for k, n in sub_nodes.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise UnsupportedLayerError(f"subgraph '{name}' has input nodes {ins} and output nodes {outs}; cil inlines "
                                        "subgraphs with exactly one of each")
        first = [f"{name}.{b}" for a, b in sub_edges if a == ins[0]]
        last = [f"{name}.{a}" for a, b in sub_edges if b == outs[0]]
        for k, n in sub_nodes.items():
            if k not in (ins[0], outs[0]):
                nodes[f"{name}.{k}"] = n
        outer = []
        for a, b in edges:
            srcs = last if a in (name, f"{name}.{outs[0]}") else [a]
            dsts = first if b in (name, f"{name}.{ins[0]}") else [b]
            outer += [(x, y) for x in srcs for y in dsts]
        edges = outer + [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges if a != ins[0] and b != outs[0]]
    return nodes, edges


def flatten_graph(graph: nir.NIRGraph) -> FlatGraph:
    """Inline the subgraphs of ``graph`` and set its recurrent synapses apart (see :class:`FlatGraph`)."""
    nodes, edges = _inline(graph.nodes, list(graph.edges))
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise SpecError(f"edge ({a!r}, {b!r}) names a node that is not in the graph")
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    recurrent: dict[str, str] = {}
    for r, node in nodes.items():
        if (isinstance(node, (nir.Linear, nir.Affine)) and len(pred[r]) == 1 and succ[r] == pred[r]
                and isinstance(nodes[pred[r][0]], NEURON_NODES)):
            n = pred[r][0]
            if n in recurrent:
                raise UnsupportedLayerError(f"node '{n}' ({type(nodes[n]).__name__}) has two recurrent synapses "
                                            f"('{recurrent[n]}', '{r}'); cil supports one per neuron layer")
            recurrent[n] = r
    for a, b in edges:
        if a == b:
            raise UnsupportedLayerError(f"node '{a}' ({type(nodes[a]).__name__}) feeds itself without synapses; "
                                        "recurrence must go through a Linear or Affine node")
    rec_nodes = set(recurrent.values())
    return FlatGraph({k: v for k, v in nodes.items() if k not in rec_nodes},
                     [(a, b) for a, b in edges if a not in rec_nodes and b not in rec_nodes],
                     {k: _text(v) for k, v in (graph.metadata or {}).items()},
                     {n: (r, nodes[r]) for n, r in recurrent.items()})


def chain_of(graph: nir.NIRGraph | FlatGraph) -> list[str]:
    """The node names from the ``Input`` to the ``Output`` node, or an error naming the node
    where the graph is not a simple chain."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedLayerError(f"the graph has input nodes {inputs} and output nodes {outputs}; "
                                    "cil imports graphs with exactly one of each")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise SpecError(f"edge ({a!r}, {b!r}) names a node that is not in the graph")
        succ[a].append(b)
    order, node, seen = [], inputs[0], set()
    while True:
        if node in seen:
            raise UnsupportedLayerError(f"node '{node}' is reached twice: cil imports recurrence only as a Linear or "
                                        "Affine node between a neuron node and itself (n -> w_rec -> n)")
        seen.add(node)
        order.append(node)
        if node == outputs[0]:
            break
        nxt = succ[node]
        if len(nxt) != 1:
            raise UnsupportedLayerError(
                f"node '{node}' has {len(nxt)} successors {nxt}: only chains are supported (recurrence as a Linear or "
                "Affine node between a neuron node and itself)"
                if nxt else f"node '{node}' has no successor: the chain does not reach the output node")
        node = nxt[0]
    extra = sorted(set(graph.nodes) - seen)
    if extra or any(len(v) for k, v in succ.items() if k == outputs[0]):
        raise UnsupportedLayerError(f"nodes {extra or [outputs[0]]} are not on the input→output chain "
                                    "(branches and recurrence are not supported)")
    return order


def _conv_synapse(cls: type, node: Any, w: torch.Tensor, kernel: Any, stride: Any, padding: Any) -> tuple[Any, bool]:
    """A torch convolution (``nn.Conv1d`` / ``nn.Conv2d``) holding a NIR conv node's weight and,
    where it has one, its bias (broadcast per output channel); and whether it has a bias."""
    bias = np.asarray(node.bias, dtype=np.float64).reshape(-1)
    has_bias = bias.size > 0 and not _no_bias(node)
    conv = cls(w.shape[1], w.shape[0], kernel, stride=stride, padding=padding, bias=has_bias)
    with torch.no_grad():
        conv.weight.copy_(w)
        if has_bias:
            conv.bias.copy_(torch.as_tensor(np.broadcast_to(bias, (w.shape[0],)).copy(), dtype=torch.float32))
    return conv, has_bias


def _no_bias(node: Any) -> bool:
    """cil writes bias-free layers with a zero bias and ``cil_bias = 0`` in the node metadata."""
    meta = getattr(node, "metadata", None) or {}
    return META + "bias" in meta and not _text(meta[META + "bias"])


def _per_neuron(value: Any, shape: tuple[int, ...], where: str, what: str) -> float | torch.Tensor:
    """A NIR parameter as a scalar or a tensor broadcastable to the layer's feature ``shape``."""
    a = np.asarray(value, dtype=np.float64)
    if a.size >= 1 and np.all(a == a.reshape(-1)[0]):  # uniform: one value for the layer
        return float(a.reshape(-1)[0])
    if a.size == math.prod(shape):
        return torch.as_tensor(a.reshape(shape), dtype=torch.float32)
    if len(shape) in (2, 3) and a.size == shape[0]:  # one value per channel of a conv layer
        return torch.as_tensor(a.reshape(shape[0], *(1,) * (len(shape) - 1)), dtype=torch.float32)
    raise SpecError(f"{where}: {what} has {a.size} values, the layer has {math.prod(shape)} neurons {shape}")


def _uniform(value: Any, where: str, what: str) -> float:
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.size and not np.all(a == a[0]):
        raise UnsupportedLayerError(f"{where}: per-neuron {what} is not supported (cil states one {what} per layer)")
    return float(a[0]) if a.size else 0.0


def _np(x: float | torch.Tensor) -> np.ndarray:
    return np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _t(x: np.ndarray | float, like: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return float(x)


def _taus(node: Any) -> list[tuple[str, float]]:
    """The smallest value of each time constant of a NIR neuron node, ``[(field, tau_min)]``."""
    fields = ("tau_mem", "tau_syn") if isinstance(node, nir.CubaLIF) else ("tau",) if isinstance(
        node, (nir.LIF, nir.LI)) else ()
    return [(f, float(np.min(np.asarray(getattr(node, f), dtype=np.float64)))) for f in fields
            if np.asarray(getattr(node, f)).size]


def _tau_below_dt(nodes: list[tuple[str, list[tuple[str, float]]]], dt: float, dt_max: float) -> str:
    """The refusal of time constants below ``dt`` under forward Euler (``nodes``: ``[(where,
    [(field, tau_min)])]``), naming each node and the largest ``dt`` that would work."""
    low = "; ".join(f"{where}: " + ", ".join(f"{f} = {t:g} s ({'alpha' if f == 'tau_syn' else 'beta'} = 1 - dt/{f} = {1 - dt / t:g})" for f, t in taus)
                    for where, taus in nodes)
    return (f"{low} — smaller than dt = {dt:g} s. Forward Euler turns a time constant tau into the per-step decay "
            "1 - dt/tau, which is negative when tau < dt: the membrane would flip sign every step instead of "
            f"decaying. Import with dt <= {dt_max:g} s (the smallest time constant of the graph), or with "
            "discretization='exact' (decay exp(-dt/tau), in (0, 1) for any dt)")


def check_time_step(graph: nir.NIRGraph | FlatGraph, dt: float, discretization: str) -> None:
    """Refuse a ``dt`` larger than a time constant of the graph under forward Euler.

    With :math:`\beta = 1 - dt/\tau` (and :math:`\alpha = 1 - dt/\tau_{syn}`), :math:`\tau < dt`
    gives a negative decay; cil's exporter never writes one (it refuses :math:`\beta \le 0`).
    Raises :class:`~cil_core.SpecError` naming every offending node and the largest ``dt`` that
    works for the whole graph, :math:`\min \tau`."""
    if discretization != "euler":
        return
    taus = {name: _taus(node) for name, node in graph.nodes.items() if isinstance(node, NEURON_NODES)}
    valid = [t for ts in taus.values() for _, t in ts if t > 0]
    if not valid:
        return
    dt_max = min(valid)
    bad = [(name, [(f, t) for f, t in ts if 0 < t < dt]) for name, ts in taus.items()]
    bad = [(name, ts) for name, ts in bad if ts]
    if bad:
        raise SpecError(_tau_below_dt([(f"node '{name}' ({type(graph.nodes[name]).__name__})", ts) for name, ts in bad],
                                      dt, dt_max))


def neuron_from_node(node: Any, name: str, shape: tuple[int, ...], dt: float, *, reset: str | None,
                     discretization: str, surrogate: Surrogate) -> Neuron:
    """Translate one NIR neuron node (see the module docstring for the conventions)."""
    where = f"node '{name}' ({type(node).__name__})"
    meta = {k[len(META):]: _text(v) for k, v in (getattr(node, "metadata", None) or {}).items() if k.startswith(META)}

    def decay(tau: Any, what: str) -> tuple[Any, Any]:
        """(beta, k) for time constant ``tau``: beta the per-step decay, k the input factor."""
        tau_t = _per_neuron(tau, shape, where, what)
        tau_a = _np(tau_t)
        if np.any(tau_a <= 0):
            raise SpecError(f"{where}: time constants must be > 0")
        k = dt / tau_a
        if discretization == "euler":
            if np.any(k > 1):
                raise SpecError(_tau_below_dt([(where, [(what, float(tau_a.min()))])], dt, float(tau_a.min())))
            beta, fac = 1.0 - k, k
        else:
            beta = np.exp(-k)
            fac = 1.0 - beta
        return _t(beta, tau_t), fac

    def param(value: Any, what: str) -> Any:
        return _per_neuron(value, shape, where, what)

    if isinstance(node, nir.IF):
        beta, gain, alpha, v_leak = 1.0, param(node.r, "r"), None, 0.0
    elif isinstance(node, nir.I):
        beta, gain, alpha, v_leak = 1.0, param(node.r, "r"), None, 0.0
    elif isinstance(node, (nir.LIF, nir.LI)):
        beta, fac = decay(node.tau, "tau")
        r = param(node.r, "r")
        gain = _t(fac * _np(r), beta if isinstance(beta, torch.Tensor) else r)
        alpha, v_leak = None, _uniform(node.v_leak, where, "v_leak")
    elif isinstance(node, nir.CubaLIF):
        beta, fac_m = decay(node.tau_mem, "tau_mem")
        alpha, fac_s = decay(node.tau_syn, "tau_syn")
        r, w_in = param(node.r, "r"), param(node.w_in, "w_in")
        g = fac_m * _np(r) * fac_s * _np(w_in)
        like = next((v for v in (beta, alpha, r, w_in) if isinstance(v, torch.Tensor)), 0.0)
        gain, v_leak = _t(g, like), _uniform(node.v_leak, where, "v_leak")
    else:  # pragma: no cover - the caller dispatches
        raise UnsupportedLayerError(f"{where} is not a neuron node")

    readout = isinstance(node, (nir.LI, nir.I))
    if readout:
        threshold: Any = 1.0
    else:
        threshold = param(node.v_threshold, "v_threshold")
        if bool(np.any(_np(threshold) <= 0)):
            raise UnsupportedLayerError(f"{where}: v_threshold <= 0 is not supported; shift the voltages")
    mech = meta.get("reset", reset or "subtract")
    if mech not in ("subtract", "zero", "none"):
        raise SpecError(f"{where}: unknown reset {mech!r} (use 'subtract' or 'zero')")
    sur = surrogate
    if "surrogate" in meta:
        sur = Surrogate(str(meta["surrogate"]), float(meta.get("surrogate_slope", surrogate.slope)),
                        float(meta.get("surrogate_scale", surrogate.scale)))
    v_min = meta.get("v_min")
    max_spikes = meta.get("max_spikes_per_step", 1)
    return Neuron(
        beta=beta, alpha=alpha, threshold=threshold, reset="none" if readout else mech,
        reset_timing=meta.get("reset_timing", "immediate"), current_timing=meta.get("current_timing", "same-step"),
        input_gain=gain, v_leak=v_leak, v_reset=float(meta.get("v_reset", 0.0)),
        v_min=None if v_min is None else float(v_min), fires_at_threshold=bool(meta.get("fires_at_threshold", False)),
        max_spikes_per_step=None if int(max_spikes) == 0 else int(max_spikes), dt=dt,
        output="membrane" if readout else "spikes", surrogate=sur, name=name,
        v_init=None if meta.get("v_init") is None else float(meta["v_init"]),
    )


class NIRNetwork(nn.Module):
    """A NIR graph as a torch module: synaptic weights are ``nn.Linear`` / ``nn.Conv2d``
    parameters under ``synapses.<node>``, the neurons are described by :attr:`spec`.

    Calling it runs the network in cil's time-stepped simulator on time-major input
    ``[T, B, *input_shape]`` (the graph's own semantics under the conventions above).
    :func:`cil_core.wrap` accepts it (adapter ``"nir"``).
    """

    def __init__(self, spec: NetworkSpec, synapses: dict[str, nn.Module], metadata: dict[str, Any]) -> None:
        super().__init__()
        self.synapses = nn.ModuleDict(synapses)
        self.spec = spec
        self.metadata = dict(metadata)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return simulate(self.spec, dict(self.named_parameters()), x).output

    def extra_repr(self) -> str:
        return self.spec.describe()


def _key(name: str, taken: set[str]) -> str:
    key = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "node"
    while key in taken:
        key += "_"
    taken.add(key)
    return key


def _recurrent(node: Any, name: str, syn_name: str, syn: Any, shape: tuple[int, ...], synapses: dict[str, nn.Module],
               taken: set[str]) -> Recurrent:
    """The recurrent synapses of neuron node ``name``: the ``Linear`` / ``Affine`` node ``syn_name``
    on the edges ``name → syn_name → name``, as dense :class:`~cil_core.network.description.Recurrent`
    synapses from the layer's previous-step spikes, :math:`r_t = W S_{t-1} (+ b)` (:math:`r_0 = b`),
    entering where the feed-forward input enters: into the synaptic current of a ``CubaLIF``
    (:math:`i_t = (\\alpha i_{t-1} + x_t) + r_t`, snntorch ``RSynaptic``'s order) or the input of
    a ``LIF`` / ``IF``, so both are scaled by the same input gain, as NIR sums a node's inputs."""
    where = f"node '{name}' ({type(node).__name__})"
    if isinstance(node, (nir.LI, nir.I)):
        raise UnsupportedLayerError(f"{where}: a recurrent non-spiking readout is not supported")
    w = torch.as_tensor(np.asarray(syn.weight), dtype=torch.float32)
    n = math.prod(shape)
    if len(shape) != 1 or tuple(w.shape) != (n, n):
        raise UnsupportedLayerError(f"{where}: recurrent synapses '{syn_name}' of shape {tuple(w.shape)} on a layer of "
                                    f"shape {shape}: cil's recurrent synapses are [n, n] over a 1-D layer")
    has_bias = isinstance(syn, nir.Affine) and not _no_bias(syn)
    key = _key(syn_name, taken)
    lin = nn.Linear(n, n, bias=has_bias)
    with torch.no_grad():
        lin.weight.copy_(w)
        if has_bias:
            lin.bias.copy_(torch.as_tensor(np.asarray(syn.bias), dtype=torch.float32).reshape(-1))
    synapses[key] = lin
    meta = {k[len(META):]: _text(v) for k, v in (getattr(node, "metadata", None) or {}).items() if k.startswith(META)}
    return Recurrent(f"synapses.{key}.weight", f"synapses.{key}.bias" if has_bias else None, n, mode="dense",
                     into=meta.get("recurrent_into", "current" if isinstance(node, nir.CubaLIF) else "input"),
                     initial=meta.get("recurrent_initial", "bias"))


def from_nir(source: Any, *, dt: float | None = None, reset: str | None = None, discretization: str = "euler",
             surrogate: Surrogate | None = None) -> NIRNetwork:
    """Import a NIR graph (a ``nir.NIRGraph`` or a ``.nir`` file) as a trainable :class:`NIRNetwork`.

    Args:
        dt: seconds per time step (default: the graph's ``metadata["dt"]``; required otherwise).
        reset: ``"subtract"`` (NIR 1.0's definition, the default) or ``"zero"`` for graphs whose
            exporter meant a reset to zero; cil's own metadata takes precedence per node.
        discretization: ``"euler"`` (:math:`\\beta = 1 - dt/\\tau`) or ``"exact"``
            (:math:`\\beta = e^{-dt/\\tau}`).
        surrogate: surrogate gradient for training (default: ``Surrogate("atan", 2.0)``).
    """
    graph = read_graph(source)
    if discretization not in ("euler", "exact"):
        raise SpecError(f"discretization must be 'euler' or 'exact', not {discretization!r}")
    if reset not in (None, "subtract", "zero"):
        raise SpecError(f"reset must be 'subtract' or 'zero', not {reset!r}")
    flat = flatten_graph(graph)
    gmeta = flat.metadata
    if dt is None:
        dt = gmeta.get("dt")
        if dt is None:
            raise SpecError("a NIR graph does not record its time step: pass dt=... (seconds per step) to "
                            "from_nir / cil.wrap(graph, dt=...)")
    dt = float(dt)
    if not dt > 0:
        raise SpecError(f"dt must be > 0, got {dt}")
    surrogate = surrogate or Surrogate("atan", 2.0)
    check_time_step(flat, dt, discretization)

    order = chain_of(flat)
    inp = flat.nodes[order[0]]
    in_shape = tuple(int(s) for s in np.asarray(inp.input_type["input"]).reshape(-1))
    shape = in_shape
    layers: list = []
    synapses: dict[str, nn.Module] = {}
    taken: set[str] = set()
    neuron_names = [k for k in order if isinstance(flat.nodes[k], NEURON_NODES)]
    if not neuron_names:
        raise UnsupportedLayerError("the graph has no neuron node (LIF, CubaLIF, IF, LI, I)")
    for name in order[1:-1]:
        node = flat.nodes[name]
        where = f"node '{name}' ({type(node).__name__})"
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
            if w.dim() != 2:
                raise UnsupportedLayerError(f"{where}: weight of shape {tuple(w.shape)} is not a matrix")
            has_bias = isinstance(node, nir.Affine) and not _no_bias(node)
            key = _key(name, taken)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
            with torch.no_grad():
                lin.weight.copy_(w)
                if has_bias:
                    lin.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32).reshape(-1))
            synapses[key] = lin
            layer: Any = Dense(f"synapses.{key}.weight", f"synapses.{key}.bias" if has_bias else None,
                               w.shape[1], w.shape[0])
        elif isinstance(node, nir.Conv2d):
            w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
            if int(node.groups) != 1 or pair(node.dilation, where, "dilation") != (1, 1):
                raise UnsupportedLayerError(f"{where}: groups and dilation other than 1 are not supported")
            k = (int(w.shape[2]), int(w.shape[3]))
            stride = pair(node.stride, where, "stride")
            if isinstance(node.padding, str):
                if node.padding == "valid":
                    pad = (0, 0)
                elif node.padding == "same" and stride == (1, 1) and k[0] % 2 and k[1] % 2:
                    pad = (k[0] // 2, k[1] // 2)
                else:
                    raise UnsupportedLayerError(f"{where}: padding {node.padding!r} with kernel {k} and stride "
                                                f"{stride} is not supported")
            else:
                pad = pair(node.padding, where, "padding")
            key = _key(name, taken)
            conv, has_bias = _conv_synapse(nn.Conv2d, node, w, k, stride, pad)
            synapses[key] = conv
            layer = Conv2d(f"synapses.{key}.weight", f"synapses.{key}.bias" if has_bias else None, w.shape[1],
                           w.shape[0], k, stride, pad)
        elif isinstance(node, nir.Conv1d):
            w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
            if w.dim() != 3:
                raise UnsupportedLayerError(f"{where}: weight of shape {tuple(w.shape)} is not [out, in, k]")
            if int(node.groups) != 1 or int(np.asarray(node.dilation).reshape(-1)[0]) != 1:
                raise UnsupportedLayerError(f"{where}: groups and dilation other than 1 are not supported")
            k1, stride1 = int(w.shape[2]), int(np.asarray(node.stride).reshape(-1)[0])
            if isinstance(node.padding, str):
                if node.padding == "valid":
                    pad1 = 0
                elif node.padding == "same" and stride1 == 1 and k1 % 2:
                    pad1 = k1 // 2
                else:
                    raise UnsupportedLayerError(f"{where}: padding {node.padding!r} with kernel {k1} and stride "
                                                f"{stride1} is not supported")
            else:
                pad1 = int(np.asarray(node.padding).reshape(-1)[0])
            key = _key(name, taken)
            synapses[key], has_bias = _conv_synapse(nn.Conv1d, node, w, k1, stride1, pad1)
            layer = Conv1d(f"synapses.{key}.weight", f"synapses.{key}.bias" if has_bias else None, w.shape[1],
                           w.shape[0], k1, stride1, pad1)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            if pair(node.padding, where, "padding") != (0, 0):
                raise UnsupportedLayerError(f"{where}: padded pooling is not supported")
            layer = Pool2d(pair(node.kernel_size, where, "kernel_size"), pair(node.stride, where, "stride"),
                           "sum" if isinstance(node, nir.SumPool2d) else "avg")
        elif isinstance(node, nir.Flatten):
            if int(node.start_dim) not in (0, 1) or int(node.end_dim) not in (-1, len(shape) - 1):
                raise UnsupportedLayerError(f"{where}: only a flatten of all features (start_dim 0, end_dim -1) "
                                            "is supported")
            layer = Flatten()
        elif isinstance(node, NEURON_NODES):
            if isinstance(node, (nir.LI, nir.I)) and name != neuron_names[-1]:
                raise UnsupportedLayerError(f"{where}: a non-spiking integrator is only supported as the last "
                                            "neuron layer (the readout)")
            layer = neuron_from_node(node, name, shape, dt, reset=reset, discretization=discretization,
                                     surrogate=surrogate)
            if name in flat.recurrent:
                layer = replace(layer, recurrent=_recurrent(node, name, *flat.recurrent[name], shape, synapses, taken))
        else:
            raise UnsupportedLayerError(
                f"{where} is not supported by cil's NIR import (supported: Affine, Linear, Conv1d, Conv2d, SumPool2d, "
                "AvgPool2d, Flatten, LIF, CubaLIF, IF, LI, I)")
        try:
            shape = layer.out_shape(shape)
        except (SpecError, ShapeError) as exc:
            raise ShapeError(f"{where}: {exc}") from exc
        layers.append(layer)
    if layers and not isinstance(layers[-1], Neuron):
        raise UnsupportedLayerError(f"node '{order[-2]}' ({type(flat.nodes[order[-2]]).__name__}) feeds the output: "
                                    "the last layer must be a neuron layer")
    spec = NetworkSpec(tuple(layers), in_shape, source=f"NIR graph ({len(order)} nodes, dt={dt:g} s, {discretization})")
    return NIRNetwork(spec, synapses, {**gmeta, "dt": dt, "discretization": discretization})


def load(source: Any, **options: Any) -> WrappedNetwork:
    """:func:`from_nir` then :func:`cil_core.wrap`: a trainable wrapped network from a NIR graph or file."""
    import cil_core

    return cil_core.wrap(from_nir(source, **options))


class NirAdapter:
    """cil adapter for NIR graphs (``nir.NIRGraph``, ``.nir`` files) and :class:`NIRNetwork` modules.

    A graph is imported as a :class:`NIRNetwork` (a torch module that owns the weights), so the
    wrapped network has parameters, trains in place and saves with ``torch.save``."""

    #: the options a graph is imported with (cil describe nir, option checks)
    options_signature = staticmethod(from_nir)

    def accepts(self, model: Any) -> bool:
        return isinstance(model, (NIRNetwork, nir.NIRGraph)) or _is_file(model)

    def adapt(self, model: Any, **options: Any) -> AdaptedModel:
        if isinstance(model, NIRNetwork):
            if options:
                raise SpecError(f"options {sorted(options)} apply when importing a graph (cil_nir.from_nir)")
            return AdaptedModel(model.spec, model)
        net = from_nir(model, **options)
        return AdaptedModel(net.spec, net)

    def to_spec(self, model: Any, **options: Any) -> NetworkSpec:
        return self.adapt(model, **options).spec

    def run_native(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        net = model if isinstance(model, NIRNetwork) else from_nir(model)
        return net(x)


__all__ = ["NIRNetwork", "NirAdapter", "from_nir", "load", "read_graph", "chain_of", "neuron_from_node",
           "check_time_step", "flatten_graph", "FlatGraph"]
