"""The norse adapter on the layers of issue 12: recurrent cells (LIFRecurrentCell, LSNN*),
adaptive thresholds, LILinearCell, max pooling, batch norm, dropout, Conv1d and nested
containers. Each accepted model is spike-for-spike equal to norse's own forward on the ideal
backend and its BPTT gradients equal norse's autograd; what is refused names the layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

norse = pytest.importorskip("norse.torch", reason="norse is not installed")
pytest.importorskip("cil_norse", reason="the cil-norse plugin is not installed (pip install -e plugins/cil-norse)")

import cil_core as cil  # noqa: E402
from cil_core.errors import UnsupportedLayerError  # noqa: E402
from cil_norse import run_native  # noqa: E402
from equivalence import native_and_cil_spl_gradients, native_and_wrapped_bptt_gradients  # noqa: E402


def _lif(tau_mem=150.0, tau_syn=200.0, v_th=0.5, v_leak=0.0, v_reset=0.0):
    return norse.LIFParameters(tau_syn_inv=torch.tensor(tau_syn), tau_mem_inv=torch.tensor(tau_mem),
                               v_leak=torch.tensor(v_leak), v_th=torch.tensor(v_th), v_reset=torch.tensor(v_reset))


def _lsnn(v_th=0.5, beta=0.3, tau_adapt=30.0, tau_mem=120.0, tau_syn=180.0, v_leak=0.0, v_reset=0.0):
    return norse.LSNNParameters(tau_syn_inv=torch.tensor(tau_syn), tau_mem_inv=torch.tensor(tau_mem),
                                tau_adapt_inv=torch.tensor(tau_adapt), v_leak=torch.tensor(v_leak),
                                v_th=torch.tensor(v_th), v_reset=torch.tensor(v_reset), beta=torch.tensor(beta))


def _scale(model: nn.Module, gain: float) -> None:
    """norse integrates dt/tau of the input per step: scale the weights so that neurons fire."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") or name.endswith("input_weights"):
                p.mul_(gain)
            elif name.endswith("recurrent_weights"):
                p.mul_(gain / 2)


def _ideal(net: cil.WrappedNetwork, x: torch.Tensor) -> cil.Observation:
    chip = cil.make_backend("ideal")
    return chip.forward(chip.transfer(net.spec, net.detached_parameters()), x, True)


def _spikes(T, B, shape, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < p).float()


# ---------------------------------------------------------------------------- models
def m_lif_recurrent(autapses=False):
    m = norse.SequentialState(norse.LIFRecurrentCell(10, 24, p=_lif(v_leak=0.1, v_reset=-0.1), autapses=autapses),
                              nn.Linear(24, 4), norse.LIFCell(_lif()))
    _scale(m, 8.0)
    return m, _spikes(40, 6, (10,), 1)


def m_lif_recurrent_time():
    m = norse.SequentialState(nn.Linear(10, 16), norse.LIF(_lif()), norse.LIFRecurrent(16, 12, p=_lif()),
                              nn.Linear(12, 4), norse.LI())
    _scale(m, 8.0)
    return m, _spikes(40, 6, (10,), 2)


def m_lsnn_cells():
    m = norse.SequentialState(nn.Linear(10, 20), norse.LSNNCell(_lsnn()), nn.Linear(20, 8),
                              norse.LSNNRecurrentCell(8, 6, p=_lsnn(v_leak=0.05, v_reset=-0.1)))
    _scale(m, 10.0)
    return m, _spikes(50, 6, (10,), 3)


def m_lsnn_time():
    m = norse.SequentialState(nn.Linear(10, 20), norse.LSNN(_lsnn()), norse.LSNNRecurrent(20, 6, p=_lsnn()),
                              nn.Linear(6, 3), norse.LIF(_lif()))
    _scale(m, 10.0)
    return m, _spikes(50, 6, (10,), 4)


def m_li_linear():
    m = norse.SequentialState(norse.LIFRecurrentCell(10, 16, p=_lif()), norse.LILinearCell(16, 3))
    _scale(m, 8.0)
    return m, _spikes(30, 6, (10,), 5)


def m_conv_maxpool_bn_dropout():
    m = norse.SequentialState(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), norse.LIFCell(_lif()), nn.MaxPool2d(2),
        nn.Dropout(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.BatchNorm1d(12), norse.LIFCell(_lif()),
        norse.LILinearCell(12, 3),
    )
    _scale(m, 6.0)
    _randomise_bn(m)
    return m, _spikes(25, 5, (1, 8, 8), 6, p=0.4)


def m_conv1d():
    m = norse.SequentialState(nn.Conv1d(2, 4, 3, stride=1, padding=1), norse.LIFBoxCell(
        norse.LIFBoxParameters(tau_mem_inv=torch.tensor(150.0), v_th=torch.tensor(0.5))),
        nn.Flatten(), nn.Linear(4 * 9, 5), norse.LIFCell(_lif()))
    _scale(m, 8.0)
    return m, _spikes(30, 5, (2, 9), 7)


def m_nested():
    block = norse.SequentialState(nn.Linear(10, 16), norse.LIFCell(_lif()))
    m = norse.SequentialState(block, nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 8)),
                              norse.LSNNRecurrentCell(8, 5, p=_lsnn()))
    _scale(m, 10.0)
    return m, _spikes(40, 6, (10,), 8)


def m_lifted_time():
    m = norse.SequentialState(norse.Lift(nn.Conv2d(1, 3, 3)), norse.Lift(nn.BatchNorm2d(3)), norse.LIF(_lif()),
                              norse.Lift(nn.MaxPool2d(2)), norse.Lift(nn.Flatten()), nn.Dropout(0.3),
                              norse.LIFRecurrent(27, 6, p=_lif()), nn.Linear(6, 3), norse.LIF(_lif()))
    _scale(m, 8.0)
    _randomise_bn(m)
    return m, _spikes(30, 5, (1, 8, 8), 9, p=0.4)


def _refrac(rho_reset=3.0, **lif):
    return norse.LIFRefracParameters(_lif(**lif), torch.as_tensor(rho_reset))


def m_refrac_cells():
    """norse's refractory LIF: feed-forward and recurrent cells, integer and fractional periods."""
    m = norse.SequentialState(nn.Linear(10, 20), norse.LIFRefracCell(_refrac(3.0, v_leak=0.05, v_reset=-0.1)),
                              norse.LIFRefracRecurrentCell(20, 8, p=_refrac(2.5)), nn.Linear(8, 4),
                              norse.LIFRefracCell(_refrac(1.0)))
    _scale(m, 10.0)
    return m, _spikes(60, 6, (10,), 13)


def m_refrac_time():
    m = norse.SequentialState(nn.Linear(10, 16), norse.LIF(_lif()),
                              norse.LIFRefracRecurrent(16, 6, p=_refrac(4.0)), nn.Linear(6, 3), norse.LI())
    _scale(m, 10.0)
    return m, _spikes(60, 6, (10,), 14)


def _randomise_bn(m: nn.Module) -> None:
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
                bn.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=g))
                bn.bias.copy_(0.1 * torch.randn(c, generator=g))


MODELS = {
    "LIFRecurrentCell": m_lif_recurrent,
    "LIFRecurrentCell-autapses": lambda: m_lif_recurrent(autapses=True),
    "LIFRecurrent": m_lif_recurrent_time,
    "LSNNCell+LSNNRecurrentCell": m_lsnn_cells,
    "LSNN+LSNNRecurrent": m_lsnn_time,
    "LILinearCell": m_li_linear,
    "Conv2d+BatchNorm+MaxPool2d+Dropout": m_conv_maxpool_bn_dropout,
    "Conv1d": m_conv1d,
    "nested": m_nested,
    "Lift(BatchNorm,MaxPool2d)+LIFRecurrent": m_lifted_time,
    "LIFRefracCell+LIFRefracRecurrentCell": m_refrac_cells,
    "LIFRefracRecurrent": m_refrac_time,
}
INPUT_SHAPE = {"Conv2d+BatchNorm+MaxPool2d+Dropout": (1, 8, 8), "Conv1d": (2, 9),
               "Lift(BatchNorm,MaxPool2d)+LIFRecurrent": (1, 8, 8)}


def _wrap(kind):
    torch.manual_seed(0)
    model, x = MODELS[kind]()
    model.eval()  # batch norm with its running statistics, dropout off: what cil runs outside training
    return model, x, cil.wrap(model, input_shape=INPUT_SHAPE.get(kind)).eval()


@pytest.mark.parametrize("kind", list(MODELS))
def test_models_match_norse_spike_for_spike(kind):
    model, x, net = _wrap(kind)
    with torch.no_grad():
        ref = run_native(model, x)
        obs = _ideal(net, x)
        soft = net.eval()(x)
    assert torch.equal(obs.output, ref), f"{kind}: {(obs.output != ref).sum()} values differ"
    assert torch.equal(soft, ref)
    # not vacuous: every spiking layer fires, none saturates
    for k, (_, n) in enumerate(net.spec.neuron_layers()):
        if n.output == "spikes":
            rate = float(obs.layers[k].spikes.mean())
            assert 0.01 < rate < 0.9, (kind, k, rate)
    if net.spec.layers[-1].output == "membrane":
        assert float(ref.abs().max()) > 0.01


@pytest.mark.parametrize("kind", list(MODELS))
def test_bptt_gradients_equal_norse_autograd(kind):
    model, x, net = _wrap(kind)
    g_norse, g_cil = native_and_wrapped_bptt_gradients(model, net, x, run_native, seed=1)
    assert set(g_cil) == set(g_norse) and set(net.parameter_names()) <= set(g_cil)
    for k in g_norse:
        assert float(g_norse[k].abs().sum()) > 0, k
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), (k, (g_cil[k] - g_norse[k]).abs().max())


def test_recurrent_cell_is_described_as_norse_computes_it():
    model, _, net = _wrap("LIFRecurrentCell")
    dense, n = net.spec.layers[:2]
    assert (dense.kind, dense.weight, dense.bias, dense.in_features, dense.out_features) == \
        ("dense", "0.input_weights", None, 10, 24)
    r = n.recurrent
    assert (r.weight, r.bias, r.mode, r.into, r.autapses) == ("0.recurrent_weights", None, "dense", "current", False)
    assert (n.current_timing, n.reset_timing, n.detach_reset) == ("same-step", "immediate", True)
    assert net.spec.layers[3].detach_reset is False  # LIFCell's feed-forward step keeps the reset's gradient
    lsnn = _wrap("LSNNCell+LSNNRecurrentCell")[2].spec
    a = lsnn.layers[1].adaptation
    assert lsnn.layers[1].current_timing == "previous-step" and a.form == "euler-threshold"
    cell = _wrap("LSNNCell+LSNNRecurrentCell")[0][1]
    assert torch.equal(torch.as_tensor(a.rate), cell.dt * cell.p.tau_adapt_inv)
    assert not lsnn.layers[1].detach_reset and lsnn.layers[-1].detach_reset


def test_cil_spl_gradients_equal_norse_bptt_for_a_recurrent_model():
    model, x, net = _wrap("LIFRecurrentCell")
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    g_norse, g_cil, _ = native_and_cil_spl_gradients(model, net, x, y, run_native)
    for k in g_norse:
        assert float(g_norse[k].abs().sum()) > 0, k
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), k
    # no autapses: the diagonal gets no gradient, in cil as in norse
    assert float(g_cil["0.recurrent_weights"].diagonal().abs().sum()) == 0


def test_dropout_acts_in_training_passes_only():
    model, x, net = _wrap("Conv2d+BatchNorm+MaxPool2d+Dropout")
    assert [l.kind for l in net.spec.layers].count("dropout") == 1
    with torch.no_grad():
        ref = run_native(model, x)  # the model in eval(): dropout off
    net.train()
    with torch.no_grad():  # outside autograd the software pass is an evaluation: no dropout
        assert torch.equal(net(x), ref)
    out_a, out_b = net(x), net(x)  # training passes draw masks
    assert not torch.equal(out_a, out_b)


def test_trained_values_keep_the_diagonal_zero_without_autapses():
    model, _, net = _wrap("LIFRecurrentCell")
    values = net.detached_parameters()
    values["0.recurrent_weights"] = values["0.recurrent_weights"] + 0.5
    net.load_parameters(values)
    w = model[0].recurrent_weights
    assert float(w.detach().diagonal().abs().sum()) == 0 and float(w.detach().abs().sum()) > 0


def test_analog_chip_runs_a_recurrent_network_with_recurrent_mismatch():
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    model, x, net = _wrap("LIFRecurrentCell")
    chip = cil.make_backend("analog-mismatch", strength=1.0, seed=3)
    obs = cil.HardwareSession(chip).run(net.spec, net.detached_parameters(), x, record=True)
    assert obs.output.shape == (x.shape[0], x.shape[1], 4)
    assert float(obs.layers[0].spikes.mean()) > 0.01
    gains = chip.reveal_mismatch(net.spec)["synapse_gain"]
    assert set(gains) == {"0.input_weights", "0.recurrent_weights", "1.weight", "1.bias"}
    assert gains["0.recurrent_weights"].shape == (24, 24) and float(gains["0.recurrent_weights"].std()) > 0
    with torch.no_grad():
        ideal = _ideal(net, x)
    assert not torch.equal(obs.layers[0].spikes, ideal.layers[0].spikes)  # the mismatch matters


def test_speck_refuses_recurrence_and_adaptation_naming_the_layer():
    pytest.importorskip("cil_speck", reason="the cil-speck plugin is not installed")
    from dataclasses import replace

    session = cil.HardwareSession(cil.make_backend("speck"))
    for kind, layer in (("LIFRecurrentCell", "'0' \\(LIFRecurrentCell"), ("LSNNCell+LSNNRecurrentCell", "'1' \\(LSNNCell")):
        spec = _wrap(kind)[2].spec
        # the chip has no biases either (refused at the first Linear): look at the neurons
        spec = replace(spec, layers=tuple(replace(l, bias=None) if l.kind == "dense" else l for l in spec.layers))
        # norse's LIF/LSNN neurons have a synaptic current: the first thing the chip lacks
        with pytest.raises(cil.BackendCapacityError, match=rf"cannot run layer 1 \(neuron 'layer {layer}\)'"):
            session.check(spec)
        # without it, the recurrence / the adaptive threshold is what the chip refuses, by layer
        bare = replace(spec, layers=tuple(l.with_(alpha=None) if l.kind == "neuron" else l for l in spec.layers))
        feature = "recurrent" if kind == "LIFRecurrentCell" else "adaptive-threshold"
        with pytest.raises(cil.BackendCapacityError, match=rf"layer 1 \(neuron 'layer {layer}\)'\).*"
                                                           rf"'{feature}'; the chip"):
            session.check(bare)


def test_conv_net_written_as_a_sequential_state_is_accepted():
    """norse's own ConvNet, as the SequentialState a user writes (conv2's 10x scale left out)."""
    def build(relu: bool):
        torch.manual_seed(0)
        return norse.SequentialState(
            nn.Conv2d(1, 4, 5, 1), norse.LIFCell(), nn.MaxPool2d(2, 2), nn.Conv2d(4, 6, 5, 1), norse.LIFCell(),
            nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(6 * 2 * 2, 20), norse.LIFCell(),
            *([nn.ReLU()] if relu else []), norse.LILinearCell(20, 10),
        )

    with pytest.raises(UnsupportedLayerError, match=r"layer '9' \(ReLU\)"):
        cil.wrap(build(relu=True), input_shape=(1, 20, 20))
    model = build(relu=False)  # relu of spikes is the identity: norse computes the same without it
    _scale(model, 10.0)
    x = _spikes(20, 3, (1, 20, 20), 12, p=0.5)
    net = cil.wrap(model, input_shape=(1, 20, 20))
    with torch.no_grad():
        obs, ref = _ideal(net, x), run_native(model, x)
    assert torch.equal(obs.output, ref)
    assert all(float(layer.spikes.mean()) > 0.01 for layer in obs.layers[:3])


@pytest.mark.parametrize("build, needle", [
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFAdExCell()), r"layer '1' \(LIFAdExCell\).*exponential.*"
                                                                           r"use LSNNCell"),
    (lambda: norse.SequentialState(norse.LIFAdExRecurrentCell(4, 3)), r"LIFAdExRecurrentCell.*use LSNNCell"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIFAdEx()), r"LIFAdEx\).*use LSNNCell"),
    (lambda: __import__("norse.torch.models.conv", fromlist=["ConvNet"]).ConvNet(),
     r"ConvNet.*10 \* self.conv2.*SequentialState"),
    (lambda: norse.SequentialState(nn.Sequential(nn.Linear(4, 3), norse.LIFCell())),
     r"layer '0' \(nn.Sequential\).*nested norse.torch.SequentialState"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LSNNCell(adjoint=True)), r"layer '1' \(LSNNCell\).*adjoint"),
    (lambda: norse.SequentialState(norse.LIFRecurrentCell(4, 3, p=norse.LIFParameters(method="tanh"))),
     r"layer '0' \(LIFRecurrentCell\).*'tanh'"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LIF(), nn.BatchNorm1d(3), norse.LIF()),
     r"layer '2' \(BatchNorm1d\).*Lift"),
    (lambda: norse.SequentialState(nn.Linear(4, 3), norse.LILinearCell(3, 3), nn.Linear(3, 2), norse.LIFCell()),
     r"LILinearCell.*readout"),
])
def test_refused_norse_models_name_the_layer_and_the_alternative(build, needle):
    with pytest.raises(UnsupportedLayerError, match=needle):
        cil.wrap(build())


def test_autapse_free_cell_with_a_nonzero_diagonal_is_refused():
    cell = norse.LIFRecurrentCell(4, 3)
    with torch.no_grad():
        cell.recurrent_weights.fill_(0.1)
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(LIFRecurrentCell\).*autapses=True"):
        cil.wrap(norse.SequentialState(cell))


# ------------------------------------------------------------------ refractory periods (issue 20)
def _hidden_norse(model, x):
    """Every norse neuron's output spikes and membrane at each step, in call order (cells only)."""
    spikes, mems = {}, {}
    hooks = []
    for name, m in model.named_children():
        if isinstance(m, (norse.LIFRefracCell, norse.LIFRefracRecurrentCell, norse.LIFCell)):
            def hook(mod, inp, out, name=name):
                z, st = out
                spikes.setdefault(name, []).append(z.detach())
                mems.setdefault(name, []).append(st.lif.v.detach().clone())
            hooks.append(m.register_forward_hook(hook))
    try:
        run_native(model, x)
    finally:
        for h in hooks:
            h.remove()
    return [torch.stack(v) for v in spikes.values()], [torch.stack(v) for v in mems.values()]


def test_refractory_cells_match_norse_membrane_for_membrane():
    model, x, net = _wrap("LIFRefracCell+LIFRefracRecurrentCell")
    with torch.no_grad():
        spikes, mems = _hidden_norse(model, x)
        soft = net.run(x, record=True, record_membrane=True)
    assert len(spikes) == len(soft.layers) == 3
    for k, (s, v, o) in enumerate(zip(spikes, mems, soft.layers)):
        assert torch.equal(o.spikes, s), (k, int((o.spikes != s).sum()))
        assert torch.equal(o.membrane, v), (k, int((o.membrane != v).sum()))
    periods = [n.refractory.period for _, n in net.spec.neuron_layers()]
    assert periods == [3.0, 2.5, 1.0]


@pytest.mark.parametrize("period, gap", [(3.0, 4), (2.5, 4), (1.0, 2)])
def test_refractory_period_silences_the_neuron_for_ceil_rho_reset_steps(period, gap):
    """Constant strong drive: a LIFRefracCell fires every ceil(rho_reset) + 1 steps, where the
    same cell without refractoriness fires at every step; cil reproduces both."""
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(40.0)
    x = torch.ones(24, 1, 1)
    for cell, expect in ((norse.LIFRefracCell(_refrac(period, tau_syn=1000.0)), gap), (norse.LIFCell(_lif(tau_syn=1000.0)), 1)):
        model = norse.SequentialState(lin, cell)
        with torch.no_grad():
            ref = run_native(model, x)
            out = cil.wrap(model)(x)
        assert torch.equal(out, ref)
        t = torch.nonzero(ref.reshape(-1)).reshape(-1)
        assert len(t) > 3 and set(torch.diff(t).tolist()) == {expect}, (period, t.tolist())


def test_refractoriness_changes_the_output_so_the_equivalence_is_not_vacuous():
    model, x, net = _wrap("LIFRefracCell+LIFRefracRecurrentCell")
    bare = net.spec.__class__(tuple(l.with_(refractory=None) if l.kind == "neuron" else l for l in net.spec.layers),
                              net.spec.input_shape)
    with torch.no_grad():
        ref = run_native(model, x)
        without = cil.simulate(bare, net.detached_parameters(), x).output
    assert torch.equal(_ideal(net, x).output, ref)
    assert int((without != ref).sum()) > 50


def test_cil_spl_gradients_equal_norse_bptt_with_refractory_periods():
    model, x, net = _wrap("LIFRefracCell+LIFRefracRecurrentCell")
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    g_norse, g_cil, _ = native_and_cil_spl_gradients(model, net, x, y, run_native)
    assert set(g_cil) == set(g_norse)
    for k in g_norse:
        assert float(g_norse[k].abs().sum()) > 0, k
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), (k, (g_cil[k] - g_norse[k]).abs().max())


def test_refractory_gradient_flows_through_the_counter_as_in_norse():
    """norse thresholds the counter with SuperSpike, so gradients also flow through rho; a
    description that held the mask without gradient would give other weight gradients."""
    from cil_core.kernels import neuron as kn

    model, x, net = _wrap("LIFRefracCell+LIFRefracRecurrentCell")
    g_norse, g_cil = native_and_wrapped_bptt_gradients(model, net, x, run_native, seed=2)
    original = kn.refractory_step

    def held_without_gradient(v_new, v_old, s, rho, period, surrogate):
        m = (rho > 0).to(rho.dtype)  # the same mask, without norse's surrogate gradient
        s = (1 - m) * s
        return (1 - m) * v_new + m * v_old, s, (1 - s) * torch.relu(rho - m) + s * period

    kn.refractory_step = held_without_gradient
    try:
        _, g_detached = native_and_wrapped_bptt_gradients(model, net, x, run_native, seed=2)
    finally:
        kn.refractory_step = original
    for k in g_norse:
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), k
    assert any(not torch.allclose(g_detached[k], g_norse[k], rtol=1e-4, atol=1e-6) for k in g_norse)


def test_chips_declare_refractoriness():
    model, x, net = _wrap("LIFRefracCell+LIFRefracRecurrentCell")
    assert net.spec.features()["refractory"].startswith("layer 1")
    pytest.importorskip("cil_analog", reason="the cil-analog plugin is not installed")
    chip = cil.make_backend("analog-mismatch", strength=0.0)
    obs = cil.HardwareSession(chip).run(net.spec, net.detached_parameters(), x)
    with torch.no_grad():
        assert torch.equal(obs.output, run_native(model, x))  # the analog chip at zero mismatch runs it exactly
    pytest.importorskip("cil_speck", reason="the cil-speck plugin is not installed")
    from dataclasses import replace

    spec = replace(net.spec, layers=tuple(
        replace(l, bias=None) if l.kind == "dense" else l.with_(alpha=None) if l.kind == "neuron" else l
        for l in net.spec.layers[:2]))
    with pytest.raises(cil.BackendCapacityError, match=r"layer 1 \(neuron 'layer '1' \(LIFRefracCell\)'\).*"
                                                       r"'refractory'; the chip's neurons have no refractory period"):
        cil.HardwareSession(cil.make_backend("speck")).check(spec)


@pytest.mark.parametrize("build, shape", [
    (lambda: norse.SequentialState(norse.LIFRefracRecurrentCell(2, 4)), (2,)),
    (lambda: norse.SequentialState(norse.LIFRefracCell()), (20, 30)),
    (lambda: norse.SequentialState(norse.LIFRefracRecurrent(2, 4)), (2,)),
])
def test_norses_own_refractory_test_configurations_are_exact(build, shape):
    """The cells as norse's own tests build them (default parameters, rho_reset = 5), on gaussian
    input as there, scaled so that the neurons fire and the refractory period acts."""
    torch.manual_seed(3)
    model = build()
    x = 25.0 * torch.randn(40, 5, *shape, generator=torch.Generator().manual_seed(4))
    net = cil.wrap(model, input_shape=shape)
    with torch.no_grad():
        ref = run_native(model, x)
        assert torch.equal(_ideal(net, x).output, ref) and torch.equal(net(x), ref)
    assert 0.01 < float(ref.mean()) < 0.5
    if not list(model.parameters()):  # a bare LIFRefracCell has no weights to train
        return
    g_norse, g_cil = native_and_wrapped_bptt_gradients(model, net, x, run_native, seed=5)
    for k in g_norse:
        assert float(g_norse[k].abs().sum()) > 0, k
        assert torch.allclose(g_cil[k], g_norse[k], rtol=1e-4, atol=1e-6), k
