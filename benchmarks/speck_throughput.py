"""Throughput of the Speck-style event loop: synaptic updates per second of the compiled (numba)
loop on 1 thread and on all threads, beside the straightforward loop it replaced
(``run_events_reference``), that loop run as plain Python (``run_events_reference.py_func``:
numba's uncompiled original) and sinabs' own time-stepped simulation of the same network on the
binned events; and the loop's share of its **integrate-only ceiling** on one thread. All measured
in one run, on one machine; the compiled loops and sinabs are timed interleaved
(``harness.interleaved``, medians of ``--repeats``).

The ceiling (its definition, unchanged since it was introduced): the events every layer received in
the loop's run, in the order the loop processed them (depth-first: each input event through all
layers before the next), replayed through only the synaptic additions (``kernel.integrate_only``:
the same fan-out table, the same state and weight arrays in the same layout and dtype, the same
per-event target enumeration and saturating add of every synapse, so the same memory traffic for the
additions; no threshold compare, reset, lower bound, spike bits, sort, stack or output work), which
makes exactly the loop's synaptic updates (checked). Its additions are the compiler's own
vectorization of the plain loop (``v[k] = min(max(v[k] + w[k], lo), hi)`` over each contiguous
run). The same replay with the additions written as the loop writes them (8-lane vector blocks
and a scalar tail, ``kernel.integrate_blocks``) runs beside it, so that each run shows whether
the ceiling is slower than the loop's own way of adding (their ratio is printed; which one is faster
depends on the machine and on where the arrays lie), and the loop is also judged against the faster
of the two in each round (the stricter ceiling). Also the same
replay in the previous loop's layout (``kernel.integrate_only_reference``: int32 state, per-event
index arithmetic), the ceiling as it was measured before the rewrite. The loops and the ceilings run
interleaved on one thread, ``--ceiling-repeats`` rounds, each timed in CPU seconds
(``time.process_time``: the machine is shared); the percentages are per round (each loop run
against the ceiling run beside it), median and range, and best round against best round. The new
loop's outputs are checked equal to the previous loop's.

    python benchmarks/speck_throughput.py [--samples 64] [--python-events 400] [--docs]

Network: the CIL-SPL benchmark's (input sum-pool 2x2, 5 conv + 1 fully connected, IAF), random
weights (Kaiming uniform x 2.5, seeded); data: the synthetic N-MNIST-like digits (T = 8 bins).
Writes benchmarks/results/speck_throughput.json (``--out`` to change the folder); ``--docs``
also rewrites the speck-throughput section of docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np
import torch

from harness import (Stopwatch, add_output_args, interleaved, markdown_table, print_table, write_docs_section,
                     write_json)


def delivered_events(dep, arrays: tuple, T: int, cap: int) -> tuple[np.ndarray, ...]:
    """The events each chip layer received in a one-set run, in the order the loop processed
    them, as the arrays ``(layer, c, y, x, offsets)`` that ``kernel.integrate_only`` replays
    (written by ``run_events_reference``'s ``trace``; ``cap``: the most events of one sample)."""
    from cil_speck import kernel as K

    ch = dep.chip
    B = len(arrays[4]) - 1
    lp = ch["lp"].copy()
    lp[:, K.ROFF] = -1
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    tr = tuple(np.zeros((B, cap), np.int32) for _ in range(4)) + (np.zeros(B, np.int64),)
    K.run_events_reference(*arrays, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"], 1, tr)
    n = tr[4]
    assert int(n.max()) <= cap, "trace capacity exceeded"
    off = np.zeros(B + 1, np.int64)
    np.cumsum(n, out=off[1:])
    return tuple(np.concatenate([a[b, :n[b]] for b in range(B)]) for a in tr[:4]) + (off,)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--python-events", type=int, default=400, help="input events run through the plain-Python loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ceiling-repeats", type=int, default=7,
                    help="interleaved rounds of loop / previous loop / ceilings on one thread")
    add_output_args(ap, docs_section="speck-throughput")
    args = ap.parse_args(argv)

    import cil_core as cil
    from cil_sinabs import run_sinabs
    from cil_spl_speck import make_model
    from cil_speck import kernel as K
    from cil_speck.data import synthetic_nmnist
    from cil_speck.events import eventbatch_to_arrays

    t_start = time.perf_counter()
    T = 8
    torch.manual_seed(0)
    model = make_model("snn", T)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight"):
                p.mul_(2.5)
    net = cil.wrap(model, input_shape=(2, 34, 34))
    data = synthetic_nmnist(False, T, args.samples)
    be = cil.make_backend("speck")
    dep = be.transfer(net.spec, net.detached_parameters())
    n_threads = numba.config.NUMBA_NUM_THREADS
    res: dict = {"samples": args.samples, "repeats": args.repeats, "input_events": None, "cpu_count": os.cpu_count(),
                 "available_numba_threads": n_threads}

    x = data.x.dense
    seen: dict[int, list] = {}

    def numba_run(threads: int) -> None:
        be.threads = threads
        seen.setdefault(threads, []).append(be.forward(dep, data.x))

    def sinabs_run(threads: int) -> None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                run_sinabs(model, x)
        finally:
            torch.set_num_threads(old)

    be.forward(dep, data.x)  # compile / load the cache
    numba_threads, sinabs_threads = sorted({1, n_threads}), sorted({1, torch.get_num_threads()})
    fns = {**{f"numba_{t}t": (lambda t=t: numba_run(t)) for t in numba_threads},
           **{f"sinabs_{t}t": (lambda t=t: sinabs_run(t)) for t in sinabs_threads}}
    med = interleaved(fns, args.repeats, warmup=1)
    be.threads = None
    for threads in numba_threads:
        obs = seen[threads][-1]
        t = med[f"numba_{threads}t"]
        kernel = statistics.median(o.meta["seconds"] for o in seen[threads][-args.repeats:])
        syn = obs.meta["synaptic_updates"]
        res[f"numba_{threads}t"] = {"seconds": t, "kernel_seconds": kernel, "synaptic_updates": syn,
                                    "updates_per_s": syn / kernel, "updates_per_s_per_thread": syn / kernel / threads,
                                    "samples_per_s": args.samples / t}
        res["input_events"] = obs.meta["input_events"]

    # plain Python: the previous loop, uncompiled (the new one calls an LLVM intrinsic), on the first
    # events of one sample
    ch = dep.chip
    arrays = eventbatch_to_arrays(data.x.events[:1], T, data.x.duration_us, ch["map"].layers[0].pre_shape)
    k = min(args.python_events, int(arrays[4][1]))
    sub = tuple(a[:k] for a in arrays[:4]) + (np.array([0, k], np.int64),)
    lp = ch["lp"].copy()
    lp[:, K.ROFF] = -1
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    with Stopwatch() as sw:  # one call: the plain-Python loop is slow
        py_out, _, py_syn = K.run_events_reference.py_func(*sub, lp, ch["weights"], ch["n_state"], T, n_out, 0,
                                                           ch["stack_cap"])
    t_py = sw.seconds
    nb_out, _, nb_syn = K.run_events(*sub, lp, ch["loop_weights"], ch["fan"], ch["n_state"], T, n_out, 0,
                                     ch["stack_cap"], 1)
    assert np.array_equal(py_out, nb_out) and int(py_syn[0]) == int(nb_syn[0]), "python and numba loops disagree"
    res["python"] = {"seconds": t_py, "input_events": k, "synaptic_updates": int(py_syn[0]),
                     "updates_per_s": int(py_syn[0]) / t_py}

    # the loop against its integrate-only ceiling, one thread, interleaved rounds
    res["ceiling"] = ceiling_section(be, dep, data, T, args.ceiling_repeats)

    # sinabs' time-stepped simulation of the same network on the dense bins (timed above)
    for threads in sinabs_threads:
        t = med[f"sinabs_{threads}t"]
        res[f"sinabs_{threads}t"] = {"seconds": t, "samples_per_s": args.samples / t,
                                     "event_updates_per_s_equiv": res["numba_1t"]["synaptic_updates"] / t}

    nb1 = res["numba_1t"]["updates_per_s"]
    print(f"network: {len(ch['map'].layers)} chip layers, {args.samples} samples, {res['input_events']} input events, "
          f"{res['numba_1t']['synaptic_updates']:,} synaptic updates")
    py_rate = res["python"]["updates_per_s"]
    rows = [[f"numba event loop, {key.split('_')[1].replace('t', ' thread(s)')}", f"{res[key]['updates_per_s']:,.0f}",
             f"{res[key]['samples_per_s']:.1f}", f"{res[key]['updates_per_s'] / py_rate:.0f}x"]
            for key in res if key.startswith("numba_")]
    rows.append([f"plain-Python event loop ({k} events of 1 sample)", f"{py_rate:,.0f}", "-", "1x"])
    rows += [[f"sinabs time-stepped, {key.split('_')[1].replace('t', ' thread(s)')}", "(dense)",
              f"{res[key]['samples_per_s']:.1f}",
              f"numba 1 thread / sinabs: {res['numba_1t']['samples_per_s'] / res[key]['samples_per_s']:.2f}x samples/s"]
             for key in res if key.startswith("sinabs_")]
    print_table(["engine", "synaptic updates/s", "samples/s", "vs python"], rows)
    print(f"per-core target 50M updates/s: {'met' if nb1 >= 50e6 else 'NOT met'} ({nb1 / 1e6:.0f}M on 1 thread)")
    cs = res["ceiling"]
    crow = lambda k: [cs["rates"][k]["label"], f"{cs['rates'][k]['median'] / 1e6:,.0f}",  # noqa: E731
                      f"{cs['rates'][k]['min'] / 1e6:,.0f} - {cs['rates'][k]['max'] / 1e6:,.0f}"]
    print_table(["1 thread, interleaved rounds", "M updates/s (median)", "range"], [crow(k) for k in cs["rates"]],
                title=f"\nthe loop against its integrate-only ceiling ({cs['rounds']} rounds, "
                      f"{cs['synaptic_updates']:,} updates per run):")
    for key, txt in (("loop_vs_ceiling", "loop / ceiling (same layout)"),
                     ("loop_vs_best_ceiling", "loop / the faster of ceiling and ceiling in 8-lane blocks, per round"),
                     ("loop_vs_ceiling_blocks", "loop / ceiling with the loop's 8-lane blocks"),
                     ("ceiling_blocks_vs_ceiling", "ceiling in 8-lane blocks / ceiling"),
                     ("detect_vs_ceiling", "ceiling + threshold bits / ceiling"),
                     ("loop_vs_detect", "loop / (ceiling + threshold bits)"),
                     ("loop_vs_previous_ceiling", "loop / ceiling of the previous layout"),
                     ("previous_loop_vs_previous_ceiling", "previous loop / its ceiling"),
                     ("speedup_vs_previous_loop", "loop / previous loop")):
        p = cs[key]
        unit = "x" if key.startswith("speedup") else " %"
        mul = 1 if key.startswith("speedup") else 100
        print(f"{txt}: {p['median'] * mul:.2f}{unit} (range {p['min'] * mul:.2f} - {p['max'] * mul:.2f}; "
              f"best vs best {p['best'] * mul:.2f}{unit})")
    res["load_average"] = list(os.getloadavg())
    res["seconds_total"] = time.perf_counter() - t_start
    write_json(args.out / "speck_throughput.json", res)
    if args.docs:
        write_docs_section("speck-throughput", docs_text(res, argv if argv is not None else sys.argv[1:]))
    return 0


def ceiling_section(be, dep, data, T: int, rounds: int) -> dict:
    """Loop, previous loop, integrate-only ceiling and the previous layout's ceiling on one thread,
    ``rounds`` interleaved rounds; updates/s per contender (median, min, max) and the per-round
    ratios. Asserts that the loops agree and that each ceiling makes the loop's updates."""
    from cil_speck import kernel as K
    from cil_speck.events import eventbatch_to_arrays

    ch = dep.chip
    arrays = eventbatch_to_arrays(data.x.events, T, data.x.duration_us, ch["map"].layers[0].pre_shape)
    obs = be.forward(dep, data.x, record=True)
    # events per sample: its input events plus the spikes of every layer but the last
    per_sample = np.diff(arrays[4]) + sum(lo.spikes.sum((0,) + tuple(range(2, lo.spikes.dim()))).numpy()
                                          for lo in obs.layers[:-1]).astype(np.int64)
    trace = delivered_events(dep, arrays, T, int(per_sample.max()))
    lp = ch["lp"].copy()
    lp[:, K.ROFF] = -1
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    args_loop = (lp, ch["loop_weights"], ch["fan"], ch["n_state"], T, n_out, 0, ch["stack_cap"], 1)
    runs = {
        "loop": ("event loop (run_events)", lambda: K.run_events(*arrays, *args_loop)[2]),
        "previous_loop": ("previous event loop (run_events_reference)",
                          lambda: K.run_events_reference(*arrays, lp, ch["weights"], ch["n_state"], T, n_out, 0,
                                                         ch["stack_cap"], 1)[2]),
        "ceiling": ("integrate-only ceiling, the loop's layout (integrate_only)",
                    lambda: K.integrate_only(*trace, lp, ch["loop_weights"], ch["fan"], ch["n_state"], 1)),
        "ceiling_blocks": ("the same ceiling, additions in the loop's 8-lane blocks (integrate_blocks)",
                           lambda: K.integrate_blocks(*trace, lp, ch["loop_weights"], ch["fan"], ch["n_state"], 1,
                                                      False)[0]),
        "detect": ("the same, plus the loop's threshold bits per block (integrate_blocks, detect)",
                   lambda: K.integrate_blocks(*trace, lp, ch["loop_weights"], ch["fan"], ch["n_state"], 1, True)[0]),
        "previous_ceiling": ("integrate-only ceiling, the previous layout (integrate_only_reference)",
                             lambda: K.integrate_only_reference(*trace, lp, ch["weights"], ch["n_state"], 1)),
    }
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        new_out = K.run_events(*arrays, *args_loop)
        ref_out = K.run_events_reference(*arrays, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"], 1)
        assert all(np.array_equal(a, b) for a, b in zip(new_out, ref_out)), "the loop disagrees with the previous loop"
        syn = int(new_out[2].sum())
        for key, (_, fn) in runs.items():
            assert int(fn().sum()) == syn, f"{key} makes other synaptic updates than the loop"
        rates: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for key, (_, fn) in runs.items():
                t0 = time.process_time()  # CPU time: one thread, which other processes' load inflates less
                fn()
                rates[key].append(syn / (time.process_time() - t0))
    finally:
        numba.set_num_threads(old)

    def summary(v: list[float]) -> dict:
        return {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v}

    def ratio(a: str, b: str) -> dict:  # per round, and of the best rounds (best of N each)
        return {**summary([x / y for x, y in zip(rates[a], rates[b])]), "best": max(rates[a]) / max(rates[b])}

    # the faster way to make the same additions, per round: the compiler's vectorization
    # (integrate_only) or the loop's 8-lane blocks (integrate_blocks); which one wins depends on the
    # machine and on where the arrays lie, so the target is also judged against the faster one
    rates["best_ceiling"] = [max(x, y) for x, y in zip(rates["ceiling"], rates["ceiling_blocks"])]

    return {"rounds": rounds, "synaptic_updates": syn, "delivered_events": int(trace[4][-1]),
            "rates": {k: {"label": runs[k][0], **summary(v)} for k, v in rates.items() if k in runs},
            "best_ceiling": summary(rates["best_ceiling"]),
            "loop_vs_ceiling": ratio("loop", "ceiling"),
            "loop_vs_best_ceiling": ratio("loop", "best_ceiling"),
            "loop_vs_ceiling_blocks": ratio("loop", "ceiling_blocks"),
            "ceiling_blocks_vs_ceiling": ratio("ceiling_blocks", "ceiling"),
            "loop_vs_detect": ratio("loop", "detect"),
            "detect_vs_ceiling": ratio("detect", "ceiling"),
            "loop_vs_previous_ceiling": ratio("loop", "previous_ceiling"),
            "previous_loop_vs_previous_ceiling": ratio("previous_loop", "previous_ceiling"),
            "speedup_vs_previous_loop": ratio("loop", "previous_loop")}


def target(res: dict) -> str:
    """Issue 19's speck target (>= 60 % of the ceiling, >= 420 M updates/s/thread), judged on the
    medians of this run."""
    cs = res["ceiling"]
    own, prev = cs["loop_vs_ceiling"]["median"], cs["loop_vs_previous_ceiling"]["median"]
    best = cs["loop_vs_best_ceiling"]["median"]
    rate = cs["rates"]["loop"]["median"]
    met = lambda ok: "met" if ok else "**not** met"  # noqa: E731
    return (f"{met(own >= 0.6)} against the ceiling of the loop's own layout ({own * 100:.0f} %),\n  "
            f"{met(best >= 0.6)} against the faster of that ceiling and its 8-lane-block form ({best * 100:.0f} %),\n  "
            f"{met(prev >= 0.6)} against the previous layout's ({prev * 100:.0f} %), "
            f"{met(rate >= 420e6)} in absolute terms ({rate / 1e6:,.0f} M/s)")


def docs_text(res: dict, argv: list[str]) -> str:
    """The speck-throughput section of docs/results.md."""
    cs = res["ceiling"]
    env = [f"{k}={os.environ[k]}" for k in ("NUMBA_NUM_THREADS",) if k in os.environ]
    cmd = " ".join([*env, "python benchmarks/speck_throughput.py", *argv])
    la = ", ".join(f"{x:.1f}" for x in res["load_average"])
    rows = [[cs["rates"][k]["label"], f"{cs['rates'][k]['median'] / 1e6:,.0f}",
             f"{cs['rates'][k]['min'] / 1e6:,.0f} - {cs['rates'][k]['max'] / 1e6:,.0f}"] for k in cs["rates"]]
    pct = lambda k: (f"{cs[k]['median'] * 100:.0f} % (range {cs[k]['min'] * 100:.0f} - "  # noqa: E731
                     f"{cs[k]['max'] * 100:.0f} %; best round against best round {cs[k]['best'] * 100:.0f} %)")
    sp = cs["speedup_vs_previous_loop"]
    r_blocks = cs["ceiling_blocks_vs_ceiling"]["median"]
    blocks_note = (" (in this run the loop's own way of adding was the faster one:\n  the compiler's plain "
                   "vectorization is not always the fastest way to make these additions, hence the next figure)"
                   if r_blocks > 1.02 else " (the two ways of adding equally fast in this run)" if r_blocks >= 0.98 else
                   " (the ceiling's plain vectorized additions are not the slower way to add)")
    nb = [[key.replace("numba_", "").replace("t", " thread(s)"), f"{res[key]['updates_per_s'] / 1e6:,.0f}",
           f"{res[key]['samples_per_s']:.1f}"] for key in res if key.startswith("numba_")]
    return f"""Generated by `{cmd}` on {platform.machine()}, {res['cpu_count']} cores, in {res['seconds_total']:.0f} s
(load average at the end: {la}; the machine is shared, hence the ranges).
Raw numbers: `benchmarks/results/speck_throughput.json` (git-ignored).

Network: the CIL-SPL benchmark's (input sum pool 2, 5 conv + 1 dense, IAF, 6 chip layers), random weights
(Kaiming uniform x 2.5, seed 0; the loop's weights start on a 64-byte boundary, `kernel.loop_weights`);
data: {res['samples']} synthetic N-MNIST-like samples, T = 8,
{res['input_events']:,} input events, {cs['synaptic_updates']:,} synaptic updates per run.

One thread, {cs['rounds']} interleaved rounds, CPU time (M synaptic updates/s):

{markdown_table(["contender", "median", "range"], rows)}

- the loop at **{pct('loop_vs_ceiling')}** of the integrate-only ceiling in its
  own layout (the same synaptic additions, in the same order, through the same tables and types,
  nothing else), and at **{pct('loop_vs_previous_ceiling')}** of the
  integrate-only ceiling in the previous layout (int32 state, per-event index arithmetic, its
  additions vectorized; how the 670-770 M ceiling quoted in issue 19 was measured is not recorded,
  this replay is the closest reconstruction). Issue 19's target (>= 60 % of the ceiling,
  >= 420 M updates/s/thread): {target(res)};
- the ceiling with the loop's own 8-lane blocks at {pct('ceiling_blocks_vs_ceiling')}
  of the ceiling{blocks_note}, the loop at {pct('loop_vs_ceiling_blocks')} of it,\n  and at
  **{pct('loop_vs_best_ceiling')}** of the faster of the two in each round;
- where the rest goes: the ceiling plus the loop's own threshold detection (each block's spike bits
  extracted, stored and OR-ed, as the loop does; no reset, ordering, stack) runs at
  {pct('detect_vs_ceiling')} of the ceiling's speed; the loop at
  {pct('loop_vs_detect')} of that. The remainder is the spike path
  (recording the runs holding a spike, collecting the bits, resetting, ordering the spikes by rank,
  pushing and popping events) and its data-dependent branches;
- the previous loop at {pct('previous_loop_vs_previous_ceiling')} of that previous ceiling;
- the loop {sp['median']:.2f}x the previous loop (range {sp['min']:.2f} - {sp['max']:.2f}x), with
  bit-identical outputs (checked in the run, and by `tests/test_speck_kernel_identity.py`).

Through the backend (`SpeckBackend.forward` on the event batch; updates/s over the loop call's own wall time,
`meta["seconds"]`; samples/s over the whole call; medians of {res['repeats']} interleaved calls; on this shared
2-core machine a second thread often adds nothing):

{markdown_table(["threads", "M updates/s", "samples/s"], nb)}
"""



if __name__ == "__main__":
    raise SystemExit(main())
