"""A recurrent norse model trained with MH and with CIL-SPL on the analog-mismatch chip.

The task needs memory: scikit-learn's 8x8 digits (classes 0-3) are shown one pixel row at a
time, each row for a few time steps as Bernoulli spikes (8 inputs, one per column), so the class
can only be read out by integrating the rows over time. The model is what a norse user writes: a
``SequentialState`` with a ``LIFRecurrentCell`` (input and recurrent weights, no autapses) and a
``LIFCell`` output layer, run one step per call. cil wraps it unchanged: the cell's
``input_weights`` become a dense layer, its ``recurrent_weights`` recurrent synapses, which the
analog chip runs with their own mismatch (per-synapse gain variation, saturation, quantized weights).

Two chip-in-the-loop trainings from the same initial weights:

* **MH** (Metropolis-Hastings): no gradients, the chip scores weight proposals;
* **CIL-SPL**: the chip's output spikes drive the loss, norse's surrogate-gradient BPTT
  (through the recurrence) gives the update.

Both end in the user's norse model, which still runs in norse (without the chip: weights
that MH fitted to this chip's mismatch do less well there, the point of training in the loop).

    python examples/recurrent_mh_cil_spl.py           # about a minute
    python examples/recurrent_mh_cil_spl.py --quick   # well under a minute (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import time

import norse.torch as norse
import torch
from torch import nn

import cil_core as cil

CLASSES = 4
STEPS_PER_ROW = 3


def load_row_digits(seed: int = 0, n_test: int = 200) -> tuple[cil.SpikeData, cil.SpikeData]:
    """Digits 0-3 as row-by-row spike trains ``[8 * STEPS_PER_ROW, N, 8]``: the row of pixels shown
    at time ``t`` is row ``t // STEPS_PER_ROW``; a pixel fires with probability intensity / 16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = torch.as_tensor(d.target) < CLASSES
    img = torch.as_tensor(d.images, dtype=torch.float32)[keep] / 16.0  # [N, 8 rows, 8 columns]
    y = torch.as_tensor(d.target)[keep].long()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    img, y = img[perm], y[perm]
    rates = img.permute(1, 0, 2).repeat_interleave(STEPS_PER_ROW, 0)  # [T, N, 8]
    x = (torch.rand(rates.shape, generator=g) < rates).float()
    return cil.SpikeData(x[:, n_test:], y[n_test:]), cil.SpikeData(x[:, :n_test], y[:n_test])


def build_model(hidden: int = 32) -> norse.SequentialState:
    torch.manual_seed(0)
    p = norse.LIFParameters(tau_mem_inv=torch.tensor(100.0), tau_syn_inv=torch.tensor(100.0),
                            v_th=torch.tensor(0.5))
    model = norse.SequentialState(
        norse.LIFRecurrentCell(8, hidden, p=p),     # input + recurrent weights, autapses=False
        nn.Linear(hidden, CLASSES), norse.LIFCell(p=p),
    )
    with torch.no_grad():  # norse integrates dt/tau of its input per step: start with larger weights
        model[0].input_weights.mul_(2.0)
        model[1].weight.mul_(3.0)
    return model


def norse_accuracy(model: norse.SequentialState, data: cil.SpikeData) -> float:
    """The norse model in norse (no cil, no chip): spike counts of the output layer."""
    state, out = None, []
    with torch.no_grad():
        for t in range(data.x.shape[0]):
            o, state = model(data.x[t], state)
            out.append(o)
    return float((torch.stack(out).sum(0).argmax(-1) == data.y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short trainings (smoke test)")
    ap.add_argument("--strength", type=float, default=0.5,
                    help="non-ideality strength of the analog chip (1.0: 4-bit weights, too coarse for this task)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (and spins on a busy machine)
    mh_steps, mh_train, epochs = (600, 256, 4) if args.quick else (1500, 520, 10)

    t0 = time.perf_counter()
    train, test = load_row_digits()
    chip = cil.make_backend("analog-mismatch", strength=args.strength, seed=0)
    initial = build_model()
    net = cil.wrap(copy.deepcopy(initial))
    print(net.spec.describe())
    start = cil.Trainer(net, chip, "cil-spl", seed=0).evaluate(test)["accuracy"]
    print(f"before training: accuracy on the analog chip {start:.3f} (chance {1 / CLASSES:.2f})")

    mh_model = copy.deepcopy(initial)
    mh = cil.Trainer(mh_model, chip, "mh", seed=0, chains=4, burn_in=mh_steps // 2, block_size=32)
    history = mh.fit(train.subset(torch.arange(mh_train)), steps=mh_steps)
    acc_mh = mh.evaluate(test)["accuracy"]
    print(f"MH      : accuracy on the analog chip {acc_mh:.3f} after {mh_steps} steps "
          f"(acceptance {history.last['acceptance']:.2f}, {mh.session.stats.calls} chip calls)")

    spl_model = copy.deepcopy(initial)
    spl = cil.Trainer(spl_model, chip, "cil-spl", lr=5e-2, seed=0)
    spl.fit(train, epochs=epochs, batch_size=16)
    acc_spl = spl.evaluate(test)["accuracy"]
    print(f"CIL-SPL : accuracy on the analog chip {acc_spl:.3f} after {epochs} epochs "
          f"(software model {spl.evaluate_software(test)['accuracy']:.3f})")

    # the trained weights live in the norse models: norse runs them as before (without the chip)
    diag = float(spl_model[0].recurrent_weights.detach().diagonal().abs().sum())
    print(f"the trained norse models in norse: MH {norse_accuracy(mh_model, test):.3f}, "
          f"CIL-SPL {norse_accuracy(spl_model, test):.3f} (no autapses: |diag| = {diag:g})")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(f"RESULT mh={acc_mh:.4f} cil-spl={acc_spl:.4f} before={start:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
