"""snntorch + Metropolis-Hastings on the analog-mismatch chip.

An unchanged snntorch model (``nn.Sequential`` of ``nn.Linear`` and ``snn.Leaky`` with
``init_hidden=True``) is trained without gradients: Metropolis-Hastings proposes weights, the
chip scores them (the likelihood is the cross entropy of the chip's output spike counts), and the
deployed weights are the posterior mean of the accepted samples. The chip's mismatch, weight
quantization and membrane noise are therefore part of what is learned. Offline BPTT training,
deployed on the same chip, is printed for comparison (not in ``--quick`` mode).

    python examples/snntorch_mh_analog.py           # well under a minute
    python examples/snntorch_mh_analog.py --quick   # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import time

import snntorch as snn
import torch
from torch import nn

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes


def build_model(n_inputs: int) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(n_inputs, 16), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(16, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short chain on a subset (smoke test)")
    ap.add_argument("--strength", type=float, default=1.0, help="non-ideality strength of the analog chip")
    args = ap.parse_args(argv)
    steps, n_train = (20, 64) if args.quick else (160, 128)
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    train = data.train if n_train is None else data.train.subset(torch.arange(n_train))
    chip = cil.make_backend("analog-mismatch", strength=args.strength, seed=0)
    initial = build_model(data.n_inputs)

    net = cil.wrap(copy.deepcopy(initial))
    mh = cil.Trainer(net, chip, "mh", seed=0, chains=4, burn_in=steps // 2, block_size=64)
    print(f"before training: accuracy on the analog chip {mh.evaluate(data.test)['accuracy']:.3f}")
    history = mh.fit(train, steps=steps)
    acc_mh = mh.evaluate(data.test)["accuracy"]
    print(f"MH      : accuracy on the analog chip {acc_mh:.3f} after {steps} steps "
          f"(acceptance {history.last['acceptance']:.2f}, {mh.session.stats.calls} chip calls)")

    result = f"RESULT mh={acc_mh:.4f}"
    if not args.quick:  # the baseline: BPTT in software, then deployed on the same chip
        offline = cil.Trainer(cil.wrap(copy.deepcopy(initial)), chip, "offline", lr=1e-2, seed=0)
        offline.fit(data.train, epochs=10, batch_size=32)
        acc_off = offline.evaluate(data.test)["accuracy"]
        print(f"offline : accuracy on the analog chip {acc_off:.3f} "
              f"(software model {offline.evaluate_software(data.test)['accuracy']:.3f})")
        result += f" offline={acc_off:.4f}"
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
