"""Whether faster first-layer products would keep MH's parameter sets bit for bit equal to
single-network runs (issue 21, item 3): two candidate kernels checked against the product a
single network computes, ``torch.addmm(b, x_t, W^T)`` (``mm`` without a bias) per time step on
memory of its own, on random shapes of binary (spike) inputs.

1. **Whole batch**: one product over all ``T`` steps at once (``T*B`` rows), split back into steps.
   A shape *differs* when any output of any step is not equal bit for bit.
2. **Sequential sum**: the float32 sum over the inputs in index order, ``y = b + sum_k x_k W_k``
   (with binary inputs each term is a weight or zero, so skipping silent inputs, as a sparse
   event-driven kernel would, gives the same sum). It equals MKL's product only where MKL sums
   that way; a sparse kernel could reproduce the library's products only on those shapes.

Also checks the MH benchmark's own shape (``benchmarks/overhead.py``: the breast-cancer input,
62 → 32, no bias, the network's starting weights). Shapes are drawn with a fixed seed; each
shape's weights are N(0, 0.3²), inputs spike with probability 0.05, 0.2 or 0.5. Writes
``benchmarks/results/product_rounding.json``.

    python benchmarks/product_rounding.py [--shapes 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import random

import torch

from harness import add_output_args, print_table, write_json

BATCHES = (1, 3, 8, 9, 16, 31, 32, 64, 100, 128, 256, 398, 400)
INPUTS = (5, 16, 30, 62, 64, 100, 128, 200, 300)
OUTPUTS = (1, 2, 10, 16, 32, 64, 128)
STEPS = (2, 16)


def per_step(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """What a single network computes: one product per step, on memory of its own."""
    return torch.stack([torch.mm(xt.clone(), wt) if b is None else torch.addmm(b, xt.clone(), wt)
                        for xt in x.unbind(0)])


def whole_batch(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    T, B, K = x.shape
    rows = x.reshape(T * B, K)
    return (torch.mm(rows, wt) if b is None else torch.addmm(b, rows, wt)).view(T, B, -1)


def sequential(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The float32 sum over the inputs in index order, then the bias (vectorized over rows and outputs)."""
    acc = torch.zeros(*x.shape[:-1], wt.shape[1], dtype=wt.dtype)
    for k in range(x.shape[-1]):
        acc = acc + x[..., k:k + 1] * wt[k]
    return acc if b is None else acc + b


def random_shapes(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"T": rng.choice(STEPS), "B": rng.choice(BATCHES), "K": rng.choice(INPUTS), "N": rng.choice(OUTPUTS),
             "bias": rng.random() < 0.5, "density": rng.choice((0.05, 0.2, 0.5))} for _ in range(n)]


def check(shape: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape["T"], shape["B"], shape["K"], generator=g) < shape["density"]).float()
    w = torch.randn(shape["N"], shape["K"], generator=g) * 0.3
    b = torch.randn(shape["N"], generator=g) if shape["bias"] else None
    ref = per_step(x, w.t(), b)
    return {**shape, "whole_batch_equal": bool(torch.equal(whole_batch(x, w.t(), b), ref)),
            "sequential_equal": bool(torch.equal(sequential(x, w.t(), b), ref))}


def benchmark_shape() -> dict:
    """overhead.py's MH network: the breast-cancer spikes through the starting 62 → 32 weights."""
    from cil_core.data import as_dense
    from cil_core.data.breast_cancer import load_breast_cancer_spikes
    from cil_core.network.reference import feedforward

    data = load_breast_cancer_spikes()
    x = as_dense(data.train.x)
    net = feedforward([data.n_inputs, 32, 2], seed=0, weight_gain=2.0)
    first = net.spec.layers[0]
    params = net.detached_parameters()
    w = params[first.weight]
    b = None if first.bias is None else params[first.bias]
    ref = per_step(x, w.t(), b)
    return {"shape": list(x.shape) + [w.shape[0]], "bias": b is not None, "outputs": ref.numel(),
            "input_density": float(x.mean()),
            "whole_batch_differing_outputs": int((whole_batch(x, w.t(), b) != ref).sum()),
            "sequential_differing_outputs": int((sequential(x, w.t(), b) != ref).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = [check(s, a.seed * 100_003 + i) for i, s in enumerate(random_shapes(a.shapes, a.seed))]
    bench = benchmark_shape()

    def share(pred) -> tuple[int, int]:
        sel = [r for r in rows if pred(r)]
        return sum(not r["whole_batch_equal"] for r in sel), sum(not r["sequential_equal"] for r in sel)

    groups = {"all shapes": lambda r: True,
              "batch a multiple of 4": lambda r: r["B"] % 4 == 0,
              "batch not a multiple of 4": lambda r: r["B"] % 4 != 0,
              "fewer than 128 inputs, more than 1 output": lambda r: r["K"] < 128 and r["N"] > 1,
              "128 or more inputs": lambda r: r["K"] >= 128,
              "1 output": lambda r: r["N"] == 1}
    summary = {}
    for name, pred in groups.items():
        n = sum(pred(r) for r in rows)
        wb, sq = share(pred)
        summary[name] = {"shapes": n, "whole_batch_differs": wb, "sequential_differs": sq}
    print_table(["shapes", "n", "whole batch differs", "sequential sum differs"],
                [[k, v["shapes"], v["whole_batch_differs"], v["sequential_differs"]] for k, v in summary.items()],
                f"Against the per-step product a single network computes ({a.threads} thread(s), "
                f"{a.shapes} random shapes, seed {a.seed})")
    print_table(["", "outputs that differ"],
                [["whole batch", f"{bench['whole_batch_differing_outputs']} of {bench['outputs']}"],
                 ["sequential sum", f"{bench['sequential_differing_outputs']} of {bench['outputs']}"]],
                f"The MH benchmark's shape {bench['shape']} (T, B, inputs, outputs), bias: {bench['bias']}, "
                f"input density {bench['input_density']:.3f}")
    write_json(a.out / "product_rounding.json",
               {"threads": a.threads, "seed": a.seed, "torch": torch.__version__, "summary": summary,
                "benchmark_shape": bench, "shapes": rows})


if __name__ == "__main__":
    main()
