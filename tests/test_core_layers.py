"""The description's layers beyond dense LIF chains — max pooling, batch norm, dropout, 1-D
convolution, recurrent synapses, adaptive thresholds, graded spikes, the new surrogates — each
checked against an independent hand-written reference (plain torch loops), plus batch-norm
folding and backend capabilities. Library-free: runs with the core alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import cil_core as cil
from cil_core import (Adaptation, BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, NetworkSpec, Neuron, Pool2d,
                      Recurrent, Surrogate)
from cil_core.hardware.ideal import IdealBackend
from cil_core.hardware.transfer import fold_batchnorm
from cil_core.network.executor import simulate
from cil_core.network.reference import leaky_neuron


def immediate(beta=0.8, thr=1.0, **kw) -> Neuron:
    """:math:`u = \\beta v + I`, :math:`S = H(u - \\theta)` strict, subtract reset at once."""
    base = dict(beta=beta, alpha=None, threshold=thr, reset="subtract", reset_timing="immediate",
                current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=None,
                fires_at_threshold=False, max_spikes_per_step=1, dt=1e-3, output="spikes")
    base.update(kw)
    return Neuron(**base)


def ref_neuron(I: torch.Tensor, beta=0.8, thr=1.0, rec=None, into="input", alpha=None, adapt=None, amp=1.0):
    """Reference loop over time of an immediate-subtract neuron layer; ``I`` is ``[T, B, n]``.
    ``rec(s_prev)`` recurrent input; ``adapt=(rho, jump)``."""
    T = I.shape[0]
    v = torch.zeros_like(I[0])
    i_syn = torch.zeros_like(I[0])
    a = torch.zeros_like(I[0])
    s_prev = torch.zeros_like(I[0])
    out = []
    for t in range(T):
        x = I[t]
        r = rec(s_prev) if rec is not None else 0.0
        if into == "input":
            x = x + r
        if alpha is not None:
            i_syn = alpha * i_syn + x
            if into == "current":
                i_syn = i_syn + r
            x = i_syn
        th = thr
        if adapt is not None:
            a = adapt[0] * a
            th = thr + a
        u = beta * v + x
        if into == "membrane":
            u = u + r
        s = (u > th).float()
        v = u - s * th
        if adapt is not None:
            a = a + adapt[1] * s
        s_out = s * amp
        s_prev = s_out
        out.append(s_out)
    return torch.stack(out)


def spikes_in(T, B, *shape, p=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B, *shape), generator=g) < p).float()


# ---------------------------------------------------------------------------------------- max pool
def test_spiking_max_pool_is_an_or_over_each_window():
    spec = NetworkSpec((Pool2d((2, 2), (2, 2), "max"), Flatten(), Dense("w", None, 8, 3), immediate()), (2, 4, 4))
    x = spikes_in(5, 3, 2, 4, 4, p=0.2)
    w = torch.randn(3, 8)
    out = simulate(spec, {"w": w}, x).output
    pooled = (F.avg_pool2d(x.reshape(-1, 2, 4, 4), 2, divisor_override=1) > 0).float().reshape(5, 3, 8)
    assert torch.equal(out, ref_neuron(pooled @ w.T))


def test_max_pool_gradient_reaches_the_window_maximum():
    spec = NetworkSpec((Conv2d("c", None, 1, 2, (3, 3), (1, 1), (1, 1)), Pool2d((2, 2), (2, 2), "max"),
                        leaky_neuron(0.9, output="membrane")), (1, 4, 4))
    w = torch.randn(2, 1, 3, 3, requires_grad=True)
    x = torch.rand(3, 2, 1, 4, 4)
    simulate(spec, {"c": w}, x).output.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- batch norm
def bn_net(bias=False, affine=True, sets=None):
    C = 3
    g = torch.Generator().manual_seed(1)
    bn = BatchNorm("bn.weight" if affine else None, "bn.bias" if affine else None, C,
                   torch.randn(C, generator=g) * 0.2, torch.rand(C, generator=g) + 0.5, 1e-5)
    spec = NetworkSpec((Conv2d("c.weight", "c.bias" if bias else None, 2, C, (3, 3), (1, 1), (1, 1)), bn,
                        Flatten(), Dense("d.weight", None, C * 16, 4), leaky_neuron(0.9, output="membrane")),
                       (2, 4, 4))
    lead = () if sets is None else (sets,)
    params = {"c.weight": torch.randn(*lead, C, 2, 3, 3, generator=g), "d.weight": torch.randn(*lead, 4, C * 16, generator=g) * 0.3}
    if bias:
        params["c.bias"] = torch.randn(*lead, C, generator=g)
    if affine:
        params["bn.weight"] = torch.rand(*lead, C, generator=g) + 0.5
        params["bn.bias"] = torch.randn(*lead, C, generator=g) * 0.1
    return spec, params


def test_batch_norm_equals_torch_batch_norm_in_eval_mode():
    spec, p = bn_net(bias=True)
    bn = torch.nn.BatchNorm2d(3).eval()
    layer = spec.layers[1]
    with torch.no_grad():
        bn.weight.copy_(p["bn.weight"]), bn.bias.copy_(p["bn.bias"])
        bn.running_mean.copy_(layer.running_mean), bn.running_var.copy_(layer.running_var)
    x = spikes_in(4, 2, 2, 4, 4)
    with torch.no_grad():
        cur = torch.stack([bn(F.conv2d(xt, p["c.weight"], p["c.bias"], padding=1)) for xt in x]).reshape(4, 2, -1)
        cur = torch.stack([c @ p["d.weight"].T for c in cur])  # one product per step, as the executor (and
        # the libraries' loops) compute it: one [T*B, K] product rounds differently on some CPUs (AVX-512)
        v, ref = torch.zeros(2, 4), []
        for t in range(4):
            v = 0.9 * v + cur[t]
            ref.append(v)
    assert torch.equal(simulate(spec, p, x).output, torch.stack(ref))


@pytest.mark.parametrize("bias, affine", [(False, True), (True, True), (True, False)])
def test_folding_batch_norm_into_the_synapses_keeps_the_output(bias, affine):
    spec, p = bn_net(bias, affine)
    folded, fp = fold_batchnorm(spec, p)
    assert not any(isinstance(l, BatchNorm) for l in folded.layers)
    assert set(fp) == set(folded.parameter_names())
    x = spikes_in(6, 3, 2, 4, 4)
    torch.testing.assert_close(simulate(folded, fp, x).output, simulate(spec, p, x).output, rtol=1e-5, atol=1e-5)


def test_folding_works_per_parameter_set():
    spec, p = bn_net(bias=True, sets=3)
    folded, fp = fold_batchnorm(spec, p, 3)
    for s in range(3):
        _, single = fold_batchnorm(spec, {k: v[s] for k, v in p.items()})
        for k in single:
            torch.testing.assert_close(fp[k][s], single[k])


def test_a_batch_norm_that_follows_no_synapse_cannot_be_folded():
    bn = BatchNorm(None, None, 4, torch.zeros(4), torch.ones(4), 1e-5)
    spec = NetworkSpec((bn, Dense("w", None, 4, 2), immediate()), (4,))
    with pytest.raises(cil.BackendCapacityError, match="BatchNorm.*right after the Linear/Conv"):
        fold_batchnorm(spec, {"w": torch.ones(2, 4)})


def test_batch_norm_statistics_are_validated():
    with pytest.raises(cil.SpecError, match="running_var"):
        NetworkSpec((Dense("w", None, 4, 4), BatchNorm(None, None, 4, torch.zeros(4), torch.ones(3), 1e-5),
                     immediate()), (4,))


# ---------------------------------------------------------------------------------------- dropout
def test_dropout_acts_in_software_training_passes_only():
    spec = NetworkSpec((Dense("w", None, 20, 20), Dropout(0.5), leaky_neuron(0.9, output="membrane")), (20,))
    w = torch.randn(20, 20)
    x = torch.rand(4, 5, 20)
    plain = NetworkSpec((Dense("w", None, 20, 20), leaky_neuron(0.9, output="membrane")), (20,))
    assert torch.equal(simulate(spec, {"w": w}, x).output, simulate(plain, {"w": w}, x).output)
    torch.manual_seed(1)
    a = simulate(spec, {"w": w}, x, training=True).output
    torch.manual_seed(2)
    b = simulate(spec, {"w": w}, x, training=True).output
    assert not torch.equal(a, b)
    sess = cil.HardwareSession(IdealBackend())
    chip = sess.run(spec, {"w": w}, x).output
    assert torch.equal(chip, simulate(plain, {"w": w}, x).output)


# ---------------------------------------------------------------------------------------- conv1d
def test_conv1d_matches_torch_and_sets_match_single_calls():
    spec = NetworkSpec((Conv1d("c", "b", 2, 3, 3, 2, 1), Flatten(), Dense("d", None, 3 * 5, 2), immediate()), (2, 10))
    p = {"c": torch.randn(2, 3, 2, 3), "b": torch.randn(2, 3), "d": torch.randn(2, 2, 15)}
    x = spikes_in(5, 4, 2, 10)
    both = simulate(spec, p, x, n_sets=2).output
    for s in range(2):
        ps = {k: v[s] for k, v in p.items()}
        cur = torch.stack([F.conv1d(xt, ps["c"], ps["b"], stride=2, padding=1) for xt in x]).reshape(5, 4, -1)
        ref = ref_neuron(cur @ ps["d"].T)
        assert torch.equal(simulate(spec, ps, x).output, ref)
        assert torch.equal(both[:, s], ref)


# ---------------------------------------------------------------------------------------- recurrence
@pytest.mark.parametrize("into, alpha", [("input", None), ("current", 0.7), ("membrane", None), ("input", 0.7)])
@pytest.mark.parametrize("mode", ["dense", "one-to-one"])
def test_recurrent_synapses_match_a_reference_loop(into, alpha, mode):
    n = 6
    rec = Recurrent("r", "rb" if mode == "dense" else None, n, mode, into)
    neuron = immediate(alpha=alpha, recurrent=rec)
    spec = NetworkSpec((Dense("w", None, 4, n), neuron), (4,))
    g = torch.Generator().manual_seed(3)
    p = {"w": torch.randn(n, 4, generator=g), "r": torch.randn(*((n, n) if mode == "dense" else (n,)), generator=g)}
    if mode == "dense":
        p["rb"] = torch.randn(n, generator=g) * 0.1
    x = spikes_in(12, 3, 4)
    fn = (lambda s: s @ p["r"].T + p["rb"]) if mode == "dense" else (lambda s: s * p["r"])
    ref = ref_neuron(x @ p["w"].T, rec=fn, into=into, alpha=alpha)
    assert ref.sum() > 0
    assert torch.equal(simulate(spec, p, x).output, ref)


def test_recurrent_parameter_sets_equal_single_calls_and_carry_gradients():
    n = 5
    spec = NetworkSpec((Dense("w", None, 3, n), immediate(recurrent=Recurrent("r", None, n, "dense", "membrane"))), (3,))
    p = {"w": torch.randn(4, n, 3) * 2, "r": torch.randn(4, n, n)}
    x = spikes_in(10, 2, 3)
    both = simulate(spec, p, x, n_sets=4).output
    for s in range(4):
        assert torch.equal(both[:, s], simulate(spec, {k: v[s] for k, v in p.items()}, x).output)
    r = p["r"][0].clone().requires_grad_(True)
    spec_sur = NetworkSpec((Dense("w", None, 3, n), immediate(recurrent=Recurrent("r", None, n, "dense", "membrane"))),
                           (3,))
    simulate(spec_sur, {"w": p["w"][0] * 3, "r": r}, x).output.sum().backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    assert "r" in spec.parameter_names() and dict(spec.synaptic_layers())[1].weight == "r"


def test_recurrence_needs_one_dimensional_layers():
    with pytest.raises(cil.ShapeError, match="only 1-D layers"):
        NetworkSpec((Conv2d("c", None, 1, 2, (1, 1), (1, 1), (0, 0)),
                     immediate(recurrent=Recurrent("r", None, 8, "dense"))), (1, 2, 2))


# ---------------------------------------------------------------------------------------- adaptation, graded
def test_adaptive_threshold_matches_a_reference_loop():
    spec = NetworkSpec((Dense("w", None, 4, 6), immediate(adaptation=Adaptation(0.9, 0.5))), (4,))
    w = torch.rand(6, 4) * 1.5
    x = spikes_in(20, 3, 4, p=0.6)
    ref = ref_neuron(x @ w.T, adapt=(0.9, 0.5))
    plain = ref_neuron(x @ w.T)
    assert ref.sum() < plain.sum()  # adaptation lowers the rate
    assert torch.equal(simulate(spec, {"w": w}, x).output, ref)


def test_graded_spikes_scale_the_output_not_the_reset():
    spec = NetworkSpec((Dense("w", None, 4, 6), immediate(spike_amplitude=0.25)), (4,))
    w = torch.rand(6, 4) * 2
    x = spikes_in(10, 3, 4)
    out = simulate(spec, {"w": w}, x).output
    assert torch.equal(out, ref_neuron(x @ w.T, amp=0.25)) and out.max() == 0.25


# ---------------------------------------------------------------------------------------- surrogates
@pytest.mark.parametrize("name, expect", [
    ("triangular", lambda x, a: torch.where(x >= 0, -a * torch.ones_like(x), a * torch.ones_like(x))),
    ("straight-through", lambda x, a: torch.ones_like(x)),
])
def test_new_surrogates_have_their_libraries_derivative(name, expect):
    from cil_core.kernels.surrogate import spike

    x = torch.linspace(-1, 1, 11, requires_grad=True)
    spike(x, Surrogate(name, 0.7), False).sum().backward()
    torch.testing.assert_close(x.grad, expect(x.detach(), 0.7))


# ---------------------------------------------------------------------------------------- capabilities
class NoMaxPool(IdealBackend):
    """an ideal chip that cannot max-pool or run batch norm"""

    name = "no-max-pool"
    capabilities = frozenset({"dense", "conv2d", "bias", "pool-avg", "pool-sum", "membrane-readout"})
    capability_hints = {"pool-max": "use nn.AvgPool2d"}


def test_capabilities_refuse_with_the_layer_and_a_hint_before_any_call():
    spec = NetworkSpec((Conv2d("c", None, 1, 2, (3, 3), (1, 1), (1, 1)), Pool2d((2, 2), (2, 2), "max"),
                        leaky_neuron(0.9, output="membrane")), (1, 4, 4))
    sess = cil.HardwareSession(NoMaxPool())
    with pytest.raises(cil.BackendCapacityError, match=r"'no-max-pool' cannot run layer 1 \(max pool\).*'pool-max'.*"
                                                       r"use nn.AvgPool2d"):
        sess.check(spec)
    assert sess.stats.calls == 0


def test_the_session_folds_batch_norm_for_a_backend_without_it():
    spec, p = bn_net(bias=False)
    x = spikes_in(4, 2, 2, 4, 4)
    dep = cil.HardwareSession(NoMaxPool()).transfer(spec, p)
    assert not any(isinstance(l, BatchNorm) for l in dep.spec.layers) and "bn.weight" not in dep.params
    obs = cil.HardwareSession(NoMaxPool()).run(spec, p, x)
    full = cil.HardwareSession(IdealBackend()).run(spec, p, x)  # runs BN as such
    torch.testing.assert_close(obs.output, full.output, rtol=1e-5, atol=1e-5)
    assert spec.features()["batchnorm"].startswith("layer 1")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), S=st.integers(1, 4), into=st.sampled_from(["input", "current", "membrane"]))
def test_parameter_sets_of_the_new_layers_equal_single_networks(seed, S, into):
    n = 5
    g = torch.Generator().manual_seed(seed)
    spec = NetworkSpec((Conv1d("c", "cb", 1, 2, 3, 1, 1), BatchNorm("g", "b", 2, torch.randn(2, generator=g),
                                                                     torch.rand(2, generator=g) + 0.5, 1e-5),
                        Flatten(), Dense("w", None, 2 * n, n),
                        immediate(alpha=0.6, recurrent=Recurrent("r", None, n, "dense", into),
                                  adaptation=Adaptation(0.8, 0.3), spike_amplitude=0.5)), (1, n))
    p = {k: torch.randn(S, *shape, generator=g) for k, shape in spec.tensor_shapes().items()}
    x = spikes_in(8, 3, 1, n, seed=seed)
    both = simulate(spec, p, x, n_sets=S).output
    for s in range(S):
        assert torch.equal(both[:, s], simulate(spec, {k: v[s] for k, v in p.items()}, x).output)


def test_the_readme_capability_table_is_generated_from_the_backends():
    from pathlib import Path

    from cil_core.app.capabilities import registered_backends, section

    backends = registered_backends()
    if not {"analog-mismatch", "speck", "xylo"} <= set(backends):
        pytest.skip("the table covers the analog, speck and xylo plugins; install them to check it")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert section({k: backends[k] for k in ("analog-mismatch", "ideal", "speck", "xylo")}) in readme, \
        "README capability table is stale: run python -m cil_core.app.capabilities --write README.md"
