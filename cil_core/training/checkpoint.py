"""Checkpoints you can trust: atomic writes, loading without executing code
(``torch.load(weights_only=True)``), and a compatibility record checked on resume.

A checkpoint is a dict of tensors and plain Python values:

* ``format``: :data:`FORMAT`;
* ``compat``: what must match to resume — the network description, the parameter shapes, the
  algorithm and its options, the backend and its options, the readout;
* ``weights``, ``algorithm_state``, ``step``, ``epoch``, ``generator``, ``history``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..errors import CheckpointError

FORMAT = "cil-checkpoint/1"


def write_atomic(blob: Mapping[str, Any], path: str | Path) -> None:
    """Write ``blob`` with ``torch.save`` to a temporary file beside ``path``, then rename it
    over ``path``: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(blob), f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing code, or raise :class:`CheckpointError` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read as a cil checkpoint (truncated, corrupt or not written by "
                              f"cil): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            raise CheckpointError(f"{path} holds a plain state_dict, not a cil checkpoint: load it into your model "
                                  "with model.load_state_dict(torch.load(path)) and train without --resume")
        raise CheckpointError(f"{path} is not a cil checkpoint (no '{FORMAT}' format marker)")
    missing = [k for k in ("compat", "weights", "algorithm_state", "step", "epoch", "generator", "history")
               if k not in blob]
    if missing:
        raise CheckpointError(f"{path} is an incomplete cil checkpoint (missing {missing})")
    return blob


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two compatibility records (nested dicts)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            if isinstance(a, str) and "\n" in a or isinstance(b, str) and "\n" in b:
                out.append(f"{prefix}{key} differs:\n  checkpoint:\n    " + str(a).replace("\n", "\n    ")
                           + "\n  now:\n    " + str(b).replace("\n", "\n    "))
            else:
                out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def check_compatible(path: str | Path, saved: Mapping[str, Any], current: Mapping[str, Any],
                     safe: Iterable[str], legacy: Mapping[str, Any] | None = None) -> list[str]:
    """Raise :class:`CheckpointError` listing every difference that makes resuming unsafe.

    Differences in ``algorithm_options`` named in ``safe`` (e.g. a new learning rate) are
    allowed; they are returned (as messages) so that the caller can apply and log them. An
    option in ``legacy`` that the checkpoint does not record (it was added later) counts as
    recorded with that value: the behaviour the checkpoint's run had."""
    if legacy and isinstance(saved.get("algorithm_options"), Mapping):
        old = saved["algorithm_options"]
        saved = {**saved, "algorithm_options": {**{k: plain(v) for k, v in legacy.items() if k not in old}, **old}}
    if saved.get("algorithm") != current.get("algorithm"):
        raise CheckpointError(f"checkpoint {path} was written by algorithm '{saved.get('algorithm')}', not "
                              f"'{current.get('algorithm')}'")
    safe = set(safe)
    allowed = {f"algorithm_options.{k}" for k in safe}
    diffs = differences(saved, current)
    unsafe = [d for d in diffs if d.split(":")[0].split(" differs")[0] not in allowed]
    if unsafe:
        raise CheckpointError(f"cannot resume from {path}: the run differs from the one that wrote it:\n- "
                              + "\n- ".join(unsafe))
    return diffs


def plain(value: Any) -> Any:
    """An option value as a plain, comparable, ``weights_only``-loadable value."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


__all__ = ["FORMAT", "write_atomic", "read", "differences", "check_compatible", "plain"]
