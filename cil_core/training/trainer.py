"""The trainer: runs an algorithm on a wrapped network with a backend in the loop, and
measures accuracy **on the backend**."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import SpikeData, as_data, as_dense
from ..errors import CilError, NonFiniteError
from ..hardware import Backend, Deployment, HardwareSession
from ..network.wrapped import WrappedNetwork
from ..plugin.manager import get_manager
from .algorithm import Algorithm, TrainState
from .readout import Readout


@dataclass
class History:
    """One record per training step (``step``, ``epoch``, ``loss``, ``time``, algorithm metrics)."""

    records: list[dict[str, float]] = field(default_factory=list)
    wall_time: float = 0.0

    def column(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    @property
    def last(self) -> dict[str, float]:
        return self.records[-1] if self.records else {}

    def __len__(self) -> int:
        return len(self.records)


class Trainer:
    """Train ``network`` with ``backend`` in the loop.

    Args:
        network: a :class:`WrappedNetwork` (or any model :func:`cil_core.wrap` accepts).
        backend: a backend instance or a registered backend name.
        algorithm: a registered algorithm name (``"offline"``, ``"cil-spl"``, ``"mh"``, ...) or
            an :class:`Algorithm` instance. Extra keyword options go to its constructor.
        readout: ``"rate"`` or ``"max-membrane"`` (or a :class:`Readout`).
        seed: seeds the trainer's generator (batch order, MH proposals).
        retries: how many times a failed backend call is retried before giving up.
        timeout: seconds one backend call (weight transfer + forward) may take before it counts
            as failed (``None``: no limit).
        device: where the model and the data live (``"cpu"``, ``"cuda"``).
    """

    def __init__(self, network: Any, backend: Backend | str = "ideal", algorithm: Algorithm | str = "cil-spl", *,
                 readout: Readout | str = "rate", seed: int = 0, retries: int = 0, timeout: float | None = None,
                 device: str | torch.device | None = None, **options: Any) -> None:
        from .. import make_algorithm, make_backend, wrap

        self.registry = get_manager()
        self.network: WrappedNetwork = network if isinstance(network, WrappedNetwork) else wrap(network)
        if device is not None:
            self.network.to(device)
        self.backend: Backend = make_backend(backend) if isinstance(backend, str) else backend
        self.session = HardwareSession(self.backend, retries=retries, timeout=timeout, registry=self.registry)
        self.session.check(self.network.spec)
        self.algorithm: Algorithm = make_algorithm(algorithm, **options) if isinstance(algorithm, str) else algorithm
        if options and not isinstance(algorithm, str):
            raise CilError(f"options {sorted(options)} were given with an algorithm instance; pass them to its constructor")
        self.readout = readout if isinstance(readout, Readout) else Readout(readout)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.state = TrainState(self.network, self.session, self.readout, self.generator)
        self.history = History()
        self._setup_done = False

    @property
    def device(self) -> torch.device:
        return self.network.device

    # ------------------------------------------------------------ training
    def fit(self, train_data: Any, *, epochs: int | None = None, steps: int | None = None,
            batch_size: int | None = -1, progress: bool = False, checkpoint: str | Path | None = None,
            checkpoint_every: int = 50, resume: str | Path | None = None) -> History:
        """Train. Gradient algorithms default to epochs, Metropolis-Hastings to steps.

        ``batch_size=-1`` takes the algorithm's default (``None`` = the whole set per step).
        ``checkpoint`` saves the full training state every ``checkpoint_every`` steps and at the
        end; ``resume`` continues from such a file (same network, backend and algorithm): the
        run then stops when the *total* number of steps (counted from the original start)
        reaches ``steps`` (or ``epochs`` worth of steps).
        """
        train = as_data(train_data).to(self.device)
        self.network.check_finite()
        algo = self.algorithm
        bs = algo.default_batch_size if batch_size == -1 else batch_size
        if epochs is None and steps is None:
            epochs, steps = algo.default_epochs, algo.default_steps
        if not self._setup_done:
            algo.setup(self.state, train)
            self._setup_done = True
        n_batches = -(-len(train) // (bs or len(train)))
        total = steps if steps is not None else (epochs or 0) * n_batches
        if resume is not None:  # the run's length is absolute: finish what the checkpointed run started
            self.load_checkpoint(resume)
            total = max(0, total - self.state.step)
        done = 0
        bar = _progress(total, progress, f"{algo.name} on {self.session.name}")
        t0 = time.perf_counter()
        try:
            while done < total:
                for batch in train.batches(bs, shuffle=True, generator=self.generator):
                    if done >= total:
                        break
                    res = self.registry.train_step(algo, self.state, batch)
                    self.state.step += 1
                    done += 1
                    rec = {"step": self.state.step, "epoch": self.state.epoch, "loss": res.loss,
                           "time": time.perf_counter() - t0, **res.metrics}
                    self.history.records.append(rec)
                    bar.update(1)
                    if checkpoint is not None and self.state.step % checkpoint_every == 0:
                        self.save_checkpoint(checkpoint)
                self.state.epoch += 1
        finally:
            bar.close()
        algo.finish(self.state)
        self.history.wall_time += time.perf_counter() - t0
        if checkpoint is not None:
            self.save_checkpoint(checkpoint)
        return self.history

    # ------------------------------------------------------------ measurement
    def deploy(self) -> Deployment:
        """Transfer the network's current weights to the backend; returns the deployment
        (what the chip holds: e.g. quantized codes in ``deployment.chip``)."""
        self.network.check_finite()
        return self.session.transfer(self.network.spec, self.network.detached_parameters())

    @torch.no_grad()
    def evaluate(self, data: Any, batch_size: int = 512) -> dict[str, float]:
        """Accuracy and loss **measured on the backend** with the current (deployed) weights."""
        data = as_data(data).to(self.device)
        params = self.network.detached_parameters()
        correct, loss_sum, n = 0.0, 0.0, 0
        for x, y in data.batches(batch_size, shuffle=False):
            out = self.state.observe(params, x, purpose="eval").output
            correct += float(self.readout.correct(out, y))
            loss_sum += float(self.readout.loss(out, y, reduction="sum"))
            n += len(y)
        return {"accuracy": correct / n, "loss": loss_sum / n, "n": n, "backend": self.session.name}  # type: ignore[dict-item]

    @torch.no_grad()
    def evaluate_software(self, data: Any, batch_size: int = 512) -> dict[str, float]:
        """Accuracy of the software model (no backend), for the software-vs-chip gap."""
        data = as_data(data).to(self.device)
        correct, n = 0.0, 0
        for x, y in data.batches(batch_size, shuffle=False):
            correct += float(self.readout.correct(self.network(as_dense(x)), y))
            n += len(y)
        return {"accuracy": correct / n, "n": n}

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> None:
        """Write network weights, algorithm state (optimizer, MH chains and samples), counters and
        the generator state to ``path`` (atomically: a crash never leaves a half-written file)."""
        path = Path(path)
        blob = {
            "weights": self.network.detached_parameters(),
            "algorithm": self.algorithm.name,
            "algorithm_state": self.algorithm.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "generator": self.generator.get_state(),
            "history": self.history.records,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: str | Path) -> None:
        blob = torch.load(Path(path), weights_only=False)
        if blob["algorithm"] != self.algorithm.name:
            raise CilError(f"checkpoint {path} was written by algorithm '{blob['algorithm']}', not '{self.algorithm.name}'")
        for k, v in blob["weights"].items():
            if not torch.isfinite(v).all():
                raise NonFiniteError(f"checkpoint {path}: parameter '{k}' is not finite")
        self.network.load_parameters(blob["weights"])
        self.algorithm.load_state_dict(blob["algorithm_state"])
        self.state.step, self.state.epoch = blob["step"], blob["epoch"]
        self.generator.set_state(blob["generator"])
        self.history.records = list(blob["history"])


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


__all__ = ["Trainer", "History", "SpikeData"]
