"""Speed of cil-xylo's batched engine against the vendor's simulator (xylosim through rockpool's
``XyloSim``), measured side by side in one run on the same integer networks and inputs.

    python benchmarks/xylo_engine.py [--T 100] [--repeats 5] [--quick]

For each case (network sizes, S parameter sets, B samples, T steps), the same work is timed
interleaved (``harness.interleaved``, medians of ``--repeats``):

* ``xylosim``: one call at a time, as rockpool runs it: ``XyloSim.from_specification`` once per
  set, then ``reset_state()`` + ``evolve`` per sample;
* ``fast``: one call of the numba engine for all S x B (set, sample) pairs, on 1 thread (its
  serial kernel) and on all of numba's threads (its parallel kernel).

Both engines' outputs, hidden spikes and membranes are compared on every case before timing
(they must be equal). Networks are random integer Xylo networks (int8 weights, shifts 0..3,
random decays and thresholds, recurrent where stated), inputs Bernoulli spikes (p = 0.2), seeded.
Writes benchmarks/results/xylo_engine.json (``--out`` to change the folder) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform

import numba
import numpy as np

from harness import add_output_args, interleaved, print_table, write_json

#: (label, n_in, n_hidden, n_out, recurrent, S, B)
CASES = [
    ("16-8-2, 1 set x 1 sample", 16, 8, 2, False, 1, 1),
    ("16-32-2, 1 set x 64 samples", 16, 32, 2, False, 1, 64),
    ("16-32-2, 8 sets x 64 samples", 16, 32, 2, False, 8, 64),
    # xylosim copies every synapse list twice per step: ~1.6 s per 100-step sample here
    ("16-64-8 recurrent, 2 sets x 8 samples", 16, 64, 8, True, 2, 8),
]


def network(rng: np.random.Generator, nin: int, nh: int, no: int, rec: bool, S: int):
    from cil_xylo.engine import XyloNetwork

    def w(*shape):
        return rng.integers(-128, 128, size=(S, *shape)).astype(np.int8)

    return XyloNetwork(w_in=w(nin, nh), w_rec=w(nh, nh) if rec else None, w_out=w(nh, no),
                       shift_in=rng.integers(0, 4, S), shift_rec=rng.integers(0, 2, S), shift_out=rng.integers(0, 4, S),
                       dash_mem=rng.integers(1, 6, (S, nh)), dash_syn=rng.integers(1, 4, (S, nh)),
                       threshold=rng.integers(200, 2000, (S, nh)), bias=np.zeros((S, nh), np.int64),
                       dash_mem_out=rng.integers(1, 6, (S, no)), dash_syn_out=rng.integers(1, 4, (S, no)),
                       threshold_out=rng.integers(200, 2000, (S, no)), bias_out=np.zeros((S, no), np.int64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=100, help="time steps per sample (default 100)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="T=20, 1 repeat, the first two cases (smoke test)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    T, repeats, cases = (20, 1, CASES[:2]) if args.quick else (args.T, args.repeats, CASES)

    from cil_xylo.engine import run_fast, run_xylosim

    rng = np.random.default_rng(0)
    threads = numba.config.NUMBA_NUM_THREADS
    res = {"T": T, "repeats": repeats, "cpu_count": os.cpu_count(), "numba_threads": threads,
           "load_average": list(os.getloadavg()), "machine": platform.machine(), "cases": []}
    rows = []
    for label, nin, nh, no, rec, S, B in cases:
        net = network(rng, nin, nh, no, rec, S)
        x = (rng.random((T, B, nin)) < 0.2).astype(np.int64)
        a, b = run_fast(net, x, record=True), run_xylosim(net, x, record=True)
        equal = all(np.array_equal(a[k], b[k]) for k in a)
        assert equal, f"{label}: the engines differ"

        def fast(n: int) -> None:
            numba.set_num_threads(n)
            run_fast(net, x, parallel=n > 1)

        fns = {"xylosim": lambda: run_xylosim(net, x), "fast_1t": lambda: fast(1)}
        if threads > 1:
            fns[f"fast_{threads}t"] = lambda: fast(threads)
        med = interleaved(fns, repeats, warmup=1)
        numba.set_num_threads(threads)
        pairs = S * B
        case = {"label": label, "sizes": [nin, nh, no], "recurrent": rec, "S": S, "B": B, "equal": equal,
                "output_spikes": int(a["output"].sum()), "hidden_spikes": int(a["spikes"].sum()),
                "seconds": med, "ms_per_set_sample": {k: 1e3 * v / pairs for k, v in med.items()},
                "speedup_vs_xylosim": {k: med["xylosim"] / v for k, v in med.items() if k != "xylosim"}}
        res["cases"].append(case)
        best = min((k for k in med if k != "xylosim"), key=lambda k: med[k])
        rows.append([label, f"{1e3 * med['xylosim']:.2f}", f"{1e3 * med['fast_1t']:.3f}",
                     f"{1e3 * med[best]:.3f} ({best.split('_')[1]})",
                     f"{case['ms_per_set_sample']['xylosim']:.3f}", f"{case['ms_per_set_sample'][best]:.4f}",
                     f"{case['speedup_vs_xylosim'][best]:.0f}x"])
    print_table(["case (T=%d)" % T, "xylosim ms", "fast 1t ms", "fast best ms", "xylosim ms/(set x sample)",
                 "fast ms/(set x sample)", "speed-up"], rows,
                title=f"cil-xylo engine vs xylosim (equal outputs, spikes and Vmem on every case; load {res['load_average'][0]:.1f})")
    write_json(args.out / "xylo_engine.json", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
