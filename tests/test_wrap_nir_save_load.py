"""A NIR graph wrapped with ``cil.wrap`` owns its parameters: they train, save and load."""

import io

import pytest
import torch

pytest.importorskip("nir")
pytest.importorskip("cil_nir")

import cil_core as cil  # noqa: E402
from cil_core.network.reference import feedforward  # noqa: E402


def _graph():
    from cil_nir import to_nir

    return to_nir(feedforward([6, 5, 3], beta=0.8, seed=2, weight_gain=3.0))


def test_wrapped_graph_has_parameters_and_saves_and_loads():
    graph = _graph()
    net = cil.wrap(graph)
    names = [n for n, _ in net.named_parameters()]
    assert names and set(net.parameter_names()) <= {n.removeprefix("module.") for n in names}
    x = (torch.rand(12, 4, 6) < 0.4).float()
    out = net(x)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert torch.equal(back(x), out)
    # the state_dict round-trips into a freshly wrapped copy of the same graph
    other = cil.wrap(_graph())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    assert not torch.equal(other(x), out)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other(x), out)


def test_training_a_wrapped_graph_changes_its_own_parameters(breast_cancer):
    from cil_nir import to_nir

    net = cil.wrap(to_nir(feedforward([breast_cancer.n_inputs, 8, 2], seed=0, weight_gain=2.0)))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    trainer = cil.Trainer(net, "ideal", "offline", seed=0)
    trainer.fit(breast_cancer.train, epochs=1, batch_size=64)
    after = dict(net.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
