"""The core's own plugin: registers the ``ideal`` backend, the three algorithms, the ``demo``
job and the ``local`` sweep runner, and bridges the worker hooks to
:class:`Backend`/:class:`Algorithm` objects.

It is registered exactly like an external plugin (see :mod:`cil_core.plugin.manager`).
Validation, retries and timeouts are not hooks: they belong to the
:class:`~cil_core.hardware.HardwareSession`, the one caller of ``cil_transfer``/``cil_forward``.
"""

from __future__ import annotations

from typing import Any

from ..errors import HardwareError
from ..hardware.backend import Backend, Deployment, Observation
from ..hardware.session import backend_name
from ..training.algorithm import Algorithm
from .hookspecs import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    from ..hardware.ideal import IdealBackend

    register("ideal", IdealBackend)


@hookimpl
def cil_register_algorithms(register) -> None:
    from ..training import CilSpl, MetropolisHastings, Offline

    register("offline", Offline)
    register("cil-spl", CilSpl)
    register("mh", MetropolisHastings)


@hookimpl
def cil_register_jobs(register) -> None:
    def demo(argv: list[str]) -> int:
        from ..demo import main

        return main(argv)

    register("demo", demo, help="breast cancer, offline vs CIL-SPL vs MH on a mismatched chip (the main job)",
             kind="demo")


@hookimpl
def cil_register_runners(register) -> None:
    from ..sweep import LocalRunner

    register("local", LocalRunner)


@hookimpl
def cil_transfer(backend: Any, spec: Any, params: dict, n_sets: int | None) -> Deployment | None:
    if not isinstance(backend, Backend):
        return None
    dep = backend.transfer(spec, params, n_sets)
    if dep is None:  # a Backend must answer for itself: None would read as "no plugin serves it"
        raise HardwareError(f"backend '{backend_name(backend)}' returned None from transfer, not a Deployment",
                            backend_name(backend))
    return dep


@hookimpl
def cil_forward(backend: Any, deployment: Deployment, inputs: Any, record: bool) -> Observation | None:
    if not isinstance(backend, Backend):
        return None
    obs = backend.forward(deployment, inputs, record)
    if obs is None:
        raise HardwareError(f"backend '{backend_name(backend)}' returned None from forward, not an Observation",
                            backend_name(backend))
    return obs


@hookimpl
def cil_train_step(algorithm: Any, state: Any, batch: Any) -> Any:
    if not isinstance(algorithm, Algorithm):
        return None
    return algorithm.step(state, batch)
