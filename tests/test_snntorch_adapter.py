"""snntorch adapter: spike-for-spike equivalence on the ideal backend, CIL-SPL == BPTT
gradients, and clear errors."""

import copy
import zlib

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
pytest.importorskip("cil_snntorch", reason="the cil-snntorch plugin is not installed")

import cil_core as cil  # noqa: E402
from cil_snntorch import run_native  # noqa: E402
from equivalence import native_and_cil_spl_gradients  # noqa: E402
from snntorch import surrogate  # noqa: E402


def _scale_linear(model, gain):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return model


def random_dense_model(rng: torch.Generator, neuron: str, reset: str):
    n_in, n_h, n_out = (int(torch.randint(3, 40, (1,), generator=rng)) for _ in range(3))
    beta = float(torch.rand(1, generator=rng) * 0.5 + 0.5)
    thr = float(torch.rand(1, generator=rng) + 0.5)

    def make(**kw):
        if neuron == "synaptic":
            return snn.Synaptic(alpha=0.7, beta=beta, threshold=thr, reset_mechanism=reset, init_hidden=True, **kw)
        return snn.Leaky(beta=beta, threshold=thr, reset_mechanism=reset, init_hidden=True, **kw)

    model = nn.Sequential(nn.Linear(n_in, n_h), make(), nn.Linear(n_h, n_out), make(output=True))
    return _scale_linear(model, 2.5), n_in


def ideal_output(net, x):
    chip = cil.make_backend("ideal")
    return chip.forward(chip.transfer(net.spec, net.detached_parameters()), x).output


@pytest.mark.parametrize("neuron", ["leaky", "synaptic"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_random_dense_models_match_spike_for_spike(neuron, reset):
    rng = torch.Generator().manual_seed(zlib.crc32(f"{neuron}-{reset}".encode()))
    for trial in range(4):
        model, n_in = random_dense_model(rng, neuron, reset)
        x = (torch.rand(30, 8, n_in, generator=rng) < 0.3).float()
        ref = run_native(model, x)
        net = cil.wrap(model)
        out = ideal_output(net, x)
        assert ref.sum() > 0, "the test model must spike to mean anything"
        assert torch.equal(out, ref), f"trial {trial}: {(out != ref).sum()} spikes differ"
        # the software pass (used for gradients) is the same function
        assert torch.equal(net(x), ref)


def test_per_neuron_beta_and_threshold_match():
    # learn_beta=True is the way snntorch takes a per-neuron beta tensor; frozen, cil can train the model
    model = nn.Sequential(nn.Linear(10, 6), snn.Leaky(beta=torch.rand(6), threshold=torch.rand(6) + 0.5, init_hidden=True,
                                                      learn_beta=True),
                          nn.Linear(6, 3), snn.Leaky(beta=0.8, init_hidden=True, output=True))
    model[1].beta.requires_grad_(False)
    _scale_linear(model, 3.0)
    x = (torch.rand(25, 5, 10) < 0.4).float()
    assert torch.equal(ideal_output(cil.wrap(model), x), run_native(model, x))


def test_conv_model_matches_spike_for_spike():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=1, padding=1), snn.Leaky(beta=0.9, init_hidden=True),
        nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2), snn.Leaky(beta=0.8, init_hidden=True),
        nn.Flatten(), nn.Linear(6, 5), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )
    _scale_linear(model, 3.0)
    x = (torch.rand(20, 4, 2, 8, 8) < 0.3).float()
    net = cil.wrap(model, input_shape=(2, 8, 8))
    ref = run_native(model, x)
    assert ref.sum() > 0 and torch.equal(ideal_output(net, x), ref)


class TutorialNet(nn.Module):
    """The snntorch tutorial style: hidden states passed explicitly, forward loops over time."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 20)
        self.lif1 = snn.Leaky(beta=0.9, spike_grad=surrogate.fast_sigmoid(slope=25))
        self.fc2 = nn.Linear(20, 4)
        self.lif2 = snn.Leaky(beta=0.85, spike_grad=surrogate.fast_sigmoid(slope=25))

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def test_time_looping_user_module_matches():
    model = _scale_linear(TutorialNet(), 3.0)
    x = (torch.rand(30, 6, 12) < 0.3).float()
    net = cil.wrap(model)
    assert [type(layer).__name__ for layer in net.spec.layers] == ["Dense", "Neuron", "Dense", "Neuron"]
    assert net.spec.layers[1].surrogate == cil.Surrogate("fast-sigmoid", 25.0)
    ref = model(x)[0]
    assert ref.sum() > 0 and torch.equal(ideal_output(net, x), ref)


class ReshapingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc = nn.Linear(3 * 4 * 4, 2)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for t in range(x.shape[0]):
            s1, m1 = self.lif1(self.conv(x[t]), m1)
            s2, m2 = self.lif2(self.fc(s1.view(s1.shape[0], -1)), m2)
            out.append(s2)
        return torch.stack(out)


def test_reshape_between_layers_becomes_flatten():
    model = _scale_linear(ReshapingNet(), 3.0)
    net = cil.wrap(model, input_shape=(1, 6, 6))
    assert [layer.kind for layer in net.spec.layers] == ["conv2d", "neuron", "flatten", "dense", "neuron"]
    x = (torch.rand(15, 3, 1, 6, 6) < 0.5).float()
    assert torch.equal(ideal_output(net, x), model(x))


@pytest.mark.parametrize("neuron", ["leaky", "synaptic"])
def test_cil_spl_gradients_equal_bptt_on_ideal_backend(neuron):
    rng = torch.Generator().manual_seed(7)
    model, n_in = random_dense_model(rng, neuron, "subtract")
    twin = copy.deepcopy(model)
    x = (torch.rand(25, 16, n_in, generator=rng) < 0.3).float()
    y = torch.randint(0, model[2].out_features, (16,), generator=rng)
    # plain BPTT through snntorch's own forward and surrogate vs CIL-SPL with the ideal chip in the loop
    ref, got, trainer = native_and_cil_spl_gradients(model, twin, x, y, run_native, optimizer="sgd", lr=0.1)
    for n in ref:
        assert got[n].abs().sum() > 0
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-7)

    # and a full training step moves the snntorch model's own parameters in place
    before = twin[0].weight.detach().clone()
    trainer.fit((x, y), epochs=1, batch_size=16)
    assert not torch.equal(before, twin[0].weight)


def test_layer_observation_injection_equals_plain_run_on_ideal_backend():
    """Cramer et al.'s per-layer substitution reduces to BPTT when the chip is ideal."""
    rng = torch.Generator().manual_seed(3)
    model, n_in = random_dense_model(rng, "leaky", "subtract")
    twin = copy.deepcopy(model)
    x = (torch.rand(20, 8, n_in, generator=rng) < 0.3).float()
    y = torch.randint(0, model[2].out_features, (8,), generator=rng)
    readout = cil.Readout("rate")
    readout.loss(run_native(model, x), y).backward()
    trainer = cil.Trainer(cil.wrap(twin), "ideal", "cil-spl", observe="layers")
    trainer.algorithm.setup(trainer.state, cil.SpikeData(x, y))
    out, _ = trainer.algorithm.forward_value(trainer.state, x)
    readout.loss(out, y).backward()
    for n, p in twin.named_parameters():
        torch.testing.assert_close(p.grad, dict(model.named_parameters())[n].grad, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "model, match",
    [
        (nn.Sequential(nn.Linear(4, 4), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True)),
         "Alpha.*not supported.*Use snn.Synaptic"),
        # spiking max pooling is supported (tests/test_snntorch_layers.py); its padded / ceil-mode variants are not
        (nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(0.9, init_hidden=True), nn.MaxPool2d(2, ceil_mode=True),
                       nn.Flatten(), nn.Linear(2, 2), snn.Leaky(0.9, init_hidden=True)),
         "layer '2'.*MaxPool2d.*ceil_mode.*not supported"),
        (nn.Sequential(nn.Linear(4, 4), snn.Leaky(0.9, init_hidden=True, inhibition=True)), "inhibition"),
        (nn.Sequential(nn.Linear(4, 4), snn.RSynaptic(0.5, 0.9, linear_features=4, init_hidden=True,
                                                      reset_delay=False)), "RSynaptic with reset_delay=False"),
        (nn.Sequential(nn.Linear(4, 4), snn.Leaky(0.9)), "init_hidden=True"),
        (nn.Sequential(nn.Linear(4, 4), snn.Leaky(0.9, init_hidden=True, spike_grad=surrogate.spike_rate_escape())),
         "surrogate gradient"),
    ],
)
def test_unsupported_layers_are_named(model, match):
    with pytest.raises(cil.UnsupportedLayerError, match=match):
        cil.wrap(model, input_shape=(1, 4, 4) if isinstance(model[0], nn.Conv2d) else None)


def test_model_without_adapter_is_named():
    with pytest.raises(cil.UnsupportedModelError, match="torch.nn.modules.linear.Linear.*snntorch"):
        cil.wrap(nn.Linear(3, 3))


def test_conv_model_needs_input_shape():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(0.9, init_hidden=True))
    with pytest.raises(cil.ShapeError, match="input_shape"):
        cil.wrap(model)


def test_wrong_input_shape_is_explained(breast_cancer):
    model = nn.Sequential(nn.Linear(62, 8), snn.Leaky(0.9, init_hidden=True), nn.Linear(8, 2),
                          snn.Leaky(0.9, init_hidden=True))
    trainer = cil.Trainer(cil.wrap(model), "ideal", "cil-spl")
    batch_first = breast_cancer.train.x.transpose(0, 1)  # [N, T, F] instead of [T, N, F]
    with pytest.raises(cil.ShapeError, match="labels have shape"):
        trainer.fit((batch_first, breast_cancer.train.y), epochs=1)
    with pytest.raises(cil.ShapeError, match=r"time-major \[T, N, 62\]"):
        trainer.evaluate((breast_cancer.train.x[..., :30], breast_cancer.train.y))


def test_nan_weights_are_refused_and_training_state_kept(breast_cancer):
    model = nn.Sequential(nn.Linear(62, 8), snn.Leaky(0.9, init_hidden=True), nn.Linear(8, 2),
                          snn.Leaky(0.9, init_hidden=True))
    net = cil.wrap(model)
    trainer = cil.Trainer(net, "ideal", "mh")
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(cil.NonFiniteError, match="'2.weight'"):
        trainer.fit(breast_cancer.train, steps=2)
    with pytest.raises(cil.NonFiniteError, match="'2.weight'"):
        trainer.deploy()
    good = {k: torch.zeros_like(v) for k, v in net.detached_parameters().items()}
    bad = dict(good, **{"0.weight": torch.full_like(good["0.weight"], float("inf"))})
    with pytest.raises(cil.NonFiniteError):
        net.load_parameters(bad)
    assert torch.isnan(model[2].weight[0, 0]), "a refused load must not change the model"


@pytest.mark.parametrize("flag", ["learn_beta", "learn_threshold"])
def test_trainable_neuron_parameters_are_trained_not_silently_frozen(flag):
    # (tests/test_neuron_parameters.py checks values and gradients against snntorch)
    model = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, **{flag: True}),
                          nn.Linear(3, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    attr = flag.removeprefix("learn_")
    net = cil.wrap(model)
    assert f"1.{attr}" in net.parameter_names()
    assert net.synaptic_parameters()[f"1.{attr}"] is getattr(model[1], attr)


def test_misspelt_adapter_option_names_the_valid_ones():
    model = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with pytest.raises(cil.OptionError, match="unknown option 'inputshape' for adapter 'snntorch'.*'input_shape'"):
        cil.wrap(model, inputshape=(4,))
