"""Throughput of the Speck-style event loop: synaptic updates per second of the compiled (numba)
loop on 1 thread and on all threads, beside the same loop run as plain Python
(``run_events.py_func``: numba's uncompiled original) and sinabs' own time-stepped simulation of
the same network on the binned events. All measured in one run, on one machine; the compiled
loop and sinabs are timed interleaved (``harness.interleaved``, medians of ``--repeats``).

    python benchmarks/speck_throughput.py [--samples 64] [--python-events 400]

Network: the CIL-SPL benchmark's (input sum-pool 2x2, 5 conv + 1 fully connected, IAF), random
weights (Kaiming uniform x 2.5, seeded); data: the synthetic N-MNIST-like digits (T = 8 bins).
Writes benchmarks/results/speck_throughput.json (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import os
import statistics

import numba
import numpy as np
import torch

from harness import Stopwatch, add_output_args, interleaved, print_table, write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--python-events", type=int, default=400, help="input events run through the plain-Python loop")
    ap.add_argument("--repeats", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args(argv)

    import cil_core as cil
    from cil_sinabs import run_sinabs
    from cil_spl_speck import make_model
    from cil_speck import kernel as K
    from cil_speck.data import synthetic_nmnist
    from cil_speck.events import eventbatch_to_arrays

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
    res: dict = {"samples": args.samples, "input_events": None, "cpu_count": os.cpu_count(),
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

    # plain Python: the same loop, uncompiled, on the first events of one sample
    ch = dep.chip
    arrays = eventbatch_to_arrays(data.x.events[:1], T, data.x.duration_us, ch["map"].layers[0].pre_shape)
    k = min(args.python_events, int(arrays[4][1]))
    sub = tuple(a[:k] for a in arrays[:4]) + (np.array([0, k], np.int64),)
    lp = ch["lp"].copy()
    lp[:, K.ROFF] = -1
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    with Stopwatch() as sw:  # one call: the plain-Python loop is slow
        py_out, _, py_syn = K.run_events.py_func(*sub, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"])
    t_py = sw.seconds
    nb_out, _, nb_syn = K.run_events(*sub, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"])
    assert np.array_equal(py_out, nb_out) and int(py_syn[0]) == int(nb_syn[0]), "python and numba loops disagree"
    res["python"] = {"seconds": t_py, "input_events": k, "synaptic_updates": int(py_syn[0]),
                     "updates_per_s": int(py_syn[0]) / t_py}

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
    write_json(args.out / "speck_throughput.json", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
