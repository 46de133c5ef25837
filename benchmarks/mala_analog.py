"""Gradient-informed MH (``mala``) beside offline, CIL-SPL, MH and MH from offline on the simulated
analog chip (``analog-mismatch``), the same chip-call budget for every in-the-loop method, and the
data-efficiency table (issue 21).

    python benchmarks/mala_analog.py                 # the grid (about 40 min on one core; --workers 2 halves it)
    python benchmarks/mala_analog.py --quick         # 2 chips, strengths 0 and 2, no fractions
    python benchmarks/mala_analog.py --docs          # also rewrites the docs/results.md section
    python benchmarks/mala_analog.py --from-json benchmarks/results/mala_analog.json --docs
    python benchmarks/mala_analog.py --algorithms mala --strengths 0 0.5 --no-fractions \
        --mala guided_batch=64 --tag _gb64    # a variant of mala alone (its own JSON; not for --docs)

Task and network as ``benchmarks/mh_vs_backprop.py`` (breast cancer, 62-16-2 LIF, T = 16, rate
readout; chip c = mismatch seed c, which also seeds the initial weights, the trainers and the
training-subset draw). Every method starts from the same random init (``mh-ft`` from the offline
weights). Budget: ``--steps`` S; CIL-SPL S steps of batch 64 (S chip calls), offline S steps (no
chip call), MH S steps (S + 2 calibration + 1 deployment calls), MALA S − 1 steps (2 calibration,
1 for the starting gradients, S − 1 steps, 1 deployment: the same S + 3 calls), 8 chains, burn-in
S / 2. ``mh`` and ``mh-ft`` run MH's defaults (``logit_scale="auto"``); ``mala`` the recommended options
(``cil_core.training.langevin.recommended_options``: half the chains start from the network trained in software first, no chip call,
and keep MH's block moves (``warm_moves="auto"`` on these whole-data steps); the restart at the end of burn-in keeps them unless another chain's chip
accuracy is better by more than 2 standard errors) over its defaults; ``--mala-base defaults`` runs
mala's defaults instead.

Data efficiency (strengths 1 and 2, fractions 1, 5, 10 %): every method trains on the subset with
the same budget; MH, MH from offline and MALA temper the likelihood to the full training set's
weight, τ = n / 398 (each of the n samples counts 398 / n times: a cold posterior, set from the
data size only, not from the test set). The row "smallest fraction reaching offline @ 100 %" names,
per method, the smallest fraction whose mean chip accuracy reaches offline's with all the data.

Outputs: ``mala_analog{_quick,}.json`` and ``.jsonl`` under ``--out`` (default
``benchmarks/results/``), printed tables, and with ``--docs`` the ``mala-analog`` section of
``docs/results.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from cil_core.app.sweep import Point, fingerprint, point_key, run_sweep, subset_fraction
from harness import add_output_args, add_sweep_args, markdown_table, read_json, runner_options, write_docs_section, write_json

SECTION = "mala-analog"
STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)
FRACTION_STRENGTHS = (1.0, 2.0)
FRACTIONS = (0.01, 0.05, 0.10)
ALGOS = ("offline", "cil-spl", "mh", "mh-ft", "mala")
#: diagnostics, run only when asked for (--algorithms): mala started from the offline weights
EXTRA_ALGOS = ("mala-ft",)
N_FULL = 398
LR = 1e-2


def run_case(case: dict[str, Any]) -> list[dict[str, Any]]:
    """One (fraction, strength, chip) case: every method, measured on that chip."""
    import torch

    torch.set_num_threads(1)
    import cil_core as cil
    from cil_core.data.breast_cancer import load_breast_cancer_spikes
    from cil_core.network.reference import feedforward

    frac, c, s, steps, chains = case["fraction"], case["chip"], case["strength"], case["steps"], case["chains"]
    algos = case.get("algorithms", ALGOS)
    data = load_breast_cancer_spikes()
    train = subset_fraction(data.train, frac, c)
    sizes = [data.n_inputs, 16, 2]
    tau = {} if frac == 1.0 else {"temperature": len(train) / N_FULL}
    rows = []

    def chip():
        return cil.make_backend("analog-mismatch", strength=s, seed=c)

    def record(algo: str, tr: Any, t: float, extra: dict | None = None) -> None:
        ev = tr.evaluate(data.test)
        rows.append({"algorithm": algo, "strength": s, "fraction": frac, "chip": c, "n_train": len(train),
                     "test_accuracy": ev["accuracy"], "train_seconds": t,
                     "hardware_calls": tr.session.stats.calls_by_purpose.get("train", 0), **(extra or {})})

    if "offline" in algos or "mh-ft" in algos or "mala-ft" in algos:
        net = feedforward(sizes, seed=c)
        t0 = time.perf_counter()
        cil.Trainer(net, "ideal", "offline", seed=c, lr=LR).fit(train, steps=steps, batch_size=64)
        offline_weights = net.detached_parameters()
        if "offline" in algos:
            record("offline", cil.Trainer(net, chip(), "offline", seed=c), time.perf_counter() - t0)
            rows[-1]["hardware_calls"] = 0

    if "cil-spl" in algos:
        net = feedforward(sizes, seed=c)
        t0 = time.perf_counter()
        tr = cil.Trainer(net, chip(), "cil-spl", seed=c, lr=LR)
        tr.fit(train, steps=steps, batch_size=64)
        record("cil-spl", tr, time.perf_counter() - t0)
    for algo in (a for a in ("mh", "mh-ft", "mala", "mala-ft") if a in algos):
        net = feedforward(sizes, seed=c)
        opts: dict[str, Any] = {"chains": chains, "burn_in": steps // 2, **tau}
        sampler = "mala" if algo.startswith("mala") else "mh"
        if sampler == "mala":
            opts.update(case.get("mala", {}))
        if algo.endswith("-ft"):
            net.load_parameters(offline_weights)
            opts["init"] = "network"
        t0 = time.perf_counter()
        tr = cil.Trainer(net, chip(), sampler, seed=c, **opts)
        tr.fit(train, steps=steps - 1 if sampler == "mala" else steps)
        a = tr.algorithm
        extra = {"acceptance": a.acceptance_rate}
        if sampler == "mala":
            extra.update(chains=a.chains, guided_batch=a.guided_batch, langevin_share=a.share.tolist(), langevin_step=a.h.tolist(), beta=a.beta.tolist(),
                         langevin_proposals=a.langevin_proposals, langevin_accepts=a.langevin_accepts,
                         fallback_proposals=a.fallback_proposals, n_holdout=a.n_holdout,
                         restart_chain=a.restart_chain, warm_start=a.warm_start,
                         held_score=a.held_score.tolist())
        record(algo, tr, time.perf_counter() - t0, extra)
    return rows


# ----------------------------------------------------------------------------- tables
def _vals(rows: list[dict], algo: str, **where: Any) -> dict[int, float]:
    return {r["chip"]: r["test_accuracy"] for r in rows if r["algorithm"] == algo
            and all(r.get(k) == v for k, v in where.items())}


def _mean(rows: list[dict], algo: str, **where: Any) -> float | None:
    v = list(_vals(rows, algo, **where).values())
    return statistics.fmean(v) if v else None


def _cell(rows: list[dict], algo: str, **where: Any) -> str:
    v = list(_vals(rows, algo, **where).values())
    if not v:
        return "—"
    return f"{100 * statistics.fmean(v):.1f} ± {100 * (statistics.stdev(v) if len(v) > 1 else 0.0):.1f}"


def tables(result: dict) -> dict[str, str]:
    rows = result["rows"]
    out = {}
    algos = tuple(result.get("algorithms", ALGOS))
    full = set(algos) == set(ALGOS)  # the "done" columns compare mala with the others
    hdr = ["strength", *algos, *(("mala − max(cil-spl, mh-ft)", "mala − offline", "done") if full else ())]
    body = []
    for s in result["strengths"]:
        m = {a: _mean(rows, a, strength=s, fraction=1.0) for a in algos}
        if any(v is None for v in m.values()):
            continue
        row = [f"{s:g}", *(_cell(rows, a, strength=s, fraction=1.0) for a in algos)]
        if full:
            d1 = m["mala"] - max(m["cil-spl"], m["mh-ft"])
            d2 = m["mala"] - m["offline"]
            row += [f"{100 * d1:+.1f}", f"{100 * d2:+.1f}", "yes" if d1 >= -0.01 and d2 >= 0 else "no"]
        body.append(row)
    out["strength"] = markdown_table(hdr, body)
    calls = [[a, f"{statistics.fmean(r['hardware_calls'] for r in rows if r['algorithm'] == a and r['fraction'] == 1.0):.0f}"]
             for a in algos if any(r["algorithm"] == a for r in rows)]
    out["calls"] = markdown_table(["method", "chip calls per fit (training, mean)"], calls)
    for s in result.get("fraction_strengths", ()):
        fr = sorted(set(result["fractions"]) | {1.0})
        body = [[f"{100 * f:g} %", *(_cell(rows, a, strength=s, fraction=f) for a in algos)] for f in fr]
        ref = _mean(rows, "offline", strength=s, fraction=1.0)
        smallest = []
        for a in algos:
            hit = [f for f in fr if (m := _mean(rows, a, strength=s, fraction=f)) is not None and ref is not None
                   and m >= ref]
            smallest.append(f"{100 * hit[0]:g} %" if hit else "none")
        body.append(["smallest fraction reaching offline @ 100 %" + (f" ({100 * ref:.1f})" if ref else ""), *smallest])
        out[f"fraction_{s:g}"] = markdown_table(["train fraction", *algos], body)
    return out


def report(result: dict, out_dir: Path, docs: bool) -> int:
    t = tables(result)
    print(f"\nchip test accuracy (%), 62-16-2, full training set, mean ± std over {result['chips']} chips")
    print(t["strength"])
    print("\nchip calls")
    print(t["calls"])
    for s in result.get("fraction_strengths", ()):
        if f"fraction_{s:g}" in t:
            print(f"\ndata efficiency at strength {s:g} (MH, MH from offline, MALA: likelihood tempered, τ = n / {N_FULL})")
            print(t[f"fraction_{s:g}"])
    if docs:
        write_docs_section(SECTION, docs_section(result, t))
    return 0


def _opts_text(opts: dict[str, Any]) -> str:
    return "`" + " ".join(f"{k}={v}" for k, v in opts.items()) + "`" if opts else "(none: its defaults)"


def docs_section(result: dict, t: dict[str, str]) -> str:
    la = result.get("load_average")
    text = f"""Generated by `{result['command']}` on {result['machine']}, in {result['wall_seconds']:.0f} s
(load average {la[0]:.1f} before, {la[1]:.1f} after: the machine is shared). Raw numbers:
`benchmarks/results/mala_analog{result.get('tag', '')}.json` (git-ignored).

Setup as the MH re-creation above (breast cancer, 62-16-2 LIF, T = 16, `analog-mismatch`, chips = seeds
0..{result['chips'] - 1}), every method from the same random init (`mh-ft` from the offline weights), **the same
chip-call budget**: {result['steps']} steps for every method (fewer than the section above, for all methods
alike, to fit the compute budget), CIL-SPL and offline Adam lr {LR} at batch 64, MH and `mala`
{result['chains']} chains, burn-in {result['steps'] // 2}, on the whole training set per step; `mala` runs one step
less than MH because its first step costs one extra request (the starting states' gradients), so
both make the same number of chip calls. Defaults of `mh` (`logit_scale="auto"`); `mala` with the
recommended options {_opts_text(result.get('mala_options') or {})} over its defaults (equations in
`cil_core/training/langevin.py`): its software warm start trains the same random init in software
first (no chip call), so `mala` too starts from the random init. Chip accuracy on the test split, %, mean ± std over chips.
"done": `mala` ≥ max(CIL-SPL, MH from offline) − 1 point and ≥ offline (issue 21).

{t['strength']}

{t['calls']}
"""
    for s in result.get("fraction_strengths", ()):
        if f"fraction_{s:g}" in t:
            text += f"""
**Data efficiency at strength {s:g}** (MH, MH from offline and `mala` temper the likelihood, τ = n / {N_FULL}:
each of the n samples counts {N_FULL} / n times; offline and CIL-SPL train on the subset with the same steps):

{t[f'fraction_{s:g}']}
"""
    return text


def _mala_options(pairs: list[str], recommended: bool, chains: int) -> dict[str, Any]:
    """``OPTION=VALUE`` pairs as mala's options (read as ``cil train``'s ``KEY=VALUE`` flags are) over the
    recommended ones (``recommended``; for the chains the run will have) or none, checked at the door
    (cil's OptionError names a bad one)."""
    import cil_core as cil
    from cil_core.app.cli import parse_kv
    from cil_core.training.langevin import recommended_options

    given = parse_kv(pairs, "--mala")
    n = given.get("chains", chains)
    opts = {**(recommended_options(n) if recommended and isinstance(n, int) else {}), **given}
    cil.make_algorithm("mala", **{"chains": chains, **opts})  # raises OptionError on an unknown option or a bad value
    return opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 chips, strengths 0 and 2, no fractions")
    ap.add_argument("--chips", type=int, default=None)
    ap.add_argument("--first-chip", type=int, default=0, help="chips (mismatch seeds) first-chip, first-chip + 1, ...")
    ap.add_argument("--steps", type=int, default=200, help="the budget: steps per method (default 200)")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--strengths", type=float, nargs="+", default=None)
    ap.add_argument("--no-fractions", action="store_true")
    ap.add_argument("--algorithms", nargs="+", choices=ALGOS + EXTRA_ALGOS, default=list(ALGOS),
                    help="the methods to run (default: all but the diagnostic mala-ft, mala started from the "
                    "offline weights; the 'done' columns need all five)")
    ap.add_argument("--mala", nargs="+", default=[], metavar="OPTION=VALUE",
                    help="options of mala over --mala-base, e.g. guided_batch=64 chains=16 (values read as JSON, "
                    "else as text); checked by cil before anything runs")
    ap.add_argument("--mala-base", choices=("recommended", "defaults"), default="recommended",
                    help="what --mala adds to: the recommended options (default: warm_start=chains/2, "
                    "warm_moves=auto, warm_prefer=2) or mala's own defaults")
    ap.add_argument("--tag", default=None, help="suffix of the output files (default: '_quick' with --quick, else none)")
    ap.add_argument("--from-json", default=None)
    add_sweep_args(ap, workers=1)
    add_output_args(ap, docs_section=SECTION)
    args = ap.parse_args(argv)
    if args.from_json:
        return report(read_json(args.from_json), args.out, args.docs)
    mala_opts = _mala_options(args.mala, args.mala_base == "recommended", args.chains)
    algos = tuple(a for a in ALGOS + EXTRA_ALGOS if a in args.algorithms)
    if args.docs and (args.mala or args.mala_base != "recommended" or set(algos) != set(ALGOS)):
        ap.error("--docs writes the recommended options' section of docs/results.md: run it without --mala and "
                 "--mala-base and with every method (give a variant its own --tag instead)")
    chips = args.chips or (2 if args.quick else 5)
    strengths = tuple(args.strengths or ((0.0, 2.0) if args.quick else STRENGTHS))
    fr_strengths = () if (args.quick or args.no_fractions) else tuple(s for s in FRACTION_STRENGTHS if s in strengths)
    tag = args.tag if args.tag is not None else ("_quick" if args.quick else "")
    if args.first_chip < 0:
        ap.error(f"--first-chip must be >= 0, not {args.first_chip}")
    ids = range(args.first_chip, args.first_chip + chips)
    if args.docs and args.first_chip:
        ap.error("--docs writes the section of chips 0..: run it without --first-chip")
    cases = [{"fraction": 1.0, "strength": s, "chip": c} for s in strengths for c in ids]
    cases += [{"fraction": f, "strength": s, "chip": c} for s in fr_strengths for f in FRACTIONS for c in ids]
    for cs in cases:
        cs.update(steps=args.steps, chains=args.chains)
        if algos != ALGOS:
            cs["algorithms"] = list(algos)
        if mala_opts:
            cs["mala"] = mala_opts
    points = [Point(point_key(cs), cs, cs) for cs in cases]
    t0, load0 = time.perf_counter(), os.getloadavg()[0]

    def show(point: Point, rec: dict) -> None:
        r = rec["metrics"]
        print(f"fraction {r[0]['fraction']:g} strength {r[0]['strength']:g} chip {r[0]['chip']}: "
              + ", ".join(f"{x['algorithm']} {100 * x['test_accuracy']:.1f}" for x in r)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)

    sweep = run_sweep(points, run_case, results=args.out / f"mala_analog{tag}.jsonl", runner=args.runner,
                      runner_options=runner_options(args), on_result=show, fresh=not args.resume,
                      base=fingerprint({"steps": args.steps, "chains": args.chains, "lr": LR}))
    rows = [row for p in points for row in sweep.records[p.key]["metrics"]]
    cmd = "python benchmarks/mala_analog.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    result = {"command": cmd, "tag": tag, "chips": chips, "chip_ids": list(ids), "strengths": strengths,
              "fraction_strengths": fr_strengths,
              "algorithms": list(algos), "mala_options": mala_opts,
              "fractions": FRACTIONS, "steps": args.steps, "chains": args.chains,
              "wall_seconds": time.perf_counter() - t0, "load_average": [load0, os.getloadavg()[0]],
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.workers} worker process(es) x 1 thread",
              "rows": rows}
    write_json(args.out / f"mala_analog{tag}.json", result)
    return report(result, args.out, args.docs)


if __name__ == "__main__":
    raise SystemExit(main())
