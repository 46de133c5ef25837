"""sinabs + CIL-SPL on the Speck-style event-driven chip.

A small sinabs convolutional SNN (IAF neurons, sum pooling, no biases: what a Speck chip runs)
learns synthetic N-MNIST-like digits (generated offline from scikit-learn's 8x8 digits by a
simulated DVS sensor). The chip runs the raw events with 8-bit weights and integer neuron state;
CIL-SPL uses the chip's output spikes in the forward pass and the software model's surrogate
gradients in the backward pass. For comparison the same initial model is trained offline (BPTT in
software) and then deployed on the chip (not in ``--quick`` mode).

    python examples/sinabs_speck_cil_spl.py            # about a minute
    python examples/sinabs_speck_cil_spl.py --quick    # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import time

import sinabs.layers as sl
import torch
from torch import nn

import cil_core as cil
from cil_speck.data import synthetic_nmnist


def build_model() -> nn.Sequential:
    """2x34x34 events → 8 conv channels → 10 classes; IAF neurons, no biases, sum pooling."""
    torch.manual_seed(0)
    return nn.Sequential(
        sl.SumPool2d(2),                                           # 34x34 → 17x17 (sensor pooling)
        nn.Conv2d(2, 8, 3, stride=2, bias=False), sl.IAF(),        # → 8x8x8
        sl.SumPool2d(2),                                           # → 8x4x4
        nn.Flatten(start_dim=2),                                   # (B, T, C, H, W) → (B, T, 128)
        nn.Linear(8 * 4 * 4, 10, bias=False), sl.IAF(),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and one epoch (smoke test)")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (64, 32, 1) if args.quick else (600, 300, 3)
    epochs = args.epochs or epochs
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    train = synthetic_nmnist(train=True, n_bins=10, n_samples=n_train)
    test = synthetic_nmnist(train=False, n_bins=10, n_samples=n_test)
    print(f"data: {len(train)} train / {len(test)} test event streams, dense view {tuple(train.x.dense.shape)}")

    chip = cil.make_backend("speck")
    results = {}
    for algorithm in ("cil-spl",) if args.quick else ("offline", "cil-spl"):
        model = build_model()
        net = cil.wrap(model, input_shape=(2, 34, 34))
        trainer = cil.Trainer(net, chip, algorithm, lr=2e-2, seed=0)
        trainer.fit(train, epochs=epochs, batch_size=32)
        results[algorithm] = trainer.evaluate(test)["accuracy"]
        print(f"{algorithm:8s}: accuracy on the speck chip {results[algorithm]:.3f} "
              f"(software model {trainer.evaluate_software(test)['accuracy']:.3f})")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
