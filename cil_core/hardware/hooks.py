"""What a :class:`~cil_core.hardware.session.HardwareSession` calls: one typed wrapper per
chip hook, handed to the session instead of the session importing the plugin registry.

:class:`ChipHooks` is the protocol (the session's whole view of the plugin system);
:class:`BackendHooks` serves a :class:`~cil_core.hardware.backend.Backend` by calling its own
methods and is the session's default. The plugin layer provides the implementation that asks
the registered plugins (``cil_core.plugin.registry.Registry.chip_hooks()``), which is what
:class:`cil_core.Trainer`, :func:`cil_core.fidelity` and ``cil.HardwareSession`` use.

Every wrapper takes the backend first and returns ``None`` only where no implementation
serves the backend (the session then raises a :class:`~cil_core.errors.PluginError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..errors import HardwareError
from .backend import Backend

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..network.description import NetworkSpec
    from .backend import Deployment
    from .observation import Observation


class ChipHooks(Protocol):
    """The three chip hooks, typed: the capacity check, the weight transfer, the forward."""

    def check(self, backend: Any, spec: "NetworkSpec") -> bool | None:
        """Raise :class:`~cil_core.errors.BackendCapacityError` if ``spec`` does not fit;
        ``True`` when an implementation served ``backend``, ``None`` when none did (then
        nothing was checked: the transfer may still refuse)."""

    def transfer(self, backend: Any, spec: "NetworkSpec", params: Mapping[str, "torch.Tensor"],
                 n_sets: int | None) -> "Deployment | None":
        """Weight transfer (``cil_transfer``)."""

    def forward(self, backend: Any, deployment: "Deployment", inputs: Any, record: bool) -> "Observation | None":
        """Forward on hardware (``cil_forward``)."""


def backend_name(backend: Any) -> str:
    """The name a backend is known by in messages."""
    return getattr(backend, "name", "") or type(backend).__name__


class BackendHooks:
    """:class:`ChipHooks` that call a :class:`~cil_core.hardware.backend.Backend`'s own
    ``check``/``transfer``/``forward`` (the bridge the core's built-in plugin registers, too);
    any other object is not served (``None``)."""

    def check(self, backend: Any, spec: "NetworkSpec") -> bool | None:
        if not isinstance(backend, Backend):
            return None
        backend.check(spec)
        return True

    def transfer(self, backend: Any, spec: "NetworkSpec", params: Mapping[str, "torch.Tensor"],
                 n_sets: int | None) -> "Deployment | None":
        if not isinstance(backend, Backend):
            return None
        dep = backend.transfer(spec, dict(params), n_sets)
        if dep is None:  # a Backend must answer for itself: None would read as "no plugin serves it"
            raise HardwareError(f"backend '{backend_name(backend)}' returned None from transfer, not a Deployment",
                                backend_name(backend))
        return dep

    def forward(self, backend: Any, deployment: "Deployment", inputs: Any, record: bool) -> "Observation | None":
        if not isinstance(backend, Backend):
            return None
        obs = backend.forward(deployment, inputs, record)
        if obs is None:
            raise HardwareError(f"backend '{backend_name(backend)}' returned None from forward, not an Observation",
                                backend_name(backend))
        return obs


__all__ = ["ChipHooks", "BackendHooks", "backend_name"]
