"""A custom chip in the loop: the ToyChip template plugin (examples/custom_chip_plugin).

If the template is pip-installed (``pip install -e examples/custom_chip_plugin``) cil finds it
through its entry point; otherwise this script registers the template's backend class at run time.
It then trains a small network with CIL-SPL on the toy chip — with retries, a per-call timeout
and checkpoints, as one would on real hardware — compares it with offline training deployed on
the same chip, and (if cil-nir is installed) exports the deployed network as a NIR graph.

    python examples/custom_chip.py           # ~20 s
    python examples/custom_chip.py --quick   # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from cil_core.network.reference import feedforward


def ensure_toychip() -> str:
    """Use the installed plugin, or register the template's module at run time."""
    if "toy-chip" in cil.get_manager().names("backends"):
        return "installed plugin (entry point)"
    sys.path.insert(0, str(Path(__file__).resolve().parent / "custom_chip_plugin"))
    from cil_toychip import ToyChip

    cil.register(ToyChip)  # a Backend subclass: registered as the backend named ToyChip.name
    return "template registered at run time"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one epoch (smoke test)")
    args = ap.parse_args(argv)
    epochs = 1 if args.quick else 6
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    print(f"toy-chip: {ensure_toychip()}")

    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in ("offline", "cil-spl"):
            net = feedforward([data.n_inputs, 16, 2], beta=0.9, weight_gain=3.0, seed=0)
            chip = cil.make_backend("toy-chip", mismatch=0.5, seed=3)
            trainer = cil.Trainer(net, chip, algorithm, lr=1e-2, seed=0, retries=2, timeout=60.0)
            trainer.fit(data.train, epochs=epochs, batch_size=32, checkpoint=Path(tmp) / f"{algorithm}.pt",
                        checkpoint_every=20)
            results[algorithm] = trainer.evaluate(data.test)["accuracy"]
            print(f"{algorithm:8s}: accuracy on the toy chip {results[algorithm]:.3f} "
                  f"(software model {trainer.evaluate_software(data.test)['accuracy']:.3f}, "
                  f"{trainer.session.stats.calls} chip calls)")
        try:
            import cil_nir
        except ImportError:
            print("cil-nir is not installed: skipping the NIR export")
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                graph = cil_nir.export(trainer, Path(tmp) / "deployed.nir")  # the 6-bit weights the chip holds
            print(f"exported the deployed network as NIR: {len(graph.nodes)} nodes, dt={graph.metadata['dt']} s"
                  + (" (snntorch-style deferred reset kept in cil_* metadata)" if caught else ""))
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(f"RESULT cil-spl={results['cil-spl']:.4f} offline={results['offline']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
