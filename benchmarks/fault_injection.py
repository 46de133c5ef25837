"""Fault injection: MH and CIL-SPL on a chip that fails on a fraction of its calls (raises,
hangs past the timeout, returns NaN or the wrong shape), against the same run on a healthy chip.

Reports calls made, faults injected (by kind), faults survived (retried by the session),
samples lost (accepted MH samples and final weights that differ from the healthy run: must be
0) and the wall-time cost. ``python benchmarks/fault_injection.py [--rate 0.1]``.
"""

from __future__ import annotations

import argparse

import torch
from harness import Stopwatch, add_output_args, print_table, write_json

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.reference import feedforward
from cil_core.testing import FaultyBackend

RUNS = {
    "mh": dict(fit=dict(steps=60), options=dict(chains=8, burn_in=30, init="network")),
    "cil-spl": dict(fit=dict(epochs=6, batch_size=50), options=dict(lr=5e-3)),
}


def run(algorithm: str, chip, data, seed: int):
    net = feedforward([data.n_inputs, 16, 2], seed=seed, weight_gain=2.0)
    tr = cil.Trainer(net, chip, algorithm, seed=seed, retries=10, timeout=0.2, **RUNS[algorithm]["options"])
    with Stopwatch() as sw:
        tr.fit(data.train, **RUNS[algorithm]["fit"])
    return tr, sw.seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=0.1, help="fraction of calls that fail")
    ap.add_argument("--seed", type=int, default=0)
    add_output_args(ap)
    a = ap.parse_args(argv)
    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    rows, out = [], {}
    for algorithm in RUNS:
        healthy, t_ok = run(algorithm, IdealBackend(), data, a.seed)
        chip = FaultyBackend(IdealBackend(), rate=a.rate, seed=a.seed + 1, hang_s=0.4)
        faulty, t_bad = run(algorithm, chip, data, a.seed)
        ref, got = healthy.network.detached_parameters(), faulty.network.detached_parameters()
        lost_weights = sum(int((ref[k] != got[k]).sum()) for k in ref)
        lost_samples = 0
        if algorithm == "mh":
            lost_samples = abs(healthy.algorithm.n_kept - faulty.algorithm.n_kept) + int(
                not torch.equal(healthy.algorithm.sum, faulty.algorithm.sum))
        injected = sum(chip.faults.values())
        out[algorithm] = {"calls": chip.calls, "faults_injected": injected, "faults_by_kind": chip.faults,
                          "faults_survived": faulty.session.stats.failures, "samples_lost": lost_samples,
                          "weights_differing": lost_weights, "seconds_healthy": t_ok, "seconds_faulty": t_bad}
        rows.append([algorithm, chip.calls, injected, faulty.session.stats.failures, lost_samples, lost_weights,
                     f"{t_ok:.1f}", f"{t_bad:.1f}"])
    print_table(["algorithm", "calls", "faults injected", "survived", "samples lost", "weights differing",
                 "s healthy", "s faulty"], rows, title=f"chip failing on {a.rate:.0%} of calls")
    write_json(a.out / "fault_injection.json", {"rate": a.rate, "seed": a.seed, "runs": out})
    return 0 if all(r["samples_lost"] == 0 and r["weights_differing"] == 0 for r in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
