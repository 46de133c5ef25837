"""snntorch tutorial 6's convolutional SNN (with max pooling), trained with CIL-SPL on the analog chip.

The model is written exactly as snntorch's tutorial 6 writes it — ``nn.Sequential`` of
``Conv2d → MaxPool2d → Leaky`` twice, ``Flatten → Linear → Leaky`` (``init_hidden=True``, the
output layer with ``output=True``, ``beta=0.5``, ``surrogate.fast_sigmoid(slope=25)``) — scaled
down to bundled data: scikit-learn's 8x8 digits as ``1x8x8`` frames, the static image fed as a
constant input current on each of ``T`` steps (as the tutorial feeds each MNIST image
``num_steps`` times; intensities scaled to [0, 3] so that the default-initialised 3x3 kernels,
which see 9 pixels instead of the tutorial's 25, drive the neurons). cil wraps it unchanged:
``MaxPool2d`` becomes the description's max pooling (here of the convolution's currents, since
the tutorial pools before the neuron), spike for spike equal to the model's own forward on the
ideal backend (tests/test_snntorch_layers.py).

It is then trained on the ``analog-mismatch`` chip with CIL-SPL: the chip's output spikes in the
forward pass, the snntorch model's surrogate gradients in the backward pass, so training sees the
chip's mismatch, saturating synapses, DAC quantization and membrane noise. The accuracy on the
chip is printed before and after (10 classes: chance is 0.1; measured 0.06 before, 0.71 after
in quick mode, 0.67 in the full run; the chip's accuracy fluctuates by about 0.1 from epoch to
epoch). The chip runs at strength 0.5 by default: at strength 1 its 4-bit DAC
rounds every weight of the default-initialised second convolution (:math:`|w| < 0.1`) to zero, its
second and third layers stay all but silent and nothing is learned in this budget (``--strength 1``
shows it).

    python examples/snntorch_csnn_maxpool.py            # one to two minutes on 2 cores
    python examples/snntorch_csnn_maxpool.py --quick    # < 60 s on 2 cores (smoke test + accuracy check)
"""

from __future__ import annotations

import argparse
import time

import snntorch as snn
import torch
from sklearn.datasets import load_digits
from snntorch import surrogate
from torch import nn

import cil_core as cil

T = 8  # time steps per sample
GAIN = 3.0  # input current per unit pixel intensity


def build_model() -> nn.Sequential:
    """Tutorial 6's CSNN for 1x8x8 frames: 12 and 32 conv channels, max pooling, 10 classes."""
    torch.manual_seed(0)
    beta = 0.5
    spike_grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1),                                       # → 12x8x8
        nn.MaxPool2d(2),                                                      # → 12x4x4
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
        nn.Conv2d(12, 32, 3, padding=1),                                      # → 32x4x4
        nn.MaxPool2d(2),                                                      # → 32x2x2
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True),
    )


def digits(n_train: int, n_test: int) -> tuple[cil.SpikeData, cil.SpikeData]:
    """scikit-learn's digits (intensities in [0, GAIN]) repeated as input current on ``T`` steps:
    ``[T, N, 1, 8, 8]``."""
    d = load_digits()
    order = torch.randperm(len(d.target), generator=torch.Generator().manual_seed(0))
    x = torch.as_tensor(d.images, dtype=torch.float32)[order] / 16.0 * GAIN
    y = torch.as_tensor(d.target)[order]
    frames = x.reshape(1, len(y), 1, 8, 8).expand(T, -1, -1, -1, -1).contiguous()
    return (cil.SpikeData(frames[:, :n_train], y[:n_train]),
            cil.SpikeData(frames[:, -n_test:], y[-n_test:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and epochs (< 60 s)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (tutorial 6: 1e-2)")
    ap.add_argument("--strength", type=float, default=0.5, help="non-ideality strength of the analog chip")
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (400, 300, 6) if args.quick else (1400, 397, 10)
    epochs = args.epochs or epochs
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    train, test = digits(n_train, n_test)
    print(f"data: {len(train)} train / {len(test)} test digits, input {tuple(train.x.shape)}")
    net = cil.wrap(build_model(), input_shape=(1, 8, 8))
    print(net.spec.describe())

    chip = cil.make_backend("analog-mismatch", strength=args.strength, seed=0)
    trainer = cil.Trainer(net, chip, "cil-spl", lr=args.lr, seed=0)
    before = trainer.evaluate(test)["accuracy"]
    print(f"before training: accuracy on the analog chip {before:.3f}")
    trainer.fit(train, epochs=epochs, batch_size=50)
    after = trainer.evaluate(test)["accuracy"]
    print(f"CIL-SPL : accuracy on the analog chip {after:.3f} after {epochs} epochs "
          f"(software model {trainer.evaluate_software(test)['accuracy']:.3f}, "
          f"{trainer.session.stats.calls} chip calls)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(f"RESULT before={before:.4f} cil-spl={after:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
