"""Model adapters: turn a model from an SNN library into what cil trains.

An adapter is any object with

* ``accepts(model) -> bool`` — cheap check of the model *type* (not its layers),
* ``adapt(model, **options) -> AdaptedModel`` — the :class:`~cil_core.network.NetworkSpec`,
  the torch module holding the parameters, and those parameters by spec name, together. It
  raises :class:`~cil_core.errors.UnsupportedLayerError` naming the first layer (or layer
  option) it cannot express. :class:`ModelAdapter` derives ``adapt`` from ``to_spec`` for the
  common case where the model itself holds the parameters under the names the spec uses;
* optionally ``run_native(model, x) -> Tensor`` — the model's own forward over a time-major
  input, in the layout of ``Observation.output`` (used by equivalence tests and benchmarks).

Its ``name`` and ``description`` (what it supports, shown in errors and ``cil plugins``) are
given once, where the plugin registers it (a :class:`LazyAdapter` keeps them, so listing
plugins never imports an SNN library).

Helpers every adapter shares live here once: :func:`torch_layer` (the plain torch layers),
:func:`pair` and :func:`infer_input_shape`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ShapeError, UnsupportedLayerError
from ..network.description import BatchNorm, Conv1d, Conv2d, Dense, Dropout, Flatten, Layer, NetworkSpec, Pool2d


@dataclass
class AdaptedModel:
    """What an adapter hands to :func:`cil_core.wrap`: the description, the module that owns
    the parameters (trained in place, saved with the wrapped network), and the tensors named in
    ``spec`` (``None``: ``dict(module.named_parameters())``)."""

    spec: NetworkSpec
    module: nn.Module
    parameters: Mapping[str, torch.Tensor] | None = None


class ModelAdapter:
    """Base class of adapters whose model owns its parameters under the spec's names: subclass
    and implement :meth:`accepts` and :meth:`to_spec`."""

    name: str = ""
    description: str = ""

    def accepts(self, model: Any) -> bool:
        raise NotImplementedError

    def to_spec(self, model: Any, **options: Any) -> NetworkSpec:
        raise NotImplementedError

    def adapt(self, model: Any, **options: Any) -> AdaptedModel:
        if not isinstance(model, nn.Module):
            raise UnsupportedLayerError(f"adapter '{self.name}' expects a torch.nn.Module, got {qualname(model)}")
        return AdaptedModel(self.to_spec(model, **options), model)


def qualname(obj: Any) -> str:
    """``module.Class`` of an object's type, for error messages."""
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def pair(v: Any, where: str = "", what: str = "value") -> tuple[int, int]:
    """``3`` → ``(3, 3)``; ``(2, 3)`` → ``(2, 3)``: torch's kernel/stride/padding arguments, and
    the same given as numpy arrays (NIR). Raises :class:`UnsupportedLayerError` naming ``where``
    and ``what`` for anything else."""
    flat = torch.as_tensor(v).reshape(-1).tolist() if not isinstance(v, int) else [v]
    if len(flat) == 1:
        return int(flat[0]), int(flat[0])
    if len(flat) == 2:
        return int(flat[0]), int(flat[1])
    raise UnsupportedLayerError(f"{where + ': ' if where else ''}{what} {v!r} is not a 2-D value")


def infer_input_shape(first: Any, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample input shape: ``input_shape`` if given, else ``(in_features,)`` of a first
    ``nn.Linear``. Raises :class:`ShapeError` asking for ``input_shape`` otherwise."""
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ShapeError(f"the first layer is {type(first).__name__}; pass input_shape (per sample: (C, H, W), (C, L) or (features,)) to cil_core.wrap")


#: torch layers every adapter understands the same way
TORCH_LAYERS = ("nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm1d/2d, nn.Dropout, "
                "nn.Flatten, nn.Identity")


def torch_layer(name: str, m: Any) -> Layer | None | bool:
    """Describe a plain torch layer shared by all SNN libraries (see :data:`TORCH_LAYERS`).

    ``nn.BatchNorm*`` is described with its running statistics (cil always normalises with
    them, as the model does in ``eval()`` mode); ``nn.Dropout`` acts in software training
    passes only.

    Parameter names are ``f"{name}.weight"`` / ``f"{name}.bias"`` (the model's own). Returns the
    layer, ``None`` for a layer without effect (``Identity``), or ``False`` if ``m`` is not one of
    these types (the adapter then tries its library's own layers). Raises
    :class:`UnsupportedLayerError` naming the layer and option when a variant is not expressible.
    """
    where = f"layer '{name}' ({type(m).__name__})"
    if isinstance(m, nn.Linear):
        return Dense(f"{name}.weight", f"{name}.bias" if m.bias is not None else None, m.in_features, m.out_features)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"{where}: groups, dilation, string padding and non-zero padding modes are not supported")
        return Conv2d(f"{name}.weight", f"{name}.bias" if m.bias is not None else None, m.in_channels, m.out_channels,
                      pair(m.kernel_size), pair(m.stride), pair(m.padding))
    if isinstance(m, nn.Conv1d):
        if m.groups != 1 or m.dilation[0] != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"{where}: groups, dilation, string padding and non-zero padding modes are not supported")
        return Conv1d(f"{name}.weight", f"{name}.bias" if m.bias is not None else None, m.in_channels, m.out_channels,
                      int(m.kernel_size[0]), int(m.stride[0]), int(m.padding[0]))
    if isinstance(m, nn.MaxPool2d):
        if pair(m.padding) != (0, 0) or pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
            raise UnsupportedLayerError(f"{where}: padding, dilation, ceil_mode and return_indices are not supported")
        k = pair(m.kernel_size)
        return Pool2d(k, pair(m.stride) if m.stride is not None else k, "max")
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not m.track_running_stats or m.running_mean is None:
            raise UnsupportedLayerError(f"{where}: track_running_stats=False is not supported (cil normalises with the "
                                        "running statistics, as the model does in eval mode)")
        return BatchNorm(f"{name}.weight" if m.affine else None, f"{name}.bias" if m.affine else None,
                         m.num_features, m.running_mean.detach().clone(), m.running_var.detach().clone(), float(m.eps))
    if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d)) and type(m) is not nn.AlphaDropout:
        if isinstance(m, (nn.Dropout1d, nn.Dropout2d)):
            raise UnsupportedLayerError(f"{where}: channel dropout is not supported; use nn.Dropout")
        return Dropout(float(m.p))
    if isinstance(m, nn.AvgPool2d):
        if pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override is not None:
            raise UnsupportedLayerError(f"{where}: padding, ceil_mode and divisor_override are not supported")
        k = pair(m.kernel_size)
        return Pool2d(k, pair(m.stride) if m.stride is not None else k, "avg")
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return Flatten()
    if isinstance(m, nn.Identity):
        return None
    return False


def flat_children(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The children of an ``nn.Sequential`` in call order, with nested ``nn.Sequential``
    containers flattened (names keep their dots, ``"0.1"``, so parameter names stay the
    model's own)."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            out += flat_children(m, full + ".")
        else:
            out.append((full, m))
    return out


class LazyAdapter:
    """Registers an adapter without importing its SNN library until a model needs it.

    ``accepts`` looks only at the module path of the model's classes (``snntorch.…``), so
    loading the plugin (``cil plugins``, every ``import cil_core`` user) stays cheap; the real
    adapter ``"package.module:Class"`` is imported on first use and given this ``name`` and
    ``description`` (written once, here).
    """

    def __init__(self, target: str, name: str, description: str, libraries: tuple[str, ...]) -> None:
        self.target, self.name, self.description, self.libraries = target, name, description, libraries
        self._real: Any = None

    @property
    def real(self) -> Any:
        if self._real is None:
            import importlib

            mod, cls = self.target.split(":")
            real = getattr(importlib.import_module(mod), cls)()
            real.name, real.description = self.name, self.description
            self._real = real
        return self._real

    def accepts(self, model: Any) -> bool:
        # torch's own modules(): some libraries override it (rockpool's returns a dict of names)
        modules = nn.Module.modules(model) if isinstance(model, nn.Module) else \
            model.modules() if hasattr(model, "modules") else [model]
        if not any(type(m).__module__.split(".")[0] in self.libraries for m in modules):
            return False
        return bool(self.real.accepts(model))

    def adapt(self, model: Any, **options: Any) -> AdaptedModel:
        return self.real.adapt(model, **options)

    def __getattr__(self, item: str) -> Any:  # to_spec, run_native, ... of the real adapter
        if item.startswith("_") or item in ("target", "libraries"):
            raise AttributeError(item)
        return getattr(self.real, item)


def lazy_adapter_hook(target: str, name: str, description: str, libraries: tuple[str, ...],
                      adapter_class: type = LazyAdapter) -> Any:
    """A ``cil_register_adapters`` hook implementation that registers one :class:`LazyAdapter`:
    a plugin module writes ``cil_register_adapters = lazy_adapter_hook(...)`` and nothing else."""
    from .hookspecs import hookimpl

    @hookimpl(specname="cil_register_adapters")
    def cil_register_adapters(register: Any) -> None:
        register(name, adapter_class(target, name, description, libraries=libraries))

    return cil_register_adapters


__all__ = ["AdaptedModel", "ModelAdapter", "LazyAdapter", "lazy_adapter_hook", "torch_layer", "TORCH_LAYERS", "pair",
           "flat_children",
           "infer_input_shape", "qualname"]
