"""The ``speck`` backend: a Speck / DYNAP-CNN-style event-driven chip, simulated exactly.

* Layout and limits: :mod:`cil_speck.chip` (≤ 9 layers, kernels ≤ 16x16, strides and pooling
  in {1, 2, 4, 8}, ≤ 1024 features per layer, per-core kernel/neuron memory, no biases, no leak).
* Weight transfer: per-layer scaling into 8-bit signed weights and 16-bit thresholds, 16-bit
  saturating state with a lower bound (:func:`cil_speck.chip.quantize`).
* Forward: the compiled event loop of :mod:`cil_speck.kernel` (one spike per neuron per input
  event, subtract/zero reset, depth-first propagation in ascending flat index order).
* Inputs: an :class:`~cil_core.EventBatch` (its raw events are used; its ``dense`` view only
  gives ``T``) or a dense count tensor (converted as documented in :mod:`cil_speck.events`).
* Output: :class:`~cil_core.Observation` with ``output`` = output spike counts ``[T, B, *out]``
  binned into the ``T`` windows of the dense view; ``meta["counts"]`` = per-class totals;
  with ``record=True`` the binned spikes of every neuron layer (no membranes: the chip does not
  report them).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from cil_core import Backend, BackendCapacityError, Deployment, LayerObservation, Observation, ShapeError
from cil_core.data import EventBatch, as_dense

from . import kernel as K
from .chip import map_spec, quantize
from .events import dense_to_arrays, eventbatch_to_arrays


class SpeckBackend(Backend):
    """Speck-style event-driven chip (8-bit weights, 16-bit IAF state, numba event loop)."""

    name = "speck"
    max_sets = 1
    observes_layers = True
    observes_membrane = False
    stochastic = False

    def __init__(self, drop_biases: bool = False, threads: int | None = None) -> None:
        self.drop_biases = drop_biases
        self.threads = threads

    def check(self, spec) -> None:
        map_spec(spec, self.drop_biases)

    def transfer(self, spec: Any, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        if n_sets is not None:
            raise BackendCapacityError(f"speck: parameter sets: the chip holds one set of weights (max_sets=1), "
                                       f"got n_sets={n_sets}")
        cmap = map_spec(spec, self.drop_biases)
        q = quantize(cmap, params, self.drop_biases)
        lp = np.zeros((len(cmap.layers), K.N_PARAMS), np.int64)
        woff = voff = roff = 0
        cap = 1
        for i, cl in enumerate(cmap.layers):
            lp[i, [K.C, K.H, K.W]] = cl.in_shape
            lp[i, [K.PH_, K.PW_]] = cl.pool
            lp[i, [K.O, K.HO, K.WO]] = cl.out_shape
            lp[i, [K.KH, K.KW]] = cl.kernel
            lp[i, [K.SH, K.SW]] = cl.stride
            lp[i, [K.PADH, K.PADW]] = cl.padding
            lp[i, K.THR] = q.thresholds[i]
            lp[i, K.VMIN] = q.v_mins[i]
            lp[i, K.RZERO] = 1 if cl.neuron.reset == "zero" else 0  # type: ignore[union-attr]
            lp[i, K.WOFF] = woff
            lp[i, K.VOFF] = voff
            lp[i, K.ROFF] = roff
            n = int(np.prod(cl.out_shape))
            woff += q.weights[i].size
            voff += n
            roff += n
            cap += cl.out_shape[0] * cl.kernel[0] * cl.kernel[1]
        # kernel layout [C, KH, KW, O] (see cil_speck.kernel)
        wts = np.concatenate([np.transpose(w, (1, 2, 3, 0)).ravel() for w in q.weights]).astype(np.int32)
        chip = {"map": cmap, "lp": lp, "weights": wts, "n_state": voff, "rec_size": roff, "stack_cap": cap,
                "weights_int8": q.weights, "thresholds": q.thresholds, "v_mins": q.v_mins, "scales": q.scales,
                "cores": cmap.cores}
        return Deployment(self.name, spec, q.effective, None, chip)

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        ch = deployment.chip
        cmap = ch["map"]
        dense = as_dense(inputs)
        T, B = int(dense.shape[0]), int(dense.shape[1])
        if isinstance(inputs, EventBatch):
            arrays = eventbatch_to_arrays(inputs.events, T, inputs.duration_us, cmap.layers[0].pre_shape)
        elif isinstance(inputs, torch.Tensor):
            arrays = dense_to_arrays(inputs)
        else:
            raise ShapeError(f"speck: cannot run inputs of type {type(inputs).__name__}")
        n_out = int(np.prod(cmap.layers[-1].out_shape))
        t0 = time.perf_counter()
        old = None
        if self.threads is not None:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(self.threads)
        try:
            lp = ch["lp"]
            if not record:
                lp = lp.copy()
                lp[:, K.ROFF] = -1
            out, rec, syn = K.run_events(*arrays, lp, ch["weights"], ch["n_state"], T, n_out,
                                         ch["rec_size"] if record else 0, ch["stack_cap"])
        finally:
            if old is not None:
                import numba

                numba.set_num_threads(old)
        dt = time.perf_counter() - t0
        dev = dense.device
        output = torch.from_numpy(out).to(torch.float32).transpose(0, 1).reshape(T, B, *cmap.output_shape).to(dev)
        layers = None
        if record:
            layers = []
            for i, cl in enumerate(cmap.layers):
                lo = int(ch["lp"][i, K.ROFF])
                n = int(np.prod(cl.out_shape))
                s = torch.from_numpy(np.ascontiguousarray(rec[:, :, lo:lo + n])).to(torch.float32)
                layers.append(LayerObservation(s.transpose(0, 1).reshape(T, B, *cl.spec_out_shape).to(dev)))
        meta = {"synaptic_updates": int(syn.sum()), "input_events": int(arrays[4][-1]), "seconds": dt,
                "counts": output.sum(0)}
        return Observation(output, layers, meta)
