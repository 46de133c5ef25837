"""The application's own plugin: registers the ``demo`` job (``cil demo``) and the ``local``
sweep runner. Registered by module name like the library's built-ins
(:data:`cil_core.plugin.loader.BUILTIN_PLUGINS`), so the library never imports the application."""

from __future__ import annotations

from ..plugin.hookspecs import hookimpl


def demo(argv: list[str]) -> int:
    """``cil demo``: :func:`cil_core.app.demo.main`."""
    from .demo import main

    return main(argv)


@hookimpl
def cil_register_jobs(register) -> None:
    register("demo", demo, help="breast cancer, offline vs CIL-SPL vs MH on a mismatched chip (the main job)",
             kind="demo")


@hookimpl
def cil_register_runners(register) -> None:
    from .sweep import LocalRunner

    register("local", LocalRunner)
