"""cil's NIR export read by rockpool's own NIR import (``rockpool.nn.modules.torch.nir.from_nir``,
rockpool 3.1.0, nirtorch 2.0.2): what rockpool computes from a ``CubaLIF`` node, exactly, and
which of its readings makes the spikes differ from NIR's equations (issue 18, item 4).

    python benchmarks/nir_rockpool_reference.py            # table + benchmarks/results/nir_rockpool_reference.json

**What rockpool computes** (read from ``_convert_nir_to_rockpool`` and ``LIFTorch``): a
``CubaLIF`` node becomes ``LIFTorch(tau_mem, tau_syn, threshold=v_threshold, bias=v_leak,
dt=dt')`` with its own time step

.. math:: dt' = \\min_j \\frac{\\tau_{mem,j}}{1 + R_j}

(the minimum over the node's neurons), and ``LIFTorch``'s forward with its defaults:

.. math::

    i_t = b\\,(i_{t-1} + x_t),\\quad u_t = a\\,v_{t-1} + i_t + v_{leak},\\quad
    S_t = [u_t \\ge \\theta]\\min(2^{16}, \\lfloor u_t/\\theta \\rfloor),\\quad v_t = u_t - S_t\\theta,

with :math:`a = e^{-dt'/\\tau_{mem}}`, :math:`b = e^{-dt'/\\tau_{syn}}`. ``w_in`` is not read at all,
and ``R`` only through :math:`dt'` (the current enters the membrane with gain 1). NIR 1.0's
``CubaLIF`` is :math:`\\tau_{syn}\\dot I = -I + w_{in}S`, :math:`\\tau_{mem}\\dot v = (v_{leak} - v) + RI`,
one spike when :math:`v > v_{thr}`, :math:`v \\leftarrow v - v_{thr}`: rockpool departs from it in
the input weight (``w_in`` dropped), the resistance (``R`` dropped as a gain, used as a time
step), the discretization (its own :math:`dt'` and the input decayed in its own step,
add-then-decay), the threshold (``>=`` and up to :math:`2^{16}` spikes per step) and ``v_leak``
(a bias added in full every step instead of a resting potential). Even rockpool's own export
(:math:`R = \\tau e^{-dt/\\tau}/dt`) does not come back with its ``dt``: :math:`\\tau/(1+R) \\ne dt`.

For a graph written by ``cil_nir.to_nir`` from ``Synaptic(alpha=α, beta=β)`` (forward Euler at
``dt``: :math:`\\tau_{mem} = dt/(1-β)`, :math:`\\tau_{syn} = dt/(1-α)`, :math:`R = \\tau_{mem}/dt`,
:math:`w_{in} = \\tau_{syn}/dt`), this is :math:`dt' = dt/(2-β)`, so rockpool runs

.. math:: a = e^{-(1-β)/(2-β)},\\qquad b = e^{-(1-α)/(2-β)}

(β = 0.875, α = 0.5: a = 0.8948, b = 0.6412) with the add-then-decay current — cil's
:func:`rockpool_reading` of the graph, which reproduces rockpool's import spike for spike
(``tests/test_rockpool.py``).

**Where the spikes part** (the table): the same graph read stage by stage, from NIR's own
equations (cil's import with the ``cil_*`` metadata removed: forward Euler at ``dt``, one spike
per step at ``v > θ``, immediate subtract reset) to rockpool's reading, each stage adding one of
rockpool's departures; the count of output values that differ from rockpool's import and from
the exported snntorch model (whose reset one step late NIR cannot state: cil's export warns).
cil's export is NIR's equations for that model up to the reset timing it warns about; the gap to
rockpool is rockpool's reading.

Measured (rockpool 3.1.0, nirtorch 2.0.2, nir 1.0.4; seeds 0, 1, 2; 600 output values each):
the exported model differs from rockpool's import in 175, 234, 127; NIR's equations in 165, 221,
126; rockpool's reading in 0, 0, 0. Undoing one of rockpool's departures from its reading: the
decays 231, 309, 151; the add-then-decay current 319, 372, 213; several spikes per step 162, 232,
123; ``>=`` instead of ``>`` 0, 0, 0.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_output_args, text_table, write_json  # noqa: E402

DT = 1e-3
SIZES = (8, 24, 3)


def exported_model(seed: int = 0, alpha: float = 0.5, beta: float = 0.875) -> torch.nn.Sequential:
    """The Synaptic 8-24-3 network of ``tests/test_rockpool.py`` (weights and biases x2)."""
    import snntorch as snn
    from torch import nn

    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), snn.Synaptic(alpha=alpha, beta=beta, init_hidden=True),
                      nn.Linear(SIZES[1], SIZES[2]), snn.Synaptic(alpha=alpha, beta=beta, init_hidden=True,
                                                                  output=True))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2)
    return m


def spikes(seed: int = 0, T: int = 40, B: int = 5) -> torch.Tensor:
    return (torch.rand(T, B, SIZES[0], generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def export(model: Any) -> Any:
    """``cil_nir.to_nir`` of the wrapped model (its NIRSemanticsWarning, the deferred reset, kept quiet)."""
    import cil_core as cil
    import cil_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cil_nir.NIRSemanticsWarning)
        return cil_nir.to_nir(cil.wrap(model))


def rockpool_time_step(node: Any) -> float:
    """rockpool's :math:`dt' = \\min_j \\tau_{mem,j}/(1 + R_j)` for a ``CubaLIF`` node."""
    import numpy as np

    return float(np.min(np.asarray(node.tau_mem, np.float64) / (1 + np.asarray(node.r, np.float64))))


def plain_nir(graph: Any) -> Any:
    """The graph without cil's ``cil_*`` node metadata: what NIR's equations alone say."""
    g = copy.deepcopy(graph)
    for node in g.nodes.values():
        meta = getattr(node, "metadata", None)
        if isinstance(meta, dict):
            for k in [k for k in meta if k.startswith("cil_")]:
                del meta[k]
    return g


def staged(graph: Any, ablations: bool = False) -> list[tuple[str, Any, dict[str, torch.Tensor]]]:
    """``(stage, spec, params)``: NIR's equations (cil's import of the plain graph at ``dt``), then
    rockpool's departures added one by one (the last of these is :func:`rockpool_reading`); with
    ``ablations`` then rockpool's reading with each departure undone alone."""
    import cil_core as cil
    from cil_core.network.description import NetworkSpec

    net = cil.wrap(plain_nir(graph), dt=DT)
    params = net.detached_parameters()
    nodes = [n for n in graph.nodes.values() if type(n).__name__ == "CubaLIF"]
    out = [("NIR's equations (forward Euler at dt, v > theta, one spike, immediate subtract)", net.spec, params)]
    changes = [
        ("+ rockpool's dt' = min tau_mem/(1+R), decays exp(-dt'/tau), w_in and R not read", "decays"),
        ("+ the input decayed in its own step (add-then-decay)", "order"),
        ("+ fires at u >= theta (not u > theta)", "threshold"),
        ("+ up to 2^16 spikes per step, floor(u/theta) (= rockpool's reading)", "multi"),
    ]

    def spec_with(applied: set[str]) -> NetworkSpec:
        layers = list(net.spec.layers)
        idx = [i for i, l in enumerate(layers) if type(l).__name__ == "Neuron"]
        for i, node in zip(idx, nodes):
            layers[i] = _rockpool_neuron(layers[i], node, applied)
        return NetworkSpec(tuple(layers), net.spec.input_shape, net.spec.source, net.spec.synapse_calls)

    applied: set[str] = set()
    for label, what in changes:
        applied.add(what)
        out.append((label, spec_with(set(applied)), params))
    if ablations:  # rockpool's reading with one departure undone
        for label, what in changes:
            out.append((f"rockpool's reading without: {label[2:].split(' (= ')[0]}", spec_with(applied - {what}), params))
    return out


def _rockpool_neuron(n: Any, node: Any, applied: set[str]) -> Any:
    import numpy as np

    ch: dict[str, Any] = {}
    if "decays" in applied:
        if float(np.abs(np.asarray(node.v_leak)).max()) != 0.0:
            raise ValueError("v_leak != 0: rockpool adds it as a bias every step; not modelled here")
        dtp = rockpool_time_step(node)
        beta = torch.exp(-dtp / torch.as_tensor(np.asarray(node.tau_mem, np.float64)))
        alpha = torch.exp(-dtp / torch.as_tensor(np.asarray(node.tau_syn, np.float64)))
        one = (lambda t: float(t.reshape(-1)[0]) if bool((t == t.reshape(-1)[0]).all()) else t.float())  # noqa: E731
        ch.update(beta=one(beta), alpha=one(alpha), input_gain=1.0, mem_rate=None, syn_rate=None, input_factors=None)
    if "order" in applied:
        ch["synaptic_update"] = "add-then-decay"
    if "threshold" in applied:
        ch["fires_at_threshold"] = True
    if "multi" in applied:
        ch["max_spikes_per_step"] = 2 ** 16
    return n.with_(**ch)


def rockpool_reading(graph: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """What rockpool's ``from_nir`` runs for ``graph`` (a chain of Linear/Affine and CubaLIF nodes
    with ``v_leak = 0``), as a cil network description and its parameters."""
    _, spec, params = staged(graph)[-1]  # the last cumulative stage: every departure
    return spec, params


def rockpool_import(graph: Any, x: torch.Tensor) -> torch.Tensor:
    """rockpool's own import of ``graph`` run on ``x`` (``[T, B, C]``; rockpool is batch-first)."""
    from cil_rockpool.sdk import import_rockpool

    import_rockpool()
    from rockpool.nn.modules.torch.nir import from_nir

    rp = from_nir(graph)
    with torch.no_grad():
        return rp(x.transpose(0, 1))[0].transpose(0, 1)


def run(seed: int = 0) -> dict[str, Any]:
    import cil_core as cil
    from cil_core.network.executor import simulate

    model = exported_model(seed)
    graph = export(model)
    x = spikes(seed)
    with torch.no_grad():
        cil_out = cil.wrap(model)(x)
    rp_out = rockpool_import(graph, x)
    stages = []
    for label, spec, params in staged(graph, ablations=True):
        out = simulate(spec, params, x).output
        stages.append({"stage": label, "differ_from_rockpool": int((out != rp_out).sum()),
                       "differ_from_exported_model": int((out != cil_out).sum()), "values": int(out.numel()),
                       "rate": float(out.mean())})
    node = graph.nodes["1_neuron"]
    dtp = rockpool_time_step(node)
    return {"seed": seed, "dt": DT, "rockpool_dt": dtp, "rockpool_membrane_decay": math.exp(-dtp / float(node.tau_mem[0])),
            "rockpool_current_decay": math.exp(-dtp / float(node.tau_syn[0])),
            "exported_vs_rockpool_differ": int((cil_out != rp_out).sum()), "values": int(rp_out.numel()),
            "stages": stages, "rockpool_own_round_trip": rockpool_own_round_trip()}


def rockpool_own_round_trip(tau_mem: float = 0.02, dt: float = DT) -> dict[str, float]:
    """rockpool's export writes :math:`R = \\tau e^{-dt/\\tau}/dt`; its import reads
    :math:`dt' = \\tau/(1+R)`: not ``dt``."""
    r = tau_mem * math.exp(-dt / tau_mem) / dt
    return {"tau_mem": tau_mem, "dt": dt, "r": r, "dt_read_back": tau_mem / (1 + r)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import nirtorch
    from importlib.metadata import version

    runs = [run(s) for s in range(args.seeds)]
    labels = [s["stage"] for s in runs[0]["stages"]]
    rows = [[label] + [f"{r['stages'][k]['differ_from_rockpool']} / {r['stages'][k]['differ_from_exported_model']}"
                       for r in runs] for k, label in enumerate(labels)]
    rows.append(["the exported snntorch model itself"] + [f"{r['exported_vs_rockpool_differ']} / 0" for r in runs])
    print(f"output values (of {runs[0]['values']}) differing from rockpool's import / from the exported model, "
          f"Synaptic {'-'.join(map(str, SIZES))}, alpha 0.5, beta 0.875, dt {DT}; rockpool's dt' = "
          f"{runs[0]['rockpool_dt']:.6g} s, decays a = {runs[0]['rockpool_membrane_decay']:.4f}, "
          f"b = {runs[0]['rockpool_current_decay']:.4f}")
    print(text_table(["reading of cil's CubaLIF graph"] + [f"seed {r['seed']}" for r in runs], rows))
    rt = runs[0]["rockpool_own_round_trip"]
    print(f"rockpool's own export -> import: tau_mem {rt['tau_mem']} s, dt {rt['dt']} s -> R {rt['r']:.4f} -> "
          f"dt' {rt['dt_read_back']:.6g} s")
    path = write_json(args.out / "nir_rockpool_reference.json",
                      {"runs": runs, "versions": {k: version(k) for k in ("rockpool", "nirtorch", "nir", "torch")},
                       "nirtorch": nirtorch.__version__})
    del path
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
