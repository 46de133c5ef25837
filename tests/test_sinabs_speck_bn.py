"""A sinabs conv net with BatchNorm2d on the ``speck`` backend: the session folds the batch norm
into the preceding convolution at weight transfer (``cil_core.hardware.transfer.fold_batchnorm``)
and the chip gives the spikes of the ideal backend running the folded weights (exactly, where the
chip's quantization is exact; otherwise the chip equals the plain-Python event-driven reference
of tests/test_speck_backend.py on the folded, quantized weights). MaxPool2d and a batch norm that
does not follow a synaptic layer are refused with what to do instead."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("sinabs")
pytest.importorskip("cil_sinabs")
pytest.importorskip("numba")
pytest.importorskip("cil_speck")

import sinabs.layers as sl  # noqa: E402
from sinabs.activation import MembraneReset  # noqa: E402

import cil_core as cil  # noqa: E402
from cil_core import BatchNorm, BackendCapacityError  # noqa: E402
from cil_core.hardware.session import HardwareSession  # noqa: E402
from cil_core.hardware.transfer import fold_batchnorm  # noqa: E402
from cil_sinabs import run_sinabs  # noqa: E402
from cil_speck import SpeckBackend  # noqa: E402
from cil_speck.events import dense_to_arrays  # noqa: E402
from test_speck_backend import _one_event_per_step, reference  # noqa: E402


def _exact_bn(bn: nn.BatchNorm2d, factors: list[float], gen: torch.Generator) -> None:
    """Running statistics with mean 0 and a gamma chosen so that the folded scale
    gamma / sqrt(var + eps) is exactly ``factors`` (and the folded bias exactly 0)."""
    with torch.no_grad():
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
        bn.running_mean.zero_()
        bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps) * torch.tensor(factors))
        bn.bias.zero_()


def test_speck_runs_batchnorm_folded_spike_for_spike():
    """One input event per step, integer folded weights with max |w| = 127 (per-layer scale 1)
    and integer thresholds > 127: the event-driven chip must equal the time-stepped ideal
    backend on the folded network (see test_one_event_per_step_equals_time_stepped)."""
    gen = torch.Generator().manual_seed(12)
    T, B = 60, 4
    model = nn.Sequential(
        nn.Conv2d(2, 1, 1, bias=False), nn.BatchNorm2d(1),
        sl.IAFSqueeze(batch_size=B, spike_threshold=torch.tensor(130.0), min_v_mem=-300.0),
        sl.SumPool2d(2),
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3),
        sl.IAFSqueeze(batch_size=B, spike_threshold=torch.tensor(150.0), reset_fn=MembraneReset()),
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[127.0]], [[100.0]]]]))
        w = torch.randint(-30, 64, (3, 1, 3, 3), generator=gen).float()
        w[1] = torch.randint(-60, 128, (1, 3, 3), generator=gen).float()
        w[1].view(-1)[0] = 127.0
        w[2] = 2 * torch.randint(-30, 64, (1, 3, 3), generator=gen).float()  # even: x 0.5 stays an integer
        model[4].weight.copy_(w)
    _exact_bn(model[1], [1.0], gen)
    _exact_bn(model[5], [2.0, 1.0, 0.5], gen)
    model.eval()
    net = cil.wrap(model, input_shape=(2, 6, 6))
    assert sum(isinstance(l, BatchNorm) for l in net.spec.layers) == 2
    params = net.detached_parameters()
    x = _one_event_per_step(gen, T, B, (2, 6, 6))

    session = HardwareSession(SpeckBackend(drop_biases=True))
    dep = session.transfer(net.spec, params)  # folded here: the chip never sees a batch norm
    assert dep.chip["scales"] == [1.0, 1.0]
    chip = session.forward(dep, x).output

    fspec, fparams = fold_batchnorm(net.spec, params)
    assert not any(isinstance(l, BatchNorm) for l in fspec.layers)
    assert all(float(fparams[n].abs().max()) == 0.0 for n in fparams if n.endswith(":bn-bias"))
    folded = cil.simulate(fspec, fparams, x).output
    assert folded.sum() > 0
    assert torch.equal(chip, folded)
    # and the ideal backend running the batch norm itself (what the sinabs model does) agrees
    unfolded = cil.simulate(net.spec, params, x).output
    assert torch.equal(unfolded, run_sinabs(model, x).detach())
    assert torch.equal(chip, unfolded)


def _bn_convnet(gen: torch.Generator, B: int, pool: nn.Module) -> nn.Sequential:
    """A BatchNorm conv net as a sinabs user writes it (squeezed IAF layers, pooling after the
    neurons, no conv biases)."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), sl.IAFSqueeze(batch_size=B), pool,
        nn.Conv2d(4, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4), sl.IAFSqueeze(batch_size=B),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 3, bias=False), nn.BatchNorm1d(3), sl.IAFSqueeze(batch_size=B),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_((torch.rand(m.weight.shape, generator=gen) - 0.3) * 3.0 / m.weight[0].numel() ** 0.5)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.6 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.2)
    return model.eval()


@pytest.mark.parametrize("pool", ["sum", "avg"])
def test_speck_runs_the_folded_network_within_its_quantization(pool):
    """General batch norm statistics: the chip holds exactly the folded weights, quantized (the
    folded biases are dropped: the chip has none), and runs them as the event-driven reference."""
    gen = torch.Generator().manual_seed(13)
    T, B = 8, 3
    model = _bn_convnet(gen, B, sl.SumPool2d(2) if pool == "sum" else nn.AvgPool2d(2))
    net = cil.wrap(model, input_shape=(2, 10, 10))
    params = net.detached_parameters()
    x = (torch.rand(T, B, 2, 10, 10, generator=gen) < 0.2).float() * torch.randint(1, 3, (T, B, 2, 10, 10), generator=gen)

    session = HardwareSession(SpeckBackend(drop_biases=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropping the non-zero bias" of the folded batch norms
        dep = session.transfer(net.spec, params)
        fspec, fparams = fold_batchnorm(net.spec, params)
        direct = SpeckBackend(drop_biases=True).transfer(fspec, fparams)
    for a, b in zip(dep.chip["weights_int8"], direct.chip["weights_int8"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert dep.chip["scales"] == direct.chip["scales"]
    obs = session.forward(dep, x, record=True)
    c, y, xx, tb, off = dense_to_arrays(x)
    samples = [list(zip(tb[off[b]:off[b + 1]], c[off[b]:off[b + 1]], y[off[b]:off[b + 1]], xx[off[b]:off[b + 1]]))
               for b in range(B)]
    ref_out, _ = reference(fspec, dep.chip, samples, T)
    out = obs.output.reshape(T, B, -1).numpy()
    assert out.sum() > 0
    assert np.array_equal(out, ref_out)


def test_speck_refuses_max_pooling_naming_sumpool():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, bias=False), sl.IAFSqueeze(batch_size=1), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 3 * 3, 2, bias=False), sl.IAFSqueeze(batch_size=1))
    net = cil.wrap(model, input_shape=(2, 8, 8))
    session = HardwareSession(SpeckBackend())
    with pytest.raises(BackendCapacityError, match=r"max pool.*SumPool2d"):
        session.check(net.spec)
    with pytest.raises(BackendCapacityError, match="SumPool2d"):
        session.transfer(net.spec, net.detached_parameters())
    cil.simulate(net.spec, net.detached_parameters(), torch.ones(3, 1, 2, 8, 8))  # the ideal backend runs it


def test_batchnorm_that_does_not_follow_a_synaptic_layer_is_refused_on_speck():
    """A batch norm after the neurons (normalising spikes) cannot be folded into weights."""
    model = nn.Sequential(nn.Conv2d(2, 2, 3, bias=False), sl.IAFSqueeze(batch_size=1), nn.BatchNorm2d(2), nn.Flatten(),
                          nn.Linear(2 * 6 * 6, 2, bias=False), sl.IAFSqueeze(batch_size=1)).eval()
    net = cil.wrap(model, input_shape=(2, 8, 8))
    session = HardwareSession(SpeckBackend(drop_biases=True))
    with pytest.raises(BackendCapacityError, match=r"BatchNorm.*does not directly follow a Linear/Conv.*right after"):
        session.transfer(net.spec, net.detached_parameters())
    x = (torch.rand(4, 1, 2, 8, 8) < 0.3).float()
    assert torch.equal(cil.simulate(net.spec, net.detached_parameters(), x).output,
                       run_sinabs(model, x).detach())  # the ideal backend runs it as the model does


def test_a_wrapper_around_speck_runs_a_batchnorm_network_as_speck_does():
    """A backend wrapper (FaultyBackend, rate 0) mirrors the chip's traits through one helper,
    so the session folds the batch norm for it exactly as for the chip: the same spikes."""
    from cil_core.testing import FaultyBackend

    gen = torch.Generator().manual_seed(13)
    T, B = 8, 3
    net = cil.wrap(_bn_convnet(gen, B, sl.SumPool2d(2)), input_shape=(2, 10, 10))
    params = net.detached_parameters()
    x = (torch.rand(T, B, 2, 10, 10, generator=gen) < 0.2).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the folded biases are dropped
        chip = HardwareSession(SpeckBackend(drop_biases=True)).run(net.spec, params, x).output
        wrapped = HardwareSession(FaultyBackend(SpeckBackend(drop_biases=True), rate=0.0)).run(net.spec, params, x).output
    assert chip.sum() > 0
    assert torch.equal(chip, wrapped)


def test_speck_itself_refuses_a_batchnorm_it_was_not_given_folded():
    """Whoever calls the chip: its own mapping never drops a layer it does not run."""
    gen = torch.Generator().manual_seed(13)
    net = cil.wrap(_bn_convnet(gen, 3, sl.SumPool2d(2)), input_shape=(2, 10, 10))
    chip = SpeckBackend(drop_biases=True)
    with pytest.raises(BackendCapacityError, match="batch norm.*fold it"):
        chip.transfer(net.spec, net.detached_parameters())
    with pytest.raises(BackendCapacityError, match="batch norm"):
        chip.check(net.spec)
