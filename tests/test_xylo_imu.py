"""Xylo IMU (SYNS63300) as ``XyloBackend(chip="imu")``: the same integer core as Audio 2, a chain
of hidden layers held as blocks of one recurrent population.

* the batched engine equals rockpool's IMU ``XyloSim`` (``syns63300``, over ``xylosim.v2``) on
  200 random networks in the IMU layout (input synapses into the first hidden neurons only,
  output synapses from the last only), saturating ones included;
* the transfer of a 16-8-8-2 Synaptic chain lays the network out as rockpool's own IMU mapper
  does (checked against ``syns63300.mapper`` on the same weights), and both engines agree
  through it (recurrence, biases, parameter sets);
* what IMU cannot hold is a named ``BackendCapacityError`` before the first call, from the
  chip's declaration;
* a Synaptic chain trains with CIL-SPL and with MH on the IMU chip from the public API.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import cil_core as cil
from cil_core.network.executor import simulate

pytest.importorskip("cil_xylo")
from cil_xylo import IMU, XyloBackend  # noqa: E402
from test_xylo import _compare_engines, _data16, _refused  # noqa: E402

#: random IMU networks compared with xylosim in the default run
IMU_NETWORKS = 200


def _synaptic(alpha: float = 0.5, beta: float = 0.875, **kw):
    import snntorch as snn

    return snn.Synaptic(alpha=alpha, beta=beta, init_hidden=True, **kw)


def _chain(sizes: tuple[int, ...] = (16, 8, 8, 2), *, gain: float = 2.0, seed: int = 0, bias: bool = False,
           recurrent_layer: int | None = None) -> torch.nn.Sequential:
    """Linear, Synaptic, ... over ``sizes`` (the last Synaptic the output); ``recurrent_layer``:
    that hidden layer (from 0) is an ``RSynaptic`` (recurrence into the current)."""
    import snntorch as snn
    from torch import nn

    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b, bias=bias))
        last = k == len(sizes) - 2
        if k == recurrent_layer:
            mods.append(snn.RSynaptic(alpha=0.75, beta=0.9375, linear_features=b, init_hidden=True))
        else:
            mods.append(_synaptic(output=last))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return model


def _spikes(T: int, B: int, n: int, seed: int, p: float = 0.3) -> torch.Tensor:
    return (torch.rand(T, B, n, generator=torch.Generator().manual_seed(seed)) < p).float()


# ----------------------------------------------------------------------------- the contract
def test_the_imu_chip_meets_the_backend_contract_on_a_chain():
    from cil_core.testing import check_backend, random_inputs

    net = cil.wrap(_chain((16, 8, 8, 2)))
    too_big = cil.wrap(_chain((16, 8, 8, 17))).spec
    x = random_inputs(net.spec, 0, T=20, B=4, p=0.3)
    check_backend(cil.make_backend("xylo", chip="imu"), net.spec, net.detached_parameters(), x, too_big=too_big,
                  limit="at most 16 output neurons")


# ----------------------------------------------------------------------------- the engine
@pytest.mark.parametrize("n,seed", [(IMU_NETWORKS, 5)])
def test_engine_equals_imu_xylosim_on_random_networks(n, seed):
    _compare_engines(n, seed, imu=True)
    assert "rockpool.devices.xylo.syns63300" in sys.modules and "samna" not in sys.modules


@pytest.mark.slow
def test_engine_equals_imu_xylosim_on_1000_more_random_networks():
    _compare_engines(1000, 6, imu=True)


# ----------------------------------------------------------------------------- the transfer
def test_the_transfer_lays_a_chain_out_as_rockpools_imu_mapper_does():
    """16-8-8-2: the same weights through rockpool's IMU mapper (float specification) and through
    cil's transfer (integer specification): the same matrix shapes and blocks, and cil's integer
    weights are the mapper's weights on one scale per population, to within one code step."""
    from cil_xylo.sdk import xylo_subpackage

    imu = xylo_subpackage(IMU.rockpool_package)
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch

    model = _chain((16, 8, 8, 2), bias=False)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    mods = []
    for lin in linears:
        mods += [LinearTorch((lin.in_features, lin.out_features), weight=lin.weight.detach().T.clone(),
                             has_bias=False), LIFTorch(lin.out_features)]
    mapped = imu.mapper(Sequential(*mods).as_graph(), weight_dtype="float")
    net = cil.wrap(model)
    dep = cil.HardwareSession(XyloBackend(chip="imu")).transfer(net.spec, net.detached_parameters())
    ours = dep.chip["specification"]
    for key in ("weights_in", "weights_rec", "weights_out", "dash_mem", "threshold", "dash_mem_out"):
        assert np.shape(ours[key]) == np.shape(mapped[key]), key
    assert dep.chip["blocks"] == [(0, 8), (8, 16)]
    xn = dep.chip["network"]
    s_h = float(xn.threshold[0, 0]) / 0.5  # theta_c = s * alpha * theta, theta = 1
    s_o = float(xn.threshold_out[0, 0]) / 0.5
    for key, shift, s in (("weights_in", xn.shift_in[0], s_h), ("weights_rec", xn.shift_rec[0], s_h),
                          ("weights_out", xn.shift_out[0], s_o)):
        got = np.asarray(ours[key], np.float64) * 2.0 ** int(shift) / s
        want = np.asarray(mapped[key], np.float64)
        step = 2.0 ** int(shift) / s
        assert np.abs(got - want).max() <= step / 2 + 1e-9, (key, np.abs(got - want).max(), step)
    # the chain sits below the diagonal: hidden layer 1 (8..16) is driven by layer 0 (0..8) only
    rec = np.asarray(ours["weights_rec"])[:, :, 0]
    assert rec[:8, 8:].any() and not rec[8:, :].any() and not rec[:8, :8].any()


def test_both_engines_agree_through_the_transfer_of_a_recurrent_biased_chain():
    model = _chain((12, 10, 6, 3), bias=True, recurrent_layer=1, seed=3)
    with torch.no_grad():
        model[0].bias.add_(0.05)
    net = cil.wrap(model)
    assert net.spec.layers[3].recurrent is not None
    x = _spikes(20, 5, 12, 0)
    params = {k: torch.stack([v, 0.7 * v]) for k, v in net.detached_parameters().items()}
    fast = cil.HardwareSession(XyloBackend(chip="imu")).run(net.spec, params, x, n_sets=2, record=True)
    ref = cil.HardwareSession(XyloBackend(chip="imu", engine="xylosim")).run(net.spec, params, x, n_sets=2,
                                                                            record=True)
    assert len(fast.layers) == 3 and [lo.spikes.shape[-1] for lo in fast.layers] == [10, 6, 3]
    assert fast.output.sum() > 0 and all(lo.spikes.sum() > 0 for lo in fast.layers)
    assert torch.equal(fast.output, ref.output)
    for a, b in zip(fast.layers, ref.layers):
        assert torch.equal(a.spikes, b.spikes) and torch.equal(a.membrane, b.membrane)
    assert "samna" not in sys.modules


def test_each_hidden_layer_is_realigned_to_the_software_model():
    """On the chip each hidden layer of the chain sees its predecessor one step late (through the
    recurrent matrix) and the output sees the last one a step late. One input spike through a
    one-to-one chain: in the software model every layer first fires at the input's step; the
    backend returns hidden layer k from chip step k and the output from step L, so its layers fire
    there too, and with ``align_output=False`` (the chip's own timing) layer k fires k steps late."""
    from torch import nn

    model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(2, 2, bias=False), _synaptic())])
    model[-1].output = True
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(3.0 * torch.eye(2))
    net = cil.wrap(model)
    params = net.detached_parameters()
    x = torch.zeros(10, 1, 2)
    x[3, 0, 0] = 1.0
    sw = simulate(net.spec, params, x, record=True)

    def first(spikes: torch.Tensor) -> int:
        return int(torch.nonzero(spikes[:, 0, 0])[0, 0])

    assert [first(lo.spikes) for lo in sw.layers] == [3, 3, 3]
    for align, want in ((True, [3, 3, 3]), (False, [3, 4, 5])):
        obs = cil.HardwareSession(XyloBackend(chip="imu", align_output=align)).run(net.spec, params, x, record=True)
        assert [first(lo.spikes) for lo in obs.layers] == want, align
        assert all(float(lo.spikes[:, 0, 1].sum()) == 0 for lo in obs.layers)  # the other channel stays silent


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("sizes,match", [
    ((16, 8, 2), r"1 hidden neuron layer.*runs 2 or more.*IMU mapper.*16-8-8-2"),
    ((16, 129, 8, 2), r"first hidden layer.*has 129 hidden neurons.*at most 128.*input expansion"),
    ((16, 8, 129, 2), r"last hidden layer.*has 129 hidden neurons.*at most 128.*output expansion"),
    ((16, 100, 300, 100, 2), r"3 hidden layer\(s\) together has 500 hidden neurons.*at most 496.*share"),
    ((16, 8, 8, 17), r"has 17 output neurons; the chip holds at most 16"),
    ((17, 8, 8, 2), r"has 17 input channels; the chip holds at most 16"),
])
def test_what_imu_cannot_hold_is_refused_before_the_first_call(sizes, match):
    _refused(_chain(sizes), "Xylo IMU.*" + match, chip="imu")


def test_imus_declaration_is_what_the_backend_requires():
    backend = XyloBackend(chip="imu")
    assert backend.requires == IMU.requirements
    rows = dict(backend.requires.rows())
    assert rows["hidden neuron layers"] == "2 or more" and rows["hidden neurons in all"] == "<= 496"
    assert rows["neurons in the first / last hidden layer"] == "<= 128 / <= 128"
    assert rows["output neurons"] == "<= 16"
    # Audio 2 keeps its single hidden population
    assert dict(XyloBackend().requires.rows())["hidden neuron layers"] == "exactly 1"
    # the README's capability table has a column per chip, from the same declarations
    from cil_core.app.capabilities import markdown_table

    table = markdown_table({"xylo": XyloBackend}).splitlines()
    assert table[0] == '| feature | `xylo` | `xylo (chip="audio3")` | `xylo (chip="imu")` |'
    assert "| requires: hidden neuron layers | exactly 1 | exactly 1 | 2 or more |" in table
    assert "| requires: hidden neurons in all | - | - | <= 496 |" in table


# ----------------------------------------------------------------------------- training
def test_a_synaptic_chain_trains_with_cil_spl_on_the_imu_chip():
    train, test = _data16(T=12)
    train = train.subset(torch.arange(160))
    trainer = cil.Trainer(cil.wrap(_chain((16, 16, 16, 2), gain=1.0)), cil.make_backend("xylo", chip="imu"),
                          "cil-spl", seed=0, lr=0.02)
    before = trainer.evaluate(test)["accuracy"]
    trainer.fit(train, epochs=2, batch_size=40)
    after = trainer.evaluate(test)["accuracy"]
    assert after >= before + 0.2 and after >= 0.8, (before, after)


def test_a_synaptic_chain_trains_with_mh_on_the_imu_chip():
    """MH with the likelihood measured on the IMU chip (every proposal a parameter set of one call):
    from chance to >= 0.75 in 150 steps of 4 chains."""
    train, test = _data16(T=12)
    train = train.subset(torch.arange(160))
    trainer = cil.Trainer(cil.wrap(_chain((16, 16, 16, 2), gain=1.0)), cil.make_backend("xylo", chip="imu"),
                          "mh", seed=0, chains=4, burn_in=75)
    before = trainer.evaluate(test)["accuracy"]
    trainer.fit(train, steps=150)
    after = trainer.evaluate(test)["accuracy"]
    assert after >= before + 0.3 and after >= 0.75, (before, after)
    assert trainer.session.stats.calls <= 160  # one call per step (all chains' proposals as sets), plus set-up
