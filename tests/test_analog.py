"""The analog-mismatch backend (plugin cil-analog): exactness at strength 0, one test per
non-ideality in its documented direction, chip identity by seed, the noise stream, set
vectorisation, registration, and chip-in-the-loop training beating offline at strength 1."""

from __future__ import annotations

import pytest
import torch

cil = pytest.importorskip("cil_core")
cil_analog = pytest.importorskip("cil_analog")

from cil_analog import AnalogMismatchBackend, NonIdealities  # noqa: E402
from cil_core.network.reference import feedforward  # noqa: E402
from cil_core.testing import check_backend, random_inputs  # noqa: E402

OFF = dict(gain_sigma=0.0, threshold_sigma=0.0, tau_sigma=0.0, saturation=0.0, ei_asymmetry=0.0,
           dac_bits=None, weight_range=None, noise_sigma=0.0, dead_fraction=0.0)


def only(**on) -> dict:
    """Every non-ideality off except ``on``."""
    return {**OFF, **on}


def run(backend, net, x, params=None, n_sets=None, record=False):
    p = net.detached_parameters() if params is None else params
    return backend.forward(backend.transfer(net.spec, p, n_sets), x, record=record)


def const_input(T=40, B=1, n=1, rate=1.0):
    return torch.full((T, B, n), rate)


def set_weight(net, name, value):
    with torch.no_grad():
        net.synaptic_parameters()[name].copy_(torch.as_tensor(value, dtype=torch.float32))


@pytest.fixture(scope="module")
def bc():
    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    return load_breast_cancer_spikes()


# ----------------------------------------------------------------------------- the contract
def test_meets_the_backend_contract():
    check_backend(AnalogMismatchBackend(strength=1.0, seed=3, noise_sigma=0.0))  # deterministic: every check
    check_backend(AnalogMismatchBackend(strength=1.0, seed=3))  # with membrane noise (stochastic)
    net = feedforward([6, 8, 4], bias=True, weight_gain=3.0, seed=1)  # biases are synapses too
    check_backend(AnalogMismatchBackend(strength=0.5, seed=1, noise_sigma=0.0), net.spec, net.detached_parameters(),
                  random_inputs(net.spec, 1))


# ----------------------------------------------------------------------------- exactness
def test_strength_zero_reproduces_the_ideal_backend_exactly(bc):
    net = feedforward([62, 32, 2], seed=0, weight_gain=3.0)
    x = bc.train.x[:, :64]
    ideal = cil.make_backend("ideal")
    chip = cil.make_backend("analog-mismatch", strength=0.0, seed=7)
    assert not chip.stochastic
    a, b = run(ideal, net, x, record=True), run(chip, net, x, record=True)
    assert a.output.sum() > 0 and a.layers[0].spikes.sum() > 0  # the case is not trivially silent
    assert torch.equal(a.output, b.output)
    assert torch.equal(a.layers[0].spikes, b.layers[0].spikes)
    # several parameter sets at once, too
    p = {k: torch.stack([v, 0.8 * v, 1.3 * v]) for k, v in net.detached_parameters().items()}
    assert torch.equal(run(ideal, net, x, p, 3).output, run(chip, net, x, p, 3).output)


def test_defaults_scale_with_strength():
    assert NonIdealities.at(0.0) == NonIdealities()
    lo, hi = NonIdealities.at(0.5), NonIdealities.at(1.0)
    for f in ("gain_sigma", "threshold_sigma", "tau_sigma", "saturation", "ei_asymmetry", "noise_sigma"):
        assert 0 < getattr(lo, f) < getattr(hi, f)
    assert hi.dac_bits < lo.dac_bits and hi.weight_range < lo.weight_range
    assert NonIdealities.at(1.0, gain_sigma=0.0).gain_sigma == 0.0  # individually overridable
    with pytest.raises(cil.CilError):
        NonIdealities.at(1.0, no_such_knob=1)


# ----------------------------------------------------------------------------- each non-ideality
def test_weight_range_clips_and_dac_quantizes_at_transfer():
    net = feedforward([20, 5], seed=0, weight_gain=10.0)  # weights up to ~2.2, threshold 1
    w = net.detached_parameters()["0.weight"]
    chip = AnalogMismatchBackend(strength=1.0, **only(weight_range=1.0, dac_bits=4))
    q = chip.transfer(net.spec, net.detached_parameters()).params["0.weight"]
    assert float(q.abs().max()) <= 1.0 + 1e-6 and float(w.abs().max()) > 1.5  # clipped to ±rho*theta
    step = 1.0 / 7  # 4 bits: codes -7..7
    assert torch.allclose(q / step, torch.round(q / step), atol=1e-4)
    assert len(torch.unique(q)) <= 15
    inside = w.abs() <= 1.0
    assert float((q - w)[inside].abs().max()) <= step / 2 + 1e-6  # round to the nearest code


def test_saturating_synapses_inject_less_current():
    net = feedforward([1, 1], seed=0, beta=1.0)
    set_weight(net, "0.weight", [[0.9]])
    x = const_input()
    ideal = run(AnalogMismatchBackend(strength=0.0), net, x).output.sum()
    sat = run(AnalogMismatchBackend(strength=1.0, **only(saturation=2.0)), net, x).output.sum()
    # f(0.9) = tanh(1.8)/2 = 0.473: about half as many spikes
    assert sat < ideal
    assert abs(float(sat) - 40 * 0.4733) <= 1.0


def test_excitation_outweighs_inhibition():
    net = feedforward([2, 1], seed=0, beta=1.0)
    set_weight(net, "0.weight", [[0.5, -0.3]])
    x = const_input(n=2)
    ideal = run(AnalogMismatchBackend(strength=0.0), net, x).output.sum()
    ei = run(AnalogMismatchBackend(strength=1.0, **only(ei_asymmetry=0.8)), net, x).output.sum()
    # 0.5*1.4 - 0.3*0.6 = 0.52 > 0.2 per step
    assert abs(float(ideal) - 40 * 0.2) <= 1.0 and abs(float(ei) - 40 * 0.52) <= 1.0


def test_synapse_gain_mismatch_is_a_hidden_per_synapse_lognormal_factor(bc):
    net = feedforward([62, 32, 2], seed=0, weight_gain=3.0)
    x = bc.train.x[:, :32]
    chip = AnalogMismatchBackend(strength=1.0, seed=3, **only(gain_sigma=0.5))
    m = chip.reveal_mismatch(net.spec)
    g = m["synapse_gain"]["0.weight"]
    assert g.shape == (32, 62) and abs(float(torch.log(g).std()) - 0.5) < 0.05
    # the chip behaves exactly like the ideal network with the revealed gains applied
    p = {k: v * m["synapse_gain"][k] for k, v in net.detached_parameters().items()}
    ref = run(cil.make_backend("ideal"), net, x, p).output
    out = run(chip, net, x).output
    assert torch.equal(out, ref)
    assert not torch.equal(out, run(cil.make_backend("ideal"), net, x).output)


def test_threshold_offsets_order_the_firing_rates():
    n = 64
    net = feedforward([1, n], seed=0, beta=1.0)
    set_weight(net, "0.weight", torch.full((n, 1), 0.3))
    x = const_input(T=60)
    chip = AnalogMismatchBackend(strength=1.0, seed=1, **only(threshold_sigma=0.4))
    thr = chip.reveal_mismatch(net.spec)["threshold"][1]
    counts = run(chip, net, x).output.sum((0, 1))
    ideal = run(AnalogMismatchBackend(strength=0.0), net, x).output.sum((0, 1))
    assert thr.std() > 0.2
    order = torch.argsort(thr)
    assert bool((counts[order][1:] <= counts[order][:-1]).all())  # higher threshold, fewer spikes
    assert counts[thr < 0.9].min() > ideal[0] and counts[thr > 1.1].max() < ideal[0]


def test_time_constant_spread_orders_the_firing_rates():
    n = 64
    net = feedforward([1, n], seed=0, beta=0.9)
    set_weight(net, "0.weight", torch.full((n, 1), 0.2))  # steady state 2.0 (ideal): fires
    x = const_input(T=80)
    chip = AnalogMismatchBackend(strength=1.0, seed=2, **only(tau_sigma=0.5))
    beta = chip.reveal_mismatch(net.spec)["beta"][1]
    counts = run(chip, net, x).output.sum((0, 1))
    order = torch.argsort(beta)
    assert bool((counts[order][1:] >= counts[order][:-1]).all())  # longer time constant, more spikes
    assert counts[order[0]] < counts[order[-1]]


def test_membrane_noise_makes_calls_differ_and_lets_subthreshold_neurons_fire():
    n = 32
    net = feedforward([1, n], seed=0, beta=0.5)
    set_weight(net, "0.weight", torch.full((n, 1), 0.45))  # steady state 0.9 < threshold 1
    x = const_input(T=50, B=4)
    assert run(AnalogMismatchBackend(strength=0.0), net, x).output.sum() == 0
    chip = AnalogMismatchBackend(strength=1.0, seed=0, **only(noise_sigma=0.15))
    assert chip.stochastic
    a, b = run(chip, net, x).output, run(chip, net, x).output
    assert a.sum() > 0 and not torch.equal(a, b)


def test_noise_has_its_own_reproducible_stream(bc):
    net = feedforward([62, 32, 2], seed=0, weight_gain=3.0)
    x = bc.train.x[:, :16]
    c1 = AnalogMismatchBackend(strength=1.0, seed=5)
    torch.manual_seed(0)
    a = [run(c1, net, x).output for _ in range(2)]
    c2 = AnalogMismatchBackend(strength=1.0, seed=5)
    torch.manual_seed(123)  # the global RNG plays no part
    b = [run(c2, net, x).output for _ in range(2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])
    c1.reset_noise()
    assert torch.equal(run(c1, net, x).output, a[0])
    # the same chip with another noise seed: same mismatch, different noise
    c3 = AnalogMismatchBackend(strength=1.0, seed=5, noise_seed=99)
    assert not torch.equal(run(c3, net, x).output, a[0])
    assert torch.equal(c3.reveal_mismatch(net.spec)["threshold"][1], c1.reveal_mismatch(net.spec)["threshold"][1])


def test_dead_synapses_are_stuck_at_zero():
    net = feedforward([100, 50], seed=0, beta=1.0)
    set_weight(net, "0.weight", torch.full((50, 100), 0.004))  # 0.4 per step ideal, ~0.28 with 30 % dead
    x = const_input(T=20, n=100)
    chip = AnalogMismatchBackend(strength=1.0, seed=0, **only(dead_fraction=0.3))
    dead = chip.reveal_mismatch(net.spec)["dead"]["0.weight"]
    assert abs(float(dead.float().mean()) - 0.3) < 0.03
    p = {"0.weight": net.detached_parameters()["0.weight"] * (~dead)}
    assert torch.equal(run(chip, net, x).output, run(cil.make_backend("ideal"), net, x, p).output)
    assert run(chip, net, x).output.sum() < run(AnalogMismatchBackend(strength=0.0), net, x).output.sum()


def test_runs_a_wrapped_library_model_with_biases():
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("cil_snntorch", reason="the cil-snntorch plugin is not installed")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(62, 16), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Linear(16, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    net = cil.wrap(model)
    x = (torch.rand(16, 8, 62) < 0.3).float()
    ideal = run(cil.make_backend("ideal"), net, x).output
    assert torch.equal(run(AnalogMismatchBackend(strength=0.0), net, x).output, ideal)
    chip = AnalogMismatchBackend(strength=1.0, seed=1)
    assert run(chip, net, x).output.shape == ideal.shape
    assert set(chip.reveal_mismatch(net.spec)["synapse_gain"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


# ----------------------------------------------------------------------------- chips and sets
def test_same_seed_same_chip_other_seed_other_chip(bc):
    net = feedforward([62, 32, 2], seed=0, weight_gain=3.0)
    x = bc.train.x[:, :64]
    kw = dict(strength=1.0, noise_sigma=0.0)
    a, b, c = AnalogMismatchBackend(seed=11, **kw), AnalogMismatchBackend(seed=11, **kw), AnalogMismatchBackend(seed=12, **kw)
    ma, mb, mc = (k.reveal_mismatch(net.spec) for k in (a, b, c))
    assert torch.equal(ma["synapse_gain"]["0.weight"], mb["synapse_gain"]["0.weight"])
    assert torch.equal(ma["threshold"][1], mb["threshold"][1]) and torch.equal(ma["beta"][3], mb["beta"][3])
    assert not torch.equal(ma["synapse_gain"]["0.weight"], mc["synapse_gain"]["0.weight"])
    assert torch.equal(run(a, net, x).output, run(b, net, x).output)
    assert not torch.equal(run(a, net, x).output, run(c, net, x).output)


def test_parameter_sets_are_vectorized(bc):
    net = feedforward([62, 32, 2], seed=0, weight_gain=3.0)
    x = bc.train.x[:, :40]
    chip = AnalogMismatchBackend(strength=1.0, seed=4, noise_sigma=0.0)
    assert chip.max_sets is None
    base = net.detached_parameters()
    sets = [{k: v * f for k, v in base.items()} for f in (0.7, 1.0, 1.6)]
    p = {k: torch.stack([s[k] for s in sets]) for k in base}
    many = run(chip, net, x, p, 3).output
    assert many.shape == (16, 3, 40, 2)
    for i, s in enumerate(sets):
        assert torch.equal(many[:, i], run(chip, net, x, s).output)


def test_plugin_registers_backend():
    reg = cil.get_manager()
    assert "analog-mismatch" in reg.names("backends")
    b = cil.make_backend("analog-mismatch", strength=0.5, seed=2)
    assert isinstance(b, AnalogMismatchBackend) and b.seed == 2 and b.strength == 0.5


# ----------------------------------------------------------------------------- training on the chip
def test_chip_in_the_loop_beats_offline_at_strength_one(bc):
    """Small fixed case (chip 4, 62-16-2): offline-trained weights lose on the chip; CIL-SPL and
    MH (started from the offline weights) recover on the same chip."""
    torch.set_num_threads(1)
    train = bc.train.subset(torch.arange(200))
    chip_seed = 4

    def chip():
        return cil.make_backend("analog-mismatch", strength=1.0, seed=chip_seed)

    net = feedforward([62, 16, 2], seed=chip_seed)
    off = cil.Trainer(net, "ideal", "offline", seed=0, lr=1e-2)
    off.fit(train, steps=100, batch_size=64)
    offline_weights = net.detached_parameters()
    software = off.evaluate(bc.test)["accuracy"]
    offline = cil.Trainer(net, chip(), "offline").evaluate(bc.test)["accuracy"]
    assert software > 0.9 and offline < software - 0.1  # the chip's hidden non-idealities hurt

    net_spl = feedforward([62, 16, 2], seed=chip_seed)
    spl = cil.Trainer(net_spl, chip(), "cil-spl", seed=0, lr=1e-2)
    spl.fit(train, steps=100, batch_size=64)
    spl_acc = spl.evaluate(bc.test)["accuracy"]

    net_mh = feedforward([62, 16, 2], seed=chip_seed)
    net_mh.load_parameters(offline_weights)
    mh = cil.Trainer(net_mh, chip(), "mh", seed=0, init="network", chains=8, burn_in=60)
    mh.fit(train, steps=120)
    mh_acc = mh.evaluate(bc.test)["accuracy"]
    assert spl_acc > offline + 0.1, (offline, spl_acc)
    assert mh_acc > offline + 0.1, (offline, mh_acc)
