"""The worker: one Ray actor per chip or simulator replica.

It builds its backend with :func:`cil_core.make_backend` *in the worker process* (so the
driver never needs the chip's SDK) and calls it only through its own
:class:`cil_core.HardwareSession`, so the inner backend's ``max_sets`` is respected, its output
validated and its calls counted. One remote call does a weight transfer and a forward
(:meth:`ChipWorker.run`).

The network description travels once per worker: the driver sends a key and a reference to
the description in the object store; the worker fetches it only for a key it has not seen and
keeps it, so a backend's per-network caches (keyed by the description object) hit on every
call. A worker restarted by Ray starts with an empty cache and fetches it again.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from . import transport


def _limit_threads(cpus: float | None) -> None:
    """Ray sets torch's threads from ``num_cpus`` but not numba's: do it here, before a backend
    imports numba (or at once if it is imported already)."""
    if not cpus or cpus < 1:
        n = 1
    else:
        n = int(cpus)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
    import sys

    if "numba" in sys.modules:  # pragma: no cover - depends on what the worker process imported before
        try:
            import numba

            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception:
            pass
    try:
        import torch

        torch.set_num_threads(n)
    except Exception:  # pragma: no cover
        pass


class ChipWorker:
    """A Ray actor holding one backend (wrapped with ``ray.remote`` by :mod:`cil_ray.backend`)."""

    def __init__(self, index: int, inner: Any, options: dict[str, Any], holder: dict[str, Any],
                 cpus: float | None = None, inner_retries: int = 0) -> None:
        _limit_threads(cpus)
        import cil_core
        from cil_core import HardwareSession

        self.index = index
        self.inner = inner if isinstance(inner, str) else getattr(inner, "__name__", repr(inner))
        self.options = dict(options)
        self.holder = dict(holder)
        self.started = time.time()
        self.specs: dict[str, Any] = {}
        self.calls = 0
        # a backend that cannot be built (unknown option, plugin missing on this node) is reported
        # by info() with its own exception, which Ray then delivers with its type (an exception
        # raised here would reach the driver only as the text of a dead actor's error)
        self.error: BaseException | None = None
        try:
            if isinstance(inner, str):
                self.backend = cil_core.make_backend(inner, **options)
            else:  # a Backend subclass or factory shipped by the driver
                from cil_core.options import validate

                validate(inner, options, f"backend {getattr(inner, '__name__', inner)!r}")
                self.backend = inner(**options)
                if not getattr(self.backend, "name", ""):
                    self.backend.name = getattr(inner, "__name__", "backend")
        except Exception as exc:
            self.error = exc
            self.backend = None
        self.session = HardwareSession(self.backend, retries=inner_retries)

    # ------------------------------------------------------------ identity
    def info(self) -> dict[str, Any]:
        """Who this worker is and what its backend can do (the driver mirrors the capabilities)."""
        if self.error is not None:
            raise self.error
        try:
            import ray

            ctx = ray.get_runtime_context()
            node_id = ctx.get_node_id()
            actor_id = ctx.get_actor_id()
        except Exception:  # pragma: no cover
            node_id, actor_id = "", ""
        from cil_core.hardware.backend import backend_traits

        b = self.backend
        return {
            "index": self.index, "pid": os.getpid(), "host": socket.gethostname(), "node_id": node_id,
            "node_ip": _node_ip(), "actor_id": actor_id, "inner": self.inner,
            "backend_name": getattr(b, "name", "") or type(b).__name__, "started": self.started,
            **backend_traits(b),
        }

    def get_holder(self) -> dict[str, Any]:
        """Who holds this worker (its board): user, host, process and since when."""
        return dict(self.holder, since=self.holder.get("since", self.started))

    # ------------------------------------------------------------ network descriptions
    def _spec(self, key: str, box: list) -> Any:
        spec = self.specs.get(key)
        if spec is None:
            import ray

            spec = ray.get(box[0])
            self.specs[key] = spec
        return spec

    def check(self, key: str, box: list) -> None:
        if self.error is not None:
            raise self.error
        self.session.check(self._spec(key, box))

    # ------------------------------------------------------------ the call
    def run(self, key: str, box: list, params: transport.PackedParams, n_sets: int | None, inputs: tuple,
            record: bool, purpose: str) -> tuple:
        """Weight transfer + forward of ``n_sets`` parameter sets (or one network) on ``inputs``."""
        if self.error is not None:
            raise self.error
        t0 = time.perf_counter()
        spec = self._spec(key, box)
        obs = self.session.run(spec, transport.unpack_params(params), transport.unpack_inputs(inputs),
                               n_sets=n_sets, record=record, purpose=purpose)
        self.calls += 1
        packed = transport.pack_observation(obs)
        return packed, {"worker": self.index, "seconds": time.perf_counter() - t0, "pid": os.getpid()}

    def transfer(self, key: str, box: list, params: transport.PackedParams, n_sets: int | None) -> Any:
        """Only a weight transfer, returning the inner backend's :class:`~cil_core.Deployment`
        (to inspect what the chip holds; training never needs it)."""
        return self.session.transfer(self._spec(key, box), transport.unpack_params(params), n_sets)

    def stats(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), "calls": self.calls, "specs": len(self.specs),
                "session": self.session.stats.as_dict()}

    def sleep(self, seconds: float) -> float:
        """Block this worker (tests: a hung chip)."""
        time.sleep(seconds)
        return seconds


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover
        return ""


__all__ = ["ChipWorker"]
