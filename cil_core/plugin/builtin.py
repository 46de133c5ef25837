"""The library's own plugin: registers the ``ideal`` backend and the four algorithms, and
bridges the worker hooks to :class:`Backend`/:class:`Algorithm` objects. (The application's
parts, the ``demo`` job and the ``local`` sweep runner, are :mod:`cil_core.app.builtin`'s.)

It is registered exactly like an external plugin, by module name (see
:data:`cil_core.plugin.loader.BUILTIN_PLUGINS`).
Validation, retries and timeouts are not hooks: they belong to the
:class:`~cil_core.hardware.HardwareSession`, the one caller of ``cil_transfer``/``cil_forward``.
"""

from __future__ import annotations

from typing import Any

from ..hardware.backend import Deployment, Observation
from ..hardware.hooks import BackendHooks
from ..training.algorithm import Algorithm
from .hookspecs import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    from ..hardware.ideal import IdealBackend

    register("ideal", IdealBackend)


@hookimpl
def cil_register_algorithms(register) -> None:
    from ..training import CilSpl, Langevin, MetropolisHastings, Offline

    register("offline", Offline)
    register("cil-spl", CilSpl)
    register("mh", MetropolisHastings)
    register("mala", Langevin)


_BACKEND = BackendHooks()  # the bridge: a Backend's own methods


@hookimpl
def cil_check(backend: Any, spec: Any) -> bool | None:
    return _BACKEND.check(backend, spec)


@hookimpl
def cil_transfer(backend: Any, spec: Any, params: dict, n_sets: int | None) -> Deployment | None:
    return _BACKEND.transfer(backend, spec, params, n_sets)


@hookimpl
def cil_forward(backend: Any, deployment: Deployment, inputs: Any, record: bool) -> Observation | None:
    return _BACKEND.forward(backend, deployment, inputs, record)


@hookimpl
def cil_train_step(algorithm: Any, state: Any, batch: Any) -> Any:
    if not isinstance(algorithm, Algorithm):
        return None
    return algorithm.step(state, batch)
