"""What every benchmark script shares: interleaved timing (medians), the output folder, writing
the JSON + printing a table, and the ``--docs`` step that rewrites a marked section of
``docs/results.md`` and copies figures into ``docs/img``.

Scripts import it as ``from harness import ...``: ``python benchmarks/NAME.py`` puts
``benchmarks/`` on ``sys.path``. Installed code (``cil_core``, ``plugins/``) never imports it.

By default a script writes only under ``benchmarks/results/`` (git-ignored); the tracked docs
change only with an explicit ``--docs``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS_MD = ROOT / "docs" / "results.md"
DOCS_IMG = ROOT / "docs" / "img"


# ----------------------------------------------------------------------------- timing
def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of every contender, timed interleaved (A, B, A, B, ...) so
    that load from other processes hits all of them alike. ``warmup`` untimed rounds first.
    ``clock``: wall time by default; ``time.process_time`` gives the CPU seconds of this process
    (all its threads), which other processes' load does not inflate."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for f in fns.values():
            f()
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = clock()
            f()
            samples[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall time of the block)."""

    def __enter__(self) -> "Stopwatch":
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


# ----------------------------------------------------------------------------- arguments and outputs
def add_output_args(ap: argparse.ArgumentParser, docs_section: str | None = None) -> None:
    """``--out DIR`` (default ``benchmarks/results``) and, for scripts that own a section of
    ``docs/results.md``, ``--docs``."""
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="folder for the JSON and figures (default: benchmarks/results, git-ignored)")
    if docs_section:
        ap.add_argument("--docs", action="store_true",
                        help=f"also rewrite the {docs_section} section of docs/results.md and its figures in docs/img")


def add_sweep_args(ap: argparse.ArgumentParser, *, workers: int, unit: str = "cases") -> None:
    """The flags of a benchmark whose runs are the points of a ``cil sweep``: ``--workers`` (local
    worker processes, default ``workers``), ``--runner``, ``--address`` and ``--resume``."""
    ap.add_argument("--workers", type=int, default=workers,
                    help=f"local worker processes, one of the {unit} each at a time (default {workers}; 1: one "
                    "after the other in this process)")
    ap.add_argument("--runner", default="local", help=f"who runs the {unit} (cil sweep's runners): local (default, "
                    f"--workers processes) or ray (cil-ray: one Ray task per point)")
    ap.add_argument("--address", default=None, help="with --runner ray: the Ray head (host:port; default: "
                    "RAY_ADDRESS, else a private local cluster)")
    ap.add_argument("--resume", action="store_true", help=f"keep the {unit} already in the JSON Lines file of an "
                    "interrupted run with the same settings (default: start that file afresh)")


def runner_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``run_sweep`` runner options that :func:`add_sweep_args`'s flags give."""
    if args.runner == "local":
        return {"jobs": args.workers}
    return {"address": args.address} if args.address else {}


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (creating the folder) and say so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_plain))
    print(f"wrote {_rel(path)}")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table for the terminal: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
        if r is cells[0]:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    if title:
        print(title)
    print(text_table(header, rows))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (for the docs sections)."""
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------- docs
def write_docs_section(name: str, text: str, md: Path = DOCS_MD) -> None:
    """Replace what stands between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``md``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    src = md.read_text() if md.exists() else ""
    if begin not in src or end not in src:
        raise SystemExit(f"{md} has no {begin} ... {end} markers: docs not updated")
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    md.write_text(pat.sub(lambda _: f"{begin}\n{text.strip()}\n{end}", src, count=1))
    print(f"updated the {name} section of {_rel(md)}")


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def publish_figures(figures: Mapping[str, str | Path], img: Path = DOCS_IMG) -> None:
    """Copy figures into ``docs/img``: ``{name in docs/img: file written under --out}``."""
    img.mkdir(parents=True, exist_ok=True)
    for name, src in figures.items():
        shutil.copyfile(src, img / name)
        print(f"copied {_rel(Path(src))} to {_rel(img / name)}")


__all__ = ["ROOT", "RESULTS", "DOCS_MD", "DOCS_IMG", "interleaved", "Stopwatch", "add_output_args", "write_json",
           "read_json", "text_table", "print_table", "markdown_table", "write_docs_section", "save_figure",
           "publish_figures"]
