"""The core's own plugin: registers the ideal backend and the three algorithms, serves the
worker hooks for :class:`Backend`/:class:`Algorithm` objects, and validates every observation.

It is registered exactly like an external plugin (see :mod:`cil_core.plugins`).
"""

from __future__ import annotations

from typing import Any

import torch

from .algorithms import Algorithm, CilSpl, MetropolisHastings, Offline
from .backend import Backend, Deployment, Observation
from .backends import IdealBackend
from .data import as_dense
from .errors import CilError, HardwareError
from .hookspecs import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    register("ideal", IdealBackend)


@hookimpl
def cil_register_algorithms(register) -> None:
    register("offline", Offline)
    register("cil-spl", CilSpl)
    register("mh", MetropolisHastings)


@hookimpl
def cil_transfer(backend: Any, network: Any, params: dict, n_sets: int | None) -> Deployment | None:
    if not isinstance(backend, Backend):
        return None
    dep = backend.transfer(network, params, n_sets)
    if dep is None:  # a Backend must answer for itself: None would read as "no plugin serves it"
        raise HardwareError(f"backend '{_name(backend)}' returned None from transfer, not a Deployment", _name(backend))
    return dep


@hookimpl
def cil_forward(backend: Any, deployment: Deployment, inputs: Any, record: bool) -> Observation | None:
    if not isinstance(backend, Backend):
        return None
    obs = backend.forward(deployment, inputs, record)
    if obs is None:
        raise HardwareError(f"backend '{_name(backend)}' returned None from forward, not an Observation", _name(backend))
    return obs


@hookimpl
def cil_train_step(algorithm: Any, state: Any, batch: Any) -> Any:
    if not isinstance(algorithm, Algorithm):
        return None
    return algorithm.step(state, batch)


def _name(backend: Any) -> str:
    return getattr(backend, "name", "") or type(backend).__name__


@hookimpl(wrapper=True, specname="cil_transfer")
def guard_transfer(backend: Any, network: Any, params: dict, n_sets: int | None):
    """Turn an unexpected failure of a backend's weight transfer into a :class:`HardwareError`
    naming the backend (cil's own errors, e.g. a capacity error, pass unchanged)."""
    try:
        dep = yield
    except CilError:
        raise
    except Exception as exc:
        raise HardwareError(f"backend '{_name(backend)}' failed during weight transfer: {exc!r}", _name(backend)) from exc
    if dep is not None and not isinstance(dep, Deployment):
        raise HardwareError(f"backend '{_name(backend)}' returned {type(dep).__name__} from weight transfer, "
                            "not a Deployment", _name(backend))
    return dep


@hookimpl(wrapper=True, specname="cil_forward")
def guard_forward(backend: Any, deployment: Deployment, inputs: Any, record: bool):
    """Check every observation: type, time and batch dimensions, output shape, finiteness.

    A backend that raises or returns a malformed observation produces a :class:`HardwareError`
    naming it, never a silently wrong training signal."""
    name = _name(backend)
    try:
        obs = yield
    except CilError:
        raise
    except Exception as exc:
        raise HardwareError(f"backend '{name}' failed during forward: {exc!r}", name) from exc
    if obs is None:
        return None
    if not isinstance(obs, Observation) or not isinstance(obs.output, torch.Tensor):
        raise HardwareError(f"backend '{name}' returned {type(obs).__name__}, not an Observation with a tensor output", name)
    x = as_dense(inputs)
    T, B = x.shape[:2]
    spec = deployment.spec
    sets = () if deployment.n_sets is None else (deployment.n_sets,)
    want = (T, *sets, B, *spec.output_shape)
    if tuple(obs.output.shape) != want:
        raise HardwareError(f"backend '{name}' returned output of shape {tuple(obs.output.shape)}, expected {want}", name)
    if not torch.isfinite(obs.output).all():
        raise HardwareError(f"backend '{name}' returned non-finite output values (NaN or inf)", name)
    if record and obs.layers is not None:
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
                if not torch.isfinite(t).all():
                    raise HardwareError(f"backend '{name}': layer {k} {what} hold non-finite values", name)
    return obs
