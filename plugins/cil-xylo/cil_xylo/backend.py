r"""The ``xylo`` backend: a SynSense Xylo Audio 2 core in cil's loop.

* **check / transfer** (:mod:`cil_xylo.transfer`): the network must be
  ``Dense -> Neuron -> Dense -> Neuron`` with synaptic currents, within the chip's declared
  limits (:data:`cil_xylo.chip.AUDIO2`); weights become int8 codes with a shift per matrix,
  thresholds and biases int16 on the same scale, β and α bit-shift decays. ``Deployment.params``
  hold the realised weights in software units, ``Deployment.spec`` the realised neuron layers,
  ``Deployment.chip`` the integer network (``"network"``), the realised β/α/θ (``"neurons"``)
  and rockpool's specification of set 0 (``"specification"``).
* **forward**: the integer core (:mod:`cil_xylo.engine`) on input spike counts — the batched
  numba engine (``engine="fast"``, default; bit-exact with xylosim) or the vendor's simulator
  itself (``engine="xylosim"``: rockpool's ``XyloSim``, one set and sample at a time).

**Timing.** The chip's output neurons receive the hidden spikes one step late, and so does each
further hidden layer of a chain (Xylo IMU: layer ``k`` receives layer ``k-1``'s spikes through
the recurrent matrix, one step late). With ``align_output=True`` (default) the backend streams
``L`` more, empty, time steps (``L`` hidden layers) and returns hidden layer ``k`` (from 0) at
chip steps ``k..k+T-1`` and the output at ``L..L+T-1`` as the model's steps ``0..T-1``, so bin
``t`` of every layer reflects the input up to ``t`` as in the software model (a later layer's
bias then acts for its extra steps). ``align_output=False`` returns the chip's own timing.

**Observations** (``record=True``): per neuron layer a ``LayerObservation`` with the spikes
(hidden: counts 0..31 per step) and the membrane in software units,
:math:`v = V/\kappa` (:math:`\kappa = s\alpha` for snntorch-style current updates, see
:mod:`cil_xylo.transfer`), read **after** the chip's immediate subtract reset, at the end of
each step.

**Inputs**: spike counts per channel and step, non-negative integers (binary spikes, or counts
up to 255 — the chip processes at most 15 per channel and step, the rest is dropped, as on the
chip).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from cil_core import Backend, Deployment, NetworkSpec, Observation
from cil_core.data import as_dense
from cil_core.errors import OptionError
from cil_core.hardware import LayerObservation
from cil_core.hardware.domains import HeldParameter, IntegerRange
from cil_core.hardware.transfer import write_neuron_parameters
from cil_core.network.description import check_parameters

from .chip import AUDIO2, CHIPS, XyloChip
from .engine import ENGINES, run_fast, run_xylosim, saturation
from .transfer import layout, to_chip

__all__ = ["XyloBackend"]

#: what the input transport carries (xylosim takes uint8 counts); the chip itself processes
#: at most ``chip.input_spikes.hi`` of them per channel and step
TRANSPORT = IntegerRange("input spike count", 0, 255)


class XyloBackend(Backend):
    """SynSense Xylo Audio 2 (SYNS61201), Audio 3 or IMU: int8 weights, int16 saturating state, bit-shift leaks;
    bit-exact with the vendor's xylosim (rockpool XyloSim).

    Options: ``chip`` (the Xylo core whose declared limits apply: "audio2" = SYNS61201, "audio3"
    = SYNS65302, the same core with 992 hidden and 16 output neurons, "imu" = SYNS63300, the same
    core with a chain of at least two hidden layers held as blocks of one 496-neuron population,
    the first and last at most 128 neurons, and 16 output neurons),
    ``engine`` ("fast": the batched numba engine, all sets x samples in one call; "xylosim": the
    vendor's simulator through rockpool, one set and sample at a time; results are identical),
    ``round_decays`` (run a beta or alpha the chip cannot hold as the nearest 1 - 2^-k, with a
    warning; default: refuse, naming the nearest values), ``align_output`` (compensate the
    chip's one-step output delay: stream one extra step, return chip steps 1..T),
    ``threshold_target`` (the integer threshold the transfer aims for: headroom below the 16-bit
    saturation against state resolution).
    """

    name = "xylo"
    max_sets = None
    observes_layers = True
    observes_membrane = True
    stochastic = False
    placement_options = frozenset({"engine"})
    capabilities = frozenset({"dense", "bias", "synaptic-current", "recurrent", "multi-spike"})
    capability_hints = {
        "conv2d": "Xylo's synapses are dense: flatten the input and use nn.Linear (at most 16 input channels)",
        "conv1d": "Xylo's synapses are dense: use nn.Linear over at most 16 input channels",
        "pool-sum": "Xylo has no pooling: reduce the input channels before the chip",
        "pool-avg": "Xylo has no pooling: reduce the input channels before the chip",
        "pool-max": "Xylo has no pooling: reduce the input channels before the chip",
        "membrane-readout": "Xylo's output neurons spike: read out spike counts (readout='rate')",
        "adaptive-threshold": "Xylo's thresholds are fixed",
        "graded-spikes": "Xylo's spikes carry no amplitude: use graded_spikes_factor=1",
    }
    neuron_parameter_hints = {"spike_amplitude": "Xylo's spikes carry no amplitude"}
    #: what every network must have (Audio 2's; the ``chip`` option sets the chip's own)
    requires = AUDIO2.requirements
    #: the other chips get their own column in the README's capability table
    table_variants = {f'chip="{name}"': {"chip": name} for name in CHIPS if name != "audio2"}

    def __init__(self, chip: str = "audio2", engine: str = "fast", round_decays: bool = False,
                 align_output: bool = True, threshold_target: int = 4096) -> None:
        if chip not in CHIPS:
            raise OptionError(f"unknown Xylo chip {chip!r}; known: {', '.join(CHIPS)}")
        if engine not in ENGINES:
            raise OptionError(f"unknown engine {engine!r}; use 'fast' (batched, bit-exact with xylosim) or 'xylosim' "
                              "(the vendor's simulator through rockpool)")
        self.chip: XyloChip = CHIPS[chip]
        self.requires = self.chip.requirements
        if not self.chip.threshold.lo <= threshold_target <= self.chip.threshold.hi:
            raise OptionError(f"threshold_target must lie in {self.chip.threshold.lo}..{self.chip.threshold.hi}, "
                              f"not {threshold_target}")
        self.engine = engine
        self.round_decays = bool(round_decays)
        #: trained decays per neuron as bit shifts (refused, naming the nearest 1 - 2^-k, unless
        #: round_decays=True), thresholds per neuron on the chip's integer grid
        self.neuron_parameters = {
            "beta": HeldParameter("per-neuron", self.chip.beta, "a bit-shift decay 1 - 2^-k"),
            "alpha": HeldParameter("per-neuron", self.chip.alpha, "a bit-shift decay 1 - 2^-k"),
            "threshold": HeldParameter("per-neuron", self.chip.threshold, "scaled onto the chip's integer grid"),
        }
        self.align_output = bool(align_output)
        self.threshold_target = int(threshold_target)
        if engine == "xylosim":  # fail at construction, naming the cause, if the SDK cannot load
            from .sdk import xylo_subpackage

            xylo_subpackage(self.chip.rockpool_package)

    # ------------------------------------------------------------------ check / transfer
    def check(self, spec: NetworkSpec) -> None:
        """Refuse, before the first call, a network the chip cannot hold (the chain, sizes,
        neuron semantics, decays), naming the limit and the fix."""
        lay = layout(spec, self.chip)
        mode = "nearest" if self.round_decays else "refuse"
        for idx, neuron in lay.neurons:
            where = f"layer {idx} (neuron '{neuron.name}')" if neuron.name else f"layer {idx}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the transfer warns once, when it rounds
                self.chip.beta.realise(neuron.beta, where=where, chip=self.chip.name, mode=mode)
                self.chip.alpha.realise(neuron.alpha, where=where, chip=self.chip.name, mode=mode)  # type: ignore[arg-type]

    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Weight transfer (see :mod:`cil_xylo.transfer`)."""
        spec, params = write_neuron_parameters(spec, params, n_sets, chip=self.name)  # trained decays, thresholds
        check_parameters(spec, params, n_sets)
        tr = to_chip(spec, params, n_sets, self.chip, round_decays=self.round_decays,
                     threshold_target=self.threshold_target)
        chip = {"network": tr.network, "neurons": tr.neurons, "kappa": (tr.kappa_hidden, tr.kappa_output),
                "blocks": tr.blocks, "specification": tr.network.specification(0), "chip": self.chip.name}
        return Deployment(self.name, tr.spec, tr.params, n_sets, chip)

    # ------------------------------------------------------------------ forward
    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """Run the deployment's integer network on spike counts ``[T, B, n_in]``."""
        net = deployment.chip["network"]
        blocks = self._blocks(deployment)
        counts, T = self._counts(inputs, len(blocks))
        # every hidden layer delays the next layer by one step: hidden layer k (from 0) at chip
        # step t + k, the output at t + L
        L = len(blocks) if self.align_output else 0
        if self.engine == "xylosim":
            res = run_xylosim(net, counts, record, package=self.chip.rockpool_package)
        else:
            res = run_fast(net, counts, record)
        single = deployment.n_sets is None

        def shaped(a: np.ndarray, start: int, kappa: np.ndarray | None = None) -> torch.Tensor:
            a = a[start:start + T].astype(np.float32)  # [T, S, B, n]
            if kappa is not None:
                a = a / kappa.astype(np.float32)[None, :, None, :]
            t = torch.from_numpy(np.ascontiguousarray(a))
            return t[:, 0] if single else t

        out = shaped(res["output"], L)
        layers = None
        if record:
            kh, ko = deployment.chip["kappa"]
            layers = [LayerObservation(shaped(res["spikes"][..., a:z], k if L else 0),
                                       shaped(res["vmem"][..., a:z], k if L else 0, kh[:, a:z]))
                      for k, (a, z) in enumerate(blocks)]
            layers.append(LayerObservation(out, shaped(res["vmem_out"], L, ko)))
        meta = {"engine": self.engine, "chip": self.chip.name,
                "hidden_spikes": int(sum(int(lo.spikes.sum()) for lo in layers[:-1])) if layers else None}
        return Observation(out, layers, meta)

    @staticmethod
    def _blocks(deployment: Deployment) -> list[tuple[int, int]]:
        """The hidden layers' ``(start, stop)`` neuron ranges in the chip's hidden population."""
        return deployment.chip.get("blocks") or [(0, deployment.chip["network"].sizes[1])]

    def _counts(self, inputs: Any, n_hidden_layers: int = 1) -> tuple[np.ndarray, int]:
        """The input as int64 spike counts ``[T(+L), B, n_in]`` (with ``align_output``, one empty
        step appended per hidden layer, ``L``), checked against the transport's range, and ``T``."""
        x = as_dense(inputs).detach()
        x = x.reshape(x.shape[0], x.shape[1], -1)
        xn = x.cpu().numpy()
        if not (xn.min(initial=0) >= TRANSPORT.lo and xn.max(initial=0) <= TRANSPORT.hi
                and np.array_equal(xn, np.floor(xn))):  # numpy: cheaper than torch beside numba's threads
            TRANSPORT.check(x, "the input", self.chip.name, "encode the inputs as spike counts per channel and time "
                            "step (the chip processes at most 15 per channel and step)")
        counts = xn.astype(np.int64)
        if self.align_output and n_hidden_layers:
            counts = np.concatenate([counts, np.zeros((n_hidden_layers, *counts.shape[1:]), np.int64)], 0)
        return counts, int(x.shape[0])

    def saturation(self, deployment: Deployment, inputs: Any) -> dict[str, float]:
        """The share of neuron-steps whose 16-bit state was clipped at a rail while the chip ran
        ``inputs`` (every set and sample of ``deployment``, the batched engine's count, see
        :mod:`cil_xylo.engine`): ``{"hidden current", "hidden membrane", "output current",
        "output membrane"}`` -> fraction in [0, 1] (the steps the chip streams, including the
        alignment step)."""
        return saturation(deployment.chip["network"], self._counts(inputs, len(self._blocks(deployment)))[0])
