"""Stand-in for a chip vendor's SDK: replace it with calls into your own driver. Like a real chip
it holds **integer weight codes** and one gain per layer, changed only when written again; every
synapse has a fixed, seeded fabrication **mismatch** the software never sees; the membranes
**keep their state** between runs until :meth:`ToyDevice.reset`; it talks numpy. Neurons:
``v = leak * v + gain * (codes * mismatch) @ x``, spike when ``v > threshold``, subtract it."""

from __future__ import annotations

import numpy as np


class ToyDevice:
    """At most ``max_layers`` dense layers of at most ``max_neurons`` neurons each."""

    max_layers, max_neurons = 4, 256

    def __init__(self, bits: int = 6, mismatch: float = 0.2, seed: int = 0) -> None:
        self.qmax, self.sigma, self.seed = 2 ** (bits - 1) - 1, mismatch, seed
        self.layers: list[tuple[np.ndarray, float, float, float]] = []  # (codes, gain, threshold, leak)
        self.loaded: object = None  # which deployment the registers hold
        self.writes = 0
        self._v: list[np.ndarray] | None = None

    def write(self, layers: list[tuple[np.ndarray, float, float, float]]) -> None:
        """Write every layer's weight codes and neuron registers (the slow part on a real chip)."""
        if len(layers) > self.max_layers or any(c.dtype != np.int8 or np.abs(c).max() > self.qmax
                                                or c.shape[0] > self.max_neurons for c, *_ in layers):
            raise ValueError(f"{self.max_layers} layers of {self.max_neurons} neurons, int8 codes within +-{self.qmax}")
        self.layers, self.writes = list(layers), self.writes + 1

    def reset(self) -> None:
        """Clear every membrane."""
        self._v = None

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Stream input spikes ``[T, B, in]`` (one state per sample); returns output spikes ``[T, B, out]``."""
        T, B = spikes.shape[:2]
        if self._v is None or self._v[0].shape[0] != B:
            self._v = [np.zeros((B, c.shape[0]), np.float32) for c, *_ in self.layers]
        rngs = [np.random.default_rng(self.seed * 1000 + k) for k in range(len(self.layers))]
        w = [(c * np.exp(self.sigma * r.standard_normal(c.shape)) * g).astype(np.float32)  # fixed mismatch
             for (c, g, *_), r in zip(self.layers, rngs)]
        out = np.zeros((T, B, self.layers[-1][0].shape[0]), np.float32)
        for t in range(T):
            h = spikes[t].astype(np.float32)
            for k, (_, _, threshold, leak) in enumerate(self.layers):
                v = self._v[k] * leak + h @ w[k].T
                h = (v > threshold).astype(np.float32)
                self._v[k] = v - h * threshold
            out[t] = h
        return out
