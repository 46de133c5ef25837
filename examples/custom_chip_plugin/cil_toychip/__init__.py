"""cil hardware adapter for the ToyChip: a template for your own chip (see README.md)."""
from .device import ToyDevice
from .plugin import ToyChip
