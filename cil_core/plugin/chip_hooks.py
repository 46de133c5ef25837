"""The registry's chip hooks: :class:`~cil_core.hardware.hooks.ChipHooks` that ask every
registered plugin (``cil_check``, ``cil_transfer``, ``cil_forward``).

The hardware layer never imports the registry: whoever builds a session above it (the
trainer, the fidelity report, ``check_backend``, :mod:`cil_core.plugin.session`) hands it
these hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pluggy
    import torch

    from ..hardware.backend import Deployment
    from ..hardware.observation import Observation
    from ..network.description import NetworkSpec


class RegistryChipHooks:
    """One typed wrapper per chip hook over a pluggy hook relay (``firstresult`` hooks: the
    first plugin that serves the backend answers)."""

    def __init__(self, pm: "pluggy.PluginManager") -> None:
        self._hook = pm.hook

    def check(self, backend: Any, spec: "NetworkSpec") -> bool | None:
        served = self._hook.cil_check(backend=backend, spec=spec)
        if served is None:  # no plugin checks this object: its own check method, where it has one
            check = getattr(backend, "check", None)
            if callable(check):
                check(spec)
                return True
        return served

    def transfer(self, backend: Any, spec: "NetworkSpec", params: Mapping[str, "torch.Tensor"],
                 n_sets: int | None) -> "Deployment | None":
        return self._hook.cil_transfer(backend=backend, spec=spec, params=params, n_sets=n_sets)

    def forward(self, backend: Any, deployment: "Deployment", inputs: Any, record: bool) -> "Observation | None":
        return self._hook.cil_forward(backend=backend, deployment=deployment, inputs=inputs, record=record)


__all__ = ["RegistryChipHooks"]
