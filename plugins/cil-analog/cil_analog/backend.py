"""The ``analog-mismatch`` backend: a simulated analog (subthreshold) SNN chip whose
non-idealities the training algorithm cannot see.

It consumes the core's :class:`~cil_core.network.description.NetworkSpec` (so any adapter's model runs on it)
and reuses :func:`cil_core.network.executor.simulate` for the time loop; this module only builds the
*effective* synaptic tensors and the per-neuron parameters of one chip, and the noise source.

Non-idealities
--------------

Each is scaled by one knob ``strength`` :math:`s \\in [0, 1]` (0 = ideal, 1 = strong) and can be
overridden individually (see :class:`NonIdealities`). Below, :math:`w` is a software weight or
bias, :math:`\\theta` the nominal threshold of the neuron layer the synapses drive,
:math:`z \\sim \\mathcal N(0, 1)` a draw of the chip's fixed mismatch (seed ``seed``) and
:math:`\\xi \\sim \\mathcal N(0, 1)` a draw of the temporal noise (seed ``noise_seed``).

1. **Weight range and DAC precision** (at transfer, visible in ``Deployment.params``):

   .. math::

       w_c = \\mathrm{clip}(w, -w_{max}, w_{max}),\\quad w_{max} = \\rho\\,\\theta, \\qquad
       w_q = \\Delta\\,\\mathrm{round}(w_c / \\Delta),\\quad \\Delta = w_{max} / (2^{b-1} - 1)

   (``weight_range`` :math:`=\\rho`, ``dac_bits`` :math:`=b`; with ``weight_range=None`` the DAC
   spans the largest :math:`|w|` of each tensor). Direction: weights beyond :math:`w_{max}`
   lose their excess; small weights round to the nearest code.

2. **Non-linear synapses** (hidden): a saturating weight-to-current transfer and unequal
   excitatory / inhibitory gain

   .. math::

       f(w) = g_\\pm\\,\\frac{\\theta}{\\lambda}\\tanh\\Big(\\frac{\\lambda w}{\\theta}\\Big),\\qquad
       g_+ = 1 + a/2 \\;(w > 0),\\quad g_- = 1 - a/2 \\;(w < 0)

   (``saturation`` :math:`=\\lambda`, ``ei_asymmetry`` :math:`=a`). Direction: :math:`|f(w)| < |w|`
   for :math:`\\lambda > 0`, more so for large :math:`|w|`; excitation is stronger than
   inhibition for :math:`a > 0`.

3. **Device mismatch** (hidden, fixed per chip, drawn once from ``seed``):

   * log-normal gain per synapse (per weight element; a conv kernel element counts as one
     synapse): :math:`w_{eff} = e^{\\sigma_g z} f(w_q)` (``gain_sigma`` :math:`=\\sigma_g`);
   * per-neuron threshold offset: :math:`\\theta_i = \\theta \\max(0.05, 1 + \\sigma_\\theta z_i)`
     (``threshold_sigma``);
   * per-neuron time-constant spread: :math:`\\tau_i = \\tau e^{\\sigma_\\tau z_i}` with
     :math:`\\beta = e^{-dt/\\tau}`, i.e. :math:`\\beta_i = \\beta^{\\exp(-\\sigma_\\tau z_i)}`
     (``tau_sigma``; a non-leaky :math:`\\beta = 1` layer stays non-leaky);
   * optional dead synapses: a fraction ``dead_fraction`` of the synapses (and biases) is stuck
     at zero.

4. **Temporal membrane noise** (hidden, different on every call): each step, before the spike
   decision, :math:`v_t \\leftarrow v_t + \\sigma_n \\theta\\, \\xi_t` (``noise_sigma`` :math:`=\\sigma_n`),
   drawn from the backend's own ``torch.Generator`` seeded with ``noise_seed`` (by default
   derived from ``seed``), so the noise stream is reproducible and independent of the
   global RNG and of the mismatch. For speed (a fresh Gaussian draw per neuron, sample and
   step would cost as much as the whole forward), each call and layer reads a contiguous
   window of a fixed table of :math:`2^{23}` standard-normal values (drawn once from
   ``noise_seed``) at an offset drawn from the generator; within one layer and call all
   values are distinct draws, while windows of different layers or calls may overlap (the
   same values then meet other neurons, samples and steps). A call that
   needs more than half the table draws fresh values instead.

Defaults as functions of the strength :math:`s` (see :meth:`NonIdealities.at`):
:math:`\\sigma_g = 0.7s`, :math:`\\sigma_\\theta = 0.4s`, :math:`\\sigma_\\tau = 0.5s`,
:math:`\\lambda = 2s`, :math:`a = \\min(1.5, 0.8s)`, :math:`b = \\mathrm{round}(12 - 8s)` (4 bits at
:math:`s = 1`, off at 0), :math:`\\rho = 1.5/s` (off at 0), :math:`\\sigma_n = 0.15s`, no dead synapses.
At :math:`s = 0` (noise off) the backend reproduces the ideal backend exactly.

The mismatch is hidden: algorithms see only :class:`~cil_core.hardware.Observation` outputs.
:meth:`AnalogMismatchBackend.reveal_mismatch` exposes it for tests and plots only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cil_core import Backend, Deployment, NetworkSpec, Neuron, Observation
from cil_core.data import as_dense
from cil_core.errors import CilError
from cil_core.hardware import quantize_symmetric
from cil_core.hardware.transfer import write_neuron_parameters
from cil_core.hardware.domains import HeldParameter
from cil_core.network.description import FEATURES, SYNAPTIC, check_parameters
from cil_core.network.executor import simulate

__all__ = ["NonIdealities", "AnalogMismatchBackend", "ChipMismatch"]

#: size of the standard-normal table the membrane noise is read from (see the module docstring)
NOISE_TABLE_SIZE = 1 << 23


@dataclass(frozen=True)
class NonIdealities:
    """The chip's non-idealities (see the module docstring for the equations)."""

    gain_sigma: float = 0.0
    threshold_sigma: float = 0.0
    tau_sigma: float = 0.0
    saturation: float = 0.0
    ei_asymmetry: float = 0.0
    dac_bits: int | None = None
    weight_range: float | None = None
    noise_sigma: float = 0.0
    dead_fraction: float = 0.0

    @classmethod
    def at(cls, strength: float, **overrides: Any) -> "NonIdealities":
        """The defaults at ``strength`` (0 = ideal, 1 = strong), with individual overrides."""
        s = float(strength)
        if not 0.0 <= s <= 4.0:
            raise CilError(f"strength must lie in [0, 4] (0 = ideal, 1 = strong), not {strength}")
        base = dict(
            gain_sigma=0.7 * s,
            threshold_sigma=0.4 * s,
            tau_sigma=0.5 * s,
            saturation=2.0 * s,
            ei_asymmetry=min(1.5, 0.8 * s),
            dac_bits=None if s == 0 else max(2, int(round(12 - 8 * min(s, 1.0)))),
            weight_range=None if s == 0 else 1.5 / s,
            noise_sigma=0.15 * s,
            dead_fraction=0.0,
        )
        unknown = set(overrides) - set(base)
        if unknown:
            raise CilError(f"unknown non-ideality option(s) {sorted(unknown)}; known: {sorted(base)}")
        base.update(overrides)
        ni = cls(**base)
        ni.validate()
        return ni

    def validate(self) -> None:
        for f in ("gain_sigma", "threshold_sigma", "tau_sigma", "saturation", "noise_sigma"):
            if getattr(self, f) < 0:
                raise CilError(f"{f} must be >= 0")
        if not 0 <= self.ei_asymmetry < 2:
            raise CilError("ei_asymmetry must lie in [0, 2)")
        if self.dac_bits is not None and self.dac_bits < 2:
            raise CilError("dac_bits must be >= 2 or None (no quantization)")
        if self.weight_range is not None and self.weight_range <= 0:
            raise CilError("weight_range must be > 0 or None (no clipping)")
        if not 0 <= self.dead_fraction < 1:
            raise CilError("dead_fraction must lie in [0, 1)")

    @property
    def has_mismatch(self) -> bool:
        return any((self.gain_sigma, self.threshold_sigma, self.tau_sigma, self.saturation,
                    self.ei_asymmetry, self.dead_fraction))


@dataclass
class ChipMismatch:
    """One chip's fixed mismatch draws (standard-normal ``z`` values, uniform draws deciding
    dead synapses), keyed by parameter name (synapses) or layer index (neurons). The non-ideality magnitudes scale them; the draws themselves depend only on
    the seed and the network's shapes."""

    synapse_z: dict[str, torch.Tensor]
    synapse_dead: dict[str, torch.Tensor]
    threshold_z: dict[int, torch.Tensor]
    tau_z: dict[int, torch.Tensor]


def _derive_seed(seed: int, label: str) -> int:
    h = hashlib.sha256(f"cil-analog:{seed}:{label}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _nominal_threshold(n: Neuron) -> float:
    return float(torch.as_tensor(n.threshold, dtype=torch.float64).mean())


class AnalogMismatchBackend(Backend):
    """Simulated analog subthreshold SNN chip with hidden mismatch, non-linear synapses, DAC
    quantization, weight clipping and membrane noise (``strength`` 0..1)."""

    name = "analog-mismatch"
    max_sets = None
    observes_layers = True
    observes_membrane = False
    #: everything the description says, recurrent synapses included (they get mismatch too), and
    #: refractory periods (run exactly as described: the per-chip replacements keep them); batch
    #: norm has no circuit: it is folded into the preceding synapses at transfer. A quantized state
    #: is refused: an analog membrane is continuous and has no levels to hold
    capabilities = frozenset(FEATURES) - {"batchnorm", "quantized-state"}
    #: trained leaks, thresholds and spike amplitudes, per neuron; each chip applies its own mismatch to
    #: the trained leaks and thresholds (:math:`\\beta^{e^{-\\sigma_\\tau z}}`, :math:`\\theta (1 + \\sigma_\\theta z)`)
    neuron_parameters = {
        "beta": HeldParameter("per-neuron", note="with the chip's leak mismatch"),
        "alpha": HeldParameter("per-neuron", note="as given (no mismatch on the synaptic current's decay)"),
        "threshold": HeldParameter("per-neuron", note="with the chip's threshold mismatch"),
        "spike_amplitude": HeldParameter("per-neuron"),
    }
    capability_hints = {
        "quantized-state": "an analog membrane is continuous: it holds no quantization levels; build the layers "
                           "without state_quant (or run a digital backend)",
    }

    def __init__(self, strength: float = 1.0, seed: int = 0, noise_seed: int | None = None, **overrides: Any) -> None:
        self.strength = float(strength)
        self.seed = int(seed)
        self.noise_seed = _derive_seed(self.seed, "noise") if noise_seed is None else int(noise_seed)
        self.nonideal = NonIdealities.at(self.strength, **overrides)
        self.noise_generator = torch.Generator().manual_seed(self.noise_seed)
        self.stochastic = self.nonideal.noise_sigma > 0
        self._chips: dict[tuple, ChipMismatch] = {}
        self._table: dict[float, torch.Tensor] | None = None
        self._compiled_cache: dict[int, tuple[NetworkSpec, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ chip
    def _layer_thresholds(self, spec: NetworkSpec) -> dict[int, float]:
        """Nominal threshold of the neuron layer each synaptic layer drives."""
        layers = spec.layers
        return {i: _nominal_threshold(layers[n]) for i, n in spec.driven_neurons().items()}  # type: ignore[arg-type]

    def _chip(self, spec: NetworkSpec) -> ChipMismatch:
        """This chip's mismatch draws for ``spec`` (drawn once per network structure)."""
        key = (spec.input_shape, tuple(spec.shapes()), tuple(spec.parameter_names()))
        chip = self._chips.get(key)
        if chip is not None:
            return chip
        g = torch.Generator().manual_seed(_derive_seed(self.seed, "mismatch"))
        gd = torch.Generator().manual_seed(_derive_seed(self.seed, "dead"))
        shapes = spec.shapes()
        syn_z, dead, thr_z, tau_z = {}, {}, {}, {}
        for i, layer in enumerate(spec.layers):
            # feed-forward synapses, then (for a recurrent neuron layer) its recurrent synapses,
            # then the neurons: every synapse a network has gets its own mismatch
            syn = [layer] if isinstance(layer, SYNAPTIC) else \
                [layer.recurrent] if isinstance(layer, Neuron) and layer.recurrent is not None else []
            for sl in syn:
                wshape, bshape = sl.param_shapes()
                for nm, shp in ((sl.weight, wshape), (sl.bias, bshape)):
                    if nm is None:
                        continue
                    syn_z[nm] = torch.randn(shp, generator=g)
                    dead[nm] = torch.rand(shp, generator=gd)
            if isinstance(layer, Neuron):
                thr_z[i] = torch.randn(shapes[i], generator=g)
                tau_z[i] = torch.randn(shapes[i], generator=g)
        chip = ChipMismatch(syn_z, dead, thr_z, tau_z)
        self._chips[key] = chip
        return chip

    def reveal_mismatch(self, spec: NetworkSpec) -> dict[str, Any]:
        """**For tests and plots only** (no training algorithm calls it): this chip's hidden
        per-synapse gains, dead masks, per-neuron thresholds and leaks for ``spec``."""
        chip, ni = self._chip(spec), self.nonideal
        out: dict[str, Any] = {"strength": self.strength, "seed": self.seed, "nonidealities": asdict(ni),
                               "synapse_gain": {}, "dead": {}, "threshold": {}, "beta": {}}
        for nm, z in chip.synapse_z.items():
            out["synapse_gain"][nm] = torch.exp(ni.gain_sigma * z)
            out["dead"][nm] = chip.synapse_dead[nm] < ni.dead_fraction
        for i, n in spec.neuron_layers():
            out["threshold"][i] = self._threshold(n, chip.threshold_z[i])
            out["beta"][i] = self._beta(n, chip.tau_z[i])
        return out

    def _threshold(self, n: Neuron, z: torch.Tensor) -> torch.Tensor:
        thr = torch.as_tensor(n.threshold, dtype=torch.float32)
        return thr * torch.clamp(1.0 + self.nonideal.threshold_sigma * z, min=0.05)

    def _beta(self, n: Neuron, z: torch.Tensor) -> torch.Tensor:
        beta = torch.as_tensor(n.beta, dtype=torch.float32)
        return beta ** torch.exp(-self.nonideal.tau_sigma * z)

    # ------------------------------------------------------------------ transfer
    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Clip to the weight range and quantize to the DAC's codes (what the chip is told to hold)."""
        spec, params = write_neuron_parameters(spec, params, n_sets, chip=self.name)  # trained leaks, thresholds
        check_parameters(spec, params, n_sets)
        ni = self.nonideal
        thr = self._layer_thresholds(spec)
        out: dict[str, torch.Tensor] = {}
        codes: dict[str, torch.Tensor] = {}
        for i, layer in spec.synaptic_layers():
            for nm in (layer.weight, layer.bias):
                if nm is None:
                    continue
                w = params[nm].detach().clone()
                if ni.weight_range is not None:
                    wmax: torch.Tensor | float = ni.weight_range * thr[i]
                    w = w.clamp(-wmax, wmax)
                if ni.dac_bits is not None:
                    # the DAC spans the weight range, or (weight_range=None) each tensor's own largest weight
                    span = None if ni.weight_range is None else ni.weight_range * thr[i] / (2 ** (ni.dac_bits - 1) - 1)
                    q, step = quantize_symmetric(w, ni.dac_bits, span, n_sets)
                    codes[nm] = q.to(torch.int16)
                    w = q * step
                out[nm] = w
        return Deployment(self.name, spec, out, n_sets, chip={"dac_codes": codes, "dac_bits": ni.dac_bits})

    # ------------------------------------------------------------------ forward
    def _compiled(self, spec: NetworkSpec) -> dict[str, Any]:
        """Per-network constants of this chip (gains, neuron replacements, noise amplitudes),
        computed once so that a forward does only the per-call work."""
        hit = self._compiled_cache.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        if len(self._compiled_cache) > 16:  # trained neuron parameters give a new spec per transfer
            self._compiled_cache.clear()
        ni = self.nonideal
        chip = self._chip(spec) if (ni.has_mismatch or ni.noise_sigma > 0) else None
        thr = self._layer_thresholds(spec)
        synapses = []
        for i, layer in spec.synaptic_layers():
            for nm in (layer.weight, layer.bias):
                if nm is None:
                    continue
                gain = None
                if chip is not None and (ni.gain_sigma > 0 or ni.dead_fraction > 0):
                    gain = torch.exp(ni.gain_sigma * chip.synapse_z[nm])
                    if ni.dead_fraction > 0:
                        gain = gain * (chip.synapse_dead[nm] >= ni.dead_fraction)
                k = ni.saturation / thr[i] if ni.saturation > 0 else 0.0
                synapses.append((nm, k, gain))
        neurons = None
        if chip is not None and (ni.threshold_sigma > 0 or ni.tau_sigma > 0):
            neurons = []
            for i, n in spec.neuron_layers():
                ch: dict[str, Any] = {}
                if ni.threshold_sigma > 0 and n.output == "spikes":
                    ch["threshold"] = self._threshold(n, chip.threshold_z[i])
                if ni.tau_sigma > 0:
                    ch["beta"] = self._beta(n, chip.tau_z[i])
                neurons.append(n.with_(**ch) if ch else n)
        amps = [ni.noise_sigma * _nominal_threshold(n) for _, n in spec.neuron_layers()]
        out = {"synapses": synapses, "neurons": neurons, "amps": amps}
        self._compiled_cache[id(spec)] = (spec, out)
        return out

    def _effective(self, spec: NetworkSpec, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the synapses really inject: saturation, E/I gain, mismatch gain, dead synapses."""
        ni = self.nonideal
        if not ni.has_mismatch:
            return params
        gp, gm = 1.0 + ni.ei_asymmetry / 2, 1.0 - ni.ei_asymmetry / 2
        out = {}
        for nm, k, gain in self._compiled(spec)["synapses"]:
            w = params[nm]
            if k > 0:
                w = torch.tanh(k * w) / k
            if ni.ei_asymmetry > 0:
                w = w * torch.where(w > 0, gp, gm)
            if gain is not None:
                w = w * gain.to(w.dtype)
            out[nm] = w
        return out

    def _neurons(self, spec: NetworkSpec) -> list[Neuron] | None:
        return self._compiled(spec)["neurons"]

    def _noise_table(self, amp: float) -> tuple[torch.Tensor, float | None]:
        """The standard-normal table scaled by ``amp`` and ``None``, for the first few amplitudes
        (scaled copies are cached); past those (a trained threshold gives a new amplitude at every
        transfer) the unscaled table and ``amp``, to scale only the window drawn from it (the same
        values: each is one product ``z * amp``)."""
        if self._table is None:
            g = torch.Generator().manual_seed(_derive_seed(self.noise_seed, "table"))
            self._table = {1.0: torch.randn(NOISE_TABLE_SIZE, generator=g)}
        if amp not in self._table:
            if len(self._table) > 8:
                return self._table[1.0], amp
            self._table[amp] = self._table[1.0] * amp
        return self._table[amp], None

    def _noise(self, spec: NetworkSpec, T: int) -> list | None:
        if self.nonideal.noise_sigma <= 0:
            return None
        gen = self.noise_generator
        sources = []
        for amp in self._compiled(spec)["amps"]:
            buf: dict[str, torch.Tensor] = {}

            def noise(t: int, like: torch.Tensor, _amp: float = amp, _buf: dict = buf) -> torch.Tensor:
                if t == 0 or "x" not in _buf:  # one draw per layer and call, all T steps at once
                    shape = (T, *like.shape)
                    k = math.prod(shape)
                    table, scale = self._noise_table(_amp)
                    if k <= table.numel() // 2:
                        # a window of the (scaled) standard-normal table at a random offset: a view
                        off = int(torch.randint(0, table.numel() - k + 1, (1,), generator=gen))
                        z = table[off:off + k].view(shape)
                        if scale is not None:
                            z = z * scale
                    else:
                        z = torch.randn(shape, generator=gen) * _amp
                    _buf["x"] = z.to(like.dtype)
                return _buf["x"][t]

            sources.append(noise)
        return sources

    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        x = as_dense(inputs)
        spec = deployment.spec
        with torch.no_grad():
            tr = simulate(spec, self._effective(spec, deployment.params), x, n_sets=deployment.n_sets,
                          record=record, neurons=self._neurons(spec),
                          membrane_noise=self._noise(spec, x.shape[0]))
        return Observation(tr.output, tr.layers if record else None,
                           meta={"strength": self.strength, "chip_seed": self.seed})

    def reset_noise(self, noise_seed: int | None = None) -> None:
        """Restart the noise stream (from ``noise_seed`` or the backend's own)."""
        if noise_seed is not None:
            self.noise_seed = int(noise_seed)
        self.noise_generator.manual_seed(self.noise_seed)
        self._table = None
