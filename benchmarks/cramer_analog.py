"""Hardware-in-the-loop training re-creation (Cramer, Billaudelle et al. 2020, BrainScaleS-2) on the
simulated analog chip.

    python benchmarks/cramer_analog.py --quick    # < 40 s on 2 cores (smoke run)
    python benchmarks/cramer_analog.py            # full: 5 chips, a few minutes on 2 cores
    python benchmarks/cramer_analog.py --docs     # full; also rewrites the cramer-analog section of docs/results.md
    python benchmarks/cramer_analog.py --resume   # continue an interrupted run (finished points are kept)
    python benchmarks/cramer_analog.py --runner ray [--address HOST:6379]   # the points as Ray tasks (cil-ray)

The runs are the points of a ``cil sweep`` (offline once, each in-the-loop method once per chip),
one JSON line each in ``cramer_analog[_quick].jsonl`` next to the JSON; 2 local worker processes
of one torch thread each by default.

Setup (BrainScaleS-2-like, scaled down to fit 2 CPU cores):

* data: scikit-learn's bundled digits (1797 images, 8x8, 17 grey levels; nothing is downloaded),
  upsampled bilinearly to 16x16 and scaled to [0, 1]; fixed split 1297 train / 500 test;
* latency code (Cramer et al.): one spike per pixel at most, at
  :math:`t = \\tau \\ln(x / (x - \\theta))` with :math:`\\theta = 0.2`; pixels :math:`x \\le \\theta`
  stay silent. :math:`t/\\tau \\in (0.22, 3]` is mapped onto the first ``T_code`` of ``T`` time
  bins (later times clip into the last coding bin), so brighter pixels spike earlier;
* network: 256 → ``hidden`` LIF (snntorch ``Leaky`` semantics, :math:`\\beta` = 0.9, no biases) →
  10 non-spiking leaky integrators (``output="membrane"``); readout ``"max-membrane"``
  (max over time of the readout membrane, log-softmax cross entropy);
* chip: ``analog-mismatch`` with ``strength`` (default 0.5: synapse gain mismatch, per-neuron
  threshold and time-constant spread, saturating synapses, E/I asymmetry, weight range, membrane
  noise) and **6-bit weights** (``dac_bits=6``: ±31 codes, the sign bit included; BrainScaleS-2
  holds 6-bit magnitudes plus a sign); ``--chips`` chips = chip seeds 0..N-1.

Methods, same initial weights, data, optimizer and number of epochs:

* ``offline``: BPTT with surrogate gradients in software, then deployed on every chip;
* ``cil-spl (output)``: the chip's output membrane is the forward value, the software graph gives
  the gradient (``cil.Trainer(net, chip, "cil-spl", observe="output")``), trained on each chip;
* ``cil-spl (layers)``: as Cramer et al.: every layer's chip spikes are injected into the software
  pass (``observe="layers"``; the simulated chip reports spikes, not membranes).

Software accuracy = the time-stepped software model with the same weights; chip accuracy = the
backend. The fidelity report (:func:`cil_core.fidelity`) runs on the test set *before* in-the-loop
training (the offline-trained weights deployed on that chip) and *after* it (the weights each
in-the-loop method trained on that chip): per-layer spike-count correlation, rate error and
distortion, mean ± std over chips.

The paper's claim checked here: after in-the-loop training, hardware accuracy ≈ software accuracy
(of the same network trained in software). Not re-created: the hidden-spike regulariser, the
SuperSpike surrogate (cil's default atan surrogate is used), MNIST (not downloadable here).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness import (add_output_args, add_sweep_args, markdown_table, publish_figures, runner_options, save_figure,
                     write_docs_section, write_json)

SECTION = "cramer-analog"
METHODS = ["offline", "cil-spl-output", "cil-spl-layers"]
LABELS = {"offline": "offline (software BPTT, deployed)", "cil-spl-output": "CIL-SPL, output observed",
          "cil-spl-layers": "CIL-SPL, every layer observed"}
METHOD_OBSERVES = {"cil-spl-output": "output", "cil-spl-layers": "layers"}  # in-the-loop methods: what they observe
THETA, WINDOW = 0.2, 3.0  # latency code: threshold and the longest coded t/tau


# ----------------------------------------------------------------------------- data and network
def latency_digits(T: int, T_code: int, n_train: int = 1297, n_test: int = 500, seed: int = 0):
    """sklearn digits → 16x16 → latency-coded spikes ``[T, N, 256]``; (train, test) SpikeData."""
    import cil_core as cil
    from sklearn.datasets import load_digits

    if not 1 <= T_code <= T:
        raise ValueError(f"T_code must lie in 1..T, got {T_code} (T={T})")
    dg = load_digits()
    img = torch.tensor(dg.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(img, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1).flatten(1)
    on = x > THETA
    t = torch.log(x / (x - THETA).clamp_min(1e-9))  # t / tau, > ln(1 / 0.8) for x <= 1
    bins = torch.clamp((t / WINDOW * T_code).floor(), 0, T_code - 1).long()
    spikes = torch.zeros(T, *x.shape)
    n_idx, p_idx = on.nonzero(as_tuple=True)
    spikes[bins[n_idx, p_idx], n_idx, p_idx] = 1.0
    y = torch.as_tensor(dg.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, te = order[:n_train], order[-n_test:]
    return cil.SpikeData(spikes[:, tr], y[tr]), cil.SpikeData(spikes[:, te], y[te])


def make_net(hidden: int, beta: float, gain: float, seed: int):
    """256 → hidden LIF → 10 leaky-integrator readout, no biases (seeded nn.Linear init × gain)."""
    from cil_core.network.reference import feedforward

    return feedforward([256, hidden, 10], beta=beta, weight_gain=gain, seed=seed, readout="membrane")


def make_chip(cfg: dict[str, Any], chip: int):
    import cil_core as cil

    return cil.make_backend("analog-mismatch", strength=cfg["strength"], seed=chip, dac_bits=cfg["dac_bits"])


# ----------------------------------------------------------------------------- runs
def _fid(report) -> dict[str, Any]:
    return {"agreement": report.agreement, "software_accuracy": report.software_accuracy,
            "chip_accuracy": report.chip_accuracy,
            "layers": {lf.name: {"correlation": lf.correlation, "rate_error": lf.rate_error,
                                 "distortion": lf.distortion, "sw_rate": lf.sw_rate, "chip_rate": lf.chip_rate,
                                 "first_divergence": lf.first_divergence} for lf in report.layers}}


def run_point(payload: dict[str, Any]) -> dict[str, Any]:
    """One point of the sweep: ``offline`` (trained once in software, then deployed on every chip)
    or one in-the-loop method trained on one chip. Returns JSON-able metrics."""
    import cil_core as cil

    cfg, method, chip = payload["cfg"], payload["method"], payload.get("chip")
    train, test = latency_digits(cfg["T"], cfg["T_code"], cfg["n_train"], cfg["n_test"])
    net = make_net(cfg["hidden"], cfg["beta"], cfg["gain"], cfg["init_seed"])
    opts = dict(readout="max-membrane", lr=cfg["lr"], seed=cfg["init_seed"])
    t0 = time.perf_counter()
    if method == "offline":  # the chip plays no part in training; deployed on every chip
        tr = cil.Trainer(net, "ideal", "offline", **opts)
        tr.fit(train, epochs=cfg["epochs"], batch_size=cfg["batch"])
        sw = float(tr.evaluate_software(test)["accuracy"])
        w = net.detached_parameters()
        out = {"software": sw, "chips": []}
        for c in range(payload["chips"]):
            rep = cil.fidelity(net, make_chip(cfg, c), test, readout="max-membrane")
            out["chips"].append({"accuracy": (sw, rep.chip_accuracy), "fidelity": _fid(rep)})
        assert all(torch.equal(v, w[k]) for k, v in net.detached_parameters().items()), "deployment changed weights"
    else:
        be = make_chip(cfg, chip)
        tr = cil.Trainer(net, be, "cil-spl", observe=METHOD_OBSERVES[method], **opts)
        tr.fit(train, epochs=cfg["epochs"], batch_size=cfg["batch"])
        rep = cil.fidelity(net, be, test, readout="max-membrane")
        out = {"accuracy": (rep.software_accuracy, rep.chip_accuracy), "fidelity": _fid(rep)}
    out["seconds"] = time.perf_counter() - t0
    return out


def run(cfg: dict[str, Any], chips: int, log, *, results: Path, runner: str = "local",
        runner_options: dict[str, Any] | None = None, resume: bool = False, threads: int = 1) -> dict[str, Any]:
    """Every method on every chip, as the points of a ``cil sweep`` (:func:`cil_core.app.sweep.run_sweep`):
    ``offline`` once, each in-the-loop method once per chip. One JSON line per finished point in
    ``results``; with ``resume`` the points already there are kept."""
    from cil_core.app.sweep import Point, fingerprint, point_key, run_sweep

    train, test = latency_digits(cfg["T"], cfg["T_code"], cfg["n_train"], cfg["n_test"])
    spikes = float(train.x.sum((0, 2)).mean())
    log(f"data: {len(train)} train / {len(test)} test, T={cfg['T']} (code in {cfg['T_code']} bins), "
        f"{spikes:.0f} input spikes per sample")
    points = [Point(point_key({"method": "offline"}), {"method": "offline"},
                    {"cfg": cfg, "method": "offline", "chips": chips})]
    points += [Point(point_key(o), o, {"cfg": cfg, **o})
               for c in range(chips) for m in METHOD_OBSERVES for o in [{"method": m, "chip": c}]]

    def show(point: Point, rec: dict[str, Any]) -> None:
        m = rec["metrics"]
        if point.options["method"] == "offline":
            log(f"offline: software {m['software']:.3f}, chips " + ", ".join(f"{c['accuracy'][1]:.3f}" for c in m["chips"])
                + f" ({m['seconds']:.1f}s, {rec['worker']})")
        else:
            log(f"  chip {point.options['chip']} {point.options['method']:15s} sw {m['accuracy'][0]:.3f} "
                f"chip {m['accuracy'][1]:.3f} ({m['seconds']:.1f}s, {rec['worker']})")

    sweep = run_sweep(points, run_point, results=results, runner=runner, runner_options=runner_options or {},
                      on_result=show, base=fingerprint({"cfg": cfg, "chips": chips}), threads=threads,
                      fresh=not resume)
    if sweep.skipped:
        log(f"{len(sweep.skipped)} point(s) taken from {results} (--resume)")
    rec = {k: r["metrics"] for k, r in sweep.records.items()}
    off = rec[points[0].key]
    per_chip = []
    for c in range(chips):
        res: dict[str, Any] = {"chip": c, "accuracy": {"offline": tuple(off["chips"][c]["accuracy"])},
                               "fidelity": {"offline": off["chips"][c]["fidelity"]}}
        for m in METHOD_OBSERVES:
            r = rec[point_key({"method": m, "chip": c})]
            res["accuracy"][m] = tuple(r["accuracy"])
            res["fidelity"][m] = r["fidelity"]
        per_chip.append(res)
    return {"chips": per_chip, "input_spikes_per_sample": spikes, "n_train": len(train), "n_test": len(test)}


def _ms(v: list[float]) -> tuple[float, float]:
    a = np.asarray([np.nan if x is None else x for x in v], dtype=float)
    return float(np.nanmean(a)), float(np.nanstd(a, ddof=1)) if len(a) > 1 else 0.0


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    chips = runs["chips"]
    acc, fid = {}, {}
    for m in METHODS:
        sw = [c["accuracy"][m][0] for c in chips]
        hw = [c["accuracy"][m][1] for c in chips]
        acc[m] = {"software": _ms(sw), "chip": _ms(hw), "gap": _ms([a - b for a, b in zip(sw, hw)]),
                  "software_all": sw, "chip_all": hw}
        layers = chips[0]["fidelity"][m]["layers"]
        fid[m] = {"agreement": _ms([c["fidelity"][m]["agreement"] for c in chips]),
                  "layers": {name: {k: _ms([c["fidelity"][m]["layers"][name][k] for c in chips])
                                    for k in ("correlation", "rate_error", "distortion", "sw_rate", "chip_rate")} for name in layers}}
    return {"accuracy": acc, "fidelity": fid}


def _pm(ms: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * ms[0]:.{digits}f} ± {scale * ms[1]:.{digits}f}"


def tables(summary: dict[str, Any], sw_reference: float) -> tuple[str, str]:
    acc = summary["accuracy"]
    rows = [[LABELS[m], _pm(acc[m]["software"]), _pm(acc[m]["chip"]), _pm(acc[m]["gap"]),
             f"{100 * (sw_reference - acc[m]['chip'][0]):+.1f}"] for m in METHODS]
    t1 = markdown_table(["method", "software acc. (%)", "chip acc. (%)", "software − chip (pp)",
                         "offline software − chip (pp)"], rows)
    fid = summary["fidelity"]
    names = list(fid["offline"]["layers"])
    rows2 = []
    for m, when in (("offline", "before (offline weights)"), ("cil-spl-output", "after, CIL-SPL output"),
                    ("cil-spl-layers", "after, CIL-SPL layers")):
        for name in names:
            d = fid[m]["layers"][name]
            rows2.append([when, name, _pm(d["correlation"], 1, 3), _pm(d["rate_error"], 1, 2),
                          _pm(d["distortion"], 1, 2), _pm(fid[m]["agreement"], 1, 3)])
    t2 = markdown_table(["fidelity on the test set", "layer", "correlation", "rate error", "distortion",
                         "output agreement"], rows2)
    return t1, t2


def figure(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, fid = summary["accuracy"], summary["fidelity"]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    xs = np.arange(len(METHODS))
    for off, key, lab in ((-0.2, "software", "software"), (0.2, "chip", "chip (analog-mismatch, 6-bit)")):
        ax[0].bar(xs + off, [100 * acc[m][key][0] for m in METHODS], 0.4,
                  yerr=[100 * acc[m][key][1] for m in METHODS], label=lab, capsize=3)
    ax[0].set_xticks(xs, ["offline", "CIL-SPL\noutput", "CIL-SPL\nlayers"])
    ax[0].set_ylim(50, 100)
    ax[0].set_ylabel("test accuracy (%)")
    ax[0].set_title("digits 16x16, latency code: software vs chip")
    ax[0].legend(loc="lower right")
    names = list(fid["offline"]["layers"])
    w = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        ax[1].bar(np.arange(len(names)) + (j - 1) * w, [fid[m]["layers"][n]["distortion"][0] for n in names], w,
                  yerr=[fid[m]["layers"][n]["distortion"][1] for n in names], capsize=3,
                  label="before (offline)" if m == "offline" else f"after ({LABELS[m]})")
    ax[1].set_xticks(np.arange(len(names)), [f"{n}\n({'hidden' if i < len(names) - 1 else 'readout'})"
                                             for i, n in enumerate(names)])
    ax[1].set_ylabel("distortion (relative error vs software)")
    ax[1].set_title("fidelity report per layer, mean ± std over chips")
    ax[1].legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, 2 chips, 2 epochs (< 40 s on 2 cores)")
    ap.add_argument("--chips", type=int, default=None, help="number of chips (chip seeds 0..N-1; default 5)")
    ap.add_argument("--strength", type=float, default=0.5, help="analog-mismatch strength (default 0.5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per point (default 1)")
    add_sweep_args(ap, workers=min(2, os.cpu_count() or 1), unit="points")
    add_output_args(ap, docs_section=SECTION)
    args = ap.parse_args(argv)
    cfg = dict(T=25, T_code=20, hidden=128, beta=0.9, gain=2.0, init_seed=0, lr=5e-3, epochs=20, batch=64,
               strength=args.strength, dac_bits=6, n_train=1297, n_test=500)
    chips = 5
    if args.quick:
        cfg.update(hidden=48, epochs=2, n_train=400, n_test=200)
        chips = 2
    if args.chips is not None:
        chips = args.chips
    t_start = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    runs = run(cfg, chips, lambda msg: print(msg, flush=True), results=args.out / f"cramer_analog{suffix}.jsonl",
               runner=args.runner, runner_options=runner_options(args), resume=args.resume, threads=args.threads)
    summary = summarize(runs)
    wall = time.perf_counter() - t_start
    sw_ref = summary["accuracy"]["offline"]["software"][0]
    t1, t2 = tables(summary, sw_ref)
    print(t1)
    print(t2)
    acc = summary["accuracy"]
    best = max(("cil-spl-output", "cil-spl-layers"), key=lambda m: acc[m]["chip"][0])
    chip_best, sw_best = acc[best]["chip"][0], acc[best]["software"][0]
    gap = round(100 * (sw_ref - chip_best), 1)  # pp below the software-trained network
    same = round(100 * (sw_best - chip_best), 1)  # pp, same (in-the-loop trained) weights
    off_gap = 100 * (sw_ref - acc["offline"]["chip"][0])
    recovered = (chip_best - acc["offline"]["chip"][0]) / max(1e-9, sw_ref - acc["offline"]["chip"][0])
    ok_same, ok_ref = abs(same) <= 1.0, gap <= 1.0  # criterion: within 1 pp (5 test samples of 500)
    claim = "holds" if ok_same and ok_ref else "partly holds" if ok_same or ok_ref else "does NOT hold"
    verdict = (f"Claim (hardware ≈ software after in-the-loop training, criterion: within 1 pp): {claim} here. "
               f"With the same weights, the chip {'matches' if ok_same else 'does not match'} software after "
               f"in-the-loop training ({LABELS[best]}: chip "
               f"{100 * chip_best:.1f} % vs software {100 * sw_best:.1f} %, {abs(same):.1f} pp "
               f"{'below' if same >= 0 else 'above'}). Against the network trained in software ({100 * sw_ref:.1f} %) "
               f"the chip stays {abs(gap):.1f} pp {'below' if gap >= 0 else 'above'} (chip-to-chip std "
               f"{100 * acc[best]['chip'][1]:.1f} pp); deploying the offline weights loses {off_gap:.1f} pp, of which "
               f"in-the-loop training recovers {100 * recovered:.0f} %.")
    fo, fa = summary["fidelity"]["offline"], summary["fidelity"][best]
    hidden = list(fo["layers"])[0]
    h0, h1 = fo["layers"][hidden], fa["layers"][hidden]
    closer = h1["distortion"][0] < h0["distortion"][0]
    note = (f"Fidelity: before in-the-loop training (the offline weights) the chip's hidden layer {hidden} has spike-count "
            f"correlation {h0['correlation'][0]:.2f}, rate error {h0['rate_error'][0]:.2f} and distortion "
            f"{h0['distortion'][0]:.2f} against software; after {LABELS[best]} {h1['correlation'][0]:.2f}, "
            f"{h1['rate_error'][0]:.2f} and {h1['distortion'][0]:.2f}; output agreement {fo['agreement'][0]:.2f} → "
            f"{fa['agreement'][0]:.2f}. "
            + ("In-the-loop training also moved the weights to where the chip follows the software model more "
               "closely" + (f" (its hidden layer still fires at {h1['chip_rate'][0] / max(1e-12, h1['sw_rate'][0]):.1f}x "
                            f"the software rate)" if h1["rate_error"][0] > 0.5 else "") + "." if closer else
               "In-the-loop training made the chip accurate without making it follow the software model more closely."))
    print(verdict)
    print(note)
    write_json(args.out / f"cramer_analog{suffix}.json",
               {"config": cfg, "chips": chips, "quick": args.quick, "summary": summary, "runs": runs,
                "wall_seconds": wall, "verdict": verdict, "note": note})
    fig = args.out / f"cramer_analog{suffix}.png"
    figure(summary, fig)
    print(f"wrote {fig} ({wall:.0f}s)")
    if args.docs:
        cmd = "python benchmarks/cramer_analog.py --docs" + (" --quick" if args.quick else "") + \
              (f" --chips {args.chips}" if args.chips is not None else "") + \
              (f" --strength {args.strength:g}" if args.strength != 0.5 else "")
        text = f"""Command: `{cmd}` ({'quick mode, ' if args.quick else ''}{chips} chips, {wall / 60:.1f} min wall on this machine).
Data: scikit-learn's digits (8x8) upsampled to 16x16, latency-coded (one spike per pixel, earlier for brighter
pixels, pixels ≤ 0.2 silent; {runs['input_spikes_per_sample']:.0f} input spikes per sample), {runs['n_train']} training /
{runs['n_test']} test samples, T = {cfg['T']} bins (code in the first {cfg['T_code']}).
This is a **re-creation** on small digits, not the paper's 16x16 MNIST on BrainScaleS-2: the numbers are not comparable.
Network: 256 → {cfg['hidden']} LIF (β = {cfg['beta']}) → 10 leaky-integrator readout, no biases, readout = max over time
of the readout membrane. Chip: `analog-mismatch`, strength {cfg['strength']:g}, **6-bit weights** (`dac_bits=6`), chip seeds
0..{chips - 1}; every method starts from the same initial weights and trains {cfg['epochs']} epochs (Adam, lr {cfg['lr']:g},
batch {cfg['batch']}). Offline is trained once and deployed on every chip (its software accuracy has no chip spread).
Mean ± std over chips; the last column compares each chip accuracy with the offline network's software accuracy.

{t1}

Fidelity report (`cil.fidelity`, test set) before in-the-loop training (the offline weights on each chip) and after it
(the weights trained on that chip); distortion = relative spike-count error (readout: relative error of the max membrane).

{t2}

{verdict} {note}

![software vs chip accuracy and per-layer distortion](img/cramer_analog.png)
"""
        publish_figures({"cramer_analog.png": fig})
        write_docs_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
