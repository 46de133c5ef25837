"""The trainer: runs an algorithm on a wrapped network with a backend in the loop, and
measures accuracy **on the backend**."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .data import SpikeData, as_dense
from .data.stream import BatchStream, Door, as_batches, materialize
from .errors import CheckpointError, CilError, DataError, NonFiniteError, OptionError
from .hardware import Backend, Deployment, HardwareSession
from .network.wrapped import WrappedNetwork
from .plugin.factories import make_algorithm, make_backend, wrap
from .plugin.registry import get_manager
from .training import checkpoint as checkpoint_io
from .training.algorithm import Algorithm, TrainState
from .training.readout import Readout


log = logging.getLogger("cil")


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
        time_first: the layout of tensor batches a DataLoader or iterable yields: ``True``
            time-major ``[T, B, ...]`` (tonic's ``PadTensors(batch_first=False)``), ``False``
            batch-first ``[B, T, ...]`` (torch's default collation), ``None`` inferred from the
            labels where unambiguous (:mod:`cil_core.data.stream`); each call may override it.
        num_workers: worker processes of the ``DataLoader`` cil builds for a torch ``Dataset``.
    """

    def __init__(self, network: Any, backend: Backend | str = "ideal", algorithm: Algorithm | str = "cil-spl", *,
                 readout: Readout | str = "rate", seed: int = 0, retries: int = 0, timeout: float | None = None,
                 device: str | torch.device | None = None, time_first: bool | None = None, num_workers: int = 0,
                 **options: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OptionError(f"seed must be a whole number, got {seed!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise OptionError(f"retries must be a whole number >= 0, got {retries!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise OptionError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if not isinstance(readout, (Readout, str)):
            raise OptionError(f"readout must be 'rate', 'max-membrane' or a Readout, got {readout!r}")
        device = _check_device(device)
        if time_first is not None and not isinstance(time_first, bool):
            raise OptionError(f"time_first must be True, False or None (infer), got {time_first!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise OptionError(f"num_workers must be a whole number >= 0, got {num_workers!r}")
        self.time_first, self.num_workers = time_first, num_workers
        self.registry = get_manager()
        self.network: WrappedNetwork = network if isinstance(network, WrappedNetwork) else wrap(network)
        if device is not None:
            self.network.to(device)
        self.backend: Backend = make_backend(backend) if isinstance(backend, str) else backend
        self.session = HardwareSession(self.backend, retries=retries, timeout=timeout,
                                       hooks=self.registry.chip_hooks())
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
            checkpoint_every: int = 50, resume: str | Path | None = None, force: bool = False,
            on_step: Callable[[dict[str, Any]], None] | None = None, time_first: bool | None = None) -> History:
        """Train. Gradient algorithms default to epochs, Metropolis-Hastings to steps.

        ``batch_size=-1`` takes the algorithm's default (``None`` = the whole set per step).
        ``checkpoint`` saves the full training state every ``checkpoint_every`` steps and at the
        end (atomically; its folder is created first). An existing checkpoint is never
        overwritten unless it is the one being resumed or ``force=True``. ``resume`` continues
        from such a file: the network, backend, algorithm and their options must match (a new
        ``lr`` is applied and logged; any other difference is a :class:`CheckpointError` that
        lists it), and the run stops when the *total* number of steps (counted from the original
        start) reaches ``steps`` (or ``epochs`` worth of steps). ``on_step(record)`` is called
        after every step with that step's history record (e.g. to stream metrics).

        ``train_data``: in-memory data (``(x [T, N, ...], y [N])``, :class:`SpikeData`), a torch
        ``Dataset`` (cil builds the DataLoader: ``batch_size``, the trainer's seeded order,
        ``num_workers``), a ``DataLoader`` or any iterable of ``(inputs, labels)`` batches (their
        own batch size and order; ``time_first`` as in the constructor). Every batch is checked
        at the door (:mod:`cil_core.data.stream`). Algorithms that need the whole set in memory
        (``mh`` with its default full-data likelihood) refuse a streamed source; see
        :meth:`materialize`. ``mh`` with ``likelihood="sequential"`` reads its own random minibatches
        by index from in-memory data, a Dataset or a DataLoader over one
        (:mod:`cil_core.training.minibatch`). Resume is bit-identical for
        in-memory data and Datasets at an epoch boundary (the order is drawn from the
        checkpointed generator); a DataLoader's own order is not checkpointed (a resumed fit
        starts a new pass of it).
        """
        algo = self.algorithm
        _check_count("epochs", epochs)
        _check_count("steps", steps)
        _check_count("checkpoint_every", checkpoint_every)
        if epochs is not None and steps is not None:
            raise CilError(f"give epochs or steps, not both (got epochs={epochs}, steps={steps})")
        if batch_size != -1 and batch_size is not None:
            _check_count("batch_size", batch_size)
        bs = algo.default_batch_size if batch_size == -1 else batch_size
        stream = self._stream(train_data, "training data", bs, shuffle=True, time_first=time_first)
        if stream.streamed:
            if stream.dataset is None and batch_size not in (-1, None):
                raise OptionError(f"batch_size={batch_size} was given with a {type(train_data).__name__}, which batches "
                                  "its own data; set the batch size on the DataLoader")
            if not getattr(algo, "streaming", False):
                raise DataError(
                    f"algorithm '{algo.name}' needs the whole training set in memory (it scores every step on "
                    f"all of it) and cannot stream a {type(train_data).__name__}; hold the data in memory first: "
                    "trainer.fit(trainer.materialize(data), ...) (refused above a size limit), or train with an "
                    "algorithm that streams ('cil-spl', 'offline', or 'mh' with its minibatch likelihood, "
                    "likelihood='sequential')")
        train: SpikeData | BatchStream = stream.in_memory if stream.in_memory is not None else stream
        source = algo.batch_source(self.state, stream)  # what the loop iterates (checked before any chip call)
        if epochs is None and steps is None:
            epochs, steps = algo.default_epochs, algo.default_steps
        ckpt = self._prepare_checkpoint(checkpoint, resume, force)
        blob = checkpoint_io.read(resume) if resume is not None else None  # before any work: fail fast
        self.network.check_finite()
        if not self._setup_done:
            algo.setup(self.state, train)
            self._setup_done = True
        n_batches = getattr(source, "num_batches", None)
        # the run's length in steps; None: a source of unknown length, run until `epochs` passes are done
        total: int | None = steps if steps is not None else None if n_batches is None else (epochs or 0) * n_batches
        if blob is not None:  # the run's length is absolute: finish what the checkpointed run started
            self._restore(blob, resume)  # type: ignore[arg-type]
            if total is not None:
                total = max(0, total - self.state.step)
        done = 0

        def more() -> bool:
            return done < total if total is not None else self.state.epoch < (epochs or 0)

        bar = _progress(total, progress, f"{algo.name} on {self.session.name}")
        t0 = time.perf_counter()
        try:
            while more():
                stepped = False
                for batch in source:
                    if total is not None and done >= total:
                        break
                    stepped = True
                    res = self.registry.train_step(algo, self.state, batch)
                    self.state.step += 1
                    done += 1
                    rec = {"step": self.state.step, "epoch": self.state.epoch, "loss": res.loss,
                           "time": time.perf_counter() - t0, **res.metrics}
                    self.history.records.append(rec)
                    bar.update(1, rec)
                    if on_step is not None:
                        on_step(rec)
                    if ckpt is not None and self.state.step % checkpoint_every == 0:
                        self.save_checkpoint(ckpt)
                    if total is not None and done >= total:
                        break  # before the next batch is read (or drawn from the checkpointed generator)
                if not stepped:  # pragma: no cover - data are checked non-empty above
                    raise CilError("the training data yielded no batch")
                self.state.epoch += 1
        finally:
            bar.close()
        algo.finish(self.state)
        self.history.wall_time += time.perf_counter() - t0
        if ckpt is not None:
            self.save_checkpoint(ckpt)
        return self.history

    def _door(self, what: str) -> Door:
        spec = self.network.spec
        n_classes = spec.output_shape[-1] if len(spec.output_shape) == 1 else None
        dtype = next(iter(self.network.synaptic_parameters().values())).dtype
        return Door(spec, n_classes, dtype, self.device, what)

    def _stream(self, data: Any, what: str, batch_size: int | None, *, shuffle: bool,
                time_first: bool | None) -> BatchStream:
        """``data`` as a stream of checked time-major batches (:mod:`cil_core.data.stream`)."""
        return as_batches(data, self._door(what), batch_size=batch_size, shuffle=shuffle,
                          generator=self.generator if shuffle else None,
                          time_first=self.time_first if time_first is None else time_first,
                          num_workers=self.num_workers)

    def materialize(self, data: Any, *, time_first: bool | None = None, max_bytes: int | None = 4 << 30) -> SpikeData:
        """All of ``data`` (a Dataset, DataLoader or iterable of batches) in memory as one checked
        :class:`SpikeData`, in the source's order, for algorithms that need the whole set
        (``mh``); a :class:`~cil_core.errors.DataError` once the dense inputs pass ``max_bytes``."""
        return materialize(data, self._door("training data"),
                           time_first=self.time_first if time_first is None else time_first,
                           num_workers=self.num_workers, max_bytes=max_bytes)

    def _prepare_checkpoint(self, checkpoint: str | Path | None, resume: str | Path | None,
                            force: bool) -> Path | None:
        if checkpoint is None:
            return None
        path = Path(checkpoint)
        if path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a folder; name a file, e.g. {path / 'run.pt'}")
        same = resume is not None and Path(resume).resolve() == path.resolve()
        if path.exists() and not same and not force:
            raise CheckpointError(f"checkpoint {path} already exists; resume it (resume={str(path)!r}, "
                                  "cil train --resume) or overwrite it (force=True, cil train --force)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the folder of checkpoint {path}: {exc}") from exc
        if not os.access(path.parent, os.W_OK):
            raise CheckpointError(f"cannot write checkpoint {path}: its folder is not writable")
        return path

    # ------------------------------------------------------------ measurement
    def deploy(self) -> Deployment:
        """Transfer the network's current weights to the backend; returns the deployment
        (what the chip holds: e.g. quantized codes in ``deployment.chip``). Like every chip
        call it goes through the session: its timeout and retries hold, and it is counted
        (purpose ``"deploy"``)."""
        self.network.check_finite()
        return self.session.deploy(self.network.spec, self.network.detached_parameters())

    @torch.no_grad()
    def evaluate(self, data: Any, batch_size: int = 512, *, time_first: bool | None = None) -> dict[str, float]:
        """Accuracy and loss **measured on the backend** with the current (deployed) weights, and
        how often the output says nothing: ``ties`` is the fraction of samples whose largest logit
        is shared by two or more classes (the prediction is then the lowest tied class index, not
        a decision), ``silent`` the fraction whose output layer emitted no spike at all (every
        logit of a rate readout is 0; a silent sample is also a tie). A collapsed network (e.g. an
        MH chain drifted to uniform outputs) shows as ``ties`` near 1. ``data`` as for
        :meth:`fit` (a DataLoader keeps its own batches); streamed batch by batch, only the counts
        accumulate."""
        _check_count("batch_size", batch_size)
        stream = self._stream(data, "evaluation data", batch_size, shuffle=False, time_first=time_first)
        params = self.network.detached_parameters()
        correct, loss_sum, n, ties, silent = 0.0, 0.0, 0, 0, 0
        for x, y in stream:
            out = self.state.observe(params, x, purpose="eval").output
            correct += float(self.readout.correct(out, y))
            loss_sum += float(self.readout.loss(out, y, reduction="sum"))
            tied, quiet = output_ties(self.readout, out)
            ties += int(tied.sum())
            silent += int(quiet.sum())
            n += len(y)
        return {"accuracy": correct / n, "loss": loss_sum / n, "n": n, "backend": self.session.name,  # type: ignore[dict-item]
                "ties": ties / n, "silent": silent / n}

    @torch.no_grad()
    def evaluate_software(self, data: Any, batch_size: int = 512, *, time_first: bool | None = None
                          ) -> dict[str, float]:
        """Accuracy of the software model (no backend), for the software-vs-chip gap; ``data``
        as for :meth:`evaluate`."""
        _check_count("batch_size", batch_size)
        stream = self._stream(data, "evaluation data", batch_size, shuffle=False, time_first=time_first)
        correct, n = 0.0, 0
        for x, y in stream:
            correct += float(self.readout.correct(self.network(as_dense(x)), y))
            n += len(y)
        return {"accuracy": correct / n, "n": n}

    # ------------------------------------------------------------ checkpoints
    def compat_record(self) -> dict[str, Any]:
        """What must match for a checkpoint of this run to be resumed (see
        :mod:`cil_core.training.checkpoint`)."""
        return {
            "network": self.network.spec.describe(),
            "parameters": {k: list(v.shape) for k, v in self.network.synaptic_parameters().items()},
            "algorithm": self.algorithm.name,
            "algorithm_options": checkpoint_io.plain(getattr(self.algorithm, "options", {})),
            "backend": self.session.name,
            "backend_options": checkpoint_io.plain(_result_options(self.backend)),
            "readout": [self.readout.kind, self.readout.scale],
        }

    def save_checkpoint(self, path: str | Path) -> None:
        """Write network weights, algorithm state (optimizer, MH chains and samples), counters,
        the generator state and the compatibility record to ``path``, atomically."""
        blob = {
            "format": checkpoint_io.FORMAT,
            "compat": self.compat_record(),
            "weights": self.network.detached_parameters(),
            "algorithm_state": self.algorithm.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "generator": self.generator.get_state(),
            "history": self.history.records,
        }
        try:
            checkpoint_io.write_atomic(blob, path)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` for this same run (call after
        the algorithm's setup; :meth:`fit` with ``resume=`` does both)."""
        self._restore(checkpoint_io.read(path), path)

    def _restore(self, blob: dict[str, Any], path: str | Path) -> None:
        diffs = checkpoint_io.check_compatible(path, blob["compat"], self.compat_record(), self.algorithm.resume_safe,
                                               getattr(self.algorithm, "legacy_options", None))
        for d in diffs:
            log.warning("resuming %s with a changed option: %s (applied)", path, d)
        for k, v in blob["weights"].items():
            if not torch.isfinite(v).all():
                raise NonFiniteError(f"checkpoint {path}: parameter '{k}' is not finite")
        try:
            self.network.load_parameters(blob["weights"])
            self.algorithm.load_state_dict(blob["algorithm_state"])
            self.generator.set_state(blob["generator"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this run: {type(exc).__name__}: {exc}") from exc
        self.state.step, self.state.epoch = int(blob["step"]), int(blob["epoch"])
        self.history.records = list(blob["history"])
        self.resumed_changes = diffs


def output_ties(readout: Readout, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample of ``output`` (``[T, B, C]``): whether its top logit is tied (shared by two or more
    classes: :math:`|\\{c : z_c = \\max_k z_k\\}| \\ge 2`) and whether the output is silent
    (every output value is 0 at every step, :math:`\\sum_{t,c} |S_{t,c}| = 0`: no output spike;
    for a non-spiking readout layer, a membrane that never moved)."""
    z = readout.logits(output)
    flat = z.reshape(z.shape[0], -1)
    tied = (flat == flat.max(-1, keepdim=True).values).sum(-1) >= 2
    quiet = output.reshape(output.shape[0], output.shape[1], -1).ne(0).sum((0, 2)) == 0
    return tied, quiet


def _result_options(backend: Any) -> dict[str, Any] | None:
    """The options a backend was built with, less those it declares as placement-only
    (``placement_options``: where and how fast the work runs, not what it computes)."""
    options = getattr(backend, "cil_options", None)
    if options is None:
        return None
    skip = set(getattr(backend, "placement_options", ()))
    return {k: v for k, v in options.items() if k not in skip}


def _check_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"device {device!r} is not a torch device ('cpu', 'cuda', 'cuda:0', ...)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r}: CUDA is not available on this machine; use device='cpu'")
    return dev


def _check_count(name: str, value: Any) -> None:
    """``value`` must be ``None`` or a positive whole number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CilError(f"{name} must be a positive whole number, got {value!r}")


class _NoBar:
    def update(self, n: int, record: dict | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """tqdm with the latest loss and chip (or software) accuracy in its postfix."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, n: int, record: dict | None = None) -> None:
        if record is not None:
            post = {"loss": f"{record['loss']:.3g}"}
            for key in ("hardware_accuracy", "software_accuracy", "acceptance"):
                if key in record:
                    post[key.replace("hardware_", "chip_").replace("software_", "sw_")] = f"{record[key]:.3f}"
            self.bar.set_postfix(post, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, enabled: bool, desc: str) -> Any:
    return _Bar(total, desc) if enabled else _NoBar()


__all__ = ["Trainer", "History", "SpikeData"]
