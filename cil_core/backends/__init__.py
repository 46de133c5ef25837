"""Backends that ship with the core. Chip simulators live in plugins."""

from .ideal import IdealBackend

__all__ = ["IdealBackend"]
