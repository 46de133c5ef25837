"""The benchmark scripts of ``benchmarks/`` (not installed; imported here by path): the shared
harness, the CIL-SPL re-creation's network on the chip, and no installed code importing them."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cil_core as cil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def load(name: str):
    """Import ``benchmarks/<name>.py`` as a module (its ``harness`` import resolved beside it)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


def test_harness_docs_section_tables_and_timing(tmp_path):
    h = load("harness")
    md = tmp_path / "results.md"
    md.write_text("# R\n\n<!-- BEGIN x -->\nold\n<!-- END x -->\n\n<!-- BEGIN y -->\nkeep\n<!-- END y -->\n")
    h.write_docs_section("x", "| a |\n|---|\n| 1 |\n", md)
    text = md.read_text()
    assert "old" not in text and "<!-- BEGIN x -->\n| a |\n|---|\n| 1 |\n<!-- END x -->" in text and "keep" in text
    with pytest.raises(SystemExit, match="no <!-- BEGIN z -->"):
        h.write_docs_section("z", "text", md)
    assert h.markdown_table(["m", "acc"], [["a", "1.0"]]) == "| m | acc |\n|---|---|\n| a | 1.0 |"
    assert h.text_table(["name", "ms"], [["ideal", "1.00"], ["analog", "12.50"]]).splitlines() == [
        "name       ms", "------  -----", "ideal    1.00", "analog  12.50"]
    calls = []
    med = h.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert set(med) == {"a", "b"} and calls == ["a", "b"] * 4
    out = h.write_json(tmp_path / "sub" / "r.json", {"p": Path("x"), "t": torch.tensor([1.0])})
    assert h.read_json(out) == {"p": "x", "t": [1.0]}


def test_installed_code_does_not_import_the_benchmarks():
    pattern = re.compile(r"^\s*(from|import)\s+(benchmarks|harness|cil_spl_speck|mh_vs_backprop|nmnist_60k|stream_memory)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for top in ("cil_core", "plugins") for p in (ROOT / top).rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_cil_spl_benchmark_network_fits_the_chip():
    pytest.importorskip("sinabs")
    pytest.importorskip("cil_sinabs")
    pytest.importorskip("numba")
    pytest.importorskip("cil_speck")
    bench = load("cil_spl_speck")
    net = cil.wrap(bench.make_model("snn", T=4), input_shape=(2, 34, 34))
    be = cil.make_backend("speck")
    be.check(net.spec)
    dep = be.transfer(net.spec, net.detached_parameters())
    cmap = dep.chip["map"]
    assert len(cmap.layers) == 6 and cmap.layers[0].pool == (2, 2) and cmap.layers[1].weight_scale == 0.25
    assert len(set(dep.chip["cores"])) == 6
    x = (torch.rand(4, 2, 2, 34, 34, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    obs = be.forward(dep, x)
    assert obs.output.shape == (4, 2, 10)


def test_cil_spl_benchmark_mala_warm_trains_its_start_with_bptts_recipe():
    """(h)'s mala options: the recommended warm start (one chain, MH's moves, warm_prefer) with (c)'s
    recipe (its steps, learning rate, minibatch and gradient clip); (f) and (g) have no warm start;
    every set of options passes mala's door."""
    bench = load("cil_spl_speck")
    cfg = dict(snn_epochs=8, n_train=1258, batch=64, snn_lr=2e-3, grad_clip=1.0, mala_chains=2, mala_minibatch=32,
               mala_post_steps=2, mala_layer_choice="uniform")
    h = bench.mala_options(cfg, bench.CASE_OPTIONS["mala-warm"]["mala_options"])
    assert (h["warm_start"], h["warm_moves"], h["warm_prefer"]) == (1, "auto", 2.0)
    assert (h["warm_steps"], h["warm_lr"], h["warm_batch"], h["warm_grad_clip"]) == (8 * 20, 2e-3, 64, 1.0)
    for m in ("mala", "mala-bptt"):
        assert not any(k.startswith("warm") for k in bench.mala_options(cfg, bench.CASE_OPTIONS[m]["mala_options"]))
    for m in ("mala", "mala-bptt", "mala-warm"):
        cil.make_algorithm("mala", **bench.mala_options(cfg, bench.CASE_OPTIONS[m]["mala_options"]))


def test_cil_spl_benchmark_ann_proxy_deploys_the_converted_weights():
    pytest.importorskip("sinabs")
    pytest.importorskip("cil_sinabs")
    bench = load("cil_spl_speck")
    torch.manual_seed(0)
    ann, snn = bench.make_model("ann", T=4), bench.make_model("snn", T=4)
    lambdas = [0.5 + 0.25 * i for i in range(6)]
    bench.ann_to_snn(ann, snn, lambdas)
    proxy = bench.AnnProxy(ann, lambdas)
    got = proxy.network_parameters()
    assert set(got) == {n for n, _ in bench._weights(snn)}
    for n, w in bench._weights(snn):
        assert torch.equal(got[n], w.detach())
    x = torch.rand(4, 3, 2, 34, 34)
    assert torch.equal(proxy(x), bench.ann_forward(ann, x.mean(0)))
    # QAT fake quantization: 8-bit symmetric per layer, values on the grid, gradient straight through
    w = torch.randn(16, 8, requires_grad=True)
    lin = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(w)
    out = bench.ann_forward(lin, torch.eye(8), qat=True)
    codes = out.detach().T / (w.detach().abs().max() / 127)
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    out.sum().backward()
    assert torch.equal(lin[0].weight.grad, torch.ones(16, 8))


def test_cil_spl_tables_show_every_method_with_results_in_the_file(tmp_path):
    """``--methods bptt,cil-spl-bptt --resume`` reruns (c) and (d); the tables still show the other
    methods' cases that an earlier run (same settings) left in the results file, with the figures
    of their records, and leave out records of other settings (other base, other mala options)."""
    bench = load("cil_spl_speck")
    from cil_core.app.sweep import read_results
    from cil_core.app.sweep.results import ResultsFile

    cfg, data, seeds = {"T": 8}, {"nmnist": None}, 2
    rng = np.random.default_rng(0)
    everything = bench.case_points(bench.METHODS, seeds, cfg, data)

    def record(p, base="B"):
        m = {"accuracy": rng.uniform(0.3, 0.9, 2).round(4).tolist()}
        if p.options["method"] in ("bptt", "cil-spl-bptt"):
            m.update(weights="", fidelity={"agreement": 1.0, "layers": []})
        if p.options["method"] not in ("ann2snn", "ann2snn-qat", "bptt"):
            m.update(chip_calls=10, chip_samples=640)
        return {"key": p.key, "options": p.options, "metrics": m, "seconds": 1.0, "base": base}

    earlier = {p.key: record(p) for p in everything}  # a full earlier run: every method, both seeds
    run_now = bench.case_points(["bptt", "cil-spl-bptt"], seeds, cfg, data)
    now = {p.key: record(p) for p in run_now}  # this run's (c) and (d): new figures
    rf = ResultsFile(tmp_path / "c.jsonl")
    for rec in list(earlier.values()) + list(now.values()):
        rf.append(rec)
    stored = read_results(rf.path)
    records = bench.table_records(now, stored, everything, "B")
    assert set(records) == {p.key for p in everything}
    for p in everything:
        assert records[p.key] is (now[p.key] if p.key in now else stored[p.key])
    summary = bench.summarize(bench.collect(records, everything, seeds))
    assert list(summary) == bench.METHODS  # was: only bptt and cil-spl-bptt
    for m in bench.METHODS:  # the figures are the records' own
        src = now if m in ("bptt", "cil-spl-bptt") else earlier
        want = [src[p.key]["metrics"]["accuracy"] for p in everything if p.options["method"] == m]
        assert summary[m]["software"] == [a[0] for a in want] and summary[m]["chip"] == [a[1] for a in want]
    table = bench.table(summary)
    assert all(bench.LABELS[m] in table for m in bench.METHODS)
    # another base (other cfg/data), or a method on one seed only, is not tabulated
    other_base = {k: dict(r, base="other") for k, r in stored.items()}
    assert set(bench.table_records(now, other_base, everything, "B")) == set(now)
    one_seed = {k: r for k, r in stored.items() if not (r["options"] == {"method": "mala", "seed": 1})}
    summary = bench.summarize(bench.collect(bench.table_records(now, one_seed, everything, "B"), everything, seeds))
    assert "mala" not in summary and "mala-bptt" in summary
    # a change of mala's options gives new keys: the old mala cases are not this setting's
    bench.CASE_OPTIONS["mala"] = {"mala_options": {"guided_noise": 0.5}}
    changed = bench.case_points(bench.METHODS, seeds, cfg, data)
    assert "mala" not in bench.summarize(bench.collect(bench.table_records(now, stored, changed, "B"), changed, seeds))


def test_cramer_recreation_runs_as_a_resumable_sweep(tmp_path):
    """benchmarks/cramer_analog.py: offline once plus each in-the-loop method per chip, one JSON
    line per point; a resumed run takes every point from the file and assembles the same result."""
    pytest.importorskip("cil_analog")
    bench = load("cramer_analog")
    cfg = dict(T=12, T_code=10, hidden=16, beta=0.9, gain=2.0, init_seed=0, lr=5e-3, epochs=1, batch=64,
               strength=0.5, dac_bits=6, n_train=120, n_test=60)
    jsonl = tmp_path / "c.jsonl"
    logs: list[str] = []
    first = bench.run(cfg, 2, logs.append, results=jsonl)
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 1 + 2 * len(bench.METHOD_OBSERVES)
    assert [c["chip"] for c in first["chips"]] == [0, 1]
    for c in first["chips"]:
        assert set(c["accuracy"]) == set(bench.METHODS) and set(c["fidelity"]) == set(bench.METHODS)
    assert first["chips"][0]["accuracy"]["offline"][0] == first["chips"][1]["accuracy"]["offline"][0], \
        "offline is trained once: the same software accuracy on every chip"
    logs.clear()
    again = bench.run(cfg, 2, logs.append, results=jsonl, resume=True)
    assert any("5 point(s) taken" in m for m in logs) and len(jsonl.read_text().splitlines()) == 5
    assert again == first


def test_mh_minibatch_benchmark_counts_and_compares_sample_inferences(tmp_path, capsys):
    """benchmarks/mh_minibatch.py on one chip, 6 steps of 2 chains: full-data MH's sample-inferences
    are the session's count of its requests (calibration 26 sets x 256 samples, 2 x 2 sets x 398 per
    step, 3 x 398 for the final choice); every sequential variant reads less, and the table, the
    verdicts and the JSON (rows and summary) come out of the one run."""
    pytest.importorskip("cil_analog")
    bench = load("mh_minibatch")
    assert bench.main(["--chips", "0", "--steps", "6", "--chains", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "mh_minibatch.json").read_text())
    cost = {r["variant"]: r["sample_inferences"] for r in result["rows"]}
    assert cost["full"] == 26 * 256 + 6 * 4 * 398 + 3 * 398
    assert all(v < cost["full"] for k, v in cost.items() if k != "full")
    ratios = {s["variant"]: s["cost_ratio"][0] for s in result["summary"]}
    assert ratios["full"] == 1.0 and ratios["seq m=16 eps=0.2"] == cost["seq m=16 eps=0.2"] / cost["full"]
    out = capsys.readouterr().out
    assert "sample-inferences" in out and "criterion: <= 0.25" in out


def test_mala_analog_runs_a_variant_of_mala_alone_and_checks_its_options(tmp_path, capsys):
    """benchmarks/mala_analog.py --algorithms mala mala-ft --mala ...: only those run, with the given options
    (they reach the algorithm), on the chips asked for (--first-chip), into its own tagged JSON, without
    the 'done' columns; a bad option is refused by cil before anything runs, and --docs refuses a variant."""
    pytest.importorskip("cil_analog")
    bench = load("mala_analog")
    with pytest.raises(cil.OptionError, match="guided_batch"):
        bench.main(["--algorithms", "mala", "--mala", "guided_batch=0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main(["--mala", "chains=3", "--docs", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main(["--mala-base", "defaults", "--docs", "--out", str(tmp_path)])
    assert bench.main(["--algorithms", "mala", "mala-ft", "--mala", "chains=3", "guided_batch=16", "--strengths", "0",
                       "--chips", "1", "--first-chip", "1", "--steps", "6", "--no-fractions", "--tag", "_v",
                       "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "mala_analog_v.json").read_text())
    # the recommended options for 3 chains (one warm-started), the given ones over them
    assert result["mala_options"] == {"warm_start": 1, "warm_moves": "auto", "warm_prefer": 2.0, "chains": 3,
                                      "guided_batch": 16} and result["algorithms"] == ["mala", "mala-ft"]
    assert [r["algorithm"] for r in result["rows"]] == ["mala", "mala-ft"]  # mala-ft: from the offline weights
    for row in result["rows"]:
        assert row["chains"] == 3 and row["guided_batch"] == 16 and row["chip"] == 1 and row["warm_start"] == 1
    assert bench.main(["--algorithms", "mala", "--mala-base", "defaults", "--mala", "chains=3", "--strengths", "0",
                       "--chips", "1", "--steps", "6", "--no-fractions", "--tag", "_d", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "mala_analog_d.json").read_text())
    assert result["mala_options"] == {"chains": 3} and result["rows"][0]["warm_start"] == 0
    out = capsys.readouterr().out
    assert "| 0 |" in out and "done" not in out


def test_nmnist_60k_streams_vary_and_round_trip_through_tonics_reader(tmp_path):
    pytest.importorskip("cil_speck")
    tonic = pytest.importorskip("tonic")

    from cil_speck.data import DURATION_US, digit_split

    sys.path.insert(0, str(BENCH))  # nmnist_60k imports harness and cil_spl_speck beside it
    try:
        b = load("nmnist_60k")
        images, labels = digit_split(True)
        same = np.repeat(images[:3], 4, 0)  # 4 streams from each of 3 digits
        streams = b.make_streams(same, seed=5)
        assert len({s.tobytes() for s in streams}) == 12  # no two alike, from the same digit either
        again = b.make_streams(same, seed=5)
        assert all(np.array_equal(a, c) for a, c in zip(streams, again))  # seeded
        for s in streams:
            assert len(s) > 500 and s["t"].min() >= 0 and s["t"].max() < DURATION_US
            assert s["x"].max() < 34 and s["y"].max() < 34 and np.all(np.diff(s["t"]) >= 0)
        info = b.write_split(tmp_path, "test", 30, chunk=16)
        assert info["streams"] == info["distinct_streams"] == 30 and sum(info["per_class"]) == 30
        files = sorted((tmp_path / "NMNIST" / "Test").rglob("*.bin"))
        assert len(files) == 30 and (tmp_path / "NMNIST" / "test.zip").is_file()
        ev = tonic.io.read_mnist_file(str(files[0]), dtype=tonic.datasets.NMNIST.dtype)
        assert len(ev) > 500 and ev["x"].max() < 34
    finally:
        sys.path.remove(str(BENCH))


def test_overhead_mh_part_checks_its_contenders_and_splits_the_batched_step():
    """benchmarks/overhead.py's MH part (2 chains, 1 repeat): the batched and one-call-per-proposal
    trainers end with the same chains bit for bit, and the batched step is split into the first
    layer's per-set products, the rest of the chip call and the step outside it."""
    torch.set_num_threads(1)
    mh = load("overhead").mh_throughput(repeats=1, chains=2)
    assert mh["same_chains"] is True
    parts = mh["batched_step_cpu_ms"]
    assert all(v > 0 for v in parts.values()), parts
    assert parts["step"] > parts["first_layer_products"]
    assert mh["speedup_ceiling"] > 0 and mh["batched"]["proposals_per_second"] > 0
    one = mh["one_call_step_parts_cpu_ms"]
    assert one["chip_call_one_set"] > 0 and one["outside_chip_call"] == parts["outside_chip_call"]
    assert 0 < mh["speedup_ceiling_with_outside"] < mh["speedup_ceiling"]
    # the call model o + S w from the one-set and the 2-set call, and batching's limit with free sets
    m = mh["call_model_cpu_ms"]
    assert m["per_call"] + m["per_set"] == pytest.approx(one["chip_call_one_set"]) or m["per_call"] == 0
    o, w, u = m["per_call"], m["per_set"], m["outside_chip_call"]
    assert mh["speedup_model"] == pytest.approx((2 * (o + w) + u) / (o + 2 * w + u))
    assert mh["speedup_limit_per_set_free"] == pytest.approx((2 * o + u) / (o + u))
    assert mh["speedup_limit_per_set_free"] >= mh["speedup_model"]
    assert parts["first_layer_whole_batch"] > 0


def test_product_rounding_candidates_are_exact_where_every_sum_is_exact():
    """benchmarks/product_rounding.py: with weights that are small integers every partial sum is
    exact in float32, so whatever order a kernel sums in, both candidates must equal the per-step
    product bit for bit (and the sequential sum the float64 product); the MH benchmark's shape is
    reported with its outputs counted."""
    bench = load("product_rounding")
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(4, 37, 50, generator=g) < 0.3).float()
    w = torch.randint(-8, 9, (12, 50), generator=g).float()
    b = torch.randint(-4, 5, (12,), generator=g).float()
    ref = bench.per_step(x, w.t(), b)
    assert torch.equal(ref, (x.double() @ w.t().double() + b.double()).float())
    assert torch.equal(bench.whole_batch(x, w.t(), b), ref)
    assert torch.equal(bench.sequential(x, w.t(), b), ref)
    assert torch.equal(bench.sequential(x, w.t(), None), bench.per_step(x, w.t(), None))
    shapes = bench.random_shapes(5, seed=0)
    assert shapes == bench.random_shapes(5, seed=0) and len({tuple(s.values()) for s in shapes}) > 1
    row = bench.check(shapes[0], seed=1)
    assert isinstance(row["whole_batch_equal"], bool) and isinstance(row["sequential_equal"], bool)
    mh = bench.benchmark_shape()
    assert mh["shape"] == [16, 398, 62, 32] and mh["outputs"] == 16 * 398 * 32
    assert 0 <= mh["sequential_differing_outputs"] <= mh["outputs"]
