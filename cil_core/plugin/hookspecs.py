"""Hook specifications: the contract between the cil core and its plugins.

Three hooks carry the work of chip-in-the-loop training:

1. :func:`cil_transfer` — **weight transfer**: software parameters → what the chip holds
   (scaling, quantization, clipping). Returns a :class:`~cil_core.hardware.Deployment`.
2. :func:`cil_forward` — **forward on hardware**: run a deployment on a batch of inputs and
   return an :class:`~cil_core.hardware.Observation`.
3. :func:`cil_train_step` — **the training step** of an algorithm (a Metropolis-Hastings
   proposal/acceptance or a gradient step). Returns a :class:`~cil_core.training.algorithm.StepResult`.

All three are ``firstresult``: the first implementation that returns something other than
``None`` answers, so a plugin answers only for the backends/algorithms it owns and returns
``None`` otherwise. The core ships implementations that call the methods of
:class:`~cil_core.hardware.Backend` and :class:`~cil_core.training.algorithm.Algorithm` objects, so
a plugin can either subclass those or implement the hooks directly (``tryfirst=True`` to take
precedence). Hook wrappers (``wrapper=True``) may observe every call. The only caller of the two hardware
hooks is :class:`~cil_core.hardware.HardwareSession`, which validates what they return.

Registration hooks let plugins contribute named parts; each receives a ``register`` callback:

* :func:`cil_register_backends` — ``register(name, factory)``; ``factory(**options)`` builds a backend.
* :func:`cil_register_adapters` — ``register(name, adapter)``; see :class:`~cil_core.plugin.adapter.ModelAdapter`.
* :func:`cil_register_algorithms` — ``register(name, factory)``; ``factory(**options)`` builds an algorithm.
* :func:`cil_register_jobs` — ``register(name, func, help, kind)``: CLI jobs (``cil demo``).
* :func:`cil_register_runners` — ``register(name, factory)``: what runs the points of ``cil sweep``.
* :func:`cil_register_datasets` — ``register(name, factory)``: data sets ``cil train --data NAME:ROOT`` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..hardware import Backend, Deployment, Observation
    from ..network.description import NetworkSpec
    from ..training.algorithm import Algorithm, StepResult, TrainState

PROJECT = "cil"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- registration
@hookspec
def cil_register_backends(register: Callable[[str, Callable[..., "Backend"]], None]) -> None:
    """Register named backends: ``register("my-chip", MyChip)``.

    ``factory(**options)`` must return an object that :func:`cil_transfer` and
    :func:`cil_forward` can serve (normally a :class:`~cil_core.hardware.Backend` subclass).
    Registering a name that is already taken raises :class:`~cil_core.errors.PluginError`.
    """


@hookspec
def cil_register_adapters(register: Callable[[str, Any], None]) -> None:
    """Register named model adapters: ``register("snntorch", SnnTorchAdapter())``.

    An adapter has ``accepts(model) -> bool`` and ``adapt(model, **options) -> AdaptedModel`` (the
    description, the module that owns the tensors and the tensors; a
    :class:`~cil_core.plugin.adapter.ModelAdapter` subclass derives ``adapt`` from its ``to_spec``). :func:`cil_core.wrap` asks the adapters in
    registration order and uses the first that accepts the model.
    """


@hookspec
def cil_register_algorithms(register: Callable[[str, Callable[..., "Algorithm"]], None]) -> None:
    """Register named training algorithms: ``register("mh", MetropolisHastings)``."""


@hookspec
def cil_register_jobs(register: Callable[..., None]) -> None:
    """Register CLI jobs: ``register(name, func, help="...", kind="demo")``.

    ``func(argv: list[str]) -> int`` parses its own options. ``cil demo`` runs the job named
    ``"demo"`` (the core registers one). Research scripts are not jobs: they live in the
    repository's ``benchmarks/``, outside every installed distribution.
    """


@hookspec
def cil_register_runners(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register named sweep runners: ``register("ray", RayRunner)`` (``cil sweep --runner ray``).

    ``factory(**options)`` (options checked against its signature) returns an object with
    ``run(fn, payloads, threads)``, a generator of ``(index, outcome)`` pairs in the order the
    points finish, where ``outcome`` is what :func:`cil_core.app.sweep.execute` ``(fn, payloads[index],
    threads)`` returns (run wherever the runner likes; it may add a ``"worker"`` entry), and
    ``close()``. The core registers ``local`` (:class:`cil_core.app.sweep.LocalRunner`).
    """


@hookspec
def cil_register_datasets(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register named data sets: ``register("nmnist", NMNISTDataset)`` (``cil train --data nmnist:ROOT``).

    ``factory(root, train=True, **options)`` (options checked against its signature) returns what
    :meth:`~cil_core.Trainer.fit` accepts — typically a torch ``Dataset`` read lazily from the
    folder ``root`` — with ``train=False`` for the test split.
    """


# ---------------------------------------------------------------- the three workers
@hookspec(firstresult=True)
def cil_check(backend: "Backend", spec: "NetworkSpec") -> "bool | None":
    """Capacity check before the first call: raise :class:`~cil_core.errors.BackendCapacityError`
    naming the limit if ``spec`` (the network as the chip receives it: dropout removed, batch
    norm folded where the backend does not run it) does not fit ``backend``; return ``True``
    when this implementation serves ``backend``, ``None`` otherwise. A backend no
    implementation checks is asked at transfer time instead.
    """


@hookspec(firstresult=True)
def cil_transfer(
    backend: "Backend", spec: "NetworkSpec", params: "dict[str, torch.Tensor]", n_sets: "int | None"
) -> "Deployment | None":
    """Weight transfer: turn software parameters into what ``backend`` holds.

    ``spec`` is the hardware-neutral network description (never the user's module: a chip on
    another host must not need the user's SNN library). ``params`` maps every name in
    ``spec.parameter_names()`` to a tensor (with a
    leading dimension ``n_sets`` when several parameter sets are transferred at once, for
    batched proposal scoring; a backend that cannot hold several sets raises
    :class:`~cil_core.errors.BackendCapacityError` or the caller falls back to one at a time
    when ``backend.max_sets`` is 1; the :class:`~cil_core.hardware.HardwareSession` never sends
    more than ``max_sets``).

    Must return a :class:`~cil_core.hardware.Deployment` (the chip-side values: scaled,
    quantized, clipped) or ``None`` if this implementation does not serve ``backend``.
    Must raise :class:`~cil_core.errors.BackendCapacityError` naming the violated limit when
    the model does not fit. Must not modify ``params``.
    """


@hookspec(firstresult=True)
def cil_forward(
    backend: "Backend", deployment: "Deployment", inputs: Any, record: bool
) -> "Observation | None":
    """Forward on hardware: run ``deployment`` on ``inputs`` and return what was observed.

    ``inputs`` is time-major ``[T, B, *input_shape]`` (a tensor) or an object the backend
    understands (e.g. an :class:`~cil_core.data.EventBatch`). The returned
    :class:`~cil_core.hardware.Observation` has ``output`` of shape ``[T, B, *out]``
    (``[T, S, B, *out]`` for ``n_sets = S``) in the software model's time bins, and, if
    ``record`` is true and the backend can observe them, per-layer spikes/membranes.
    No gradient is required; state must not leak from one call (or one sample) to the next.
    Return ``None`` if this implementation does not serve ``backend``.
    """


@hookspec(firstresult=True)
def cil_train_step(algorithm: "Algorithm", state: "TrainState", batch: Any) -> "StepResult | None":
    """One training step of ``algorithm`` on ``batch`` (``(inputs, targets)``).

    A gradient algorithm computes a loss (on the hardware output for CIL-SPL), back-propagates
    through the software graph and steps its optimizer; Metropolis-Hastings proposes new
    weights, scores them on the backend and accepts or rejects. Must leave ``state`` consistent
    (the current parameters are always a valid, finite set) and return a
    :class:`~cil_core.training.algorithm.StepResult`, or ``None`` if not serving ``algorithm``.
    """
