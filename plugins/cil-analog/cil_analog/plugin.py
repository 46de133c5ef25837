"""Entry point of the ``cil`` plugin group: registers the ``analog-mismatch`` backend and the
``mh-vs-backprop`` bench job."""

from __future__ import annotations

from cil_core import hookimpl

from .backend import AnalogMismatchBackend


@hookimpl
def cil_register_backends(register) -> None:
    register("analog-mismatch", AnalogMismatchBackend)


def _bench(argv: list[str]) -> int:
    from .bench import main

    return main(argv)


@hookimpl
def cil_register_jobs(register) -> None:
    register("mh-vs-backprop", _bench,
             help="Safa et al. 2024 re-creation: MH vs offline backprop vs CIL-SPL on the analog-mismatch chip "
                  "(accuracy vs strength and vs training-set fraction; --quick for a short run)",
             kind="bench")
