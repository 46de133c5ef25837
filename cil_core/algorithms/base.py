"""What every training algorithm shares: the training state, the step result, and the
hardware access (weight transfer + forward on hardware, through the hooks, with retries)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..backend import Backend, Deployment, Observation
from ..errors import HardwareError
from ..losses import Readout

if TYPE_CHECKING:  # pragma: no cover
    from ..data import SpikeData
    from ..network import WrappedNetwork
    from ..plugins import Registry


@dataclass
class StepResult:
    """What one training step reports. ``loss`` is the loss the step optimized (on the
    hardware output for chip-in-the-loop algorithms); ``metrics`` holds anything else
    (``accuracy``, ``acceptance``, ``log_posterior``...)."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """Everything a training step may touch. Algorithms keep their own state in themselves."""

    network: "WrappedNetwork"
    backend: Backend
    readout: Readout
    registry: "Registry"
    generator: torch.Generator
    retries: int = 0
    step: int = 0
    epoch: int = 0
    hardware_calls: int = 0
    hardware_seconds: float = 0.0
    #: seconds one hardware call (transfer + forward) may take; ``None``: no limit
    timeout: float | None = None

    def transfer(self, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Weight transfer through the ``cil_transfer`` hook."""
        return self.registry.transfer(self.backend, self.network, params, n_sets)

    def observe(self, params: dict[str, torch.Tensor], inputs: Any, n_sets: int | None = None,
                record: bool = False) -> Observation:
        """Transfer ``params`` and run ``inputs`` on the backend.

        A call that fails with a :class:`HardwareError` (the adapter raised, returned a malformed
        or non-finite observation, or took longer than ``timeout`` seconds) is retried
        ``retries`` times; then a :class:`HardwareError` naming the backend is raised. cil's
        other errors (a model that does not fit, a bad input shape) are not retried."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            t0 = time.perf_counter()
            try:
                obs = self._call(params, inputs, n_sets, record)
                self.hardware_calls += 1
                self.hardware_seconds += time.perf_counter() - t0
                return obs
            except HardwareError as exc:
                last = exc
        assert last is not None
        if self.retries:
            raise HardwareError(f"{last} (failed {self.retries + 1} times)", getattr(last, "backend", "")) from last
        raise last

    def _call(self, params: dict[str, torch.Tensor], inputs: Any, n_sets: int | None, record: bool) -> Observation:
        """One weight transfer + forward, in a worker thread when a ``timeout`` is set.

        Python cannot stop a thread: a call that times out is abandoned (its result is discarded)
        and keeps running in the background until the adapter returns. A hardware adapter whose
        calls may hang should therefore also time out on its own I/O."""
        if self.timeout is None:
            dep = self.transfer(params, n_sets)
            return self.registry.forward(self.backend, dep, inputs, record)
        result: dict[str, Any] = {}
        grad = torch.is_grad_enabled()

        def work() -> None:
            try:
                with torch.set_grad_enabled(grad):  # grad mode is per thread
                    dep = self.transfer(params, n_sets)
                    result["obs"] = self.registry.forward(self.backend, dep, inputs, record)
            except BaseException as exc:  # re-raised in the caller's thread
                result["exc"] = exc

        name = getattr(self.backend, "name", "") or type(self.backend).__name__
        worker = threading.Thread(target=work, name=f"cil-hardware-call-{name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise HardwareError(f"backend '{name}' did not answer within {self.timeout:g} s "
                                "(weight transfer + forward); the call was abandoned", name)
        if "exc" in result:
            raise result["exc"]
        return result["obs"]

    def observe_many(self, params: dict[str, torch.Tensor], inputs: Any, n_sets: int) -> Observation:
        """Score ``n_sets`` parameter sets, in as few backend calls as ``backend.max_sets`` allows.

        The output has a set dimension: ``[T, S, B, *out]``."""
        cap = self.backend.max_sets
        if cap is None or cap >= n_sets:
            return self.observe(params, inputs, n_sets=n_sets)
        outs = []
        for lo in range(0, n_sets, cap):
            hi = min(n_sets, lo + cap)
            chunk = {k: v[lo:hi] for k, v in params.items()}
            if hi - lo == 1 and cap == 1:
                o = self.observe({k: v[0] for k, v in chunk.items()}, inputs).output.unsqueeze(1)
            else:
                o = self.observe(chunk, inputs, n_sets=hi - lo).output
            outs.append(o)
        return Observation(torch.cat(outs, dim=1))


class Algorithm(ABC):
    """A training algorithm. The trainer calls ``setup`` once, ``step`` per batch (through the
    ``cil_train_step`` hook), then ``finish``; ``state_dict``/``load_state_dict`` make a fit
    resumable.

    Class attributes: ``default_batch_size`` (``None``: the whole training set per step),
    ``default_epochs`` (for epoch-based algorithms) or ``default_steps``.
    """

    name: str = ""
    default_batch_size: int | None = 64
    default_epochs: int | None = 10
    default_steps: int | None = None

    def setup(self, state: TrainState, train: "SpikeData") -> None:
        """Called once before the first step of a fit (not again on resume)."""

    @abstractmethod
    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        """One training step (see :func:`cil_core.hookspecs.cil_train_step`)."""

    def finish(self, state: TrainState) -> None:
        """Called after the last step: leave the network holding the weights to deploy."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
