"""sinabs adapter, the layers of issue 12: ``from_model`` conversions with MaxPool2d, BatchNorm2d,
Dropout and nested Sequential, ``LIF``/``IAF`` with ``tau_syn``, ``ExpLeak``, ``IAFRecurrent`` /
``LIFRecurrent``, ``ALIF`` / ``ALIFRecurrent``. Each accepted feature: spike for spike equal to
sinabs' own forward on the ideal backend, and BPTT gradients (every trainable tensor) equal to
sinabs' own autograd; each refused variant named with what to use instead."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("sinabs")
pytest.importorskip("cil_sinabs")

import sinabs  # noqa: E402  (top level: never imports sinabs.backend.dynapcnn)
import sinabs.layers as sl  # noqa: E402
from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike, SingleExponential, SingleSpike  # noqa: E402

import cil_core as cil  # noqa: E402
from cil_core import Adaptation, BatchNorm, Dropout, Pool2d, Recurrent  # noqa: E402
from cil_sinabs import run_sinabs  # noqa: E402


def _scale_weights(model: nn.Module, gen: torch.Generator, factor: float) -> None:
    """Mostly excitatory random weights, strong enough that every layer spikes."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) - 0.3) * factor / fan_in ** 0.5)


def _check_forward(model: nn.Module, shape, gen: torch.Generator, T: int = 20, B: int = 4, counts: bool = True):
    net = cil.wrap(model, input_shape=shape)
    x = (torch.rand(T, B, *shape, generator=gen) < 0.3).float()
    if counts:
        x = x * torch.randint(1, 3, x.shape, generator=gen)
    ref = run_sinabs(model, x).detach()
    backend = cil.make_backend("ideal")
    out = backend.forward(backend.transfer(net.spec, net.detached_parameters()), x).output
    assert out.shape == ref.shape
    assert ref.abs().sum() > 0
    assert torch.equal(out, ref), f"{int((out != ref).sum())} of {out.numel()} outputs differ"
    return net, x


def _check_gradients(model: nn.Module, net, x: torch.Tensor, gen: torch.Generator) -> None:
    """BPTT through sinabs' own forward and through cil's software pass give the same gradient for
    every tensor the spec trains (synapses, recurrent synapses, batch-norm affine terms)."""
    ref = run_sinabs(model, x)
    w = torch.rand(ref.shape, generator=gen)
    model.zero_grad(set_to_none=True)
    (ref * w).sum().backward()
    params = dict(net.synaptic_parameters())
    native = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    out = net(x)
    assert torch.equal(out.detach(), ref.detach())
    (out * w).sum().backward()
    assert any(g is not None and g.abs().sum() > 0 for g in native.values())
    for n, p in params.items():
        if native[n] is None:
            assert p.grad is None or not p.grad.any(), n
            continue
        torch.testing.assert_close(p.grad, native[n], rtol=1e-4, atol=1e-5, msg=lambda m: f"{n}: {m}")


# --------------------------------------------------------------------------- synaptic current
@pytest.mark.parametrize("seed", range(4))
def test_tau_syn_is_spike_exact_and_gradient_exact(seed):
    """LIF/IAF with tau_syn: sinabs' i_t = alpha_syn * (i_{t-1} + x_t) (Neuron.synaptic_update =
    "add-then-decay"), then (1 - alpha_mem) * i_t with norm_input."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(4, generator=gen).tolist()
    reset = MembraneReset() if r[0] < 0.3 else MembraneSubtract()
    spike_fn = [SingleSpike, MultiSpike, MaxSpike(2)][seed % 3]
    model = nn.Sequential(
        nn.Linear(10, 12, bias=seed % 2 == 0),
        sl.LIF(tau_mem=5.0 + 20 * r[1], tau_syn=2.0 + 5 * r[2], norm_input=seed < 2, spike_fn=spike_fn, reset_fn=reset,
               min_v_mem=-1.0 if r[3] < 0.5 else None),
        nn.Linear(12, 4, bias=False),
        sl.IAF(tau_syn=3.0, spike_fn=spike_fn, surrogate_grad_fn=SingleExponential(0.4, 1.5)),
    )
    _scale_weights(model, gen, 12.0 if seed < 2 else 3.0)
    net, x = _check_forward(model, (10,), gen)
    n = net.spec.neuron_layers()[0][1]
    assert n.alpha is not None and n.synaptic_update == "add-then-decay"
    _check_gradients(model, net, x, gen)


# --------------------------------------------------------------------------- recurrence
@pytest.mark.parametrize("seed", range(4))
def test_recurrent_layers_are_spike_exact_and_gradient_exact(seed):
    """IAFRecurrent / LIFRecurrent: rec_connect(spikes) is added to the next step's input (into =
    "input"), nothing at step 0 (Recurrent.initial = "zero": a rec_connect bias first acts at step 1)."""
    gen = torch.Generator().manual_seed(seed)
    bias = seed % 2 == 0
    reset = MembraneReset() if seed == 3 else MembraneSubtract()
    model = nn.Sequential(
        nn.Linear(8, 10, bias=False),
        sl.IAFRecurrent(rec_connect=nn.Linear(10, 10, bias=bias), reset_fn=reset,
                        spike_fn=SingleSpike if seed % 2 else MultiSpike),
        nn.Linear(10, 5, bias=False),
        sl.LIFRecurrent(tau_mem=12.0, rec_connect=nn.Linear(5, 5, bias=bias), tau_syn=4.0 if seed >= 2 else None,
                        norm_input=seed < 2, reset_fn=reset),
    )
    _scale_weights(model, gen, 6.0)
    with torch.no_grad():  # balanced recurrent weights: no runaway excitation
        for layer in (model[1], model[3]):
            w = layer.rec_connect.weight
            w.copy_((torch.rand(w.shape, generator=gen) - 0.5) * 1.2)
        if seed < 2:
            model[2].weight.mul_(8.0)
        if bias:
            model[1].rec_connect.bias.copy_(torch.rand(10, generator=gen) * 0.6)
    net, x = _check_forward(model, (8,), gen)
    rec = net.spec.neuron_layers()[0][1].recurrent
    assert rec == Recurrent("1.rec_connect.weight", "1.rec_connect.bias" if bias else None, 10, "dense", "input",
                            initial="zero")
    assert "1.rec_connect.weight" in net.spec.parameter_names()
    _check_gradients(model, net, x, gen)


def test_recurrent_bias_acts_from_step_one_only():
    """A lone bias on rec_connect: step 0 receives nothing, later steps receive the bias."""
    model = nn.Sequential(nn.Linear(1, 2, bias=False), sl.IAFRecurrent(rec_connect=nn.Linear(2, 2)))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].rec_connect.weight.zero_()
        model[1].rec_connect.bias.fill_(0.6)
    net = cil.wrap(model)
    out = net(torch.zeros(4, 1, 1)).detach()
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]  # 0, 0.6, 1.2 -> spike, 0.8
    assert torch.equal(out, run_sinabs(model, torch.zeros(4, 1, 1)).detach())


# --------------------------------------------------------------------------- adaptive threshold
@pytest.mark.parametrize("seed", range(4))
def test_alif_is_spike_exact_and_gradient_exact(seed):
    """ALIF: threshold b0 + adapt_scale * b_{t-1}, b_t = rho b_{t-1} + (1 - rho) S_t (Adaptation
    form "lowpass"); sinabs' spike function passes no gradient to the threshold and scales its
    surrogate with it (spike_gradient "membrane-relative")."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(4, generator=gen).tolist()
    kw = dict(tau_mem=5.0 + 20 * r[0], tau_adapt=10.0 + 30 * r[1], adapt_scale=[1.8, 0.7, torch.tensor(2.5), 1.0][seed],
              spike_threshold=torch.tensor(0.5 + r[2]), min_v_mem=-1.0 if r[3] < 0.5 else None, norm_input=seed % 2 == 0,
              surrogate_grad_fn=SingleExponential(0.3 + 0.1 * seed, 1.0 + 0.2 * seed))
    if seed == 3:
        second = sl.ALIFRecurrent(rec_connect=nn.Linear(4, 4), tau_syn=3.0, **{**kw, "norm_input": False})
    else:
        second = sl.ALIF(**kw)
    model = nn.Sequential(nn.Linear(10, 12, bias=seed == 1), sl.ALIF(**kw), nn.Linear(12, 4, bias=False), second)
    _scale_weights(model, gen, 8.0 if kw["norm_input"] else 2.5)
    if kw["norm_input"]:
        with torch.no_grad():
            model[2].weight.mul_(6.0)
    net, x = _check_forward(model, (10,), gen, T=30)
    n = net.spec.neuron_layers()[0][1]
    assert n.adaptation is not None and n.adaptation.form == "lowpass"
    assert n.adaptation.spike_gradient == "membrane-relative"
    _check_gradients(model, net, x, gen)


# --------------------------------------------------------------------------- ExpLeak
@pytest.mark.parametrize("norm_input", [False, True])
def test_expleak_readout_is_exact(norm_input):
    """ExpLeak (non-spiking leaky layer): a membrane-readout neuron layer (output="membrane")."""
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), sl.LIF(tau_mem=10.0), nn.Linear(8, 3),
                          sl.ExpLeak(tau_mem=7.0, norm_input=norm_input))
    _scale_weights(model, gen, 10.0)
    net, x = _check_forward(model, (6,), gen)
    assert net.spec.layers[-1].output == "membrane"
    _check_gradients(model, net, x, gen)


def test_expleak_squeezed_in_a_conv_net():
    gen = torch.Generator().manual_seed(6)
    B = 3
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), sl.IAFSqueeze(batch_size=B), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2, bias=False), sl.ExpLeakSqueeze(tau_mem=4.0, batch_size=B))
    _scale_weights(model, gen, 4.0)
    net, x = _check_forward(model, (2, 6, 6), gen, B=B)
    _check_gradients(model, net, x, gen)


# --------------------------------------------------------------------------- from_model: MaxPool2d, BN, Dropout
def _ann(pool: nn.Module, bn: bool, dropout: bool) -> nn.Sequential:
    """A conv ANN as a sinabs user writes it before sinabs.from_model (nested Sequential blocks)."""
    block1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU())
    block2 = nn.Sequential(nn.Conv2d(4, 4, 3, bias=not bn), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU())
    return nn.Sequential(block1, pool, block2, *([nn.Dropout(0.3)] if dropout else []), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 3, bias=False), nn.ReLU())


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.1)


@pytest.mark.parametrize("pool, bn, dropout", [
    ("max", False, False), ("max", True, True), ("sum", True, False), ("avg", False, True),
])
def test_from_model_conversions_are_spike_exact(pool, bn, dropout):
    gen = torch.Generator().manual_seed(7)
    B = 4
    p = {"max": nn.MaxPool2d(2), "sum": sl.SumPool2d(2), "avg": nn.AvgPool2d(2)}[pool]
    ann = _ann(p, bn, dropout)
    _scale_weights(ann, gen, 2.0 if pool == "sum" else 5.0)  # sum pooling: no saturated layer (zero gradients)
    _randomise_bn(ann, gen)
    snn = sinabs.from_model(ann, input_shape=(2, 8, 8), batch_size=B, min_v_mem=-1.0)
    snn.eval()  # batch norm with its running statistics, dropout off
    net, x = _check_forward(snn, (2, 8, 8), gen, T=12, B=B)
    kinds = [type(l).__name__ for l in net.spec.layers]
    assert ("Pool2d" in kinds) and any(isinstance(l, Pool2d) and l.mode == pool for l in net.spec.layers)
    assert (sum(isinstance(l, BatchNorm) for l in net.spec.layers) == 2) == bn
    assert any(isinstance(l, Dropout) for l in net.spec.layers) == dropout
    net.eval()
    if pool != "sum":  # sinabs' SumPool2d (LPPool2d, p=1) passes no gradient out of an empty window
        _check_gradients(snn, net, x, gen)
    if bn:  # the batch-norm affine terms are trained too, under the model's own names
        assert "spiking_model.0.1.weight" in net.spec.parameter_names()


def test_dropout_acts_in_software_training_passes_only():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(20, 30, bias=False), sl.IAF(), nn.Dropout(0.5), nn.Linear(30, 4, bias=False), sl.IAF())
    with torch.no_grad():
        model[0].weight.mul_(4)
        model[3].weight.mul_(4)
    net = cil.wrap(model)
    x = (torch.rand(10, 8, 20) < 0.5).float()
    net.train()
    with torch.no_grad():
        a = net(x)
    torch.manual_seed(1)
    b1 = net(x).detach()
    torch.manual_seed(2)
    b2 = net(x).detach()
    assert torch.equal(a, run_sinabs(model.eval(), x).detach())  # no autograd: an evaluation
    assert not torch.equal(b1, b2)  # autograd + train(): dropout active


def test_nested_sequential_of_sinabs_layers():
    gen = torch.Generator().manual_seed(9)
    model = nn.Sequential(nn.Sequential(nn.Linear(6, 8, bias=False), sl.IAF()),
                          nn.Sequential(nn.Sequential(nn.Linear(8, 3, bias=False)), sl.LIF(tau_mem=6.0, norm_input=False)))
    _scale_weights(model, gen, 5.0)
    net, x = _check_forward(model, (6,), gen)
    assert net.spec.parameter_names() == ["0.0.weight", "1.0.0.weight"]
    _check_gradients(model, net, x, gen)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("layer, named", [
    (sl.IAFRecurrent(rec_connect=nn.Conv2d(1, 1, 1)), r"rec_connect Conv2d.*nn.Linear\(n, n\)"),
    (sl.ExpLeak(tau_mem=5.0, min_v_mem=-1.0), r"ExpLeak.*min_v_mem.*min_v_mem=None"),
    (sl.ALIF(tau_mem=5.0, tau_adapt=10.0, spike_fn=MultiSpike), r"ALIF.*MultiSpike.*SingleSpike"),
    (sl.ALIF(tau_mem=5.0, tau_adapt=10.0, reset_fn=MembraneReset()), r"ALIF.*MembraneSubtract"),
    (sl.ALIF(tau_mem=5.0, tau_adapt=10.0, tau_syn=3.0), r"ALIF.*norm_input=False"),
    (sl.IAF(reset_fn=MembraneReset(reset_value=0.5)), r"IAF.*reset_value.*MembraneReset\(\)"),
    (nn.ReLU(), r"'2' \(ReLU\)"),
])
def test_refused_variants_name_the_layer_and_the_alternative(layer, named):
    model = nn.Sequential(nn.Linear(4, 4), sl.IAF(), layer)
    with pytest.raises(cil.UnsupportedLayerError, match=named):
        cil.wrap(model)


def test_batchnorm_in_the_unsqueezed_layout_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), sl.IAF())  # (B, T, C): would normalise over T
    with pytest.raises(cil.UnsupportedLayerError, match=r"BatchNorm1d.*IAFSqueeze"):
        cil.wrap(model)
