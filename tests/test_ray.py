"""cil-ray: the ``ray:<backend>`` wrapper on one local Ray cluster (shared by the module).

Results must equal local runs bit for bit (deterministic backends), a worker killed mid-run must
not change a run, remote errors keep their cil type, and placement/auth problems are cil errors
within seconds. Skipped when Ray or cil-ray is not installed."""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
cil_ray = pytest.importorskip("cil_ray")

import cil_core as cil  # noqa: E402
from cil_core.network.reference import feedforward  # noqa: E402
from cil_core.testing import check_backend, default_case  # noqa: E402

HAS_ANALOG = True
try:
    import cil_analog  # noqa: F401
except ImportError:  # pragma: no cover
    HAS_ANALOG = False
HAS_SPECK = True
try:
    import cil_speck  # noqa: F401
except ImportError:  # pragma: no cover
    HAS_SPECK = False

TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module: token auth by variable, a board and 4 'chip' units."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()
    if ray.is_initialized():  # pragma: no cover - another module left a connection
        ray.shutdown()
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = TOKEN
    info = cil_ray.start_local(num_cpus=2, resources={"chip": 4, "board-A": 1})
    info["gcs"] = ray.get_runtime_context().gcs_address
    info["had_home_token"] = had_home_token
    yield info
    cil_ray.shutdown()
    assert not os.path.exists(info["temp_dir"]), "the local cluster's private folder must be removed"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _mh_trainer(backend, seed=0, **kw):
    net = feedforward([62, 12, 2], seed=0, weight_gain=2.0)
    opts = dict(chains=8, burn_in=6, adapt_every=3, init="auto")
    opts.update(kw)
    return cil.Trainer(net, backend, "mh", seed=seed, **opts)


def _same_run(a, b):
    """Two fits are the same run: every history record (less wall time) and final weights equal."""
    ra = [{k: v for k, v in r.items() if k != "time"} for r in a.history.records]
    rb = [{k: v for k, v in r.items() if k != "time"} for r in b.history.records]
    assert ra == rb
    for (k, va), vb in zip(a.network.detached_parameters().items(), b.network.detached_parameters().values()):
        assert torch.equal(va, vb), k


# ---------------------------------------------------------------------------- results equal local
@pytest.mark.parametrize("inner, options", [
    ("ideal", {}),
    pytest.param("analog-mismatch", {"strength": 1.0, "seed": 3, "noise_sigma": 0.0},
                 marks=pytest.mark.skipif(not HAS_ANALOG, reason="cil-analog not installed")),
])
def test_mh_on_two_workers_equals_the_local_run(cluster, breast_cancer, inner, options):
    local = _mh_trainer(cil.make_backend(inner, **options))
    local.fit(breast_cancer.train, steps=12)
    with cil.make_backend(f"ray:{inner}", workers=2, min_shard=32, **options) as chip:
        assert chip.max_sets is None and chip.name == f"ray:{inner}"
        remote = _mh_trainer(chip)
        remote.fit(breast_cancer.train, steps=12)
        _same_run(local, remote)
        assert remote.evaluate(breast_cancer.test) == {**local.evaluate(breast_cancer.test), "backend": chip.name}
        # MH's 8 chains: every call shared by both workers; evaluation (171 samples) split in 2 shards
        calls = chip.worker_stats()
        assert all(s["calls"] > 0 for s in calls)
        assert all(s["specs"] == 1 for s in calls), "the network description travels once per worker"
        if inner == "analog-mismatch":  # the chip's per-network cache does not grow with calls
            sizes = ray.get([a.__ray_call__.remote(lambda w: len(w.backend._compiled_cache)) for a in chip.actors])
            assert sizes == [1, 1]


def test_trained_neuron_parameters_pass_through_the_workers(cluster, breast_cancer):
    """The workers' backend declares which trained neuron parameters it holds (``neuron_parameters``);
    the driver mirrors it: MH moving an snntorch model's leaks and thresholds on ``ray:ideal`` is the
    local run, and ``ray:speck`` refuses a trained leak before the first call, as speck does."""
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("cil_snntorch")
    from torch import nn

    def model(beta=0.9):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(62, 12, bias=False), snn.Leaky(beta=beta, threshold=torch.ones(12),
                                                                      learn_threshold=True, learn_beta=True,
                                                                      init_hidden=True),
                             nn.Linear(12, 2, bias=False), snn.Leaky(beta=beta, learn_threshold=True, init_hidden=True,
                                                                     output=True))

    train = breast_cancer.train.subset(torch.arange(100))
    opts = dict(chains=4, burn_in=4, adapt_every=2, init="network", neuron_share=0.5)
    local = cil.Trainer(cil.wrap(model()), "ideal", "mh", seed=0, **opts)
    local.fit(train, steps=8)
    with cil.make_backend("ray:ideal", workers=2, min_shard=32) as chip:
        assert chip.neuron_parameters == cil.make_backend("ideal").neuron_parameters
        remote = cil.Trainer(cil.wrap(model()), chip, "mh", seed=0, **opts)
        remote.fit(train, steps=8)
        _same_run(local, remote)
    start = cil.wrap(model()).detached_parameters()
    assert any(not torch.equal(local.network.detached_parameters()[k], start[k])
               for k in ("1.beta", "1.threshold", "3.beta", "3.threshold"))  # neuron parameters were moved
    if HAS_SPECK:
        speck = cil.make_backend("speck")
        with cil.make_backend("ray:speck", num_cpus=0) as chip:
            assert chip.neuron_parameters == speck.neuron_parameters
            assert chip.neuron_parameter_hints == speck.neuron_parameter_hints
            with pytest.raises(cil.BackendCapacityError, match=r"'ray:speck' cannot hold layer 1 .*trained beta "
                                                               r"'1.beta'"):
                cil.HardwareSession(chip).check(cil.wrap(model(beta=1.0)).spec)
    if importlib.util.find_spec("cil_xylo") is not None:  # the switch a domain names reaches the driver
        for rounds in (False, True):
            with cil.make_backend("ray:xylo", workers=2, num_cpus=0, round_decays=rounds) as chip:
                assert chip.round_decays is rounds


def test_meets_the_backend_contract_with_sets_and_batches_split(cluster):
    with cil.make_backend("ray:ideal", workers=2, min_shard=2) as chip:
        check_backend(chip)
        spec, params, x = default_case()
        # inputs go to the object store once per input object
        dep = chip.transfer(spec, params)
        chip.forward(dep, x)
        sent = chip.bytes_sent
        chip.forward(dep, x)
        assert chip.bytes_sent - sent == sum(p.numel() * p.element_size() for p in params.values())
    with pytest.raises(cil.CilError, match="closed"):  # the with block stopped the workers
        chip.forward(dep, x)


def test_a_backend_class_of_ones_own_with_its_max_sets_respected_in_the_workers(cluster):
    from cil_core.hardware.ideal import IdealBackend

    class OneSetChip(IdealBackend):  # defined here: shipped to the workers by value
        name = "one-set"
        max_sets = 1

    spec, params, x = default_case()
    sets = {k: torch.stack([v * f for f in (1.0, 0.6, 1.6, 1.2, 0.8)]) for k, v in params.items()}
    with cil_ray.RayBackend(OneSetChip, workers=2) as chip:
        assert chip.name == "ray:one-set"
        obs = cil.HardwareSession(chip).run(spec, sets, x, n_sets=5, record=True)
        want = cil.HardwareSession(cil.make_backend("ideal")).run(spec, sets, x, n_sets=5, record=True)
        assert torch.equal(obs.output, want.output)
        assert all(torch.equal(a.spikes, b.spikes) for a, b in zip(obs.layers, want.layers))
        # each worker's own session looped over its share one set at a time: 3 + 2 calls
        assert [s["session"]["calls"] for s in chip.worker_stats()] == [3, 2]


@pytest.mark.skipif(not HAS_SPECK, reason="cil-speck not installed")
def test_speck_sets_batches_and_layer_observations_equal_local(cluster):
    from cil_speck import SpeckBackend

    spec, params, x = default_case(beta=1.0, B=40)
    local = SpeckBackend()
    sets = {k: torch.stack([v, 0.6 * v, 1.6 * v, 1.2 * v, 0.9 * v]) for k, v in params.items()}
    s_local = cil.HardwareSession(local)
    with cil.make_backend("ray:speck", workers=2, min_shard=8) as chip:
        s_remote = cil.HardwareSession(chip)
        for n_sets, p in ((5, sets), (None, params)):  # 5 sets: 3 on worker 0, 2 on worker 1
            a = s_local.run(spec, p, x, n_sets=n_sets, record=True)
            b = s_remote.run(spec, p, x, n_sets=n_sets, record=True)
            assert torch.equal(a.output, b.output)
            assert b.layers is not None and len(a.layers) == len(b.layers)
            for la, lb in zip(a.layers, b.layers):
                assert torch.equal(la.spikes, lb.spikes)
        assert len(b.meta["ray"]) == 2, "40 samples, min_shard=8: the batch is split over both workers"
        assert s_remote.stats.calls == 2  # one call each: the workers' sessions did the looping
        dep = s_remote.deploy(spec, params)  # what Trainer.deploy returns
        assert "weights_int8" in dep.chip, "a worker's own deployment shows what the chip holds"
        assert (dep.chip["weights_int8"][0] == s_local.deploy(spec, params).chip["weights_int8"][0]).all()


# ---------------------------------------------------------------------------- failures
def test_worker_killed_mid_run_gives_the_same_trace(cluster, breast_cancer):
    """SIGKILL a worker during an MH fit with retries=2: Ray restarts it, the call fails as a
    HardwareError that the session retries and counts, and the run is unchanged."""
    reference = _mh_trainer("ideal")
    reference.fit(breast_cancer.train, steps=16)
    with cil.make_backend("ray:ideal", workers=2) as chip:
        tr = _mh_trainer(chip, retries=2)
        victim = chip.info[1]["pid"]

        def on_step(rec):
            if rec["step"] == 5:
                threading.Timer(0.002, os.kill, (victim, signal.SIGKILL)).start()

        tr.fit(breast_cancer.train, steps=16, on_step=on_step)
        _same_run(reference, tr)
        assert tr.session.stats.failures >= 1, "the lost call is counted by cil's own retries"
        assert chip.info[1]["pid"] != victim, "Ray restarted the worker"
        assert chip.failures >= 1


def test_a_hung_worker_is_killed_and_restarted(cluster):
    spec, params, x = default_case()
    with cil.make_backend("ray:ideal", workers=1, call_timeout=1.5) as chip:
        pid = chip.info[0]["pid"]
        chip.actors[0].sleep.remote(60)  # the chip hangs: the next call queues behind it
        session = cil.HardwareSession(chip, retries=1)
        t0 = time.monotonic()
        obs = session.run(spec, params, x)  # first attempt times out, the retry lands on the restarted worker
        assert time.monotonic() - t0 < 20
        assert session.stats.failures == 1 and session.stats.calls == 1
        assert chip.info[0]["pid"] != pid
        assert torch.equal(obs.output, cil.HardwareSession(cil.make_backend("ideal")).run(spec, params, x).output)


def test_the_sessions_timeout_kills_a_hung_worker_and_purposes_reach_the_workers(cluster):
    """No call_timeout: the session's own timeout reaches the backend (enforces_timeout), which kills
    the hung worker instead of the session abandoning a thread; each call is counted in the worker
    under the purpose the driver's session gave it."""
    from cil_core.hardware import session as session_module

    spec, params, x = default_case()
    with cil.make_backend("ray:ideal", workers=1) as chip:
        assert chip.enforces_timeout and chip.call_timeout is None
        pid = chip.info[0]["pid"]
        chip.actors[0].sleep.remote(60)
        session = cil.HardwareSession(chip, retries=0, timeout=1.5)
        abandoned = len(session_module._ABANDONED)
        t0 = time.monotonic()
        with pytest.raises(cil.HardwareError, match=r"within 1.5 s \(the session's timeout"):
            session.run(spec, params, x, purpose="eval")
        assert time.monotonic() - t0 < 10
        assert len(session_module._ABANDONED) == abandoned, "no thread is left behind"
        assert chip.info[0]["pid"] != pid, "the hung worker was killed and restarted"
        session.run(spec, params, x, purpose="eval")
        session.run(spec, params, x, purpose="train")
        session.run(spec, params, x, purpose="train")
        counted = chip.worker_stats()[0]["session"]["calls_by_purpose"]
        assert counted == {"eval": 1, "train": 2}


@pytest.mark.skipif(not HAS_SPECK, reason="cil-speck not installed")
def test_remote_errors_keep_their_cil_type_and_name_the_worker(cluster):
    with cil.make_backend("ray:speck", workers=1) as chip:
        with pytest.raises(cil.BackendCapacityError, match=r"leak.*\[on ray worker 0 \(host .*pid \d+\)\]"):
            cil.Trainer(feedforward([6, 8, 4], beta=0.9), chip, "cil-spl")
        net = feedforward([6, 8, 4], beta=1.0, bias=True)
        with pytest.raises(cil.BackendCapacityError, match=r"'bias'.*\[on ray worker 0"):  # at transfer, too
            chip.remote_transfer(net.spec, net.detached_parameters())
    with pytest.raises(cil.OptionError, match="threds"):  # the inner backend's own option check, in the worker
        cil.make_backend("ray:speck", threds=1)


# ---------------------------------------------------------------------------- placement
def test_placement_problems_fail_fast(cluster):
    t0 = time.monotonic()
    with pytest.raises(cil_ray.PlacementError, match="nope=1.*no node"):
        cil.make_backend("ray:ideal", resources={"nope": 1})
    with pytest.raises(cil_ray.PlacementError, match="3 workers need 3 CPU"):
        cil.make_backend("ray:ideal", workers=3)
    with pytest.raises(cil_ray.PlacementError, match="need 6 chip in all, the cluster offers 4"):
        cil.make_backend("ray:ideal", workers=2, num_cpus=0, resources={"chip": 3})
    with pytest.raises(cil_ray.PlacementError, match="board-B"):
        cil.make_backend("ray:ideal", boards=["B"], num_cpus=0)
    with pytest.raises(cil_ray.PlacementError, match="labels {'room': 'lab-3'}"):
        cil.make_backend("ray:ideal", num_cpus=0, labels={"room": "lab-3"})
    assert time.monotonic() - t0 < 5, "missing resources are refused at once, not left pending"
    with cil.make_backend("ray:ideal", workers=2, num_cpus=0, resources={"chip": 2}):
        t0 = time.monotonic()
        with pytest.raises(cil_ray.PlacementError, match="in use"):  # exists, but held by the run above
            cil.make_backend("ray:ideal", num_cpus=0, resources={"chip": 1}, ready_timeout=2)
        assert time.monotonic() - t0 < 10


def test_a_board_has_one_holder_and_the_error_names_it(cluster):
    import getpass

    with cil.make_backend("ray:ideal", boards=["A"], num_cpus=0):
        t0 = time.monotonic()
        holder = rf"board 'A' is held by {getpass.getuser()}@.*pid {os.getpid()}"
        with pytest.raises(cil_ray.BoardBusyError, match=holder):
            cil.make_backend("ray:ideal", boards=["A"], num_cpus=0, ready_timeout=5)
        assert time.monotonic() - t0 < 10
    with cil.make_backend("ray:ideal", boards=["A"], num_cpus=0):  # free again once its holder closed
        pass


def test_different_chips_never_share_a_call_silently(cluster):
    with pytest.raises(cil_ray.FleetError, match="different chips"):
        cil.make_backend("ray:analog-mismatch", worker_options=[{"seed": 1}, {"seed": 2}])
    with pytest.raises(cil.OptionError, match="distinct"):
        cil.make_backend("ray:ideal", boards=["A", "A"])



def test_a_population_of_chips_answers_with_its_mean_observation(cluster):
    """mode='population': every call on every chip, the mean returned - equal to the mean of
    local runs on each chip (deterministic analog chips: noise off)."""
    from cil_core.testing import default_case

    spec, params, x = default_case()
    chips = [{"seed": 1, "noise_sigma": 0.0}, {"seed": 2, "noise_sigma": 0.0}]
    local = [cil.HardwareSession(cil.make_backend("analog-mismatch", **o)).run(spec, params, x, record=True)
             for o in chips]
    with cil.make_backend("ray:analog-mismatch", worker_options=chips, mode="population", num_cpus=0) as pop:
        got = cil.HardwareSession(pop).run(spec, params, x, record=True)
        sets = cil.HardwareSession(pop).run(spec, {k: torch.stack([v, v * 2]) for k, v in params.items()}, x,
                                            n_sets=2)
        # the session folds batch norm for the workers' chip as it would locally
        assert pop.capabilities == cil.make_backend("analog-mismatch").capabilities
    assert not torch.equal(local[0].output, local[1].output)  # two different chips
    assert torch.equal(got.output, (local[0].output + local[1].output) / 2)
    for k in range(len(got.layers)):
        assert torch.equal(got.layers[k].spikes, (local[0].layers[k].spikes + local[1].layers[k].spikes) / 2)
    assert got.meta["population"] == [float(o.output.sum()) for o in local]
    assert sets.output.shape[1] == 2 and torch.equal(sets.output[:, 0], got.output)
def test_wrong_or_missing_token_is_refused_quickly(cluster, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(cil_ray.AuthError, match="refused the token"):
        cil_ray.probe(cluster["gcs"], "not-the-token")
    with pytest.raises(cil_ray.AuthError, match="requires a token and none was given"):
        cil_ray.probe(cluster["gcs"], None)
    assert cil_ray.probe(cluster["gcs"], TOKEN)
    with pytest.raises(cil_ray.ClusterError, match="no Ray head node answered"):
        cil_ray.probe("127.0.0.1:1", TOKEN, timeout=2)
    assert time.monotonic() - t0 < 10
    loose = tmp_path / "loose.token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    with pytest.raises(cil_ray.AuthError, match="chmod 600"):
        cil_ray.read_token_file(loose)


def test_remote_client_with_a_token_file(cluster, tmp_path):
    """A second process (the laptop) connects with a 0600 token file and trains on the cluster;
    with the wrong token it gets an AuthError within seconds. Nothing it writes is world-readable."""
    good = cil_ray.write_token_file(tmp_path / "keys" / "lab.token", TOKEN)
    bad = cil_ray.write_token_file(tmp_path / "bad.token")
    assert stat.S_IMODE(good.stat().st_mode) == 0o600 and stat.S_IMODE(bad.stat().st_mode) == 0o600
    assert stat.S_IMODE(good.parent.stat().st_mode) == 0o700
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys, time, cil_core as cil, cil_ray\n"
        "from cil_core.testing import default_case\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    cil_ray.connect(sys.argv[1], token_file=sys.argv[2])\n"
        "except cil_ray.AuthError as e:\n"
        "    print('AUTH', round(time.monotonic() - t0, 1), e); sys.exit(3)\n"
        "spec, params, x = default_case()\n"
        "chip = cil.make_backend('ray:ideal', num_cpus=0)\n"
        "out = cil.HardwareSession(chip).run(spec, params, x).output\n"
        "print('OK', float(out.sum()))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    ok = subprocess.run([sys.executable, "-c", script, cluster["gcs"], str(good)], env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr[-3000:]
    spec, params, x = default_case()
    want = float(cil.HardwareSession(cil.make_backend("ideal")).run(spec, params, x).output.sum())
    assert f"OK {want}" in ok.stdout
    refused = subprocess.run([sys.executable, "-c", script, cluster["gcs"], str(bad)], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 3 and "refused the token" in refused.stdout, refused.stdout + refused.stderr[-2000:]
    assert float(refused.stdout.split()[1]) < 10
    assert not any(home.rglob("*")), "the client wrote nothing into its home folder"


def test_nothing_written_world_readable(cluster):
    temp = Path(cluster["temp_dir"])
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700, "Ray's files lie under a private folder"
    home_token = Path.home() / ".ray" / "auth_token"
    assert home_token.exists() == cluster["had_home_token"], "no token file was written to ~/.ray"
