"""The main job (``make demo`` / ``cil demo``): a 62-32-2 LIF network (snntorch ``Leaky``
semantics, built library-free from the network description so that the core needs no SNN
library) on the Wisconsin Breast Cancer data, trained several ways for the simulated analog
chip (``analog-mismatch``, from the cil-analog distribution; any backend can be named), each
measured on that chip:

* **offline** — BPTT with surrogate gradients in software, then deployed;
* **CIL-SPL** — chip forward, software backward;
* **MH** — Metropolis-Hastings over the weights, likelihood measured on the chip, from the
  random initialisation;
* **MH from offline** — the same sampler started at the offline-trained weights (chip-in-the-loop
  fine-tuning of a deployed network).

Prints a table (chip test accuracy, software test accuracy, wall time, chip calls) and, with
``--json``, writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from cil_core.network.reference import feedforward


def make_network(n_inputs: int, n_hidden: int = 32, n_classes: int = 2, beta: float = 0.9, seed: int = 0):
    """The network of ``examples/snntorch_mh_analog.py`` — ``Linear, Leaky, Linear, Leaky`` with
    biases, initialised as torch does after ``torch.manual_seed(seed)`` — without snntorch."""
    return feedforward([n_inputs, n_hidden, n_classes], beta=beta, bias=True, seed=seed)


def run(seed: int = 0, strength: float = 1.0, quick: bool = False, backend: str = "analog-mismatch",
        progress: bool = True) -> dict:
    torch.manual_seed(seed)
    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    from cil_core.options import declared_options

    # the chip's strength and seed, for backends that have them (analog-mismatch); others run as they are
    declared = declared_options(cil.get_manager().entry("backends", backend).value)[0] if ":" not in backend else {}
    chip_options = {k: v for k, v in {"strength": strength, "seed": seed}.items() if k in declared}
    epochs = 8 if quick else 30
    mh_steps, mh_burn = (300, 150) if quick else (1500, 700)
    plans = [
        ("offline", "offline", dict(epochs=epochs), dict(lr=5e-3)),
        ("cil-spl", "cil-spl", dict(epochs=epochs), dict(lr=5e-3)),
        ("mh", "mh", dict(steps=mh_steps), dict(burn_in=mh_burn)),
        ("mh from offline", "mh", dict(steps=mh_steps), dict(burn_in=mh_burn, init="network")),
    ]
    rows = []
    offline_weights = None
    for name, algorithm, fit, opts in plans:
        net = make_network(data.n_inputs, seed=seed)
        if name == "mh from offline":
            net.load_parameters(offline_weights)
        chip = cil.make_backend(backend, **chip_options)
        trainer = cil.Trainer(net, chip, algorithm, seed=seed, **opts)
        t0 = time.perf_counter()
        trainer.fit(data.train, progress=progress, **fit)
        wall = time.perf_counter() - t0
        if name == "offline":
            offline_weights = net.detached_parameters()
        hw = trainer.evaluate(data.test)
        sw = trainer.evaluate_software(data.test)
        rows.append({"algorithm": name, "chip_test_accuracy": hw["accuracy"], "software_test_accuracy": sw["accuracy"],
                     "wall_time_s": wall, "hardware_calls": trainer.session.stats.calls})
    return {"backend": backend, "strength": strength, "seed": seed, "quick": quick,
            "train_samples": len(data.train), "test_samples": len(data.test), "rows": rows}


def table(result: dict) -> str:
    head = (f"Breast cancer (train {result['train_samples']}, test {result['test_samples']}), backend "
            f"'{result['backend']}' strength={result['strength']} seed={result['seed']}")
    lines = [head, f"{'algorithm':<16} {'chip test acc':>14} {'software test acc':>18} {'wall time (s)':>14} {'chip calls':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['algorithm']:<16} {r['chip_test_accuracy']:>14.3f} {r['software_test_accuracy']:>18.3f} "
                     f"{r['wall_time_s']:>14.1f} {r['hardware_calls']:>11d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cil demo", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="model init, training order and chip (mismatch) seed")
    p.add_argument("--strength", type=float, default=1.0, help="non-ideality strength of the analog chip (0..1)")
    p.add_argument("--backend", default="analog-mismatch")
    p.add_argument("--quick", action="store_true", help="short budgets (for tests)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    result = run(a.seed, a.strength, a.quick, a.backend, progress=not a.no_progress)
    print(table(result))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
        print(f"results written to {a.json}")
    return 0
