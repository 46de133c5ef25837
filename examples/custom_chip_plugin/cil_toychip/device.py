"""Stand-in for a chip vendor's SDK: the ToyChip "device".

Replace this module with calls into your own driver. It behaves the way real neuromorphic
devices do in the respects that matter to an adapter:

* it holds **integer weight codes** (``bits``-bit signed) and one analog gain per layer, written
  by :meth:`write_layer` — weights change only when they are written again;
* every synapse has a fixed fabrication mismatch (a gain near 1, seeded by ``seed``) that the
  software never sees;
* neurons are leaky integrate-and-fire, :math:`v \\leftarrow \\lambda v + g\\,(C \\odot M) x`,
  spike when :math:`v > \\theta`, reset by subtracting :math:`\\theta` at once;
* the **membranes keep their state** from one :meth:`run` to the next until :meth:`reset`
  (a real chip does not forget between two input streams on its own);
* it talks numpy, not torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Layer:
    codes: np.ndarray      # int8 [out, in]
    gain: float            # software units per code
    threshold: float
    leak: float            # membrane decay per step (lambda)


class ToyDevice:
    """A small feed-forward LIF chip: at most ``max_layers`` dense layers of at most
    ``max_neurons`` neurons each."""

    max_layers = 4
    max_neurons = 256

    def __init__(self, bits: int = 6, mismatch: float = 0.2, seed: int = 0) -> None:
        self.bits = bits
        self.qmax = 2 ** (bits - 1) - 1
        self.mismatch_sigma = mismatch
        self.seed = seed
        self.layers: list[_Layer] = []
        self.loaded: object = None          # which deployment the registers hold
        self._mismatch: list[np.ndarray] = []
        self._v: list[np.ndarray] | None = None
        self.writes = 0

    # ---------------------------------------------------------------- registers
    def configure(self, n_layers: int) -> None:
        if not 1 <= n_layers <= self.max_layers:
            raise ValueError(f"ToyDevice has {self.max_layers} layers, {n_layers} requested")
        self.layers = [None] * n_layers  # type: ignore[list-item]

    def write_layer(self, k: int, codes: np.ndarray, gain: float, threshold: float, leak: float) -> None:
        """Write one layer's weight codes and neuron registers (the slow part on a real chip)."""
        codes = np.asarray(codes)
        if codes.dtype != np.int8 or np.abs(codes).max(initial=0) > self.qmax:
            raise ValueError(f"layer {k}: weight codes must be int8 within +-{self.qmax}")
        if codes.shape[0] > self.max_neurons:
            raise ValueError(f"layer {k}: {codes.shape[0]} neurons, the chip has {self.max_neurons} per layer")
        self.layers[k] = _Layer(codes, float(gain), float(threshold), float(leak))
        while len(self._mismatch) <= k:
            self._mismatch.append(np.empty(0))
        if self._mismatch[k].shape != codes.shape:  # fabrication mismatch: fixed per synapse
            rng = np.random.default_rng(self.seed * 1000 + k)
            self._mismatch[k] = np.exp(self.mismatch_sigma * rng.standard_normal(codes.shape))
        self.writes += 1

    # ---------------------------------------------------------------- running
    def reset(self) -> None:
        """Clear every membrane (what the adapter must do before each new input batch)."""
        self._v = None

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Stream time-major input spikes ``[T, B, in]``; returns output spikes ``[T, B, out]``."""
        T, B = spikes.shape[:2]
        if self._v is None or self._v[0].shape[0] != B:
            self._v = [np.zeros((B, layer.codes.shape[0]), np.float32) for layer in self.layers]
        w = [(layer.codes * m * layer.gain).astype(np.float32) for layer, m in zip(self.layers, self._mismatch)]
        out = np.zeros((T, B, self.layers[-1].codes.shape[0]), np.float32)
        for t in range(T):
            h = spikes[t].astype(np.float32)
            for k, layer in enumerate(self.layers):
                v = self._v[k] * layer.leak + h @ w[k].T
                s = (v > layer.threshold).astype(np.float32)
                self._v[k] = v - s * layer.threshold
                h = s
            out[t] = h
        return out
