"""Generated sections of Markdown files: a table between two HTML-comment markers, replaced in
place from the code that declares it (the README's capability table, docs/models.md's adapter
tables), so that no such table is written by hand."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable


def replace_section(path: Path, begin: str, end: str, new: str) -> None:
    """Replace the text from ``begin`` to ``end`` (markers included) in ``path`` with ``new``."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} section")
    path.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, text, flags=re.S))


def section_main(argv: list[str] | None, prog: str, description: str, section: Callable[[], str], begin: str,
                 end: str) -> int:
    """The command line of a generator: print the section, or ``--write FILE`` to replace it there."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--write", type=Path, help="replace the generated section of this Markdown file")
    args = ap.parse_args(argv)
    if args.write:
        replace_section(args.write, begin, end, section())
    else:
        print(section())
    return 0


__all__ = ["replace_section", "section_main"]
