"""Scale-out on Ray (cil-ray): MH proposals/s and CIL-SPL steps/s for 1, 2, 4 workers vs the local run.

Two backends, each measured side by side (interleaved steps, medians; ``harness.interleaved``):

* **simulator** — ``analog-mismatch`` (strength 1, noise off: deterministic), the breast-cancer
  62-32-2 LIF network, T = 16, the whole training set (398 samples) per proposal, 32 chains:
  one MH step scores 32 parameter sets; locally in one batched call (torch, all threads), on
  ``ray:analog-mismatch`` split over the workers (one thread each).
* **test chip** — ``SlowChip``: the ideal backend plus a fixed 20 ms of I/O (a sleep) per call,
  one parameter set per call (``max_sets = 1``, like a real chip): locally 32 calls per step, on
  Ray 32 / W calls per worker, in parallel. The class is defined here and shipped to the
  workers (``cil_ray.RayBackend(SlowChip, ...)``).

**CIL-SPL** is measured the same way: one training step = one chip forward of the whole training
set (398 samples, one parameter set) plus the software backward on the driver; on
``ray:`` the batch is split into shards of at least ``min_shard`` (64) samples, one per worker
(the slow chip still takes its 20 ms per call, on every worker at once). Each Ray contender is
checked to end with exactly the weights of the local run with one thread.

Per contender: proposals/s (MH) or steps/s (CIL-SPL), speed-up over the better of the local runs (1 thread, all threads:
on a busy machine extra threads can make torch slower), backend calls and remote calls per step,
bytes sent and received per call (binary spikes travel as bits, counts as uint8, when lossless) and the remote
overhead per call (median over the calls of the driver wall time minus the slowest worker's own time; target from the issue:
<= 5 ms + 6 ms per MB moved). Each Ray contender is also checked to score exactly what the local
run scores. A third table measures the overhead of one call against the size of the parameters.

All workers of all contenders live at once on one local cluster (``num_cpus=0`` each, so that
2, 4 and 1 workers fit together on a small machine; each worker uses one thread). On a 2-core
machine 4 simulator workers share 2 cores: the table shows what that gives, not what 4 cores
would.

    python benchmarks/scale_out.py [--steps 20] [--chains 32] [--quick] [--docs]

Writes ``benchmarks/results/scale_out.json`` and ``scale_out.png`` (``--out`` to change the folder);
``--docs`` also rewrites the ``scale-out`` section of ``docs/results.md`` and ``docs/img/scale_out.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import cil_core as cil
from cil_core.data.breast_cancer import load_breast_cancer_spikes
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.reference import feedforward, leaky_neuron
from harness import (add_output_args, interleaved, markdown_table, print_table, publish_figures, save_figure,
                     write_docs_section,
                     write_json)

SECTION = "scale-out"


class SlowChip(IdealBackend):
    """The ideal backend behind a link with a fixed delay per call (a test chip)."""

    name = "slow-chip"
    max_sets = 1

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay

    def forward(self, deployment, inputs, record=False):
        time.sleep(self.delay)
        return super().forward(deployment, inputs, record)


def _mh(backend, data, chains: int):
    net = feedforward([data.n_inputs, 32, 2], seed=0, weight_gain=2.0)
    tr = cil.Trainer(net, backend, "mh", chains=chains, rescore=False, burn_in=10**9, init="network", seed=0)
    tr.algorithm.setup(tr.state, data.train)
    batch = (data.train.x, data.train.y)
    tr.algorithm.step(tr.state, batch)  # the first step also scores the start
    return tr, batch


def _backends(kind: str, workers: list[int]):
    """The local backend and one ``ray:`` backend per worker count."""
    import cil_ray

    if kind == "simulator":
        opts = {"strength": 1.0, "seed": 3, "noise_sigma": 0.0}
        return (cil.make_backend("analog-mismatch", **opts),
                {w: cil.make_backend("ray:analog-mismatch", workers=w, num_cpus=0, **opts) for w in workers})
    return SlowChip(0.02), {w: cil_ray.RayBackend(SlowChip, workers=w, num_cpus=0, delay=0.02) for w in workers}


def _remote_row(row: dict, backend, s0: dict, s1: dict, steps: int) -> None:
    """Remote calls, bytes and overhead per call (median over the calls; the mean too) between
    two ``RayBackend.stats()``."""
    n = s1["calls"] - s0["calls"]
    row["remote_calls_per_step"] = (s1["remote_calls"] - s0["remote_calls"]) / steps
    row["bytes_per_call"] = (s1["bytes_sent"] - s0["bytes_sent"]) / max(1, n)
    row["bytes_received_per_call"] = (s1["bytes_received"] - s0["bytes_received"]) / max(1, n)
    moved = (row["bytes_per_call"] + row["bytes_received_per_call"]) / 2**20
    row["overhead_target_ms"] = 5 + 6 * moved
    row["overhead_mean_ms"] = 1e3 * ((s1["seconds"] - s0["seconds"])
                                     - (s1["worker_seconds"] - s0["worker_seconds"])) / max(1, n)
    row["overhead_per_call_ms"] = 1e3 * float(statistics.median(backend.overheads(n))) if n else float("nan")


def mh_scale_out(kind: str, data, chains: int, workers: list[int], repeats: int, max_threads: int) -> dict:
    local_backend, remote = _backends(kind, workers)
    threads = sorted({1, max_threads})
    contenders = {}
    for n in threads:  # the local run with 1 thread and with all threads: the better one is the baseline
        contenders[f"local {n} thread{'s' if n > 1 else ''}"] = (*_mh(local_backend, data, chains), n)
    for w, b in remote.items():
        contenders[f"ray x{w}"] = (*_mh(b, data, chains), 1)
    # same scores: every contender's chains are where the local run's are
    ref = next(iter(contenders.values()))[0].algorithm
    same = {k: bool(torch.equal(tr.algorithm.theta, ref.theta) and torch.equal(tr.algorithm.logpost, ref.logpost))
            for k, (tr, _, _) in contenders.items()}
    before = {k: (tr.session.stats.calls, getattr(tr.backend, "stats", lambda: {})())
              for k, (tr, _, _) in contenders.items()}

    def step(tr, batch, n):
        torch.set_num_threads(n)
        tr.algorithm.step(tr.state, batch)

    fns = {k: (lambda tr=tr, b=b, n=n: step(tr, b, n)) for k, (tr, b, n) in contenders.items()}
    t = interleaved(fns, repeats, warmup=1)
    torch.set_num_threads(max_threads)
    steps = repeats + 1
    best_local = min(v for k, v in t.items() if k.startswith("local"))
    out: dict = {"setting": f"{kind}: 62-32-2 LIF, T={data.num_steps}, {len(data.train)} samples per proposal, "
                            f"{chains} chains", "contenders": {}}
    for k, (tr, _, _) in contenders.items():
        calls = (tr.session.stats.calls - before[k][0]) / steps
        row = {"seconds_per_step": t[k], "proposals_per_second": chains / t[k], "speedup": best_local / t[k],
               "speedup_vs_local_1_thread": t["local 1 thread"] / t[k],
               "speedup_vs_ray_x1": t.get("ray x1", float("nan")) / t[k],
               "calls_per_step": calls, "same_as_local": same[k]}
        if hasattr(tr.backend, "stats"):
            _remote_row(row, tr.backend, before[k][1], tr.backend.stats(), steps)
        out["contenders"][k] = row
    for b in remote.values():
        b.close()
    return out


def spl_scale_out(kind: str, data, workers: list[int], repeats: int, max_threads: int) -> dict:
    """CIL-SPL steps/s: one step = the chip forward of the whole training set + the software backward."""
    local_backend, remote = _backends(kind, workers)
    batch = (data.train.x, data.train.y)

    def trainer(backend):
        tr = cil.Trainer(feedforward([data.n_inputs, 32, 2], seed=0, weight_gain=2.0), backend, "cil-spl",
                         lr=1e-2, seed=0)
        tr.algorithm.setup(tr.state, data.train)
        return tr

    threads = sorted({1, max_threads})
    contenders = {f"local {n} thread{'s' if n > 1 else ''}": (trainer(local_backend), n) for n in threads}
    contenders.update({f"ray x{w}": (trainer(b), 1) for w, b in remote.items()})
    before = {k: (tr.session.stats.calls, getattr(tr.backend, "stats", lambda: {})())
              for k, (tr, _) in contenders.items()}

    def step(tr, n):
        torch.set_num_threads(n)
        tr.algorithm.step(tr.state, batch)

    t = interleaved({k: (lambda tr=tr, n=n: step(tr, n)) for k, (tr, n) in contenders.items()}, repeats, warmup=1)
    torch.set_num_threads(max_threads)
    steps = repeats + 1
    ref = contenders["local 1 thread"][0].network.detached_parameters()
    best_local = min(v for k, v in t.items() if k.startswith("local"))
    out: dict = {"setting": f"{kind}: 62-32-2 LIF, T={data.num_steps}, batch {len(data.train)} (the whole training "
                            "set) per step", "contenders": {}}
    for k, (tr, n) in contenders.items():
        same = all(torch.equal(v, ref[name]) for name, v in tr.network.detached_parameters().items())
        row = {"seconds_per_step": t[k], "steps_per_second": 1 / t[k], "speedup": best_local / t[k],
               "speedup_vs_local_1_thread": t["local 1 thread"] / t[k],
               "speedup_vs_ray_x1": t.get("ray x1", float("nan")) / t[k],
               "calls_per_step": (tr.session.stats.calls - before[k][0]) / steps,
               "same_as_local": same if k.startswith("ray") or n == 1 else None}
        if hasattr(tr.backend, "stats"):
            _remote_row(row, tr.backend, before[k][1], tr.backend.stats(), steps)
        out["contenders"][k] = row
    for b in remote.values():
        b.close()
    return out


def call_overhead(sizes_mb: list[float], repeats: int) -> dict:
    """Overhead of one remote call (wall minus the worker's own time) against the size of the
    parameters sent: a 1-layer network whose weight matrix holds ``size`` MB, 1 worker."""
    import cil_ray

    import ray

    chip = cil_ray.RayBackend("ideal", workers=1, num_cpus=0)
    rows: dict = {}
    ping = []
    for _ in range(20):  # the floor: an actor call that does nothing
        t0 = time.perf_counter()
        ray.get(chip.actors[0].stats.remote())
        ping.append(time.perf_counter() - t0)
    rows["empty_call_ms"] = 1e3 * sorted(ping)[len(ping) // 2]
    for mb in sizes_mb:
        n_in = 256
        n_out = max(1, int(mb * 2**20 / 4 / n_in))
        spec = cil.NetworkSpec((cil.Dense("w", None, n_in, n_out), leaky_neuron(0.9)), (n_in,))
        params = {"w": torch.randn(n_out, n_in) * 0.01}
        x = (torch.rand(4, 2, n_in) < 0.1).float()
        session = cil.HardwareSession(chip)
        session.run(spec, params, x)  # warm: the description travels once
        s0 = chip.stats()
        for _ in range(repeats):
            session.run(spec, params, x)
        s1 = chip.stats()
        n = s1["calls"] - s0["calls"]
        over = statistics.median(chip.overheads(n))
        real_mb = params["w"].numel() * 4 / 2**20
        back = (s1["bytes_received"] - s0["bytes_received"]) / n / 2**20
        rows.setdefault("sizes", {})[f"{real_mb:.2f}"] = {"mb": real_mb, "mb_back": back, "overhead_ms": 1e3 * over,
                                                          "target_ms": 5 + 6 * (real_mb + back)}
    chip.close()
    return rows


HEADER = ["", "{unit}/s", "vs best local", "vs local 1 thread", "vs ray x1", "calls/step", "remote calls/step",
          "kB sent / received per call", "overhead ms/call, median (target)", "same as local"]


def _rows(r: dict, rate: str) -> list[list[str]]:
    rows = []
    for k, c in r["contenders"].items():
        same = c["same_as_local"]
        v1 = c.get("speedup_vs_local_1_thread")
        rows.append([k, f"{c[rate]:.1f}", f"{c['speedup']:.2f}x", "-" if v1 is None else f"{v1:.2f}x",
                     f"{c['speedup_vs_ray_x1']:.2f}x" if k.startswith("ray") else "-", f"{c['calls_per_step']:.0f}",
                     f"{c.get('remote_calls_per_step', 0):.0f}" if "remote_calls_per_step" in c else "-",
                     f"{c['bytes_per_call'] / 1e3:.0f} / {c['bytes_received_per_call'] / 1e3:.0f}"
                     if "bytes_per_call" in c else "-",
                     f"{c['overhead_per_call_ms']:.1f} ({c['overhead_target_ms']:.1f})"
                     if "overhead_per_call_ms" in c else "-",
                     "-" if same is None else ("yes" if same else "NO")])
    return rows


def _sections(result: dict):
    """(title, rows, unit) of every measured table: MH per backend, then CIL-SPL per backend."""
    for kind in ("simulator", "chip-20ms"):
        if kind in result:
            yield f"MH, {result[kind]['setting']}", _rows(result[kind], "proposals_per_second"), "proposals", kind, "mh"
    for kind, r in result.get("cil-spl", {}).items():
        yield f"CIL-SPL, {r['setting']}", _rows(r, "steps_per_second"), "steps", kind, "cil-spl"


def plot(result: dict, path: Path) -> Path:
    """Speed-up over the best local run against the number of workers, MH and CIL-SPL side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    panels = {"mh": (axes[0], "MH, 32 chains: proposals/s"), "cil-spl": (axes[1], "CIL-SPL, batch 398: steps/s")}
    top = 1.0
    for _, _, _, kind, algo in _sections(result):
        r = result[kind] if algo == "mh" else result["cil-spl"][kind]
        ws = sorted(int(k.split("x")[1]) for k in r["contenders"] if k.startswith("ray x"))
        sp = [r["contenders"][f"ray x{w}"]["speedup"] for w in ws]
        top = max(top, *sp)
        ax = panels[algo][0]
        label = "simulator (analog-mismatch)" if kind == "simulator" else "chip, 20 ms I/O per call"
        ax.plot(ws, sp, "o-", label=label)
    for ax, title in panels.values():
        ax.axhline(1.0, color="grey", lw=1, ls="--", label="best local run")
        ax.plot([1, 4], [1, 4], color="grey", lw=0.8, ls=":", label="linear")
        ax.set_xticks([1, 2, 4])
        ax.set_xlabel("Ray workers")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speed-up vs best local run")
    axes[0].set_ylim(0, max(2.0, top * 1.15))
    axes[1].legend(fontsize=8, loc="upper left")
    m = result["machine"]
    fig.suptitle(f"cil-ray scale-out on {m['cpus']} CPUs (load average {m['load_average_before'][0]:.1f} before)",
                 fontsize=10)
    save_figure(fig, path)
    print(f"wrote {path}")
    return path


def docs_section(result: dict) -> str:
    m = result["machine"]
    parts = [f"`{result.get('command', 'python benchmarks/scale_out.py')}` (JSON in "
             "`benchmarks/results/scale_out.json`; method and discussion in "
             "[distributed.md](distributed.md#measured-figures)). Measured on "
             f"{m['cpus']} CPUs (torch {m['torch']}), load average {m['load_average_before'][0]:.1f} before and "
             f"{m['load_average_after'][0]:.1f} after (the benchmark's own processes included). Speed-ups are "
             "against the better local run (1 or 2 torch threads) and the one-thread local run; the overhead per "
             "call is the median over the calls; \"same as local\": the Ray run scored (MH) or trained (CIL-SPL) "
             "exactly like the local run.", "", "![scale-out](img/scale_out.png)"]
    for title, rows, unit, _, _ in _sections(result):
        parts += ["", f"**{title}** (median of {result.get('steps', '?')} interleaved steps)", "",
                  markdown_table([h.format(unit=unit) for h in HEADER], rows)]
    ov = result["call_overhead"]
    parts += ["", f"Remote overhead of one call against the size of the parameters (1 worker, `ideal`; an empty "
              f"actor call: {ov['empty_call_ms']:.2f} ms):", "",
              markdown_table(["params MB", "overhead ms/call", "target ms (5 + 6/MB moved)"],
                             [[f"{v['mb']:.2f}", f"{v['overhead_ms']:.1f}", f"{v['target_ms']:.1f}"]
                              for v in ov["sizes"].values()])]
    return "\n".join(parts)


def report(result: dict, out: Path, docs: bool) -> None:
    for title, rows, unit, _, _ in _sections(result):
        print_table([h.format(unit=unit) for h in HEADER], rows,
                    f"\n{title} (median of {result.get('steps', '?')} steps, interleaved)")
    ov = result["call_overhead"]
    print_table(["params MB", "overhead ms/call", "target ms (5 + 6/MB moved)"],
                [[f"{v['mb']:.2f}", f"{v['overhead_ms']:.1f}", f"{v['target_ms']:.1f}"] for v in ov["sizes"].values()],
                f"\nRemote overhead per call against the size of the parameters (1 worker, ideal backend; "
                f"an empty actor call: {ov['empty_call_ms']:.2f} ms)")
    m = result["machine"]
    print(f"\n{m['cpus']} CPUs; load average (1 min) {m['load_average_before'][0]:.1f} before, "
          f"{m['load_average_after'][0]:.1f} after (the benchmark's own processes included)")
    png = plot(result, out / "scale_out.png")
    if docs:
        write_docs_section(SECTION, docs_section(result))
        publish_figures({"scale_out.png": png})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per contender (interleaved)")
    p.add_argument("--chains", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="most torch threads of the local run (it is also timed with 1)")
    p.add_argument("--quick", action="store_true", help="few steps, 1 and 2 workers (a smoke run)")
    p.add_argument("--no-spl", action="store_true", help="MH only (skip the CIL-SPL tables)")
    p.add_argument("--from-json", type=Path, help="re-render the tables, plot (and --docs) from a saved JSON")
    add_output_args(p, docs_section=SECTION)
    a = p.parse_args()
    if a.from_json:
        report(json.loads(a.from_json.read_text()), a.out, a.docs)
        return
    if a.quick:
        a.steps, a.workers = 2, [1, 2]
    torch.set_num_threads(a.threads)
    import cil_ray

    t0 = time.perf_counter()
    cil_ray.start_local(num_cpus=os.cpu_count() or 1)
    started = time.perf_counter() - t0
    data = load_breast_cancer_spikes(num_steps=16, seed=0)
    result = {"command": "python benchmarks/scale_out.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "torch": torch.__version__,
                          "threads_local": a.threads, "load_average_before": os.getloadavg()},
              "cluster_start_s": started, "steps": a.steps}
    for kind in ("simulator", "chip-20ms"):
        result[kind] = mh_scale_out(kind, data, a.chains, a.workers, a.steps, a.threads)
    if not a.no_spl:
        result["cil-spl"] = {kind: spl_scale_out(kind, data, a.workers, a.steps, a.threads)
                             for kind in ("simulator", "chip-20ms")}
    result["call_overhead"] = call_overhead([0.01, 1.0, 8.0] if not a.quick else [0.01, 1.0], max(5, a.steps))
    result["machine"]["load_average_after"] = os.getloadavg()
    write_json(a.out / "scale_out.json", result)
    cil_ray.shutdown()
    report(result, a.out, a.docs)


if __name__ == "__main__":
    main()
