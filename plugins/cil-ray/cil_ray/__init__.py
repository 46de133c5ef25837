"""cil-ray: run any cil backend on Ray workers.

* ``cil_core.make_backend("ray:<backend>", workers=N, ...)`` — :class:`RayBackend`: replicas
  of a simulator sharing MH proposals and large batches, a chip attached to another host, a
  board held exclusively; failures counted by cil's own retries (see :mod:`cil_ray.backend`).
* :func:`connect`, :func:`start_local`, :func:`shutdown`, :func:`write_token_file` — getting onto a
  cluster safely (token auth, fail-fast probe; see :mod:`cil_ray.cluster` and
  ``docs/distributed.md``).

Ray is imported lazily: importing this package does not import Ray.
"""

from .backend import RayBackend
from .cluster import connect, ensure_ray, probe, read_token_file, shutdown, start_local, write_token_file
from .errors import AuthError, BoardBusyError, ClusterError, FleetError, PlacementError

__all__ = ["RayBackend", "connect", "ensure_ray", "probe", "shutdown", "start_local", "write_token_file",
           "read_token_file", "ClusterError", "AuthError", "PlacementError", "BoardBusyError", "FleetError"]
