"""Model adapters: turn a model from an SNN library into a :class:`~cil_core.ir.NetworkSpec`.

An adapter is any object with

* ``name: str`` and ``description: str`` (what it supports, shown in errors and ``cil plugins``),
* ``accepts(model) -> bool`` — cheap check of the model *type* (not its layers),
* ``to_spec(model, **options) -> NetworkSpec`` — raises
  :class:`~cil_core.errors.UnsupportedLayerError` naming the first layer (or layer option) it
  cannot express,
* optionally ``run_native(model, x) -> Tensor`` — the model's own forward over a time-major
  input, returning the output in the layout of ``Observation.output`` (used by equivalence
  tests and benchmarks),
* optionally ``parameters(model, spec) -> dict[str, Tensor]`` — the tensors named in the spec
  (default: ``dict(model.named_parameters())``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .ir import NetworkSpec


@runtime_checkable
class ModelAdapter(Protocol):
    name: str
    description: str

    def accepts(self, model: Any) -> bool: ...

    def to_spec(self, model: Any, **options: Any) -> NetworkSpec: ...


def qualname(obj: Any) -> str:
    """``module.Class`` of an object's type, for error messages."""
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"

