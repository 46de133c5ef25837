"""Overhead of cil against the wrapped library, measured side by side in one run.

1. Forward time of an snntorch 64-128-10 LIF network (T=25, batch 256): snntorch's own
   step-by-step forward vs the wrapped model on the ideal backend (transfer + forward), and
   the software pass with backward (BPTT) of each. Target: ratio <= 1.1.
2. Metropolis-Hastings proposals scored per second on the ideal backend (breast-cancer
   62-32-2 network, whole training set per proposal), one backend call per proposal vs all
   chains' proposals in one batched call; whether both contenders' chains ended bit for bit
   equal; and where the batched step's CPU time goes: the first layer's matrix products (one
   ``mm`` per set and time step, as a single network computes them, so that every set equals a
   one-network run bit for bit), the rest of the chip call (neuron loops, second layer, transfer,
   validation) and the step outside the call (proposals, likelihood). ``speedup_ceiling`` is the
   speed-up batching would reach if the batched step cost nothing but those products;
   ``speedup_ceiling_with_outside`` if it cost those products and the step outside the call,
   which the one-call path pays too. ``first_layer_whole_batch``: the same products as one
   ``mm`` per set over all time steps (fewer, larger calls; rows round differently on some
   shapes). ``call_model_cpu_ms``: a chip call modelled as ``o + S w`` (per call, per set; from
   the one-set and the S-set call) and the step outside the call ``u``; ``speedup_model`` =
   ``(S (o + w) + u) / (o + S w + u)`` and ``speedup_limit_per_set_free`` its value at ``w = 0``,
   what any kernel both paths share could give batching at best.

Timings interleave the contenders (A, B, A, B, ...) and report medians, so that a noisy
machine hurts both alike (``harness.interleaved``); the MH part also reports CPU seconds of this
process (``time.process_time``), which other processes' load on a shared machine does not inflate. Writes ``benchmarks/results/overhead.json``
(``--out`` to change the folder).

    python benchmarks/overhead.py [--repeats 15] [--threads 2]     # also: make bench
"""

from __future__ import annotations

import argparse
import platform
import time

import snntorch as snn
import torch
from torch import nn

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from cil_core.data import as_dense
from cil_core.kernels import synapse
from cil_snntorch import run_native
from harness import add_output_args, interleaved, print_table, write_json


def forward_overhead(repeats: int) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Linear(128, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = (torch.rand(25, 256, 64) < 0.2).float()
    y = torch.randint(0, 10, (256,))
    net = cil.wrap(model)
    chip = cil.make_backend("ideal")
    readout = cil.Readout("rate")
    assert torch.equal(chip.forward(chip.transfer(net.spec, net.detached_parameters()), x).output, run_native(model, x))

    def snn_fwd():
        with torch.no_grad():
            run_native(model, x)

    def cil_fwd():
        chip.forward(chip.transfer(net.spec, net.detached_parameters()), x)

    def snn_bptt():
        model.zero_grad()
        readout.loss(run_native(model, x), y).backward()

    def cil_bptt():
        model.zero_grad()
        readout.loss(net(x), y).backward()

    t = interleaved({"snntorch_forward": snn_fwd, "cil_ideal_forward": cil_fwd,
                     "snntorch_bptt": snn_bptt, "cil_software_bptt": cil_bptt}, repeats, warmup=2)
    return {
        "network": "64-128-10 LIF, T=25, batch 256",
        "ms": {k: v * 1e3 for k, v in t.items()},
        "forward_ratio": t["cil_ideal_forward"] / t["snntorch_forward"],
        "bptt_ratio": t["cil_software_bptt"] / t["snntorch_bptt"],
    }


def mh_throughput(repeats: int, chains: int) -> dict:
    data = load_breast_cancer_spikes()
    from cil_core.network.reference import feedforward

    out = {}
    trainers = {}
    for batched in (False, True):
        net = feedforward([data.n_inputs, 32, 2], seed=0, weight_gain=2.0)
        tr = cil.Trainer(net, "ideal", "mh", chains=chains, batched=batched, rescore=False, burn_in=10**9)
        tr.algorithm.setup(tr.state, data.train)
        batch = (data.train.x, data.train.y)
        tr.algorithm.step(tr.state, batch)  # first step also scores the start
        trainers["batched" if batched else "one_call_per_proposal"] = (tr, batch)
    fns = {k: (lambda tr=tr, b=b: tr.algorithm.step(tr.state, b)) for k, (tr, b) in trainers.items()}
    t = interleaved(fns, repeats, warmup=2)
    cpu = interleaved(fns, repeats, warmup=0, clock=time.process_time)
    for k, v in t.items():
        out[k] = {"seconds_per_step": v, "proposals_per_second": chains / v,
                  "cpu_seconds_per_step": cpu[k], "proposals_per_cpu_second": chains / cpu[k]}
    out["speedup"] = t["one_call_per_proposal"] / t["batched"]
    out["cpu_speedup"] = cpu["one_call_per_proposal"] / cpu["batched"]
    (ta, _), (tb, _) = trainers["one_call_per_proposal"], trainers["batched"]
    out["same_chains"] = bool(ta.algorithm.n_steps == tb.algorithm.n_steps
                              and torch.equal(ta.algorithm.theta, tb.algorithm.theta)
                              and torch.equal(ta.algorithm.logpost, tb.algorithm.logpost))
    out["batched_step_cpu_ms"] = parts = _batched_step_parts(tb, trainers["batched"][1], repeats, chains)
    # what batching can save: the one-call step is `chains` one-set calls plus the same work outside
    # the call; the batched step is one call for all sets plus that work
    out["one_call_step_parts_cpu_ms"] = {"chip_call_one_set": parts["chip_call_one_set"],
                                         "outside_chip_call": parts["outside_chip_call"]}
    out["speedup_ceiling"] = cpu["one_call_per_proposal"] / (parts["first_layer_products"] / 1e3)
    # the same with the step outside the call, which both contenders pay once per step, kept
    out["speedup_ceiling_with_outside"] = cpu["one_call_per_proposal"] / (
        (parts["first_layer_products"] + parts["outside_chip_call"]) / 1e3)
    # a per-call cost o and a per-set cost w from the one-set and the S-set call (call(S) = o + S w), the
    # step outside the call u: speedup(w) = (S (o + w) + u) / (o + S w + u); its limit as w -> 0 bounds
    # what any faster kernel (bit-identical or not) shared by both paths could give batching
    one, many, u = parts["chip_call_one_set"], parts["chip_call"], parts["outside_chip_call"]
    w = max(0.0, (many - one) / (chains - 1))
    o = max(0.0, one - w)
    out["call_model_cpu_ms"] = {"per_call": o, "per_set": w, "outside_chip_call": u}
    out["speedup_model"] = (chains * (o + w) + u) / (o + chains * w + u)
    out["speedup_limit_per_set_free"] = (chains * o + u) / (o + u)
    out["setting"] = f"62-32-2 LIF, T=16, {len(data.train)} samples per proposal, {chains} chains"
    return out


def _batched_step_parts(tr: cil.Trainer, batch: tuple, repeats: int, chains: int) -> dict[str, float]:
    """CPU milliseconds (medians, interleaved) of the batched step; of its chip call; of the first
    layer's per-set products inside that call (``synapse.dense_shared``, what ``simulate`` runs for a
    leading dense layer with parameter sets); and of the step with the chip call answered by a stored
    observation (proposals, likelihood, bookkeeping). ``rest_of_chip_call`` is the call less the
    products (neuron loops, second layer, transfer, validation). ``chip_call_one_set``: the call
    the one-call path makes per proposal (the first set alone), timed in the same interleaving."""
    alg, spec, session = tr.algorithm, tr.network.spec, tr.session
    x = as_dense(batch[0])
    params = {k: v.contiguous() for k, v in alg.parameter_sets(alg.theta).items()}  # as a transfer holds them
    first = spec.layers[0]
    w, b = params[first.weight], None if first.bias is None else params[first.bias]
    stored = session.run(spec, params, x, n_sets=chains)
    one = {k: v[0].contiguous() for k, v in params.items()}
    T, B = x.shape[:2]
    rows = x.reshape(T * B, -1)

    def products() -> None:
        with torch.no_grad():
            synapse.dense_shared(first, x, w, b)

    def whole_batch() -> None:  # one product per set over all steps: fewer, larger calls, other rounding
        with torch.no_grad():
            for s in range(chains):
                torch.mm(rows, w[s].t()) if b is None else torch.addmm(b[s], rows, w[s].t())

    def without_chip() -> None:
        session.run = lambda *a, **k: stored  # type: ignore[method-assign]
        try:
            alg.step(tr.state, batch)
        finally:
            del session.run

    t = interleaved({"step": lambda: alg.step(tr.state, batch),
                     "chip_call": lambda: session.run(spec, params, x, n_sets=chains),
                     "first_layer_products": products, "first_layer_whole_batch": whole_batch,
                     "outside_chip_call": without_chip,
                     "chip_call_one_set": lambda: session.run(spec, one, x)},
                    repeats, warmup=1, clock=time.process_time)
    ms = {k: v * 1e3 for k, v in t.items()}
    return {"step": ms["step"], "first_layer_products": ms["first_layer_products"],
            "first_layer_whole_batch": ms["first_layer_whole_batch"], "chip_call": ms["chip_call"],
            "rest_of_chip_call": ms["chip_call"] - ms["first_layer_products"],
            "outside_chip_call": ms["outside_chip_call"], "chip_call_one_set": ms["chip_call_one_set"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chains", type=int, default=8)
    add_output_args(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    fwd = forward_overhead(a.repeats)
    mh = mh_throughput(a.repeats, a.chains)
    result = {"forward": fwd, "mh": mh, "threads": a.threads, "torch": torch.__version__,
              "machine": platform.machine(), "processor": platform.processor()}
    ms = fwd["ms"]
    print_table(["", "snntorch (ms)", "cil (ms)", "ratio"],
                [["forward", f"{ms['snntorch_forward']:.2f}", f"{ms['cil_ideal_forward']:.2f}", f"{fwd['forward_ratio']:.2f}"],
                 ["forward + backward", f"{ms['snntorch_bptt']:.2f}", f"{ms['cil_software_bptt']:.2f}",
                  f"{fwd['bptt_ratio']:.2f}"]],
                f"Forward overhead ({fwd['network']}, {a.threads} threads, median of {a.repeats}, interleaved)")
    print_table(["", "proposals / s", "proposals / CPU-s"],
                [[k, f"{mh[k]['proposals_per_second']:.1f}", f"{mh[k]['proposals_per_cpu_second']:.1f}"]
                 for k in ("one_call_per_proposal", "batched")]
                + [["batching speed-up", f"{mh['speedup']:.2f}x", f"{mh['cpu_speedup']:.2f}x"]],
                f"MH proposals scored per second ({mh['setting']}, ideal backend; "
                f"same chains bit for bit: {mh['same_chains']})")
    parts = mh["batched_step_cpu_ms"]
    print_table(["part of the batched step", "CPU ms", "share"],
                [[k, f"{parts[k]:.2f}", f"{parts[k] / parts['step']:.0%}"]
                 for k in ("first_layer_products", "rest_of_chip_call", "outside_chip_call", "step")]
                + [["speed-up ceiling (step = first-layer products only)", f"{mh['speedup_ceiling']:.2f}x", ""],
                   ["speed-up ceiling (step = those products + the step outside the call)",
                    f"{mh['speedup_ceiling_with_outside']:.2f}x", ""],
                   [f"one-call path: chip call for one set (x{a.chains} per step)",
                    f"{mh['one_call_step_parts_cpu_ms']['chip_call_one_set']:.2f}", ""],
                   ["first-layer products as one product per set over all steps (other rounding)",
                    f"{parts['first_layer_whole_batch']:.2f}",
                    f"{parts['first_layer_whole_batch'] / parts['first_layer_products']:.2f}x of per-step"]],
                "Where the batched MH step goes (CPU, medians)")
    m = mh["call_model_cpu_ms"]
    print_table(["", "value"],
                [["per-call cost o (CPU ms)", f"{m['per_call']:.2f}"], ["per-set cost w (CPU ms)", f"{m['per_set']:.2f}"],
                 ["step outside the call u (CPU ms)", f"{m['outside_chip_call']:.2f}"],
                 ["modelled speed-up (S(o+w)+u)/(o+Sw+u)", f"{mh['speedup_model']:.2f}x"],
                 ["its limit with every set free (w = 0)", f"{mh['speedup_limit_per_set_free']:.2f}x"]],
                f"What batching can save: one chip call costs o + S w for S sets (S = {a.chains})")
    write_json(a.out / "overhead.json", result)


if __name__ == "__main__":
    main()
