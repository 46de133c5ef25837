"""Speck-style backend: the numba event loop against an independent plain-Python reference,
against the time-stepped simulation where theory says they agree, weight transfer, saturation,
lower bound, and the named chip-constraint errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")
pytest.importorskip("cil_speck")

import cil_core as cil  # noqa: E402
from cil_core import Conv2d, Dense, EventBatch, Flatten, NetworkSpec, Neuron, Pool2d  # noqa: E402
from cil_core.network.reference import feedforward  # noqa: E402
from cil_core.testing import check_backend, default_case  # noqa: E402
from cil_speck import SpeckBackend  # noqa: E402
from speck_cases import parameter_sets  # noqa: E402
from cil_speck.events import (EVENT_DTYPE, dense_to_arrays, eventbatch_to_arrays, events_to_dense,  # noqa: E402
                               time_bins)


def iaf(thr=1.0, reset="subtract", v_min=None, max_spikes=None, beta=1.0) -> Neuron:
    return Neuron(beta=beta, alpha=None, threshold=thr, reset=reset, reset_timing="immediate",
                  current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=v_min,
                  fires_at_threshold=True, max_spikes_per_step=max_spikes, dt=1e-3, output="spikes")


# --------------------------------------------------------------------------- reference
def reference(spec: NetworkSpec, chip: dict, samples: list[list[tuple]], T: int) -> tuple[np.ndarray, list]:
    """Plain-Python event-driven chip, written from the documented semantics and working on the
    *spec's* layers (pool / flatten / conv / dense stages), not on the backend's layout.

    ``samples[b]`` is a list of ``(bin, c, y, x)`` input events in processing order. Returns the
    output counts ``[T, B, n_out]`` and per neuron layer binned spikes ``{(b, t, flat): n}``."""
    ws = iter(chip["weights_int8"])
    thrs, vmins = iter(chip["thresholds"]), iter(chip["v_mins"])
    stages, shape = [], tuple(spec.input_shape)
    for layer, out in zip(spec.layers, spec.shapes()):
        if isinstance(layer, Pool2d):
            stages.append(("pool", layer.kernel_size, out))
        elif isinstance(layer, Flatten):
            stages.append(("flatten", shape))
        elif isinstance(layer, Conv2d):
            stages.append(["conv", next(ws), layer.stride, layer.padding, out])
        elif isinstance(layer, Dense):
            stages.append(["dense", next(ws).reshape(layer.out_features, -1), None, None, out])
        elif isinstance(layer, Neuron):
            stages[-1] += [next(thrs), next(vmins), layer.reset]
        shape = out
    n_out = int(np.prod(spec.output_shape))
    B = len(samples)
    out = np.zeros((T, B, n_out), np.int64)
    rec: list[dict] = [dict() for s in stages if s[0] in ("conv", "dense")]

    for b, events in enumerate(samples):
        state = [dict() for _ in stages]
        syn_idx = [i for i, s in enumerate(stages) if s[0] in ("conv", "dense")]

        def deliver(k, ev, tb):
            if k == len(stages):
                return
            st = stages[k]
            if st[0] == "pool":
                (kh, kw), (c_, h, w) = st[1], st[2]
                c, y, x = ev
                if y // kh < h and x // kw < w:
                    deliver(k + 1, (c, y // kh, x // kw), tb)
                return
            if st[0] == "flatten":
                c, y, x = ev
                _, h, w = st[1]
                deliver(k + 1, (c * h * w + y * w + x,), tb)
                return
            _, W, stride, pad, oshape, thr, vmin, reset = st
            v = state[k]
            touched = []
            if st[0] == "dense":
                i = ev[0] if len(ev) == 1 else ev[0]  # flat index (a flat input's channel)
                for o in range(W.shape[0]):
                    touched.append((o,))
                    v[(o,)] = max(-32768, min(32767, v.get((o,), 0) + int(W[o, i])))
            else:
                c, y, x = ev
                O, Ho, Wo = oshape
                for o in range(O):
                    for oy in range(Ho):
                        for ox in range(Wo):
                            ki, kj = y + pad[0] - oy * stride[0], x + pad[1] - ox * stride[1]
                            if 0 <= ki < W.shape[2] and 0 <= kj < W.shape[3]:
                                touched.append((o, oy, ox))
                                v[(o, oy, ox)] = max(-32768, min(32767, v.get((o, oy, ox), 0) + int(W[o, c, ki, kj])))
            spikes = []
            for key in sorted(touched):
                if v[key] >= thr:
                    v[key] = 0 if reset == "zero" else v[key] - thr
                    spikes.append(key)
                v[key] = max(v[key], vmin)
            # the neuron stage: record, then propagate each spike completely, in ascending order
            r = rec[syn_idx.index(k)]
            for key in spikes:
                flat = int(np.ravel_multi_index(key, oshape)) if len(key) == 3 else key[0]
                r[(b, tb, flat)] = r.get((b, tb, flat), 0) + 1
                if k == syn_idx[-1]:
                    out[tb, b, flat] += 1
                else:
                    deliver(k + 1, key if len(key) == 3 else (key[0],), tb)

        for tb, c, y, x in events:
            first = (c, y, x) if len(spec.input_shape) == 3 else (c,)
            deliver(0, first, tb)
    return out, rec


def random_net(gen: torch.Generator, kind: int):
    r = lambda: float(torch.rand(1, generator=gen))  # noqa: E731
    ri = lambda a, b: int(torch.randint(a, b, (1,), generator=gen))  # noqa: E731
    reset = "zero" if r() < 0.3 else "subtract"
    vmin = -float(ri(1, 4)) if r() < 0.5 else None
    if kind == 0:  # conv / pool / conv / flatten / dense
        c1, c2 = ri(1, 4), ri(1, 4)
        pool = Pool2d((2, 2), (2, 2), "avg" if r() < 0.5 else "sum")
        layers = (Conv2d("a", None, 2, c1, (3, 3), (1, 1), (1, 1)), iaf(0.5 + r(), reset, vmin), pool,
                  Conv2d("b", None, c1, c2, (3, 3), (2, 2), (ri(0, 2),) * 2), iaf(0.5 + r(), reset, vmin),
                  Flatten(), None, iaf(0.5 + r(), "subtract"))
        spec0 = NetworkSpec(layers[:5], (2, 9, 9))
        flat = int(np.prod(spec0.output_shape))
        layers = layers[:6] + (Dense("c", None, flat, 3),) + layers[7:]
        spec = NetworkSpec(layers, (2, 9, 9))
        params = {"a": torch.rand(c1, 2, 3, 3, generator=gen) - 0.3, "b": torch.rand(c2, c1, 3, 3, generator=gen) - 0.3,
                  "c": torch.rand(3, flat, generator=gen) - 0.3}
    else:  # input pooling, strided conv with a 2x2 kernel, two dense layers
        spec = NetworkSpec((Pool2d((2, 2), (2, 2), "sum"), Conv2d("a", None, 2, 3, (2, 2), (2, 2), (0, 0)),
                            iaf(0.5 + r(), reset, vmin), Flatten(), Dense("b", None, 3 * 2 * 2, 4), iaf(0.5 + r(), reset),
                            Dense("c", None, 4, 2), iaf(0.3 + r())), (2, 9, 8))
        params = {"a": torch.rand(3, 2, 2, 2, generator=gen) - 0.3, "b": torch.rand(4, 12, generator=gen) - 0.3,
                  "c": torch.rand(2, 4, generator=gen) - 0.2}
    return spec, params


def _chip_and_reference(spec, params, x):
    """The backend's recorded observation of dense input ``x`` and the plain-Python reference's
    output and per-layer records for the same deployment and events."""
    T, B = x.shape[:2]
    be = SpeckBackend()
    dep = be.transfer(spec, params)
    obs = be.forward(dep, x, record=True)
    c, y, xx, tb, off = dense_to_arrays(x)
    samples = [list(zip(tb[off[b]:off[b + 1]], c[off[b]:off[b + 1]], y[off[b]:off[b + 1]], xx[off[b]:off[b + 1]]))
               for b in range(B)]
    ref_out, ref_rec = reference(spec, dep.chip, samples, T)
    return obs, ref_out, ref_rec


@pytest.mark.parametrize("seed", range(6))
def test_event_loop_matches_python_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    spec, params = random_net(gen, seed % 2)
    T, B = 7, 3
    x = (torch.rand(T, B, *spec.input_shape, generator=gen) < 0.15).float() * torch.randint(
        1, 3, (T, B, *spec.input_shape), generator=gen)
    obs, ref_out, ref_rec = _chip_and_reference(spec, params, x)
    assert obs.output.sum() > 0, "degenerate test network: no output spikes"
    np.testing.assert_array_equal(obs.output.reshape(T, B, -1).numpy(), ref_out)
    for k, lo in enumerate(obs.layers):
        got = lo.spikes.reshape(T, B, -1).numpy()
        want = np.zeros_like(got)
        for (b, t, f), n in ref_rec[k].items():
            want[t, b, f] = n
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel, stride, padding, hw", [
    ((5, 3), (4, 2), (4, 1), (11, 9)), ((1, 4), (2, 4), (0, 3), (7, 10)), ((4, 4), (1, 1), (3, 2), (6, 5)),
])
def test_receptive_fields_of_strided_padded_kernels_match_the_reference(kernel, stride, padding, hw):
    """The event loop finds the neurons an event projects to arithmetically (only the kernel rows
    and columns on the stride grid); the reference tries every neuron."""
    gen = torch.Generator().manual_seed(sum(kernel) + sum(stride))
    first = Conv2d("a", None, 2, 3, kernel, stride, padding)
    spec0 = NetworkSpec((first, iaf(0.6)), (2, *hw))
    flat = int(np.prod(spec0.output_shape))
    spec = NetworkSpec((first, iaf(0.6), Flatten(), Dense("b", None, flat, 2), iaf(0.8)), (2, *hw))
    params = {"a": torch.rand(3, 2, *kernel, generator=gen) - 0.25, "b": torch.rand(2, flat, generator=gen) - 0.3}
    T, B = 5, 3
    x = (torch.rand(T, B, *spec.input_shape, generator=gen) < 0.3).float()
    obs, ref_out, ref_rec = _chip_and_reference(spec, params, x)
    assert obs.layers[0].spikes.sum() > 0 and ref_out.sum() > 0
    np.testing.assert_array_equal(obs.output.reshape(T, B, -1).numpy(), ref_out)
    got = obs.layers[0].spikes.reshape(T, B, -1).numpy()
    want = np.zeros_like(got)
    for (b, t, f), n in ref_rec[0].items():
        want[t, b, f] = n
    np.testing.assert_array_equal(got, want)


def test_input_conversion_follows_the_documented_order():
    """Dense counts: by sample, bin, ascending flat (c, y, x), copies consecutive; event streams:
    each sample's events in time order, ties in the given order (unsorted and empty samples)."""
    gen = torch.Generator().manual_seed(4)
    for x in (torch.randint(0, 3, (4, 3, 2, 3, 5), generator=gen).float(),
              torch.randint(0, 3, (4, 3, 7), generator=gen), torch.rand(3, 2, 5, generator=gen) < 0.5):
        T, B = x.shape[:2]
        shape3 = tuple(x.shape[2:]) if x.dim() == 5 else (x.shape[2], 1, 1)
        want = [[], [], [], []]
        for b in range(B):
            for t in range(T):
                for f, n in enumerate(x[t, b].reshape(-1).tolist()):
                    c, rem = divmod(f, shape3[1] * shape3[2])
                    for _ in range(int(n)):
                        for lst, v in zip(want, (c, rem // shape3[2], rem % shape3[2], t)):
                            lst.append(v)
        got = dense_to_arrays(x)
        for a, w in zip(got[:4], want):
            assert a.dtype == np.int32 and a.tolist() == w
        assert got[4].tolist() == [0, *np.cumsum([int(x[:, b].sum()) for b in range(B)]).tolist()]
    for bad in (torch.tensor([[[0.5]]]), torch.tensor([[[-1.0]]]), torch.tensor([[[float("nan")]]])):
        with pytest.raises(cil.ShapeError, match="non-negative integer"):
            dense_to_arrays(bad)

    def stream(ts):
        ev = np.zeros(len(ts), EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = ts, np.arange(len(ts)) % 4, np.arange(len(ts)) % 3, np.arange(len(ts)) % 2
        return ev

    events = [stream([]), stream([5, 1, 9, 1, 0]), stream([]), stream([2, 3]), stream([7, 7, 1]), stream([])]
    c, y, x, tb, off = eventbatch_to_arrays(events, 4, 10.0, (2, 3, 4))
    assert off.tolist() == [0, 0, 5, 5, 7, 10, 10]
    for b, ev in enumerate(events):
        order = sorted(range(len(ev)), key=lambda i: ev["t"][i])  # Python's sort is stable
        part = slice(off[b], off[b + 1])
        assert x[part].tolist() == [int(ev["x"][i]) for i in order]
        assert c[part].tolist() == [int(ev["p"][i]) for i in order]
        assert tb[part].tolist() == [min(3, int(ev["t"][i]) * 4 // 10) for i in order]
    with pytest.raises(cil.ShapeError, match="outside"):
        eventbatch_to_arrays([stream([1, 2])], 4, 10.0, (2, 1, 4))


def _one_event_per_step(gen, T, B, shape):
    x = torch.zeros(T, B, *shape)
    for t in range(T):
        for b in range(B):
            idx = tuple(int(torch.randint(0, s, (1,), generator=gen)) for s in shape)
            x[(t, b) + idx] = 1.0
    return x


@pytest.mark.parametrize("max_spikes", [1, None])
def test_one_event_per_step_equals_time_stepped(max_spikes):
    """With one input event per time step, integer weights |w| <= 127 and integer thresholds
    > 127 (so no neuron ever reaches 2 thresholds), the event-driven chip and the time-stepped
    model must agree exactly: for a single chip layer, and for a chain whose first layer has one
    1x1 channel (so every later layer also receives at most one event per step)."""
    gen = torch.Generator().manual_seed(11)
    T, B = 60, 4
    for spec, params in (
        (NetworkSpec((Conv2d("a", None, 2, 4, (3, 3), (1, 1), (1, 1)), iaf(200.0, max_spikes=max_spikes, v_min=-300.0)),
                     (2, 6, 6)), {"a": torch.randint(-60, 128, (4, 2, 3, 3), generator=gen).float()}),
        (NetworkSpec((Conv2d("a", None, 2, 1, (1, 1), (1, 1), (0, 0)), iaf(130.0, max_spikes=max_spikes),
                      Conv2d("b", None, 1, 3, (3, 3), (1, 1), (1, 1)), iaf(150.0, "zero", max_spikes=max_spikes)),
                     (2, 5, 5)), {"a": torch.tensor([[[[127.0]], [[100.0]]]]),
                                  "b": torch.randint(-40, 128, (3, 1, 3, 3), generator=gen).float()}),
    ):
        for p in params.values():  # make the per-layer scale exactly 1: max |w| = 127
            p.view(-1)[0] = 127.0
        x = _one_event_per_step(gen, T, B, spec.input_shape)
        be = SpeckBackend()
        dep = be.transfer(spec, params)
        assert dep.chip["scales"] == [1.0] * len(dep.chip["scales"])
        chip = be.forward(dep, x).output
        soft = cil.simulate(spec, params, x).output
        assert soft.sum() > 0
        assert torch.equal(chip, soft)


def test_multiple_events_per_step_can_differ_from_time_stepped():
    """The chip emits at most one spike per input event; MultiSpike in a time step can emit more."""
    spec = NetworkSpec((Dense("a", None, 1, 1), iaf(1.0, max_spikes=None)), (1,))
    params = {"a": torch.tensor([[1.0]])}
    x = torch.tensor([[[3.0]]])  # three events in one bin
    dep = SpeckBackend().transfer(spec, params)
    assert float(SpeckBackend().forward(dep, x).output.sum()) == 3.0
    spec2 = NetworkSpec((Dense("a", None, 2, 1), iaf(1.0, max_spikes=None)), (2,))
    p2 = {"a": torch.tensor([[2.0, 0.1]])}  # one event carries 2 thresholds: chip fires once
    dep2 = SpeckBackend().transfer(spec2, p2)
    x2 = torch.tensor([[[1.0, 0.0]]])
    assert float(SpeckBackend().forward(dep2, x2).output.sum()) == 1.0
    assert float(cil.simulate(spec2, p2, x2).output.sum()) == 2.0


def test_saturation_and_lower_bound():
    spec = NetworkSpec((Dense("a", None, 2, 1), iaf(1.0)), (2,))
    params = {"a": torch.tensor([[-1.0, 1.0]])}
    be = SpeckBackend()
    dep = be.transfer(spec, params)
    assert dep.chip["thresholds"] == [127] and dep.chip["weights_int8"][0].ravel().tolist() == [-127, 127]
    T = 600
    x = torch.zeros(T, 1, 2)
    x[:300, 0, 0] = 1  # 300 x (-127) = -38100: saturates at -32768
    x[300:, 0, 1] = 1
    out = be.forward(dep, x).output[:, 0, 0]
    first = int(torch.nonzero(out)[0])
    assert first == 300 + 259  # ceil((32768 + 127) / 127) = 260 positive events
    spec_lb = NetworkSpec((Dense("a", None, 2, 1), iaf(1.0, v_min=-2.0)), (2,))
    dep_lb = be.transfer(spec_lb, params)
    assert dep_lb.chip["v_mins"] == [-254]
    out = be.forward(dep_lb, x).output[:, 0, 0]
    assert int(torch.nonzero(out)[0]) == 300 + 2  # -254 + 3 * 127 >= 127


def test_transfer_quantizes_per_layer():
    gen = torch.Generator().manual_seed(5)
    spec, params = random_net(gen, 0)
    dep = SpeckBackend().transfer(spec, params)
    for w in dep.chip["weights_int8"]:
        assert w.dtype == np.int32 and w.min() >= -128 and w.max() <= 127 and np.abs(w).max() == 127
    for name, p in params.items():
        eff = dep.params[name]
        assert eff.shape == p.shape
        # half a quantization step of the layer (threshold rounding adds a relative error <= 0.5/θ_q)
        assert float((eff - p).abs().max()) <= float(p.abs().max()) * (0.5 / 127 + 1.0 / 127) + 1e-6


def test_eventbatch_timestamps_and_binning():
    gen = torch.Generator().manual_seed(3)
    spec, params = random_net(gen, 0)
    rng = np.random.default_rng(0)
    events = []
    for _ in range(3):
        n = 300
        ev = np.zeros(n, EVENT_DTYPE)
        ev["t"] = np.sort(rng.integers(0, 10_000, n))
        ev["x"], ev["y"], ev["p"] = rng.integers(0, 9, n), rng.integers(0, 9, n), rng.integers(0, 2, n)
        events.append(ev)
    dense = events_to_dense(events, 5, 10_000.0, (2, 9, 9))
    assert dense.shape == (5, 3, 2, 9, 9) and float(dense.sum()) == 900
    be = SpeckBackend()
    dep = be.transfer(spec, params)
    obs = be.forward(dep, EventBatch(dense, events, 10_000.0), record=True)
    assert obs.output.shape == (5, 3, 3)
    assert obs.meta["input_events"] == 900
    # the raw events in time order, each binned by its own timestamp (channel = polarity): the
    # reference chip must see exactly what the backend saw
    samples = [list(zip(time_bins(ev["t"], 5, 10_000.0), ev["p"].astype(int), ev["y"], ev["x"])) for ev in events]
    ref_out, ref_rec = reference(spec, dep.chip, samples, 5)
    assert ref_out.sum() > 0, "degenerate test network: no output spikes"
    np.testing.assert_array_equal(obs.output.reshape(5, 3, -1).numpy(), ref_out)
    assert torch.equal(obs.meta["counts"], torch.as_tensor(ref_out.sum(0), dtype=torch.float32).reshape(3, 3))
    # the dense view of the same events holds them in another order within a bin: other spikes
    assert not torch.equal(be.forward(dep, dense).output, obs.output)


def test_meets_the_backend_contract():
    """A network the chip can hold: no leak (beta = 1), no biases; a 10-layer one it cannot."""
    spec, params, x = default_case(beta=1.0)
    check_backend(SpeckBackend(), spec, params, x, too_big=feedforward([4] * 11, beta=1.0).spec, limit="layers")
    check_backend(SpeckBackend(), spec, params, 2 * x,  # two events per input spike: counts > 1
                  too_big=feedforward([6, 8, 4], beta=1.0, bias=True).spec, limit="biases")
    check_backend(SpeckBackend(), *random_net(torch.Generator().manual_seed(2), 0)[:2])  # conv, pool, flatten


@pytest.mark.parametrize("layers, shape, limit", [
    (tuple(x for _ in range(10) for x in (Dense("w", None, 4, 4), iaf())), (4,), "layers"),
    ((Conv2d("w", None, 2, 4, (17, 17), (1, 1), (0, 0)), iaf()), (2, 20, 20), "kernel size"),
    ((Conv2d("w", None, 2, 4, (3, 3), (3, 3), (0, 0)), iaf()), (2, 20, 20), "stride"),
    ((Conv2d("w", None, 2, 1025, (1, 1), (1, 1), (0, 0)), iaf()), (2, 4, 4), "features per layer"),
    ((Conv2d("w", None, 64, 512, (5, 5), (1, 1), (2, 2)), iaf()), (64, 32, 32), "per-core memory"),
    ((Pool2d((3, 3), (3, 3), "sum"), Conv2d("w", None, 2, 4, (3, 3), (1, 1), (0, 0)), iaf()), (2, 30, 30), "pooling"),
    ((Pool2d((2, 2), (1, 1), "sum"), Conv2d("w", None, 2, 4, (3, 3), (1, 1), (0, 0)), iaf()), (2, 30, 30), "pooling"),
    ((Conv2d("w", None, 2, 3, (3, 3), (1, 1), (1, 1)), Pool2d((2, 2), (2, 2), "sum"), iaf()), (2, 4, 4),
     "pooling: pooling layer 1 sits between the synaptic layer 'w' and its neuron layer.*after the neuron layer"),
    ((Dense("w", "b", 4, 4), iaf()), (4,), "biases"),
    ((Dense("w", None, 4, 4), iaf(beta=0.9)), (4,), "leak"),
    ((Conv2d("w", None, 2, 4, (3, 3), (1, 1), (0, 0)), iaf()), (2, 200, 200), "input size"),
])
def test_constraint_violations_name_the_limit(layers, shape, limit):
    spec = NetworkSpec(layers, shape)
    with pytest.raises(cil.BackendCapacityError, match=limit):
        SpeckBackend().check(spec)


def test_biases_can_be_dropped_with_a_warning():
    spec = NetworkSpec((Dense("w", "b", 2, 2), iaf()), (2,))
    params = {"w": torch.eye(2), "b": torch.ones(2)}
    with pytest.warns(UserWarning, match="dropping"):
        dep = SpeckBackend(drop_biases=True).transfer(spec, params)
    assert torch.equal(dep.params["b"], torch.zeros(2))
    with pytest.warns(UserWarning, match="dropping"):
        dep = SpeckBackend(drop_biases=True).transfer(spec, {k: torch.stack([v, 2 * v]) for k, v in params.items()}, 2)
    assert torch.equal(dep.params["b"], torch.zeros(2, 2))


def test_parameter_sets_beyond_the_cap_or_without_a_set_dimension_are_refused():
    spec = NetworkSpec((Dense("w", None, 2, 2), iaf()), (2,))
    be = SpeckBackend()
    assert be.max_sets is not None and be.max_sets >= 4
    cap = be.max_sets
    with pytest.raises(cil.BackendCapacityError, match="parameter sets"):
        be.transfer(spec, {"w": torch.eye(2).expand(cap + 1, 2, 2)}, cap + 1)
    with pytest.raises(cil.ShapeError, match="a leading set dimension of 2"):
        be.transfer(spec, {"w": torch.eye(2)}, 2)
    # the session splits a larger request into calls of at most max_sets sets
    session = cil.HardwareSession(be)
    sets = torch.linspace(0.5, 2.0, cap + 3)[:, None, None] * torch.tensor([[1.0, 0.2], [0.3, 1.0]])
    x = torch.ones(3, 2, 2)
    obs = session.run(spec, {"w": sets}, x, n_sets=cap + 3)
    assert obs.output.shape == (3, cap + 3, 2, 2) and session.stats.calls == 2
    for s in (0, cap - 1, cap, cap + 2):
        assert torch.equal(obs.output[:, s], be.forward(be.transfer(spec, {"w": sets[s]}), x).output)


@pytest.mark.parametrize("kind", [0, 1])
def test_parameter_sets_in_one_call_equal_single_calls(kind):
    """S sets in one transfer + forward: each set quantized as a single transfer would (its own
    scale), outputs and recorded layer spikes bit-identical to S single calls, dense and event
    inputs; and set by set equal to the plain-Python reference chip."""
    gen = torch.Generator().manual_seed(20 + kind)
    spec, params = random_net(gen, kind)
    S, T, B = 5, 6, 4
    sets = parameter_sets(params, gen, S)
    x = (torch.rand(T, B, *spec.input_shape, generator=gen) < 0.2).float() * torch.randint(
        1, 3, (T, B, *spec.input_shape), generator=gen)
    rng = np.random.default_rng(kind)
    events = []
    for _ in range(B):
        ev = np.zeros(200, EVENT_DTYPE)
        ev["t"] = rng.integers(0, 6_000, 200)  # unsorted: the backend sorts by time
        ev["x"], ev["y"] = rng.integers(0, spec.input_shape[2], 200), rng.integers(0, spec.input_shape[1], 200)
        ev["p"] = rng.integers(0, 2, 200)
        events.append(ev)
    evb = EventBatch(events_to_dense(events, T, 6_000.0, spec.input_shape), events, 6_000.0)
    be = SpeckBackend()
    dep = be.transfer(spec, sets, S)
    assert dep.n_sets == S and len(dep.chip["weights_int8"]) == S
    singles = [be.transfer(spec, {k: v[s] for k, v in sets.items()}) for s in range(S)]
    assert len({tuple(d.chip["scales"]) for d in singles}) == S, "the sets must quantize with different scales"
    for s, d in enumerate(singles):
        for k in params:
            assert torch.equal(dep.params[k][s], d.params[k])
        for a, b in zip(dep.chip["weights_int8"][s], d.chip["weights_int8"]):
            np.testing.assert_array_equal(a, b)
        assert dep.chip["thresholds"][s] == d.chip["thresholds"] and dep.chip["v_mins"][s] == d.chip["v_mins"]
    active = 0
    for inputs in (x, evb):
        for record in (False, True):
            obs = be.forward(dep, inputs, record=record)
            assert obs.output.shape == (T, S, B, *spec.output_shape)
            syn = 0
            for s, d in enumerate(singles):
                one = be.forward(d, inputs, record=record)
                assert torch.equal(obs.output[:, s], one.output)
                assert obs.meta["synaptic_updates_per_set"][s] == one.meta["synaptic_updates"]
                syn += one.meta["synaptic_updates"]
                active += int(one.output.sum() > 0)
                if record:
                    assert len(obs.layers) == len(one.layers)
                    for la, lb in zip(obs.layers, one.layers):
                        assert la.spikes.shape[:3] == (T, S, B)
                        assert torch.equal(la.spikes[:, s], lb.spikes)
            assert obs.meta["synaptic_updates"] == syn
    assert active >= 2 * S, "degenerate test: most sets are silent"
    # every set against the plain-Python reference chip (dense input)
    obs = be.forward(dep, x, record=True)
    c, y, xx, tb, off = dense_to_arrays(x)
    samples = [list(zip(tb[off[b]:off[b + 1]], c[off[b]:off[b + 1]], y[off[b]:off[b + 1]], xx[off[b]:off[b + 1]]))
               for b in range(B)]
    for s in range(S):
        chip = {k: dep.chip[k][s] for k in ("weights_int8", "thresholds", "v_mins")}
        ref_out, ref_rec = reference(spec, chip, samples, T)
        np.testing.assert_array_equal(obs.output[:, s].reshape(T, B, -1).numpy(), ref_out)
        for k, lo in enumerate(obs.layers):
            got = lo.spikes[:, s].reshape(T, B, -1).numpy()
            want = np.zeros_like(got)
            for (b, t, f), n in ref_rec[k].items():
                want[t, b, f] = n
            np.testing.assert_array_equal(got, want)


def test_mh_scores_all_proposals_of_a_step_in_one_call(breast_cancer):
    """MH with 8 chains on speck: one backend call per step (8 sets), as many calls per step as
    chains with the same backend forced to one set per call, and the same run either way."""
    from cil_core.network.reference import feedforward as ff

    class OneSet(SpeckBackend):
        max_sets = 1

    data = breast_cancer.train.select(torch.arange(64))
    runs = []
    for be in (SpeckBackend(), OneSet()):
        net = ff([62, 16, 2], beta=1.0, weight_gain=3.0, seed=0)
        tr = cil.Trainer(net, be, "mh", seed=0, chains=8, burn_in=3, adapt_every=2, init="network")
        calls: list[int] = []
        tr.fit(data, steps=5, on_step=lambda rec: calls.append(tr.session.stats.calls))
        per_step = [b - a for a, b in zip(calls, calls[1:])]  # the first step scores the states too
        runs.append((per_step, [p.detach().clone() for p in net.module.parameters()]))
    (batched_calls, wb), (single_calls, ws) = runs
    assert batched_calls == [1] * 4 and single_calls == [8] * 4
    assert all(torch.equal(a, b) for a, b in zip(wb, ws))


def test_cil_spl_trains_through_the_registry():
    """The backend serves the core's hooks: a CIL-SPL fit runs with the chip in the loop."""
    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 8, bias=False), torch.nn.Linear(8, 3, bias=False))
    spec = NetworkSpec((Dense("0.weight", None, 6, 8), iaf(1.0), Dense("1.weight", None, 8, 3), iaf(1.0)), (6,))
    with torch.no_grad():
        module[0].weight.copy_(torch.rand(8, 6, generator=gen) * 1.5)
        module[1].weight.copy_(torch.rand(3, 8, generator=gen) * 1.5)
    net = cil.WrappedNetwork(module, spec, "native")
    x = (torch.rand(10, 24, 6, generator=gen) < 0.5).float()
    y = torch.randint(0, 3, (24,), generator=gen)
    tr = cil.Trainer(net, "speck", "cil-spl", lr=0.02)
    before = module[0].weight.detach().clone()
    hist = tr.fit((x, y), epochs=1, batch_size=12)
    assert len(hist) == 2 and "hardware_accuracy" in hist.last
    assert not torch.equal(before, module[0].weight.detach())
    assert tr.evaluate((x, y))["backend"] == "speck"


def test_documented_output_order_within_one_input_event():
    """One input event makes neurons 0 and 1 of layer 1 fire; the documented ascending order
    delivers +w (from neuron 0) before -w (from neuron 1), so the layer-2 neuron fires once.
    (Descending order would leave it silent.)"""
    spec = NetworkSpec((Dense("a", None, 1, 2), iaf(1.0), Dense("b", None, 2, 1), iaf(1.0)), (1,))
    params = {"a": torch.tensor([[1.0], [1.0]]), "b": torch.tensor([[1.0, -1.0]])}
    be = SpeckBackend()
    obs = be.forward(be.transfer(spec, params), torch.ones(1, 1, 1), record=True)
    assert obs.layers[0].spikes.sum() == 2
    assert float(obs.output.sum()) == 1.0
    params_rev = {"a": params["a"], "b": torch.tensor([[-1.0, 1.0]])}
    assert float(be.forward(be.transfer(spec, params_rev), torch.ones(1, 1, 1)).output.sum()) == 0.0


def test_registered():
    reg = cil.get_manager()
    assert "speck" in reg.names("backends")
    assert isinstance(cil.make_backend("speck"), SpeckBackend)


def test_cil_spl_observing_every_layer():
    """observes_layers: the binned spikes of every chip layer replace the software layers' spikes."""
    gen = torch.Generator().manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(5, 6, bias=False), torch.nn.Linear(6, 2, bias=False))
    with torch.no_grad():
        module[0].weight.copy_(torch.rand(6, 5, generator=gen) * 1.5)
        module[1].weight.copy_(torch.rand(2, 6, generator=gen) * 1.5)
    spec = NetworkSpec((Dense("0.weight", None, 5, 6), iaf(1.0), Dense("1.weight", None, 6, 2), iaf(1.0)), (5,))
    net = cil.WrappedNetwork(module, spec, "native")
    x = (torch.rand(8, 10, 5, generator=gen) < 0.5).float()
    y = torch.randint(0, 2, (10,), generator=gen)
    tr = cil.Trainer(net, "speck", "cil-spl", observe="layers", lr=0.02)
    hist = tr.fit((x, y), epochs=1, batch_size=10)
    assert len(hist) == 1 and np.isfinite(hist.last["loss"])
