"""The backend contract as a test: :func:`check_backend`.

Call it from your backend's tests (it needs no test framework: it raises
:class:`AssertionError` saying which part of the contract broke)::

    from cil_core.testing import check_backend

    def test_my_chip_meets_the_backend_contract():
        check_backend(MyChip())                     # a small default network (6-8-4 LIF, no biases)
        check_backend(MyChip(), spec, params, x,    # a network of your own, and one that must not fit
                      too_big=huge_spec, limit="neurons per layer")

Every call goes through a :class:`~cil_core.hardware.HardwareSession`, exactly as a trainer
makes it. What is checked (``T`` time bins, ``B`` samples):

1. **Transfer** returns a :class:`~cil_core.hardware.Deployment` for the network whose
   ``params`` hold every tensor of ``spec.parameter_names()`` with the given shape (a leading
   set dimension with ``n_sets``), finite; the caller's ``params`` are not modified.
2. **Output** ``[T, B, *spec.output_shape]``, finite, and not silent everywhere (a silent
   network could not tell a working backend from a broken one: pass ``params``/``inputs`` that
   make it active).
3. **No state leaks**: the same deployment run twice gives the same output, also after another
   deployment ran in between (the forward runs *its* deployment); a sample's output depends
   neither on the other samples of the batch nor on its position in it (the batch is re-run
   with samples duplicated and reordered).
4. **Observations** (``record=True``): with ``observes_layers`` one well-shaped
   :class:`~cil_core.hardware.LayerObservation` per neuron layer (with membranes if
   ``observes_membrane``), the last layer's spikes equal the output of a spiking network, and
   recording does not change the output.
5. **Parameter sets**: ``n_sets=S`` gives ``[T, S, B, *out]`` (``S`` = 1 and 3; the session
   splits requests by ``backend.max_sets``, so a ``max_sets=1`` backend never receives
   ``n_sets``), and set ``s`` equals a single call with set ``s``'s parameters (layer
   observations too).
6. **Capacity** (with ``too_big``): a network that must not fit raises
   :class:`~cil_core.errors.BackendCapacityError` from ``check`` or at transfer, whose message
   contains ``limit`` when given.

The comparisons in 3-5 need identical calls to give identical outputs: they are skipped for a
``stochastic`` backend (check a stochastic chip with its noise switched off as well). Outputs
are compared with a tolerance of 1e-5 (exact for spike counts; float rounding of a membrane
readout passes).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from .data import as_dense
from .errors import BackendCapacityError, CilError, HardwareError
from .hardware import Backend, Deployment, Observation
from .hardware.backend import mirror_traits
from .network.description import NetworkSpec, Neuron
from .network.reference import feedforward
from .plugin.session import HardwareSession

__all__ = ["check_backend", "default_case", "synaptic_case", "random_parameters", "random_inputs", "FaultyBackend"]

#: the parameter sets of check 3: set ``s`` is the given parameters times ``SET_FACTORS[s]``
SET_FACTORS = (1.0, 0.6, 1.6)


def default_case(seed: int = 0, *, T: int = 12, B: int = 6, **options: Any
                 ) -> tuple[NetworkSpec, dict[str, torch.Tensor], torch.Tensor]:
    """The network :func:`check_backend` uses when given none: a 6-8-4 leaky integrate-and-fire
    network without biases (:func:`~cil_core.network.reference.feedforward`, ``weight_gain=3``,
    seeded; ``options`` go to it, e.g. ``beta=1.0`` for a chip without leak), its parameters,
    and binary input spikes ``[T, B, 6]``."""
    options = {"weight_gain": 3.0, "seed": seed, **options}
    net = feedforward([6, 8, 4], **options)
    return net.spec, net.detached_parameters(), random_inputs(net.spec, seed, T=T, B=B)


def synaptic_case(seed: int = 0, *, T: int = 12, B: int = 6, alpha: float = 0.5, beta: float = 0.875,
                  **options: Any) -> tuple[NetworkSpec, dict[str, torch.Tensor], torch.Tensor]:
    """:func:`default_case` with a synaptic current in every neuron layer, for chips whose
    neurons all have one (e.g. Xylo): snntorch ``Synaptic`` semantics,
    :math:`i_t = \\alpha i_{t-1} + x_t`, :math:`v_t = \\beta v_{t-1} + i_t - S_{t-1}\\theta`; the defaults
    :math:`\\alpha = 1 - 2^{-1}`, :math:`\\beta = 1 - 2^{-3}` are bit-shift decays. ``options`` go to
    :func:`~cil_core.network.reference.feedforward` as in :func:`default_case`."""
    options = {"weight_gain": 3.0, "seed": seed, "beta": beta, **options}
    net = feedforward([6, 8, 4], **options)
    layers = tuple(l.with_(alpha=alpha) if isinstance(l, Neuron) else l for l in net.spec.layers)
    spec = NetworkSpec(layers, net.spec.input_shape, source="cil_core.testing.synaptic_case")
    return spec, net.detached_parameters(), random_inputs(spec, seed, T=T, B=B)


def random_parameters(spec: NetworkSpec, seed: int = 0, gain: float = 3.0) -> dict[str, torch.Tensor]:
    """Parameters for every tensor of ``spec``: weights uniform in :math:`\\pm` ``gain`` /
    sqrt(fan-in), biases zero."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for _, layer in spec.synaptic_layers():
        wshape, bshape = layer.param_shapes()  # type: ignore[union-attr]
        bound = gain / math.sqrt(max(1, math.prod(wshape[1:])))
        out[layer.weight] = (torch.rand(wshape, generator=g) * 2 - 1) * bound  # type: ignore[union-attr]
        if layer.bias is not None:  # type: ignore[union-attr]
            out[layer.bias] = torch.zeros(bshape)  # type: ignore[union-attr]
    return out


def random_inputs(spec: NetworkSpec, seed: int = 0, *, T: int = 12, B: int = 6, p: float = 0.3) -> torch.Tensor:
    """Binary input spikes ``[T, B, *spec.input_shape]``, each on with probability ``p``."""
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand((T, B, *spec.input_shape), generator=g) < p).float()


def check_backend(backend: Any, spec: NetworkSpec | None = None, params: Mapping[str, torch.Tensor] | None = None,
                  inputs: Any = None, *, seed: int = 0, too_big: NetworkSpec | None = None,
                  limit: str | None = None) -> None:
    """Assert that ``backend`` meets the backend contract (see the module docstring).

    Args:
        backend: a :class:`~cil_core.hardware.Backend`, or any object whose ``cil_transfer`` /
            ``cil_forward`` hooks a registered plugin serves.
        spec: the network to run (default: :func:`default_case`'s).
        params: its parameters (default: the default network's, or :func:`random_parameters`).
        inputs: ``[T, B, *spec.input_shape]`` or an :class:`~cil_core.EventBatch` (default:
            :func:`random_inputs`); ``B >= 2`` for the sample-independence check.
        seed: seeds the default network, parameters and inputs.
        too_big: a network the backend must refuse with a ``BackendCapacityError``.
        limit: text the refusal's message must contain (the limit it names).

    Raises:
        AssertionError: naming the backend and the broken part of the contract.
    """
    if spec is None:
        if params is not None or inputs is not None:
            raise ValueError("check_backend: params and inputs need the spec they belong to")
        spec, params, inputs = default_case(seed)
    params = dict(random_parameters(spec, seed) if params is None else params)
    x = random_inputs(spec, seed) if inputs is None else inputs
    session = HardwareSession(backend)
    check = _Checker(session, spec, x)
    name = session.name

    # 1. transfer
    dep = check.transfer(params, None)
    # 2. output
    out = check.forward(dep, x, False, "forward").output
    if not bool((out != 0).any()):
        raise AssertionError(f"backend '{name}': the output is zero everywhere for the check's network and inputs, "
                             "so the other checks could not tell a broken backend from a working one; pass params "
                             "or inputs that make the network active")
    deterministic = not session.stochastic
    B = int(as_dense(x).shape[1])
    # 3. no state leaks between calls, between deployments, between samples
    if deterministic:
        check.same(check.forward(dep, x, False, "second forward").output, out,
                   "the same deployment run twice gives different outputs: state (membranes, currents, counters) "
                   "leaks from one call to the next; reset it before every batch")
        other = check.transfer({k: -v for k, v in params.items()}, None)
        check.forward(other, x, False, "forward of a second deployment")
        check.same(check.forward(dep, x, False, "forward after another deployment").output, out,
                   "a deployment run after another one gives another output: the forward must run its own "
                   "deployment (re-write its weights when the device holds another deployment's)")
        if B >= 2:
            idx = [(B - 1 - i) // 2 for i in range(B)]  # samples duplicated and reordered
            check.same(check.forward(dep, _select(x, idx), False, "forward of a reordered batch").output,
                       out[:, idx], "a sample's output depends on the other samples of the batch or on its "
                       "position in it: keep one state per sample")
    # 4. observations
    rec = check.forward(dep, x, True, "forward(record=True)")
    neurons = [n for _, n in spec.neuron_layers()]
    if session.observes_layers:
        check.layers(rec, neurons, None)
        if neurons[-1].output == "spikes":
            check.same(rec.layers[-1].spikes, rec.output,  # type: ignore[index]
                       "the last layer's recorded spikes differ from the output")
    if deterministic:
        check.same(rec.output, out, "record=True changes the output")
    # 5. parameter sets
    for S in (1, len(SET_FACTORS)):
        sets = {k: torch.stack([v * f for f in SET_FACTORS[:S]]) for k, v in params.items()}
        cap = session.max_sets
        if cap is None or cap > 1 and S <= cap:  # the backend itself receives n_sets=S
            check.transfer(sets, S)
        obs = check.run(sets, S, session.observes_layers)
        if session.observes_layers:
            check.layers(obs, neurons, S)
        if not deterministic:
            continue
        for s, f in enumerate(SET_FACTORS[:S]):
            single = check.run({k: v * f for k, v in params.items()}, None, session.observes_layers)
            what = f"with n_sets={S}, set {s} differs from a single call with its parameters"
            check.same(obs.output[:, s], single.output, what)
            for k, (a, b) in enumerate(zip(obs.layers or [], single.layers or [])):
                check.same(a.spikes[:, s], b.spikes, f"{what} (layer {k}'s spikes)")
    # 6. capacity
    if too_big is not None:
        check.refuses(too_big, seed, limit)


class _Checker:
    """The session calls of :func:`check_backend`, each turning a failure into an AssertionError."""

    def __init__(self, session: HardwareSession, spec: NetworkSpec, x: Any) -> None:
        self.session, self.spec, self.x = session, spec, x
        self.name = session.name
        dense = as_dense(x)
        self.T, self.B = int(dense.shape[0]), int(dense.shape[1])

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except BackendCapacityError as exc:
            raise AssertionError(f"backend '{self.name}': {what}: it cannot hold the check's network ({exc}); "
                                 "pass a spec (with params and inputs) it can hold") from exc
        except HardwareError as exc:
            raise AssertionError(f"backend '{self.name}': {what}: {exc}") from exc
        except CilError as exc:
            raise AssertionError(f"backend '{self.name}': {what}: {type(exc).__name__}: {exc}") from exc

    def transfer(self, params: Mapping[str, torch.Tensor], n_sets: int | None) -> Deployment:
        before = {k: v.detach().clone() for k, v in params.items()}
        dep = self._call(f"transfer (n_sets={n_sets})", self.session.transfer, self.spec, params, n_sets)
        self.unchanged(params, before, "transfer")
        spec = dep.spec
        assert spec is self.spec or (isinstance(spec, NetworkSpec) and spec.describe() == self.spec.describe()), (
            f"backend '{self.name}': the Deployment holds another network than the one transferred")
        assert dep.n_sets == n_sets, f"backend '{self.name}': Deployment.n_sets is {dep.n_sets}, expected {n_sets}"
        for k in self.spec.parameter_names():
            assert k in dep.params, (f"backend '{self.name}': Deployment.params lacks '{k}' (it must hold every "
                                     "tensor of spec.parameter_names(), as the chip realises it)")
            got, want = tuple(dep.params[k].shape), tuple(params[k].shape)
            assert got == want, f"backend '{self.name}': Deployment.params['{k}'] has shape {got}, expected {want}"
            assert bool(torch.isfinite(dep.params[k]).all()), (
                f"backend '{self.name}': Deployment.params['{k}'] holds non-finite values")
        return dep

    def forward(self, dep: Deployment, x: Any, record: bool, what: str) -> Observation:
        obs = self._call(what, self.session.forward, dep, x, record)
        self.shape(obs.output, None, "output")
        return obs

    def run(self, params: Mapping[str, torch.Tensor], n_sets: int | None, record: bool) -> Observation:
        before = {k: v.detach().clone() for k, v in params.items()}
        obs = self._call(f"run with n_sets={n_sets}", self.session.run, self.spec, params, self.x,
                         n_sets=n_sets, record=record)
        self.unchanged(params, before, f"a run with n_sets={n_sets}")
        self.shape(obs.output, n_sets, f"output with n_sets={n_sets}")
        return obs

    def shape(self, t: torch.Tensor, n_sets: int | None, what: str, feat: Sequence[int] | None = None) -> None:
        sets = () if n_sets is None else (n_sets,)
        want = (self.T, *sets, self.B, *(self.spec.output_shape if feat is None else feat))
        assert tuple(t.shape) == want, f"backend '{self.name}': {what} has shape {tuple(t.shape)}, expected {want}"
        assert bool(torch.isfinite(t).all()), f"backend '{self.name}': {what} holds non-finite values"

    def layers(self, obs: Observation, neurons: list[Neuron], n_sets: int | None) -> None:
        assert obs.layers is not None, (f"backend '{self.name}': observes_layers is set but forward(record=True) "
                                        "returned no layer observations")
        assert len(obs.layers) == len(neurons), (f"backend '{self.name}': {len(obs.layers)} layer observations, "
                                                 f"the network has {len(neurons)} neuron layers")
        shapes = self.spec.shapes()
        for k, ((i, _), lo) in enumerate(zip(self.spec.neuron_layers(), obs.layers)):
            self.shape(lo.spikes, n_sets, f"layer {k}'s spikes", shapes[i])
            if self.session.observes_membrane:
                assert lo.membrane is not None, (f"backend '{self.name}': observes_membrane is set but layer {k} "
                                                 "has no membrane")
                self.shape(lo.membrane, n_sets, f"layer {k}'s membrane", shapes[i])

    def unchanged(self, params: Mapping[str, torch.Tensor], before: Mapping[str, torch.Tensor], what: str) -> None:
        for k, v in before.items():
            assert torch.equal(params[k].detach(), v), f"backend '{self.name}': {what} modified the parameter '{k}'"

    def same(self, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        got, want = got.detach().double(), want.detach().double()
        if got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5):
            return
        if got.shape != want.shape:
            raise AssertionError(f"backend '{self.name}': {what} (shapes {tuple(got.shape)} and {tuple(want.shape)})")
        diff = (got - want).abs()
        raise AssertionError(f"backend '{self.name}': {what} ({int((diff > 1e-5).sum())} of {diff.numel()} values "
                             f"differ, by up to {float(diff.max()):.3g})")

    def refuses(self, spec: NetworkSpec, seed: int, limit: str | None) -> None:
        try:
            self.session.check(spec)
            self.session.run(spec, random_parameters(spec, seed), random_inputs(spec, seed, T=2, B=1))
        except BackendCapacityError as exc:
            assert limit is None or limit in str(exc), (
                f"backend '{self.name}' refused the network that must not fit, but its message does not name "
                f"the limit {limit!r}: {exc}")
        except CilError as exc:
            raise AssertionError(f"backend '{self.name}' refused the network that must not fit with "
                                 f"{type(exc).__name__}, not BackendCapacityError: {exc}") from exc
        else:
            raise AssertionError(f"backend '{self.name}' accepted a network that must not fit (check() and a "
                                 "transfer + forward raised no BackendCapacityError)")


def _select(inputs: Any, idx: list[int]) -> Any:
    """Samples ``idx`` of a batch (a tensor, or anything with ``select``, e.g. an EventBatch)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:, idx]
    return inputs.select(idx)


class FaultyBackend(Backend):
    """Wraps a :class:`~cil_core.hardware.Backend` and makes each forward fail with probability
    ``rate``, in one of the ways real chips fail: raise (``"raise"``), answer late
    (``"hang"``, ``hang_s`` seconds: set a session ``timeout`` below it), return NaN (``"nan"``)
    or an output of the wrong shape (``"shape"``). Its own generator decides, so the faults
    never touch the training's random streams; ``faults`` counts them by kind, ``calls`` the
    forwards. For testing that training survives a flaky chip (retries, timeouts, resume)."""

    KINDS = ("raise", "hang", "nan", "shape")

    def __init__(self, inner: Backend, rate: float = 0.1, seed: int = 0, hang_s: float = 0.5,
                 kinds: Sequence[str] = KINDS) -> None:
        bad = [k for k in kinds if k not in self.KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown fault kinds {bad}; use some of {self.KINDS}")
        self.inner, self.rate, self.hang_s, self.kinds = inner, float(rate), float(hang_s), tuple(kinds)
        self.name = f"faulty:{getattr(inner, 'name', '') or type(inner).__name__}"
        mirror_traits(self, inner)
        self.gen = torch.Generator().manual_seed(seed)
        self.faults = {k: 0 for k in self.KINDS}
        self.calls = 0

    def check(self, spec: NetworkSpec) -> None:
        check = getattr(self.inner, "check", None)
        if callable(check):
            check(spec)

    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        return self.inner.transfer(spec, params, n_sets)

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        self.calls += 1
        obs = self.inner.forward(deployment, inputs, record)
        if float(torch.rand(1, generator=self.gen)) >= self.rate:
            return obs
        kind = self.kinds[int(torch.randint(0, len(self.kinds), (1,), generator=self.gen))]
        self.faults[kind] += 1
        if kind == "raise":
            raise OSError("injected fault: USB transfer failed")
        if kind == "hang":
            time.sleep(self.hang_s)
            return obs
        if kind == "nan":
            return Observation(torch.full_like(obs.output, float("nan")))
        return Observation(obs.output[..., :-1])
