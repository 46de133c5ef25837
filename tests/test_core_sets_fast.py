"""The parameter-set path of :func:`~cil_core.network.executor.simulate` when the first synaptic
layer reads the input every set shares (``synapse.dense_shared``, ``conv_shared``): each set's output equals a
single-network call bit for bit over random shapes (sizes past 64, ``S = 1``, with and without
biases, with the set-independent Flatten/Pool/Dropout in front), and gradients still flow; a
leading Dense layer and the plain leaky layer after it, fused step by step without autograd, equal
the layer-by-layer path and single runs, and the fused path is declined where it would change
something."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cil_core import Conv1d, Conv2d, Dense, Dropout, Flatten, NetworkSpec, Pool2d
from cil_core.kernels import synapse
from cil_core.network.executor import simulate
from cil_core.network.reference import leaky_neuron


def _params(spec_bias: bool, S: int, n_in: int, n_out: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    p = {"w": torch.randn(S, n_out, n_in, generator=gen)}
    if spec_bias:
        p["b"] = torch.randn(S, n_out, generator=gen)
    return p


def _assert_sets_equal_single(spec: NetworkSpec, p: dict[str, torch.Tensor], x: torch.Tensor, S: int) -> None:
    both = simulate(spec, p, x, n_sets=S)
    assert both.output.shape[1] == S
    for s in range(S):
        single = simulate(spec, {k: v[s] for k, v in p.items()}, x)
        assert torch.equal(both.output[:, s], single.output), s


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 3), B=st.integers(1, 80), n_in=st.integers(1, 100), n_out=st.integers(1, 80),
       S=st.sampled_from([1, 2, 3, 7, 33, 65]), bias=st.booleans(), spikes=st.booleans(),
       readout=st.sampled_from(["membrane", "spikes"]), seed=st.integers(0, 2**16))
def test_leading_dense_sets_equal_single_calls(T, B, n_in, n_out, S, bias, spikes, readout, seed):
    g = torch.Generator().manual_seed(seed)
    spec = NetworkSpec((Dense("w", "b" if bias else None, n_in, n_out), leaky_neuron(0.9, output=readout)), (n_in,))
    x = (torch.rand(T, B, n_in, generator=g) < 0.3).float() if spikes else torch.randn(T, B, n_in, generator=g)
    _assert_sets_equal_single(spec, _params(bias, S, n_in, n_out, g), x, S)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 20), C=st.integers(1, 3), H=st.integers(2, 9), n_out=st.integers(1, 70),
       S=st.sampled_from([1, 2, 5, 66]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_set_independent_layers_before_the_first_dense(B, C, H, n_out, S, bias, seed):
    g = torch.Generator().manual_seed(seed)
    n_in = C * (H // 2) ** 2
    spec = NetworkSpec((Pool2d((2, 2), (2, 2), "sum"), Dropout(0.5), Flatten(), Dense("w", "b" if bias else None, n_in, n_out),
                        leaky_neuron(0.9, output="membrane")), (C, H, H))
    x = torch.randn(2, B, C, H, H, generator=g)
    _assert_sets_equal_single(spec, _params(bias, S, n_in, n_out, g), x, S)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 6), C=st.integers(1, 3), H=st.integers(3, 10), n_out=st.integers(1, 70), k=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 1), S=st.sampled_from([1, 3, 65]), bias=st.booleans(),
       one_d=st.booleans(), seed=st.integers(0, 2**16))
def test_leading_conv_sets_equal_single_calls(B, C, H, n_out, k, stride, pad, S, bias, one_d, seed):
    g = torch.Generator().manual_seed(seed)
    if one_d:
        conv, shape, wshape = Conv1d("w", "b" if bias else None, C, n_out, k, stride, pad), (C, H), (S, n_out, C, k)
    else:
        conv = Conv2d("w", "b" if bias else None, C, n_out, (k, k), (stride, stride), (pad, pad))
        shape, wshape = (C, H, H), (S, n_out, C, k, k)
    spec = NetworkSpec((conv, leaky_neuron(0.9, output="membrane")), shape)
    p = {"w": torch.randn(wshape, generator=g)}
    if bias:
        p["b"] = torch.randn(S, n_out, generator=g)
    _assert_sets_equal_single(spec, p, torch.randn(2, B, *shape, generator=g), S)


def test_dense_shared_with_and_without_autograd_agree_and_carry_gradients():
    g = torch.Generator().manual_seed(0)
    T, B, n_in, n_out, S = 3, 7, 70, 66, 4
    x = torch.randn(T, B, n_in, generator=g)
    w = torch.randn(S, n_out, n_in, generator=g, requires_grad=True)
    b = torch.randn(S, n_out, generator=g, requires_grad=True)
    y = synapse.dense_shared(None, x, w, b)
    with torch.no_grad():
        y0 = synapse.dense_shared(None, x, w, b)
    assert y.shape == (T, S * B, n_out) and torch.equal(y, y0)
    spec = NetworkSpec((Dense("w", "b", n_in, n_out), leaky_neuron(0.9, output="membrane")), (n_in,))
    simulate(spec, {"w": w, "b": b}, x, n_sets=S).output.square().sum().backward()
    for s in range(S):
        ws = w.detach()[s].clone().requires_grad_(True)
        bs = b.detach()[s].clone().requires_grad_(True)
        simulate(spec, {"w": ws, "b": bs}, x).output.square().sum().backward()
        assert torch.allclose(w.grad[s], ws.grad, rtol=1e-5, atol=1e-5)
        assert torch.allclose(b.grad[s], bs.grad, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 20), B=st.integers(1, 70), n_in=st.integers(1, 90), n_out=st.integers(1, 70),
       S=st.sampled_from([1, 2, 8, 33]), bias=st.booleans(), spikes=st.booleans(), in_out=st.booleans(),
       neuron=st.sampled_from(["lif", "if-at-threshold", "per-neuron", "v-init"]), record=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fused_leading_dense_and_leaky_layer_equals_the_layer_by_layer_path(
        T, B, n_in, n_out, S, bias, spikes, in_out, neuron, record, seed):
    """With sets and without autograd a leading Dense layer and the plain leaky layer after it run
    fused, step by step (executor._dense_then_leaky): output, recorded spikes and membranes equal
    the layer-by-layer path (dense_shared, then the neuron loop) and every set's single-network run
    bit for bit, on binary and real-valued inputs; the fused path is really taken."""
    from dataclasses import replace

    from cil_core.network import executor

    g = torch.Generator().manual_seed(seed)
    n1 = leaky_neuron(0.9, threshold=0.8)
    if neuron == "if-at-threshold":
        n1 = replace(n1, beta=1.0, fires_at_threshold=True)
    elif neuron == "per-neuron":
        n1 = replace(n1, beta=torch.rand(n_out, generator=g), threshold=torch.rand(n_out, generator=g) + 0.3)
    elif neuron == "v-init":
        n1 = replace(n1, v_init=1.5)  # starts above the threshold: R_0 = 1
    dense = Dense("w", "b" if bias else None, n_in, n_out, weight_layout="in-out" if in_out else "out-in")
    spec = NetworkSpec((dense, n1), (n_in,))
    p = {"w": torch.randn(S, *((n_in, n_out) if in_out else (n_out, n_in)), generator=g) * 0.6}
    if bias:
        p["b"] = torch.randn(S, n_out, generator=g) * 0.3
    x = (torch.rand(T, B, n_in, generator=g) < 0.3).float() if spikes else torch.randn(T, B, n_in, generator=g)
    real, calls = executor._dense_then_leaky, []
    kw = dict(record=record, record_membrane=record)
    try:  # (hypothesis runs the examples in one test call: no function-scoped monkeypatch)
        with torch.no_grad():
            executor._dense_then_leaky = lambda *a, **k: calls.append(1) or real(*a, **k)
            fused = simulate(spec, p, x, n_sets=S, **kw)
            assert calls == [1]
            executor._dense_then_leaky = lambda *a, **k: None
            layered = simulate(spec, p, x, n_sets=S, **kw)
            singles = [simulate(spec, {k: v[s] for k, v in p.items()}, x, **kw) for s in range(S)]
    finally:
        executor._dense_then_leaky = real
    assert torch.equal(fused.output, layered.output)
    for a, b in zip(fused.layers, layered.layers):
        assert torch.equal(a.spikes, b.spikes) and torch.equal(a.membrane, b.membrane)
    for s, single in enumerate(singles):
        assert torch.equal(fused.output[:, s], single.output), s
        if record:
            assert torch.equal(fused.layers[0].spikes[:, s], single.layers[0].spikes)
            assert torch.equal(fused.layers[0].membrane[:, s], single.layers[0].membrane)


def test_fused_path_is_not_taken_where_it_would_change_something(monkeypatch):
    """Autograd on, an observed first neuron layer, membrane noise, or a neuron layer that is not
    plain (a synaptic current): the layer-by-layer path runs, and the results still equal single
    runs."""
    from dataclasses import replace

    from cil_core.network import executor
    from cil_core.network.observation import LayerObservation

    g = torch.Generator().manual_seed(0)
    S, T, B = 3, 6, 10
    p = {"w": torch.randn(S, 5, 7, generator=g)}
    x = (torch.rand(T, B, 7, generator=g) < 0.4).float()
    real, fused = executor._dense_then_leaky, []
    monkeypatch.setattr(executor, "_dense_then_leaky", lambda *a, **k: fused.append(real(*a, **k)) or fused[-1])
    synaptic = NetworkSpec((Dense("w", None, 7, 5), replace(leaky_neuron(0.9), alpha=0.8)), (7,))
    with torch.no_grad():
        _assert_sets_equal_single(synaptic, p, x, S)
    plain = NetworkSpec((Dense("w", None, 7, 5), leaky_neuron(0.9)), (7,))
    _assert_sets_equal_single(plain, p, x, S)  # autograd on
    with torch.no_grad():
        obs = [LayerObservation(torch.zeros(T, S, B, 5))]
        simulate(plain, p, x, n_sets=S, observations=obs)
        simulate(plain, p, x, n_sets=S, membrane_noise=[lambda t, like: torch.zeros_like(like)])
    assert fused == [None]  # asked once (the synaptic-current layer) and declined
    with torch.no_grad():
        simulate(plain, p, x, n_sets=S)
    assert fused[-1] is not None  # and taken on the plain layer without autograd


@pytest.mark.parametrize("layout", ["in-out", "out-in"])
@pytest.mark.parametrize("B", [1, 2, 3, 8, 37])
def test_sets_of_a_leading_dense_layer_equal_single_runs_on_small_batches(layout, B):
    """Every set of a leading dense layer equals its single-network run bit for bit, on the shapes
    where MKL rounds a product written into an offset view of a larger buffer differently (before the
    fix, 1-3 of 8 sets differed by an ulp in the in-out layout with B = 1..3)."""
    g = torch.Generator().manual_seed(0)
    n_in, n_out, S = 8, 5, 8
    dense = Dense("w", None, n_in, n_out, weight_layout=layout)
    spec = NetworkSpec((dense, leaky_neuron(0.9, threshold=0.8)), (n_in,))
    p = {"w": torch.randn(S, *((n_in, n_out) if layout == "in-out" else (n_out, n_in)), generator=g) * 0.6}
    x = torch.randn(3, B, n_in, generator=g)
    with torch.no_grad():
        sets = simulate(spec, p, x, n_sets=S, record=True, record_membrane=True)
        for s in range(S):
            single = simulate(spec, {"w": p["w"][s]}, x, record=True, record_membrane=True)
            assert torch.equal(sets.layers[0].membrane[:, s], single.layers[0].membrane), s
            assert torch.equal(sets.output[:, s], single.output), s


def test_every_set_of_a_two_layer_network_equals_its_single_run():
    """Sets of a 62-style two-dense-layer network (the MH benchmark's form) on random shapes, small
    batches included: every set's second-layer membrane equals its single-network run bit for bit
    (a bmm over the sets differed in 197 of 736 such sets, per-set products on slices of the step's
    buffer in 136: synapse.dense, synapse.fresh)."""
    g = torch.Generator().manual_seed(0)
    differ = 0
    for trial in range(40):
        B = int(torch.randint(1, 6, (1,), generator=g)) if trial % 2 else int(torch.randint(1, 200, (1,), generator=g))
        i, h, o = (int(torch.randint(1, 40, (1,), generator=g)) for _ in range(3))
        S, T = int(torch.randint(2, 9, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        spec = NetworkSpec((Dense("w1", None, i, h), leaky_neuron(0.9, threshold=0.5), Dense("w2", "b2", h, o),
                            leaky_neuron(0.9, threshold=0.5)), (i,))
        p = {"w1": torch.randn(S, h, i, generator=g), "w2": torch.randn(S, o, h, generator=g),
             "b2": torch.randn(S, o, generator=g) * 0.1}
        x = (torch.rand(T, B, i, generator=g) < 0.5).float()
        with torch.no_grad():
            sets = simulate(spec, p, x, n_sets=S, record=True, record_membrane=True)
            for s in range(S):
                one = simulate(spec, {k: v[s] for k, v in p.items()}, x, record=True, record_membrane=True)
                differ += not (torch.equal(sets.layers[1].membrane[:, s], one.layers[1].membrane)
                               and torch.equal(sets.layers[0].membrane[:, s], one.layers[0].membrane))
    assert differ == 0


def test_every_set_of_a_two_layer_conv_network_equals_its_single_run():
    """Sets of a two-conv-layer network: every set's second-layer membrane equals its single run bit
    for bit (a grouped convolution over the sets differed in 39 of 94 such sets)."""
    g = torch.Generator().manual_seed(0)
    differ = 0
    for _ in range(12):
        B = int(torch.randint(1, 5, (1,), generator=g))
        c0, c1, c2 = (int(torch.randint(1, 6, (1,), generator=g)) for _ in range(3))
        H, S = int(torch.randint(4, 12, (1,), generator=g)), int(torch.randint(2, 6, (1,), generator=g))
        spec = NetworkSpec((Conv2d("w1", None, c0, c1, (3, 3), (1, 1), (1, 1)), leaky_neuron(0.9, threshold=0.5),
                            Conv2d("w2", "b2", c1, c2, (3, 3), (1, 1), (1, 1)), leaky_neuron(0.9, threshold=0.5)),
                           (c0, H, H))
        p = {"w1": torch.randn(S, c1, c0, 3, 3, generator=g), "w2": torch.randn(S, c2, c1, 3, 3, generator=g),
             "b2": torch.randn(S, c2, generator=g) * 0.1}
        x = (torch.rand(2, B, c0, H, H, generator=g) < 0.5).float()
        with torch.no_grad():
            sets = simulate(spec, p, x, n_sets=S, record=True, record_membrane=True)
            for s in range(S):
                one = simulate(spec, {k: v[s] for k, v in p.items()}, x, record=True, record_membrane=True)
                differ += not torch.equal(sets.layers[1].membrane[:, s], one.layers[1].membrane)
    assert differ == 0
