"""Entry point of the cil-ray distribution (group ``cil``): registers the backend scheme
``ray:`` — ``make_backend("ray:speck", ...)`` builds :class:`cil_ray.RayBackend` ``("speck", ...)`` —
and the sweep runner ``ray`` (``cil sweep --runner ray``: one Ray task per grid point,
:class:`cil_ray.sweep.RayRunner`). Ray itself is imported only when such a backend or runner is
built, so loading the plugin stays cheap."""

from __future__ import annotations

from cil_core import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    from .backend import RayBackend

    register("ray:", RayBackend)


@hookimpl
def cil_register_runners(register) -> None:
    from .sweep import RayRunner

    register("ray", RayRunner)
