"""The speck event loop (``cil_speck.kernel.run_events``) is bit-identical to the loop it replaced
(``run_events_reference``, kept unchanged) and to that loop's recorded outputs: spikes of every
layer, output counts, synaptic updates and every other observation field, on networks covering
everything the backend runs (``tests/speck_cases.py``), plus the fan-out table against the
arithmetic it replaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("numba")
pytest.importorskip("cil_speck")

from cil_core import Conv2d, Dense, Flatten, NetworkSpec, Pool2d  # noqa: E402
from cil_speck import SpeckBackend  # noqa: E402
from cil_speck import kernel as K  # noqa: E402
from cil_speck.events import dense_to_arrays  # noqa: E402

import speck_cases as sc  # noqa: E402

DIGESTS = json.loads((Path(__file__).parent / "speck_digests.json").read_text())["cases"]


def test_observations_equal_the_digests_recorded_before_the_rewrite():
    """Every case's observation (output, layer spikes, meta except the wall time), recorded and
    not, hashes to what the previous loop gave (tests/speck_digests.json, commit 92ffb55)."""
    be = SpeckBackend()
    seen = {}
    for case in sc.cases():
        for label, obs in sc.observe(be, case):
            seen[label] = [sc.digest(obs), sc.spike_total(obs), int(obs.meta["synaptic_updates"])]
    assert set(seen) == set(DIGESTS)
    wrong = {k: (seen[k][1:], DIGESTS[k][1:]) for k in DIGESTS if seen[k] != DIGESTS[k]}
    assert wrong == {}, f"observations changed (spikes, updates now vs recorded): {wrong}"
    assert all(v[1] > 0 for v in seen.values()), "a degenerate case: no spikes at all"


def _both_loops(dep, x, record: bool):
    """``(out, rec, syn)`` of the loop and of the previous loop for one deployment and input."""
    ch = dep.chip
    arrays = dense_to_arrays(x)
    lp = ch["lp"].copy()
    if not record:
        lp[:, K.ROFF] = -1
    T = int(x.shape[0])
    n_out = int(np.prod(ch["map"].layers[-1].out_shape))
    rec = ch["rec_size"] if record else 0
    S = int(ch["n_sets"])
    new = K.run_events(*arrays, lp, ch["loop_weights"], ch["fan"], ch["n_state"], T, n_out, rec, ch["stack_cap"], S)
    old = K.run_events_reference(*arrays, lp, ch["weights"], ch["n_state"], T, n_out, rec, ch["stack_cap"], S)
    return new, old


def _random_conv_net(gen: torch.Generator, v_min_factor: float | None = None):
    """A random pooled, strided, padded conv, a second conv and a dense layer. ``v_min_factor``:
    every lower bound at that multiple of its layer's threshold (>= 1: the loop's fused pass)."""
    ri = lambda a, b: int(torch.randint(a, b, (1,), generator=gen))  # noqa: E731
    r = lambda: float(torch.rand(1, generator=gen))  # noqa: E731
    kh, kw, sh, sw = ri(1, 6), ri(1, 6), 2 ** ri(0, 3), 2 ** ri(0, 3)
    ph, pw = ri(0, kh), ri(0, kw)
    pool = 2 ** ri(0, 2)
    hw = (ri(kh + 4, 17) * pool, ri(kw + 4, 17) * pool)  # <= 16 after pooling: the dense kernel fits
    c1, c2 = ri(1, 12), ri(1, 20)
    reset = "zero" if r() < 0.4 else "subtract"
    v_min = -float(ri(1, 5)) if r() < 0.5 else None
    ta, tb, tc = 0.4 + r(), 0.5 + r(), 0.5 + r()
    lb = (lambda t: v_min) if v_min_factor is None else (lambda t: v_min_factor * t)  # noqa: E731
    head = ((Pool2d((pool, pool), (pool, pool), "sum"),) if pool > 1 else ()) + (
        Conv2d("a", None, 2, c1, (kh, kw), (sh, sw), (ph, pw)), sc.iaf(ta, reset, lb(ta)),
        Conv2d("b", None, c1, c2, (3, 3), (1, 1), (1, 1)), sc.iaf(tb, reset, lb(tb)))
    flat = int(np.prod(NetworkSpec(head, (2, *hw)).output_shape))
    last = sc.iaf(tc) if v_min_factor is None else sc.iaf(tc, reset, lb(tc))
    spec = NetworkSpec(head + (Flatten(), Dense("c", None, flat, ri(2, 12)), last), (2, *hw))
    params = {"a": torch.rand(c1, 2, kh, kw, generator=gen) - 0.3, "b": torch.rand(c2, c1, 3, 3, generator=gen) - 0.35,
              "c": torch.rand(spec.output_shape[0], flat, generator=gen) - 0.3}
    return spec, params


@pytest.mark.parametrize("seed", range(8))
def test_loop_equals_the_previous_loop_on_random_networks(seed):
    """Random geometries (kernels 1-5, strides 1-4, padding, input pooling), resets and lower
    bounds, one set and three, recorded and not: the same arrays, element for element."""
    gen = torch.Generator().manual_seed(100 + seed)
    spec, params = _random_conv_net(gen)
    be = SpeckBackend()
    x = sc._dense_counts(gen, 5, 3, spec.input_shape, 0.12, 3)
    for dep in (be.transfer(spec, params), be.transfer(spec, sc.parameter_sets(params, gen, 3), 3)):
        for record in (False, True):
            new, old = _both_loops(dep, x, record)
            for a, b in zip(new, old):
                np.testing.assert_array_equal(a, b)
            assert new[2].sum() > 0
    assert new[1].sum() > 0, "degenerate test network: no spikes"


@pytest.mark.parametrize("seed, factor", [(0, 1.0), (1, 1.5), (2, 2.0), (4, 1.0)])
def test_loop_equals_the_previous_loop_with_lower_bounds_at_or_above_threshold(seed, factor):
    """Lower bounds at or above the threshold (float32 state): the loop's fused pass (reset inside
    the vector block, every block's spike bits kept) against the previous loop, element for
    element, random geometries and channel counts (blocks of 8 neurons with a scalar tail)."""
    gen = torch.Generator().manual_seed(200 + seed)
    spec, params = _random_conv_net(gen, factor)
    be = SpeckBackend()
    x = sc._dense_counts(gen, 5, 3, spec.input_shape, 0.12, 3)
    dep = be.transfer(spec, params)
    lp = dep.chip["lp"]
    assert dep.chip["loop_weights"].dtype == np.float32
    assert all(lp[i, K.VMIN] >= lp[i, K.THR] for i in range(lp.shape[0]))
    for record in (False, True):
        new, old = _both_loops(dep, x, record)
        for a, b in zip(new, old):
            np.testing.assert_array_equal(a, b)
    assert new[1].sum() > 0 and new[2].sum() > 0, "degenerate test network: no spikes"


def test_a_lower_bound_beyond_float32_runs_in_float64():
    """v_min far above the threshold (more than 2**24 once scaled) cannot be held exactly in
    float32: the loop switches to float64 and still equals the previous loop."""
    spec = NetworkSpec((Dense("a", None, 2, 3), sc.iaf(1.0, v_min=1000.0), Dense("b", None, 3, 2), sc.iaf(1.0)), (2,))
    params = {"a": torch.tensor([[0.001, -0.002], [0.0005, 0.001], [-0.001, 0.002]]),
              "b": torch.tensor([[1.0, -1.0, 0.5], [0.1, 0.2, -0.3]])}
    dep = SpeckBackend().transfer(spec, params)
    assert dep.chip["lp"][0, K.VMIN] > 2 ** 24 and dep.chip["loop_weights"].dtype == np.float64
    x = sc._dense_counts(torch.Generator().manual_seed(3), 6, 3, (2,), 0.5, 3)
    for record in (False, True):
        new, old = _both_loops(dep, x, record)
        for a, b in zip(new, old):
            np.testing.assert_array_equal(a, b)
    assert new[0].sum() > 0


@pytest.mark.parametrize("kernel, stride, pad, n_in", [(3, 1, 1, 17), (5, 2, 4, 11), (4, 4, 3, 13), (16, 8, 0, 40),
                                                       (1, 1, 0, 5), (3, 8, 2, 20), (7, 1, 0, 7)])
def test_fan_out_table_enumerates_the_first_tap_targets(kernel, stride, pad, n_in):
    """For every input position, the table's rows and column runs give exactly the (kernel index,
    output index) pairs the previous loop computed with _first_tap, in the same order."""
    n_out = (n_in + 2 * pad - kernel) // stride + 1
    lp = np.zeros((1, K.N_PARAMS), np.int64)
    lp[0, [K.C, K.H, K.W, K.PH_, K.PW_, K.O, K.HO, K.WO]] = [1, n_in, n_in, 1, 1, 3, n_out, n_out]
    lp[0, [K.KH, K.KW, K.SH, K.SW, K.PADH, K.PADW]] = [kernel, kernel, stride, stride, pad, pad]
    fan = K.fan_out_table(lp).astype(np.int64)
    O, W = 3, n_out
    for p in range(n_in):
        t = p + pad
        want = []
        k = K._first_tap.py_func(t, n_out, stride)
        while k <= min(kernel - 1, t):
            want.append((k, (t - k) // stride))
            k += stride
        rows = [(fan[a + 1] // (kernel * O), fan[a + 2]) for a in range(fan[lp[0, K.RTAB] + p], fan[lp[0, K.RTAB] + p + 1], 3)]
        assert rows == want
        assert all(fan[a] == fan[a + 2] * W * O for a in range(fan[lp[0, K.RTAB] + p], fan[lp[0, K.RTAB] + p + 1], 3))
        cols = []
        for q in range(fan[lp[0, K.CTAB] + p], fan[lp[0, K.CTAB] + p + 1], 4):
            v_off, w_off, ox0, n = fan[q:q + 4]
            assert v_off == ox0 * O and (stride == 1 or n == 1)
            kj_hi = kernel - 1 - w_off // O  # the run's first (largest) kernel column, reversed
            cols += [(kj_hi - m, ox0 + m) for m in range(n)][::-1]  # read backwards: ascending kj
        assert cols == want
