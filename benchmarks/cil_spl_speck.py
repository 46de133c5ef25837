"""CIL-SPL re-creation (Liu et al. 2024) on the Speck-style event-driven chip.

    python benchmarks/cil_spl_speck.py --quick     # < 10 min on 2 cores
    python benchmarks/cil_spl_speck.py             # full: 3 seeds (the mala cases take the longest; see docs/results.md)
    python benchmarks/cil_spl_speck.py --methods ann2snn,ann2snn-qat,bptt,cil-spl-bptt,cil-spl-ann,mala-bptt
                                                   # every method but (g), mala from the random init
    python benchmarks/cil_spl_speck.py --docs      # full; also rewrites the cil-spl section of docs/results.md
    python benchmarks/cil_spl_speck.py --resume    # after an interruption: only the missing cases run
    python benchmarks/cil_spl_speck.py --runner ray --address HOST:PORT   # one Ray task per case (cil-ray)

Needs the ``cil-sinabs`` (sinabs models) and ``cil-speck`` (chip, synthetic data) plugins and
matplotlib. Writes ``benchmarks/results/cil_spl_speck[_quick].json`` and
``speck_cil_spl[_quick].png`` (``--out`` to change the folder); ``--docs`` also copies the figure
to ``docs/img/speck_cil_spl.png``.

The cases (method x seed) are the points of a ``cil sweep`` (:func:`cil_core.app.sweep.run_sweep`):
each finished case is appended to ``cil_spl_speck[_quick].jsonl`` under ``--out``; ``--resume``
keeps the cases already there (same settings; with ``--methods`` the listed methods run and the
tables show every method the file has cases of), ``--runner ray`` runs them as Ray tasks and
``--workers N`` as N local processes (default: one after the other in this process). Every case
is self-contained: (e) trains (a)'s ANN again (same seed, same result), (c) and (d) build the
same initial SNN.

Network (fits the chip: 6 chip layers, no biases): input sum pooling 2x2 (34x34 → 17x17, the
sensor layer's pooling), then 5 spiking conv layers and 1 fully connected layer::

    SumPool2d(2) → Conv(2→c1, 3x3, p1) IAF → AvgPool2d(2) → Conv(c1→c2, 3x3, p1) IAF
    → Conv(c2→c3, 3x3, s2, p1) IAF → Conv(c3→c4, 3x3, p1) IAF → Conv(c4→c5, 3x3, s2, p1) IAF
    → Flatten → Linear(c5·2·2 → 10) IAF

sinabs ``IAFSqueeze`` neurons (MultiSpike, subtract reset, threshold 1). Readout: spike counts →
softmax cross entropy. Data: the **synthetic** N-MNIST-like digits of :mod:`cil_speck.data` (or
N-MNIST with ``--nmnist ROOT`` when present).

Methods (software accuracy = time-stepped sinabs-equivalent model on the dense bins; chip accuracy
= event-driven ``speck`` backend on the raw events):

(a) ``ann2snn``: ReLU CNN trained on event rates, converted (data-based layer normalisation with
    the 95th percentile of each layer's positive activations: with only T = 8 bins the usual 99.9th
    percentile leaves the deep layers nearly silent), deployed with threshold 1;
(b) ``ann2snn-qat``: the same, with the weights fake-quantized to 8 bits per layer during training;
(c) ``bptt``: the SNN trained with BPTT (surrogate gradients) in software, deployed;
(d) ``cil-spl-bptt``: the same SNN, same init, data and epochs, trained with CIL-SPL: forward on
    the chip, backward through the time-stepped software graph (``cil_core`` ``cil-spl``);
(e) ``cil-spl-ann``: (a) fine-tuned with ``cil-spl`` and the ANN as its ``proxy``: the loss is on
    the chip's spike counts (scaled by the last layer's normalisation factor), the gradients go
    through the ANN, and the chip runs the converted ANN weights;
(f) ``mala-bptt``: gradient-informed MH (``cil_core`` ``mala``, issue 21) started from (c)'s
    software-trained weights: the case first trains (c) again (same seed, init, data and epochs:
    the same BPTT in software, zero chip calls), then fits ``mala`` with ``init="network"`` from
    those weights with **the same number of chip calls as (d)** (counted from the trainers' session
    counters and printed in a calls table; the software phase's count is recorded too): one call
    for the starting states' gradients, ``steps`` calls, one deployment call. Its guided burn-in
    scores each step on a fresh random subset of training samples (``burn_in_minibatch``: the
    chains' current states and proposals on the same subset, one call); the last
    ``mala_post_steps`` steps are exact MALA moves on the whole training set. Its options
    (``MALA_WARM_OPTIONS``) were chosen on seed 0 with training data only (a held-out part of the
    training set), never the test split;
(g) ``mala``: the same sampler from the random init of (c) and (d) (``init="network"``) with the
    options ``MALA_OPTIONS``, the same chip-call budget. It reads more samples per call than (d)
    (2 x chains x subset per burn-in call; chains x N after it): the sample-inferences per method
    are in the calls table;
(h) ``mala-warm``: ``mala`` from the same random init with the options the analog re-creation
    recommends (``MALA_RECOMMENDED_OPTIONS``: one chain warm-started in software by the algorithm
    itself with (c)'s recipe, ``warm_recipe``; ``warm_moves="auto"``: with this minibatch burn-in it
    moves with (f)'s guided moves, as the other chain; the restart at the end of burn-in keeps it
    unless the chip refutes it); (d)'s chip calls.
"""

from __future__ import annotations

import argparse
import base64
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cil_core.hardware.transfer import quantize_symmetric, straight_through
from cil_core.training.langevin import recommended_options
from cil_core.app.sweep import Point, fingerprint, point_key, read_results, run_sweep
from harness import (add_output_args, add_sweep_args, markdown_table, publish_figures, read_json, runner_options,
                     save_figure, write_docs_section, write_json)

SECTION = "cil-spl"
METHODS = ["ann2snn", "ann2snn-qat", "bptt", "cil-spl-bptt", "cil-spl-ann", "mala-bptt", "mala", "mala-warm"]
LABELS = {"ann2snn": "(a) CNN→SNN conversion", "ann2snn-qat": "(b) conversion + QAT", "bptt": "(c) SNN BPTT",
          "cil-spl-bptt": "(d) CIL-SPL + BPTT", "cil-spl-ann": "(e) CIL-SPL + ANN-to-SNN",
          "mala-bptt": "(f) MALA from (c)'s BPTT weights", "mala": "(g) MALA from the random init",
          "mala-warm": "(h) MALA with its software warm start, from the random init"}
#: the methods every summary needs (the verdicts compare them)
REQUIRED = ("bptt", "cil-spl-bptt")
WEIGHT_BITS = 8  # the chip's weight precision (per-layer symmetric scale)
#: (g)'s guided burn-in moves (chosen on seed 0 with a held-out part of the training set): one
#: RMS-normalised gradient step on the whole network per request, with a tenth of the noise, its
#: step adapted toward acceptance 0.5. Part of the mala cases' keys (a change reruns them only).
MALA_OPTIONS = {"guided_block": "network", "guided_noise": 0.1, "langevin_target": 0.5}
#: (f)'s options, from (c)'s trained weights: (g)'s, without noise in the guided moves (a plain
#: RMS-normalised gradient step on the whole network, checked on the chip). Chosen on seed 0 with
#: training data only (BPTT on 1,000 training samples, accuracy on the other 258; docs/results.md);
#: part of the mala-bptt cases' keys.
MALA_WARM_OPTIONS = {"guided_block": "network", "guided_noise": 0.0, "langevin_target": 0.5}
#: (h)'s options: (f)'s moves with the options the analog re-creation recommends (README): one of the two
#: chains starts from the network trained in software by the algorithm itself (``warm_start``, with
#: (c)'s recipe, ``warm_recipe``), moves as ``warm_moves="auto"`` says (here, with a minibatch burn-in: the
#: guided moves), and the restart at the end of burn-in keeps
#: it unless the other chain's chip accuracy is better by more than 2 standard errors.
MALA_RECOMMENDED_OPTIONS = {**MALA_WARM_OPTIONS, **recommended_options(2)}  # the config's 2 chains (mala_chains)
#: the cases' extra key entries (their options): a change reruns only that method's cases
CASE_OPTIONS = {"mala": {"mala_options": MALA_OPTIONS}, "mala-bptt": {"mala_options": MALA_WARM_OPTIONS},
                "mala-warm": {"mala_options": MALA_RECOMMENDED_OPTIONS}}


def make_model(kind: str, T: int, channels=(8, 16, 16, 32, 32), n_classes: int = 10) -> nn.Sequential:
    """``kind="snn"``: sinabs IAFSqueeze neurons; ``kind="ann"``: ReLU (last layer: identity).
    Both have the same module indices, so parameter names match."""
    import sinabs.layers as sl

    c1, c2, c3, c4, c5 = channels
    act = (lambda: sl.IAFSqueeze(num_timesteps=T)) if kind == "snn" else nn.ReLU
    last = (lambda: sl.IAFSqueeze(num_timesteps=T)) if kind == "snn" else nn.Identity
    return nn.Sequential(
        sl.SumPool2d(2),
        nn.Conv2d(2, c1, 3, padding=1, bias=False), act(), nn.AvgPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False), act(),
        nn.Conv2d(c2, c3, 3, stride=2, padding=1, bias=False), act(),
        nn.Conv2d(c3, c4, 3, padding=1, bias=False), act(),
        nn.Conv2d(c4, c5, 3, stride=2, padding=1, bias=False), act(),
        nn.Flatten(), nn.Linear(c5 * 2 * 2, n_classes, bias=False), last(),
    )


def _weights(m: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in m.named_parameters() if n.endswith("weight")]


# ----------------------------------------------------------------------------- ANN side
def ann_forward(ann: nn.Sequential, x: torch.Tensor, qat: bool = False, record: bool = False):
    """ANN forward on rate images ``[B, 2, 34, 34]``; with ``qat`` every weight is fake-quantized
    to the chip's per-layer 8-bit grid (straight-through). Returns logits (and activations)."""
    acts = []
    h = x
    for m in ann:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            if qat:
                q, s = quantize_symmetric(w, WEIGHT_BITS)
                w = straight_through(w, q * s)
            h = F.conv2d(h, w, None, m.stride, m.padding) if isinstance(m, nn.Conv2d) else F.linear(h, w)
        else:
            h = m(h)
        if isinstance(m, (nn.ReLU, nn.Identity)):
            acts.append(h)
    return (h, acts) if record else h


def train_ann(ann, x_rate, y, epochs, lr, seed, qat=False, batch=64):
    opt = torch.optim.Adam(ann.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            loss = F.cross_entropy(ann_forward(ann, x_rate[idx], qat), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ann


@torch.no_grad()
def conversion_factors(ann, x_rate, pct=95.0) -> list[float]:
    """Data-based normalisation (Rueckauer et al. 2017): the ``pct`` percentile of every layer's
    positive activations (sampled: at most 100k values per layer)."""
    _, acts = ann_forward(ann, x_rate, record=True)
    out = []
    for a in acts:
        pos = a[a > 0]
        out.append(float(torch.quantile(pos[:100_000], pct / 100)) if pos.numel() else 1.0)
    return out


@torch.no_grad()
def converted_weights(ann: nn.Module, lambdas: list[float]) -> dict[str, torch.Tensor]:
    """The SNN weights of the converted ANN: layer ``l`` scaled by ``λ_{l-1} / λ_l`` (λ_0 = 1)."""
    prev, out = 1.0, {}
    for (name, w), lam in zip(_weights(ann), lambdas):
        out[name] = w * prev / lam
        prev = lam
    return out


@torch.no_grad()
def ann_to_snn(ann, snn, lambdas: list[float]) -> None:
    """Copy the converted ANN weights into the SNN (same parameter names)."""
    snn_w = dict(_weights(snn))
    for name, w in converted_weights(ann, lambdas).items():
        snn_w[name].copy_(w)


class AnnProxy(nn.Module):
    """The ANN as the ``cil-spl`` proxy of method (e): its outputs ``a = ann(mean_t x)`` are the
    per-class output rates in the units of a rate readout with scale ``λ_L / T`` (the converted
    SNN fires about ``a / λ_L`` spikes per step), and the converted weights are what the chip
    runs (``network_parameters``)."""

    def __init__(self, ann: nn.Sequential, lambdas: list[float]) -> None:
        super().__init__()
        self.ann, self.lambdas = ann, list(lambdas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ann_forward(self.ann, x.mean(0))

    def network_parameters(self) -> dict[str, torch.Tensor]:
        return converted_weights(self.ann, self.lambdas)


# ----------------------------------------------------------------------------- runs
def _accs(trainer, test) -> tuple[float, float]:
    sw = trainer.evaluate_software(test, batch_size=128)["accuracy"]
    hw = trainer.evaluate(test, batch_size=128)["accuracy"]
    return float(sw), float(hw)


_DATA: dict[tuple, tuple] = {}


def load_data(spec: dict[str, Any]) -> tuple[Any, Any, str]:
    """Train and test data of the benchmark (cached per process: every case of a worker shares them)."""
    key = tuple(sorted(spec.items()))
    if key not in _DATA:
        from cil_speck.data import load_nmnist, synthetic_nmnist

        if spec["nmnist"]:
            train = load_nmnist(spec["nmnist"], True, spec["T"], spec["n_train"], seed=0)
            test = load_nmnist(spec["nmnist"], False, spec["T"], spec["n_test"], seed=0)
            dataset = "N-MNIST"
        else:
            train = synthetic_nmnist(True, spec["T"], spec["n_train"])
            test = synthetic_nmnist(False, spec["T"], spec["n_test"])
            dataset = "synthetic N-MNIST-like digits (sklearn load_digits + simulated saccades/DVS)"
        _DATA[key] = (train, test, dataset)
    return _DATA[key]


def _trained_ann(seed: int, x_rate, y, cfg: dict[str, Any], qat: bool):
    """The ANN of (a) (``qat=False``) or (b), and its conversion factors."""
    torch.manual_seed(seed)  # same ANN init for (a), (b) and (e)
    ann = train_ann(make_model("ann", cfg["T"], cfg["channels"]), x_rate, y, cfg["ann_epochs"], cfg["ann_lr"], seed,
                    qat)
    return ann, conversion_factors(ann, x_rate)


def _init_snn(seed: int, cfg: dict[str, Any]) -> nn.Sequential:
    """The random initial SNN of (c), (d) and (f): the same weights for one seed."""
    torch.manual_seed(1000 + seed)
    snn = make_model("snn", cfg["T"], cfg["channels"])
    with torch.no_grad():
        for _, w in _weights(snn):
            w.mul_(cfg["init_gain"])
    return snn


def chip_budget(cfg: dict[str, Any]) -> int:
    """(d)'s chip calls: one per step, ``snn_epochs`` passes of ``ceil(n_train / batch)`` steps."""
    return cfg["snn_epochs"] * -(-cfg["n_train"] // cfg["batch"])


def _digest(m: nn.Module) -> str:
    """A digest of a model's weights: (f)'s starting weights against (c)'s trained ones (same seed)."""
    import hashlib

    return hashlib.sha256(b"".join(w.detach().numpy().tobytes() for _, w in _weights(m))).hexdigest()[:16]


def mala_options(cfg: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``mala`` options of (f), (g) and (h): ``init="network"``, (d)'s chip budget less the starting
    states' gradients and the deployment call as steps (burn-in then ``mala_post_steps`` exact steps),
    the config's chains, subset and layer choice, with a warm start (h) its ``warm_recipe``, then the
    method's own ``options`` over them."""
    return {"init": "network", "chains": cfg["mala_chains"], "burn_in": chip_budget(cfg) - 2 - cfg["mala_post_steps"],
            "burn_in_minibatch": cfg["mala_minibatch"], "layer_choice": cfg["mala_layer_choice"],
            **(warm_recipe(cfg) if options.get("warm_start") else {}), **options}


def warm_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """A ``mala`` warm start that is (c)'s training: Adam at ``snn_lr``, minibatches of ``batch``, the
    gradient clipped at ``grad_clip``, ``snn_epochs`` passes' worth of steps (its own minibatch order)."""
    return {"warm_steps": chip_budget(cfg), "warm_lr": cfg["snn_lr"], "warm_batch": cfg["batch"],
            "warm_grad_clip": cfg["grad_clip"]}


def _counts(tr) -> dict[str, int]:
    st = tr.session.stats
    return {"chip_calls": st.calls_by_purpose.get("train", 0), "chip_samples": st.samples.get("train", 0)}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One point of the sweep: one method on one seed. Returns the accuracies (software, chip), and
    for (c) and (d) the fidelity report and the normalised weights (float32, base64)."""
    import cil_core as cil

    method, seed, cfg = case["method"], case["seed"], case["cfg"]
    train, test, _ = load_data(case["data"])
    T = cfg["T"]
    x_rate = train.x.dense.mean(0)
    y = train.y
    out: dict[str, Any] = {}

    def snn_trainer(model, algorithm, **kw):
        net = cil.wrap(model, input_shape=(2, 34, 34))
        return cil.Trainer(net, "speck", algorithm, seed=seed, **kw)

    def snn_fit(model, algorithm):  # (c)'s and (d)'s training, and (f)'s software phase: one setting
        tr = snn_trainer(model, algorithm, lr=cfg["snn_lr"], grad_clip=cfg["grad_clip"])
        tr.fit(train, epochs=cfg["snn_epochs"], batch_size=cfg["batch"])
        return tr

    if method in ("ann2snn", "ann2snn-qat"):  # (a), (b): conversion, with and without QAT
        ann, lambdas = _trained_ann(seed, x_rate, y, cfg, qat=method == "ann2snn-qat")
        snn = make_model("snn", T, cfg["channels"])
        ann_to_snn(ann, snn, lambdas)
        out["accuracy"] = _accs(snn_trainer(snn, "offline"), test)
    elif method in ("bptt", "cil-spl-bptt"):  # (c), (d): BPTT vs CIL-SPL (BPTT proxy), same init, data and budget
        snn = _init_snn(seed, cfg)
        tr = snn_fit(snn, "offline" if method == "bptt" else "cil-spl")
        if method == "bptt":
            out["start_digest"] = _digest(snn)
        out["accuracy"] = _accs(tr, test)
        out.update(_counts(tr))
        # the fidelity report on the chip: before in-the-loop training (plain BPTT) and after (CIL-SPL)
        rep = cil.fidelity(tr.network, "speck", test, batch_size=128)
        out["fidelity"] = {"agreement": rep.agreement,
                           "layers": [{"name": lf.name, "correlation": lf.correlation, "rate_error": lf.rate_error,
                                       "distortion": lf.distortion, "local_distortion": lf.local_distortion,
                                       "first_divergence": lf.first_divergence} for lf in rep.layers],
                           "most_distorted": rep.most_distorted}
        w = np.concatenate([w.detach().numpy().ravel() / float(w.detach().abs().max()) for _, w in _weights(snn)])
        out["weights"] = base64.b64encode(w.astype(np.float32).tobytes()).decode()
    elif method == "cil-spl-ann":
        # (e): CIL-SPL with the ANN as proxy, starting from (a). Rate readout scaled by λ_L / T: the
        # logits are λ_L times the chip's output rate, the ANN's output scale; the loss is
        # cross_entropy(a + sg[λ_L * counts / T - a]).
        ann, lambdas = _trained_ann(seed, x_rate, y, cfg, qat=False)
        torch.manual_seed(2000 + seed)
        snn = make_model("snn", T, cfg["channels"])
        tr = snn_trainer(snn, "cil-spl", proxy=AnnProxy(ann, lambdas), readout=cil.Readout("rate", lambdas[-1] / T),
                         lr=cfg["cil_ann_lr"])
        tr.fit(train, epochs=cfg["cil_ann_epochs"], batch_size=cfg["batch"])
        out["accuracy"] = _accs(tr, test)
        out.update(_counts(tr))
    elif method in ("mala", "mala-bptt", "mala-warm"):  # (g), (h): (d)'s init; (f): (c)'s trained weights; (d)'s calls
        budget = chip_budget(cfg)
        steps = budget - 2  # + the starting states' gradients + the deployment call
        snn = _init_snn(seed, cfg)
        if method == "mala-bptt":  # the software phase: (c)'s BPTT again (same seed, same result), no chip call
            sw = snn_fit(snn, "offline")
            out["software_phase_chip_calls"] = _counts(sw)["chip_calls"]
            out["start_digest"] = _digest(snn)
        tr = snn_trainer(snn, "mala", **mala_options(cfg, case.get("mala_options", {})))
        tr.fit(train, steps=steps)
        out["accuracy"] = _accs(tr, test)
        out.update(_counts(tr))
        out["budget"] = budget  # (d)'s calls; the calls table shows what (f) made
        a = tr.algorithm
        out["mala"] = {"acceptance": a.acceptance_rate, "langevin_proposals": a.langevin_proposals,
                       "langevin_accepts": a.langevin_accepts, "fallback_proposals": a.fallback_proposals,
                       "langevin_share": a.share.tolist(), "beta": a.beta.tolist(),
                       "train_accuracy_end": float(a.acc.mean()), "restart_chain": a.restart_chain,
                       "warm_start": a.warm_start}
    else:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    return out


def case_points(methods: list[str], seeds: int, cfg: dict[str, Any], data: dict[str, Any]) -> list[Point]:
    """The sweep's points: one per method and seed (seed-major, methods in the given order). A
    case's key is its method, seed and the method's options (``CASE_OPTIONS``): a change of those
    options makes new keys, so only that method's cases run again."""
    def key(m: str, seed: int) -> dict[str, Any]:
        return {"method": m, "seed": seed, **CASE_OPTIONS.get(m, {})}

    return [Point(point_key(key(m, seed)), {"method": m, "seed": seed}, {**key(m, seed), "cfg": cfg, "data": data})
            for seed in range(seeds) for m in methods]


def table_records(ran: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]], points: list[Point],
                  base: str) -> dict[str, dict[str, Any]]:
    """The records the tables show: ``ran`` (this run's sweep records, the methods of ``--methods``)
    and, for the other ``points`` (every method x seed), the records of the results file ``stored``
    (:func:`~cil_core.app.sweep.read_results`) computed with the same settings (same key, i.e. the
    same method options, and the same ``base`` fingerprint). So ``--methods a,b --resume`` reruns
    a and b and still tabulates the methods an earlier run left in the file; records are used as
    they are (no figure is recomputed)."""
    out = {}
    for p in points:
        if p.key in ran:
            out[p.key] = ran[p.key]
        elif p.key in stored and stored[p.key].get("base", "") == base:
            out[p.key] = stored[p.key]
    return out


def collect(records: dict[str, dict[str, Any]], points: list[Point], seeds: int) -> list[dict[str, Any]]:
    """The per-seed runs (accuracy per method, weights and fidelity of (c) and (d), chip calls and
    sample-inferences) from the sweep's records; points without a record are left out (a method
    absent on some seed is then left out of the tables by :func:`present`)."""
    runs: list[dict[str, Any]] = [{"accuracy": {}, "weights": {}, "fidelity": {}, "calls": {}, "seconds": {},
                                   "digest": {}, "mala": {}, "software_phase_chip_calls": {}} for _ in range(seeds)]
    for p in points:
        if p.key not in records:
            continue
        m = records[p.key]["metrics"]
        r = runs[p.options["seed"]]
        r["accuracy"][p.options["method"]] = tuple(m["accuracy"])
        r["seconds"][p.options["method"]] = records[p.key].get("seconds")
        if "chip_calls" in m:
            r["calls"][p.options["method"]] = (m["chip_calls"], m["chip_samples"])
        for field, k in (("start_digest", "digest"), ("mala", "mala"),
                         ("software_phase_chip_calls", "software_phase_chip_calls")):
            if field in m:
                r[k][p.options["method"]] = m[field]
        if "weights" in m:
            r["weights"][p.options["method"]] = np.frombuffer(base64.b64decode(m["weights"]), dtype=np.float32)
            r["fidelity"][p.options["method"]] = m["fidelity"]
    return runs


def fidelity_table(runs: list[dict]) -> str:
    """Per chip layer: spike-count correlation and distortion (mean over seeds) after plain BPTT
    (chip not in the loop) and after CIL-SPL."""
    names = [lf["name"] or f"layer {k}" for k, lf in enumerate(runs[0]["fidelity"]["bptt"]["layers"])]

    def cell(method: str, k: int, key: str) -> str:
        v = [r["fidelity"][method]["layers"][k][key] for r in runs]
        v = [x for x in v if x is not None]
        return f"{np.mean(v):.2f}" if v else "n/a"

    rows = [[n, cell("bptt", k, "correlation"), cell("cil-spl-bptt", k, "correlation"),
             cell("bptt", k, "local_distortion"), cell("cil-spl-bptt", k, "local_distortion")]
            for k, n in enumerate(names)]
    agree = [f"{np.mean([r['fidelity'][m]['agreement'] for r in runs]):.3f}" for m in ("bptt", "cil-spl-bptt")]
    rows.append(["output agreement (same class)", agree[0], agree[1], "", ""])
    return markdown_table(["neuron layer (spec index)", "correlation (c) BPTT", "correlation (d) CIL-SPL",
                           "local distortion (c)", "local distortion (d)"], rows)


def present(runs: list[dict]) -> list[str]:
    """The methods (in table order) that every seed ran."""
    return [m for m in METHODS if all(m in r["accuracy"] for r in runs)]


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for m in present(runs):
        sw = np.array([r["accuracy"][m][0] for r in runs])
        hw = np.array([r["accuracy"][m][1] for r in runs])
        deg = sw - hw
        out[m] = {"software_mean": float(sw.mean()), "software_std": float(sw.std(ddof=1) if len(sw) > 1 else 0.0),
                  "chip_mean": float(hw.mean()), "chip_std": float(hw.std(ddof=1) if len(hw) > 1 else 0.0),
                  "degradation_mean": float(deg.mean()), "degradation_std": float(deg.std(ddof=1) if len(deg) > 1 else 0.0),
                  "software": sw.tolist(), "chip": hw.tolist()}
    return out


def table(summary: dict) -> str:
    def pm(s, key):
        return f"{100 * s[f'{key}_mean']:.1f} ± {100 * s[f'{key}_std']:.1f}"

    return markdown_table(["method", "software acc. (%)", "chip acc. (%)", "degradation (pp)"],
                          [[LABELS[m], pm(summary[m], "software"), pm(summary[m], "chip"), pm(summary[m], "degradation")]
                           for m in summary])


def calls_table(runs: list[dict]) -> str:
    """Chip calls and sample-inferences (samples x parameter sets) per training fit, mean over seeds,
    and the wall time per case, from the trainers' session counters."""
    rows = []
    for m in present(runs):
        c = [r["calls"][m] for r in runs if m in r["calls"]]
        sec = [r["seconds"][m] for r in runs if r["seconds"].get(m) is not None]
        if not c or not np.mean([x[0] for x in c]):
            calls = "0" if m in ("ann2snn", "ann2snn-qat", "bptt") else "n/a"
            rows.append([LABELS[m], calls, calls, "", f"{np.mean(sec):.0f}" if sec else ""])
            continue
        n_calls, n_samples = np.mean([x[0] for x in c]), np.mean([x[1] for x in c])
        rows.append([LABELS[m], f"{n_calls:.0f}", f"{n_samples:,.0f}", f"{n_samples / n_calls:,.0f}",
                     f"{np.mean(sec):.0f}" if sec else ""])
    return markdown_table(["method", "chip calls (training)", "sample-inferences (training)", "per call",
                           "wall s per case"], rows)


def mala_verdict(summary: dict, runs: list[dict]) -> str:
    """Issue 21's speck criterion: `mala` ≥ (d) − 1 point in mean chip accuracy, with the per-seed
    figures, for (f) (from (c)'s weights), (g) and (h) (from the random init), whichever ran; and
    whether (f) started from exactly (c)'s weights on every seed."""
    d = summary["cil-spl-bptt"]["chip_mean"]
    parts = []
    for m in ("mala-bptt", "mala", "mala-warm"):
        if m not in summary:
            continue
        f, tag = summary[m]["chip_mean"], LABELS[m].split(" ", 1)[0]
        per_seed = ", ".join(f"seed {k}: {100 * r['accuracy'][m][1]:.1f} vs {100 * r['accuracy']['cil-spl-bptt'][1]:.1f}"
                             for k, r in enumerate(runs))
        ok = f >= d - 0.01
        parts.append(f"MALA {tag} reaches {100 * f:.1f} % chip accuracy against CIL-SPL (d)'s {100 * d:.1f} % with the "
                     f"same chip calls ({100 * (f - d):+.1f} pp; issue 21's criterion, ≥ (d) − 1 point: "
                     f"{'met' if ok else 'NOT met'}); per seed {tag} vs (d): {per_seed}.")
    if "mala-bptt" in summary:
        same = all(r["digest"].get("mala-bptt") == r["digest"].get("bptt") for r in runs)
        calls = sorted({r["software_phase_chip_calls"].get("mala-bptt") for r in runs}, key=str)
        parts.append(f"(f)'s starting weights are (c)'s trained weights bit for bit on "
                     f"{'every seed' if same else 'NOT every seed'} (weight digests compared); its software phase "
                     f"made {', '.join(map(str, calls))} chip calls.")
    return " ".join(parts)


def figure(summary: dict, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    methods = list(summary)
    xs = np.arange(len(methods))
    for off, key, lab in ((-0.2, "software", "software (time-stepped)"), (0.2, "chip", "chip (event-driven)")):
        ax[0].bar(xs + off, [100 * summary[m][f"{key}_mean"] for m in methods], 0.4,
                  yerr=[100 * summary[m][f"{key}_std"] for m in methods], label=lab, capsize=3)
    ax[0].set_xticks(xs, [LABELS[m].split(" ", 1)[0] for m in methods])
    ax[0].set_ylabel("test accuracy (%)")
    ax[0].set_title("synthetic N-MNIST-like digits: software vs chip")
    ax[0].legend(loc="lower right")
    bins = np.linspace(-1, 1, 81)
    for m, c in (("bptt", "C0"), ("cil-spl-bptt", "C3")):
        w = np.concatenate([r["weights"][m] for r in runs])
        ax[1].hist(w, bins=bins, histtype="step", color=c, label=LABELS[m], density=True)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("weight / max |weight| of its layer (1 = int8 code 127)")
    ax[1].set_title("weight distribution after training")
    ax[1].legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data and budget (< 10 min on 2 cores)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nmnist", default=None, help="root holding NMNIST/ (tonic layout); default: synthetic digits")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and numba threads per case (default: torch's, one per core). Give 1 when other "
                    "processes or --workers share the cores (two mala cases at once with 2 threads each on 2 cores ran "
                    "several times slower than with 1). The figures depend on it (torch's float sums: (g) 88.3 %% at 1 "
                    "thread, 90.7 %% at 2): a results file keeps one value, --resume at another is refused")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated methods to run (default: all: {','.join(METHODS)}); "
                    f"{' and '.join(REQUIRED)} are always needed. With --resume the cases already in the JSON Lines "
                    "file are kept, so changing one method's options reruns only its cases, and the tables show every method "
                    "with cases of the same settings in the file, not only these")
    add_sweep_args(ap, workers=1)
    add_output_args(ap, docs_section=SECTION)
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or any(m not in methods for m in REQUIRED):
        ap.error(f"--methods: {'unknown ' + ', '.join(unknown) if unknown else 'missing ' + ', '.join(REQUIRED)} "
                 f"(choose from {', '.join(METHODS)}; {' and '.join(REQUIRED)} are required)")
    methods = [m for m in METHODS if m in methods]
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(T=8, channels=(8, 16, 16, 32, 32), batch=64, ann_epochs=30, ann_lr=3e-3, snn_epochs=8, snn_lr=2e-3,
               grad_clip=1.0, init_gain=1.8, cil_ann_epochs=2, cil_ann_lr=3e-4, n_train=1258, n_test=539,
               mala_chains=2, mala_minibatch=32, mala_post_steps=2, mala_layer_choice="uniform")
    if args.quick:
        cfg.update(n_train=384, n_test=256, ann_epochs=15, snn_epochs=6, cil_ann_epochs=1)

    t_start = time.perf_counter()
    data = {"nmnist": args.nmnist, "T": cfg["T"], "n_train": cfg["n_train"], "n_test": cfg["n_test"]}
    train, test, dataset = load_data(data)
    print(f"data: {dataset}: {len(train)} train / {len(test)} test, T={cfg['T']} bins "
          f"({time.perf_counter() - t_start:.1f}s)")
    # every case (method x seed) is one point of a cil sweep: one JSON line per finished case, --resume skips them
    points = case_points(methods, args.seeds, cfg, data)
    base = fingerprint({"cfg": cfg, "data": data})
    suffix = "_quick" if args.quick else ""
    jsonl = args.out / f"cil_spl_speck{suffix}.jsonl"

    def show(point: Point, rec: dict) -> None:
        sw, hw = rec["metrics"]["accuracy"]
        print(f"  seed {point.options['seed']} {point.options['method']:13s} sw {sw:.3f} chip {hw:.3f}  "
              f"({rec['seconds']:.1f}s)", flush=True)

    threads = args.threads or torch.get_num_threads()
    sweep = run_sweep(points, run_case, results=jsonl, runner=args.runner, runner_options=runner_options(args),
                      on_result=show, threads=threads, fresh=not args.resume, base=base)
    if sweep.skipped:
        print(f"{len(sweep.skipped)} case(s) taken from {jsonl} (--resume)")
    # the tables: every method with results (same settings) in the file, not only those of --methods
    all_points = case_points(METHODS, args.seeds, cfg, data)
    records = table_records(sweep.records, read_results(jsonl), all_points, base)
    runs = collect(records, all_points, args.seeds)
    summary = summarize(runs)
    shown = list(summary)
    others = [m for m in shown if m not in methods]
    if others:
        print(f"also tabulated from {jsonl} (earlier run, same settings): {', '.join(others)}")
    case_seconds = sum(float(records[p.key].get("seconds") or 0.0) for p in all_points if p.options["method"] in shown)
    wall = time.perf_counter() - t_start
    tab = table(summary)
    print(tab)
    ftab = fidelity_table(runs)
    print(ftab)
    d, b = summary["cil-spl-bptt"]["chip_mean"], summary["bptt"]["chip_mean"]
    verdict = (f"CIL-SPL + BPTT reaches {'higher' if d > b else 'NOT higher'} chip accuracy than plain BPTT "
               f"({100 * d:.1f} % vs {100 * b:.1f} %, same init, data and {cfg['snn_epochs']} epochs).")
    sb, sd = summary["bptt"], summary["cil-spl-bptt"]
    note = (f"Plain BPTT's software-to-chip degradation is {100 * sb['degradation_mean']:.1f} pp here, which bounds "
            f"what CIL-SPL can recover; CIL-SPL's degradation is {100 * sd['degradation_mean']:.1f} pp. The chip-accuracy "
            f"difference (d) − (c) = {100 * (d - b):+.1f} pp compares with a seed spread of "
            f"{100 * sb['chip_std']:.1f} / {100 * sd['chip_std']:.1f} pp (std over {args.seeds} seeds; one test sample = "
            f"{100 / len(test):.2f} pp).")
    if "ann2snn" in summary and "cil-spl-ann" in summary:
        sa, se = summary["ann2snn"], summary["cil-spl-ann"]
        note += (f" On the conversion path, CIL-SPL with the ANN proxy (e) moves chip accuracy "
                 f"by {100 * (se['chip_mean'] - sa['chip_mean']):+.1f} pp over plain conversion (a).")
    if d <= b:
        note = "Why not: " + note
    print(verdict)
    print(note)
    ctab = calls_table(runs)
    print(ctab)
    mverdict = mala_verdict(summary, runs)
    print(mverdict)
    write_json(args.out / f"cil_spl_speck{suffix}.json",
               {"config": {**cfg, "channels": list(cfg["channels"])}, "dataset": dataset, "quick": args.quick,
                "seeds": args.seeds, "methods": shown, "methods_run": methods, "summary": summary,
                "mala_options": {m: CASE_OPTIONS[m]["mala_options"] for m in shown if m in CASE_OPTIONS},
                "mala": [r["mala"] for r in runs], "start_digests": [r["digest"] for r in runs], "wall_seconds": wall, "case_seconds": case_seconds,
                "threads_per_case": threads,
                "verdict": verdict, "note": note,
                "mala_verdict": mverdict, "calls": [r["calls"] for r in runs], "seconds": [r["seconds"] for r in runs],
                "fidelity": [r["fidelity"] for r in runs]})
    fig = args.out / f"speck_cil_spl{suffix}.png"
    figure(summary, runs, fig)
    print(f"wrote {fig} ({wall:.0f}s)")
    if args.docs:
        cmd = "python benchmarks/cil_spl_speck.py --docs" + (" --quick" if args.quick else "") + \
              (f" --seeds {args.seeds}" if args.seeds != 3 else "") + \
              (f" --methods {','.join(methods)}" if methods != METHODS else "") + (" --resume" if args.resume else "")
        tp = args.out / "speck_throughput.json"
        throughput = ""
        if tp.exists():
            t = read_json(tp)
            throughput = (f"\nChip simulator throughput (`python benchmarks/speck_throughput.py`, same network, random weights): "
                          f"{t['numba_1t']['updates_per_s'] / 1e6:.0f} M synaptic updates/s on 1 thread (numba), "
                          f"{t['python']['updates_per_s'] / 1e6:.2f} M/s for the same loop in plain Python; "
                          f"{t['numba_1t']['samples_per_s']:.0f} samples/s event-driven vs "
                          f"{t['sinabs_1t']['samples_per_s']:.0f} samples/s for sinabs' time-stepped simulation (1 thread).\n")
        burn = chip_budget(cfg) - 2 - cfg["mala_post_steps"]

        def mala_call(m: str) -> str:
            opts = mala_options(cfg, CASE_OPTIONS[m]["mala_options"])
            return (f'`cil.Trainer(net, "speck", "mala", {", ".join(f"{k}={v!r}" for k, v in opts.items())})'
                    f'.fit(train, steps={chip_budget(cfg) - 2})`')

        def mala_m(m: str) -> int:
            return mala_options(cfg, CASE_OPTIONS[m]["mala_options"])["burn_in_minibatch"]

        mala_text = ""
        if others:
            mala_text += (f"Method(s) {', '.join(LABELS[m].split(' ', 1)[0] for m in others)} were not rerun by this "
                          f"command: their cases are an earlier run's, kept in `{jsonl.name}` (same settings, "
                          "`--resume`).\n")
        if "mala-bptt" in shown:
            mala_text += (f"Method (f) first trains (c) again in software (the same BPTT as (c): same seed, init, data and "
                          f"{cfg['snn_epochs']} epochs; no chip call; its weights are compared with (c)'s below), then runs {mala_call('mala-bptt')} from those weights: {burn} guided burn-in steps, each "
                          f"on a fresh random subset of {mala_m('mala-bptt')} training samples, then {cfg['mala_post_steps']} "
                          f"exact MALA steps on all {len(train)} training samples; with the starting states' gradients and "
                          f"the deployment call it makes (d)'s {chip_budget(cfg)} chip calls.\n")
        if "mala" in shown:
            mala_text += (f"Method (g) is {mala_call('mala')} from (c)/(d)'s random init: {burn} guided burn-in steps on "
                          f"subsets of {mala_m('mala')} samples, {cfg['mala_post_steps']} exact steps, (d)'s "
                          f"{chip_budget(cfg)} chip calls.\n")
        if "mala-warm" in methods:
            mala_text += (f"Method (h) is {mala_call('mala-warm')} from (c)/(d)'s random init: before its first chip call "
                          f"the algorithm trains one chain's start in software with (c)'s recipe (its own minibatch "
                          f"order), the other chain starts at the random init; {burn} burn-in steps on subsets of "
                          f"{mala_m('mala-warm')} samples, {cfg['mala_post_steps']} exact steps, (d)'s {chip_budget(cfg)} "
                          f"chip calls.\n")
        text = f"""Command: `{cmd}` ({'quick mode, ' if args.quick else ''}{args.seeds} seeds; {case_seconds / 60:.1f} min of case time summed over the cases, on a shared 2-core machine).
Data: {dataset}; {len(train)} training / {len(test)} test samples, T = {cfg['T']} time bins over 315 ms.
This is a **re-creation** on synthetic data, not N-MNIST: the numbers are not comparable with Liu et al.'s 95.71 %.
Network: input sum-pool 2x2, 5 spiking conv layers {tuple(cfg['channels'])} + 1 fully connected layer, no biases
(6 chip layers); chip = the `speck` backend (event-driven, 8-bit weights, 16-bit state).
Software = time-stepped model on the binned events; chip = event-driven run on the raw events.
Degradation = software − chip (mean ± std over seeds of the per-seed difference).
Method (e) is `cil.Trainer(net, "speck", "cil-spl", proxy=ann)`: the chip's spike counts are the forward value, the ANN's gradient the backward one.
{mala_text}
{tab}

{verdict} {note}

Chip calls and sample-inferences (samples x parameter sets) per training fit, from the trainers' session counters
(mean over seeds; (c) trains in software only; (a), (b) make no training call):

{ctab}

{mverdict}

Fidelity report (`cil_core.fidelity` on the test set, speck vs the software model with the same weights, mean over
seeds): spike-count correlation per layer and *local distortion* (what the chip adds in that layer alone, given the
chip's spikes from the layer before), before in-the-loop training (c) and after it (d).

{ftab}
{throughput}
![software vs chip accuracy and weight distributions](img/speck_cil_spl.png)
"""
        publish_figures({"speck_cil_spl.png": fig})
        write_docs_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
