"""Entry point of the cil-ray distribution (group ``cil``): registers the backend scheme
``ray:`` — ``make_backend("ray:speck", ...)`` builds :class:`cil_ray.RayBackend` ``("speck", ...)``.
Ray itself is imported only when such a backend is built, so loading the plugin stays cheap."""

from __future__ import annotations

from cil_core import hookimpl


@hookimpl
def cil_register_backends(register) -> None:
    from .backend import RayBackend

    register("ray:", RayBackend)
