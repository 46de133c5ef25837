"""Trained neuron parameters on the analog chip (issue 20 item 1): an snntorch model whose hidden
and output layers learn a per-neuron leak and threshold (``learn_beta=True, learn_threshold=True``)
against the same model with them frozen, both trained by CIL-SPL on each of ``--chips``
``analog-mismatch`` chips (strength 1, chip seeds 0..N-1).

    python benchmarks/learned_neurons.py            # 5 chips, ~1 min on 2 cores
    python benchmarks/learned_neurons.py --chips 2 --steps 30   # smoke run
    python benchmarks/learned_neurons.py --mh       # also MH's two priors on log θ (below), ~10 min more

Setup: scikit-learn's breast-cancer data as cil's bundled rate-coded spikes (62 inputs, T = 16;
the first 200 training samples, the 171 test samples); network 62 → 16 → 2 snntorch ``Leaky``
(β = 0.9, θ = 1 per neuron, subtract reset), initial weights seeded by the chip seed; CIL-SPL
(``observe="output"``), Adam lr 1e-2, batch 64, ``--steps`` steps; chip accuracy on the test
set. Writes ``learned_neurons.json`` in ``--out`` and prints a table (mean ± std over chips).

Each chip draws its own per-neuron threshold and leak mismatch; with the neuron parameters
trained, the chip's mismatch applies to the trained values (θ_chip = θ (1 + σ_θ z),
β_chip = β^(exp(−σ_τ z))), so CIL-SPL can move a neuron's programmed threshold and leak to
compensate its own mismatch, which frozen neuron parameters cannot.

``--mh``: the trained model by MH as well (``--mh-chains`` 8 chains, ``--mh-steps`` 600 steps, half of
them burn-in, the whole 200 samples per step), once with the Gaussian prior on the logarithm of the
thresholds (``neuron_prior_std=1``, the default) and once with the flat prior there
(``neuron_prior_std=None``, MH's prior before 2026-12-08); chip accuracy and the range of the trained
thresholds (a threshold no proposal's likelihood sees wanders under the flat prior).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_output_args, text_table, write_json  # noqa: E402


def model(learn: bool, seed: int, hidden: int = 16) -> nn.Module:
    """62 → ``hidden`` → 2 snntorch Leaky, per-neuron β = 0.9 and θ = 1, trainable iff ``learn``."""
    import snntorch as snn

    torch.manual_seed(seed)

    def leaky(n: int, **kw) -> nn.Module:
        return snn.Leaky(beta=torch.full((n,), 0.9), threshold=torch.ones(n), learn_beta=learn,
                         learn_threshold=learn, init_hidden=True, **kw)

    return nn.Sequential(nn.Linear(62, hidden), leaky(hidden), nn.Linear(hidden, 2), leaky(2, output=True))


def run_chip(chip_seed: int, learn: bool, steps: int, data) -> dict:
    """Train one model with CIL-SPL on chip ``chip_seed``; its chip accuracy and how far the
    neuron parameters moved."""
    import cil_core as cil

    net = cil.wrap(model(learn, chip_seed))
    chip = cil.make_backend("analog-mismatch", strength=1.0, seed=chip_seed)
    before = net.detached_parameters()
    t0 = time.perf_counter()
    trainer = cil.Trainer(net, chip, "cil-spl", seed=0, lr=1e-2)
    trainer.fit(data.train.subset(torch.arange(200)), steps=steps, batch_size=64)
    after = net.detached_parameters()
    moved = {k: float((after[k] - before[k]).abs().max()) for k in ("1.beta", "1.threshold", "3.beta", "3.threshold")
             if k in before}
    return {"chip": chip_seed, "learn": learn, "accuracy": trainer.evaluate(data.test)["accuracy"],
            "moved": moved, "seconds": time.perf_counter() - t0}


def run_mh(chip_seed: int, prior: float | None, steps: int, chains: int, data) -> dict:
    """Train the model with trained β, θ by MH on chip ``chip_seed`` with ``neuron_prior_std=prior``."""
    import cil_core as cil

    net = cil.wrap(model(True, chip_seed))
    chip = cil.make_backend("analog-mismatch", strength=1.0, seed=chip_seed)
    t0 = time.perf_counter()
    trainer = cil.Trainer(net, chip, "mh", seed=chip_seed, chains=chains, burn_in=steps // 2, neuron_prior_std=prior)
    trainer.fit(data.train.subset(torch.arange(200)), steps=steps)
    th = torch.cat([v.reshape(-1) for k, v in net.detached_parameters().items() if k.endswith("threshold")])
    return {"chip": chip_seed, "neuron_prior_std": prior, "accuracy": trainer.evaluate(data.test)["accuracy"],
            "threshold_min": float(th.min()), "threshold_max": float(th.max()), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--mh", action="store_true", help="also MH with the two priors on the thresholds' logarithm")
    ap.add_argument("--mh-steps", type=int, default=600)
    ap.add_argument("--mh-chains", type=int, default=8)
    add_output_args(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    data = load_breast_cancer_spikes()
    runs = [run_chip(c, learn, args.steps, data) for c in range(args.chips) for learn in (False, True)]
    rows = []
    for learn in (False, True):
        acc = [r["accuracy"] for r in runs if r["learn"] == learn]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append(["trained β, θ" if learn else "frozen β, θ", f"{statistics.mean(acc):.3f} ± {sd:.3f}",
                     " ".join(f"{a:.3f}" for a in acc)])
    print(text_table(["CIL-SPL on analog-mismatch (strength 1)", "chip accuracy", "per chip"], rows))
    mh_runs = [run_mh(c, prior, args.mh_steps, args.mh_chains, data) for c in range(args.chips)
               for prior in (1.0, None)] if args.mh else []
    if mh_runs:
        rows = []
        for prior in (1.0, None):
            rs = [r for r in mh_runs if r["neuron_prior_std"] == prior]
            acc = [r["accuracy"] for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            rows.append([f"σ_n = {prior:g} (default)" if prior is not None else "flat in log θ (None)",
                         f"{statistics.mean(acc):.3f} ± {sd:.3f}", " ".join(f"{a:.3f}" for a in acc),
                         f"{min(r['threshold_min'] for r in rs):.3g} - {max(r['threshold_max'] for r in rs):.3g}"])
        print(text_table([f"MH, trained β, θ ({args.mh_chains} chains, {args.mh_steps} steps): prior on log θ",
                          "chip accuracy", "per chip", "thresholds, all chips"], rows))
    write_json(args.out / "learned_neurons.json", {"chips": args.chips, "steps": args.steps, "runs": runs,
                                                   "mh_steps": args.mh_steps, "mh_chains": args.mh_chains,
                                                   "mh_runs": mh_runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
