"""The wrapped network: a user's model plus its hardware-neutral description.

:class:`WrappedNetwork` owns no weights of its own: its synaptic tensors *are* the parameters of
the user's model (looked up by name), so training through cil trains the user's model in place
and the model stays usable with its own library afterwards.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import NonFiniteError, SpecError
from .executor import NetworkTrace, simulate
from .neuron import Neuron
from .observation import LayerObservation
from .spec import NetworkSpec


class WrappedNetwork(nn.Module):
    """A model from any supported library, described by ``spec``.

    Calling it runs the **software** model (time-stepped, surrogate gradients) on a time-major
    input ``[T, B, *input_shape]`` and returns the output ``[T, B, *out]``.
    """

    def __init__(self, module: nn.Module, spec: NetworkSpec, adapter: str,
                 parameters: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.module = module
        self.spec = spec
        self.adapter = adapter
        params = dict(module.named_parameters()) if parameters is None else dict(parameters)
        missing = [n for n in spec.parameter_names() if n not in params]
        if missing:
            raise SpecError(f"adapter '{adapter}' named parameters the model does not have: {missing}")
        self._names = spec.parameter_names()
        self._lookup = {n: params[n] for n in self._names}

    # -------------------------------------------------------------- parameters
    def synaptic_parameters(self) -> dict[str, torch.Tensor]:
        """The trainable synaptic tensors, by spec name (the model's own Parameter objects)."""
        return dict(self._lookup)

    def parameter_names(self) -> list[str]:
        return list(self._names)

    def detached_parameters(self) -> dict[str, torch.Tensor]:
        """A detached copy of the synaptic tensors (what a weight transfer reads)."""
        return {n: p.detach().clone() for n, p in self._lookup.items()}

    def load_parameters(self, values: Mapping[str, torch.Tensor]) -> None:
        """Copy ``values`` into the model's parameters (in place, no autograd).

        Raises :class:`NonFiniteError` and leaves the model untouched if any value is not finite.
        """
        for n in self._names:
            if n not in values:
                raise SpecError(f"parameter '{n}' is missing")
            if not torch.isfinite(values[n]).all():
                raise NonFiniteError(f"parameter '{n}' holds non-finite values; the model was not changed")
        with torch.no_grad():
            for n in self._names:
                self._lookup[n].copy_(values[n].to(self._lookup[n].device, self._lookup[n].dtype))
            for _, layer in self.spec.neuron_layers():  # recurrent synapses without autapses keep a zero diagonal
                if layer.recurrent is not None and not layer.recurrent.autapses:
                    self._lookup[layer.recurrent.weight].fill_diagonal_(0.0)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` naming the first non-finite synaptic tensor."""
        for n, p in self._lookup.items():
            if not torch.isfinite(p).all():
                raise NonFiniteError(f"parameter '{n}' of the wrapped model holds NaN or inf values")

    @property
    def device(self) -> torch.device:
        return next(iter(self._lookup.values())).device

    # -------------------------------------------------------------- software pass
    def run(
        self,
        x: torch.Tensor,
        *,
        record: bool = False,
        record_membrane: bool = False,
        observations: Sequence[LayerObservation | None] | None = None,
        neurons: Sequence[Neuron] | None = None,
    ) -> NetworkTrace:
        """Software forward with autograd; see :func:`cil_core.network.executor.simulate`
        (``neurons``: the neuron layers to run instead of the spec's, e.g. with the values a chip
        realises)."""
        return simulate(self.spec, self._lookup, x, record=record, record_membrane=record_membrane,
                        observations=observations, neurons=neurons, training=self.training and torch.is_grad_enabled())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.run(x).output

    def extra_repr(self) -> str:
        return f"adapter={self.adapter!r}\n" + self.spec.describe()

    def __getstate__(self) -> dict[str, Any]:  # keep pickling simple: lookup is rebuilt
        state = self.__dict__.copy()
        state.pop("_lookup", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        params = dict(self.module.named_parameters())
        self._lookup = {n: params[n] for n in self._names}
