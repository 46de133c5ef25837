"""cil adapter for sinabs models (AGPL-3.0, because it imports sinabs).

Never imports ``sinabs.backend.dynapcnn`` (it imports samna, which cannot be installed here).
"""

from .adapter import SinabsAdapter, run_sinabs

__all__ = ["SinabsAdapter", "run_sinabs"]
