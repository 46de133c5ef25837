"""The errors cil-ray adds to cil's taxonomy (all are :class:`cil_core.CilError`).

Errors raised *inside* a worker keep their own cil type (a remote
:class:`~cil_core.BackendCapacityError` is a ``BackendCapacityError`` here too); their message is
extended with the worker and node that raised them.
"""

from __future__ import annotations

from cil_core.errors import CilError, HardwareError, OptionError


class ClusterError(CilError, RuntimeError):
    """The Ray cluster cannot be reached or used (nothing answers at the address, Ray failed to
    start). The message says what was tried and what to check."""


class AuthError(ClusterError):
    """The cluster refused this client: no token, or a token that is not the cluster's. Raised
    before ``ray.init`` is attempted, within seconds (Ray itself retries for ~20 s and then
    reports only a connection failure)."""


class PlacementError(ClusterError):
    """A worker cannot be placed: it asks for a resource or node label that no node of the
    cluster offers, or the resources exist but stayed busy for ``ready_timeout`` seconds."""


class BoardBusyError(PlacementError):
    """A board (see the ``boards`` option) is held by another run; the message says who holds it
    (user, host, process, since when)."""


class FleetError(OptionError):
    """Workers that are different chips (different per-worker options or different boards) were
    asked to share calls as if they were identical replicas."""


__all__ = ["ClusterError", "AuthError", "PlacementError", "BoardBusyError", "FleetError", "HardwareError"]
