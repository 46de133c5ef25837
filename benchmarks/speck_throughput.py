"""Throughput of the Speck-style event loop: synaptic updates per second of the compiled (numba)
loop on 1 thread and on all threads, beside the same loop run as plain Python
(``run_events.py_func``: numba's uncompiled original) and sinabs' own time-stepped simulation of
the same network on the binned events. All measured in one run, on one machine.

    python benchmarks/speck_throughput.py [--samples 64] [--python-events 400]

Network: the CIL-SPL benchmark's (input sum-pool 2x2, 5 conv + 1 fully connected, IAF), random
weights (Kaiming uniform x 2.5, seeded); data: the synthetic N-MNIST-like digits (T = 8 bins).
Writes benchmarks/results/speck_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numba
import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--python-events", type=int, default=400, help="input events run through the plain-Python loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/speck_throughput.json")
    args = ap.parse_args(argv)

    import cil_core as cil
    from cil_sinabs import run_sinabs
    from cil_sinabs.bench import make_model
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

    def best_of(fn):
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
        return min(ts), out

    be.forward(dep, data.x)  # compile / load the cache
    for threads in sorted({1, n_threads}):
        be.threads = threads
        t, obs = best_of(lambda: be.forward(dep, data.x))
        syn = obs.meta["synaptic_updates"]
        res[f"numba_{threads}t"] = {"seconds": t, "kernel_seconds": obs.meta["seconds"], "synaptic_updates": syn,
                                    "updates_per_s": syn / obs.meta["seconds"],
                                    "updates_per_s_per_thread": syn / obs.meta["seconds"] / threads,
                                    "samples_per_s": args.samples / t}
        res["input_events"] = obs.meta["input_events"]
    be.threads = None

    # plain Python: the same loop, uncompiled, on the first events of one sample
    ch = dep.chip
    arrays = eventbatch_to_arrays(data.x.events[:1], T, data.x.duration_us, ch["map"].layers[0].pre_shape)
    k = min(args.python_events, int(arrays[4][1]))
    sub = tuple(a[:k] for a in arrays[:4]) + (np.array([0, k], np.int64),)
    lp = ch["lp"].copy()
    lp[:, K.ROFF] = -1
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    t0 = time.perf_counter()
    py_out, _, py_syn = K.run_events.py_func(*sub, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"])
    t_py = time.perf_counter() - t0
    nb_out, _, nb_syn = K.run_events(*sub, lp, ch["weights"], ch["n_state"], T, n_out, 0, ch["stack_cap"])
    assert np.array_equal(py_out, nb_out) and int(py_syn[0]) == int(nb_syn[0]), "python and numba loops disagree"
    res["python"] = {"seconds": t_py, "input_events": k, "synaptic_updates": int(py_syn[0]),
                     "updates_per_s": int(py_syn[0]) / t_py}

    # sinabs' time-stepped simulation of the same network on the dense bins
    x = data.x.dense
    for threads in sorted({1, torch.get_num_threads()}):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        with torch.no_grad():
            run_sinabs(model, x)
            t, _ = best_of(lambda: run_sinabs(model, x))
        torch.set_num_threads(old)
        res[f"sinabs_{threads}t"] = {"seconds": t, "samples_per_s": args.samples / t,
                                     "event_updates_per_s_equiv": res["numba_1t"]["synaptic_updates"] / t}

    nb1 = res["numba_1t"]["updates_per_s"]
    print(f"network: {len(ch['map'].layers)} chip layers, {args.samples} samples, {res['input_events']} input events, "
          f"{res['numba_1t']['synaptic_updates']:,} synaptic updates")
    print(f"{'engine':32s} {'synaptic updates/s':>20s} {'samples/s':>10s} {'vs python':>10s}")
    for key in [k for k in res if k.startswith("numba_")]:
        r = res[key]
        print(f"{'numba event loop, ' + key.split('_')[1].replace('t', ' thread(s)'):32s} {r['updates_per_s']:20,.0f} "
              f"{r['samples_per_s']:10.1f} {r['updates_per_s'] / res['python']['updates_per_s']:9.0f}x")
    r = res["python"]
    print(f"{'plain-Python event loop':32s} {r['updates_per_s']:20,.0f} {'-':>10s} {1:9.0f}x   ({k} events of 1 sample)")
    for key in [k for k in res if k.startswith("sinabs_")]:
        r = res[key]
        print(f"{'sinabs time-stepped, ' + key.split('_')[1].replace('t', ' thread(s)'):32s} {'(dense)':>20s} "
              f"{r['samples_per_s']:10.1f}   (numba 1 thread / sinabs: "
              f"{res['numba_1t']['samples_per_s'] / r['samples_per_s']:.2f}x samples/s)")
    print(f"per-core target 50M updates/s: {'met' if nb1 >= 50e6 else 'NOT met'} ({nb1 / 1e6:.0f}M on 1 thread)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
