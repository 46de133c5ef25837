"""Exceptions raised by cil. Every message names the offending thing (layer, parameter,
plugin, backend) so that a user can act on it."""

from __future__ import annotations


class CilError(Exception):
    """Base class of every error cil raises on purpose."""


class SpecError(CilError, ValueError):
    """A network description is inconsistent (missing parameter, unknown option)."""


class ShapeError(CilError, ValueError):
    """An input or parameter has the wrong shape."""


class OptionError(CilError, ValueError):
    """An option of an algorithm, backend, adapter or the trainer is unknown, of the wrong type
    or out of range. The message names the option and what is valid."""


class DataError(CilError, ValueError):
    """Training or evaluation data cannot be used as given (empty, labels out of range or not
    integers, a dtype that cannot be cast safely). The message says what to change."""


class CheckpointError(CilError, RuntimeError):
    """A checkpoint cannot be written or resumed (exists, missing, unreadable, incompatible).
    The message says what differs or what to do."""


class NonFiniteError(CilError, ValueError):
    """A tensor holds NaN or inf where finite values are required."""


class UnsupportedModelError(CilError, TypeError):
    """No loaded adapter accepts this model type."""


class UnsupportedLayerError(CilError, TypeError):
    """An adapter accepts the model type but a layer (or a layer option) has no equivalent."""


class BackendCapacityError(CilError, ValueError):
    """The backend cannot hold the model (a chip limit is exceeded). The message names the limit."""


class PluginError(CilError, RuntimeError):
    """A plugin is missing, misspelt, registers a name twice, or breaks a hook contract."""


class HardwareError(CilError, RuntimeError):
    """A backend (hardware adapter) failed: it raised, timed out or returned a malformed
    observation. ``backend`` names the adapter."""

    def __init__(self, message: str, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend


class LockError(CilError, RuntimeError):
    """A file is locked by another cil process (e.g. a sweep's results file, which one sweep at a
    time may write). The message names the holder (pid, host, user, since)."""
