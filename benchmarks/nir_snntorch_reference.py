"""cil's NIR import against snntorch's own importer (``snntorch.import_nir.import_from_nir``) on
graphs shaped like the NIR paper's braille network (12 inputs → 38 CubaLIF → 7 CubaLIF), written
in snntorch's own export convention (issue 20).

    # snntorch's importer needs nirtorch >= 2.0.5 for recurrent graphs (NIRTorch PR #48); the
    # project pins what sinabs accepts, so run it from a throwaway venv that sees the project's:
    python -m venv /tmp/nirref
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > /tmp/nirref/lib/python3.11/site-packages/zz_project.pth
    /tmp/nirref/bin/pip install --no-deps nirtorch==2.0.5
    /tmp/nirref/bin/python benchmarks/nir_snntorch_reference.py --fixture tests/nir_snntorch_braille.json

**Convention** (snntorch's ``export_nir`` for ``Synaptic`` / ``RSynaptic``, and its importer):
``dt = 1e-4``, :math:`\\tau_{syn} = dt/(1-\\alpha)`, :math:`\\tau_{mem} = dt/(1-\\beta)`,
:math:`r = \\tau_{mem}/dt`, :math:`w_{in} = \\tau_{syn}/dt`, so NIR's forward-Euler CubaLIF is
:math:`i_t = \\alpha i_{t-1} + x_t`, :math:`v_t = \\beta v_{t-1} + i_t`; the **reset is to zero**,
applied in the step of the spike (snntorch imports ``Synaptic(reset_mechanism="zero",
reset_delay=False)``), so cil imports these graphs with ``cil.wrap(graph, dt=1e-4, reset="zero")``
(NIR 1.0's own reset, cil's default, is subtract).

Measured (seed 0, 8 samples x 100 steps of Bernoulli(0.3) input, nirtorch 2.0.5, snntorch 1.0,
nir 1.0.4): the feed-forward graph (fc1 → CubaLIF → fc2 → CubaLIF) is spike-exact; the
recurrent graph (fc1 → CubaLIF ⟲ w_rec → fc2 → CubaLIF, the braille form) is **not**: snntorch's
importer (nirtorch's executor of the recurrent subgraph) differs from cil's import from the first
step on, even with a zero recurrent bias, where NIR's recurrent input at step 0 is
:math:`W z_{-1} = 0` and the hidden layer must equal the feed-forward one; the subgraph form does
not import at all (nirtorch 2.0.2 and 2.0.5: recursion error / no return). cil's recurrent import
follows NIR's equations (``tests/test_nir.py``, against a numpy Euler reference), so the
recurrent comparison is reported, not used as a reference. ``--fixture`` stores the feed-forward
input and snntorch's output (``tests/test_nir.py`` checks cil's import reproduces them).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_output_args, text_table, write_json  # noqa: E402

DT = 1e-4


def braille_graph(seed: int, recurrent: bool, n_in: int = 12, n_h: int = 38, n_out: int = 7, alpha: float = 0.8,
                  beta: float = 0.9, threshold: float = 1.0, rec_bias: bool = True):
    """A braille-shaped NIR graph with seeded weights, its CubaLIF nodes in snntorch's export
    convention (module doc); ``recurrent``: the hidden node has a w_rec edge onto itself (flat form)."""
    import nir

    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 0.6, (n_h, n_in)).astype(np.float32), rng.normal(0, 0.05, n_h).astype(np.float32)
    wr, br = rng.normal(0, 0.3, (n_h, n_h)).astype(np.float32), rng.normal(0, 0.05, n_h).astype(np.float32)
    w2, b2 = rng.normal(0, 0.6, (n_out, n_h)).astype(np.float32), rng.normal(0, 0.05, n_out).astype(np.float32)

    def cuba(n: int):
        a, b = np.full(n, alpha, np.float32), np.full(n, beta, np.float32)
        ts, tm = DT / (1 - a), DT / (1 - b)
        return nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / DT, v_leak=np.zeros(n, np.float32),
                           v_threshold=np.full(n, threshold, np.float32), w_in=ts / DT)

    nodes = {"input": nir.Input(input_type=np.array([n_in])), "fc1": nir.Affine(weight=w1, bias=b1),
             "lif1": cuba(n_h), "fc2": nir.Affine(weight=w2, bias=b2), "lif2": cuba(n_out),
             "output": nir.Output(output_type=np.array([n_out]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    if recurrent:
        nodes["w_rec"] = nir.Affine(weight=wr, bias=br if rec_bias else np.zeros_like(br))
        edges += [("lif1", "w_rec"), ("w_rec", "lif1")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def spikes(seed: int, T: int = 100, B: int = 8, n: int = 12) -> torch.Tensor:
    return (torch.rand(T, B, n, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def pack(spk: torch.Tensor) -> dict:
    """A 0/1 tensor as ``{"shape", "bits"}`` (numpy's packbits, hex): a small JSON fixture."""
    a = spk.detach().to(torch.uint8).numpy()
    assert set(np.unique(a).tolist()) <= {0, 1}
    return {"shape": list(a.shape), "bits": np.packbits(a.reshape(-1)).tobytes().hex()}


def unpack(d: dict) -> torch.Tensor:
    n = int(np.prod(d["shape"]))
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(d["bits"]), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.reshape(d["shape"]).astype(np.float32))


def snntorch_output(graph, x: torch.Tensor) -> torch.Tensor:
    """snntorch's importer's network run step by step (nirtorch's executor carries the state)."""
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # its weight-scale notes
        m = import_from_nir(copy.deepcopy(graph))  # it rewrites the graph it is given
    outs, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            r = m(x[t]) if state is None else m(x[t], state=state)
            if isinstance(r, tuple):
                r, state = r
            outs.append(r)
    return torch.stack(outs)


def cil_output(graph, x: torch.Tensor) -> torch.Tensor:
    import cil_core as cil

    with torch.no_grad():
        return cil.wrap(graph, dt=DT, reset="zero")(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", type=Path, help="store the feed-forward input and snntorch's output here (JSON)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    import nirtorch

    x = spikes(args.seed + 1)
    rows, runs = [], []
    for name, kw in (("feed-forward", dict(recurrent=False)), ("recurrent (w_rec + bias)", dict(recurrent=True)),
                     ("recurrent, zero w_rec bias", dict(recurrent=True, rec_bias=False))):
        g = braille_graph(args.seed, **kw)
        ref, got = snntorch_output(g, x), cil_output(g, x)
        differ = (ref != got)
        steps = differ.flatten(1).any(1)
        first = int(steps.float().argmax()) if bool(steps.any()) else None
        runs.append({"graph": name, "exact": bool(not differ.any()), "differing_fraction": float(differ.float().mean()),
                     "first_differing_step": first, "snntorch_rate": float(ref.mean()), "cil_rate": float(got.mean())})
        rows.append([name, "yes" if not differ.any() else "no", f"{float(differ.float().mean()):.4f}",
                     "-" if first is None else first, f"{float(ref.mean()):.3f}", f"{float(got.mean()):.3f}"])
        if args.fixture is not None and name == "feed-forward":
            from importlib.metadata import version

            write_json(args.fixture, {"seed": args.seed, "dt": DT, "reset": "zero", "x": pack(x), "snntorch_output": pack(ref),
                                      "versions": {k: version(k) for k in ("nirtorch", "snntorch", "nir", "torch")}})
    print(text_table(["graph (braille shape)", "spike-exact", "differing", "first step", "snntorch rate", "cil rate"],
                     rows))
    write_json(args.out / "nir_snntorch_reference.json", {"seed": args.seed, "dt": DT, "reset": "zero", "runs": runs,
                                                          "nirtorch": nirtorch.__version__})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
