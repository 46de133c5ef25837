"""The hardware session: the one object through which cil talks to a chip.

Every weight transfer and every forward on hardware — training steps, evaluation, MH proposal
scoring, fidelity checks — goes through :meth:`HardwareSession.run`, which

1. calls the chip hooks it is handed (:class:`~cil_core.hardware.hooks.ChipHooks`: the
   capacity check, ``cil_transfer`` and ``cil_forward``; by default the backend's own methods),
2. validates what comes back (a :class:`Deployment`; an :class:`Observation` whose output and
   recorded layers have the expected shapes and are finite),
3. turns any unexpected failure into a :class:`~cil_core.errors.HardwareError` naming the
   backend, retries it ``retries`` times and enforces ``timeout`` per call,
4. splits a request for ``S`` parameter sets into calls of at most ``backend.max_sets`` sets,
   concatenating outputs *and* layer observations along the set dimension,
5. counts calls, seconds and sample-inferences, separately per purpose (``"train"``,
   ``"eval"``, ...).

Trainer and algorithms use only this object, so a backend that forwards calls to another
process or host (``ray:``, :mod:`cil_ray`) changes nothing above it. Hook arguments are the
network description and plain tensors, never the user's module. Weight transfers alone
(:meth:`HardwareSession.deploy`) get the same timeout, retries and counting as full calls.
"""

from __future__ import annotations

import atexit
import contextvars
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import torch

from ..data import as_dense
from ..errors import CilError, HardwareError, PluginError
from ..network.finite import all_finite
from ..network.description import NetworkSpec
from ..network.neuron import Neuron
from .backend import Deployment, realised_neurons
from .hooks import BackendHooks, ChipHooks, backend_name
from .observation import LayerObservation, Observation
from .transfer import chip_spec, prepare_for_backend

_R = TypeVar("_R")


@dataclass(frozen=True)
class CallContext:
    """What the session knows about the call in progress, readable by the backend it calls
    (:func:`current_call`): the purpose it is counted under (``"train"``, ``"eval"``, ...),
    the session's ``timeout`` in seconds (``None``: no limit) and the attempt (0 for the first
    try, then 1, 2, ... for the retries).

    A backend that forwards calls elsewhere passes these on (``ray:`` gives its workers the
    purpose and enforces the timeout itself by killing a hung worker)."""

    purpose: str
    timeout: float | None
    attempt: int


_CALL: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("cil_hardware_call", default=None)


def current_call() -> CallContext | None:
    """The :class:`CallContext` of the session call this code runs in, or ``None`` outside one."""
    return _CALL.get()


@dataclass
class SessionStats:
    """What a session has done: backend calls (one transfer + forward each), failed attempts
    (retried or not), seconds spent in calls, and sample-inferences (samples x parameter sets)
    per purpose."""

    calls: int = 0
    failures: int = 0
    seconds: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)
    calls_by_purpose: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "failures": self.failures, "seconds": self.seconds,
                "samples": dict(self.samples), "calls_by_purpose": dict(self.calls_by_purpose)}


class HardwareSession:
    """Owns every call to one backend.

    Args:
        backend: a :class:`~cil_core.hardware.backend.Backend` (or any object a plugin's
            ``cil_transfer``/``cil_forward`` hooks serve).
        retries: how many times a failed call (a :class:`HardwareError`: the backend raised,
            returned something malformed or non-finite, or timed out) is retried. cil's other
            errors (a model that does not fit, a bad input) are never retried.
        timeout: seconds one call (transfer + forward) may take (``None``: no limit). A backend
            with ``enforces_timeout = True`` receives it through :func:`current_call` and
            must raise a :class:`HardwareError` itself when a call takes longer (it can stop
            what it waits on, e.g. kill a remote worker); for any other backend the session
            runs the call in a thread and abandons it after ``timeout`` seconds.
        hooks: the chip hooks to call (:class:`~cil_core.hardware.hooks.ChipHooks`). Default:
            :class:`~cil_core.hardware.hooks.BackendHooks`, the backend's own methods; the
            plugin registry's (``get_manager().chip_hooks()``, what ``cil.HardwareSession``,
            the trainer and the fidelity report use) also asks every registered plugin.
    """

    def __init__(self, backend: Any, *, retries: int = 0, timeout: float | None = None,
                 hooks: ChipHooks | None = None) -> None:
        self.backend = backend
        self.hooks: ChipHooks = BackendHooks() if hooks is None else hooks
        self.retries = int(retries)
        self.timeout = timeout
        self.stats = SessionStats()
        #: the deployment of the last weight transfer (what the chip holds: CIL-SPL's software pass
        #: and the fidelity report read its realised neuron parameters, :func:`realised_neurons`)
        self.last_deployment: Deployment | None = None

    @property
    def name(self) -> str:
        return backend_name(self.backend)

    @property
    def max_sets(self) -> int | None:
        return getattr(self.backend, "max_sets", 1)

    @property
    def observes_layers(self) -> bool:
        return bool(getattr(self.backend, "observes_layers", False))

    @property
    def observes_membrane(self) -> bool:
        return bool(getattr(self.backend, "observes_membrane", False))

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.backend, "stochastic", False))

    # ------------------------------------------------------------------ single hook calls
    def check(self, spec: NetworkSpec) -> None:
        """Ask the backend whether ``spec`` fits (raises
        :class:`~cil_core.errors.BackendCapacityError` naming the limit). A backend without a
        ``check`` method accepts everything here and may still refuse at transfer time."""
        self._hook("capacity check", self.hooks.check, spec=chip_spec(self.backend, spec), required=False)

    def transfer(self, spec: NetworkSpec, params: Mapping[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """One weight transfer through the ``cil_transfer`` hook, checked. No retry.

        The backend receives the network as a chip holds it
        (:func:`~cil_core.hardware.transfer.prepare_for_backend`: dropout removed, batch norm
        folded unless it lists ``"batchnorm"``, features checked against its capabilities)."""
        name = self.name
        spec, prepared = prepare_for_backend(self.backend, spec, params, n_sets)
        dep = self._hook("weight transfer", self.hooks.transfer, spec=spec, params=prepared, n_sets=n_sets)
        if not isinstance(dep, Deployment):
            raise HardwareError(f"backend '{name}' returned {type(dep).__name__} from weight transfer, "
                                "not a Deployment", name)
        self.last_deployment = dep
        return dep

    def deploy(self, spec: NetworkSpec, params: Mapping[str, torch.Tensor], purpose: str = "deploy") -> Deployment:
        """A weight transfer whose deployment shows what the chip holds, with the session's
        timeout and retries, counted as a call under ``purpose`` (no samples). A backend whose
        ``transfer`` only records the tensors for a later remote call (``chip["deferred"]``, e.g.
        ``ray:``) is asked for the real one through its ``materialize(deployment)`` method."""
        return self._with_retries(lambda: self._deploy_once(spec, params), purpose, lambda _: 0, "weight transfer")

    def _deploy_once(self, spec: NetworkSpec, params: Mapping[str, torch.Tensor]) -> Deployment:
        dep = self.transfer(spec, params)
        materialize = getattr(self.backend, "materialize", None)
        if dep.chip.get("deferred") and callable(materialize):
            dep = materialize(dep)
            if not isinstance(dep, Deployment):
                raise HardwareError(f"backend '{self.name}' returned {type(dep).__name__} from materialize(), "
                                    "not a Deployment", self.name)
        return dep

    def realised_neurons(self, spec: NetworkSpec) -> list[Neuron] | None:
        """``spec``'s neuron layers with the values the chip realised at the last weight transfer
        (:func:`~cil_core.hardware.backend.realised_neurons`; ``None``: the software's)."""
        return realised_neurons(spec, self.last_deployment)

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """One forward through the ``cil_forward`` hook, with the observation validated. No retry."""
        obs = self._hook("forward", self.hooks.forward, deployment=deployment, inputs=inputs, record=record)
        validate_observation(self.name, deployment.spec, deployment.n_sets, inputs, obs, record)
        return obs

    def _hook(self, stage: str, hook: Callable[..., Any], required: bool = True, **kwargs: Any) -> Any:
        """Call one chip hook for this backend: an exception that is not cil's own becomes a
        :class:`HardwareError` naming the backend and the stage; no answer is a
        :class:`PluginError` (unless not ``required``: a backend nobody checks accepts everything
        here and may still refuse at transfer)."""
        try:
            result = hook(self.backend, **kwargs)
        except CilError:
            raise
        except Exception as exc:
            raise HardwareError(f"backend '{self.name}' failed during {stage}: {exc!r}", self.name) from exc
        if result is None and required:
            raise PluginError(f"no plugin implements {stage} for backend {self.backend!r}")
        return result

    # ------------------------------------------------------------------ the one entry point
    def run(self, spec: NetworkSpec, params: Mapping[str, torch.Tensor], inputs: Any, *,
            n_sets: int | None = None, record: bool = False, purpose: str = "train") -> Observation:
        """Transfer ``params`` and run ``inputs``: the observation of one network, or of
        ``n_sets`` parameter sets (each tensor of ``params`` then has a leading set dimension and
        the output is ``[T, S, B, *out]``), in as few calls as ``backend.max_sets`` allows."""
        cap = self.max_sets
        if n_sets is None or cap is None or cap > 1 and cap >= n_sets:  # max_sets=1: never n_sets, even 1
            return self._call_with_retries(spec, params, inputs, n_sets, record, purpose)
        parts: list[Observation] = []
        for lo in range(0, n_sets, cap):
            hi = min(n_sets, lo + cap)
            if hi - lo == 1 and cap == 1:
                single = self._call_with_retries(spec, {k: v[lo] for k, v in params.items()}, inputs, None,
                                                 record, purpose)
                parts.append(_add_set_dim(single))
            else:
                parts.append(self._call_with_retries(spec, {k: v[lo:hi] for k, v in params.items()}, inputs,
                                                     hi - lo, record, purpose))
        return _concat_sets(parts)

    def _call_with_retries(self, spec: NetworkSpec, params: Mapping[str, torch.Tensor], inputs: Any,
                           n_sets: int | None, record: bool, purpose: str) -> Observation:
        """One transfer + forward with the session's timeout and retries, counted under
        ``purpose`` with its sample-inferences (samples x sets)."""
        def samples(obs: Observation) -> int:
            return int(obs.output.shape[2 if n_sets is not None else 1]) * (n_sets or 1)

        return self._with_retries(lambda: self.forward(self.transfer(spec, params, n_sets), inputs, record),
                                  purpose, samples, "weight transfer + forward")

    def _with_retries(self, work: Callable[[], _R], purpose: str, samples: Callable[[_R], int], what: str) -> _R:
        """Run ``work`` (a call to the backend) under the session's timeout, retrying a
        :class:`HardwareError` ``retries`` times; count the call, its seconds and ``samples(result)``."""
        last: HardwareError | None = None
        for attempt in range(self.retries + 1):
            t0 = time.perf_counter()
            token = _CALL.set(CallContext(purpose, self.timeout, attempt))
            try:
                result = self._timed(work, what)
            except HardwareError as exc:
                self.stats.failures += 1
                last = exc
                continue
            finally:
                _CALL.reset(token)
                self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.calls_by_purpose[purpose] = self.stats.calls_by_purpose.get(purpose, 0) + 1
            n = samples(result)
            if n:
                self.stats.samples[purpose] = self.stats.samples.get(purpose, 0) + n
            return result
        assert last is not None
        if self.retries:
            raise HardwareError(f"{last} (failed {self.retries + 1} times)", last.backend) from last
        raise last

    def _timed(self, work: Callable[[], _R], what: str) -> _R:
        """``work()``, in a worker thread when a ``timeout`` is set.

        Python cannot stop a thread: a call that times out is abandoned (its result discarded)
        and keeps running until the backend returns, so a hardware backend whose calls may hang
        should also time out on its own I/O — and declare ``enforces_timeout = True``: the
        session then calls it directly and leaves the timeout to it."""
        if self.timeout is None or getattr(self.backend, "enforces_timeout", False):
            return work()
        result: dict[str, Any] = {}
        grad = torch.is_grad_enabled()
        # numba's thread count is per thread too (torch's is per process): a backend's parallel numba
        # kernels (speck, xylo) would otherwise run on every core whatever the caller set
        numba = sys.modules.get("numba")
        numba_threads = numba.get_num_threads() if numba is not None else None

        def run() -> None:
            try:
                if numba_threads is not None:
                    numba.set_num_threads(numba_threads)
                with torch.set_grad_enabled(grad):  # grad mode is per thread
                    result["value"] = work()
            except BaseException as exc:  # re-raised in the caller's thread
                result["exc"] = exc

        # the thread runs in a copy of this context, so the backend sees the call's CallContext
        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,),
                                  name=f"cil-hardware-call-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()] + [worker]
            raise HardwareError(f"backend '{self.name}' did not answer within {self.timeout:g} s "
                                f"({what}); the call was abandoned", self.name)
        if "exc" in result:
            raise result["exc"]
        return result["value"]

    def __repr__(self) -> str:
        return f"<HardwareSession {self.name!r} calls={self.stats.calls}>"


#: calls abandoned after a timeout that may still be running; joined (for a bounded time) when
#: the interpreter exits, because a daemon thread still inside a native library (torch, numba)
#: during finalization can abort the process ("terminate called without an active exception")
_ABANDONED: list[threading.Thread] = []
_EXIT_WAIT_S = 30.0


@atexit.register
def _join_abandoned_calls() -> None:
    deadline = time.monotonic() + _EXIT_WAIT_S
    for worker in _ABANDONED:
        worker.join(max(0.0, deadline - time.monotonic()))


def validate_observation(name: str, spec: NetworkSpec, n_sets: int | None, inputs: Any, obs: Any, record: bool) -> None:
    """Check an observation's type, time/set/batch dimensions, output shape and finiteness, and
    those of the recorded layers. Raises :class:`HardwareError` naming the backend."""
    if not isinstance(obs, Observation) or not isinstance(obs.output, torch.Tensor):
        raise HardwareError(f"backend '{name}' returned {type(obs).__name__}, not an Observation with a tensor output", name)
    x = as_dense(inputs)
    T, B = x.shape[:2]
    sets = () if n_sets is None else (n_sets,)
    want = (T, *sets, B, *spec.output_shape)
    if tuple(obs.output.shape) != want:
        raise HardwareError(f"backend '{name}' returned output of shape {tuple(obs.output.shape)}, expected {want}", name)
    if not all_finite(obs.output):
        raise HardwareError(f"backend '{name}' returned non-finite output values (NaN or inf)", name)
    if not record or obs.layers is None:
        return
    all_shapes = spec.shapes()
    shapes = [all_shapes[i] for i, _ in spec.neuron_layers()]
    if len(obs.layers) != len(shapes):
        raise HardwareError(f"backend '{name}' observed {len(obs.layers)} layers, the network has {len(shapes)}", name)
    for k, (lo, shape) in enumerate(zip(obs.layers, shapes)):
        for what, t in (("spikes", lo.spikes), ("membrane", lo.membrane)):
            if t is None:
                continue
            if tuple(t.shape) != (T, *sets, B, *shape):
                raise HardwareError(f"backend '{name}': layer {k} {what} have shape {tuple(t.shape)}, "
                                    f"expected {(T, *sets, B, *shape)}", name)
            if not all_finite(t):
                raise HardwareError(f"backend '{name}': layer {k} {what} hold non-finite values", name)


def _add_set_dim(obs: Observation) -> Observation:
    layers = None if obs.layers is None else [
        LayerObservation(lo.spikes.unsqueeze(1), None if lo.membrane is None else lo.membrane.unsqueeze(1))
        for lo in obs.layers]
    return Observation(obs.output.unsqueeze(1), layers, dict(obs.meta))


def concat_observations(parts: list[Observation], dim: int, meta: dict[str, Any]) -> Observation:
    """Observations joined along ``dim`` (1: parameter sets of ``[T, S, B, ...]``; the batch
    dimension otherwise): outputs and every layer's spikes, membranes where all parts have
    them, layers only where all parts recorded them."""
    out = torch.cat([p.output for p in parts], dim=dim)
    layers = None
    if all(p.layers is not None for p in parts):
        layers = []
        for k in range(len(parts[0].layers)):  # type: ignore[arg-type]
            spikes = torch.cat([p.layers[k].spikes for p in parts], dim=dim)  # type: ignore[index]
            mems = [p.layers[k].membrane for p in parts]  # type: ignore[index]
            membrane = None if any(m is None for m in mems) else torch.cat(mems, dim=dim)  # type: ignore[arg-type]
            layers.append(LayerObservation(spikes, membrane))
    return Observation(out, layers, meta)


def _concat_sets(parts: list[Observation]) -> Observation:
    return concat_observations(parts, 1, parts[0].meta if len(parts) == 1 else {"calls": [p.meta for p in parts]})


__all__ = ["HardwareSession", "SessionStats", "CallContext", "current_call", "validate_observation", "backend_name",
           "concat_observations"]
