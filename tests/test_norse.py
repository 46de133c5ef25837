"""The norse adapter: spike-for-spike equivalence with norse's own forward on the ideal backend,
CIL-SPL ≡ BPTT gradients, clear errors for what it cannot express, training on the chips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

norse = pytest.importorskip("norse.torch", reason="norse is not installed")
pytest.importorskip("cil_norse", reason="the cil-norse plugin is not installed (pip install -e plugins/cil-norse)")

import cil_core as cil  # noqa: E402
from cil_core.errors import UnsupportedLayerError  # noqa: E402
from cil_norse import run_native  # noqa: E402
from equivalence import native_and_cil_spl_gradients  # noqa: E402


def test_norse_plugin_is_found_through_its_entry_point():
    info = {i.name: i for i in cil.list_plugins()}["norse"]
    assert info.distribution == "cil-norse" and info.adapters == ["norse"]


def _rand(g: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _lif_p(g, n=None):
    shape = () if n is None else (n,)
    return norse.LIFParameters(tau_syn_inv=_rand(g, 80, 300, shape), tau_mem_inv=_rand(g, 50, 200, shape),
                               v_leak=_rand(g, -0.2, 0.2), v_th=_rand(g, 0.3, 1.0, shape),
                               v_reset=_rand(g, -0.3, 0.2))


def _cell(kind: str, g: torch.Generator, n: int):
    if kind == "lif":
        return norse.LIFCell(_lif_p(g))
    if kind == "lif-per-neuron":
        return norse.LIFCell(_lif_p(g, n))
    if kind == "lifbox":
        return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=_rand(g, 50, 200), v_th=_rand(g, 0.3, 1.0),
                                                       v_reset=_rand(g, -0.3, 0.2)))
    if kind == "lifbox-subtract":
        from norse.torch.functional.reset import reset_subtract
        return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=_rand(g, 50, 200), v_th=_rand(g, 0.3, 1.0),
                                                       reset_method=reset_subtract))
    if kind == "iaf":
        return norse.IAFCell(norse.IAFParameters(v_th=_rand(g, 0.5, 2.0), v_reset=_rand(g, -0.3, 0.3)))
    raise ValueError(kind)


def _scale_linear(model: nn.Module, gain: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)


def random_dense_model(kind: str, seed: int, readout: bool = False):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    F, H, O = int(torch.randint(8, 24, (1,), generator=g)), int(torch.randint(10, 40, (1,), generator=g)), 4
    last = norse.LICell(norse.LIParameters(tau_mem_inv=_rand(g, 50, 200), tau_syn_inv=_rand(g, 80, 300))) \
        if readout else _cell(kind, g, O)
    model = norse.SequentialState(nn.Linear(F, H), _cell(kind, g, H), nn.Linear(H, O), last)
    # norse integrates dt/tau of the input per step: scale the weights so that neurons do fire
    _scale_linear(model, 1.0 if kind == "iaf" else 12.0)
    x = (torch.rand(30, 8, F, generator=g) < 0.3).float()
    return model, x


def on_ideal(net: cil.WrappedNetwork, x: torch.Tensor, record: bool = False) -> cil.Observation:
    chip = cil.make_backend("ideal")
    return chip.forward(chip.transfer(net.spec, net.detached_parameters()), x, record)


CELL_KINDS = ["lif", "lif-per-neuron", "lifbox", "lifbox-subtract", "iaf"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_random_cell_models_match_norse_spike_for_spike(kind, seed):
    model, x = random_dense_model(kind, seed)
    net = cil.wrap(model)
    assert net.adapter == "norse"
    with torch.no_grad():
        ref = run_native(model, x)
    out = on_ideal(net, x, record=True)
    assert torch.equal(out.output, ref), f"{kind}: {(out.output != ref).sum()} spikes differ"
    # not a vacuous comparison: hidden layers spike, but do not saturate
    hidden = out.layers[0].spikes
    assert 0.01 < float(hidden.mean()) < 0.9
    # the software pass of the wrapped network computes the same thing
    with torch.no_grad():
        assert torch.equal(net(x), ref)


@pytest.mark.parametrize("kind", ["lif", "iaf"])
def test_leaky_integrator_readout_matches_membrane_bit_for_bit(kind):
    model, x = random_dense_model(kind, 5, readout=True)
    net = cil.wrap(model)
    assert net.spec.layers[-1].output == "membrane"
    with torch.no_grad():
        ref = run_native(model, x)
    assert torch.equal(on_ideal(net, x).output, ref)
    assert float(ref.abs().max()) > 0.01


@pytest.mark.parametrize("readout", [False, True])
def test_time_looping_modules_and_lifted_convolution_match(readout):
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    model = norse.SequentialState(
        norse.Lift(nn.Conv2d(2, 4, 3, padding=1)), norse.LIF(_lif_p(g)),
        norse.Lift(nn.AvgPool2d(2)), norse.Lift(nn.Flatten()),
        nn.Linear(4 * 4 * 4, 16), norse.IAF(norse.IAFParameters(v_th=torch.tensor(0.7))),
        nn.Linear(16, 3), norse.LI() if readout else norse.LIF(_lif_p(g)),
    )
    _scale_linear(model, 6.0)
    x = (torch.rand(25, 5, 2, 8, 8, generator=g) < 0.3).float()
    net = cil.wrap(model, input_shape=(2, 8, 8))
    kinds = [layer.kind for layer in net.spec.layers]
    assert kinds == ["conv2d", "neuron", "pool2d", "flatten", "dense", "neuron", "dense", "neuron"]
    obs = on_ideal(net, x, record=True)
    with torch.no_grad():
        ref = run_native(model, x)
    assert 0.01 < float(obs.layers[0].spikes.mean()) < 0.9
    if readout:
        # a bare nn.Linear between time-looping modules multiplies all T steps in one matmul, cil
        # one step at a time: the readout membrane may differ in the last bit
        assert torch.allclose(obs.output, ref, rtol=0, atol=1e-5)
    else:
        assert torch.equal(obs.output, ref) and float(ref.sum()) > 0


def test_convolutional_cells_match():
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    model = norse.SequentialState(
        nn.Conv2d(1, 3, 3, stride=1), norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(150.0))),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 5), norse.LIFCell(),
    )
    _scale_linear(model, 15.0)
    x = (torch.rand(20, 4, 1, 8, 8, generator=g) < 0.4).float()
    net = cil.wrap(model, input_shape=(1, 8, 8))
    with torch.no_grad():
        ref = run_native(model, x)
    assert torch.equal(on_ideal(net, x).output, ref)
    assert float(ref.sum()) > 0


def test_norse_rates_are_stated_and_consistent():
    model, _ = random_dense_model("lif", 0)
    n = cil.wrap(model).spec.layers[1]
    cell = model[1]
    assert torch.equal(torch.as_tensor(n.mem_rate), cell.dt * cell.p.tau_mem_inv)
    assert torch.allclose(torch.as_tensor(n.beta), 1 - cell.dt * cell.p.tau_mem_inv)
    assert torch.allclose(torch.as_tensor(n.alpha), 1 - cell.dt * cell.p.tau_syn_inv)
    assert (n.reset, n.reset_timing, n.current_timing, n.fires_at_threshold) == \
        ("zero", "immediate", "same-step", False)
    # a backend that changes the decay drops the Euler rates, so its change takes effect
    changed = n.with_(beta=0.5)
    assert changed.mem_rate is None and changed.syn_rate is None
    x = torch.ones(3, 1, 4)
    from cil_core.kernels.neuron import run_neuron_layer
    a = run_neuron_layer(n.with_(threshold=100.0), x, record_membrane=True).membrane
    b = run_neuron_layer(n.with_(threshold=100.0, beta=0.5), x, record_membrane=True).membrane
    assert not torch.allclose(a, b)


def test_cil_spl_gradients_equal_norse_bptt_on_ideal():
    """On the ideal backend CIL-SPL's forward value is the software output, so its gradient is
    BPTT's; and that gradient equals the one norse's own autograd computes."""
    model, x = random_dense_model("lif", 7)
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    g_norse, g_cil, _ = native_and_cil_spl_gradients(model, model, x, y, run_native)

    for k in g_norse:
        assert float(g_norse[k].abs().sum()) > 0, k
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), k


def test_cil_spl_step_equals_offline_step_on_ideal():
    model_a, x = random_dense_model("iaf", 8)
    model_b, _ = random_dense_model("iaf", 8)
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(8))
    ha = cil.Trainer(model_a, "ideal", "cil-spl", lr=1e-2, seed=0).fit((x, y), steps=3, batch_size=None)
    hb = cil.Trainer(model_b, "ideal", "offline", lr=1e-2, seed=0).fit((x, y), steps=3, batch_size=None)
    assert ha.column("loss") == hb.column("loss")
    for (ka, pa), (kb, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(pa, pb), ka


@pytest.mark.parametrize("build, needle", [
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(norse.LIFParameters(method="tanh"))), "'1'"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFAdExCell()), r"layer '1' \(LIFAdExCell\).*LSNNCell"),
    (lambda: __import__("norse.torch.models.conv", fromlist=["ConvNet"]).ConvNet(), r"ConvNet.*SequentialState"),
    (lambda: norse.SequentialState(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2),
                                   nn.ReLU(), norse.LIFCell()), r"layer '4' \(ReLU\)"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(), nn.Linear(3, 2), norse.LIF()), "mixes"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LICell(), nn.Linear(3, 2), norse.LIFCell()), "readout"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIF(), norse.Lift(nn.Linear(3, 3)),
                                   nn.Conv2d(1, 1, 1), norse.LIF()), "Lift"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(norse.LIFParameters(
        v_leak=torch.tensor(-65.0), v_th=torch.tensor(-50.0), v_reset=torch.tensor(-65.0)))), "v_th <= 0"),
    (lambda: nn.Sequential(nn.Linear(4, 3), norse.LIFCell()), "SequentialState"),
])
def test_unsupported_layers_are_named(build, needle):
    with pytest.raises(UnsupportedLayerError, match=needle):
        cil.wrap(build(), input_shape=(1, 6, 6) if "ReLU" in needle else None)


@pytest.mark.parametrize("build", [
    lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFRecurrentCell(3, 3)),
    lambda: norse.SequentialState(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2),
                                  norse.LIFCell()),
    lambda: norse.SequentialState(norse.LSNNRecurrentCell(4, 3), nn.Dropout(0.2), norse.LILinearCell(3, 2)),
])
def test_layers_refused_before_issue_12_are_accepted(build):
    """LIFRecurrentCell, max pooling, LSNN, dropout, LILinearCell: see tests/test_norse_layers.py
    for their spike-for-spike and gradient equivalence with norse."""
    assert cil.wrap(build(), input_shape=(1, 6, 6) if isinstance(build()[0], nn.Conv2d) else None).adapter == "norse"


def test_cil_spl_trains_norse_model_on_ideal(breast_cancer):
    torch.manual_seed(0)
    model = norse.SequentialState(nn.Linear(breast_cancer.n_inputs, 24), norse.LIFCell(),
                                  nn.Linear(24, 2), norse.LIFCell())
    _scale_linear(model, 10.0)
    trainer = cil.Trainer(model, "ideal", "cil-spl", lr=2e-2, seed=0)
    before = trainer.evaluate(breast_cancer.test)["accuracy"]
    trainer.fit(breast_cancer.train, epochs=3, batch_size=64)
    after = trainer.evaluate(breast_cancer.test)["accuracy"]
    assert after > 0.85 and after > before


def _fit_on(backend_name: str, algorithm: str, data, model, **opts):
    trainer = cil.Trainer(model, cil.make_backend(backend_name, **opts.pop("backend_options", {})), algorithm,
                          seed=0, **opts.pop("algorithm_options", {}))
    before = trainer.evaluate(data.test)["accuracy"]
    trainer.fit(data.train, **opts)
    return before, trainer.evaluate(data.test)["accuracy"]


@pytest.mark.parametrize("algorithm", ["cil-spl", "mh"])
def test_norse_model_trains_on_analog_chip(algorithm, breast_cancer):
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    torch.manual_seed(1)
    model = norse.SequentialState(nn.Linear(breast_cancer.n_inputs, 16), norse.LIFCell(),
                                  nn.Linear(16, 2), norse.LIFCell())
    _scale_linear(model, 10.0)
    opts = dict(backend_options=dict(strength=1.0, seed=0))
    data = breast_cancer
    if algorithm == "mh":  # MH scores the whole (here: a 128-sample) training set per step
        data = type(data)(data.train.subset(torch.arange(128)), data.test, data.num_steps, data.n_inputs)
        opts.update(steps=100, algorithm_options=dict(chains=4, burn_in=50, step_size=0.3))
    else:
        opts.update(epochs=3, batch_size=64, algorithm_options=dict(lr=2e-2))
    before, after = _fit_on("analog-mismatch", algorithm, data, model, **opts)
    assert after > 0.7 and after > before + 0.2, (before, after)


@pytest.mark.parametrize("algorithm", ["cil-spl", "mh"])
def test_norse_iaf_model_trains_on_speck(algorithm, breast_cancer):
    pytest.importorskip("cil_speck", reason="the cil-speck plugin is not installed")
    torch.manual_seed(2)
    model = norse.SequentialState(nn.Linear(breast_cancer.n_inputs, 16, bias=False), norse.IAFCell(),
                                  nn.Linear(16, 2, bias=False), norse.IAFCell())
    _scale_linear(model, 3.0)  # an output that is active on the chip from the start
    # norse's IAFCell is the chip's neuron (no leak, zero reset): the wrapped model must fit as it is
    cil.make_backend("speck").check(cil.wrap(model).spec)
    data = breast_cancer
    if algorithm == "mh":  # the chip holds one parameter set: every proposal is one chip call
        data = type(data)(data.train.subset(torch.arange(64)), data.test, data.num_steps, data.n_inputs)
        opts = dict(steps=80, algorithm_options=dict(chains=4, burn_in=40, init="network"))
    else:
        opts = dict(epochs=3, batch_size=64, algorithm_options=dict(lr=2e-2))
    before, after = _fit_on("speck", algorithm, data, model, **opts)
    assert after > 0.7 and after > before + 0.2, (before, after)
