"""``cil-spl`` with ``proxy=``: the loss value is the chip's (the readout's logits of its output),
the gradient the proxy's (it reaches the proxy's parameters, not the SNN's), and the chip runs
the proxy's ``network_parameters()``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cil_core as cil
from cil_core.network.reference import feedforward
from cil_core.training import CilSpl

T, B, N_IN, N_OUT = 12, 16, 6, 3


class RateProxy(nn.Module):
    """A differentiable stand-in: per-class scores from the mean input (in the readout's logit
    units); the chip runs the same weights times ``gain`` (through ``network_parameters``)."""

    def __init__(self, net, gain: float = 1.0) -> None:
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in net.synaptic_parameters().values()])
        self.names, self.gain = net.parameter_names(), gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.mean(0)
        for w in self.w:
            h = torch.sigmoid(F.linear(h, self.gain * w) - 0.5)
        return h

    def network_parameters(self) -> dict[str, torch.Tensor]:
        return {n: self.gain * w for n, w in zip(self.names, self.w)}


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N_IN, generator=g) < 0.4).float()
    y = torch.randint(0, N_OUT, (B,), generator=g)
    net = feedforward([N_IN, 10, N_OUT], seed=seed, beta=1.0, weight_gain=3.0)
    return net, x, y


def test_loss_value_is_the_chips_and_gradient_reaches_the_proxy_only():
    net, x, y = _case()
    proxy = RateProxy(net, gain=1.5)
    readout = cil.Readout("rate", scale=0.5)
    tr = cil.Trainer(net, "ideal", "cil-spl", proxy=proxy, readout=readout, lr=1e-2)
    algo = tr.algorithm
    algo.setup(tr.state, cil.SpikeData(x, y))
    z, source = algo.forward_logits(tr.state, x)
    assert source == "hardware"
    # the chip ran the proxy's network_parameters (gain 1.5), not the network's initial weights
    chip = tr.backend.forward(tr.backend.transfer(net.spec, proxy.network_parameters()), x).output
    assert torch.equal(net.detached_parameters()["0.weight"], 1.5 * proxy.w[0].detach())
    assert torch.allclose(z, readout.logits(chip), atol=1e-6)
    loss = F.cross_entropy(z, y)
    assert torch.allclose(loss, readout.loss(chip, y), atol=1e-6), "the loss value is the chip's"
    loss.backward()
    assert all(p.grad is None for p in net.synaptic_parameters().values()), "no gradient into the SNN"
    # d loss / d phi = (dL/dz at the chip's logits) . d z_phi / d phi
    zc = readout.logits(chip).detach().requires_grad_(True)
    dz = torch.autograd.grad(F.cross_entropy(zc, y), zc)[0]
    want = torch.autograd.grad((dz * proxy(x)).sum(), list(proxy.w))
    for p, w in zip(proxy.w, want):
        assert p.grad is not None and p.grad.abs().sum() > 0
        assert torch.allclose(p.grad, w, rtol=1e-5, atol=1e-7)


def test_fit_trains_the_proxy_and_leaves_the_network_holding_its_weights():
    net, x, y = _case(1)
    proxy = RateProxy(net, gain=1.2)
    before = [w.detach().clone() for w in proxy.w]
    tr = cil.Trainer(net, "ideal", "cil-spl", proxy=proxy, lr=5e-2, seed=0)
    first = torch.randperm(B, generator=torch.Generator().manual_seed(0))[:8]  # the trainer's first batch
    chip = tr.backend.forward(tr.backend.transfer(net.spec, proxy.network_parameters()), x[:, first]).output
    first_loss = float(tr.readout.loss(chip, y[first]))
    hist = tr.fit(cil.SpikeData(x, y), steps=3, batch_size=8)
    assert any(not torch.equal(a, w.detach()) for a, w in zip(before, proxy.w)), "the proxy is what is trained"
    for n, w in proxy.network_parameters().items():
        assert torch.equal(net.detached_parameters()[n], w.detach()), "finish() deploys the proxy's weights"
    assert tr.session.stats.calls_by_purpose["train"] == 3
    assert set(tr.algorithm.state_dict()["proxy"]) == {"w.0", "w.1"}
    with pytest.raises(cil.CilError, match="forward_logits"):
        tr.algorithm.forward_value(tr.state, x)
    # the step's loss is the chip's, for the weights the proxy held at that step
    assert len(hist) == 3 and hist.records[0]["loss"] == pytest.approx(first_loss, abs=1e-6)


def test_proxy_without_network_parameters_trains_shared_weights():
    net, x, y = _case(2)

    class Shared(nn.Module):  # uses the network's own tensors
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.ParameterList(list(net.synaptic_parameters().values()))

        def forward(self, xx: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(F.linear(torch.sigmoid(F.linear(xx.mean(0), self.w[0])), self.w[1]))

    before = net.detached_parameters()
    tr = cil.Trainer(net, "ideal", "cil-spl", proxy=Shared(), lr=5e-2)
    tr.fit(cil.SpikeData(x, y), steps=2, batch_size=8)
    assert any(not torch.equal(before[n], p) for n, p in net.detached_parameters().items())


def test_proxy_errors():
    net, x, y = _case()
    with pytest.raises(cil.CilError, match="observe='output'"):
        cil.Trainer(net, "ideal", "cil-spl", proxy=RateProxy(net), observe="layers")
    with pytest.raises(cil.CilError, match="proxy"):
        cil.Trainer(net, "ideal", "cil-spl", proxy=lambda x: x.mean(0))
    with pytest.raises(cil.CilError, match="torch.nn.Module"):
        CilSpl(proxy=lambda x: x.mean(0))

    class Wrong(RateProxy):
        def forward(self, x):
            return super().forward(x)[:, :2]

    tr = cil.Trainer(net, "ideal", "cil-spl", proxy=Wrong(net))
    with pytest.raises(cil.CilError, match="the proxy returned .* logits of the chip's output"):
        tr.fit(cil.SpikeData(x, y), steps=1)
