"""Cost of one forward pass (weight transfer + forward) on every installed backend, measured
side by side in one run (interleaved, medians) on the same network and inputs.

Network: the demo's snntorch 62-32-2 LIF net without biases (so that every backend can hold
it); inputs: the breast-cancer test split, T = 16, 171 samples. Backends that cannot hold the
network are listed with the reason. Writes ``benchmarks/results/backend_cost.json`` (``--out`` to
change the folder).

    python benchmarks/backend_cost.py [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse

import snntorch as snn
import torch
from torch import nn

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from harness import add_output_args, interleaved, print_table, write_json

CANDIDATES = {
    "ideal": {},
    "analog-mismatch": {"strength": 1.0, "seed": 0},
    "speck": {},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    add_output_args(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = load_breast_cancer_spikes(num_steps=16)
    model = nn.Sequential(nn.Linear(data.n_inputs, 32, bias=False), snn.Leaky(beta=1.0, init_hidden=True),
                          nn.Linear(32, 2, bias=False), snn.Leaky(beta=1.0, init_hidden=True, output=True))
    net = cil.wrap(model)
    params = net.detached_parameters()
    x = data.test.x
    loaded = {n for i in cil.list_plugins() for n in i.backends}
    calls, skipped = {}, {}
    for name, opts in CANDIDATES.items():
        if name not in loaded:
            skipped[name] = "plugin not installed"
            continue
        chip = cil.make_backend(name, **opts)
        try:
            chip.check(net.spec)
            chip.forward(chip.transfer(net.spec, params), x)
        except cil.CilError as exc:
            skipped[name] = str(exc)
            continue
        calls[name] = lambda chip=chip: chip.forward(chip.transfer(net.spec, params), x)
    med = interleaved(calls, a.repeats, warmup=1)
    base = med.get("ideal")
    rows = {}
    for k, v in med.items():
        ratio = v / base if base else float("nan")
        rows[k] = {"ms_per_call": v * 1e3, "us_per_sample": v * 1e6 / x.shape[1], "ratio_to_ideal": ratio}
    print_table(["backend", "ms / call", "us / sample", "vs ideal"],
                [[k, f"{r['ms_per_call']:.2f}", f"{r['us_per_sample']:.1f}", f"{r['ratio_to_ideal']:.2f}"]
                 for k, r in rows.items()],
                f"Forward cost, 62-32-2 LIF (IF on event chips: beta=1), T=16, {x.shape[1]} samples, "
                f"{a.threads} threads, median of {a.repeats} (interleaved)")
    for k, why in skipped.items():
        print(f"{k}: skipped: {why}")
    write_json(a.out / "backend_cost.json",
               {"rows": rows, "skipped": skipped, "threads": a.threads, "samples": x.shape[1]})


if __name__ == "__main__":
    main()
