"""A sinabs conv net with BatchNorm2d, deployed on the Speck-style chip with the batch norm folded.

The model is written as a sinabs user writes a conv net with batch norm (squeezed IAF layers,
``nn.BatchNorm2d`` right after each ``nn.Conv2d``, sum pooling after the neurons), its batch-norm
statistics collected in ``train()`` mode on the training data, then used in ``eval()`` mode.
The chip cannot normalise: at every weight transfer cil folds each batch norm into the
convolution before it (:func:`cil_core.hardware.transfer.fold_batchnorm`,
:math:`W' = \\gamma W/\\sqrt{\\sigma^2+\\epsilon}`); the folded shift :math:`b'` is a bias, which
the simulated Speck chip does not have, so the backend is built with ``drop_biases=True`` (the
chip runs :math:`W'` only). Data: scikit-learn's 8x8 digits (bundled), rate-coded into spikes.

The same initial model is trained twice: offline (BPTT in software, with the batch norm as
such, then deployed) and with CIL-SPL (the chip's output spikes in the forward pass, the
software model's surrogate gradients in the backward pass), so the training sees what the
folded, quantized, bias-less chip really does. Offline training reaches about 0.9 in software
but the chip, without the batch norms' shifts, stays near chance; CIL-SPL reaches about 0.7 on
the chip (quick mode, measured; the software model it leaves behind is not the point).

    python examples/bn_convnet_speck.py            # about a minute
    python examples/bn_convnet_speck.py --quick    # < 60 s on 2 cores (smoke test + accuracy check)
"""

from __future__ import annotations

import argparse
import time
import warnings

import sinabs.layers as sl
import torch
from sklearn.datasets import load_digits
from torch import nn

import cil_core as cil
from cil_core.data.breast_cancer import rate_encode
from cil_sinabs import run_sinabs

T = 16  # time steps per sample


def build_model() -> nn.Sequential:
    """1x8x8 spikes → 8 and 16 conv channels with batch norm → 10 classes; IAF neurons."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), sl.IAFSqueeze(num_timesteps=T),  # → 8x8x8
        sl.SumPool2d(2),                                                                                # → 8x4x4
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), sl.IAFSqueeze(num_timesteps=T),  # → 16x4x4
        sl.SumPool2d(2),                                                                                # → 16x2x2
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 10, bias=False), sl.IAFSqueeze(num_timesteps=T),
    )
    with torch.no_grad():  # a quiet readout to start from (the rate loss is on spike counts)
        model[9].weight.mul_(0.1)
    return model


def digits(n_train: int, n_test: int) -> tuple[cil.SpikeData, cil.SpikeData]:
    """scikit-learn's digits, intensities rate-coded over ``T`` steps: ``[T, N, 1, 8, 8]``."""
    d = load_digits()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(d.target), generator=g)
    x = torch.as_tensor(d.images, dtype=torch.float32)[order] / 16.0
    y = torch.as_tensor(d.target)[order]
    spikes = rate_encode(x.reshape(len(y), -1), T).reshape(T, len(y), 1, 8, 8)
    return (cil.SpikeData(spikes[:, :n_train], y[:n_train]),
            cil.SpikeData(spikes[:, -n_test:], y[-n_test:]))


def collect_batchnorm_statistics(model: nn.Module, x: torch.Tensor) -> None:
    """What ``model.train()`` forward passes over the training data do to the batch norms
    (here one pass, cumulative averages), then ``model.eval()``: cil normalises with these."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        run_sinabs(model, x)
    model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and epochs (< 60 s)")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (400, 300, 6) if args.quick else (1400, 397, 12)
    epochs = args.epochs or epochs
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="speck: dropping the non-zero bias")  # the folded BN shifts, see above

    t0 = time.perf_counter()
    train, test = digits(n_train, n_test)
    print(f"data: {len(train)} train / {len(test)} test digits, spikes {tuple(train.x.shape)}")

    chip = cil.make_backend("speck", drop_biases=True)
    results = {}
    for algorithm in ("offline", "cil-spl"):
        model = build_model()
        collect_batchnorm_statistics(model, train.x)
        net = cil.wrap(model, input_shape=(1, 8, 8))
        trainer = cil.Trainer(net, chip, algorithm, lr=1e-3, seed=0)
        if algorithm == "offline":
            before = trainer.evaluate(test)["accuracy"]
            print(f"before training: accuracy on the speck chip {before:.3f}")
        trainer.fit(train, epochs=epochs, batch_size=50)
        results[algorithm] = trainer.evaluate(test)["accuracy"]
        print(f"{algorithm:8s}: accuracy on the speck chip {results[algorithm]:.3f} "
              f"(software model, batch norm unfolded: {trainer.evaluate_software(test)['accuracy']:.3f})")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
