"""The default point function: one training run from a point's payload (:func:`train_point`)."""

from __future__ import annotations

from typing import Any

from ..run import prepare, subset_fraction


def train_point(payload: dict[str, Any]) -> dict[str, Any]:
    """The point function of a grid file: one ``cil train`` run (without its output files),
    returning the chip's test metrics and a few counts. Deterministic for a deterministic backend."""
    from ..config import RunConfig

    cfg = RunConfig.from_dict(payload["config"], "sweep point")
    with prepare(cfg, data_fraction=payload.get("data_fraction")) as run:
        trainer = run.trainer()
        hist = trainer.fit(run.train, **run.fit_options(), progress=False)
        ev = trainer.evaluate(run.test)
        out = {"accuracy": ev["accuracy"], "loss": ev["loss"], "n": ev["n"],
               "split": "test" if run.has_test else "training", "n_train": _n_samples(run.train), "steps": len(hist),
               "final_loss": hist.records[-1]["loss"] if hist.records else None,
               "chip_calls": trainer.session.stats.calls}
        if run.val is not None:
            v = trainer.evaluate(run.val)
            out.update(validation_accuracy=v["accuracy"], validation_loss=v["loss"])
        return out


def _n_samples(data: Any) -> int | None:
    """Samples of in-memory data or a Dataset; ``None`` for a DataLoader or iterable (its length counts batches)."""
    from ...data.stream import source_kind

    return len(data) if source_kind(data, "training data") != "iterable" else None


__all__ = ["train_point", "subset_fraction"]
