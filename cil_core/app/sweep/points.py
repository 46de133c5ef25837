"""The default point function: one training run from a point's payload (train_point), and subset_fraction."""

from __future__ import annotations

from typing import Any


def subset_fraction(data: Any, fraction: float, seed: int) -> Any:
    """A stratified share of ``data`` (at least one sample per class), drawn with ``seed``."""
    import torch

    if fraction >= 1.0:
        return data
    g = torch.Generator().manual_seed(1000 + seed)
    idx = []
    for c in torch.unique(data.y):
        members = (data.y == c).nonzero().flatten()
        k = max(1, int(round(fraction * len(members))))
        idx.append(members[torch.randperm(len(members), generator=g)[:k]])
    return data.subset(torch.cat(idx).sort().values)


def train_point(payload: dict[str, Any]) -> dict[str, Any]:
    """The point function of a grid file: one ``cil train`` run (without its output files),
    returning the chip's test metrics and a few counts. Deterministic for a deterministic backend."""
    import torch

    from ... import Trainer, make_backend
    from ...data import as_data
    from ..cli import _build_network, _load_data
    from ..config import RunConfig

    cfg = RunConfig.from_dict(payload["config"], "sweep point")
    torch.manual_seed(cfg.seed)
    train, test, has_test = _load_data(cfg)
    train = as_data(train)
    if payload.get("data_fraction") is not None:
        train = subset_fraction(train, float(payload["data_fraction"]), cfg.seed)
    val = None
    if cfg.validation_split:
        n_val = max(1, int(round(cfg.validation_split * len(train))))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    net = _build_network(cfg, train)
    backend = make_backend(cfg.backend, **cfg.backend_options)
    try:
        trainer = Trainer(net, backend, cfg.algorithm, seed=cfg.seed, readout=cfg.readout, retries=cfg.retries,
                          timeout=cfg.timeout, device=cfg.device, **cfg.algorithm_options)
        hist = trainer.fit(train, epochs=cfg.epochs, steps=cfg.steps,
                           batch_size=-1 if cfg.batch_size is None else cfg.batch_size, progress=False)
        ev = trainer.evaluate(test)
        out = {"accuracy": ev["accuracy"], "loss": ev["loss"], "n": ev["n"],
               "split": "test" if has_test else "training", "n_train": len(train), "steps": len(hist),
               "final_loss": hist.records[-1]["loss"] if hist.records else None,
               "chip_calls": trainer.session.stats.calls}
        if val is not None:
            v = trainer.evaluate(val)
            out.update(validation_accuracy=v["accuracy"], validation_loss=v["loss"])
        return out
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


# ----------------------------------------------------------------------------- runners
