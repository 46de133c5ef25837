r"""What a chip can hold, declared as data: structural limits, parameter domains, and the
quantization of a neuron population onto an integer grid.

A backend for a real chip states its limits once, as values of these classes (e.g. a frozen
dataclass of :class:`Limit`, :class:`IntegerRange` and :class:`ShiftDecay` fields), and its
``check``/``transfer`` ask them; the refusals then name the limit, the nearest values the chip
can hold and what to change, the same way for every chip, and documentation tables can be
generated from the same declaration.

* :class:`Limit` — at most ``maximum`` of something (input channels, neurons, layers);
* :class:`IntegerRange` — a register of integers ``lo..hi`` (thresholds, biases, input spike
  counts, weight shifts);
* :class:`ShiftDecay` — a decay a digital chip realises as a bit shift,
  :math:`x \leftarrow x - (x \gg k)`, i.e. :math:`\beta = 1 - 2^{-k}`, :math:`k = k_{min}..k_{max}`;
* :func:`quantize_population` — the weights of every synaptic matrix driving one population and
  the population's threshold on one integer scale: :math:`b`-bit codes with a per-matrix left
  shift, and an integer threshold.
* :class:`Requirements` — what a chip *requires* of every network (beside ``capabilities``, what
  it *can* run): features every neuron layer must have (a synaptic current), how many hidden
  neuron layers, and the size limits of the input, hidden and output layers. A backend states it
  as ``requires``; the session refuses a network that does not meet it before the first call
  (:func:`cil_core.hardware.transfer.chip_spec`), and the README's capability table shows it.
* :class:`HeldParameter` — a neuron parameter (``beta``, ``alpha``, ``threshold``,
  ``spike_amplitude``) the chip can hold as a *trained* value: one per layer or one per neuron,
  optionally on a domain (a :class:`ShiftDecay`, an :class:`IntegerRange`). A backend lists them
  in ``neuron_parameters`` (``{field: HeldParameter}``); the session refuses a trained neuron
  parameter the backend does not list, or at a finer granularity, before the first call
  (:func:`cil_core.hardware.transfer.chip_spec`). Where a domain applies, the backend's transfer
  realises the value (e.g. :meth:`ShiftDecay.realise`: refuse naming the nearest held values, or
  round with ``round_decays=True``).

Every refusal is a :class:`~cil_core.errors.BackendCapacityError`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Literal, Mapping

import torch

from ..errors import BackendCapacityError
from ..network.spec import FEATURES, layer_features

if TYPE_CHECKING:  # pragma: no cover
    from ..network.spec import NetworkSpec

__all__ = ["Limit", "IntegerRange", "ShiftDecay", "PopulationCodes", "quantize_population", "HeldParameter",
           "HOLDS_EVERYTHING", "Requirements"]


@dataclass(frozen=True)
class Limit:
    """At most ``maximum`` of ``what`` (e.g. ``Limit("input channels", 16, "reduce the inputs")``).

    ``fix`` says what the user should change; it ends every refusal."""

    what: str
    maximum: int
    fix: str = ""

    def check(self, n: int, where: str, chip: str) -> None:
        """Raise :class:`BackendCapacityError` if ``n > maximum``: ``"{chip}: {where} has {n}
        {what}; the chip holds at most {maximum} {what}: {fix}"``."""
        if n > self.maximum:
            raise BackendCapacityError(f"{chip}: {where} has {n} {self.what}; the chip holds at most {self.maximum} "
                                       f"{self.what}" + (f": {self.fix}" if self.fix else ""))


@dataclass(frozen=True)
class IntegerRange:
    """The integers ``lo..hi`` (inclusive): a chip register or an input value range."""

    name: str
    lo: int
    hi: int

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"IntegerRange {self.name!r}: lo {self.lo} > hi {self.hi}")

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise: ``x`` is an integer within ``lo..hi``."""
        return (x == torch.round(x)) & (x >= self.lo) & (x <= self.hi)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` clamped to ``lo..hi`` (no rounding)."""
        return x.clamp(self.lo, self.hi)

    def check(self, x: torch.Tensor, where: str, chip: str, fix: str = "") -> None:
        """Raise :class:`BackendCapacityError` naming the first value of ``x`` that is not an
        integer in ``lo..hi``."""
        x = torch.as_tensor(x)
        ok = self.contains(x.double())
        if bool(ok.all()):
            return
        bad = float(x.reshape(-1)[(~ok).reshape(-1).nonzero()[0, 0]])
        n = int((~ok).sum())
        raise BackendCapacityError(f"{chip}: {where} holds {n} value(s) the chip cannot take (e.g. {bad:g}); "
                                   f"{self.name} must be an integer in {self.lo}..{self.hi}" + (f": {fix}" if fix else ""))


@dataclass(frozen=True)
class ShiftDecay:
    r"""A decay realised as a bit shift: :math:`x \leftarrow x - (x \gg k)`, so the decay factor
    is :math:`1 - 2^{-k}` for :math:`k = ` ``min_shift`` .. ``max_shift`` (:math:`k = 0` is a
    factor 0: the state is cleared every step).

    ``name`` is the software parameter (``"beta"``, ``"alpha"``) and ``option`` the backend
    option that rounds instead of refusing (named in the refusal)."""

    name: str
    min_shift: int
    max_shift: int
    option: str = "round_decays"

    def values(self) -> list[float]:
        """Every decay the chip holds, ascending."""
        return [1.0 - 2.0 ** -k for k in range(self.min_shift, self.max_shift + 1)]

    def value(self, shift: torch.Tensor | int) -> torch.Tensor:
        """:math:`1 - 2^{-k}` (float64)."""
        return 1.0 - torch.pow(2.0, -torch.as_tensor(shift, dtype=torch.float64))

    def nearest_shift(self, x: torch.Tensor | float) -> torch.Tensor:
        """The shift whose decay is nearest to ``x`` (elementwise, int64; ties to the smaller shift)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        table = torch.tensor(self.values(), dtype=torch.float64)
        idx = (x.unsqueeze(-1) - table).abs().argmin(-1)
        return idx + self.min_shift

    def realise(self, x: torch.Tensor | float, *, where: str, chip: str,
                mode: Literal["refuse", "nearest"] = "refuse", rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """The shifts for ``x`` and the decays they realise (float64), elementwise.

        ``mode="refuse"``: a value farther than ``rtol`` from every held decay raises
        :class:`BackendCapacityError` naming the nearest held values below and above (with their
        shifts) and the option that rounds. ``mode="nearest"``: such values become the nearest
        held decay, with a :class:`UserWarning` saying so."""
        x = torch.as_tensor(x, dtype=torch.float64)
        k = self.nearest_shift(x)
        got = self.value(k)
        off = (got - x).abs() > rtol * torch.clamp(x.abs(), min=1e-12)
        if not bool(off.any()):
            return k, got
        bad = float(x.reshape(-1)[off.reshape(-1).nonzero()[0, 0]])
        near = self._neighbours(bad)
        if mode == "refuse":
            raise BackendCapacityError(
                f"{chip}: {where} has {self.name}={bad:.6g}, which the chip cannot hold: it realises {self.name} = "
                f"1 - 2^-k for k = {self.min_shift}..{self.max_shift} (a bit-shift decay); nearest: {near}. Build the "
                f"layer with one of these, or pass {self.option}=True to use the nearest with a warning")
        if mode != "nearest":
            raise ValueError(f"mode must be 'refuse' or 'nearest', not {mode!r}")
        warnings.warn(f"{chip}: {where} has {self.name}={bad:.6g}; the chip runs the nearest value it holds "
                      f"({float(self.value(self.nearest_shift(bad))):.6g}; nearest: {near})", UserWarning, stacklevel=3)
        return k, got

    def _neighbours(self, x: float) -> str:
        vals = self.values()
        below = [(v, k) for k, v in zip(range(self.min_shift, self.max_shift + 1), vals) if v <= x]
        above = [(v, k) for k, v in zip(range(self.min_shift, self.max_shift + 1), vals) if v >= x]
        parts = []
        if below:
            parts.append(f"{below[-1][0]:.6g} (k={below[-1][1]})")
        if above:
            parts.append(f"{above[0][0]:.6g} (k={above[0][1]})")
        return " and ".join(parts)


@dataclass
class PopulationCodes:
    r"""One population on its integer grid (see :func:`quantize_population`).

    ``codes[name]``: the :math:`b`-bit integer codes of each matrix (float tensors of integers);
    ``shifts[name]``: its left shift :math:`k` (int64, ``[S]`` with sets, else a scalar), so the
    chip's integer weight is ``codes * 2**k``; ``scale``: integer units per software unit
    :math:`s` (``[S]`` or scalar); ``threshold``: the integer threshold(s)
    :math:`\mathrm{round}(s\,\theta)`. ``realised(name)`` and ``realised_threshold`` give what the
    chip holds in software units."""

    codes: dict[str, torch.Tensor]
    shifts: dict[str, torch.Tensor]
    scale: torch.Tensor
    threshold: torch.Tensor
    n_sets: int | None = None

    def _lead(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.n_sets is None:
            return t
        return t.reshape(-1, *([1] * (like.dim() - 1)))

    def integer(self, name: str) -> torch.Tensor:
        """The chip's integer weights ``codes * 2**shift`` of matrix ``name``."""
        c = self.codes[name]
        return c * self._lead(torch.pow(2.0, self.shifts[name].double()), c).to(c.dtype)

    def realised(self, name: str) -> torch.Tensor:
        """Matrix ``name`` as the chip holds it, in software units: ``codes * 2**k / s``."""
        c = self.integer(name)
        return c / self._lead(self.scale, c).to(c.dtype)

    @property
    def realised_threshold(self) -> torch.Tensor:
        """The threshold the chip holds, in software units: ``threshold / s``."""
        thr = self.threshold
        s = self.scale if self.n_sets is None else self.scale.reshape(-1, *([1] * (thr.dim() - 1)))
        return thr / s


def quantize_population(weights: Mapping[str, torch.Tensor], threshold: torch.Tensor | float, *,
                        weight_bits: int = 8, shifts: IntegerRange = IntegerRange("weight shift", 0, 7),
                        thresholds: IntegerRange = IntegerRange("threshold", 1, 2 ** 15 - 1),
                        target: int = 2 ** 12, ceiling: int | None = None, n_sets: int | None = None,
                        where: str = "population", chip: str = "chip") -> PopulationCodes:
    r"""Put every synaptic matrix that drives one population, and the population's threshold, on
    one integer grid: one scale :math:`s` (integer units per software unit) per population (and
    set), a :math:`b`-bit code and a left shift :math:`k_M` per matrix :math:`M`:

    .. math::

        k_M = \min\{k \in [k_{lo}, k_{hi}] : \max|M|\, s / 2^k \le L\},\quad
        q_M = \mathrm{clip}(\mathrm{round}(M s / 2^{k_M}), -L, L),\quad L = 2^{b-1}-1,

    the chip holding :math:`q_M 2^{k_M}` and the threshold :math:`\theta_c = \mathrm{round}(s\theta)`.
    The scale is chosen through the integer threshold: :math:`s = \theta_c / \bar\theta`
    (:math:`\bar\theta` the mean threshold), so a scalar threshold is held exactly, with

    .. math::

        \theta_c = \min\Big(\theta_{up},\ \max\big(\text{target},\ \theta_{need}\big)\Big),\quad
        \theta_{need} = \Big\lceil \frac{L\,\bar\theta}{\min_M \max|M|} \Big\rceil,\quad
        \theta_{up} = \min\Big(\text{ceiling},\ \Big\lfloor \frac{L\,2^{k_{hi}}\,\bar\theta}{\max_M \max|M|}\Big\rfloor\Big):

    ``target`` (default :math:`2^{12}`) leaves the states headroom below a 16-bit saturation;
    :math:`\theta_{need}` lets the smallest matrix use all :math:`b` bits; :math:`\theta_{up}`
    keeps the largest within reach of the largest shift. Then :math:`\theta_c` is raised (by less
    than a factor 2, within ``ceiling``) until the largest matrix fills its codes at its shift,
    :math:`\theta_c = \lfloor L\,2^{k}\bar\theta/\max_M\max|M|\rfloor`. ``threshold`` must already be in the
    weights' units (a chip that scales its current by :math:`\alpha` passes :math:`\alpha\theta`).

    Raises :class:`BackendCapacityError` when even :math:`\theta_c = ` ``thresholds.lo`` cannot
    hold the largest weight (weights exceeding the threshold by more than
    :math:`L\,2^{k_{hi}}/\theta_{lo}`).
    """
    if weight_bits < 2:
        raise ValueError(f"weight_bits must be >= 2, got {weight_bits}")
    L = 2 ** (weight_bits - 1) - 1
    ceiling = thresholds.hi if ceiling is None else min(int(ceiling), thresholds.hi)
    thr = torch.as_tensor(threshold, dtype=torch.float64)
    tbar = thr.mean()

    def amax(w: torch.Tensor) -> torch.Tensor:
        w = w.detach().double().abs()
        return w.amax() if n_sets is None else w.reshape(n_sets, -1).amax(1)

    maxes = {k: amax(w) for k, w in weights.items()}
    stacked = torch.stack(list(maxes.values())) if maxes else torch.zeros(1, *(() if n_sets is None else (n_sets,)),
                                                                           dtype=torch.float64)
    big = stacked.amax(0)
    small = torch.where(stacked > 0, stacked, torch.full_like(stacked, math.inf)).amin(0)
    need = torch.where(torch.isfinite(small), torch.ceil(L * tbar / small), torch.zeros_like(small))
    up = torch.where(big > 0, torch.floor(L * 2.0 ** shifts.hi * tbar / big), torch.full_like(big, float(ceiling)))
    if bool((up < thresholds.lo).any()):
        ratio = float((big / tbar).amax())
        raise BackendCapacityError(
            f"{chip}: {where}: a weight is {ratio:.4g} times the threshold; the chip's integer grid holds weights up "
            f"to {L * 2 ** shifts.hi / thresholds.lo:g} times it ({weight_bits}-bit codes, shifts up to {shifts.hi}, "
            f"thresholds from {thresholds.lo}): scale the weights down or raise the threshold")
    theta_c = torch.clamp(torch.maximum(torch.full_like(need, float(target)), need), max=float(ceiling))
    theta_c = torch.clamp(torch.minimum(theta_c, up), min=float(thresholds.lo))
    # fill: raise the scale (at most 2x) until the largest matrix uses all codes at its shift
    k_big = torch.clamp(torch.ceil(torch.log2(torch.clamp(big * theta_c / tbar / L, min=1e-300))), shifts.lo, shifts.hi)
    filled = torch.where(big > 0, torch.floor(L * 2.0 ** k_big * tbar / big), theta_c)
    theta_c = torch.where((filled >= theta_c) & (filled <= min(float(ceiling), float(thresholds.hi))),
                          torch.minimum(filled, up), theta_c)
    scale = theta_c / tbar  # [S] or scalar
    codes, ks = {}, {}
    for name, w in weights.items():
        w = w.detach().double()
        m = maxes[name]
        # the smallest shift that fits: ceil(log2(max|M| s / L)), within the register
        need_k = torch.ceil(torch.log2(torch.clamp(m * scale / L, min=1e-300)))
        k = torch.clamp(need_k, shifts.lo, shifts.hi)
        # rounding at the boundary: one more shift if the rounded largest code still exceeds L
        k = torch.where(torch.round(m * scale / 2.0 ** k) > L, torch.clamp(k + 1, max=shifts.hi), k)
        lead = (lambda t: t) if n_sets is None else (lambda t: t.reshape(-1, *([1] * (w.dim() - 1))))
        q = torch.clamp(torch.round(w * lead(scale) / lead(2.0 ** k)), -L, L)
        codes[name], ks[name] = q, k.long()
    if n_sets is None:
        th = torch.round(thr * scale)
    else:
        th = torch.round(thr.unsqueeze(0) * scale.reshape(-1, *([1] * thr.dim())))
    th = thresholds.clip(th)
    return PopulationCodes(codes, ks, scale, th, n_sets)


@dataclass(frozen=True)
class HeldParameter:
    """A trainable neuron parameter a chip can hold (a value of a backend's
    ``neuron_parameters``, keyed by the neuron field: ``"beta"``, ``"alpha"``, ``"threshold"``,
    ``"spike_amplitude"``).

    ``granularity``: ``"per-layer"`` (one value for the whole layer: the trained tensor must hold
    one value) or ``"per-neuron"`` (one value per neuron; also holds a per-layer value).
    ``domain``: the values the chip realises (``None``: any value in the parameter's valid range,
    :math:`0 \\le \\beta, \\alpha \\le 1`, :math:`\\theta > 0`); the backend's transfer applies it.
    A domain with a ``values()`` method (:class:`ShiftDecay`) is a finite set of software values:
    MH proposes the field on those values only (:mod:`cil_core.training.mh`).
    ``note``: what happens to the value on the chip (e.g. "with the chip's mismatch"), shown in
    the documentation tables."""

    granularity: Literal["per-layer", "per-neuron"]
    domain: ShiftDecay | IntegerRange | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.granularity not in ("per-layer", "per-neuron"):
            raise ValueError(f"granularity must be 'per-layer' or 'per-neuron', not {self.granularity!r}")

    def holds(self, per_neuron: bool) -> bool:
        """Whether a trained tensor of this granularity (``per_neuron``: more than one value) fits."""
        return self.granularity == "per-neuron" or not per_neuron


#: every trainable neuron field, per neuron, any value in its valid range (the ideal backend)
HOLDS_EVERYTHING: dict[str, HeldParameter] = {f: HeldParameter("per-neuron") for f in
                                               ("beta", "alpha", "threshold", "spike_amplitude")}


@dataclass(frozen=True)
class Requirements:
    """What a chip requires of every network it runs, as data (``Backend.requires``).

    ``capabilities`` say what a chip *can* run; this says what it *must* be given. Every field is
    optional (``None`` / empty: no requirement):

    * ``neuron_features``: ``{feature: fix}``, features (names from
      :data:`~cil_core.network.spec.FEATURES`) every neuron layer must have, e.g.
      ``{"synaptic-current": "use snn.Synaptic ..."}`` for a chip whose every neuron has a
      synaptic current;
    * ``hidden_layers``: ``(min, max)`` neuron layers before the output layer (``max`` ``None``:
      no upper bound), with ``hidden_fix`` saying what to change (``(1, 1)``: exactly one hidden
      population);
    * ``inputs``: a :class:`Limit` on the input size (channels: the product of the input shape);
    * ``hidden``: a :class:`Limit` on the neurons of each hidden neuron layer;
    * ``first_hidden`` / ``last_hidden``: a :class:`Limit` on the neurons of the hidden layer the
      input drives / the one that drives the output layer (a chip whose input and output
      synapses reach only part of its hidden neurons);
    * ``hidden_total``: a :class:`Limit` on the neurons of all hidden layers together (a chip
      whose hidden layers share one pool of neurons);
    * ``outputs``: a :class:`Limit` on the neurons of the output layer.

    :meth:`check` raises :class:`BackendCapacityError` naming the first unmet requirement, the
    layer and the fix; :meth:`rows` gives the declaration as table rows."""

    neuron_features: Mapping[str, str] = field(default_factory=dict)
    hidden_layers: tuple[int, int | None] | None = None
    hidden_fix: str = ""
    inputs: Limit | None = None
    hidden: Limit | None = None
    outputs: Limit | None = None
    first_hidden: Limit | None = None
    last_hidden: Limit | None = None
    hidden_total: Limit | None = None
    #: the chip's name, for the refusals (e.g. "Xylo Audio 2")
    chip: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.neuron_features if f not in FEATURES]
        if unknown:
            raise ValueError(f"Requirements: unknown feature(s) {unknown}; known: {', '.join(FEATURES)}")
        if self.hidden_layers is not None:
            lo, hi = self.hidden_layers
            if not (0 <= lo and (hi is None or lo <= hi)):
                raise ValueError(f"Requirements: hidden_layers must be (min, max) with 0 <= min <= max (max None: "
                                 f"unbounded), not {self.hidden_layers}")

    def check(self, spec: "NetworkSpec", chip: str = "") -> None:
        """Raise :class:`BackendCapacityError` if ``spec`` does not meet the requirements
        (``chip``: who requires it, e.g. the backend's name, after the declaration's own ``chip``)."""
        chip = ", ".join(c for c in (self.chip, chip) if c) or "chip"
        neurons = spec.neuron_layers()
        for i, n in neurons:
            has = layer_features(n)
            where = f"layer {i} (neuron '{n.name}')" if n.name else f"layer {i} (neuron)"
            for feature, fix in self.neuron_features.items():
                if feature not in has:
                    raise BackendCapacityError(f"{chip}: {where} has no {feature} ({FEATURES[feature]}); the chip "
                                               f"requires it of every neuron layer" + (f": {fix}" if fix else ""))
        n_hidden = max(0, len(neurons) - 1)
        if self.hidden_layers is not None and not (self.hidden_layers[0] <= n_hidden and (
                self.hidden_layers[1] is None or n_hidden <= self.hidden_layers[1])):
            want = _count(self.hidden_layers)
            raise BackendCapacityError(f"{chip}: the network has {n_hidden} hidden neuron layer(s) "
                                       f"({len(neurons)} neuron layers); the chip runs {want}"
                                       + (f": {self.hidden_fix}" if self.hidden_fix else ""))
        if self.inputs is not None:
            self.inputs.check(prod(spec.input_shape), "the input", chip)
        shapes = spec.shapes()
        for k, (i, n) in enumerate(neurons):
            limit = self.outputs if k == len(neurons) - 1 else self.hidden
            if limit is None:
                continue
            role = "the output layer" if k == len(neurons) - 1 else "the hidden layer"
            limit.check(prod(shapes[i]), f"{role} {i}" + (f" '{n.name}'" if n.name else ""), chip)
        hidden = neurons[:-1]
        for limit, pick, role in ((self.first_hidden, hidden[:1], "the first hidden layer (the one the input drives)"),
                                  (self.last_hidden, hidden[-1:], "the last hidden layer (the one that drives the "
                                                                  "output)")):
            if limit is not None and pick:
                i, n = pick[0]
                limit.check(prod(shapes[i]), f"{role}, layer {i}" + (f" '{n.name}'" if n.name else ""), chip)
        if self.hidden_total is not None and hidden:
            total = sum(prod(shapes[i]) for i, _ in hidden)
            self.hidden_total.check(total, f"the network's {len(hidden)} hidden layer(s) together", chip)

    def rows(self) -> list[tuple[str, str]]:
        """The declaration as ``(requirement, value)`` rows (``"-"`` where none)."""
        def at_most(limit: Limit | None) -> str:
            return "-" if limit is None else f"<= {limit.maximum}"

        return [
            ("every neuron layer has", ", ".join(self.neuron_features) or "-"),
            ("hidden neuron layers", "-" if self.hidden_layers is None else _count(self.hidden_layers)),
            ("input channels", at_most(self.inputs)),
            ("neurons per hidden layer", at_most(self.hidden)),
            ("neurons in the first / last hidden layer", "-" if self.first_hidden is None and self.last_hidden is None
             else f"{at_most(self.first_hidden)} / {at_most(self.last_hidden)}"),
            ("hidden neurons in all", at_most(self.hidden_total)),
            ("output neurons", at_most(self.outputs)),
        ]


def _count(bounds: tuple[int, int | None]) -> str:
    """``(min, max)`` in words: "exactly 1", "2 to 4", "2 or more"."""
    lo, hi = bounds
    return f"{lo} or more" if hi is None else f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
