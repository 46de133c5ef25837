"""A real-sized run, end to end: 60,000 training and 10,000 test event streams in N-MNIST's file
format and tonic's folder layout, one CIL-SPL epoch of the speck network through tonic's
``NMNIST`` dataset and a DataLoader, with peak memory, the data path's share of the wall time
and the chip's accuracy.

    python benchmarks/nmnist_60k.py --write                     # the files (once; ~1 GB)
    python benchmarks/nmnist_60k.py --train                     # one epoch over all 60,000 + test
    python benchmarks/nmnist_60k.py --train --n-train 1000      # the cost per 1,000 streams
    python benchmarks/nmnist_60k.py --train --algorithm mh --steps 100 --tag mh   # minibatch MH, see --algorithm

Files go under ``--root`` (default ``benchmarks/results/nmnist_60k``, git-ignored):
``<root>/NMNIST/{train,test}.zip`` (empty placeholders tonic checks for) and
``<root>/NMNIST/{Train,Test}/<digit>/<index>.bin`` (:func:`cil_speck.data.write_nmnist_bin`).

**The data are synthetic** (not N-MNIST; accuracies are not comparable with published N-MNIST
figures). Stream ``i`` of a split starts from one of sklearn's 8x8 digits of that split's part
(:func:`cil_speck.data.digit_split`: 1,258 digits for the 60,000 training streams, about 48
streams each, the other 539 for the 10,000 test streams, so the test digits are never seen in
training), upscaled bilinearly to 24x24, then drawn once per stream (seeded by split and index):

* a random **affine** warp: rotation U(-15°, 15°), scale U(0.8, 1.1), shear U(-0.2, 0.2),
  translation U(-2, 2) px per axis (bilinear, zeros outside);
* a random **intensity gain** U(0.6, 1.0) (how many events the edges give);
* N-MNIST's three saccades and the simulated DVS pixel of :func:`cil_speck.data.digits_to_events`
  (contrast 0.4, 12 frames per saccade, jittered event times within a frame);
* **time jitter** of every event, Gaussian with σ = 2 ms (clipped to the 315 ms recording);
* **background noise**: Poisson(100) events per stream, uniform in x, y, t and polarity.

The run reports that no two of the 70,000 streams are identical (hash of the event bytes).

Training (``--train``): the CIL-SPL speck network of ``benchmarks/cil_spl_speck.py``
(``make_model("snn")``: sum pool 2, 5 conv + 1 dense IAF layers, 6 chip layers; init gain 1.8,
Adam lr 2e-3, gradient clip 1, batch 64, ``--bins`` time bins) on the ``speck`` backend, data
from ``cil_speck.data.NMNISTDataset`` (tonic's ``NMNIST``, one file read per sample, each batch
binned by ``EventCollate``; the chip runs the raw events) in the DataLoader the trainer builds
(``--workers`` processes). Reported: peak RSS of the main process and of the loader's workers
(``ru_maxrss``), wall time of the epoch, the **data path** = the epoch's wall time outside the
training steps (waiting for the next batch, the door's checks; measured in the main process
around ``train_step``), chip (and software) accuracy on the 10,000 test streams. Writes
``<out>/nmnist_60k.json`` (default ``benchmarks/results``) and, while it runs, one JSON line per
step to ``<out>/nmnist_60k.steps.jsonl`` (elapsed time, time in steps, data path, loss, RSS).

``--algorithm mh --steps N``: minibatch Metropolis-Hastings (issue 19, item 3) on the same files:
``likelihood="sequential"`` (Korattikara et al.'s test, ``--minibatch`` samples per look, level
``--epsilon``, at most ``--max-samples`` per decision), ``--chains`` chains, burn-in N/2, from the
same random init as the CIL-SPL run; the streams are read by index from the dataset (full-data MH
would score every proposal on all 60,000 streams).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness import RESULTS, add_output_args, print_table, write_json

SPLITS = {"train": ("Train", "train.zip", True), "test": ("Test", "test.zip", False)}
DEFAULT_ROOT = RESULTS / "nmnist_60k"


# ----------------------------------------------------------------------------- the files
def variant_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[N, 8, 8]`` digits -> ``[N, 24, 24]``: upscaled, then one random affine warp and
    intensity gain per image (see the module docstring)."""
    import torch.nn.functional as F

    n = len(images)
    up = F.interpolate(torch.as_tensor(images, dtype=torch.float32)[:, None], size=(24, 24), mode="bilinear",
                       align_corners=False)
    rot = np.deg2rad(rng.uniform(-15, 15, n))
    scale = rng.uniform(0.8, 1.1, n)
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-2, 2, (n, 2)) / 12.0  # pixels -> affine_grid's [-1, 1] units (24 px wide)
    c, s = np.cos(rot), np.sin(rot)
    # output -> input coordinates: (R S H)^-1 around the centre, then the shift
    a = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)             # rotation
    a = a @ np.stack([np.stack([np.ones(n), shear], -1), np.stack([np.zeros(n), np.ones(n)], -1)], -2)
    a = a * scale[:, None, None]
    inv = np.linalg.inv(a)
    theta = np.concatenate([inv, -(inv @ shift[:, :, None])], -1)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32), (n, 1, 24, 24), align_corners=False)
    warped = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    gain = torch.as_tensor(rng.uniform(0.6, 1.0, n), dtype=torch.float32)[:, None, None]
    return (warped.clamp(0, 1) * gain).numpy()


def make_streams(images: np.ndarray, seed: int, jitter_us: float = 2000.0, noise: float = 100.0) -> list[np.ndarray]:
    """Event streams of ``[N, 8, 8]`` digits with this module's variation (seeded)."""
    from cil_speck.data import DURATION_US, as_event_array, digits_to_events
    from cil_speck.events import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    streams = digits_to_events(variant_images(images, rng), seed=seed)
    out = []
    for ev in streams:
        ev = ev.copy()
        ev["t"] = np.clip(ev["t"] + np.round(rng.normal(0, jitter_us, len(ev))).astype(np.int64), 0, DURATION_US - 1)
        k = rng.poisson(noise)
        bg = np.zeros(k, EVENT_DTYPE)
        bg["x"], bg["y"] = rng.integers(0, 34, k), rng.integers(0, 34, k)
        bg["t"], bg["p"] = rng.integers(0, DURATION_US, k), rng.integers(0, 2, k)
        out.append(as_event_array(np.concatenate([ev, bg])))
    return out


def write_split(root: Path, split: str, n: int, chunk: int = 2000) -> dict:
    """``n`` streams of ``split`` written in tonic's layout; returns counts and timing."""
    from cil_speck.data import digit_split, write_nmnist_bin

    folder, archive, train = SPLITS[split]
    base = root / "NMNIST"
    (base / folder).mkdir(parents=True, exist_ok=True)
    (base / archive).write_bytes(b"")
    images, labels = digit_split(train)
    pick = np.random.default_rng(7 if train else 8).integers(0, len(labels), n)  # which digit each stream starts from
    for d in range(10):
        (base / folder / str(d)).mkdir(exist_ok=True)
    t0 = time.perf_counter()
    hashes, n_events = set(), 0
    counts = np.zeros(10, np.int64)
    for start in range(0, n, chunk):
        idx = pick[start:start + chunk]
        streams = make_streams(images[idx], seed=(0 if train else 1_000_000) + start)
        for k, ev in enumerate(streams):
            y = int(labels[idx[k]])
            write_nmnist_bin(base / folder / str(y) / f"{start + k:05d}.bin", ev)
            hashes.add(hashlib.sha1(ev.tobytes()).hexdigest())
            n_events += len(ev)
            counts[y] += 1
        print(f"  {split}: {min(start + chunk, n):,} / {n:,} streams", flush=True)
    return {"split": split, "streams": n, "distinct_streams": len(hashes), "source_digits": int(len(np.unique(pick))),
            "events": n_events, "events_per_stream": round(n_events / n, 1), "per_class": counts.tolist(),
            "write_s": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------- the run
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def make_network(bins: int, seed: int = 0):
    import cil_core as cil
    from cil_spl_speck import make_model

    torch.manual_seed(1000 + seed)  # as cil_spl_speck.py's (c)/(d) init
    snn = make_model("snn", bins)
    with torch.no_grad():
        for n, p in snn.named_parameters():
            if n.endswith("weight"):
                p.mul_(1.8)
    return cil.wrap(snn, input_shape=(2, 34, 34))


class StepTimer:
    """Wraps the registry's ``train_step``: the seconds spent inside training steps (chip forward,
    software forward/backward, optimizer), so that the rest of the epoch's wall time is the data path."""

    def __init__(self, registry) -> None:
        self.inner, self.seconds, self.steps = registry.train_step, 0.0, 0
        registry.train_step = self

    def __call__(self, algorithm, state, batch):
        t0 = time.perf_counter()
        try:
            return self.inner(algorithm, state, batch)
        finally:
            self.seconds += time.perf_counter() - t0
            self.steps += 1


def train(args) -> dict:
    import cil_core as cil
    from cil_speck.data import NMNISTDataset

    torch.set_num_threads(args.threads)
    ds = NMNISTDataset(args.root, train=True, n_bins=args.bins, n_samples=args.n_train, seed=0)
    test = NMNISTDataset(args.root, train=False, n_bins=args.bins, n_samples=args.n_test, seed=0)
    net = make_network(args.bins)
    if args.algorithm == "mh":
        # minibatch MH (issue 19, item 3): Korattikara et al.'s sequential test reads the streams by index
        tr = cil.Trainer(net, "speck", "mh", seed=0, chains=args.chains, burn_in=args.steps // 2,
                         likelihood="sequential", minibatch=args.minibatch, epsilon=args.epsilon,
                         max_samples=args.max_samples)
        fit_kw = {"steps": args.steps}
    else:
        tr = cil.Trainer(net, "speck", "cil-spl", seed=0, lr=2e-3, grad_clip=1.0, num_workers=args.workers)
        fit_kw = {"epochs": 1, "batch_size": args.batch}
    timer = StepTimer(tr.registry)
    rss0 = rss_mb()
    log_path = args.out / f"nmnist_60k{'_' + args.tag if args.tag else ''}.steps.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - one line per step, readable while the run goes on
    n_steps = len(ds) // args.batch + (len(ds) % args.batch > 0) if args.algorithm != "mh" else args.steps

    def on_step(rec: dict) -> None:
        el = time.perf_counter() - t0
        log.write(json.dumps({"step": rec["step"], "of": n_steps, "elapsed_s": round(el, 2),
                              "step_s": round(timer.seconds, 2), "data_path_s": round(el - timer.seconds, 2),
                              "loss": rec["loss"], "rss_mb": round(rss_mb(), 1),
                              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
                  + "\n")
        log.flush()

    t0 = time.perf_counter()
    try:
        hist = tr.fit(ds, **fit_kw, progress=args.progress, on_step=on_step)
    finally:
        log.close()
    wall = time.perf_counter() - t0
    data_s = wall - timer.seconds
    peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    chip = tr.evaluate(test, batch_size=256)
    eval_s = time.perf_counter() - t1
    sw = tr.evaluate_software(test, batch_size=256) if args.software else None
    return {"algorithm": args.algorithm, "n_train": len(ds), "n_test": len(test), "bins": args.bins,
            "batch": args.batch, "workers": args.workers, "torch_threads": args.threads, "steps": len(hist),
            "rss_start_mb": round(rss0, 1), "peak_rss_train_mb": round(peak_train, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "epoch_wall_s": round(wall, 1), "step_s": round(timer.seconds, 1), "data_path_s": round(data_s, 1),
            "data_share": round(data_s / wall, 4), "s_per_1k_streams": round(1000 * wall / len(ds), 2),
            "eval_s": round(eval_s, 1), "chip_accuracy": chip["accuracy"], "chip_silent": chip["silent"],
            "software_accuracy": None if sw is None else sw["accuracy"],
            "final_loss": hist.records[-1]["loss"] if hist.records else None,
            "chip_samples": tr.session.stats.as_dict()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the N-MNIST-format files are (written)")
    ap.add_argument("--write", action="store_true", help="write the files (60,000 train, 10,000 test by default)")
    ap.add_argument("--train", action="store_true", help="train one epoch and evaluate on the test streams")
    ap.add_argument("--n-write-train", type=int, default=60_000)
    ap.add_argument("--n-write-test", type=int, default=10_000)
    ap.add_argument("--n-train", type=int, default=None, help="a seeded random subset of the training streams")
    ap.add_argument("--n-test", type=int, default=None, help="a seeded random subset of the test streams")
    ap.add_argument("--bins", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--software", action="store_true", help="also the software model's test accuracy")
    ap.add_argument("--algorithm", choices=["cil-spl", "mh"], default="cil-spl")
    ap.add_argument("--steps", type=int, default=300, help="MH steps (--algorithm mh)")
    ap.add_argument("--minibatch", type=int, default=64, help="MH's samples per look of the sequential test (--algorithm mh)")
    ap.add_argument("--epsilon", type=float, default=0.1, help="MH's sequential-test level (--algorithm mh)")
    ap.add_argument("--max-samples", type=int, default=512, help="MH's cap on samples per decision (--algorithm mh)")
    ap.add_argument("--chains", type=int, default=4, help="MH's chains (--algorithm mh)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if not (args.write or args.train):
        ap.error("give --write, --train or both")
    result: dict = {"root": str(args.root), "host": {"cpus": os.cpu_count(), "torch": torch.__version__}}
    if args.write:
        result["files"] = [write_split(args.root, "train", args.n_write_train),
                           write_split(args.root, "test", args.n_write_test)]
        print_table(["split", "streams", "distinct", "source digits", "events/stream", "write s"],
                    [[f["split"], f"{f['streams']:,}", f"{f['distinct_streams']:,}", f["source_digits"],
                      f["events_per_stream"], f["write_s"]] for f in result["files"]], title="N-MNIST-format files")
    if args.train:
        r = train(args)
        result["run"] = r
        print_table(["algorithm", "streams", "bins", "steps", "epoch wall s", "data path s", "data share",
                     "s / 1k streams", "peak RSS MiB (main)", "peak RSS MiB (worker)", "chip acc", "sw acc"],
                    [[r["algorithm"], f"{r['n_train']:,}", r["bins"], r["steps"], r["epoch_wall_s"], r["data_path_s"],
                      f"{100 * r['data_share']:.1f} %", r["s_per_1k_streams"], r["peak_rss_mb"],
                      r["peak_rss_workers_mb"], f"{r['chip_accuracy']:.3f}",
                      "-" if r["software_accuracy"] is None else f"{r['software_accuracy']:.3f}"]],
                    title=f"one epoch on speck, {r['n_test']:,} test streams")
        result["load_average"] = os.getloadavg()
    name = "nmnist_60k" + (f"_{args.tag}" if args.tag else "") + ".json"
    write_json(args.out / name, result)
    print(json.dumps({k: v for k, v in result.items() if k != "files"}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
