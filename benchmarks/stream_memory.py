"""Peak memory of a CIL-SPL epoch over a streamed dataset against its size: the data path must
hold O(batch), not O(N).

    python benchmarks/stream_memory.py [--sizes 2000 20000] [--steps 30] [--features 256]
    python benchmarks/stream_memory.py --chip speck [--root DIR] [--T 30] [--sizes 2000 20000]

Each case runs in a fresh Python process (peak RSS is per process: ``ru_maxrss``).

``--chip analog`` (default): one epoch of ``cil-spl`` (batch 64, Adam) on the ``analog-mismatch``
chip (strength 1, seed 0) of a ``features``-64-10 LIF network, over a lazy
``torch.utils.data.Dataset`` that generates sample ``i`` on demand (Bernoulli spikes
``[T, features]`` from a generator seeded by ``i``, rates depending on the class ``i % 10``),
beside the same samples materialised as one tensor ``[T, N, features]`` first (the
pre-streaming path, for contrast).

``--chip speck``: one epoch of ``cil-spl`` on the ``speck`` backend with the CIL-SPL network of
``benchmarks/cil_spl_speck.py`` (as ``benchmarks/nmnist_60k.py`` trains it), over a seeded random
subset of N streams of the N-MNIST-format files that ``nmnist_60k.py --write`` puts under
``--root`` (tonic's ``NMNIST`` through ``cil_speck.data.NMNISTDataset``, ``--workers`` loader
processes, ``--T`` bins); streamed only (30 bins of 20,000 streams would be 5.5 GB as one
tensor). Also reported: the data path's share of the epoch (wall time outside the training
steps) and the peak RSS of the loader's worker processes.

Reported per case: the RSS after imports and set-up (``rss_start``), the peak RSS of the
process, their difference (``peak_growth``), the wall time of the epoch and the chip's accuracy
on 500 held-out streamed samples. Writes benchmarks/results/stream_memory[_speck].json (``--out``
to change the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness import add_output_args, print_table, write_json


class LazySpikes(Dataset):
    """``n`` samples ``(x [T, features], label)`` generated on demand, nothing held: sample ``i``
    has class ``i % classes``; each feature fires with probability 0.04, the class's band of
    ``features // classes`` features with 0.25 (seeded per sample: the same sample every time)."""

    def __init__(self, n: int, T: int = 30, features: int = 256, classes: int = 10, seed: int = 0) -> None:
        self.n, self.T, self.features, self.classes, self.seed = n, T, features, classes, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        c = i % self.classes
        p = torch.full((self.features,), 0.04)
        band = self.features // self.classes
        p[c * band:(c + 1) * band] = 0.25
        return (torch.rand(self.T, self.features, generator=g) < p).float(), c


def _rss_mb() -> float:
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_speck_case(n: int, T: int, steps: int | None, root: Path, workers: int) -> dict:
    """One CIL-SPL epoch on speck over ``n`` streams of the files under ``root`` (see the module docstring)."""
    import cil_core as cil
    from cil_speck.data import NMNISTDataset
    from nmnist_60k import StepTimer, make_network

    torch.set_num_threads(1)
    tr = cil.Trainer(make_network(T), "speck", "cil-spl", seed=0, lr=2e-3, grad_clip=1.0, num_workers=workers)
    ds = NMNISTDataset(root, train=True, n_bins=T, n_samples=n, seed=0)
    test = NMNISTDataset(root, train=False, n_bins=T, n_samples=500, seed=0)
    tr.evaluate(NMNISTDataset(root, train=False, n_bins=T, n_samples=64, seed=1))  # warm up (numba, first calls)
    rss_start = _rss_mb()
    timer = StepTimer(tr.registry)
    t0 = time.perf_counter()
    tr.fit(ds, epochs=None if steps else 1, steps=steps, batch_size=64)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    acc = tr.evaluate(test, batch_size=250)["accuracy"]
    return {"mode": "streamed", "n": n, "steps": len(tr.history), "rss_start_mb": round(rss_start, 1),
            "peak_rss_mb": round(peak, 1), "peak_growth_mb": round(peak - rss_start, 1),
            "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "wall_s": round(wall, 2), "data_path_s": round(wall - timer.seconds, 2),
            "data_share": round((wall - timer.seconds) / wall, 4), "chip_accuracy": acc}


def run_case(mode: str, n: int, features: int, T: int, steps: int | None) -> dict:
    import cil_core as cil
    from cil_core.network.reference import feedforward

    torch.set_num_threads(1)
    net = feedforward([features, 64, 10], seed=0)
    chip = cil.make_backend("analog-mismatch", strength=1.0, seed=0)
    tr = cil.Trainer(net, chip, "cil-spl", seed=0, lr=1e-2)
    ds = LazySpikes(n, T, features)
    test = LazySpikes(500, T, features, seed=1)
    tr.evaluate(LazySpikes(64, T, features, seed=2))  # warm up (first-call allocations)
    rss_start = _rss_mb()
    t0 = time.perf_counter()
    if mode == "streamed":
        data = ds
    else:  # everything in memory first, as before streaming
        xs, ys = zip(*(ds[i] for i in range(n)))
        data = (torch.stack(xs, 1), torch.as_tensor(ys))
        del xs
    tr.fit(data, epochs=None if steps else 1, steps=steps, batch_size=64)
    wall = time.perf_counter() - t0
    acc = tr.evaluate(test, batch_size=250)["accuracy"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "n": n, "steps": len(tr.history), "rss_start_mb": round(rss_start, 1),
            "peak_rss_mb": round(peak, 1), "peak_growth_mb": round(peak - rss_start, 1),
            "wall_s": round(wall, 2), "chip_accuracy": acc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--T", type=int, default=30)
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per case instead of one epoch (the data of a streamed case is then read only "
                    "that far; an in-memory case still builds the whole tensor)")
    ap.add_argument("--modes", nargs="+", default=["streamed", "in-memory"], choices=["streamed", "in-memory"])
    ap.add_argument("--chip", choices=["analog", "speck"], default="analog",
                    help="analog: the LIF net on analog-mismatch over generated spikes; speck: the CIL-SPL speck net "
                    "over N-MNIST-format files (--root)")
    ap.add_argument("--root", type=Path, default=None,
                    help="--chip speck: the files of nmnist_60k.py --write (default: its default root)")
    ap.add_argument("--workers", type=int, default=1, help="--chip speck: DataLoader worker processes")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.chip == "speck":
        from nmnist_60k import DEFAULT_ROOT

        args.root = args.root or DEFAULT_ROOT
        args.modes = ["streamed"]
    if args.case:
        mode, n = args.case.split(":")
        if args.chip == "speck":
            print(json.dumps(run_speck_case(int(n), args.T, args.steps, args.root, args.workers)))
        else:
            print(json.dumps(run_case(mode, int(n), args.features, args.T, args.steps)))
        return 0
    rows = []
    for mode in args.modes:
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--case", f"{mode}:{n}", "--features", str(args.features),
                   "--T", str(args.T), "--chip", args.chip, "--workers", str(args.workers)] + (
                ["--steps", str(args.steps)] if args.steps else []) + (["--root", str(args.root)] if args.root else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parent)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    streamed = {r["n"]: r for r in rows if r["mode"] == "streamed"}
    summary = {}
    if len(streamed) >= 2:
        lo, hi = min(streamed), max(streamed)
        summary = {"sizes": [lo, hi], "peak_rss_ratio_streamed": round(streamed[hi]["peak_rss_mb"]
                                                                       / streamed[lo]["peak_rss_mb"], 3)}
    if args.chip == "speck":
        print_table(["N", "steps", "RSS start MiB", "peak RSS MiB", "growth MiB", "worker peak MiB", "wall s",
                     "data path s", "data share", "chip acc"],
                    [[r["n"], r["steps"], r["rss_start_mb"], r["peak_rss_mb"], r["peak_growth_mb"],
                      r["peak_rss_workers_mb"], r["wall_s"], r["data_path_s"], f"{100 * r['data_share']:.1f} %",
                      f"{r['chip_accuracy']:.3f}"] for r in rows], title=f"CIL-SPL epoch on speck, T = {args.T}")
        if summary:
            summary["max_data_share"] = max(r["data_share"] for r in rows)
    else:
        print_table(["mode", "N", "steps", "RSS start MiB", "peak RSS MiB", "growth MiB", "wall s", "chip acc"],
                    [[r["mode"], r["n"], r["steps"], r["rss_start_mb"], r["peak_rss_mb"], r["peak_growth_mb"],
                      r["wall_s"], f"{r['chip_accuracy']:.3f}"] for r in rows], title="CIL-SPL epoch, peak memory")
    if summary:
        print(f"peak RSS streamed N={summary['sizes'][1]} / N={summary['sizes'][0]}: "
              f"{summary['peak_rss_ratio_streamed']}")
    if args.chip == "speck":
        settings = {"T": args.T, "batch_size": 64, "steps": args.steps, "torch_threads": 1, "workers": args.workers,
                    "backend": "speck", "network": "cil_spl_speck.make_model('snn'), init gain 1.8",
                    "data": f"NMNISTDataset({args.root}) (nmnist_60k.py --write)"}
    else:
        settings = {"features": args.features, "T": args.T, "batch_size": 64, "steps": args.steps,
                    "torch_threads": 1, "backend": "analog-mismatch strength=1 seed=0"}
    write_json(args.out / ("stream_memory_speck.json" if args.chip == "speck" else "stream_memory.json"),
               {"settings": settings, "cases": rows, "summary": summary, "load_average": os.getloadavg()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
