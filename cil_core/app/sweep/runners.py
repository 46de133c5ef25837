"""Sweep runners: execute (one point, timed, errors caught) and the in-process LocalRunner; make_runner."""

from __future__ import annotations

import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Mapping, Sequence

from ...errors import CilError, OptionError


def _numba_threads(n: int) -> int | None:
    """Set numba's threads (of this thread) to ``n``, at most its pool's ``NUMBA_NUM_THREADS``,
    where numba is installed; returns the count before (``None`` without numba)."""
    try:
        import numba
    except ImportError:
        return None
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    return before


def execute(fn: Callable[[Any], Any], payload: Any, threads: int = 1) -> dict[str, Any]:
    """Run ``fn(payload)`` with ``threads`` threads in torch's and numba's pools; never raises.
    Returns the *outcome*: ``{"ok": True, "metrics": ...}`` or ``{"ok": False, "error": ...,
    "error_type": ..., "traceback": ...}``, with ``seconds``, ``host`` and ``pid``. Runners call
    this wherever they run a point.

    numba's threads are set too (where it is installed): the backends' parallel numba kernels
    (speck, xylo) would otherwise run on all of numba's threads (one per core) whatever
    ``threads`` says, and with numba's OpenMP threading layer the start of its pool also set
    torch's OpenMP thread count back to numba's, so a 1-thread point ran 2-thread teams of both,
    spin-waiting for cores other processes held (two speck MALA points at once on 2 cores took
    several times the CPU and wall time per step of 1-thread ones). numba's pool is started
    first, so torch's count set after it holds."""
    import torch

    before = torch.get_num_threads()
    numba_before = _numba_threads(threads)  # first: starting numba's OpenMP pool resets torch's count
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out: dict[str, Any]
    try:
        out = {"ok": True, "metrics": fn(payload)}
    except BaseException as exc:  # noqa: BLE001 - reported per point, the sweep goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
               "cil_error": isinstance(exc, CilError),
               "traceback": "" if isinstance(exc, CilError) else traceback.format_exc(limit=8)}
    finally:
        if numba_before is not None:
            _numba_threads(numba_before)
        torch.set_num_threads(before)
    out.update(seconds=time.perf_counter() - t0, host=socket.gethostname(), pid=os.getpid())
    return out




class LocalRunner:
    """Runs sweep points on this machine, one after the other or in worker processes.

    Options: ``jobs`` (worker processes; 1: in this process, one point after the other). A
    point's resources are not placed here (the grid's templates are still checked at the door)."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise OptionError(f"runner 'local': jobs must be a whole number >= 1, got {jobs!r}")
        self.jobs = jobs

    def run(self, fn: Callable[[Any], Any], payloads: Sequence[Any], threads: int = 1,
            resources: Sequence[Mapping[str, float]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        del resources  # one machine: nothing to place
        if self.jobs == 1 or len(payloads) <= 1:
            for i, p in enumerate(payloads):
                yield i, {**execute(fn, p, threads), "worker": "main process"}
            return
        import multiprocessing

        # spawn: a forked child of a process that has run torch's thread pools can hang
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(payloads)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(execute, fn, p, threads): i for i, p in enumerate(payloads)}
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    try:
                        out = fut.result()
                    except Exception as exc:  # the worker process died
                        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
                               "seconds": 0.0, "host": socket.gethostname(), "pid": None}
                    yield i, {**out, "worker": f"process {out.get('pid')}"}
            finally:
                for fut in futures:
                    fut.cancel()

    def close(self) -> None:
        pass


def make_runner(name: str, **options: Any) -> Any:
    """Build the runner registered as ``name`` (``local``; ``ray`` with cil-ray installed), its
    options checked against its declaration."""
    from ...options import validate
    from ...plugin.registry import get_manager

    factory = get_manager().entry("runners", name).value
    validate(factory, options, f"runner '{name}'")
    try:
        return factory(**options)
    except CilError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(f"runner '{name}': {exc}") from exc


# ----------------------------------------------------------------------------- the results file
