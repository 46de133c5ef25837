"""cil adapter for rockpool models (adapter ``rockpool``): a rockpool ``Sequential`` of
``LinearTorch`` and ``LIFTorch`` modules, wrapped unchanged and reproduced spike for spike.

rockpool is imported only when a model is adapted (:mod:`cil_rockpool.adapter`), never at
plugin discovery, and always without ``samna`` (:func:`cil_rockpool.sdk.import_rockpool`)."""

from __future__ import annotations

__all__: list[str] = []
