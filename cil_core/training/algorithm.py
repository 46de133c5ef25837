"""What every training algorithm shares: the training state (network, hardware session,
readout, generator, counters), the step result and the :class:`Algorithm` base class."""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..hardware import HardwareSession, Observation
from .readout import Readout

if TYPE_CHECKING:  # pragma: no cover
    from ..data import SpikeData
    from ..data.stream import BatchStream
    from ..network.wrapped import WrappedNetwork


@dataclass
class StepResult:
    """What one training step reports. ``loss`` is the loss the step optimized (on the
    hardware output for chip-in-the-loop algorithms); ``metrics`` holds anything else
    (``accuracy``, ``acceptance``, ``log_posterior``...)."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """Everything a training step may touch. Algorithms keep their own state in themselves and
    reach the chip only through ``session`` (:class:`~cil_core.hardware.HardwareSession`)."""

    network: "WrappedNetwork"
    session: HardwareSession
    readout: Readout
    generator: torch.Generator
    step: int = 0
    epoch: int = 0

    def observe(self, params: dict[str, torch.Tensor], inputs: Any, n_sets: int | None = None,
                record: bool = False, purpose: str = "train") -> Observation:
        """Transfer ``params`` (of this state's network) and run ``inputs`` on the chip:
        :meth:`HardwareSession.run` for ``network.spec``."""
        return self.session.run(self.network.spec, params, inputs, n_sets=n_sets, record=record, purpose=purpose)


def _bound_options(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options an algorithm is built with, defaults filled in along the ``__init__`` chain
    (a ``**kw`` passed on to the parent's ``__init__`` takes the parent's defaults)."""
    out: dict[str, Any] = {}
    given = dict(kwargs)
    positional = list(args)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        init = getattr(init, "__wrapped__", init)
        params = list(inspect.signature(init).parameters.values())[1:]
        var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif positional and p.kind is p.POSITIONAL_OR_KEYWORD:
                out.setdefault(p.name, positional.pop(0))
            elif p.name in given:
                out.setdefault(p.name, given.pop(p.name))
            elif p.default is not p.empty:
                out.setdefault(p.name, p.default)
        if not var_kw:
            break
    out.update(given)
    return out


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
    #: whether the algorithm trains on a stream of batches (a Dataset, DataLoader or iterable):
    #: ``setup`` then receives a :class:`~cil_core.data.stream.BatchStream`, not a
    #: :class:`SpikeData`. ``False``: it needs the whole set in memory and a streamed source is refused.
    streaming: bool = False
    #: options that may change when a checkpointed run is resumed (applied, and logged)
    resume_safe: frozenset[str] = frozenset()
    #: options added after checkpoints were first written, with the value that reproduces what a
    #: checkpoint without them ran: resuming such a checkpoint compares against these values
    legacy_options: dict[str, Any] = {}
    #: the constructor's options with their defaults (recorded automatically; checkpoints keep them)
    options: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self: "Algorithm", *args: Any, **kw: Any) -> None:
            outermost = "options" not in self.__dict__
            if outermost:
                self.options = _bound_options(type(self), args, kw)
            init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    def batch_source(self, state: TrainState, stream: "BatchStream") -> Any:
        """What :meth:`Trainer.fit <cil_core.Trainer.fit>` iterates for this fit, one pass per epoch,
        handing each item to :meth:`step`: ``stream`` itself (the data's own batches, default), or
        batches the algorithm draws itself (minibatch MH reads samples by index; it may also check
        the fit's settings here, before any chip call). The object may tell ``num_batches`` (steps
        per pass). Called before :meth:`setup`, on every fit."""
        return stream

    def setup(self, state: TrainState, train: "SpikeData | BatchStream") -> None:
        """Called once before the first step of a fit (not again on resume); ``train`` is a
        :class:`BatchStream` only for a ``streaming`` algorithm given a streamed source."""

    @abstractmethod
    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        """One training step (see :func:`cil_core.plugin.hookspecs.cil_train_step`)."""

    def finish(self, state: TrainState) -> None:
        """Called after the last step: leave the network holding the weights to deploy."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
