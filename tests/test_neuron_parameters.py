"""Trainable neuron parameters (issue 20 item 1): snntorch ``learn_beta``, ``learn_alpha``,
``learn_threshold``, ``learn_graded_spikes_factor`` and per-neuron parameter tensors.

The description names the model's own tensors (:class:`cil_core.NeuronParameter`); the software
pass reads them from the parameter dict, so a wrapped model is spike-for-spike and membrane-for-
membrane equal to snntorch's forward on ``ideal`` and in the software pass, and its BPTT (and
CIL-SPL) gradients w.r.t. the neuron parameters equal snntorch's own autograd. Weight transfer
writes the current values into the chip's neuron layers; each backend declares which trained
neuron parameters it holds (``neuron_parameters``) and the rest is refused before the first
call, naming the layer and what to change."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
pytest.importorskip("cil_snntorch", reason="the cil-snntorch plugin is not installed")

import cil_core as cil  # noqa: E402
from cil_core.errors import BackendCapacityError, SpecError, UnsupportedLayerError  # noqa: E402
from cil_core.hardware.transfer import chip_spec, prepare_for_backend  # noqa: E402
from cil_snntorch import run_native  # noqa: E402
from equivalence import assert_layer_traces_equal  # noqa: E402
from equivalence import snntorch_layer_traces as _native_layers  # noqa: E402
from equivalence import (native_and_cil_spl_gradients, native_and_wrapped_bptt_gradients,  # noqa: E402
                         neuron_parameter_names)

SEEDS = (0, 1, 2)


def _scale(model: nn.Module, gain: float) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                p.mul_(gain)
    return model


def _spikes(g: torch.Generator, T: int, B: int, n: int, p: float = 0.3) -> torch.Tensor:
    return (torch.rand(T, B, n, generator=g) < p).float()


def m_leaky(reset: str, per_neuron: bool = False, beta0: float = 0.85):
    def build(g):
        beta = 0.7 + 0.25 * torch.rand(14, generator=g) if per_neuron else beta0
        thr = 0.8 + 0.4 * torch.rand(14, generator=g) if per_neuron else 1.0
        first = snn.Leaky(beta=beta, threshold=thr, learn_beta=True, learn_threshold=True, reset_mechanism=reset,
                          init_hidden=True)
        m = nn.Sequential(nn.Linear(10, 14), first, nn.Linear(14, 4),
                          snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True, init_hidden=True, output=True))
        return _scale(m, 2.5)
    return build


def m_synaptic(reset: str):
    def build(g):
        first = snn.Synaptic(alpha=0.6, beta=0.8, learn_alpha=True, learn_beta=True, learn_threshold=True,
                             reset_mechanism=reset, init_hidden=True)
        m = nn.Sequential(nn.Linear(10, 14), first, nn.Linear(14, 4),
                          snn.Synaptic(alpha=torch.full((4,), 0.5), beta=torch.full((4,), 0.9), learn_alpha=True,
                                       learn_beta=True, init_hidden=True, output=True))
        return _scale(m, 2.5)
    return build


def m_graded(g):
    first = snn.Leaky(beta=0.85, graded_spikes_factor=0.5 + torch.rand(14, generator=g),
                      learn_graded_spikes_factor=True, learn_beta=True, init_hidden=True)
    m = nn.Sequential(nn.Linear(10, 14), first, nn.Linear(14, 4),
                      snn.Leaky(beta=0.9, graded_spikes_factor=1.0, learn_graded_spikes_factor=True,
                                learn_threshold=True, init_hidden=True, output=True))
    return _scale(m, 2.5)


def m_rleaky(g):
    first = snn.RLeaky(beta=0.8, linear_features=14, learn_beta=True, learn_threshold=True, init_hidden=True)
    m = nn.Sequential(nn.Linear(10, 14), first, nn.Linear(14, 4),
                      snn.Leaky(beta=0.9, learn_beta=True, init_hidden=True, output=True))
    return _scale(m, 2.5)


def m_lapicque(g):
    first = snn.Lapicque(beta=0.9, learn_threshold=True, init_hidden=True)
    m = nn.Sequential(nn.Linear(10, 14), first, nn.Linear(14, 4), snn.Leaky(beta=0.9, learn_threshold=True,
                                                                             init_hidden=True, output=True))
    return _scale(m, 20.0)


MODELS = {
    "Leaky learn_beta+threshold subtract": m_leaky("subtract"),
    "Leaky learn_beta+threshold zero": m_leaky("zero"),
    "Leaky per-neuron beta+threshold": m_leaky("subtract", per_neuron=True),
    "Leaky learn_beta at the clamp (beta=1)": m_leaky("subtract", beta0=1.0),
    "Synaptic learn_alpha+beta+threshold subtract": m_synaptic("subtract"),
    "Synaptic learn_alpha+beta+threshold zero": m_synaptic("zero"),
    "learn_graded_spikes_factor per neuron": m_graded,
    "RLeaky learn_beta+threshold": m_rleaky,
    "Lapicque learn_threshold": m_lapicque,
}


def _build(kind: str, seed: int):
    g = torch.Generator().manual_seed(1000 * seed + sum(map(ord, kind)))
    torch.manual_seed(seed)
    model = MODELS[kind](g)
    with torch.no_grad():  # the output layer has few inputs: make it fire too
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(1.8)
    x = _spikes(g, 30, 6, 10)
    return model, x, cil.wrap(model)




# ----------------------------------------------------------------------------- the description
def test_the_description_names_the_models_own_tensors():
    model, x, net = _build("Synaptic learn_alpha+beta+threshold subtract", 0)
    spec = net.spec
    assert [(p.field, p.name, p.shape, p.clamp) for p in spec.layers[1].trained] == [
        ("beta", "1.beta", (), (0.0, 1.0)), ("alpha", "1.alpha", (), (0.0, 1.0)), ("threshold", "1.threshold", (), None)]
    # the readout never fires: its threshold is not trained by snntorch either (no gradient)
    assert [p.field for p in spec.layers[3].trained] == ["beta", "alpha"]
    assert spec.layers[3].trained[0].per_neuron
    names = spec.parameter_names()
    assert names[:4] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert set(names[4:]) == {"1.beta", "1.alpha", "1.threshold", "3.beta", "3.alpha"}
    assert spec.tensor_shapes()["3.beta"] == (4,)
    # they are the model's own Parameter objects: the optimizer trains them in place
    assert net.synaptic_parameters()["1.beta"] is model[1].beta
    assert "trained[beta=1.beta, alpha=1.alpha, threshold=1.threshold]" in spec.describe()
    params = net.detached_parameters()
    params["1.threshold"] = torch.tensor(float("nan"))
    with pytest.raises(cil.NonFiniteError, match="1.threshold"):
        cil.network.check_parameters(spec, params)


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(MODELS))
def test_models_match_snntorch_spike_for_spike(kind, seed):
    model, x, net = _build(kind, seed)
    with torch.no_grad():
        ref, hidden, mems = _native_layers(model, x)
        chip = cil.make_backend("ideal")
        obs = cil.HardwareSession(chip).run(net.spec, net.detached_parameters(), x, record=True)
        soft = net.run(x, record=True, record_membrane=True)
    assert_layer_traces_equal(kind, ref, hidden, mems, obs, soft)


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("kind", list(MODELS))
def test_bptt_gradients_of_neuron_parameters_equal_snntorch_autograd(kind, seed):
    model, x, net = _build(kind, seed)
    g_ref, g_cil = native_and_wrapped_bptt_gradients(model, net, x, run_native, seed)
    assert set(g_cil) == set(g_ref) == set(net.parameter_names())
    trained = neuron_parameter_names(net)
    assert trained and set(trained) <= set(g_ref)
    for k in g_ref:
        if k in trained:
            assert float(g_ref[k].abs().sum()) > 0, k
        torch.testing.assert_close(g_cil[k], g_ref[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{kind} {k}: {m}")


@pytest.mark.parametrize("kind", ["Leaky per-neuron beta+threshold", "Synaptic learn_alpha+beta+threshold zero"])
def test_cil_spl_gradients_of_neuron_parameters_equal_bptt(kind):
    model, x, net = _build(kind, 0)
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    g_ref, g_cil, trainer = native_and_cil_spl_gradients(model, net, x, y, run_native)
    assert set(neuron_parameter_names(net)) <= set(g_cil)
    for k in g_ref:
        torch.testing.assert_close(g_cil[k], g_ref[k], rtol=1e-5, atol=1e-6)
    # a training step moves snntorch's own beta and threshold in place, and the model still runs with snntorch
    before = {k: model.get_parameter(k).detach().clone() for k in ("1.beta", "1.threshold")}
    trainer.fit((x, y), epochs=1, batch_size=x.shape[1])
    for k, v in before.items():
        assert not torch.equal(v, model.get_parameter(k)), k
    with torch.no_grad():
        assert torch.equal(net(x), run_native(model, x))


def test_a_beta_trained_past_one_is_clamped_as_snntorch_clamps_it():
    model, x, net = _build("Leaky learn_beta+threshold subtract", 0)
    with torch.no_grad():
        model[1].beta.fill_(1.3)  # snntorch uses beta.clamp(0, 1)
        ref = run_native(model, x)
        assert torch.equal(net(x), ref)
        dep = cil.HardwareSession(cil.make_backend("ideal")).transfer(net.spec, net.detached_parameters())
    assert float(dep.spec.layers[1].beta) == 1.0 and not dep.spec.layers[1].trained
    assert "1.beta" not in dep.params


def test_a_threshold_trained_to_zero_is_refused_where_it_enters_the_chip():
    model, x, net = _build("Leaky learn_beta+threshold subtract", 0)
    with torch.no_grad():
        model[1].threshold.fill_(-0.2)
    with pytest.raises(SpecError, match=r"backend 'ideal': layer 1 .*threshold '1.threshold' must be > 0"):
        cil.HardwareSession(cil.make_backend("ideal")).run(net.spec, net.detached_parameters(), x)


def test_a_buffer_that_requires_grad_is_refused_naming_the_flag():
    layer = snn.Leaky(beta=torch.full((14,), 0.8, requires_grad=True), init_hidden=True)
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(Leaky\).*beta.*learn_beta=True"):
        cil.wrap(nn.Sequential(nn.Linear(10, 14), layer))


# ----------------------------------------------------------------------------- backends declare what they hold
def test_speck_holds_one_threshold_per_layer_and_no_leak():
    pytest.importorskip("cil_speck")
    speck = cil.make_backend("speck")

    def net_of(**kw):
        torch.manual_seed(0)
        return cil.wrap(nn.Sequential(nn.Linear(10, 14, bias=False), snn.Leaky(beta=1.0, init_hidden=True, **kw),
                                      nn.Linear(14, 4, bias=False), snn.Leaky(beta=1.0, init_hidden=True, output=True)))

    net = net_of(learn_threshold=True)
    chip_spec(speck, net.spec)  # one threshold for the layer: held
    with pytest.raises(BackendCapacityError, match=r"'speck' cannot hold layer 1 \(neuron 'layer '1' \(Leaky\)'\)'s "
                                                   r"trained beta '1.beta'.*do not leak.*learn_beta"):
        cil.HardwareSession(speck).check(net_of(learn_beta=True).spec)
    with pytest.raises(BackendCapacityError, match=r"threshold '1.threshold' of shape \(14,\).*one threshold per layer"):
        cil.HardwareSession(speck).check(net_of(threshold=torch.ones(14), learn_threshold=True).spec)


def test_xylo_refuses_a_trained_beta_it_cannot_hold_naming_the_nearest_values():
    pytest.importorskip("cil_xylo")
    from cil_xylo import XyloBackend

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16, bias=False),
                          snn.Synaptic(alpha=0.5, beta=0.875, learn_beta=True, init_hidden=True),
                          nn.Linear(16, 2, bias=False), snn.Synaptic(alpha=0.5, beta=0.875, init_hidden=True, output=True))
    net = cil.wrap(model)
    session = cil.HardwareSession(XyloBackend())
    session.check(net.spec)
    assert float(session.transfer(net.spec, net.detached_parameters()).spec.layers[1].beta) == 0.875
    with torch.no_grad():
        model[1].beta.fill_(0.9)  # e.g. after a training step
    with pytest.raises(BackendCapacityError, match=r"beta=0\.9.*0\.875 \(k=3\) and 0\.9375 \(k=4\).*round_decays=True"):
        session.transfer(net.spec, net.detached_parameters())
    with pytest.warns(UserWarning, match="nearest value it holds"):
        dep = cil.HardwareSession(XyloBackend(round_decays=True)).transfer(net.spec, net.detached_parameters())
    assert float(dep.chip["neurons"][1]["beta"][0]) == 0.875
    assert XyloBackend().neuron_parameters["beta"].domain is XyloBackend().chip.beta


def test_analog_chip_holds_the_trained_values_with_its_mismatch():
    pytest.importorskip("cil_analog")
    model, x, net = _build("Leaky per-neuron beta+threshold", 0)
    chip = cil.make_backend("analog-mismatch", strength=1.0, seed=3, noise_sigma=0.0)
    session = cil.HardwareSession(chip)
    out0 = session.run(net.spec, net.detached_parameters(), x).output
    with torch.no_grad():
        model[1].threshold.mul_(1.5)
    dep = session.transfer(net.spec, net.detached_parameters())
    assert torch.equal(torch.as_tensor(dep.spec.layers[1].threshold), model[1].threshold.detach())
    hidden = chip.reveal_mismatch(dep.spec)["threshold"][1]
    z = chip._chip(dep.spec).threshold_z[1]
    assert torch.equal(hidden, chip._threshold(dep.spec.layers[1], z))  # the trained value, with this chip's mismatch
    assert not torch.equal(session.run(net.spec, net.detached_parameters(), x).output, out0)


def test_a_backend_that_declares_capabilities_but_no_neuron_parameters_refuses_them():
    class Chip(cil.Backend):
        name = "plain"
        capabilities = frozenset(cil.network.FEATURES)

        def transfer(self, spec, params, n_sets=None):  # pragma: no cover
            raise AssertionError

        def forward(self, deployment, inputs, record=False):  # pragma: no cover
            raise AssertionError

    net = _build("Leaky learn_beta+threshold subtract", 0)[2]
    with pytest.raises(BackendCapacityError, match=r"'plain' cannot hold layer 1 .*trained beta '1.beta'"):
        prepare_for_backend(Chip(), net.spec, net.detached_parameters())


# ----------------------------------------------------------------------------- training and checkpoints
def test_checkpoints_save_and_restore_the_neuron_parameters(tmp_path):
    model, x, net = _build("Leaky per-neuron beta+threshold", 0)
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    trainer = cil.Trainer(net, "ideal", "offline", seed=0, lr=1e-2)
    trainer.fit((x, y), steps=3, batch_size=x.shape[1], checkpoint=tmp_path / "a.pt", checkpoint_every=3)
    saved = {k: model.get_parameter(k).detach().clone() for k in ("1.beta", "1.threshold")}
    blob = torch.load(tmp_path / "a.pt", weights_only=True)
    for k, v in saved.items():
        assert torch.equal(blob["weights"][k], v), k
    model2, _, net2 = _build("Leaky per-neuron beta+threshold", 0)
    t2 = cil.Trainer(net2, "ideal", "offline", seed=0, lr=1e-2)
    t2.fit((x, y), steps=3, batch_size=x.shape[1], resume=tmp_path / "a.pt")
    for k, v in saved.items():
        assert torch.equal(model2.get_parameter(k).detach(), v), k


def test_cil_spl_on_the_analog_chip_trains_leaks_and_thresholds_and_beats_them_frozen():
    """Seeded small case (chip 0, 62-16-2, 100 steps; benchmarks/learned_neurons.py runs 5 chips):
    the trained leaks and thresholds move, and the chip's accuracy after CIL-SPL is at least that
    of the same model trained with them frozen."""
    pytest.importorskip("cil_analog")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from learned_neurons import run_chip

    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    torch.set_num_threads(1)
    data = load_breast_cancer_spikes()
    frozen = run_chip(0, False, 100, data)
    trained = run_chip(0, True, 100, data)
    assert not frozen["moved"]
    assert set(trained["moved"]) == {"1.beta", "1.threshold", "3.beta", "3.threshold"}
    assert all(v > 0.01 for v in trained["moved"].values()), trained["moved"]
    assert trained["accuracy"] >= frozen["accuracy"], (frozen["accuracy"], trained["accuracy"])


def test_nir_export_carries_the_current_trained_values():
    pytest.importorskip("cil_nir")
    from cil_nir import to_nir

    model, x, net = _build("Leaky learn_beta+threshold subtract", 0)
    with torch.no_grad():
        model[1].beta.fill_(0.5)
        model[1].threshold.fill_(1.7)
    with pytest.warns(Warning):
        graph = to_nir(net)
    node = next(n for k, n in graph.nodes.items() if k.startswith("1"))
    assert float(node.v_threshold[0]) == pytest.approx(1.7)
    assert float(node.tau[0]) == pytest.approx(net.spec.layers[1].dt / (1 - 0.5))


def test_norse_and_sinabs_trainable_neuron_parameters_are_refused_with_the_true_reason():
    norse = pytest.importorskip("norse.torch")
    p = norse.LIFParameters(tau_mem_inv=nn.Parameter(torch.tensor(100.0)), v_th=torch.tensor(1.0))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(LIFCell\): trainable neuron parameter "
                                                    r"p.tau_mem_inv \(nn.Parameter\): norse computes both the decay "
                                                    r"and the input gain.*p.tau_mem_inv.detach\(\)"):
        cil.wrap(norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(p)), input_shape=(4,))
    sl = pytest.importorskip("sinabs.layers")
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(LIF\) with train_alphas=True.*train_alphas=False"):
        cil.wrap(nn.Sequential(nn.Linear(4, 3), sl.LIF(tau_mem=torch.tensor(20.0), train_alphas=True)),
                 input_shape=(4,))


@pytest.mark.parametrize("backend", ["speck", "analog-mismatch", "ideal"])
def test_a_trained_value_runs_on_the_chip_as_the_same_value_fixed(backend):
    """After training moves a threshold, the chip runs exactly what a model built with that
    threshold fixed runs (same weights; same chip seed, so the same mismatch draws)."""
    pytest.importorskip("cil_speck" if backend == "speck" else "cil_analog" if backend == "analog-mismatch" else "torch")
    options = {"analog-mismatch": dict(strength=1.0, seed=3, noise_sigma=0.0)}.get(backend, {})

    def model(**kw):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(10, 14, bias=False), snn.Leaky(beta=1.0, init_hidden=True, **kw),
                          nn.Linear(14, 4, bias=False), snn.Leaky(beta=1.0, init_hidden=True, output=True))
        return _scale(m, 3.0)

    x = _spikes(torch.Generator().manual_seed(1), 20, 4, 10)
    trained = model(learn_threshold=True)
    with torch.no_grad():
        trained[1].threshold.fill_(1.75)
    fixed = model(threshold=1.75)
    net_t, net_f = cil.wrap(trained), cil.wrap(fixed)
    out_t = cil.HardwareSession(cil.make_backend(backend, **options)).run(net_t.spec, net_t.detached_parameters(), x)
    out_f = cil.HardwareSession(cil.make_backend(backend, **options)).run(net_f.spec, net_f.detached_parameters(), x)
    assert float(out_f.output.sum()) > 0
    assert torch.equal(out_t.output, out_f.output)


def test_a_wrapper_mirrors_the_neuron_parameters_its_backend_holds():
    """mirror_traits (fault injectors, ray:<backend>) carries ``neuron_parameters`` and their hints,
    so a wrapped chip refuses what the chip refuses; ray's driver keeps what every worker holds."""
    pytest.importorskip("cil_speck")
    from cil_core.hardware.domains import HeldParameter
    from cil_core.testing import FaultyBackend

    speck = cil.make_backend("speck")
    wrapped = FaultyBackend(speck, rate=0.0)
    assert wrapped.neuron_parameters == speck.neuron_parameters and wrapped.neuron_parameter_hints
    torch.manual_seed(0)
    net = cil.wrap(nn.Sequential(nn.Linear(10, 14, bias=False), snn.Leaky(beta=1.0, learn_beta=True, init_hidden=True),
                                 nn.Linear(14, 4, bias=False), snn.Leaky(beta=1.0, init_hidden=True, output=True)))
    with pytest.raises(BackendCapacityError, match=r"'faulty:speck' cannot hold layer 1 .*trained beta '1.beta'"):
        cil.HardwareSession(wrapped).check(net.spec)
    cil_ray_backend = pytest.importorskip("cil_ray.backend")
    per_neuron, per_layer = HeldParameter("per-neuron"), HeldParameter("per-layer", note="one")
    held = cil_ray_backend._held_by_all([{"beta": per_neuron, "threshold": per_neuron},
                                         {"threshold": per_layer}, None])
    assert held == {}  # a worker that declares nothing holds nothing, next to workers that declare
    held = cil_ray_backend._held_by_all([{"beta": per_neuron, "threshold": per_neuron}, {"threshold": per_layer}])
    assert held == {"threshold": per_layer}
    assert cil_ray_backend._held_by_all([None, None]) is None
    if importlib.util.find_spec("cil_xylo") is not None:  # and the backend switch its domains name
        for rounds in (False, True):
            chip = cil.make_backend("xylo", round_decays=rounds)
            assert FaultyBackend(chip, rate=0.0).round_decays is rounds


def test_cil_describe_says_which_trained_neuron_parameters_a_backend_holds(capsys):
    """``cil describe BACKEND`` (and the README's capability table) read the backends' own
    ``neuron_parameters`` declarations (the Xylo's are per instance: its defaults')."""
    pytest.importorskip("cil_speck")
    import json

    from cil_core.app.capabilities import neuron_parameter_support
    from cil_core.app.cli import main

    assert main(["describe", "speck", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)[0]["trained_neuron_parameters"]
    assert held["threshold"].startswith("per layer") and held["beta"].startswith("no (the chip's neurons do not leak")
    assert main(["describe", "ideal"]) == 0
    assert "trained neuron parameters held: beta per neuron; alpha per neuron; threshold per neuron; " \
           "spike_amplitude per neuron" in capsys.readouterr().out
    if pytest.importorskip("cil_xylo"):
        from cil_xylo import XyloBackend

        assert neuron_parameter_support(XyloBackend, "beta") == "per neuron, a bit-shift decay 1 - 2^-k"
        assert neuron_parameter_support(XyloBackend, "spike_amplitude").startswith("no (Xylo's spikes")


def test_the_fidelity_report_runs_and_lists_the_trained_neuron_parameters():
    """Both sides of ``cil.fidelity`` run the current trained values (the ideal chip agrees with the
    software exactly), and the report names them with the values used (after snntorch's clamp)."""
    model, x, net = _build("Leaky per-neuron beta+threshold", 0)
    with torch.no_grad():
        model[1].beta[0] = 1.4  # used as 1.0 (clamp)
        model[1].threshold.mul_(1.3)
    y = torch.zeros(x.shape[1], dtype=torch.long)
    report = cil.fidelity(net, "ideal", (x, y), readout="rate")
    assert report.agreement == 1.0 and all(lf.distortion == 0 for lf in report.layers)
    got = {p["name"]: p for p in report.neuron_parameters}
    assert set(got) == {"1.beta", "1.threshold", "3.beta", "3.threshold"}
    assert got["1.beta"]["max"] == 1.0 and got["1.beta"]["shape"] == [14]
    assert got["1.threshold"]["mean"] == pytest.approx(float(model[1].threshold.double().mean()))
    assert '"neuron_parameters"' in report.to_json() and "trained threshold '1.threshold'" in report.table()


# ----------------------------------------------------------------------------- norse: a trainable v_th
def _norse_model(kind: str, seed: int):
    """norse's cells with ``p.v_th`` an ``nn.Parameter`` (per neuron; the output layer's per layer)."""
    norse = pytest.importorskip("norse.torch")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vth = nn.Parameter(0.3 + 0.4 * torch.rand(12, generator=g))
    cells = {
        "LIFCell": lambda: norse.LIFCell(norse.LIFParameters(tau_mem_inv=torch.tensor(120.0), v_th=vth)),
        "IAFCell": lambda: norse.IAFCell(norse.IAFParameters(v_th=vth)),
        "LIFBoxCell (reset_subtract)": lambda: norse.LIFBoxCell(norse.LIFBoxParameters(
            tau_mem_inv=torch.tensor(150.0), v_th=vth,
            reset_method=__import__("norse.torch.functional.reset", fromlist=["x"]).reset_subtract)),
        "LIFRefracCell": lambda: norse.LIFRefracCell(norse.LIFRefracParameters(lif=norse.LIFParameters(v_th=vth),
                                                                                rho_reset=torch.tensor(3.0))),
        "LIFRecurrentCell": lambda: norse.LIFRecurrentCell(12, 12, p=norse.LIFParameters(v_th=vth)),
        "LIF (time-looping)": lambda: norse.LIF(norse.LIFParameters(v_th=vth)),
    }
    out_vth = nn.Parameter(torch.tensor(0.4))
    if kind == "LIF (time-looping)":
        layers = [norse.Lift(nn.Linear(10, 12)), cells[kind](), norse.Lift(nn.Linear(12, 4)),
                  norse.LIF(norse.LIFParameters(v_th=out_vth))]
    else:
        layers = [nn.Linear(10, 12), cells[kind](), nn.Linear(12, 4), norse.LIFCell(norse.LIFParameters(v_th=out_vth))]
    model = norse.SequentialState(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(4.0)
    x = _spikes(g, 40, 5, 10)
    return model, x, [vth, out_vth]


NORSE_KINDS = ["LIFCell", "IAFCell", "LIFBoxCell (reset_subtract)", "LIFRefracCell", "LIFRecurrentCell",
               "LIF (time-looping)"]


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("kind", NORSE_KINDS)
def test_a_norse_threshold_held_as_a_parameter_is_trained_exactly(kind, seed):
    """norse keeps ``p.v_th`` in its parameter tuple, not among the module's parameters: cil names it
    ``"<layer>.p.v_th"`` and takes the tensor itself. Spikes equal norse's forward on ``ideal`` and in
    the software pass; BPTT gradients w.r.t. both thresholds (and every weight) equal norse's autograd."""
    pytest.importorskip("cil_norse")
    from cil_norse import run_native as norse_native

    model, x, vths = _norse_model(kind, seed)
    net = cil.wrap(model, input_shape=(10,))
    path = "1.p.lif.v_th" if kind == "LIFRefracCell" else "1.p.v_th"
    assert neuron_parameter_names(net) == [path, "3.p.v_th"]
    assert net.synaptic_parameters()[path] is vths[0]  # norse's own tensor, trained in place
    (_, first), (_, last) = net.spec.neuron_layers()
    assert first.trained[0].per_neuron and not last.trained[0].per_neuron
    with torch.no_grad():
        ref = norse_native(model, x)
        obs = cil.HardwareSession(cil.make_backend("ideal")).run(net.spec, net.detached_parameters(), x)
    assert torch.equal(obs.output, ref) and torch.equal(net(x).detach(), ref)
    assert 0.01 < float(ref.mean()) < 0.9
    w = torch.randn(4, generator=torch.Generator().manual_seed(seed))
    tensors = vths + list(model.parameters())

    def grads(out):
        for t in tensors:
            t.grad = None
        ((out * w).sum() / out.shape[1]).backward()
        return [t.grad.clone() for t in tensors]

    for a, b in zip(grads(norse_native(model, x)), grads(net(x))):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert float(grads(net(x))[0].abs().sum()) > 0


def test_norse_neuron_parameters_cil_cannot_train_are_refused_naming_the_field():
    norse = pytest.importorskip("norse.torch")
    pytest.importorskip("cil_norse")
    for p, match in [
        (norse.LIFParameters(tau_syn_inv=nn.Parameter(torch.tensor(200.0))), r"p.tau_syn_inv.*1 - dt\*tau_syn_inv"),
        (norse.LIFParameters(v_leak=nn.Parameter(torch.tensor(0.0))), r"p.v_leak.*resting potential"),
        (norse.LIFParameters(v_reset=nn.Parameter(torch.tensor(0.0))), r"p.v_reset.*reset potential"),
    ]:
        with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(LIFCell\): trainable neuron parameter " + match):
            cil.wrap(norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(p)), input_shape=(4,))
    shared = norse.LIFParameters(v_th=nn.Parameter(torch.tensor(1.0)))
    with pytest.raises(UnsupportedLayerError, match=r"3.p.v_th is the same nn.Parameter as 1.p.v_th"):
        cil.wrap(norse.SequentialState(nn.Linear(4, 3), norse.LIFCell(shared), nn.Linear(3, 2),
                                       norse.LIFCell(shared)), input_shape=(4,))
    lsnn = norse.LSNNCell(norse.LSNNParameters(v_th=nn.Parameter(torch.tensor(1.0))))
    with pytest.raises(UnsupportedLayerError, match=r"p.v_th \(nn.Parameter\) of an LSNN.*gradients differ"):
        cil.wrap(norse.SequentialState(nn.Linear(4, 3), lsnn), input_shape=(4,))


def test_a_norse_threshold_trains_with_cil_spl_and_checkpoints(tmp_path):
    """CIL-SPL moves norse's own v_th in place (the model still runs with norse afterwards, equal to
    the wrapped network) and a checkpoint restores it."""
    pytest.importorskip("cil_norse")
    from cil_norse import run_native as norse_native

    model, x, vths = _norse_model("LIFCell", 0)
    net = cil.wrap(model, input_shape=(10,))
    y = torch.randint(0, 4, (x.shape[1],), generator=torch.Generator().manual_seed(7))
    before = vths[0].detach().clone()
    trainer = cil.Trainer(net, "ideal", "cil-spl", seed=0, lr=1e-2)
    trainer.fit((x, y), steps=3, batch_size=x.shape[1], checkpoint=tmp_path / "n.pt", checkpoint_every=3)
    assert not torch.equal(before, vths[0].detach())
    with torch.no_grad():
        assert torch.equal(net(x), norse_native(model, x))
    blob = torch.load(tmp_path / "n.pt", weights_only=True)
    assert torch.equal(blob["weights"]["1.p.v_th"], vths[0].detach())


# ----------------------------------------------------------------------------- sinabs: train_alphas=True
def _sinabs_model(kind: str, seed: int):
    sl = pytest.importorskip("sinabs.layers")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    first = {
        "LIF": lambda: sl.LIF(tau_mem=torch.tensor(15.0), train_alphas=True, norm_input=False),
        "LIF tau_syn, per neuron": lambda: sl.LIF(tau_mem=10 + 10 * torch.rand(12, generator=g),
                                                  tau_syn=torch.full((12,), 5.0), train_alphas=True, norm_input=False),
        "LIFRecurrent": lambda: sl.LIFRecurrent(tau_mem=torch.tensor(15.0), rec_connect=nn.Linear(12, 12),
                                                train_alphas=True, norm_input=False),
    }[kind]()
    model = nn.Sequential(nn.Linear(10, 12), first, nn.Linear(12, 4),
                          sl.LIF(tau_mem=torch.tensor(20.0), train_alphas=True, norm_input=False))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.5)
    return model, _spikes(g, 30, 5, 10, p=0.4)


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("kind", ["LIF", "LIF tau_syn, per neuron", "LIFRecurrent"])
def test_sinabs_train_alphas_decays_are_trained_exactly(kind, seed):
    """sinabs ``train_alphas=True, norm_input=False``: ``alpha_mem`` / ``alpha_syn`` are the decays
    themselves (``beta`` / ``alpha`` neuron parameters named like the model's parameters): spikes equal
    sinabs' forward on ``ideal`` and in the software pass, BPTT gradients equal sinabs' autograd."""
    pytest.importorskip("cil_sinabs")
    from cil_sinabs import run_sinabs

    model, x = _sinabs_model(kind, seed)
    net = cil.wrap(model, input_shape=(10,))
    names = neuron_parameter_names(net)
    assert names == ["1.alpha_mem"] + (["1.alpha_syn"] if "tau_syn" in kind else []) + ["3.alpha_mem"]
    assert net.synaptic_parameters()["1.alpha_mem"] is model[1].alpha_mem
    with torch.no_grad():
        ref = run_sinabs(model, x)
        obs = cil.HardwareSession(cil.make_backend("ideal")).run(net.spec, net.detached_parameters(), x)
    assert torch.equal(obs.output, ref) and torch.equal(net(x).detach(), ref)
    assert float(ref.sum()) > 0
    g_ref, g_cil = native_and_wrapped_bptt_gradients(model, net, x, run_sinabs, seed)
    assert set(names) <= set(g_ref) and set(g_cil) == set(g_ref)
    for k in g_ref:
        torch.testing.assert_close(g_cil[k], g_ref[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{kind} {k}: {m}")


def test_sinabs_decays_cil_cannot_train_are_refused_or_held_fixed_by_the_stated_rule():
    sl = pytest.importorskip("sinabs.layers")
    pytest.importorskip("cil_sinabs")
    with pytest.raises(UnsupportedLayerError, match=r"train_alphas=True and norm_input=True.*\(1 - alpha_mem\).*"
                                                    r"norm_input=False"):
        cil.wrap(nn.Sequential(nn.Linear(4, 3), sl.LIF(tau_mem=torch.tensor(20.0), train_alphas=True)),
                 input_shape=(4,))
    with pytest.raises(UnsupportedLayerError, match=r"ALIF.*train_alphas=True.*adaptation decay"):
        cil.wrap(nn.Sequential(nn.Linear(4, 3), sl.ALIF(tau_mem=torch.tensor(20.0), tau_adapt=torch.tensor(30.0),
                                                        train_alphas=True)), input_shape=(4,))
    # train_alphas=False (sinabs' default): tau_mem is an nn.Parameter requiring grad, held fixed by cil
    lif = sl.LIF(tau_mem=torch.tensor(20.0))
    assert lif.tau_mem.requires_grad
    net = cil.wrap(nn.Sequential(nn.Linear(4, 3), lif), input_shape=(4,))
    assert not net.spec.neuron_parameters() and "1.tau_mem" not in net.parameter_names()
