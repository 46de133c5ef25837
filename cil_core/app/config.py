"""The run configuration of ``cil train``: one schema, declared once below, that drives the
config-file reader (TOML or JSON, recognised by content), the command-line options and their
``--help``, and the table in ``docs/config.md`` (:func:`markdown_table`).

Every key can be given in a config file or on the command line (which wins); an unknown key is
an error that names the valid keys and the closest match.
"""

from __future__ import annotations

import difflib
import json
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import OptionError


def _opt(default: Any, help: str, *, flag: str | None = None, kind: str = "") -> Any:
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, "flag": flag, "kind": kind or "key=value ..."})
    if isinstance(default, list):
        return field(default_factory=list, metadata={"help": help, "flag": flag, "kind": kind})
    return field(default=default, metadata={"help": help, "flag": flag, "kind": kind})


@dataclass
class RunConfig:
    """What ``cil train`` runs. Field docs are the ``--help`` texts and the docs table."""

    plugins: list[str] = _opt([], "modules imported and registered before the model and backend are built: a "
                                  "one-file backend ('mychip': its Backend subclasses, or its @cil.hookimpl "
                                  "functions), importable from the current folder; repeat --plugin for several",
                              flag="--plugin", kind="module")
    model: str | None = _opt(None, "'module:factory' returning a model of any installed adapter's library "
                                   "(default: a library-free LIF net, see model_options)", kind="module:factory")
    model_options: dict = _opt({}, "keyword arguments of the model factory (default net: sizes, beta, bias, "
                                   "weight_gain, ...)", flag="--model-opt")
    wrap_options: dict = _opt({}, "keyword arguments of cil.wrap for the factory's model, checked against the chosen "
                                  "adapter's options (input_shape=[2,34,34] for a model whose first layer does not "
                                  "state its input size)", flag="--wrap-opt")
    data: str = _opt("breast-cancer", "'breast-cancer' (bundled), a torch file holding (x [T, N, ...], y [N]), a "
                                      "registered data set by root folder ('nmnist:ROOT', cil plugins) or a dataset "
                                      "factory 'module:function' (returning a Dataset, DataLoader or (x, y))",
                     kind="name|file|NAME:ROOT|module:function")
    data_options: dict = _opt({}, "keyword arguments of the data set or factory (nmnist: n_bins, n_samples, seed, "
                                  "first_saccade_only)", flag="--data-opt")
    test_data: str | None = _opt(None, "data for the final evaluation, in data's forms (default: the data set's "
                                       "train=False split if it has one; breast-cancer brings its own)",
                                 kind="file|NAME:ROOT|module:function")
    time_first: bool | None = _opt(None, "layout of a DataLoader's tensor batches: true time-major [T, B, ...], false "
                                         "batch-first [B, T, ...] (default: inferred where unambiguous)", kind="bool")
    num_workers: int = _opt(0, "worker processes of the DataLoader cil builds for a Dataset", kind="N")
    validation_split: float | None = _opt(None, "fraction of the training data held out and evaluated on the chip "
                                                "at the end", kind="fraction")
    backend: str = _opt("ideal", "registered backend name (cil plugins)", kind="name")
    backend_options: dict = _opt({}, "backend options (cil describe BACKEND)", flag="--backend-opt")
    algorithm: str = _opt("cil-spl", "registered algorithm name: offline, cil-spl, mh, ...", kind="name")
    algorithm_options: dict = _opt({}, "algorithm options (cil describe ALGORITHM)", flag="--algo-opt")
    epochs: int | None = _opt(None, "training epochs (gradient algorithms' default: 10)", kind="N")
    steps: int | None = _opt(None, "training steps instead of epochs (MH's default: 400)", kind="N")
    batch_size: int | None = _opt(None, "samples per step (default: the algorithm's)", kind="N")
    seed: int = _opt(0, "seeds the model init, batch order and MH proposals", kind="N")
    readout: str | dict = _opt("rate", "'rate' (spike counts) or 'max-membrane'; or a table {kind = ..., scale = ...}",
                               kind="name|table")
    readout_options: dict = _opt({}, "readout options: scale (the logits' factor; MH chooses its likelihood's "
                                     "own by default, algorithm option logit_scale)", flag="--readout-opt")
    retries: int = _opt(0, "retries of a failed chip call", kind="N")
    timeout: float | None = _opt(None, "seconds one chip call may take", kind="S")
    device: str | None = _opt(None, "torch device for the model and data ('cpu', 'cuda')", kind="name")
    checkpoint: str | None = _opt(None, "save the training state here (never overwritten without resume/force)",
                                  kind="file")
    checkpoint_every: int = _opt(50, "steps between checkpoints", kind="N")
    resume: str | None = _opt(None, "continue from this checkpoint (same run; a new lr is applied)", kind="file")
    force: bool = _opt(False, "overwrite an existing checkpoint")
    out: str | None = _opt(None, "write config, metrics and history as JSON here", kind="file")
    metrics: str | None = _opt(None, "append per-step metrics as JSON Lines here while training (cil plot reads it)",
                               kind="file")
    export: str | None = _opt(None, "save the trained model's own state_dict (torch.save) here", kind="file")
    progress: bool = _opt(True, "show a progress bar with loss and chip accuracy", flag="--no-progress")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        """Validate keys and value types; raises :class:`OptionError` naming the key."""
        known = cls.keys()
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise OptionError(f"{source}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                  + f" (valid keys: {', '.join(known)})")
        from ..options import _matches, _type_name  # the same type rules as every other option

        hints = typing.get_type_hints(cls)
        cfg = cls()
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            if not _matches(value, hints[f.name]):
                raise OptionError(f"{source}: {f.name} must be {_type_name(hints[f.name])}, got {value!r} "
                                  f"({type(value).__name__})")
            setattr(cfg, f.name, value)
        if cfg.num_workers < 0:
            raise OptionError(f"{source}: num_workers must be >= 0, got {cfg.num_workers}")
        if cfg.validation_split is not None and not 0 < cfg.validation_split < 1:
            raise OptionError(f"{source}: validation_split must lie in (0, 1), got {cfg.validation_split}")
        cfg.readout, cfg.readout_options = readout_parts(cfg.readout, cfg.readout_options, source)
        return cfg

    def make_readout(self) -> Any:
        """The :class:`~cil_core.training.readout.Readout` of ``readout`` and ``readout_options``."""
        from ..training.readout import Readout

        return Readout(self.readout, **self.readout_options)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def readout_parts(readout: str | dict, options: dict, source: str) -> tuple[str, dict[str, Any]]:
    """``readout`` (a name, or a table ``{kind = ..., scale = ...}``) and ``readout_options`` as
    ``(kind, options)``, checked against :class:`~cil_core.training.readout.Readout`'s fields
    (unknown names with the closest match, types, ranges). A key given in both places must agree."""
    from ..options import validate
    from ..training.readout import Readout

    if isinstance(readout, dict):
        table = dict(readout)
        kind = table.pop("kind", "rate")
        for key, value in table.items():
            if key in options and options[key] != value:
                raise OptionError(f"{source}: readout.{key} = {value!r} and readout_options.{key} = "
                                  f"{options[key]!r} disagree; give it once")
        options = {**table, **options}
    else:
        kind = readout
    if "kind" in options:
        raise OptionError(f"{source}: readout_options cannot hold 'kind'; set readout = {options['kind']!r}")
    try:
        validate(Readout, {"kind": kind, **options}, "readout")
        Readout(kind, **options)  # ranges: a known kind, a positive scale
    except OptionError as exc:
        raise OptionError(f"{source}: {exc}") from exc
    return kind, dict(options)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON config (recognised by content, whatever the extension) as a dict."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"config file {path} does not exist")
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionError(f"config file {path} is not valid JSON: {exc}") from exc
    else:
        import tomllib

        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise OptionError(f"config file {path} is neither JSON nor valid TOML: {exc}") from exc
    if not isinstance(d, dict):
        raise OptionError(f"config file {path} must hold a table of keys, not {type(d).__name__}")
    return d


def markdown_table() -> str:
    """The config schema as a Markdown table (``docs/config.md`` is generated from it)."""
    from ..options import _type_name

    hints = typing.get_type_hints(RunConfig)
    rows = ["| key | command line | type | default | meaning |", "|---|---|---|---|---|"]
    for f in fields(RunConfig):
        default = "{}" if f.default is MISSING else repr(f.default)
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        rows.append(f"| `{f.name}` | `{flag}` | {_type_name(hints[f.name]).replace('|', chr(92) + '|')} | `{default}` | "
                    f"{f.metadata['help']} |")
    return "\n".join(rows)


__all__ = ["RunConfig", "read_config_file", "readout_parts", "markdown_table"]


if __name__ == "__main__":  # python -m cil_core.app.config > the table in docs/config.md
    print(markdown_table())
