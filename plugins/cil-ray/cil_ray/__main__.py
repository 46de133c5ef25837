"""``python -m cil_ray``: small helpers for the remote-chip recipe (docs/distributed.md).

* ``python -m cil_ray token PATH [--force]`` — write a new random token to PATH, mode 0600;
* ``python -m cil_ray probe HOST:PORT [--token-file PATH]`` — check that a Ray head answers and
  accepts the token (exit 0), or say why not (exit 1), within seconds.
"""

from __future__ import annotations

import argparse
import sys

from cil_core.errors import CilError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cil_ray", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("token", help="write a new random token to a 0600 file")
    t.add_argument("path")
    t.add_argument("--force", action="store_true", help="replace an existing file")
    pr = sub.add_parser("probe", help="check that a Ray head answers and accepts the token")
    pr.add_argument("address", help="host:port of the head node (its GCS port, 6379 by default)")
    pr.add_argument("--token-file", default=None)
    pr.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    from . import cluster

    try:
        if a.cmd == "token":
            path = cluster.write_token_file(a.path, force=a.force)
            print(f"wrote a new token to {path} (mode 0600)")
        else:
            tok, where = cluster._resolve_token(None, a.token_file)
            cid = cluster.probe(a.address, tok, a.timeout)
            print(f"the Ray head at {a.address} accepts the token from {where} (cluster {cid[:12]})")
    except CilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
