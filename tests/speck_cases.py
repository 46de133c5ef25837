"""Deterministic speck networks and inputs for the bit-identity checks of the event loop
(``tests/test_speck_kernel_identity.py``): every layer kind and option the backend runs (conv with
strides 1-8, padding, kernels up to 16x16, sum/avg pooling 2-8 before a layer and at the input,
flatten + dense, flat dense inputs, subtract / zero reset, with and without a lower bound, a lower
bound above the threshold, 16-bit saturation), dense count inputs (several events per position) and
event streams (unsorted, empty samples, 1- and 2-channel), recorded or not, one set or several.

Everything is generated from fixed seeds with ``torch.Generator`` / ``numpy.random.default_rng``
(no global state), so the same cases come out in every process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from cil_core import Conv2d, Dense, EventBatch, Flatten, NetworkSpec, Neuron, Observation, Pool2d
from cil_speck.events import EVENT_DTYPE, events_to_dense


def iaf(thr: float = 1.0, reset: str = "subtract", v_min: float | None = None) -> Neuron:
    """The chip's integrate-and-fire neuron."""
    return Neuron(beta=1.0, alpha=None, threshold=thr, reset=reset, reset_timing="immediate",
                  current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=v_min,
                  fires_at_threshold=True, max_spikes_per_step=None, dt=1e-3, output="spikes")


@dataclass
class Case:
    """One network, its parameters (a leading set dimension when ``n_sets`` is given) and the
    inputs it is run on (each input with and without recording)."""

    name: str
    spec: NetworkSpec
    params: dict[str, torch.Tensor]
    inputs: list[Any]
    n_sets: int | None = None


def _dense_counts(gen: torch.Generator, T: int, B: int, shape: tuple[int, ...], p: float, max_count: int = 2
                  ) -> torch.Tensor:
    """Dense event counts: each position active with probability ``p``, 1..max_count events."""
    on = torch.rand(T, B, *shape, generator=gen) < p
    return on.float() * torch.randint(1, max_count + 1, (T, B, *shape), generator=gen)


def _streams(rng: np.random.Generator, B: int, n: int, shape: tuple[int, int, int], duration: int,
             sort: bool = False, empty: tuple[int, ...] = ()) -> list[np.ndarray]:
    """``B`` random event streams over a ``(C, H, W)`` sensor (unsorted unless ``sort``)."""
    out = []
    for b in range(B):
        k = 0 if b in empty else n
        ev = np.zeros(k, EVENT_DTYPE)
        t = rng.integers(0, duration, k)
        ev["t"] = np.sort(t) if sort else t
        ev["x"], ev["y"] = rng.integers(0, shape[2], k), rng.integers(0, shape[1], k)
        ev["p"] = rng.integers(0, 2, k) if shape[0] == 2 else rng.choice(np.array([-1, 1]), k)
        out.append(ev)
    return out


def _event_batch(rng: np.random.Generator, T: int, B: int, n: int, shape: tuple[int, int, int],
                 **kw: Any) -> EventBatch:
    duration = 10_000
    ev = _streams(rng, B, n, shape, duration, **kw)
    return EventBatch(events_to_dense(ev, T, float(duration), shape), ev, float(duration))


def parameter_sets(params: dict[str, torch.Tensor], gen: torch.Generator, S: int) -> dict[str, torch.Tensor]:
    """``S`` sets around ``params``: other scales (so other per-layer quantization scales), noise,
    and one set with a single large weight (all others quantize to few levels)."""
    out = {}
    for k, v in params.items():
        sets = [v]
        for s in range(1, S):
            w = v * (0.5 + 1.5 * float(torch.rand(1, generator=gen))) + 0.2 * torch.randn(v.shape, generator=gen)
            if s == S - 1:
                w = w.clone()
                w.view(-1)[0] = 10 * float(w.abs().max())
            sets.append(w)
        out[k] = torch.stack(sets)
    return out


def _conv_pool_dense(gen: torch.Generator, reset: str, v_min: float | None, pool_mode: str) -> tuple:
    """conv 3x3 / pool 2 / conv 3x3 stride 2 / flatten / dense."""
    r = lambda: float(torch.rand(1, generator=gen))  # noqa: E731
    c1, c2 = 3, 4
    first = (Conv2d("a", None, 2, c1, (3, 3), (1, 1), (1, 1)), iaf(0.5 + r(), reset, v_min),
             Pool2d((2, 2), (2, 2), pool_mode), Conv2d("b", None, c1, c2, (3, 3), (2, 2), (1, 1)),
             iaf(0.5 + r(), reset, v_min), Flatten())
    flat = int(np.prod(NetworkSpec(first[:5], (2, 11, 11)).output_shape))
    spec = NetworkSpec(first + (Dense("c", None, flat, 5), iaf(0.5 + r(), reset, v_min)), (2, 11, 11))
    params = {"a": torch.rand(c1, 2, 3, 3, generator=gen) - 0.3, "b": torch.rand(c2, c1, 3, 3, generator=gen) - 0.3,
              "c": torch.rand(5, flat, generator=gen) - 0.3}
    return spec, params


def _input_pool_strided(gen: torch.Generator, reset: str, v_min: float | None) -> tuple:
    """input sum pool 2, conv 2x2 stride 2, two dense layers."""
    r = lambda: float(torch.rand(1, generator=gen))  # noqa: E731
    spec = NetworkSpec((Pool2d((2, 2), (2, 2), "sum"), Conv2d("a", None, 2, 3, (2, 2), (2, 2), (0, 0)),
                        iaf(0.5 + r(), reset, v_min), Flatten(), Dense("b", None, 3 * 2 * 2, 6),
                        iaf(0.5 + r(), reset), Dense("c", None, 6, 3), iaf(0.3 + r(), reset, v_min)), (2, 9, 8))
    params = {"a": torch.rand(3, 2, 2, 2, generator=gen) - 0.3, "b": torch.rand(6, 12, generator=gen) - 0.3,
              "c": torch.rand(3, 6, generator=gen) - 0.2}
    return spec, params


def _receptive(gen: torch.Generator, kernel: tuple, stride: tuple, padding: tuple, hw: tuple, pool: int) -> tuple:
    """one (pooled) strided, padded conv, then a dense layer."""
    layers: tuple = (Pool2d((pool, pool), (pool, pool), "sum"),) if pool > 1 else ()
    layers += (Conv2d("a", None, 2, 3, kernel, stride, padding), iaf(0.6))
    flat = int(np.prod(NetworkSpec(layers, (2, *hw)).output_shape))
    spec = NetworkSpec(layers + (Flatten(), Dense("b", None, flat, 4), iaf(0.8, "zero", -1.0)), (2, *hw))
    params = {"a": torch.rand(3, 2, *kernel, generator=gen) - 0.25, "b": torch.rand(4, flat, generator=gen) - 0.3}
    return spec, params


def _cil_spl_net(gen: torch.Generator, channels: tuple = (8, 16, 16, 32, 32)) -> tuple:
    """The CIL-SPL benchmark's network (input sum pool 2, 5 conv, 1 dense; 2x34x34), random weights
    (uniform, 2.5 / sqrt(fan-in), slightly excitatory) strong enough that every layer spikes."""
    c1, c2, c3, c4, c5 = channels
    spec = NetworkSpec((Pool2d((2, 2), (2, 2), "sum"),
                        Conv2d("w1", None, 2, c1, (3, 3), (1, 1), (1, 1)), iaf(1.0), Pool2d((2, 2), (2, 2), "avg"),
                        Conv2d("w2", None, c1, c2, (3, 3), (1, 1), (1, 1)), iaf(1.0),
                        Conv2d("w3", None, c2, c3, (3, 3), (2, 2), (1, 1)), iaf(1.0, v_min=-2.0),
                        Conv2d("w4", None, c3, c4, (3, 3), (1, 1), (1, 1)), iaf(1.0, "zero"),
                        Conv2d("w5", None, c4, c5, (3, 3), (2, 2), (1, 1)), iaf(1.0),
                        Flatten(), Dense("w6", None, c5 * 4, 10), iaf(1.0)), (2, 34, 34))
    shapes = {"w1": (c1, 2, 3, 3), "w2": (c2, c1, 3, 3), "w3": (c3, c2, 3, 3), "w4": (c4, c3, 3, 3),
              "w5": (c5, c4, 3, 3), "w6": (10, c5 * 4)}
    params = {}
    for k, shp in shapes.items():
        fan_in = int(np.prod(shp[1:]))
        params[k] = (torch.rand(shp, generator=gen) * 2 - 0.9) * (2.5 / fan_in ** 0.5)
    return spec, params


def cases() -> Iterator[Case]:
    """All cases, in a fixed order."""
    gen = torch.Generator().manual_seed(2026)
    rng = np.random.default_rng(2026)
    for i, (reset, v_min, mode) in enumerate([("subtract", None, "sum"), ("zero", -2.0, "avg"),
                                              ("subtract", -1.0, "avg"), ("zero", None, "sum")]):
        spec, params = _conv_pool_dense(gen, reset, v_min, mode)
        yield Case(f"conv-pool-dense-{i}", spec, params,
                   [_dense_counts(gen, 7, 4, spec.input_shape, 0.15, 3), _event_batch(rng, 6, 4, 250, (2, 11, 11))])
        yield Case(f"conv-pool-dense-{i}-sets", spec, parameter_sets(params, gen, 4),
                   [_dense_counts(gen, 5, 3, spec.input_shape, 0.2, 2)], n_sets=4)
    for i, (reset, v_min) in enumerate([("subtract", None), ("zero", -3.0)]):
        spec, params = _input_pool_strided(gen, reset, v_min)
        yield Case(f"input-pool-strided-{i}", spec, params,
                   [_dense_counts(gen, 8, 5, spec.input_shape, 0.2, 2),
                    _event_batch(rng, 5, 5, 300, (2, 9, 8), empty=(1, 4))])
        yield Case(f"input-pool-strided-{i}-sets", spec, parameter_sets(params, gen, 3),
                   [_event_batch(rng, 4, 3, 200, (2, 9, 8), sort=True)], n_sets=3)
    for i, (kernel, stride, padding, hw, pool) in enumerate([
            ((5, 3), (4, 2), (4, 1), (11, 9), 1), ((1, 4), (2, 4), (0, 3), (7, 10), 1),
            ((4, 4), (1, 1), (3, 2), (6, 5), 1), ((3, 3), (8, 8), (2, 2), (20, 20), 1),
            ((16, 16), (8, 4), (0, 0), (32, 24), 1), ((3, 3), (1, 2), (1, 1), (32, 32), 4),
            ((2, 2), (1, 1), (0, 0), (40, 40), 8)]):
        spec, params = _receptive(gen, kernel, stride, padding, hw, pool)
        yield Case(f"receptive-{i}", spec, params, [_dense_counts(gen, 5, 3, spec.input_shape, 0.3, 2)])
    # flat dense inputs (n,) with a 1-channel event view impossible: dense counts only
    spec = NetworkSpec((Dense("a", None, 12, 20), iaf(1.0, "subtract", -1.0), Dense("b", None, 20, 16), iaf(0.7, "zero"),
                        Dense("c", None, 16, 4), iaf(1.0)), (12,))
    params = {"a": torch.rand(20, 12, generator=gen) - 0.2, "b": torch.rand(16, 20, generator=gen) - 0.35,
              "c": torch.rand(4, 16, generator=gen) - 0.3}
    yield Case("dense-flat", spec, params, [_dense_counts(gen, 9, 6, (12,), 0.3, 4)])
    yield Case("dense-flat-sets", spec, parameter_sets(params, gen, 6), [_dense_counts(gen, 6, 4, (12,), 0.3, 3)], n_sets=6)
    # a 1-channel sensor: both polarities go to channel 0
    spec = NetworkSpec((Conv2d("a", None, 1, 4, (3, 3), (1, 1), (0, 0)), iaf(0.8), Flatten(),
                        Dense("b", None, 4 * 6 * 6, 3), iaf(1.2)), (1, 8, 8))
    params = {"a": torch.rand(4, 1, 3, 3, generator=gen) - 0.3, "b": torch.rand(3, 144, generator=gen) - 0.4}
    yield Case("one-channel-events", spec, params, [_event_batch(rng, 4, 3, 180, (1, 8, 8))])
    # 16-bit saturation both ways, and a lower bound far above the threshold (state beyond 16 bits)
    spec = NetworkSpec((Dense("a", None, 3, 2), iaf(1.0), Dense("b", None, 2, 2), iaf(1.0, v_min=-2.0)), (3,))
    params = {"a": torch.tensor([[-1.0, 1.0, 0.5], [1.0, -1.0, 0.2]]), "b": torch.tensor([[1.0, -0.5], [-1.0, 0.3]])}
    x = torch.zeros(700, 2, 3)
    x[:320, 0, 0], x[320:, 0, 1], x[:, 1, 2] = 1, 1, 2
    x[400:420, 1, 0] = 3
    yield Case("saturation", spec, params, [x])
    spec = NetworkSpec((Dense("a", None, 2, 3), iaf(1000.0, v_min=1500.0), Dense("b", None, 3, 2),
                        iaf(900.0, "zero", v_min=950.0)), (2,))
    params = {"a": torch.tensor([[1.0, -1.0], [0.5, 0.25], [-0.5, 1.0]]), "b": torch.tensor([[1.0, -1.0, 0.5],
                                                                                                [0.1, 0.2, -0.3]])}
    yield Case("lower-bound-above-threshold", spec, params, [_dense_counts(gen, 6, 3, (2,), 0.5, 3)])
    # the benchmark-sized network on random event streams, one set and three
    spec, params = _cil_spl_net(gen)
    yield Case("cil-spl-net", spec, params, [_event_batch(rng, 8, 3, 1500, (2, 34, 34), sort=True)])
    yield Case("cil-spl-net-sets", spec, parameter_sets(params, gen, 3),
               [_dense_counts(gen, 4, 2, (2, 34, 34), 0.05, 2)], n_sets=3)


def observe(backend: Any, case: Case) -> list[tuple[str, Observation]]:
    """``(label, observation)`` for every input of ``case``, recorded and not."""
    dep = backend.transfer(case.spec, case.params, case.n_sets)
    out = []
    for i, x in enumerate(case.inputs):
        for record in (False, True):
            out.append((f"{case.name}/in{i}/rec{int(record)}", backend.forward(dep, x, record=record)))
    return out


def observation_arrays(obs: Observation) -> dict[str, np.ndarray]:
    """Everything an observation holds except the wall time, as numpy arrays."""
    d = {"output": obs.output.numpy()}
    for k, lo in enumerate(obs.layers or []):
        d[f"layer{k}"] = lo.spikes.numpy()
        if lo.membrane is not None:
            d[f"membrane{k}"] = lo.membrane.numpy()
    for k, v in sorted(obs.meta.items()):
        if k == "seconds":
            continue
        d[f"meta.{k}"] = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return d


def digest(obs: Observation) -> str:
    """SHA-256 over every array of :func:`observation_arrays` (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for k, a in observation_arrays(obs).items():
        a = np.ascontiguousarray(a)
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def spike_total(obs: Observation) -> int:
    """All spikes of an observation (output plus recorded layers): a degenerate-case guard."""
    return int(obs.output.sum()) + sum(int(lo.spikes.sum()) for lo in (obs.layers or []))
