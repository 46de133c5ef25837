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



class LazyAdapter:
    """Registers an adapter without importing its SNN library until a model needs it.

    ``accepts`` looks only at the module path of the model's classes (``snntorch.…``), so
    loading the plugin (``cil plugins``, every ``import cil_core`` user) stays cheap; the real
    adapter ``"package.module:Class"`` is imported on first use.
    """

    def __init__(self, target: str, name: str, description: str, libraries: tuple[str, ...]) -> None:
        self.target, self.name, self.description, self.libraries = target, name, description, libraries
        self._real: Any = None

    @property
    def real(self) -> Any:
        if self._real is None:
            import importlib

            mod, cls = self.target.split(":")
            self._real = getattr(importlib.import_module(mod), cls)()
        return self._real

    def accepts(self, model: Any) -> bool:
        modules = model.modules() if hasattr(model, "modules") else [model]
        if not any(type(m).__module__.split(".")[0] in self.libraries for m in modules):
            return False
        return bool(self.real.accepts(model))

    def to_spec(self, model: Any, **options: Any) -> NetworkSpec:
        return self.real.to_spec(model, **options)

    def __getattr__(self, item: str) -> Any:  # run_native, parameters, ... of the real adapter
        if item.startswith("_") or item in ("target", "libraries"):
            raise AttributeError(item)
        return getattr(self.real, item)
