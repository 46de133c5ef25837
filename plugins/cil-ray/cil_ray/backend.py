"""The ``ray:<backend>`` wrapper: any cil backend on Ray workers.

``cil_core.make_backend("ray:speck", workers=2)`` builds :class:`RayBackend` ``("speck",
workers=2)``: two Ray actors (:class:`~cil_ray.worker.ChipWorker`), each holding its own
``make_backend("speck")`` and calling it through its own :class:`~cil_core.HardwareSession`.
To the trainer it is one backend with ``max_sets=None``; distribution stays behind the
driver's session, algorithms are unchanged.

How a call is shared (``forward`` of a deployment of ``S`` parameter sets on ``B`` samples):

* ``S >= 2``: the sets are split into contiguous shares, one per worker (at most ``S``
  workers); each worker's session splits its share further by the inner backend's
  ``max_sets``. MH proposals are the main case.
* one network (or ``S == 1``) and ``B >= 2 * min_shard``: the batch is split into contiguous
  shards of at least ``min_shard`` samples (evaluation, large CIL-SPL batches); below that the
  call runs on worker 0 (small batches do not pay for the round trip).
* one remote call per busy worker carries the parameters (one flat numpy buffer per dtype) and
  does the weight transfer and the forward; inputs are put once into the object store (and
  reused while the same, unmodified input object is sent again); outputs and layer observations
  come back as numpy and are concatenated in order.

For a deterministic backend the result is bit-identical to a local call (tested for ``ideal``,
``analog-mismatch`` with ``noise_sigma=0`` and ``speck``).

**Replicas vs fleet.** Sharing a call assumes interchangeable workers. Workers built with
different options (``worker_options``: another chip seed, another board) or holding different
``boards`` are different chips: with ``mode="auto"`` (the default) such a backend is refused
with a :class:`~cil_ray.errors.FleetError`; build one ``ray:`` backend per chip (one run per
chip), or say ``mode="replicas"`` when the differences do not change results (a digital chip's
boards, per-worker noise seeds of one simulated chip), or ``mode="population"`` to train for a
population of chips: then *every* call runs on every worker (each chip sees all parameter sets
and all samples) and the observation is the mean over the ``W`` chips,

.. math:: \\bar S_t = \\frac{1}{W} \\sum_{c=1}^{W} S^{(c)}_t

(outputs, layer spikes and membranes alike): MH then scores the population's mean spike counts
and CIL-SPL injects the population's mean response, which trains one set of weights that works
across the chips (the spread between chips is in ``meta["population"]``).

**Failures.** An error raised in a worker keeps its cil type and names the worker and node. A
worker that dies (killed, crashed, its node lost) is restarted by Ray (``max_restarts``); the
call that lost it raises :class:`~cil_core.HardwareError` once the worker is back, so the
trainer's ``retries`` repeat it and its session counts the failure. A call that takes longer
than ``call_timeout`` kills the worker (Ray restarts it: a running actor call cannot be
cancelled) and raises ``HardwareError``. A resource or label no node offers is a
:class:`~cil_ray.errors.PlacementError` at once; resources that exist but stay busy one after
``ready_timeout`` seconds; a board held by another run a :class:`~cil_ray.errors.BoardBusyError`
naming the holder.
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import os
import pickle
import socket
import time
import weakref
from collections import OrderedDict, deque
from typing import Any, Literal, Mapping, Sequence

import torch

from cil_core import Backend, Deployment, Observation
from cil_core.data import as_dense
from cil_core.errors import CilError, HardwareError, OptionError, PluginError
from cil_core.hardware import LayerObservation
from cil_core.hardware.session import concat_observations, current_call
from cil_core.network.description import NetworkSpec, check_parameters

from . import transport
from .errors import BoardBusyError, FleetError, PlacementError

#: named actors of boards live in this namespace, whatever the job's namespace
BOARD_NAMESPACE = "cil-boards"
#: input objects kept in the object store for reuse
INPUT_CACHE = 8
#: calls whose wall and worker times ``call_log`` keeps
CALL_LOG = 10_000


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency of cil-ray
        raise PluginError("the ray: backend needs Ray: pip install 'ray[default]' (or pip install cil-ray)") from exc
    return ray


def _per_worker(name: str, value: Sequence[Any] | None, n: int) -> list[Any]:
    if value is None:
        return [None] * n
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Sequence):
        raise OptionError(f"ray: {name} must be a list with one entry per worker, got {type(value).__name__}")
    if len(value) != n:
        raise OptionError(f"ray: {name} has {len(value)} entries but there are {n} workers")
    return list(value)


def _shares(n: int, k: int) -> list[tuple[int, int]]:
    """``n`` items in ``k`` contiguous, near-equal shares (the first ones one larger)."""
    base, extra = divmod(n, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


class RayBackend(Backend):
    """Any cil backend on Ray workers (ray:<backend>): simulator replicas, several chips, or a chip on another host.

    Options (besides the inner backend's own, passed on to every worker):

    ``workers`` (number of workers, one Ray actor each; default: the length of a per-worker
    list, else 1), ``inner_options`` (options of the inner backend, merged with the other
    unrecognised keyword options), ``worker_options`` (one dict per worker, merged over them:
    e.g. a board serial or a seed), ``resources`` (custom Ray resources each worker needs, e.g.
    ``{"speck": 1}``), ``worker_resources`` (one dict per worker, merged over them),
    ``labels`` (node labels each worker needs, a Ray label selector), ``worker_labels`` (one
    dict per worker), ``boards`` (one board name per worker: the worker takes the Ray resource
    ``board-<name>`` and holds the board exclusively), ``num_cpus`` (CPUs per worker, also its
    torch and numba threads), ``num_gpus`` (GPUs per worker), ``mode`` (``"auto"``: identical
    workers share calls, different ones are refused; ``"replicas"``: the workers are declared
    interchangeable; ``"population"``: every call runs on every worker — different chips — and
    returns their mean observation), ``min_shard`` (smallest batch shard worth a worker), ``call_timeout``
    (seconds one call may take before the worker is killed and restarted), ``max_restarts``
    (restarts Ray grants each worker), ``ready_timeout`` (seconds to wait for workers to start
    or restart), ``inner_retries`` (retries inside the worker; the trainer's retries come on
    top), ``address`` (Ray head ``host:port``; default: the current connection, else
    ``RAY_ADDRESS``, else a private local cluster), ``token_file`` (0600 file with the
    cluster's token).
    """

    max_sets = None
    #: the session's ``timeout`` (read from its call context) is enforced here like
    #: ``call_timeout``: a hung worker is killed and restarted instead of a thread being abandoned
    enforces_timeout = True
    #: options that place or pace the work but do not change results: a checkpoint may be resumed
    #: with other values (cil_core's compatibility record leaves them out)
    placement_options = frozenset({"workers", "resources", "worker_resources", "labels", "worker_labels",
                                   "num_cpus", "num_gpus", "min_shard", "call_timeout", "max_restarts",
                                   "ready_timeout", "address", "token_file"})

    def __init__(self, inner: Any, *, workers: int | None = None, inner_options: dict | None = None,
                 worker_options: list | None = None, resources: dict | None = None,
                 worker_resources: list | None = None, labels: dict | None = None,
                 worker_labels: list | None = None, boards: list | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, mode: Literal["auto", "replicas", "population"] = "auto", min_shard: int = 64,
                 call_timeout: float | None = None, max_restarts: int = 3, ready_timeout: float = 30.0,
                 inner_retries: int = 0, address: str | None = None, token_file: str | None = None,
                 **options: Any) -> None:
        if isinstance(inner, str):
            if not inner or inner.startswith("ray:"):
                raise OptionError(f"ray: name the backend to run on the workers, e.g. 'ray:speck' (got {inner!r})")
            inner_name = inner
        elif callable(inner):  # a Backend subclass or factory of the user's: shipped to the workers by value
            inner_name = getattr(inner, "name", "") or getattr(inner, "__name__", "") or type(inner).__name__
        else:
            raise OptionError(f"ray: inner must be a registered backend name or a Backend subclass, got {inner!r}")
        lists = [x for x in (worker_options, worker_resources, worker_labels, boards) if x is not None]
        if workers is None:
            workers = len(lists[0]) if lists and isinstance(lists[0], Sequence) else 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OptionError(f"ray: workers must be a whole number >= 1, got {workers!r}")
        if mode not in ("auto", "replicas", "population"):
            raise OptionError(f"ray: mode must be 'auto', 'replicas' or 'population', got {mode!r}")
        if isinstance(min_shard, bool) or not isinstance(min_shard, int) or min_shard < 1:
            raise OptionError(f"ray: min_shard must be a whole number >= 1, got {min_shard!r}")
        if call_timeout is not None and not call_timeout > 0:
            raise OptionError(f"ray: call_timeout must be a positive number of seconds or None, got {call_timeout!r}")
        if not ready_timeout > 0 or num_cpus < 0 or num_gpus < 0 or max_restarts < 0 or inner_retries < 0:
            raise OptionError("ray: ready_timeout must be > 0; num_cpus, num_gpus, max_restarts, inner_retries >= 0")
        W = workers
        wopts = _per_worker("worker_options", worker_options, W)
        wres = _per_worker("worker_resources", worker_resources, W)
        wlab = _per_worker("worker_labels", worker_labels, W)
        wboards = _per_worker("boards", boards, W)
        if boards is not None and len(set(map(str, boards))) != len(boards):
            raise OptionError(f"ray: boards must be distinct (one holder per board), got {list(boards)}")
        shared = {**(inner_options or {}), **options}
        self.inner = inner_name
        self._inner = inner
        self.name = f"ray:{inner_name}"
        self.worker_options = [{**shared, **(o or {})} for o in wopts]
        self.worker_resources = [{**(resources or {}), **(r or {}),
                                  **({f"board-{b}": 1} if b is not None else {})} for r, b in zip(wres, wboards)]
        self.worker_labels = [{**(labels or {}), **(lb or {})} for lb in wlab]
        self.boards = [None if b is None else str(b) for b in wboards]
        different = any(o != self.worker_options[0] for o in self.worker_options) or \
            len({b for b in self.boards if b is not None}) > 1
        if W > 1 and different and mode == "auto":
            raise FleetError(
                f"ray:{inner_name}: the {W} workers are different chips (different worker_options or boards), so they "
                "cannot share one call's parameter sets or batch as if identical. Run one backend per chip "
                "(one ray: backend with workers=1 each, one run per chip), or pass mode='replicas' if the "
                "differences do not change results (e.g. boards of a digital chip, per-worker noise seeds), or "
                "mode='population' to run every call on every chip and train on their mean response")
        self.mode = "population" if mode == "population" else "replicas"
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)
        self.min_shard = min_shard
        self.call_timeout = call_timeout
        self.max_restarts = max_restarts
        self.ready_timeout = float(ready_timeout)
        self.inner_retries = inner_retries
        self._specs: dict[int, tuple[NetworkSpec, str, Any]] = {}
        self._inputs: OrderedDict[tuple, tuple[Any, tuple, Any]] = OrderedDict()
        self.actors: list[Any] = []
        self.info: list[dict[str, Any]] = []
        self.calls = 0            # calls of this backend (one per forward)
        self.remote_calls = 0     # remote calls (one per busy worker per forward)
        self.bytes_sent = 0       # parameters and inputs sent (numpy bytes)
        self.bytes_received = 0   # observations received
        self.failures = 0
        self.seconds = 0.0        # wall time of forwards, as the driver sees it
        self.worker_seconds = 0.0  # of that, the slowest worker's own time per forward
        #: the latest calls' (wall seconds, slowest worker's own seconds): per-call overheads
        self.call_log: deque[tuple[float, float]] = deque(maxlen=CALL_LOG)

        ray = _import_ray()
        from .cluster import ensure_ray

        ensure_ray(address, token_file=token_file)
        self._check_placement(ray)
        self._start(ray)
        self._finalizer = weakref.finalize(self, _kill_all, list(self.actors))

    # ------------------------------------------------------------------ workers
    def _needs(self, k: int) -> dict[str, float]:
        need = dict(self.worker_resources[k])
        if self.num_cpus > 0:
            need["CPU"] = self.num_cpus
        if self.num_gpus > 0:
            need["GPU"] = self.num_gpus
        return need

    def _check_placement(self, ray: Any) -> None:
        """Fail at once when no node could ever hold a worker (Ray would leave it pending)."""
        W = len(self.worker_options)
        check_placement(ray, [(f"ray:{self.inner}: worker {k}", self._needs(k), self.worker_labels[k], self.boards[k])
                              for k in range(W)], together=f"ray:{self.inner}: {W} workers")

    def _holder(self, ray: Any) -> dict[str, Any]:
        try:
            user = getpass.getuser()
        except Exception:  # pragma: no cover
            user = "?"
        try:
            job = ray.get_runtime_context().get_job_id()
        except Exception:  # pragma: no cover
            job = ""
        return {"user": user, "host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": time.time()}

    def _start(self, ray: Any) -> None:
        from .worker import ChipWorker

        cls = ray.remote(ChipWorker)
        holder = self._holder(ray)
        try:
            for k, opts in enumerate(self.worker_options):
                o: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                     "max_restarts": self.max_restarts, "max_task_retries": 0}
                res = {r: v for r, v in self.worker_resources[k].items()}
                if res:
                    o["resources"] = res
                if self.worker_labels[k]:
                    o["label_selector"] = dict(self.worker_labels[k])
                board = self.boards[k]
                if board is not None:
                    o.update(name=f"cil-board:{board}", namespace=BOARD_NAMESPACE)
                try:
                    actor = cls.options(**o).remote(k, self._inner, opts, holder, self.num_cpus, self.inner_retries)
                except ValueError as exc:  # ActorAlreadyExistsError: the board's name is taken
                    if board is None or "already taken" not in str(exc):
                        raise
                    raise BoardBusyError(f"ray:{self.inner}: board {board!r} is held by "
                                         f"{_describe_holder(ray, board)}; wait for that run to end "
                                         "(or stop it: the board is free when its run exits)") from None
                self.actors.append(actor)
            self.info = self._await([a.info.remote() for a in self.actors], "start")
        except BaseException:
            _kill_all(self.actors)
            self.actors = []
            raise
        first = self.info[0]
        self.observes_layers = all(i["observes_layers"] for i in self.info)
        self.observes_membrane = all(i["observes_membrane"] for i in self.info)
        self.stochastic = any(i["stochastic"] for i in self.info)
        # the session folds batch norm and refuses what the workers' backend cannot run, as it would locally
        caps = [i.get("capabilities") for i in self.info]
        self.capabilities = None if all(c is None for c in caps) else \
            frozenset.intersection(*[frozenset(c) for c in caps if c is not None])
        self.capability_hints = dict(first.get("capability_hints") or {})
        self.neuron_parameters = _held_by_all([i.get("neuron_parameters") for i in self.info])
        self.neuron_parameter_hints = dict(first.get("neuron_parameter_hints") or {})
        self.requires = first.get("requires")  # what the workers' chip requires (sizes, a synaptic current)
        # a switch its domains name (Xylo's round_decays) holds for the population only if every worker has it on
        for option in (first.get("domain_options") or {}):
            setattr(self, option, all((i.get("domain_options") or {}).get(option) is True for i in self.info))
        self.inner_max_sets = first["max_sets"]

    def _await(self, refs: list[Any], what: str) -> list[Any]:
        """``ray.get`` of the workers' ``info`` (or another quick call), failing with a cil error
        when a worker cannot be placed or started within ``ready_timeout``."""
        ray = _import_ray()
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=self.ready_timeout)
        if pending:
            late = [refs.index(r) for r in pending]
            avail = {k: v for k, v in ray.available_resources().items() if not k.startswith("node:")
                     and k not in ("memory", "object_store_memory")}
            raise PlacementError(f"ray:{self.inner}: worker(s) {late} did not {what} within {self.ready_timeout:g} s; "
                                 f"the cluster has the resources they need but they are in use (available now: "
                                 f"{avail}); another run may hold them")
        out = []
        for k, r in enumerate(refs):
            try:
                out.append(ray.get(r))
            except Exception as exc:
                raise self._translate(exc, k, f"{what} of the worker") from None
        return out

    def _where(self, k: int) -> str:
        i = self.info[k] if k < len(self.info) else {}
        node = (i.get("node_id") or "")[:8]
        return (f"ray worker {k} (host {i.get('host', '?')}, node {i.get('node_ip', '?')}/{node}, "
                f"pid {i.get('pid', '?')})")

    def _translate(self, exc: BaseException, k: int, during: str) -> BaseException:
        """A worker's failure as a cil error: its own cil type with the worker named, or a
        HardwareError for anything else (a dead worker, a failure of Ray itself)."""
        ray = _import_ray()
        where = self._where(k)
        cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
        if cause is None and isinstance(exc, ray.exceptions.RayTaskError):
            cause = exc
        if isinstance(cause, CilError):
            new = copy.copy(cause)
            first = str(cause.args[0]) if cause.args else str(cause)
            new.args = (f"{first} [on {where}]", *cause.args[1:])
            return new
        if isinstance(exc, ray.exceptions.RayActorError):
            detail = str(exc).split("\n")[0][:300]
            init = _creation_error(exc)
            if init is not None:
                return init if isinstance(init, CilError) else HardwareError(
                    f"backend '{self.inner}' could not be built on {where}: {init!r}", self.name)
            return HardwareError(f"{where} died during the {during} ({type(exc).__name__}: {detail}); Ray restarts it "
                                 f"(max_restarts={self.max_restarts})", self.name)
        if isinstance(cause, BaseException):
            return HardwareError(f"{where} failed during the {during}: {cause!r}", self.name)
        return HardwareError(f"{where} failed during the {during}: {exc!r}", self.name)

    def _wait_back(self, ks: Sequence[int]) -> None:
        """After a worker died or was killed: wait (up to ``ready_timeout``) until Ray has it
        running again, so that the retry lands on a live worker, and refresh what is known
        about it. A worker that does not come back is left to the retry to report."""
        ray = _import_ray()
        deadline = time.monotonic() + self.ready_timeout
        for k in ks:
            while time.monotonic() < deadline:
                try:
                    info = ray.get(self.actors[k].info.remote(), timeout=max(0.1, deadline - time.monotonic()))
                except ray.exceptions.GetTimeoutError:
                    return
                except ray.exceptions.ActorUnavailableError:  # restarting
                    time.sleep(0.1)
                    continue
                except Exception:  # dead for good (restarts used up): the retry reports it
                    return
                self.info[k] = info
                break

    # ------------------------------------------------------------------ Backend API
    def check(self, spec: NetworkSpec) -> None:
        """Every worker's inner backend checks that the network fits (a remote
        BackendCapacityError arrives as one, naming the worker)."""
        self._open()
        ray = _import_ray()
        key, box = self._spec_ref(spec)
        refs = [a.check.remote(key, box) for a in self.actors]
        for k, r in enumerate(refs):
            try:
                ray.get(r, timeout=self.call_timeout)
            except ray.exceptions.GetTimeoutError:
                raise HardwareError(f"{self._where(k)} did not answer the capacity check within "
                                    f"{self.call_timeout:g} s", self.name) from None
            except Exception as exc:
                raise self._translate(exc, k, "capacity check") from None

    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Checked here; the weights are transferred on the workers, in the same remote call as
        the forward. The deployment holds the software tensors (``chip["deferred"]``); a worker's
        own deployment (quantized codes...) is :meth:`remote_transfer`."""
        check_parameters(spec, params, n_sets)
        held = {k: v.detach().clone() for k, v in params.items()}
        return Deployment(self.name, spec, held, n_sets,
                          chip={"deferred": True, "workers": len(self.actors), "inner": self.inner})

    def _open(self) -> None:
        if not self.actors:
            raise CilError(f"backend '{self.name}' was closed; build a new one (cil_core.make_backend)")

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        self._open()
        ray = _import_ray()
        t_start = time.perf_counter()
        spec, params, S = deployment.spec, deployment.params, deployment.n_sets
        ctx = current_call()
        purpose = "ray" if ctx is None else ctx.purpose
        timeout, timeout_from = self._deadline(ctx)
        dense = as_dense(inputs)
        B = int(dense.shape[1])
        W = len(self.actors)
        key, box = self._spec_ref(spec)
        plan: list[tuple[int, tuple[int, int] | None, tuple[int, int] | None]] = []
        if self.mode == "population":
            plan = [(k, None, None) for k in range(W)]
        elif S is not None and S >= 2 and W >= 2:
            plan = [(k, sl, None) for k, sl in enumerate(_shares(S, min(W, S)))]
        elif W >= 2 and B >= 2 * self.min_shard:
            plan = [(k, None, bl) for k, bl in enumerate(_shares(B, min(W, B // self.min_shard)))]
        else:
            plan = [(0, None, None)]
        shared_params = None
        if all(sl is None for _, sl, _ in plan):
            packed = transport.pack_params(params)
            self.bytes_sent += packed.nbytes
            shared_params = ray.put(packed) if len(plan) > 1 else packed
        refs, order = [], []
        whole = self._input_ref(inputs, None) if all(bl is None for _, _, bl in plan) else None
        for k, sl, bl in plan:
            if sl is not None:
                p = transport.pack_params(transport.slice_sets(params, *sl))
                self.bytes_sent += p.nbytes
                n = sl[1] - sl[0]
            else:
                p, n = shared_params, S
            x = whole if bl is None else self._input_ref(inputs, bl)
            refs.append(self.actors[k].run.remote(key, box, p, n, x, record, purpose))
            order.append(k)
        results = self._gather(refs, order, timeout, timeout_from)
        obs = [transport.unpack_observation(r[0], dense.device) for r in results]
        info = [r[1] for r in results]
        self.bytes_received += sum(transport.observation_bytes(r[0]) for r in results)
        if len(obs) == 1:
            out = obs[0]
            out.meta = {**out.meta, "ray": info}
        elif self.mode == "population":
            out = _mean(obs, {"ray": info, "calls": [o.meta for o in obs]})
        else:
            dim = 1 if plan[0][1] is not None or S is None else 2  # sets, or samples of [T, (S,) B, ...]
            out = concat_observations(obs, dim, {"ray": info, "calls": [o.meta for o in obs]})
        self.calls += 1
        self.remote_calls += len(refs)
        wall, busy = time.perf_counter() - t_start, max(i["seconds"] for i in info)
        self.seconds += wall
        self.worker_seconds += busy
        self.call_log.append((wall, busy))
        return out

    # ------------------------------------------------------------------ plumbing
    def _spec_ref(self, spec: NetworkSpec) -> tuple[str, list]:
        """A content key for ``spec`` and a reference to it in the object store (sent inside a
        list so that Ray does not fetch it for every call: the worker fetches it once)."""
        hit = self._specs.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1], [hit[2]]
        ray = _import_ray()
        key = hashlib.sha1(pickle.dumps(spec)).hexdigest()
        ref = ray.put(spec)
        if len(self._specs) > 64:
            self._specs.clear()
        self._specs[id(spec)] = (spec, key, ref)
        return key, [ref]

    def _input_ref(self, inputs: Any, span: tuple[int, int] | None) -> Any:
        """``inputs`` (samples ``span``) in the object store, put once per input object and
        reused while that object is unchanged (same tensor version)."""
        ray = _import_ray()
        key = (id(inputs), span)
        version = transport.input_version(inputs)
        hit = self._inputs.get(key)
        if hit is not None and hit[0] is inputs and hit[1] == version and version:
            self._inputs.move_to_end(key)
            return hit[2]
        packed = transport.pack_inputs(inputs, *(span or (None, None)))
        self.bytes_sent += transport.nbytes(packed[1])
        ref = ray.put(packed)
        self._inputs[key] = (inputs, version, ref)
        while len(self._inputs) > INPUT_CACHE:
            self._inputs.popitem(last=False)
        return ref

    def _deadline(self, ctx: Any) -> tuple[float | None, str]:
        """The seconds a call may take: the smaller of ``call_timeout`` and the calling
        session's ``timeout`` (:func:`cil_core.hardware.session.current_call`), and which one it is."""
        limits = [(t, what) for t, what in ((self.call_timeout, "call_timeout"),
                                            (None if ctx is None else ctx.timeout, "the session's timeout"))
                  if t is not None]
        return min(limits, key=lambda tw: tw[0]) if limits else (None, "")

    def _gather(self, refs: list[Any], order: list[int], timeout: float | None = None,
                timeout_from: str = "call_timeout") -> list[Any]:
        ray = _import_ray()
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[Any] = []
        for i, (ref, k) in enumerate(zip(refs, order)):
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                out.append(ray.get(ref, timeout=left))
            except ray.exceptions.GetTimeoutError:
                self.failures += 1
                stuck = [kk for r, kk in zip(refs[i:], order[i:]) if not ray.wait([r], timeout=0)[0]]
                for kk in stuck:  # a running actor call cannot be cancelled: kill, Ray restarts it
                    ray.kill(self.actors[kk], no_restart=False)
                self._wait_back(stuck)
                raise HardwareError(f"{self._where(k)} did not answer within {timeout:g} s ({timeout_from}; weight "
                                    f"transfer + forward); worker(s) {stuck} were killed and restarted",
                                    self.name) from None
            except Exception as exc:
                self.failures += 1
                err = self._translate(exc, k, "call")
                if isinstance(exc, ray.exceptions.RayActorError):
                    self._wait_back([k])
                raise err from None
        return out

    # ------------------------------------------------------------------ extras
    def remote_transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None,
                        worker: int = 0) -> Deployment:
        """Only a weight transfer, on ``worker``: the inner backend's own deployment (what the
        chip holds: quantized codes, scales...)."""
        self._open()
        ray = _import_ray()
        key, box = self._spec_ref(spec)
        try:
            return ray.get(self.actors[worker].transfer.remote(key, box, transport.pack_params(params), n_sets),
                           timeout=self.call_timeout)
        except Exception as exc:
            raise self._translate(exc, worker, "weight transfer") from None

    def materialize(self, deployment: Deployment) -> Deployment:
        """The real weight transfer of a deferred deployment, on worker 0 (what the chip holds;
        :meth:`cil_core.HardwareSession.deploy` and ``Trainer.deploy`` call it)."""
        return self.remote_transfer(deployment.spec, deployment.params, deployment.n_sets)

    def stats(self) -> dict[str, Any]:
        """Driver-side counters: calls, remote calls, bytes sent and received, failures, wall seconds, the
        workers' own seconds and the overhead per call (wall minus the slowest worker's time)."""
        over = (self.seconds - self.worker_seconds) / self.calls if self.calls else 0.0
        return {"calls": self.calls, "remote_calls": self.remote_calls, "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "failures": self.failures, "seconds": self.seconds, "worker_seconds": self.worker_seconds,
                "overhead_per_call_s": over, "workers": len(self.actors)}

    def overheads(self, last: int | None = None) -> list[float]:
        """Remote overhead of each of the ``last`` calls (all kept ones if ``None``), in seconds:
        the driver's wall time minus the slowest worker's own time (transport, (de)serialisation,
        scheduling; a worker waiting for a CPU counts here too)."""
        log = list(self.call_log)
        if last is not None:
            log = log[-last:] if last > 0 else []
        return [wall - busy for wall, busy in log]

    def worker_stats(self) -> list[dict[str, Any]]:
        """Each worker's own counters (calls, its session's stats)."""
        ray = _import_ray()
        return ray.get([a.stats.remote() for a in self.actors], timeout=self.ready_timeout)

    def close(self) -> None:
        """Stop the workers (and free their boards). The backend cannot be used afterwards."""
        _kill_all(self.actors)
        self.actors = []
        self._inputs.clear()
        self._specs.clear()

    def __enter__(self) -> "RayBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _held_by_all(declared: list[Any]) -> dict[str, Any] | None:
    """The trained neuron parameters every worker's backend holds (their ``neuron_parameters``):
    a field held by all of them, per neuron only where all hold it per neuron (otherwise the first
    per-layer declaration, with its domain); ``None`` when no worker declares any (a backend that
    checks for itself)."""
    if all(d is None for d in declared):
        return None
    ds = [d or {} for d in declared]
    out: dict[str, Any] = {}
    for field in ds[0]:
        if all(field in d for d in ds):
            coarse = [d[field] for d in ds if d[field].granularity == "per-layer"]
            out[field] = coarse[0] if coarse else ds[0][field]
    return out


def _mean(obs: list[Observation], meta: dict[str, Any]) -> Observation:
    """The population's mean observation (outputs, layer spikes and membranes averaged over
    chips, in worker order); ``meta["population"]`` holds each chip's total output count."""
    def avg(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(ts).mean(0)

    layers = None
    if all(o.layers is not None for o in obs):
        layers = []
        for j in range(len(obs[0].layers)):  # type: ignore[arg-type]
            mems = [o.layers[j].membrane for o in obs]  # type: ignore[index]
            layers.append(LayerObservation(avg([o.layers[j].spikes for o in obs]),  # type: ignore[index]
                                           None if any(m is None for m in mems) else avg(mems)))  # type: ignore[arg-type]
    meta = {**meta, "population": [float(o.output.sum()) for o in obs]}
    return Observation(avg([o.output for o in obs]), layers, meta)


def check_placement(ray: Any, asks: Sequence[tuple[str, Mapping[str, float], Mapping[str, str], str | None]], *,
                    together: str | None = None) -> None:
    """Raise a :class:`~cil_ray.errors.PlacementError` at once when no alive node could ever hold
    one of ``asks`` — ``(who, resources, node labels, board or None)`` for each actor or task,
    ``who`` naming it in the message — or, with ``together`` (the message's subject), when all of
    them at once need more of a resource than the cluster has. Ray would leave them pending."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offered: dict[str, float] = {}
    for n in nodes:
        for r, v in n.get("Resources", {}).items():
            offered[r] = offered.get(r, 0.0) + v
    custom = sorted(r for r in offered if r not in ("CPU", "GPU", "memory", "object_store_memory")
                    and not r.startswith("node:") and not r.startswith("accelerator_type"))
    total: dict[str, float] = {}
    for who, need, labels, board in asks:
        for r, v in need.items():
            total[r] = total.get(r, 0.0) + v
        fits = [n for n in nodes if all(n.get("Resources", {}).get(r, 0.0) >= v for r, v in need.items())
                and _labels_match(n.get("Labels", {}) or {}, labels)]
        if fits:
            continue
        missing = [f"{r}={v:g}" for r, v in need.items() if max((n.get("Resources", {}).get(r, 0.0)
                                                                   for n in nodes), default=0.0) < v]
        what = f"resources {', '.join(missing)}" if missing else \
            f"{dict(need)} together" + (f" on a node with labels {dict(labels)}" if labels else "")
        hint = ""
        if board is not None and f"board-{board}" not in offered:
            hint = (f"; board {board!r} is offered by the node the board is attached to: "
                    f"ray start ... --resources '{{\"board-{board}\": 1}}'")
        raise PlacementError(f"{who} needs {what}, which no node of the cluster "
                             f"offers (custom resources offered: {custom or 'none'}; nodes: {len(nodes)}){hint}")
    if together is None:
        return
    for r, v in total.items():
        if v > offered.get(r, 0.0) + 1e-9:
            extra = " (use num_cpus=0.5 or 0 for workers that mostly wait on I/O)" if r == "CPU" else ""
            raise PlacementError(f"{together} need {v:g} {r} in all, the cluster offers {offered.get(r, 0.0):g}{extra}")


def _labels_match(node: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Plain ``key: value`` selectors are checked here; operator selectors (``!x``, ``in(...)``)
    are left to Ray."""
    for k, v in want.items():
        v = str(v)
        if v.startswith("!") or "(" in v:
            continue
        if node.get(k) != v:
            return False
    return True


def _describe_holder(ray: Any, board: str) -> str:
    try:
        h = ray.get(ray.get_actor(f"cil-board:{board}", namespace=BOARD_NAMESPACE).get_holder.remote(), timeout=5)
    except Exception:
        return "another run (it did not say who)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("since", 0)))
    return (f"{h.get('user', '?')}@{h.get('host', '?')} (pid {h.get('pid', '?')}, Ray job {h.get('job', '?')}) "
            f"since {since}")


def _creation_error(exc: BaseException) -> BaseException | None:
    """The exception an actor's constructor raised, when that is why it is dead."""
    for attr in ("cause", "creation_task_error", "_creation_task_error"):
        c = getattr(exc, attr, None)
        if c is not None and c is not exc:
            inner = getattr(c, "cause", None)
            return inner if isinstance(inner, BaseException) else c
    err = getattr(exc, "error_msg", "") or str(exc)
    if "__init__" in err and "raised" in err:
        return HardwareError(err.split("\n")[-1][:500])
    return None


def _kill_all(actors: list[Any]) -> None:
    try:
        import ray

        if not ray.is_initialized():
            return
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
    except Exception:  # pragma: no cover - interpreter shutting down
        pass


__all__ = ["RayBackend", "BOARD_NAMESPACE"]
