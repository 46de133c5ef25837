"""norse + CIL-SPL on the analog-mismatch chip.

A norse model (``SequentialState`` of ``nn.Linear`` and ``LIFCell``), unchanged, is wrapped by
cil and trained on the breast-cancer data set (scikit-learn's copy, rate-coded as spikes) with
the simulated analog chip in the loop: per-synapse gain mismatch, quantized weights, threshold and
time-constant variation, membrane noise. The chip's outputs drive the loss; the gradients come
from norse's own dynamics (SuperSpike surrogate) evaluated at the chip's outputs. Offline
training (BPTT in software, then deployment) from the same initial weights is the baseline.

After training, the norse model itself holds the trained weights: it still runs in norse.

    python examples/norse_cil_spl.py           # under a minute
    python examples/norse_cil_spl.py --quick   # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import time

import norse.torch as norse
import torch
from torch import nn

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes


def build_model(n_inputs: int) -> norse.SequentialState:
    torch.manual_seed(0)
    model = norse.SequentialState(
        nn.Linear(n_inputs, 32), norse.LIFCell(),   # tau_mem = 10 ms, tau_syn = 5 ms, dt = 1 ms
        nn.Linear(32, 2), norse.LIFCell(),
    )
    with torch.no_grad():  # norse integrates dt/tau of its input per step: start with larger weights
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(10.0)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short epoch (smoke test)")
    ap.add_argument("--strength", type=float, default=1.0, help="non-ideality strength of the analog chip")
    args = ap.parse_args(argv)
    epochs = 1 if args.quick else 8
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    chip = cil.make_backend("analog-mismatch", strength=args.strength, seed=0)
    initial = build_model(data.n_inputs)
    results = {}
    for algorithm in ("offline", "cil-spl"):
        model = copy.deepcopy(initial)
        trainer = cil.Trainer(model, chip, algorithm, lr=1e-2, seed=0)
        trainer.fit(data.train, epochs=epochs, batch_size=32)
        results[algorithm] = trainer.evaluate(data.test)["accuracy"]
        print(f"{algorithm:8s}: accuracy on the analog chip {results[algorithm]:.3f} "
              f"(software model {trainer.evaluate_software(data.test)['accuracy']:.3f})")

    # the trained weights live in the norse model: norse runs it as before
    state, out = None, []
    x = data.test.x
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, state = model(x[t], state)
            out.append(o)
    norse_acc = float((torch.stack(out).sum(0).argmax(-1) == data.test.y).float().mean())
    print(f"the trained norse model in norse: accuracy {norse_acc:.3f} (no chip)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(f"RESULT cil-spl={results['cil-spl']:.4f} offline={results['offline']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
