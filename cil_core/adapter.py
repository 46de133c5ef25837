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

from .errors import UnsupportedLayerError
from .ir import Conv2d, Dense, Flatten, Layer, NetworkSpec, Pool2d


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



def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


#: torch layers every adapter understands the same way
TORCH_LAYERS = "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.Flatten, nn.Identity"


def torch_layer(name: str, m: Any) -> Layer | None | bool:
    """Describe a plain torch layer shared by all SNN libraries (``nn.Linear``, ``nn.Conv2d``,
    ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Identity``).

    Parameter names are ``f"{name}.weight"`` / ``f"{name}.bias"`` (the model's own). Returns the
    layer, ``None`` for a layer without effect (``Identity``), or ``False`` if ``m`` is not one of
    these types (the adapter then tries its library's own layers). Raises
    :class:`UnsupportedLayerError` naming the layer and option when a variant is not expressible.
    """
    from torch import nn

    where = f"layer '{name}' ({type(m).__name__})"
    if isinstance(m, nn.Linear):
        return Dense(f"{name}.weight", f"{name}.bias" if m.bias is not None else None, m.in_features, m.out_features)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"{where}: groups, dilation, string padding and non-zero padding modes are not supported")
        return Conv2d(f"{name}.weight", f"{name}.bias" if m.bias is not None else None, m.in_channels, m.out_channels,
                      _pair(m.kernel_size), _pair(m.stride), _pair(m.padding))
    if isinstance(m, nn.AvgPool2d):
        if _pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override is not None:
            raise UnsupportedLayerError(f"{where}: padding, ceil_mode and divisor_override are not supported")
        k = _pair(m.kernel_size)
        return Pool2d(k, _pair(m.stride) if m.stride is not None else k, "avg")
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return Flatten()
    if isinstance(m, nn.Identity):
        return None
    return False


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
