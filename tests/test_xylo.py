"""The ``xylo`` backend (plugins/cil-xylo): SynSense Xylo Audio 2 through the vendor's simulator.

* the backend contract (``check_backend`` on a synaptic-current network, and its refusal);
* the batched engine equals xylosim (rockpool's ``XyloSim``) spike for spike and membrane for
  membrane on random integer networks, saturating ones included (``XYLO_NETWORKS`` = 200 by
  default, 1000 more under ``-m slow``), and through the whole transfer path (recurrent, biased networks);
* the transfer: what the deployment says the chip holds, the refusals named before the first call;
* the timing re-alignment brings chip and software closer;
* a Synaptic snntorch model trains with CIL-SPL and with MH on ``xylo`` from the public API;
* rockpool is imported without samna (and a moved import path is a ``PluginError``).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

import cil_core as cil
from cil_core.errors import BackendCapacityError, PluginError
from cil_core.network.executor import simulate
from cil_core.testing import check_backend, random_inputs, synaptic_case

pytest.importorskip("cil_xylo")
from cil_xylo import AUDIO2, IMU, XyloBackend, run_fast, run_xylosim  # noqa: E402
from cil_xylo.engine import XyloNetwork  # noqa: E402

#: random networks compared with xylosim in the default run (the slow run compares 1000 more)
XYLO_NETWORKS = 200


# ----------------------------------------------------------------------------- helpers
def _synaptic(alpha: float = 0.5, beta: float = 0.875, **kw):
    import snntorch as snn

    return snn.Synaptic(alpha=alpha, beta=beta, init_hidden=True, **kw)


def _model(n_in: int = 16, n_hidden: int = 16, n_out: int = 2, *, gain: float = 1.0, bias: bool = False,
           seed: int = 0, alpha: float = 0.5, beta: float = 0.875) -> torch.nn.Sequential:
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, n_hidden, bias=bias), _synaptic(alpha, beta),
                          nn.Linear(n_hidden, n_out, bias=bias), _synaptic(alpha, beta, output=True))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return model


def _data16(T: int = 12, seed: int = 0):
    """Breast cancer reduced to 16 input channels (cil_core.data.breast_cancer.load_breast_cancer_pca)."""
    from cil_core.data.breast_cancer import load_breast_cancer_pca

    split = load_breast_cancer_pca(T, seed=seed)
    return split.train, split.test


def random_network(rng: np.random.Generator, S: int, saturating: bool, imu: bool = False) -> XyloNetwork:
    """A random integer Xylo network: any sizes within the chip's, int8 codes, shifts, decays,
    thresholds and biases over their whole registers. ``saturating``: large shifts, low
    thresholds, large biases and input bursts drive the 16-bit state into its bounds. ``imu``:
    Xylo IMU's layout (rockpool's ``syns63300``): input synapses into the first ``n_ien`` hidden
    neurons only, output synapses from the last ``n_oen`` only, one synapse per neuron, up to 16
    outputs, a recurrent matrix always present (it holds the chain of hidden layers)."""
    nin, nh, no = int(rng.integers(1, 17)), int(rng.integers(1, 48)), int(rng.integers(1, 17 if imu else 9))
    kmax = 7 if saturating else 3

    def w(*shape):
        return rng.integers(-128, 128, size=(S, *shape)).astype(np.int8)

    thr_hi = 400 if saturating else 2 ** 15
    if imu:
        ien, oen = int(rng.integers(1, nh + 1)), int(rng.integers(1, nh + 1))
        w_in, w_out = w(nin, nh), w(nh, no)
        w_in[:, :, ien:] = 0
        w_out[:, :nh - oen] = 0
        imu_layout = dict(w_in=w_in, w_rec=w(nh, nh), w_out=w_out, n_ien=ien, n_oen=oen, synapses=1)
    return XyloNetwork(
        **(imu_layout if imu else dict(w_in=w(nin, nh), w_rec=w(nh, nh) if rng.random() < 0.6 else None,
                                       w_out=w(nh, no))),
        shift_in=rng.integers(0, kmax + 1, S), shift_rec=rng.integers(0, kmax + 1, S),
        shift_out=rng.integers(0, kmax + 1, S),
        dash_mem=rng.integers(0, 16, (S, nh)), dash_syn=rng.integers(1, 16, (S, nh)),
        threshold=rng.integers(1, thr_hi, (S, nh)),
        bias=rng.integers(-2 ** 15, 2 ** 15, (S, nh)) if rng.random() < 0.4 else np.zeros((S, nh), np.int64),
        dash_mem_out=rng.integers(0, 16, (S, no)), dash_syn_out=rng.integers(1, 16, (S, no)),
        threshold_out=rng.integers(1, thr_hi, (S, no)),
        bias_out=rng.integers(-2 ** 15, 2 ** 15, (S, no)) if rng.random() < 0.3 else np.zeros((S, no), np.int64))


def _compare_engines(n_networks: int, seed: int, imu: bool = False) -> None:
    """The batched engine against xylosim on ``n_networks`` random networks (half of them
    saturating); ``imu``: Xylo IMU's layout, against rockpool's ``syns63300`` ``XyloSim``."""
    rng = np.random.default_rng(seed)
    package = IMU.rockpool_package if imu else None
    saturated = 0
    for k in range(n_networks):
        sat = k % 2 == 1
        net = random_network(rng, int(rng.integers(1, 4)), sat, imu)
        T, B = int(rng.integers(5, 40)), int(rng.integers(1, 4))
        x = rng.integers(0, 24 if sat else 2, size=(T, B, net.sizes[0]))  # bursts above the 15-spike cap too
        # both kernels: the parallel one (numba's threads over the pairs) and the serial one
        fast = run_fast(net, x, record=True, parallel=(k // 2) % 2 == 0)
        ref = run_xylosim(net, x, record=True, package=package)
        for key in ("output", "spikes", "vmem", "vmem_out"):
            assert np.array_equal(fast[key], ref[key]), (
                f"network {k} (seed {seed}): the engine's {key} differs from xylosim's in "
                f"{int((fast[key] != ref[key]).sum())} of {fast[key].size} values")
        v = np.concatenate([ref["vmem"].ravel(), ref["vmem_out"].ravel()])
        saturated += bool((v == 2 ** 15 - 1).any() or (v == -2 ** 15).any())
    # the comparison covered the saturating regime, not only the easy one
    assert saturated >= n_networks // 4, f"only {saturated} of {n_networks} networks reached the 16-bit bounds"


# ----------------------------------------------------------------------------- contract
def test_xylo_is_registered_and_meets_the_backend_contract():
    backend = cil.make_backend("xylo")
    assert isinstance(backend, XyloBackend)
    spec, params, x = synaptic_case(0)
    too_big = synaptic_case(0)[0]
    from cil_core.network.description import Dense, NetworkSpec

    wide = NetworkSpec((Dense("w", None, 17, 8), *too_big.layers[1:]), (17,))
    check_backend(backend, spec, params, x, too_big=wide, limit="at most 16 input channels")


@pytest.mark.parametrize("n,seed", [(XYLO_NETWORKS, 0)])
def test_engine_equals_xylosim_on_random_networks(n, seed):
    _compare_engines(n, seed)


@pytest.mark.slow
def test_engine_equals_xylosim_on_1000_more_random_networks():
    _compare_engines(1000, 1)


def test_both_engines_agree_through_the_transfer_with_recurrence_and_biases():
    import snntorch as snn
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 12), snn.RSynaptic(alpha=0.75, beta=0.9375, linear_features=12,
                                                           init_hidden=True),
                          nn.Linear(12, 3), _synaptic(0.5, 0.75, output=True))
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[0].bias.add_(0.05)
    net = cil.wrap(model)
    assert net.spec.layers[1].recurrent is not None
    x = (torch.rand(20, 5, 10, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    params = {k: torch.stack([v, 0.7 * v]) for k, v in net.detached_parameters().items()}
    fast = cil.HardwareSession(XyloBackend(engine="fast")).run(net.spec, params, x, n_sets=2, record=True)
    ref = cil.HardwareSession(XyloBackend(engine="xylosim")).run(net.spec, params, x, n_sets=2, record=True)
    assert fast.output.sum() > 0 and fast.layers[0].spikes.sum() > 0
    assert torch.equal(fast.output, ref.output)
    for a, b in zip(fast.layers, ref.layers):
        assert torch.equal(a.spikes, b.spikes) and torch.equal(a.membrane, b.membrane)


# ----------------------------------------------------------------------------- transfer
def test_deployment_holds_what_the_chip_realises():
    spec, params, _ = synaptic_case(1)
    dep = cil.HardwareSession(XyloBackend()).transfer(spec, params)
    net = dep.chip["network"]
    assert net.w_in.dtype == np.int8 and net.w_out.dtype == np.int8
    assert AUDIO2.weight_shift.lo <= int(net.shift_in[0]) <= AUDIO2.weight_shift.hi
    assert (net.threshold >= 1).all() and (net.threshold <= 2 ** 15 - 1).all()
    assert (net.dash_mem == 3).all() and (net.dash_syn == 1).all()  # beta = 1 - 2^-3, alpha = 1 - 2^-1
    # the realised weights are the codes in software units, one code step from the given ones at most
    w = params["0.weight"]
    step = float(w.abs().max()) / 127
    got = dep.params["0.weight"]
    assert not torch.equal(got, w) and float((got - w).abs().max()) <= step / 2 + 1e-6
    scale = float(net.threshold[0, 0]) / (0.5 * 1.0)  # theta_c = s * alpha * theta
    codes = net.w_in[0].T.astype(np.float64) * 2 ** int(net.shift_in[0])
    assert np.allclose(got.double().numpy(), codes / scale, atol=1e-6)
    # beta, alpha, theta are held exactly: the deployed spec is the given one; the chip record says so
    assert dep.spec.describe() == spec.describe()
    hid = dep.chip["neurons"][1]
    assert float(hid["beta"][0]) == 0.875 and float(hid["alpha"][0]) == 0.5
    assert torch.allclose(hid["threshold"], torch.ones_like(hid["threshold"]))


def test_realigned_output_follows_the_software_model_more_closely():
    spec, params, _ = synaptic_case(2, T=24, B=32)
    x = random_inputs(spec, 2, T=24, B=32, p=0.25)
    sw = simulate(spec, params, x).output
    agree = {}
    for align in (True, False):
        out = cil.HardwareSession(XyloBackend(align_output=align)).run(spec, params, x).output
        agree[align] = float((out == sw).float().mean())
    assert agree[True] > agree[False] and agree[True] >= 0.9, agree


def test_inputs_are_spike_counts_capped_at_15_per_step():
    spec, params, x = synaptic_case(0)
    session = cil.HardwareSession(XyloBackend())
    dep = session.transfer(spec, params)
    burst = x * 20
    assert torch.equal(session.forward(dep, burst).output, session.forward(dep, x * 15).output)
    assert not torch.equal(session.forward(dep, x * 15).output, session.forward(dep, x).output)
    with pytest.raises(BackendCapacityError, match="integer in 0..255"):
        session.forward(dep, x * 0.5)


# ----------------------------------------------------------------------------- refusals
class _Counting(XyloBackend):
    calls = 0

    def transfer(self, spec, params, n_sets=None):
        type(self).calls += 1
        return super().transfer(spec, params, n_sets)


def _refused(model, match: str, **options) -> None:
    _Counting.calls = 0
    with pytest.raises(BackendCapacityError, match=match):
        cil.Trainer(cil.wrap(model), _Counting(**options), "cil-spl")
    assert _Counting.calls == 0, "refused only at the first call, not before it"


def test_a_decay_the_chip_cannot_hold_is_refused_naming_the_nearest_values():
    _refused(_model(beta=0.9), r"beta=0\.9.*0\.875 \(k=3\) and 0\.9375 \(k=4\).*round_decays=True")
    _refused(_model(alpha=0.6), r"alpha=0\.6.*0\.5 \(k=1\) and 0\.75 \(k=2\)")


def test_round_decays_runs_the_nearest_value_and_says_so():
    net = cil.wrap(_model(beta=0.9))
    session = cil.HardwareSession(XyloBackend(round_decays=True))
    with pytest.warns(UserWarning, match="nearest value it holds"):
        dep = session.transfer(net.spec, net.detached_parameters())
    assert dep.spec.layers[1].beta == 0.875 and net.spec.layers[1].beta == 0.9
    assert float(dep.chip["neurons"][1]["beta"][0]) == 0.875


@pytest.mark.parametrize("what,match", [
    ("inputs", "has 17 input channels; the chip holds at most 16 input channels: reduce"),
    ("hidden", "has 1001 hidden neurons; the chip holds at most 1000"),
    ("outputs", "has 9 output neurons; the chip holds at most 8"),
    ("leaky", "no synaptic-current.*requires it of every neuron layer.*snn.Synaptic"),
    ("deep", "2 hidden neuron layer.*3 neuron layers.*exactly 1.*single hidden layer"),
    ("zero-reset", "resets by 'zero'.*subtract"),
    ("conv", "does not support 'conv2d'.*dense"),
])
def test_what_the_chip_cannot_hold_is_refused_before_the_first_call(what, match):
    import snntorch as snn
    from torch import nn

    if what == "inputs":
        model = _model(n_in=17)
    elif what == "hidden":
        model = _model(n_hidden=1001)
    elif what == "outputs":
        model = _model(n_out=9)
    elif what == "leaky":
        model = nn.Sequential(nn.Linear(4, 8), snn.Leaky(beta=0.875, init_hidden=True),
                              nn.Linear(8, 2), snn.Leaky(beta=0.875, init_hidden=True, output=True))
    elif what == "deep":
        model = nn.Sequential(nn.Linear(4, 8), _synaptic(), nn.Linear(8, 8), _synaptic(), nn.Linear(8, 2),
                              _synaptic(output=True))
    elif what == "zero-reset":
        model = nn.Sequential(nn.Linear(4, 8), _synaptic(reset_mechanism="zero"), nn.Linear(8, 2),
                              _synaptic(output=True))
    else:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), _synaptic(), nn.Flatten(), nn.Linear(2 * 2 * 2, 2),
                              _synaptic(output=True))
        _Counting.calls = 0
        with pytest.raises(BackendCapacityError, match=match):
            cil.Trainer(cil.wrap(model, input_shape=(1, 4, 4)), _Counting(), "cil-spl")
        assert _Counting.calls == 0
        return
    _refused(model, match)


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data16():
    train, test = _data16(T=12)
    return train.subset(torch.arange(160)), test


def test_a_synaptic_snntorch_model_trains_with_cil_spl_on_xylo(data16):
    train, test = data16
    trainer = cil.Trainer(cil.wrap(_model()), "xylo", "cil-spl", seed=0, lr=0.02)
    before = trainer.evaluate(test)["accuracy"]
    trainer.fit(train, epochs=2, batch_size=40)
    after = trainer.evaluate(test)["accuracy"]
    assert after >= before + 0.2 and after >= 0.8, (before, after)


def test_a_synaptic_snntorch_model_trains_with_mh_on_xylo(data16):
    train, test = data16
    trainer = cil.Trainer(cil.wrap(_model()), "xylo", "mh", seed=0, chains=4, burn_in=30, block_size=32)
    before = trainer.evaluate(test)["accuracy"]
    trainer.fit(train, steps=60)
    after = trainer.evaluate(test)["accuracy"]
    assert after >= before + 0.1, (before, after)


# ----------------------------------------------------------------------------- the SDK import
def test_a_training_run_through_rockpool_never_imports_samna(data16):
    train, test = data16
    trainer = cil.Trainer(cil.wrap(_model()), cil.make_backend("xylo", engine="xylosim"), "cil-spl", seed=0, lr=0.02)
    trainer.fit(train.subset(torch.arange(40)), epochs=1, batch_size=40)
    trainer.evaluate(test.subset(torch.arange(20)))
    assert "rockpool.devices.xylo.syns61201" in sys.modules  # the vendor's simulator did run
    assert "samna" not in sys.modules
    assert not any(m.startswith("samna.") for m in sys.modules)
    from rockpool.utilities.backend_management import backend_available

    assert not backend_available("samna")


def test_a_moved_rockpool_import_path_is_a_plugin_error_naming_it(monkeypatch):
    from dataclasses import replace

    from cil_xylo import backend, sdk

    moved = "rockpool.devices.xylo.syns99999"
    monkeypatch.setattr(sdk, "_cache", {})
    monkeypatch.setattr(sdk, "AUDIO2_PACKAGE", moved)
    with pytest.raises(PluginError, match=r"syns99999.*rockpool==3\.1\.0"):
        sdk.xylo_audio2()
    monkeypatch.setitem(backend.CHIPS, "audio2", replace(AUDIO2, rockpool_package=moved))
    with pytest.raises(PluginError, match="syns99999"):
        XyloBackend(engine="xylosim")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        XyloBackend(engine="fast")  # the batched engine needs no rockpool


def _one_neuron_net(w_in: int, shift_in: int, bias: int, bias_out: int, w_out: int = 0) -> XyloNetwork:
    """1 input, 1 hidden, 1 output; thresholds at the top of the register (no spike resets)."""
    one = lambda v: np.full((1, 1), v, np.int64)  # noqa: E731
    return XyloNetwork(w_in=np.full((1, 1, 1), w_in, np.int8), w_rec=None, w_out=np.full((1, 1, 1), w_out, np.int8),
                       shift_in=np.array([shift_in]), shift_rec=np.array([0]), shift_out=np.array([0]),
                       dash_mem=one(15), dash_syn=one(1), threshold=one(2 ** 15 - 1), bias=one(bias),
                       dash_mem_out=one(15), dash_syn_out=one(1), threshold_out=one(2 ** 15 - 1), bias_out=one(bias_out))


def test_saturation_counts_the_neuron_steps_clipped_at_the_16_bit_rails():
    from cil_xylo.engine import saturation

    x = np.zeros((4, 1, 1), np.int64)
    x[0] = 3  # 3 x (127 << 7) = 48768 > 32767: the hidden current clips at step 0 only
    res = run_fast(_one_neuron_net(127, 7, 0, 0), x, saturation=True)
    assert res["saturation"].tolist() == [[[1, 0, 0, 0]]]
    # a bias of -20000 per step: the membrane reaches -40000 at step 1 and stays at the rail (clipped at steps 1..3)
    res = run_fast(_one_neuron_net(0, 0, -20000, -20000), x, saturation=True)
    assert res["saturation"].tolist() == [[[0, 3, 0, 3]]]
    ref = run_xylosim(_one_neuron_net(0, 0, -20000, -20000), x, record=True)  # the vendor's state agrees
    assert ref["vmem"][:, 0, 0, 0].tolist() == [-20000, -2 ** 15, -2 ** 15, -2 ** 15]
    # no clipping, no count; the shares are per neuron-step
    assert run_fast(_one_neuron_net(3, 0, 0, 0), x, saturation=True)["saturation"].sum() == 0
    assert saturation(_one_neuron_net(0, 0, -20000, -20000), x) == {
        "hidden current": 0.0, "hidden membrane": 0.75, "output current": 0.0, "output membrane": 0.75}
    # counting leaves the run itself unchanged
    rng = np.random.default_rng(3)
    net = random_network(rng, 2, saturating=True)
    xs = rng.integers(0, 24, size=(20, 3, net.sizes[0]))
    a, b = run_fast(net, xs, record=True, saturation=True), run_fast(net, xs, record=True)
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert a["saturation"].sum() > 0


def test_a_rockpool_specification_round_trips_through_the_engine_network():
    rng = np.random.default_rng(5)
    net = random_network(rng, 1, saturating=False)
    back = XyloNetwork.from_specification(net.specification(0))
    x = rng.integers(0, 2, size=(16, 2, net.sizes[0]))
    assert np.array_equal(run_fast(back, x)["output"], run_fast(net, x)["output"])
    spec = net.specification(0)
    spec["weights_in"][:, :, 1] = 1  # a second synapse the engines do not run
    with pytest.raises(ValueError, match="second synapse"):
        XyloNetwork.from_specification(spec)


def test_per_neuron_decays_and_thresholds_are_held_per_neuron():
    from cil_core.network.description import NetworkSpec

    spec, params, x = synaptic_case(0)
    layers = list(spec.layers)
    beta = torch.tensor([0.5, 0.75, 0.875, 0.9375, 0.5, 0.75, 0.875, 0.96875])
    layers[1] = layers[1].with_(beta=beta, threshold=torch.linspace(0.8, 1.2, 8))
    spec = NetworkSpec(tuple(layers), spec.input_shape)
    check_backend(XyloBackend(), spec, params, x)
    dep = cil.HardwareSession(XyloBackend()).transfer(spec, params)
    assert dep.chip["network"].dash_mem[0].tolist() == [1, 2, 3, 4, 1, 2, 3, 5]
    thr = dep.chip["network"].threshold[0]
    assert (np.diff(thr) > 0).all()  # one integer threshold per neuron, on the population's scale
    assert torch.allclose(dep.spec.layers[1].threshold, torch.linspace(0.8, 1.2, 8), atol=1e-3)
    fast = cil.HardwareSession(XyloBackend()).run(spec, params, x, record=True)
    ref = cil.HardwareSession(XyloBackend(engine="xylosim")).run(spec, params, x, record=True)
    assert torch.equal(fast.output, ref.output) and torch.equal(fast.layers[0].membrane, ref.layers[0].membrane)


def test_the_engine_benchmark_compares_both_engines_and_writes_its_json(tmp_path):
    import json

    from test_benchmarks import load

    bench = load("xylo_engine")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "xylo_engine.json").read_text())
    assert len(res["cases"]) == 2 and all(c["equal"] for c in res["cases"])
    assert all(c["seconds"]["xylosim"] > 0 and c["seconds"]["fast_1t"] > 0 for c in res["cases"])


def test_audio3_is_the_same_core_with_its_own_limits():
    model = _model(n_out=12)
    _refused(model, "has 12 output neurons; the chip holds at most 8")  # Audio 2
    net = cil.wrap(_model(n_in=10, n_out=12, gain=2.0))
    x = (torch.rand(16, 4, 10, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    params = net.detached_parameters()
    fast = cil.HardwareSession(XyloBackend(chip="audio3")).run(net.spec, params, x, record=True)
    ref = cil.HardwareSession(XyloBackend(chip="audio3", engine="xylosim")).run(net.spec, params, x, record=True)
    assert fast.layers[0].spikes.sum() > 0
    assert torch.equal(fast.output, ref.output) and torch.equal(fast.layers[0].membrane, ref.layers[0].membrane)
    assert "rockpool.devices.xylo.syns63300" in sys.modules and "samna" not in sys.modules
    _refused(_model(n_hidden=993), "has 993 hidden neurons; the chip holds at most 992", chip="audio3")


def test_the_recreation_runs_as_a_resumable_sweep_and_both_chip_engines_agree(tmp_path):
    """benchmarks/xylo_recreation.py on a tiny budget: rockpool's own flow (trained in torch, mapped,
    quantized, run on XyloSim) and cil's methods, one JSON line per point; a resumed run takes
    every point from the file; the batched engine and XyloSim give the same chip accuracy."""
    from test_benchmarks import load

    bench = load("xylo_recreation")
    cfg = dict(bench.CONFIG, epochs=1, mh_steps=4, mh_burn_in=2, n_train=40, n_test=30)
    jsonl = tmp_path / "x.jsonl"
    methods = ["rockpool", "offline", "cil-spl", "mh", "mh-ft", "mala", "mala-warm"]
    first = bench.run(cfg, 1, lambda m: None, results=jsonl, regimes=["sparse", "dense"], methods=methods)
    assert len(jsonl.read_text().splitlines()) == 2 * len(methods)
    dense = first["dense"]["offline"][0]
    assert dense["chip_calls"] == 0 and first["dense"]["cil-spl"][0]["chip_calls"] == 2  # 40 samples, batch 32
    for regime in first.values():
        for m, (r,) in regime.items():
            assert 0 <= r["accuracy"][1] <= 1
            if m != "rockpool":
                assert r["xylosim_accuracy"] == r["accuracy"][1]
            assert set(r["saturation"]) == {"hidden current", "hidden membrane", "output current", "output membrane"}
            assert all(0 <= v <= 1 for v in r["saturation"].values())
    # 15 spikes per channel and step clip the hidden current at the default threshold target; binary spikes do not
    assert dense["saturation"]["hidden current"] > 0.2 > first["sparse"]["offline"][0]["saturation"]["hidden current"]
    for m in ("mala", "mala-warm"):  # the same budget (mala-warm's software warm start makes no chip call)
        assert first["sparse"][m][0]["chip_calls"] == first["sparse"]["mh"][0]["chip_calls"]
    # the dense regime drives the chip's hidden neurons to several spikes per step, the software model's to one
    hidden = dense["fidelity"]["layers"][0]
    assert hidden["chip_rate"] > 1.3 * hidden["sw_rate"], hidden
    again = bench.run(cfg, 1, lambda m: None, results=jsonl, regimes=["sparse", "dense"], methods=methods, resume=True)
    assert again == first
    assert "samna" not in sys.modules


# ----------------------------------------------------------------------------- the realised neuron parameters
def _rounded_pair(seed: int = 0):
    """The same weights as a beta=0.9 model (run by round_decays=True as 0.875) and a beta=0.875 model."""
    a, b = _model(beta=0.9, seed=seed), _model(beta=0.875, seed=seed)  # the same seed: the same weights
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(a[2].weight, b[2].weight)
    return a, b


def test_cil_spl_runs_its_software_pass_with_the_decays_the_chip_realises(data16):
    """round_decays=True runs beta=0.9 as 0.875 on the chip; CIL-SPL's gradient is then that of the
    0.875 network (the one the chip runs), step for step, not of the 0.9 one the model names."""
    train, _ = data16
    batch = train.subset(torch.arange(40))
    a, b = _rounded_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the transfer warns that it rounds
        ta = cil.Trainer(cil.wrap(a), XyloBackend(round_decays=True), "cil-spl", seed=0, lr=0.02)
        ta.fit(batch, epochs=2, batch_size=20)
    tb = cil.Trainer(cil.wrap(b), XyloBackend(), "cil-spl", seed=0, lr=0.02)
    tb.fit(batch, epochs=2, batch_size=20)
    assert a[1].beta.item() == pytest.approx(0.9)  # the model still names 0.9
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(a[2].weight, b[2].weight)
    # and the software pass without the realised values would have trained other weights
    c, _ = _rounded_pair()
    tc = cil.Trainer(cil.wrap(c), "ideal", "cil-spl", seed=0, lr=0.02)  # ideal runs 0.9: software = chip
    tc.fit(batch, epochs=2, batch_size=20)
    assert not torch.equal(c[0].weight, a[0].weight)


def test_the_fidelity_report_compares_the_chip_with_the_software_of_its_realised_decays(data16):
    _, test = data16
    a, b = _rounded_pair(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ra = cil.fidelity(cil.wrap(a), XyloBackend(round_decays=True), test)
    rb = cil.fidelity(cil.wrap(b), XyloBackend(), test)
    assert ra.agreement == rb.agreement and ra.software_accuracy == rb.software_accuracy
    assert [lf.sw_rate for lf in ra.layers] == [lf.sw_rate for lf in rb.layers]
    assert [lf.distortion for lf in ra.layers] == [lf.distortion for lf in rb.layers]
