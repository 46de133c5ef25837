"""Re-creation benchmark of Safa et al. 2024: Metropolis-Hastings vs backprop (and CIL-SPL) on
the simulated analog chip (``analog-mismatch``).

    python benchmarks/mh_vs_backprop.py --quick         # < 5 min on 2 cores
    python benchmarks/mh_vs_backprop.py                 # full grid (about 20 min on 2 cores)
    python benchmarks/mh_vs_backprop.py --docs          # full grid, rewrites the docs/results.md section
    python benchmarks/mh_vs_backprop.py --cost-only     # forward-cost ratio analog/ideal only
    python benchmarks/mh_vs_backprop.py --fractions 0.01 0.05   # some rows of the full grid only

Needs the ``cil-analog`` plugin, scikit-learn and matplotlib.

Task: Wisconsin Breast Cancer (scikit-learn's copy), the core's fixed encoding and split
(:func:`cil_core.data.breast_cancer.load_breast_cancer_spikes`, T = 16 steps, 70/30 stratified
split, seed 0); network 62-16-2 LIF (``cil_core.network.reference.feedforward``), rate readout.

Algorithms (each starts from the same random initialisation, seed = chip index):

* ``offline``: BPTT with surrogate gradients on the software model, then deployed on the chip;
* ``cil-spl``: chip forward, software backward (same optimizer and steps as offline);
* ``mh``: Metropolis-Hastings with the likelihood measured on the chip, from the random init;
* ``mh-ft``: the same MH started from the offline-trained weights (``init="network"``).

Curves: (1) chip test accuracy vs strength, (2) chip test accuracy vs training-set fraction at
strength 1.0; mean ± std over chips (mismatch seeds). Outputs: JSON + PNG under ``--out``
(default ``benchmarks/results/``; ``_quick`` in the names with ``--quick``, ``_subset`` with
``--strengths``/``--fractions``), a printed table,
and with ``--docs`` the section of ``docs/results.md`` between the ``mh-vs-backprop`` markers
plus the PNGs under ``docs/img/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from harness import (add_output_args, interleaved, markdown_table, publish_figures, read_json, write_docs_section,
                     write_json)

SECTION = "mh-vs-backprop"

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.25, 0.50, 1.0)
ALGOS = ("offline", "cil-spl", "mh", "mh-ft")
HIDDEN = 16
GRAD_STEPS = 210  # 30 epochs of the full training set at batch 64, for every fraction
LR = 1e-2


def _subset(train: Any, fraction: float, seed: int) -> Any:
    """Stratified subset of the training split (at least one sample per class)."""
    import torch

    if fraction >= 1.0:
        return train
    g = torch.Generator().manual_seed(1000 + seed)
    idx = []
    for c in torch.unique(train.y):
        members = (train.y == c).nonzero().flatten()
        k = max(1, int(round(fraction * len(members))))
        idx.append(members[torch.randperm(len(members), generator=g)[:k]])
    return train.subset(torch.cat(idx).sort().values)


def run_case(case: dict[str, Any]) -> list[dict[str, Any]]:
    """One (fraction, chip, strength) case: every algorithm, measured on that chip."""
    import torch

    torch.set_num_threads(1)
    import cil_core as cil
    from cil_core.data.breast_cancer import load_breast_cancer_spikes
    from cil_core.network.reference import feedforward

    frac, chip_seed, s = case["fraction"], case["chip"], case["strength"]
    mh_opts = dict(case["mh"])
    mh_steps = mh_opts.pop("steps")
    data = load_breast_cancer_spikes()
    train = _subset(data.train, frac, chip_seed)
    rows = []

    def chip():
        return cil.make_backend("analog-mismatch", strength=s, seed=chip_seed)

    def record(algo: str, tr: Any, t: float, extra: dict | None = None) -> None:
        ev = tr.evaluate(data.test)
        rows.append({"algorithm": algo, "strength": s, "fraction": frac, "chip": chip_seed, "n_train": len(train),
                     "test_accuracy": ev["accuracy"], "test_loss": ev["loss"], "train_seconds": t, **(extra or {})})

    # offline: software training, then deployment on the chip
    net = feedforward([data.n_inputs, HIDDEN, 2], seed=chip_seed)
    t0 = time.perf_counter()
    off = cil.Trainer(net, "ideal", "offline", seed=chip_seed, lr=LR)
    off.fit(train, steps=GRAD_STEPS, batch_size=64)
    t_off = time.perf_counter() - t0
    offline_weights = net.detached_parameters()
    sw = off.evaluate(data.test)["accuracy"]
    off_chip = cil.Trainer(net, chip(), "offline", seed=chip_seed)
    record("offline", off_chip, t_off, {"software_accuracy": sw})

    algos = case["algos"]
    if "cil-spl" in algos:
        net = feedforward([data.n_inputs, HIDDEN, 2], seed=chip_seed)
        t0 = time.perf_counter()
        tr = cil.Trainer(net, chip(), "cil-spl", seed=chip_seed, lr=LR)
        tr.fit(train, steps=GRAD_STEPS, batch_size=64)
        record("cil-spl", tr, time.perf_counter() - t0)
    for algo in ("mh", "mh-ft"):
        if algo not in algos:
            continue
        net = feedforward([data.n_inputs, HIDDEN, 2], seed=chip_seed)
        if algo == "mh-ft":
            net.load_parameters(offline_weights)
        opts = dict(mh_opts, init="network" if algo == "mh-ft" else "auto")
        t0 = time.perf_counter()
        tr = cil.Trainer(net, chip(), "mh", seed=chip_seed, **opts)
        tr.fit(train, steps=mh_steps)
        t = time.perf_counter() - t0
        a = tr.algorithm
        record(algo, tr, t, {"acceptance": a.acceptance_rate, "proposals_per_s": a.total_proposals / t,
                             "init_gain": a.init_gain, "hardware_calls": tr.session.stats.calls})
    return rows


def forward_cost(repeats: int = 41) -> dict[str, Any]:
    """Forward time of the analog chip vs the ideal backend on the benchmark network (median of
    interleaved calls, one thread)."""
    import torch

    torch.set_num_threads(1)
    import cil_core as cil
    from cil_core.data.breast_cancer import load_breast_cancer_spikes
    from cil_core.network.reference import feedforward

    data = load_breast_cancer_spikes()
    x = data.train.x
    net = feedforward([data.n_inputs, HIDDEN, 2], seed=0)
    out: dict[str, Any] = {"batch": int(x.shape[1]), "T": int(x.shape[0]), "network": f"62-{HIDDEN}-2", "threads": 1}
    for S in (None, 16):
        p = net.detached_parameters()
        if S:
            p = {k: v.unsqueeze(0).repeat(S, *[1] * v.dim()) for k, v in p.items()}
        backends = {"ideal": cil.make_backend("ideal"),
                    "analog": cil.make_backend("analog-mismatch", strength=1.0, seed=0)}
        deps = {k: b.transfer(net.spec, p, S) for k, b in backends.items()}
        fns = {k: (lambda b=b, d=deps[k]: b.forward(d, x)) for k, b in backends.items()}
        times = {k: 1e3 * v for k, v in interleaved(fns, repeats, warmup=1).items()}
        key = "sets_1" if S is None else f"sets_{S}"
        out[key] = {"ideal_ms": times["ideal"], "analog_ms": times["analog"], "ratio": times["analog"] / times["ideal"]}
    return out


def _stats(rows: list[dict], key: str, algo: str, **where: Any) -> tuple[float, float, int]:
    vals = [r["test_accuracy"] for r in rows if r["algorithm"] == algo and all(r[k] == v for k, v in where.items())]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def tables(rows: list[dict], strengths: tuple, fractions: tuple, algos: tuple) -> tuple[str, str]:
    def cell(key: str, a: str, **where: Any) -> str:
        m, sd, n = _stats(rows, key, a, **where)
        return f"{100 * m:.1f} ± {100 * sd:.1f}" if n else "—"

    t1 = markdown_table(["strength", *algos],
                        [[f"{s:g}", *(cell("strength", a, strength=s, fraction=1.0) for a in algos)] for s in strengths])
    t2 = markdown_table(["train fraction (n)", *algos],
                        [[f"{100 * f:g} % ({next((r['n_train'] for r in rows if r['fraction'] == f), 0)})",
                          *(cell("fraction", a, strength=1.0, fraction=f) for a in algos)] for f in fractions])
    return t1, t2


def claims(rows: list[dict], strengths: tuple, fractions: tuple) -> str:
    """The paper's two claims, checked on these numbers (markdown bullet list)."""
    lines = []
    for algo, label in (("mh", "MH (random init)"), ("mh-ft", "MH (init: offline weights)"), ("cil-spl", "CIL-SPL")):
        gaps = []
        for s in strengths:
            m, _, n = _stats(rows, "strength", algo, strength=s, fraction=1.0)
            o, _, k = _stats(rows, "strength", "offline", strength=s, fraction=1.0)
            if n and k:
                gaps.append((100 * (m - o), s))
        if gaps:
            g, s_at = max(gaps)
            lo, s_lo = min(gaps)
            lines.append(f"- {label} minus offline backprop, mean over chips: largest {g:+.1f} points (strength {s_at:g}), "
                         f"smallest {lo:+.1f} points (strength {s_lo:g}).")
    for algo, label in (("mh", "MH (random init)"), ("mh-ft", "MH (init: offline weights)")):
        diffs = []
        for r in rows:
            if r["algorithm"] == algo and r["fraction"] == 1.0 and r["strength"] == max(strengths):
                o = [q for q in rows if q["algorithm"] == "offline" and q["fraction"] == 1.0
                     and q["strength"] == r["strength"] and q["chip"] == r["chip"]]
                if o:
                    diffs.append((100 * (r["test_accuracy"] - o[0]["test_accuracy"]), r["chip"]))
        if diffs:
            lines.append(f"- {label} minus offline on the same chip at strength {max(strengths):g}, per chip: "
                         + ", ".join(f"chip {c}: {d:+.1f}" for d, c in sorted(diffs, key=lambda t: t[1])) + ".")
    target = 0.90  # a fixed "effective accuracy" on the chip
    for algo, label in (("offline", "offline backprop"), ("cil-spl", "CIL-SPL"), ("mh", "MH (random init)"),
                        ("mh-ft", "MH (init: offline weights)")):
        reached = [f for f in sorted(fractions)
                   if _stats(rows, "fraction", algo, strength=1.0, fraction=f)[2]
                   and _stats(rows, "fraction", algo, strength=1.0, fraction=f)[0] >= target]
        where = f"first at {100 * reached[0]:g} % of the training set" if reached else "at no fraction tested"
        lines.append(f"- {label} reaches a mean chip accuracy of {100 * target:.0f} % at strength 1.0 {where}.")
    return "\n".join(lines)


def plots(rows: list[dict], strengths: tuple, fractions: tuple, algos: tuple, out_dir: Path,
          suffix: str = "") -> dict[str, Path]:
    """The two figures, written under ``out_dir``: ``{name in docs/img: path}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"offline": "offline backprop (deployed)", "cil-spl": "CIL-SPL", "mh": "MH (random init)",
              "mh-ft": "MH (init: offline weights)"}
    paths = {}
    for name, xs, key, fixed, xlabel in (
        ("mh_vs_backprop_strength.png", strengths, "strength", {"fraction": 1.0}, "non-ideality strength"),
        ("mh_vs_backprop_fraction.png", fractions, "fraction", {"strength": 1.0}, "training-set fraction"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for a in algos:
            ms, sds, xv = [], [], []
            for x in xs:
                m, sd, n = _stats(rows, key, a, **{**fixed, key: x})
                if n:
                    ms.append(100 * m), sds.append(100 * sd), xv.append(100 * x if key == "fraction" else x)
            ax.errorbar(xv, ms, yerr=sds, marker="o", capsize=3, label=labels.get(a, a))
        if key == "fraction":
            ax.set_xscale("log")
            ax.set_xlabel(xlabel + " (%)")
            ax.set_title("chip test accuracy at strength 1.0")
        else:
            ax.set_xlabel(xlabel)
            ax.set_title("chip test accuracy, full training set")
        ax.set_ylabel("test accuracy on the chip (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / name.replace(".png", f"{suffix}.png")
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths[name] = p
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 chips, strengths {0, 1}, fractions {5, 100} %%, short MH")
    ap.add_argument("--chips", type=int, default=None, help="number of chips (mismatch seeds); default 5 (quick: 2)")
    ap.add_argument("--mh-steps", type=int, default=None, help="MH steps (default 400, quick: 200)")
    ap.add_argument("--mh-chains", type=int, default=8)
    ap.add_argument("--strengths", type=float, nargs="+", default=None,
                    help="run these strengths only (at the full training set; default: the grid's)")
    ap.add_argument("--fractions", type=float, nargs="+", default=None,
                    help="run these training-set fractions only (at strength 1; 1 also runs every strength)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    add_output_args(ap, docs_section=SECTION)
    ap.add_argument("--cost-only", action="store_true", help="only measure the forward-cost ratio analog/ideal")
    ap.add_argument("--from-json", default=None, help="re-render tables, plots (and with --docs the docs section) "
                    "from a saved results JSON instead of running")
    args = ap.parse_args(argv)

    quick = args.quick
    chips = args.chips or (2 if quick else 5)
    strengths = tuple(args.strengths or ((0.0, 1.0) if quick else STRENGTHS))
    fractions = tuple(args.fractions or ((0.05, 1.0) if quick else FRACTIONS))
    tag = "_quick" if quick else ("_subset" if args.strengths or args.fractions else "")
    mh = {"steps": args.mh_steps or (200 if quick else 400), "chains": args.mh_chains,
          "burn_in": (100 if quick else 200)}
    out_dir = args.out
    if args.from_json:
        result = read_json(args.from_json)
        result["rendered_from"] = f"python benchmarks/mh_vs_backprop.py --from-json {args.from_json}" + (
            " --docs" if args.docs else "")
        return report(result, out_dir, args.docs)
    t_start = time.perf_counter()

    cost = forward_cost()
    print(f"forward cost (62-{HIDDEN}-2, T={cost['T']}, batch {cost['batch']}, 1 thread): "
          f"1 set: ideal {cost['sets_1']['ideal_ms']:.2f} ms, analog {cost['sets_1']['analog_ms']:.2f} ms, "
          f"ratio {cost['sets_1']['ratio']:.2f}; 16 sets: ideal {cost['sets_16']['ideal_ms']:.2f} ms, "
          f"analog {cost['sets_16']['analog_ms']:.2f} ms, ratio {cost['sets_16']['ratio']:.2f}", flush=True)
    if args.cost_only:
        write_json(out_dir / "forward_cost.json", cost)
        return 0

    cases = []
    for f in fractions:
        for s in (strengths if f == 1.0 else (1.0,)):
            for c in range(chips):
                cases.append({"fraction": f, "strength": s, "chip": c, "algos": ALGOS, "mh": mh})
    cases.sort(key=lambda c: -c["fraction"])  # heavy cases first
    rows: list[dict] = []
    done = 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for res in pool.map(run_case, cases):
            rows.extend(res)
            done += 1
            r = {x["algorithm"]: x["test_accuracy"] for x in res}
            print(f"[{done}/{len(cases)}] fraction {res[0]['fraction']:g} strength {res[0]['strength']:g} "
                  f"chip {res[0]['chip']}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in r.items()), flush=True)
    wall = time.perf_counter() - t_start

    mh_rows = [r for r in rows if r["algorithm"] in ("mh", "mh-ft") and r["fraction"] == 1.0]
    pps = sum(r["proposals_per_s"] for r in mh_rows) / max(1, len(mh_rows))
    cmd = "python benchmarks/mh_vs_backprop.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    result = {"command": cmd, "quick": quick, "tag": tag, "chips": chips, "strengths": strengths, "fractions": fractions,
              "algorithms": ALGOS, "network": f"62-{HIDDEN}-2 LIF, T=16, rate readout", "grad_steps": GRAD_STEPS,
              "lr": LR, "mh": mh, "forward_cost": cost, "mh_proposals_per_s_full_data": pps, "wall_seconds": wall,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.workers} worker processes x 1 thread",
              "rows": rows}
    write_json(out_dir / f"mh_vs_backprop{tag}.json", result)
    return report(result, out_dir, args.docs)


def report(result: dict, out_dir: Path, docs: bool) -> int:
    rows, chips, mh = result["rows"], result["chips"], result["mh"]
    strengths, fractions = tuple(result["strengths"]), tuple(result["fractions"])
    algos = tuple(result["algorithms"])
    t1, t2 = tables(rows, strengths, fractions, algos)
    png = plots(rows, strengths, fractions, algos, out_dir, result.get("tag", "_quick" if result["quick"] else ""))
    cl = claims(rows, strengths, fractions)
    print("\nchip test accuracy (%) vs strength, full training set, mean ± std over", chips, "chips")
    print(t1)
    print("\nchip test accuracy (%) vs training-set fraction at strength 1.0")
    print(t2)
    print("\n" + cl)
    print(f"\nMH proposals scored per second (full data, {mh['chains']} chains): "
          f"{result['mh_proposals_per_s_full_data']:.0f}; wall time {result['wall_seconds']:.0f} s")
    print(f"wrote {', '.join(map(str, png.values()))}")
    if docs:
        publish_figures(png)
        write_docs_section(SECTION, docs_section(result, t1, t2, cl))
    return 0


def docs_section(result: dict, t1: str, t2: str, cl: str) -> str:
    c = result["forward_cost"]
    label = (" (**quick run**: fewer chips, strengths and fractions, shorter MH)" if result["quick"] else
             " (**part of the grid only**)" if result.get("tag") == "_subset" else "")
    again = f" Rendered again from its saved results by `{result['rendered_from']}`." if result.get("rendered_from") else ""
    return f"""Generated by `{result['command']}`{label} on {result['machine']}, in {result['wall_seconds']:.0f} s
(other jobs shared the 2 cores during the run, so the times are pessimistic).{again}
Raw numbers: `benchmarks/results/mh_vs_backprop{result.get('tag', '')}.json` (git-ignored).

Setup: Wisconsin Breast Cancer (scikit-learn), the core's fixed encoding and split (398 train /
171 test, T = 16), network {result['network']}. Chip: `analog-mismatch` backend (plugin
`cil-analog`), {result['chips']} chips = mismatch seeds 0..{result['chips'] - 1}; the same seed also seeds the
initial weights and the training-subset draw. Gradient methods: Adam, lr {result['lr']}, {result['grad_steps']} steps of
batch 64. MH: {result['mh']['chains']} chains x {result['mh']['steps']} steps (burn-in {result['mh']['burn_in']}), likelihood on the
chip, posterior mean deployed; `mh` starts from the random init (`init="auto"`), `mh-ft` from
the offline-trained weights. All accuracies are measured on the chip (test split), in %, mean ± std over chips.

**Accuracy vs non-ideality strength** (full training set):

{t1}

![accuracy vs strength](img/mh_vs_backprop_strength.png)

**Accuracy vs training-set fraction** (strength 1.0):

{t2}

![accuracy vs fraction](img/mh_vs_backprop_fraction.png)

Forward cost, analog/ideal (same network, batch {c['batch']}, T = {c['T']}, 1 thread): 1 parameter set
{c['sets_1']['analog_ms']:.2f} / {c['sets_1']['ideal_ms']:.2f} ms = **{c['sets_1']['ratio']:.2f}x**; 16 sets (one MH step)
{c['sets_16']['analog_ms']:.2f} / {c['sets_16']['ideal_ms']:.2f} ms = **{c['sets_16']['ratio']:.2f}x**. MH scored
{result['mh_proposals_per_s_full_data']:.0f} proposals/s on the full training set (current states re-scored too on the noisy chip).

**The paper's claims, checked on these numbers** (computed by the script):

{cl}
"""


if __name__ == "__main__":
    raise SystemExit(main())
