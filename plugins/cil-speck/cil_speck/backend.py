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
* Parameter sets (``max_sets = 32``): ``transfer(..., n_sets=S)`` quantizes every set exactly as
  a single transfer would (its own per-layer scale) and one forward runs all ``S`` sets, in
  parallel over (set, sample) pairs: ``output`` ``[T, S, B, *out]``, layers ``[T, S, B, ...]``,
  set ``s`` bit-identical to a single call with its weights.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from cil_core import Backend, BackendCapacityError, Deployment, LayerObservation, Observation, ShapeError
from cil_core.data import EventBatch, as_dense
from cil_core.hardware.domains import HeldParameter
from cil_core.hardware.transfer import write_neuron_parameters
from cil_core.network.spec import check_parameter_shapes

from . import kernel as K
from .chip import map_spec, quantize
from .events import dense_to_arrays, eventbatch_to_arrays


class SpeckBackend(Backend):
    """Speck-style event-driven chip (8-bit weights, 16-bit IAF state, numba event loop)."""

    name = "speck"
    #: parameter sets per call: up to 32 weight sets run in one event loop, parallel over
    #: (set, sample) pairs. A real chip holds one; the cap bounds the recorded spikes
    #: (``record=True`` holds ``sets x samples x T x neurons`` counts) and is well past the point
    #: where the per-call costs (input conversion, thread start) stop mattering.
    max_sets = 32
    observes_layers = True
    observes_membrane = False
    stochastic = False
    #: what the chip runs; batch norm is folded into the preceding layer at transfer
    capabilities = frozenset({"dense", "conv2d", "pool-sum", "pool-avg", "multi-spike"})
    capability_hints = {
        "bias": "the simulated chip has no bias inputs: build the layers with bias=False, or pass "
                "drop_biases=True to drop them with a warning (a BatchNorm folded at transfer adds a bias too)",
        "pool-max": "the chip pools by summing events: use nn.AvgPool2d or sinabs SumPool2d instead of MaxPool2d",
        "conv1d": "use nn.Conv2d with a (1, k) kernel on input shaped (C, 1, L)",
        "recurrent": "the chip's layers are feed-forward: it has no recurrent connections",
        "adaptive-threshold": "the chip has one fixed threshold per layer (no adaptation)",
        "synaptic-current": "the chip's neurons are integrate-and-fire without a synaptic current: use snntorch Leaky "
                            "with beta=1 or sinabs IAF",
        "membrane-readout": "the chip outputs spikes only: read out spike counts (readout='rate')",
        "graded-spikes": "events carry no amplitude: use graded_spikes_factor=1",
        "refractory": "the chip's neurons have no refractory period: use a neuron without one (norse IAFCell, "
                      "sinabs IAF)",
        "quantized-state": "the chip holds its own 16-bit integer state, scaled to the threshold at transfer; its "
                           "levels are not a model's quantization levels: build the layers without state_quant",
    }

    #: one trained threshold per layer (scaled onto the chip's integer grid with the weights); no leak
    neuron_parameters = {"threshold": HeldParameter("per-layer", note="one per layer, on the chip's integer grid")}
    neuron_parameter_hints = {
        "beta": "the chip's neurons do not leak (integrate-and-fire): use beta=1 without learn_beta",
        "alpha": "the chip's neurons have no synaptic current",
        "spike_amplitude": "events carry no amplitude",
    }

    def __init__(self, drop_biases: bool = False, threads: int | None = None) -> None:
        self.drop_biases = drop_biases
        if drop_biases:  # biases are accepted and dropped (with a warning) at transfer
            self.capabilities = type(self).capabilities | {"bias"}
        self.threads = threads

    def check(self, spec) -> None:
        map_spec(spec, self.drop_biases)

    def transfer(self, spec: Any, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Weight transfer. With ``n_sets = S`` every tensor has a leading set dimension and each
        set is quantized exactly as a single transfer of it would be (its own per-layer scale);
        ``chip["weights_int8"]``, ``["thresholds"]``, ``["v_mins"]``, ``["scales"]`` then hold one
        per-layer list per set."""
        spec, params = write_neuron_parameters(spec, params, n_sets, chip=self.name)  # a trained threshold per layer
        cmap = map_spec(spec, self.drop_biases)
        if n_sets is not None:
            cap = self.max_sets
            if n_sets < 1 or cap is not None and n_sets > cap:
                raise BackendCapacityError(f"speck: parameter sets: one call holds 1 to {cap} sets "
                                           f"(max_sets={cap}), got n_sets={n_sets}")
        check_parameter_shapes(spec, params, n_sets, where="speck: ")
        sets = [params] if n_sets is None else [{k: v[s] for k, v in params.items()} for s in range(n_sets)]
        qs = [quantize(cmap, p, self.drop_biases) for p in sets]
        L = len(cmap.layers)
        base = np.zeros((L, K.N_PARAMS), np.int64)
        voff = roff = 0
        cap = 1
        for i, cl in enumerate(cmap.layers):
            base[i, [K.C, K.H, K.W]] = cl.in_shape
            base[i, [K.PH_, K.PW_]] = cl.pool
            base[i, [K.O, K.HO, K.WO]] = cl.out_shape
            base[i, [K.KH, K.KW]] = cl.kernel
            base[i, [K.SH, K.SW]] = cl.stride
            base[i, [K.PADH, K.PADW]] = cl.padding
            base[i, K.RZERO] = 1 if cl.neuron.reset == "zero" else 0  # type: ignore[union-attr]
            base[i, K.VOFF] = voff
            base[i, K.ROFF] = roff
            n = int(np.prod(cl.out_shape))
            voff += n
            roff += n
            cap += cl.out_shape[0] * cl.kernel[0] * cl.kernel[1]
        # one block of L rows per set; the weights of all sets concatenated, each layer's kernel
        # in the layout [C, KH, KW, O] (see cil_speck.kernel)
        lp = np.tile(base, (len(qs), 1))
        woff = 0
        for s, q in enumerate(qs):
            for i in range(L):
                row = s * L + i
                lp[row, K.THR] = q.thresholds[i]
                lp[row, K.VMIN] = q.v_mins[i]
                lp[row, K.WOFF] = woff
                woff += q.weights[i].size
        wts = np.concatenate([np.transpose(w, (1, 2, 3, 0)).ravel() for q in qs for w in q.weights]).astype(np.int32)
        fan = K.fan_out_table(lp, len(qs))  # fills lp's fan-out columns
        chip = {"map": cmap, "lp": lp, "weights": wts, "fan": fan, "loop_weights": K.loop_weights([w for q in qs for w in q.weights], K.loop_dtype(lp)),
                "n_state": voff, "rec_size": roff, "stack_cap": cap, "n_sets": len(qs), "cores": cmap.cores}
        for key in ("weights", "thresholds", "v_mins", "scales"):
            per_set = [getattr(q, key) for q in qs]
            chip["weights_int8" if key == "weights" else key] = per_set[0] if n_sets is None else per_set
        if n_sets is None:
            effective = qs[0].effective
        else:
            effective = {k: torch.stack([q.effective[k] for q in qs]) for k in qs[0].effective}
        return Deployment(self.name, spec, effective, n_sets, chip)

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """Forward: ``output`` ``[T, B, *out]``, or ``[T, S, B, *out]`` for a deployment of
        ``S`` sets (all sets and samples in one parallel event loop); likewise the recorded
        layers."""
        ch = deployment.chip
        cmap = ch["map"]
        S = int(ch.get("n_sets", 1))
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
            out, rec, syn = K.run_events(*arrays, lp, ch["loop_weights"], ch["fan"], ch["n_state"], T, n_out,
                                         ch["rec_size"] if record else 0, ch["stack_cap"], S)
        finally:
            if old is not None:
                import numba

                numba.set_num_threads(old)
        dt = time.perf_counter() - t0
        dev = dense.device
        sets = () if deployment.n_sets is None else (S,)

        def arrange(a: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
            """Kernel rows ``[S*B, T, n]`` → ``[T, (S,) B, *shape]``."""
            t = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32).reshape(S, B, T, -1)
            return t.permute(2, 0, 1, 3).reshape(T, *sets, B, *shape).to(dev)

        output = arrange(out, tuple(cmap.output_shape))
        layers = None
        if record:
            layers = []
            for i, cl in enumerate(cmap.layers):
                lo = int(ch["lp"][i, K.ROFF])
                n = int(np.prod(cl.out_shape))
                layers.append(LayerObservation(arrange(rec[:, :, lo:lo + n], tuple(cl.spec_out_shape))))
        meta = {"synaptic_updates": int(syn.sum()), "input_events": int(arrays[4][-1]), "seconds": dt,
                "counts": output.sum(0)}
        if deployment.n_sets is not None:
            meta["synaptic_updates_per_set"] = syn.reshape(S, B).sum(1).tolist()
        return Observation(output, layers, meta)
