"""Two diagnoses of the Xylo re-creation (:mod:`xylo_recreation`):

1. why cil's offline training trails rockpool's own flow by a fraction of a point in the sparse
   regime: the differences between the two flows, removed one at a time;
2. how much of offline's loss on the chip in the dense regime is the chip's 16-bit saturation:
   the same offline weights deployed with the transfer's integer threshold aimed lower
   (``XyloBackend(threshold_target=...)``; default 4096), so the state has more headroom.

    nice -n 10 python benchmarks/xylo_diagnosis.py            # 5 seeds (~12 min on 1 core)
    python benchmarks/xylo_diagnosis.py --quick               # 1 seed, small data (smoke run)

Both flows see the same data, optimizer (Adam, lr 0.003, gradient norm clipped at 1), epochs,
batch size and readout (:mod:`xylo_recreation`, sparse regime); rockpool's ``LIFTorch`` network and
the snntorch ``Synaptic`` network differ in four ways, each a variant of cil's offline run here
(chip accuracy on the ``xylo`` backend, test set of 171 samples: one sample is 0.58 points):

* ``init``: rockpool's initial weights (``LinearTorch``: Kaiming uniform, bound √(6/fan-in))
  instead of torch's ``nn.Linear`` default (bound 1/√fan-in), copied and multiplied by α, because
  rockpool's ``LIFTorch`` adds the input before decaying the current (``I = α(I + Wx)``, the chip's
  order) where snntorch decays first (``i = αi + Wx``): ``W_snntorch = α W_rockpool`` is the same network;
* ``surrogate``: rockpool's ``PeriodicExponential`` (:math:`e^{-|v-\\theta|/0.5}/\\theta` below
  threshold) as cil's ``Surrogate("exponential", 0.5)`` instead of snntorch's ``atan``;
* ``neuron``: the chip's neuron semantics in the software model (immediate subtract reset,
  firing at :math:`v \\ge \\theta`, up to 31 hidden spikes per step), as ``LIFTorch`` has them;
* ``step``: Adam's lr times α, because the same lr on weights α times smaller is a step 1/α times
  larger relative to the weights (with all four, cil's software model is rockpool's, forward
  spike for spike; what remains is the batch order and the multi-spike surrogate's periodicity).

**Dense regime**: cil offline as in the re-creation, its weights deployed at each of
:data:`TARGETS`; chip accuracy and the share of hidden neuron-steps whose synaptic current was
clipped at a 16-bit rail (:func:`cil_xylo.engine.saturation`). The transfer puts the integer
threshold at ``max(threshold_target, the smallest that gives the smallest matrix all 8 bits)``
(:func:`cil_core.hardware.domains.quantize_population`); ``1`` is therefore that smallest one,
which is rockpool's ``channel_quantize`` choice (largest weight of a neuron at code 127, no shift).

Writes ``xylo_diagnosis[_quick].json`` under ``--out`` and prints the tables (mean ± std over
seeds, and per seed; rockpool's flow run here on the same seeds).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import numpy as np
import torch

from harness import add_output_args, markdown_table, write_json
from xylo_recreation import CONFIG, QUICK, load_data, rockpool_model, run_rockpool, snntorch_model

#: the dense regime's threshold targets (the default first)
TARGETS = (4096, 1024, 256, 1)

#: each variant: which of the four differences it removes (module doc)
VARIANTS = {"cil offline (as in the re-creation)": (), "+ rockpool's init": ("init",),
            "+ exponential surrogate": ("surrogate",), "+ chip's neuron semantics": ("neuron",),
            "+ init, surrogate, neuron": ("init", "surrogate", "neuron"),
            "+ init, surrogate, neuron, step (= rockpool's network)": ("init", "surrogate", "neuron", "step")}


def cil_offline(cfg: dict[str, Any], seed: int, changes: tuple[str, ...]) -> float:
    """Chip accuracy of cil's offline run with ``changes`` applied (module doc)."""
    import cil_core as cil
    from cil_core.network.description import NetworkSpec
    from cil_core.network.neuron import Surrogate

    train, test = load_data(cfg, "sparse")
    model = snntorch_model(cfg, 1.0, seed)
    if "init" in changes:
        w_in, w_out = list(rockpool_model(cfg, 1.0, seed).parameters().astorch())
        with torch.no_grad():
            model[0].weight.copy_(w_in.T * cfg["alpha"])
            model[2].weight.copy_(w_out.T * cfg["alpha"])
    net = cil.wrap(model)
    layers = list(net.spec.layers)
    for i, cap in ((1, 31), (3, 1)):
        kw: dict[str, Any] = {}
        if "surrogate" in changes:
            kw["surrogate"] = Surrogate("exponential", 0.5, 1.0)
        if "neuron" in changes:
            kw.update(reset_timing="immediate", fires_at_threshold=True, max_spikes_per_step=cap)
        if kw:
            layers[i] = layers[i].with_(**kw)
    net.spec = NetworkSpec(tuple(layers), net.spec.input_shape, net.spec.source, net.spec.synapse_calls)
    lr = cfg["lr"] * (cfg["alpha"] if "step" in changes else 1.0)
    tr = cil.Trainer(net, "xylo", "offline", lr=lr, grad_clip=cfg["grad_clip"],
                     readout=cil.Readout("rate", cfg["readout_scale"]), seed=seed)
    tr.fit(train, epochs=cfg["epochs"], batch_size=cfg["batch"])
    return float(tr.evaluate(test)["accuracy"])


def dense_targets(cfg: dict[str, Any], seed: int) -> dict[int, dict[str, float]]:
    """Dense regime: cil offline's weights deployed at each threshold target (module doc)."""
    import cil_core as cil

    train, test = load_data(cfg, "dense")
    net = cil.wrap(snntorch_model(cfg, cfg["regimes"]["dense"]["gain"], seed))
    readout = cil.Readout("rate", cfg["readout_scale"])
    tr = cil.Trainer(net, "xylo", "offline", lr=cfg["lr"], grad_clip=cfg["grad_clip"], readout=readout, seed=seed)
    tr.fit(train, epochs=cfg["epochs"], batch_size=cfg["batch"])
    out = {}
    for t in TARGETS:
        chip = cil.make_backend("xylo", threshold_target=t)
        dep = chip.transfer(net.spec, net.detached_parameters())
        out[t] = {"accuracy": float(cil.Trainer(net, chip, "offline", readout=readout).evaluate(test)["accuracy"]),
                  "threshold": float(dep.chip["network"].threshold.mean()), **chip.saturation(dep, test.x)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, small data and budget (smoke run)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 5; --quick: 1)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = copy.deepcopy(CONFIG)
    if args.quick:
        cfg.update(QUICK)
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    t0 = time.perf_counter()
    acc: dict[str, list[float]] = {"rockpool's flow (a)": [float(run_rockpool(cfg, "sparse", s)["accuracy"][1])
                                                            for s in seeds]}
    print("rockpool", acc["rockpool's flow (a)"], flush=True)
    for name, changes in VARIANTS.items():
        acc[name] = [cil_offline(cfg, s, changes) for s in seeds]
        print(name, acc[name], flush=True)
    sd = (lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0)  # noqa: E731
    rows = [[name, f"{100 * np.mean(v):.1f} ± {100 * sd(v):.1f}", " ".join(f"{100 * a:.1f}" for a in v)]
            for name, v in acc.items()]
    table = markdown_table(["sparse regime, chip accuracy (%)", "mean ± std", "per seed"], rows)
    print(table)
    dense = [dense_targets(cfg, s) for s in seeds]
    rows = []
    for t in TARGETS:
        a = [d[t]["accuracy"] for d in dense]
        rows.append([f"{t}" + (" (default)" if t == TARGETS[0] else ""), f"{np.mean([d[t]['threshold'] for d in dense]):.0f}",
                     f"{100 * np.mean(a):.1f} ± {100 * sd(a):.1f}", " ".join(f"{100 * x:.1f}" for x in a),
                     f"{100 * np.mean([d[t]['hidden current'] for d in dense]):.1f}",
                     f"{100 * np.mean([d[t]['output membrane'] for d in dense]):.1f}"])
    dense_table = markdown_table(["dense regime, offline weights: threshold_target", "hidden threshold (int)",
                                  "chip accuracy (%)", "per seed", "hidden current clipped (% of neuron-steps)",
                                  "output membrane clipped (%)"], rows)
    print(dense_table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"xylo_diagnosis{'_quick' if args.quick else ''}.json",
               {"config": cfg, "seeds": seeds, "accuracy": acc, "table": table, "dense": dense,
                "dense_table": dense_table, "seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
