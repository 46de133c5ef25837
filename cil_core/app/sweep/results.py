"""The results file (JSON Lines, appended under a flock lock) and read_results."""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Mapping

from ...errors import LockError


class ResultsFile:
    """The JSON Lines file of a sweep: one record per finished point, appended one whole line at
    a time (a single ``write`` on an ``O_APPEND`` descriptor, then ``fsync``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The records in the file, and a note per line that is not one (ignored)."""
        if not self.path.exists():
            return [], []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        records, notes = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            last = n == len(lines) or (n == len(lines) - 1 and complete)
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                    raise ValueError("not a sweep record (no 'key')")
            except ValueError as exc:
                what = ("its last line is truncated (an interrupted write?)" if last and not complete
                        else f"line {n} is not a sweep record ({str(exc)[:80]})")
                notes.append(f"results file {self.path}: {what}; ignored, that point runs again")
                continue
            records.append(rec)
        return records, notes

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = b"\n" + line  # never glue a record to a truncated line
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the results file for one writer: ``fcntl.flock`` on ``RESULTS.lock``, which says who
        holds it (pid, host, user, since). A second holder fails at once with a :class:`LockError`
        naming the first; the lock goes with its process (a killed sweep leaves no stale lock, only
        possibly the side file, which the next sweep takes over). The side file is removed on release."""
        import fcntl

        lp = self.lock_path
        lp.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 4096).decode(errors="replace").strip()
                finally:
                    os.close(fd)
                try:
                    h = json.loads(holder)
                    who = (f"pid {h.get('pid')} on {h.get('host')} (user {h.get('user')}, since "
                           f"{h.get('since')})")
                except ValueError:
                    who = "a process that has not written its name yet"
                raise LockError(f"results file {self.path} is being written by another sweep: {who}; wait for it "
                                f"to end, or give another results file (--results). The lock ({lp}) is released "
                                "when that process ends") from None
            try:  # the file we locked may have been removed by its previous holder meanwhile: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(lp))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            try:
                user = getpass.getuser()
            except Exception:  # pragma: no cover - no user name (a container without passwd entry)
                user = str(os.getuid())
            info = {"pid": os.getpid(), "host": socket.gethostname(), "user": user,
                    "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "results": str(self.path)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            yield lp
        finally:
            try:
                os.unlink(lp)  # while holding it: a waiter that opened it before re-checks and locks a new one
            except FileNotFoundError:  # pragma: no cover
                pass
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"



def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a results file by key (the last one of a key wins); bad lines are skipped."""
    records, _ = ResultsFile(path).read()
    return {r["key"]: r for r in records}
