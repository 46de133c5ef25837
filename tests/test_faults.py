"""Fault tests at scale: random malformed input at the public API and the CLI gets a cil error
(never another exception, never a hang), and a chip that fails on 10 % of its calls — raising,
hanging, returning NaN or the wrong shape — does not change what MH and CIL-SPL learn."""

import json
import subprocess
import sys

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cil_core as cil  # noqa: E402
from cil_core.hardware.ideal import IdealBackend  # noqa: E402
from cil_core.network.reference import feedforward  # noqa: E402
from cil_core.testing import FaultyBackend  # noqa: E402

FAST = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)

junk = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=5), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                                st.integers(), max_size=2))


def _net():
    return feedforward([5, 4, 3], seed=0, weight_gain=2.0)


@FAST
@given(name=st.sampled_from(["offline", "cil-spl", "mh", "mala"]),
       key=st.sampled_from(["lr", "chains", "observe", "optimizer", "grad_clip", "burn_in", "step_size", "deploy",
                            "init", "weight_decay", "chain", "learning_rate", "thin", "langevin_step",
                            "min_share", "exact_burn_in"]),
       value=junk)
def test_random_algorithm_options_get_a_cil_error_or_work(name, key, value):
    try:
        cil.make_algorithm(name, **{key: value})
    except cil.CilError:
        pass


@FAST
@given(T=st.integers(0, 4), N=st.integers(0, 5), F=st.integers(1, 7),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]),
       labels=st.lists(st.one_of(st.integers(-2, 5), st.floats(-2, 5) | st.just(float("nan"))), min_size=0, max_size=6),
       nan=st.booleans())
def test_random_data_gets_a_cil_error_or_trains(T, N, F, dtype, labels, nan):
    x = torch.ones(T, N, F).to(dtype)
    if nan and dtype.is_floating_point and x.numel():
        x.view(-1)[0] = float("nan")
    y = torch.tensor(labels) if labels else torch.zeros(0)
    trainer = cil.Trainer(_net(), "ideal", "cil-spl", seed=0)
    try:
        trainer.fit((x, y), steps=1)
        trainer.evaluate((x, y))
    except cil.CilError:
        pass


@FAST
@given(kw=st.fixed_dictionaries({}, optional={"epochs": junk, "steps": junk, "batch_size": junk,
                                              "checkpoint_every": junk}))
def test_random_run_lengths_get_a_cil_error_or_train(kw):
    x, y = (torch.rand(4, 6, 5) < 0.5).float(), torch.randint(0, 3, (6,))
    if "epochs" in kw and "steps" in kw and isinstance(kw["epochs"], int) and isinstance(kw["steps"], int):
        kw["steps"] = min(abs(kw["steps"]), 3) or 1
    for k in ("epochs", "steps"):
        if isinstance(kw.get(k), int) and not isinstance(kw[k], bool):
            kw[k] = min(kw[k], 3)
    try:
        cil.Trainer(_net(), "ideal", "offline", seed=0).fit((x, y), **kw)
    except cil.CilError:
        pass


@settings(max_examples=12, deadline=None, derandomize=True)
@given(cfg=st.dictionaries(st.sampled_from(["algorithm", "algoritm", "epochs", "steps", "seed", "backend",
                                            "batch_size", "validation_split", "readout", "retries", "out"]),
                           junk, max_size=3))
def test_random_configs_get_a_cil_error_line_never_a_traceback(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("cfg") / "run.json"
    cfg = {**cfg, "progress": False}
    if "epochs" not in cfg and "steps" not in cfg:
        cfg["steps"] = 1
    try:
        path.write_text(json.dumps(cfg))
    except ValueError:  # NaN etc. are still valid for Python's json
        return
    r = subprocess.run([sys.executable, "-m", "cil_core.app.cli", "train", "--config", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 1, 2)
    if r.returncode == 1:
        assert r.stderr.startswith("cil train: error: ")


# ------------------------------------------------------------------ a chip that fails 10 % of its calls
def FlakyChip(rate=0.1, seed=123, hang_s=0.5):  # noqa: N802 - reads as the chip it builds
    """The ideal chip failing on ``rate`` of its calls (see :class:`cil_core.testing.FaultyBackend`)."""
    return FaultyBackend(IdealBackend(), rate=rate, seed=seed, hang_s=hang_s)


def _run(breast_cancer, algorithm, chip, *, steps=None, epochs=None, batch_size=-1, checkpoint=None, resume=None,
         **opts):
    net = feedforward([breast_cancer.n_inputs, 8, 2], seed=0, weight_gain=2.0)
    tr = cil.Trainer(net, chip, algorithm, seed=0, retries=6, timeout=0.25, **opts)
    tr.fit(breast_cancer.train.subset(torch.arange(120)), steps=steps, epochs=epochs, batch_size=batch_size,
           checkpoint=checkpoint, checkpoint_every=5, resume=resume, force=resume is None)
    return tr


@pytest.mark.parametrize("algorithm, kw", [("mh", dict(steps=20, chains=4, burn_in=10, init="network")),
                                           ("cil-spl", dict(epochs=8, batch_size=30))])
def test_a_chip_failing_10_percent_of_calls_changes_nothing(breast_cancer, tmp_path, algorithm, kw):
    kw = dict(kw)
    steps, epochs = kw.pop("steps", None), kw.pop("epochs", None)
    clean = _run(breast_cancer, algorithm, IdealBackend(), steps=steps, epochs=epochs, **kw)
    flaky = FlakyChip()
    ck = tmp_path / "run.pt"
    faulty = _run(breast_cancer, algorithm, flaky, steps=steps, epochs=epochs, checkpoint=ck, **kw)
    injected = sum(flaky.faults.values())
    stats = faulty.session.stats
    print(f"{algorithm}: calls made {flaky.calls}, faults injected {injected} {flaky.faults}, "
          f"faults survived {stats.failures}, samples lost 0")
    assert injected >= 2 and stats.failures == injected
    # the same weights, bit for bit, and for MH the same accepted samples
    for k, v in clean.network.detached_parameters().items():
        assert torch.equal(v, faulty.network.detached_parameters()[k])
    if algorithm == "mh":
        assert clean.algorithm.total_accepts == faulty.algorithm.total_accepts
        assert clean.algorithm.n_kept == faulty.algorithm.n_kept
        assert torch.equal(clean.algorithm.sum, faulty.algorithm.sum)
    # resume from the checkpoint written mid-run: bit-identical end state
    mid = tmp_path / "mid.pt"
    partial = _run(breast_cancer, algorithm, FlakyChip(seed=7), steps=10 if steps else None,
                   epochs=3 if epochs else None, checkpoint=mid, **kw)
    assert partial.state.step < faulty.state.step
    resumed = _run(breast_cancer, algorithm, FlakyChip(seed=9), steps=steps, epochs=epochs, checkpoint=mid,
                   resume=mid, **kw)
    for k, v in clean.network.detached_parameters().items():
        assert torch.equal(v, resumed.network.detached_parameters()[k])
    assert [r["loss"] for r in resumed.history.records] == [r["loss"] for r in clean.history.records]
