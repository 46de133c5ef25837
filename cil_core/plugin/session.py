"""``cil.HardwareSession``: the hardware session handed the process-wide registry's chip hooks."""

from __future__ import annotations

from typing import Any

from ..hardware.hooks import ChipHooks
from ..hardware.session import HardwareSession as _Session
from .registry import get_manager


def registry_hooks() -> ChipHooks:
    """The process-wide registry's chip hooks."""
    return get_manager().chip_hooks()


class HardwareSession(_Session):
    """:class:`cil_core.hardware.HardwareSession` handed the process-wide registry's chip hooks
    unless ``hooks`` names others: every registered plugin may serve the backend."""

    def __init__(self, backend: Any, *, retries: int = 0, timeout: float | None = None,
                 hooks: ChipHooks | None = None) -> None:
        super().__init__(backend, retries=retries, timeout=timeout,
                         hooks=registry_hooks() if hooks is None else hooks)


__all__ = ["registry_hooks", "HardwareSession"]
