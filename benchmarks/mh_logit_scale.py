"""MH's likelihood scale (issue 21, item 0): the tie collapse of a fixed logit scale, and the
automatic scale (``logit_scale="auto"``, equations in :mod:`cil_core.training.mh`) that needs no
tuning.

    python benchmarks/mh_logit_scale.py                  # 16-32-2, T = 32, 300 MH steps (a few min on 2 cores)
    python benchmarks/mh_logit_scale.py --quick          # a smaller case (the one tests/test_mh_scale.py runs)
    python benchmarks/mh_logit_scale.py --neuron lif     # LIF instead of the Synaptic-like neuron

Task: Wisconsin Breast Cancer (scikit-learn's copy), 70/30 stratified split (seed 0), features
standardized on the training split and reduced to 16 principal components (training split's
SVD), each component c rate-coded at r = clip(0.5 + c / (4 σ_c), 0, 1) over T = 32 steps with
the core's deterministic encoder; a 16-32-2 network with biases, snntorch ``Synaptic``-like
neurons (α = 0.8, β = 0.9, subtract reset; ``--neuron lif``: α absent), rate readout, on the
``ideal`` backend. Rows, each from the same seeded initialisation, in one run:

* ``offline``: BPTT with surrogate gradients (30 epochs, Adam 5e-3), deployed; ``offline
  readout×0.2``: the same with the logits scaled by 0.2 (the large spike-count logits hurt the
  gradient too); the "- offline" column is measured against the better of the two;
* ``mh λ=1``: MH with today's fixed likelihood (``logit_scale=1.0``, the readout's spike counts);
* ``mh auto``: MH with the default ``logit_scale="auto"``;
* ``mh readout×0.2``: the user's hand-set fix, ``Readout("rate", scale=0.2)`` with λ = 1.

Printed as a table (test accuracy on the chip, tied and silent test outputs, λ) and written as
JSON (``--out``, default ``benchmarks/results/mh_logit_scale.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cil_core as cil
from cil_core.data import SpikeData
from cil_core.data.breast_cancer import rate_encode
from cil_core.network.reference import feedforward


def pca_breast_cancer(num_steps: int = 32, components: int = 16, seed: int = 0) -> tuple[SpikeData, SpikeData]:
    """The task's data (module doc): ``x`` ``[T, N, components]`` spikes, ``y`` ``[N]``."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    f_tr, f_te, y_tr, y_te = train_test_split(d.data, d.target, train_size=0.7, random_state=seed, stratify=d.target)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-12
    z_tr, z_te = (f_tr - mu) / sd, (f_te - mu) / sd
    _, _, vt = np.linalg.svd(z_tr, full_matrices=False)
    p_tr, p_te = z_tr @ vt[:components].T, z_te @ vt[:components].T
    s = p_tr.std(0)

    def encode(p: np.ndarray) -> torch.Tensor:
        return rate_encode(torch.as_tensor((0.5 + p / s / 4.0).clip(0, 1)), num_steps)

    return SpikeData(encode(p_tr), torch.as_tensor(y_tr)), SpikeData(encode(p_te), torch.as_tensor(y_te))


def network(sizes: list[int], neuron: str = "synaptic", seed: int = 0) -> Any:
    """A dense network with biases; ``neuron="synaptic"``: every neuron layer gets a synaptic
    current with α = 0.8 (snntorch ``Synaptic``-like), ``"lif"``: snntorch ``Leaky``."""
    net = feedforward(sizes, beta=0.9, bias=True, seed=seed)
    if neuron == "synaptic":
        layers = tuple(dataclasses.replace(layer, alpha=0.8) if hasattr(layer, "alpha") else layer
                       for layer in net.spec.layers)
        net.spec = dataclasses.replace(net.spec, layers=layers)
    return net


def run(quick: bool = False, neuron: str = "synaptic", seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    train, test = pca_breast_cancer()
    if quick:
        train = train.subset(torch.arange(160))
    sizes = [16, 16, 2] if quick else [16, 32, 2]
    steps, burn = (160, 80) if quick else (300, 150)
    mh = dict(burn_in=burn, chains=4)
    plans = [("offline", "offline", {}, dict(epochs=10 if quick else 30), "rate"),
             ("offline readout×0.2", "offline", {}, dict(epochs=10 if quick else 30), cil.Readout("rate", scale=0.2)),
             ("mh λ=1", "mh", dict(mh, logit_scale=1.0), dict(steps=steps), "rate"),
             ("mh auto", "mh", dict(mh), dict(steps=steps), "rate"),
             ("mh readout×0.2", "mh", dict(mh, logit_scale=1.0), dict(steps=steps), cil.Readout("rate", scale=0.2))]
    rows = []
    for name, algorithm, opts, fit, readout in plans:
        tr = cil.Trainer(network(sizes, neuron, seed), "ideal", algorithm, seed=seed, readout=readout, **opts)
        t0 = time.perf_counter()
        tr.fit(train, **fit)
        wall = time.perf_counter() - t0
        ev = tr.evaluate(test)
        lam = getattr(tr.algorithm, "logit_scale", None)
        rows.append({"method": name, "test_accuracy": ev["accuracy"], "ties": ev["ties"], "silent": ev["silent"],
                     "logit_scale": lam, "logit_spread": getattr(tr.algorithm, "logit_spread", None),
                     "wall_time_s": wall})
        print(f"  {name}: {ev['accuracy']:.3f} ({wall:.0f} s)", flush=True)
    return {"task": f"breast cancer, 16 PCA channels, T=32, {'-'.join(map(str, sizes))} {neuron}, ideal",
            "train_samples": len(train), "test_samples": len(test), "mh_steps": steps, "seed": seed, "rows": rows}


def table(result: dict[str, Any]) -> str:
    off = max(r["test_accuracy"] for r in result["rows"] if r["method"].startswith("offline"))
    lines = [result["task"], f"{'method':<20} {'test acc':>9} {'- offline':>10} {'tied':>7} {'silent':>7} {'λ':>7}"]
    for r in result["rows"]:
        lam = "" if r["logit_scale"] is None else f"{r['logit_scale']:.3g}"
        lines.append(f"{r['method']:<20} {r['test_accuracy']:>9.3f} {r['test_accuracy'] - off:>+10.3f} "
                     f"{r['ties']:>7.3f} {r['silent']:>7.3f} {lam:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--neuron", choices=("synaptic", "lif"), default="synaptic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mh_logit_scale.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    result = run(a.quick, a.neuron, a.seed)
    print(table(result))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
