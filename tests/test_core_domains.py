"""cil_core.hardware.domains: chip limits and parameter domains as data, and the population
quantizer (one integer scale per population, a shift per matrix)."""

from __future__ import annotations

import math

import pytest
import torch

from cil_core.errors import BackendCapacityError
from cil_core.hardware.domains import IntegerRange, Limit, ShiftDecay, quantize_population


def test_a_limit_names_the_count_the_maximum_and_the_fix():
    lim = Limit("input channels", 16, "reduce the inputs")
    lim.check(16, "layer 'fc'", "chip X")
    with pytest.raises(BackendCapacityError, match=r"chip X: layer 'fc' has 17 input channels; the chip holds at most "
                                                    r"16 input channels: reduce the inputs"):
        lim.check(17, "layer 'fc'", "chip X")


def test_an_integer_range_refuses_fractions_and_values_outside():
    r = IntegerRange("count", 0, 15)
    assert r.contains(torch.tensor([0.0, 3.0, 15.0, 16.0, -1.0, 0.5])).tolist() == [True, True, True, False, False,
                                                                                     False]
    r.check(torch.tensor([0.0, 15.0]), "the input", "chip")
    with pytest.raises(BackendCapacityError, match=r"holds 2 value\(s\).*e\.g\. 0\.5.*integer in 0\.\.15"):
        r.check(torch.tensor([1.0, 0.5, 20.0]), "the input", "chip")
    assert r.clip(torch.tensor([-3.0, 40.0])).tolist() == [0.0, 15.0]


def test_shift_decays_hold_exactly_one_minus_two_to_minus_k():
    d = ShiftDecay("beta", 0, 15)
    assert d.values()[:4] == [0.0, 0.5, 0.75, 0.875] and len(d.values()) == 16
    k, got = d.realise(torch.tensor([0.5, 0.875, 1 - 2 ** -15]), where="layer 1", chip="chip")
    assert k.tolist() == [1, 3, 15] and got.tolist() == [0.5, 0.875, 1 - 2 ** -15]


def test_a_decay_off_the_grid_is_refused_with_its_neighbours_or_rounded_with_a_warning():
    d = ShiftDecay("alpha", 1, 15)
    with pytest.raises(BackendCapacityError, match=r"layer 1 has alpha=0\.9, which the chip cannot hold.*"
                                                    r"k = 1\.\.15.*nearest: 0\.875 \(k=3\) and 0\.9375 \(k=4\).*"
                                                    r"round_decays=True"):
        d.realise(0.9, where="layer 1", chip="chip")
    with pytest.raises(BackendCapacityError, match=r"nearest: 0\.5 \(k=1\)$|nearest: 0\.5 \(k=1\)\."):
        d.realise(0.2, where="layer 1", chip="chip")  # below the smallest: one neighbour
    with pytest.warns(UserWarning, match="nearest value it holds"):
        k, got = d.realise(torch.tensor([0.9, 0.5]), where="layer 1", chip="chip", mode="nearest")
    assert k.tolist() == [3, 1] and got.tolist() == [0.875, 0.5]


def test_a_population_shares_one_scale_and_holds_its_threshold_exactly():
    g = torch.Generator().manual_seed(0)
    w_in = torch.randn(8, 5, generator=g)
    w_rec = 0.05 * torch.randn(8, 8, generator=g)  # much smaller: its own shift keeps its precision
    pop = quantize_population({"in": w_in, "rec": w_rec}, 0.7)
    L = 127
    for name, w in (("in", w_in), ("rec", w_rec)):
        q = pop.codes[name]
        assert q.abs().max() <= L and torch.equal(q, torch.round(q))
        step = 2.0 ** int(pop.shifts[name]) / float(pop.scale)
        assert float((pop.realised(name) - w).abs().max()) <= step / 2 + 1e-9
        assert float(w.abs().max()) / step > L / 2  # at least 7 of the 8 bits used (per-matrix shifts)
    assert int(pop.shifts["in"]) > int(pop.shifts["rec"])
    assert float(pop.realised_threshold) == pytest.approx(0.7, rel=1e-12)  # the scale is set by the threshold
    assert int(pop.threshold) == pytest.approx(float(pop.scale) * 0.7)
    # the largest matrix fills its codes
    assert int(pop.codes["in"].abs().max()) >= 120


def test_population_sets_are_quantized_each_on_its_own_scale():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, 6, generator=g) * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1)
    pops = quantize_population({"w": w}, 1.0, n_sets=3)
    for s in range(3):
        one = quantize_population({"w": w[s]}, 1.0)
        assert torch.equal(pops.codes["w"][s], one.codes["w"]) and int(pops.shifts["w"][s]) == int(one.shifts["w"])
        assert torch.allclose(pops.realised("w")[s], one.realised("w"))


def test_weights_beyond_the_grid_are_refused_naming_the_ratio():
    with pytest.raises(BackendCapacityError, match=r"a weight is 2e\+04 times the threshold.*scale the weights down"):
        quantize_population({"w": torch.tensor([[2e4]])}, 1.0, thresholds=IntegerRange("threshold", 1, 2 ** 15 - 1))


def test_the_threshold_target_and_ceiling_bound_the_scale():
    w = {"w": torch.tensor([[0.5, -0.25]])}
    low = quantize_population(w, 1.0, target=64)
    high = quantize_population(w, 1.0, target=8192)
    assert int(low.threshold) < int(high.threshold) <= 2 ** 15 - 1
    assert int(quantize_population({"w": torch.tensor([[1e-4]])}, 1.0, ceiling=1000).threshold) <= 1000
    assert math.isclose(float(high.realised_threshold), 1.0)


# ----------------------------------------------------------------------------- requirements
def _req():
    from cil_core.hardware.domains import Limit, Requirements

    return Requirements({"synaptic-current": "use a Synaptic neuron"}, (1, 1), "use one hidden layer",
                        Limit("input channels", 16, "reduce the inputs"), Limit("hidden neurons", 32, "fewer"),
                        Limit("output neurons", 4, "fewer classes"), chip="Toy")


def test_requirements_refuse_what_a_chip_must_be_given_naming_layer_limit_and_fix():
    import snntorch as snn
    from torch import nn

    import cil_core as cil
    from cil_core.errors import BackendCapacityError
    from cil_core.hardware.ideal import IdealBackend

    def net(n_in=8, hidden=16, out=2, synaptic=True, depth=1):
        neuron = (lambda **k: snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True, **k)) if synaptic else \
            (lambda **k: snn.Leaky(beta=0.9, init_hidden=True, **k))
        layers, n = [], n_in
        for _ in range(depth):
            layers += [nn.Linear(n, hidden), neuron()]
            n = hidden
        return cil.wrap(nn.Sequential(*layers, nn.Linear(n, out), neuron(output=True)))

    req = _req()
    req.check(net().spec)  # meets every requirement
    cases = [(net(synaptic=False), r"Toy, X: layer 1 \(neuron.*has no synaptic-current.*requires it of every neuron "
                                   r"layer: use a Synaptic neuron"),
             (net(depth=2), r"has 2 hidden neuron layer\(s\) \(3 neuron layers\); the chip runs exactly 1: use one"),
             (net(depth=0), r"has 0 hidden neuron layer"),
             (net(n_in=17), "the input has 17 input channels; the chip holds at most 16 input channels: reduce"),
             (net(hidden=33), r"the hidden layer 1.* has 33 hidden neurons; the chip holds at most 32"),
             (net(out=5), r"the output layer 3.* has 5 output neurons; the chip holds at most 4 output neurons: fewer")]
    for n, match in cases:
        with pytest.raises(BackendCapacityError, match=match):
            req.check(n.spec, "X")

    class Toy(IdealBackend):  # the session refuses before the first call, and a wrapper mirrors the declaration
        name = "toy-req"
        requires = req
        calls = 0

        def transfer(self, spec, params, n_sets=None):
            type(self).calls += 1
            return super().transfer(spec, params, n_sets)

    from cil_core.testing import FaultyBackend

    for backend in (Toy(), FaultyBackend(Toy())):
        with pytest.raises(BackendCapacityError, match="17 input channels"):
            cil.Trainer(net(n_in=17), backend, "cil-spl")
    assert Toy.calls == 0
    cil.Trainer(net(), Toy(), "cil-spl")  # fits
    assert [r[0] for r in req.rows()] == ["every neuron layer has", "hidden neuron layers", "input channels",
                                          "neurons per hidden layer", "neurons in the first / last hidden layer",
                                          "hidden neurons in all", "output neurons"]
    assert [r[1] for r in req.rows()] == ["synaptic-current", "exactly 1", "<= 16", "<= 32", "-", "-", "<= 4"]
    with pytest.raises(ValueError, match="unknown feature"):
        type(req)({"synaptic-currents": ""})
    # a chain of hidden layers sharing one pool (e.g. Xylo IMU): a bound on their number (open above),
    # on the first and last layer, and on their sum
    from dataclasses import replace

    from cil_core.hardware.domains import Limit

    chain = replace(req, hidden_layers=(2, None), hidden=None, hidden_fix="use two or more",
                    first_hidden=Limit("hidden neurons", 12, "fewer in the first"),
                    last_hidden=Limit("hidden neurons", 10, "fewer in the last"),
                    hidden_total=Limit("hidden neurons", 40, "share the pool"))

    def deep(*sizes):
        layers, n = [], 8
        for h in sizes:
            layers += [nn.Linear(n, h), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True)]
            n = h
        return cil.wrap(nn.Sequential(*layers, nn.Linear(n, 2), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True,
                                                                             output=True))).spec

    chain.check(deep(12, 18, 10))  # 40 neurons in all: fits
    for spec, match in ((deep(12), r"1 hidden neuron layer\(s\).*runs 2 or more: use two or more"),
                        (deep(13, 10), r"first hidden layer \(the one the input drives\), layer 1 .*has 13 hidden "
                                       r"neurons; the chip holds at most 12 hidden neurons: fewer in the first"),
                        (deep(12, 11), r"last hidden layer \(the one that drives the output\), layer 3 .*has 11"),
                        (deep(12, 19, 10), r"3 hidden layer\(s\) together has 41 hidden neurons; the chip holds at "
                                           r"most 40 hidden neurons: share the pool")):
        with pytest.raises(BackendCapacityError, match=match):
            chain.check(spec)
    assert [r[1] for r in chain.rows()][1:6] == ["2 or more", "<= 16", "-", "<= 12 / <= 10", "<= 40"]
    with pytest.raises(ValueError, match="0 <= min <= max"):
        replace(req, hidden_layers=(3, 2))

