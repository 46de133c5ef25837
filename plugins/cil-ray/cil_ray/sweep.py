"""The ``ray`` sweep runner: each point of ``cil sweep`` as one Ray task.

``cil sweep grid.toml --runner ray --address HOST:PORT [--runner-opt resources='{"chip": 1}']``
or ``cil_core.app.sweep.run_sweep(points, fn, results=..., runner="ray", runner_options={...})``.

* Each task runs :func:`cil_core.app.sweep.execute` (the same code the local runner runs, with the
  same torch thread count), so a deterministic point gives the same metrics on either runner.
* ``resources`` (custom Ray resources per task, e.g. ``{"chip": 1}`` where nodes offer their chips
  as a resource ``chip``, ``{"board-SN123": 1}`` for one board), ``num_cpus`` and ``num_gpus`` place
  the tasks; Ray runs as many at once as the resources allow and queues the rest. Before anything
  is submitted, the same placement check the ``ray:`` backend uses (:class:`~cil_ray.RayBackend`)
  fails at once with a :class:`~cil_ray.errors.PlacementError` when no node offers what a task asks
  for (Ray would leave the tasks pending forever).
* A point's own resources (the grid's ``[sweep] resources`` templates, e.g. ``"board-{backend_options.serial}"
  = 1``: one board per chip value; :attr:`cil_core.app.sweep.Point.resources`) are added to these
  for its task only (``CPU``/``GPU`` among them set the task's ``num_cpus``/``num_gpus``). They
  are checked the same way before anything is submitted, and a point no node can hold fails the
  sweep at once with a ``PlacementError`` naming the point and the resource.
* ``address``/``token_file``: as for the ``ray:`` backend (default: the current connection, else
  ``RAY_ADDRESS``, else a private local cluster, stopped when the sweep ends).
* A task whose worker dies is retried by Ray (``max_retries``); a point that raises is reported
  by the sweep (not written) and runs again on the next run.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

from cil_core.errors import OptionError

from .errors import PlacementError


def _run_point(fn: Callable[[Any], Any], payload: Any, threads: int) -> dict[str, Any]:
    """The body of one task (runs in a Ray worker)."""
    import ray

    from cil_core.app.sweep import execute

    out = execute(fn, payload, threads)
    try:
        ctx = ray.get_runtime_context()
        out["worker"] = f"ray node {ctx.get_node_id()[:8]}, worker {ctx.get_worker_id()[:8]}"
    except Exception:  # pragma: no cover - runtime context unavailable
        out["worker"] = "ray"
    return out


class RayRunner:
    """Runs each sweep point as a Ray task (``cil sweep --runner ray``).

    Options: ``address`` (Ray head ``host:port``, ``auto``, or ``local``; default: the current
    connection, else ``RAY_ADDRESS``, else a private local cluster), ``token_file`` (0600 file
    with the cluster's token), ``resources`` (custom Ray resources per task, e.g. ``{"chip": 1}``),
    ``num_cpus`` (CPUs per task), ``num_gpus`` (GPUs per task), ``max_retries`` (Ray's retries of a
    task whose worker died).
    """

    name = "ray"

    def __init__(self, address: str | None = None, token_file: str | None = None, resources: dict | None = None,
                 num_cpus: float = 1.0, num_gpus: float = 0.0, max_retries: int = 3) -> None:
        if resources is not None and (not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                for k, v in resources.items())):
            raise OptionError(f"runner 'ray': resources must map resource names to positive amounts, e.g. "
                              f"{{\"chip\": 1}}, got {resources!r}")
        if num_cpus < 0 or num_gpus < 0:
            raise OptionError(f"runner 'ray': num_cpus and num_gpus must be >= 0, got {num_cpus}, {num_gpus}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise OptionError(f"runner 'ray': max_retries must be a whole number >= 0, got {max_retries!r}")
        import ray

        from .backend import check_placement
        from .cluster import ensure_ray, shutdown

        self.resources = {k: float(v) for k, v in (resources or {}).items()}
        self.num_cpus, self.num_gpus, self.max_retries = float(num_cpus), float(num_gpus), max_retries
        started = not ray.is_initialized()
        ensure_ray(address, token_file=token_file)
        self._owns_cluster = started
        try:
            check_placement(ray, [("cil sweep --runner ray: each point's task", self._need(None), {}, None)])
        except PlacementError as exc:
            if started:
                shutdown()
            raise PlacementError(f"{exc}; change the task's resources (--runner-opt resources=...) or add a node "
                                 "that offers them") from None
        self._remote = ray.remote(_run_point)
        self._pending: list[Any] = []

    def _need(self, extra: Mapping[str, float] | None) -> dict[str, float]:
        """What one task asks of a node (its custom resources, CPUs and GPUs), for the placement check."""
        opts = self._task_options(extra)
        need = dict(opts.get("resources", {}))
        if opts["num_cpus"] > 0:
            need["CPU"] = opts["num_cpus"]
        if opts["num_gpus"] > 0:
            need["GPU"] = opts["num_gpus"]
        return need

    def _task_options(self, extra: Mapping[str, float] | None) -> dict[str, Any]:
        """Ray options of one task: the runner's resources, plus a point's own."""
        res = {**self.resources, **{k: float(v) for k, v in (extra or {}).items()}}
        opts: dict[str, Any] = {"num_cpus": res.pop("CPU", self.num_cpus), "num_gpus": res.pop("GPU", self.num_gpus),
                                "max_retries": self.max_retries, "retry_exceptions": False}
        if res:
            opts["resources"] = res
        return opts

    def check(self, resources: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None) -> None:
        """Fail at once with a :class:`PlacementError` naming the first point whose task no node
        could hold (:func:`cil_ray.backend.check_placement`, once per distinct need)."""
        import ray

        from .backend import check_placement

        seen: set[tuple] = set()
        for i, extra in enumerate(resources):
            need = self._need(extra)
            sig = tuple(sorted(need.items()))
            if sig in seen:
                continue
            seen.add(sig)
            point = f"point {keys[i]}" if keys is not None else f"point #{i}"
            try:
                check_placement(ray, [(f"cil sweep --runner ray: {point}", need, {}, None)])
            except PlacementError as exc:
                raise PlacementError(f"{exc}; give the node that has it this resource (ray start ... --resources "
                                     "'{\"NAME\": 1}'), or change [sweep] resources / --runner-opt resources") from None

    def run(self, fn: Callable[[Any], Any], payloads: Sequence[Any], threads: int = 1,
            resources: Sequence[Mapping[str, float]] | None = None, keys: Sequence[str] | None = None
            ) -> Iterator[tuple[int, dict[str, Any]]]:
        import ray

        per_point = list(resources) if resources is not None else [{}] * len(payloads)
        if len(per_point) != len(payloads):
            raise OptionError(f"runner 'ray': {len(per_point)} resource sets for {len(payloads)} points")
        if any(per_point):
            self.check(per_point, keys)  # before anything is submitted
        fn_ref = ray.put(fn)
        refs = {self._remote.options(**self._task_options(per_point[i])).remote(fn_ref, p, threads): i
                for i, p in enumerate(payloads)}
        self._pending = list(refs)
        try:
            while self._pending:
                ready, self._pending = ray.wait(self._pending, num_returns=1)
                for ref in ready:
                    i = refs[ref]
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # the task's worker died beyond max_retries, or Ray failed
                        cause = getattr(exc, "cause", None) or exc
                        out = {"ok": False, "error": f"{type(cause).__name__}: {str(cause).splitlines()[0][:300]}",
                               "error_type": type(cause).__name__, "seconds": 0.0, "host": None, "pid": None,
                               "worker": "ray"}
                    yield i, out
        finally:
            for ref in self._pending:  # stopped early (Ctrl-C, an error in the driver): cancel the rest
                try:
                    ray.cancel(ref)
                except Exception:  # pragma: no cover
                    pass
            self._pending = []

    def close(self) -> None:
        if self._owns_cluster:
            from .cluster import shutdown

            shutdown()
            self._owns_cluster = False


__all__ = ["RayRunner"]
