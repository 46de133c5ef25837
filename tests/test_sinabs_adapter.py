"""sinabs adapter: a wrapped sinabs model reproduces its own forward spike for spike on the ideal
backend, CIL-SPL on the ideal backend gives the BPTT gradients, and unsupported layers are named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("sinabs")
pytest.importorskip("cil_sinabs")

import sinabs.layers as sl  # noqa: E402
from sinabs.activation import MaxSpike, MembraneReset, MultiSpike, SingleExponential, SingleSpike  # noqa: E402

import cil_core as cil  # noqa: E402
from cil_core.training.gradient import CilSpl, Offline  # noqa: E402
from cil_sinabs import run_sinabs  # noqa: E402


def _neuron(kind: str, B: int, gen: torch.Generator, squeeze: bool):
    """A random sinabs neuron layer (spike fn, reset, threshold, lower bound, leak)."""
    r = torch.rand(6, generator=gen).tolist()
    spike_fn = [MultiSpike, SingleSpike, MaxSpike(2)][int(r[0] * 3)]
    reset = MembraneReset() if r[1] < 0.3 else sl.iaf.MembraneSubtract()
    kw = dict(spike_threshold=torch.tensor(0.5 + r[2]), spike_fn=spike_fn, reset_fn=reset,
              min_v_mem=(-1.0 - r[3]) if r[4] < 0.5 else None)
    if kind == "lif":
        cls = sl.LIFSqueeze if squeeze else sl.LIF
        extra = dict(batch_size=B) if squeeze else {}
        return cls(tau_mem=5.0 + 20 * r[5], norm_input=r[5] < 0.5, **kw, **extra)
    cls = sl.IAFSqueeze if squeeze else sl.IAF
    return cls(**kw, **(dict(batch_size=B) if squeeze else {}))


def _dense_model(gen, B):
    sizes = [int(v) for v in torch.randint(3, 12, (3,), generator=gen)]
    kind = "lif" if torch.rand(1, generator=gen) < 0.5 else "iaf"
    layers = []
    for a, b in zip([10] + sizes[:-1], sizes):
        layers += [nn.Linear(a, b, bias=bool(torch.rand(1, generator=gen) < 0.5)), _neuron(kind, B, gen, False)]
    return nn.Sequential(*layers), (10,)


def _conv_model(gen, B):
    pool = sl.SumPool2d(2) if torch.rand(1, generator=gen) < 0.5 else nn.AvgPool2d(2)
    c1, c2 = int(torch.randint(2, 6, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen))
    m = nn.Sequential(
        nn.Conv2d(2, c1, 3, padding=1, bias=False), _neuron("iaf", B, gen, True), pool,
        nn.Conv2d(c1, c2, 3, stride=2, bias=False), _neuron("iaf", B, gen, True),
        nn.Flatten(), nn.Linear(c2 * 2 * 2, 4, bias=False), _neuron("iaf", B, gen, True),
    )
    return m, (2, 10, 10)


@pytest.mark.parametrize("seed", range(6))
def test_forward_equals_sinabs_spike_for_spike(seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    T, B = 25, 6
    model, shape = (_dense_model if seed % 2 == 0 else _conv_model)(gen, B)
    with torch.no_grad():  # mostly excitatory weights, strong enough that every layer spikes
        mods = list(model)
        for i, m in enumerate(mods):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nxt = mods[i + 1]
                gain = 1.0 / (1 - float(nxt.alpha_mem_calculated)) if getattr(nxt, "norm_input", False) else 1.0
                m.weight.copy_((torch.rand(m.weight.shape, generator=gen) - 0.3) * 6.0 * gain / m.weight.shape[1] ** 0.5)
    net = cil.wrap(model, input_shape=shape)
    x = (torch.rand(T, B, *shape, generator=gen) < 0.3).float() * torch.randint(1, 3, (T, B, *shape), generator=gen)
    ref = run_sinabs(model, x).detach()
    backend = cil.make_backend("ideal")
    out = backend.forward(backend.transfer(net.spec, net.detached_parameters()), x).output
    assert out.shape == ref.shape
    assert ref.sum() > 0
    assert torch.equal(out, ref), f"{int((out != ref).sum())} of {out.numel()} outputs differ"


def test_squeezed_layout_and_network_wrapper():
    """IAFSqueeze batch-major (B*T) layout, a sinabs Network, and parameter names of the model."""
    from sinabs.network import Network

    torch.manual_seed(1)
    B = 3
    spiking = nn.Sequential(nn.Linear(5, 4, bias=False), sl.IAFSqueeze(batch_size=B), nn.Linear(4, 3, bias=False),
                            sl.IAFSqueeze(num_timesteps=7))
    with torch.no_grad():
        for p in spiking.parameters():
            p.mul_(4) if p.dim() == 2 else None
    net_model = Network(analog_model=nn.Sequential(), spiking_model=spiking)
    net = cil.wrap(net_model)
    assert net.spec.parameter_names() == ["spiking_model.0.weight", "spiking_model.2.weight"]
    x = (torch.rand(7, B, 5) < 0.5).float()
    assert torch.equal(net(x).detach(), run_sinabs(net_model, x).detach())
    # the wrapped network's tensors are the model's own parameters
    assert net.synaptic_parameters()["spiking_model.0.weight"] is spiking[0].weight


def test_cil_spl_on_ideal_equals_bptt_gradients():
    torch.manual_seed(2)
    B, T = 8, 15
    model = nn.Sequential(nn.Linear(12, 16, bias=False), sl.IAF(), nn.Linear(16, 4, bias=False), sl.IAF())
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[2].weight.mul_(3)
    net = cil.wrap(model)
    x = (torch.rand(T, B, 12) < 0.4).float()
    y = torch.randint(0, 4, (B,))
    grads = {}
    for name, algo in (("offline", Offline()), ("cil-spl", CilSpl())):
        tr = cil.Trainer(net, "ideal", algo)
        out, _ = algo.forward_value(tr.state, x)
        loss = tr.readout.loss(out, y)
        net.zero_grad(set_to_none=True)
        loss.backward()
        grads[name] = {k: p.grad.clone() for k, p in net.synaptic_parameters().items()}
    for k in grads["offline"]:
        assert grads["offline"][k].abs().sum() > 0
        torch.testing.assert_close(grads["cil-spl"][k], grads["offline"][k])


def test_gradients_equal_sinabs_native_bptt():
    """The software pass's surrogate (SingleExponential) and reset give sinabs' own gradients."""
    torch.manual_seed(3)
    B, T = 6, 12
    model = nn.Sequential(nn.Linear(8, 10, bias=False), sl.IAF(surrogate_grad_fn=SingleExponential(0.4, 1.5)),
                          nn.Linear(10, 3, bias=False), sl.IAF(spike_threshold=torch.tensor(0.8)))
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[2].weight.mul_(3)
    net = cil.wrap(model)
    x = (torch.rand(T, B, 8) < 0.4).float()
    run_sinabs(model, x).sum().backward()
    native = {n: p.grad.clone() for n, p in model.named_parameters() if n.endswith("weight")}
    model.zero_grad(set_to_none=True)
    net(x).sum().backward()
    for n, g in native.items():
        torch.testing.assert_close(net.synaptic_parameters()[n].grad, g, rtol=1e-4, atol=1e-5)


def test_training_updates_the_sinabs_model_in_place():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 3, bias=False), sl.IAF())
    before = model[0].weight.detach().clone()
    x = (torch.rand(10, 32, 6) < 0.5).float()
    y = torch.randint(0, 3, (32,))
    tr = cil.Trainer(model, "ideal", "cil-spl", lr=0.05)
    tr.fit((x, y), epochs=1, batch_size=16)
    assert not torch.equal(before, model[0].weight.detach())


@pytest.mark.parametrize("layer, named", [
    (nn.ReLU(), "ReLU"),
    (nn.MaxPool2d(2, padding=1), "MaxPool2d.*padding"),
    (sl.IAF(reset_fn=MembraneReset(reset_value=0.5)), "reset_value"),
    (sl.ALIF(tau_mem=5.0, tau_adapt=10.0, tau_syn=3.0), "ALIF.*tau_syn"),
])
def test_unsupported_layers_are_named(layer, named):
    """What remains refused is named (MaxPool2d, tau_syn, recurrence, ALIF, ExpLeak and batch norm
    are accepted since issue 12: tests/test_sinabs_layers.py)."""
    model = nn.Sequential(nn.Linear(4, 4), sl.IAF(), layer)
    with pytest.raises(cil.UnsupportedLayerError, match=named):
        cil.wrap(model)


@pytest.mark.parametrize("model, shape", [
    (nn.Sequential(nn.Conv2d(1, 1, 1), sl.IAFSqueeze(batch_size=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 4),
                   sl.IAFSqueeze(batch_size=1)), (1, 4, 4)),
    (nn.Sequential(nn.Linear(4, 4), sl.IAF(tau_syn=5.0)), (4,)),
    (nn.Sequential(nn.Linear(4, 4), sl.ExpLeak(tau_mem=4.0)), (4,)),
    (nn.Sequential(nn.Linear(4, 4), sl.IAFRecurrent(rec_connect=nn.Linear(4, 4))), (4,)),
    (nn.Sequential(nn.Linear(4, 4), sl.ALIF(tau_mem=5.0, tau_adapt=10.0)), (4,)),
    (nn.Sequential(nn.Linear(4, 4), sl.IAF(), nn.Dropout(0.2), nn.Linear(4, 4), sl.IAF()), (4,)),
])
def test_issue_12_layers_are_accepted(model, shape):
    cil.wrap(model, input_shape=shape)


def test_flatten_that_would_mix_time_is_rejected():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), sl.IAF())  # (B, T, ...) layout: start_dim must be 2
    with pytest.raises(cil.UnsupportedLayerError, match="Flatten"):
        cil.wrap(model, input_shape=(2, 2))
