"""Backends: what a chip (or a simulator of one) must provide.

A backend does two things, each dispatched through a hook (see
:mod:`cil_core.plugin.hookspecs`) and always called through a
:class:`~cil_core.hardware.session.HardwareSession`:

* ``transfer(spec, params, n_sets)`` → :class:`Deployment` — weight transfer;
* ``forward(deployment, inputs, record)`` → :class:`Observation` — forward on hardware.

A weight transfer receives the hardware-neutral network description and plain tensors, never
the user's module, so a chip on another host never needs the user's SNN library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..network.description import NetworkSpec
from ..network.neuron import Neuron
from .observation import LayerObservation, Observation


@dataclass
class Deployment:
    """What a backend holds after a weight transfer.

    ``params``: the effective synaptic tensors the chip realises, expressed in the software
    model's units (after scaling, quantization and clipping, before any hidden per-chip
    mismatch), keyed like ``spec.parameter_names()``; with ``n_sets`` each carries a leading set
    dimension. ``spec``: the network as the chip runs it; its neuron layers hold the neuron
    parameters the chip realises (``beta``, ``alpha``, ``threshold`` in software units, e.g. a
    decay rounded onto a bit-shift grid), which CIL-SPL's software pass and the fidelity report
    then use (:func:`realised_neurons`). ``chip``: chip-native values (integer codes, scale
    factors, ...), free-form.
    """

    backend: str
    spec: NetworkSpec
    params: dict[str, torch.Tensor]
    n_sets: int | None = None
    chip: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Base class of chips and chip simulators.

    Class attributes a subclass may override:

    * ``name`` — the registered name (set by the registry if left empty);
    * ``max_sets`` — how many parameter sets one transfer + forward can hold (default 1;
      ``None``: no limit). The session splits a request for more sets (e.g. MH's chains + 1
      proposals) into calls of at most this many; a backend with ``max_sets=1`` never receives
      ``n_sets`` (every set is a single call);
    * ``observes_layers`` — whether ``forward(record=True)`` returns per-layer spikes;
    * ``observes_membrane`` — whether it returns per-layer membranes too;
    * ``stochastic`` — whether two identical calls may return different outputs;
    * ``placement_options`` — names of constructor options that only place or pace the work
      (workers, timeouts) and never change results: a checkpoint may be resumed with others.
    * ``capabilities`` — the network features it runs (names from
      :data:`cil_core.network.description.FEATURES`; ``None``: everything the description can
      say). The session refuses a network needing anything else before the first call, naming
      the layer, with the matching entry of ``capability_hints`` (what to use instead). Without
      ``"batchnorm"`` batch norms are folded into the preceding synapses at transfer; dropout is
      never sent to a backend.
    * ``requires`` — what every network it runs must have, as data
      (:class:`~cil_core.hardware.domains.Requirements`: features of every neuron layer such as a
      synaptic current, the number of hidden neuron layers, input / hidden / output sizes; ``None``:
      nothing). The session refuses a network that does not meet it before the first call, naming
      the layer, the limit and the fix; the README's capability table shows it. A backend states
      its size and structure rules here rather than in ``check``.
    * ``neuron_parameters`` — the *trained* neuron parameters it holds, ``{field: HeldParameter}``
      (:class:`~cil_core.hardware.domains.HeldParameter`: per layer or per neuron, optionally on
      a domain such as a bit-shift decay), with ``neuron_parameter_hints`` per field. The session
      refuses a trained neuron parameter it does not hold before the first call, naming the
      layer and what to change; a backend that declares ``capabilities`` but no
      ``neuron_parameters`` holds none. Trained values reach :meth:`transfer` written into the
      spec's neuron layers (checked against 0 <= beta, alpha <= 1, threshold > 0).
    * ``enforces_timeout`` — ``True`` when the backend enforces the session's ``timeout`` itself
      (read from :func:`cil_core.hardware.session.current_call`, raising a ``HardwareError``
      when a call takes longer, after stopping what hung); otherwise the session runs each call
      in a thread it abandons on timeout. The same context gives the call's ``purpose``.

    The first line of the class docstring is what ``cil plugins`` shows for the backend.

    Biases: a chip without bias inputs should refuse a network with biases in :meth:`check`
    (raise :class:`~cil_core.errors.BackendCapacityError` saying "build the model with
    ``bias=False``"), never drop them silently.
    """

    name: str = ""
    max_sets: int | None = 1
    observes_layers: bool = False
    observes_membrane: bool = False
    stochastic: bool = False
    placement_options: frozenset[str] = frozenset()
    capabilities: frozenset[str] | None = None
    capability_hints: dict[str, str] = {}
    #: what every network must have (:class:`~cil_core.hardware.domains.Requirements`; ``None``: nothing)
    requires: Any = None
    #: the trained neuron parameters the chip holds, ``{field: HeldParameter}``
    #: (:class:`~cil_core.hardware.domains.HeldParameter`; ``None``: none when ``capabilities``
    #: is declared, else unchecked), and per field what to change when it does not
    neuron_parameters: "dict[str, Any] | None" = None
    neuron_parameter_hints: dict[str, str] = {}
    enforces_timeout: bool = False

    def check(self, spec: NetworkSpec) -> None:
        """Raise :class:`~cil_core.errors.BackendCapacityError` naming the limit if ``spec``
        does not fit this backend. Default: everything fits."""

    @abstractmethod
    def transfer(self, spec: NetworkSpec, params: dict[str, torch.Tensor], n_sets: int | None = None) -> Deployment:
        """Weight transfer (see :func:`cil_core.plugin.hookspecs.cil_transfer`)."""

    @abstractmethod
    def forward(self, deployment: Deployment, inputs: Any, record: bool = False) -> Observation:
        """Forward on hardware (see :func:`cil_core.plugin.hookspecs.cil_forward`)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: the neuron fields a deployment may realise differently from the software model (software units)
REALISED_FIELDS = ("beta", "alpha", "threshold")


def realised_neurons(spec: NetworkSpec, deployment: Deployment | None) -> list[Neuron] | None:
    """The neuron layers of ``spec`` with the values ``deployment`` says the chip realises:
    every ``beta``, ``alpha`` and ``threshold`` of the deployment's neuron layers (in software
    units) that differs from the software model's replaces it, so that a software pass following
    the chip (CIL-SPL's, the fidelity report's) runs what the chip runs, e.g. β = 0.875 where the
    model says 0.9 and the backend rounds decays onto its bit-shift grid. A field the model trains
    (:class:`~cil_core.network.neuron.NeuronParameter`) keeps the model's tensor (its gradient
    flows). ``None`` when nothing differs, when there is no deployment, when it holds parameter
    sets, or when its neuron layers do not correspond one to one to ``spec``'s."""
    if deployment is None or deployment.n_sets is not None:
        return None
    sw = [n for _, n in spec.neuron_layers()]
    hw = [n for _, n in deployment.spec.neuron_layers()]
    if len(sw) != len(hw) or deployment.spec is spec:
        return None
    out: list[Neuron] = []
    changed = False
    for a, b in zip(sw, hw):
        trained = {p.field for p in a.trained}
        new: dict[str, Any] = {}
        for f in REALISED_FIELDS:
            va, vb = getattr(a, f), getattr(b, f)
            if f in trained or va is None or vb is None:
                continue
            ta, tb = torch.as_tensor(va, dtype=torch.float64), torch.as_tensor(vb, dtype=torch.float64)
            if ta.shape != tb.shape or not torch.equal(ta, tb):
                new[f] = vb
        if new:
            changed = True
            a = a.with_(**new)
        out.append(a)
    return out if changed else None


#: what a backend declares about itself that the session acts on (and its default when absent)
TRAITS: dict[str, Any] = {"max_sets": 1, "observes_layers": False, "observes_membrane": False,
                          "stochastic": False, "capabilities": None, "capability_hints": {},
                          "neuron_parameters": None, "neuron_parameter_hints": {}, "requires": None,
                          "domain_options": {}}


def backend_traits(backend: Any) -> dict[str, Any]:
    """The :data:`TRAITS` ``backend`` declares, as plain data (``capabilities`` a sorted list
    or ``None``; ``neuron_parameters`` a ``{field: HeldParameter}`` dict or ``None``; ``requires`` the
    backend's frozen, picklable :class:`~cil_core.hardware.domains.Requirements` or ``None``;
    ``domain_options`` the values of the backend options its domains name, e.g. ``{"round_decays":
    True}``): what a
    wrapper or a remote driver must mirror to be called as ``backend`` is."""
    caps = getattr(backend, "capabilities", None)
    held = getattr(backend, "neuron_parameters", None)
    # the backend's own switches named by its domains (e.g. Xylo's round_decays): MH reads them to
    # know whether a start value off the domain is refused or rounded by the chip
    options = {opt: getattr(backend, opt) for h in (held or {}).values()
               if (opt := getattr(getattr(h, "domain", None), "option", None)) and hasattr(backend, opt)}
    return {"max_sets": getattr(backend, "max_sets", 1),
            "observes_layers": bool(getattr(backend, "observes_layers", False)),
            "observes_membrane": bool(getattr(backend, "observes_membrane", False)),
            "stochastic": bool(getattr(backend, "stochastic", False)),
            "capabilities": None if caps is None else sorted(caps),
            "capability_hints": dict(getattr(backend, "capability_hints", {}) or {}),
            "neuron_parameters": None if held is None else dict(held),
            "neuron_parameter_hints": dict(getattr(backend, "neuron_parameter_hints", {}) or {}),
            "requires": getattr(backend, "requires", None),
            "domain_options": options}


def mirror_traits(wrapper: Any, inner: Any) -> None:
    """Give ``wrapper`` (a backend that forwards its calls to ``inner``: a fault injector, a
    remote proxy, a logger) every trait of ``inner``, so that the session prepares and checks
    its transfers as it would ``inner``'s (batch norm folded, missing features and trained neuron
    parameters it does not hold refused). A
    wrapper that sets these by hand and forgets one makes the session send ``inner`` a network
    it does not run."""
    traits = backend_traits(inner)
    for key, value in traits.items():
        if key == "capabilities":
            value = None if value is None else frozenset(value)
        setattr(wrapper, key, value)
    for option, value in traits["domain_options"].items():
        setattr(wrapper, option, value)


__all__ = ["Backend", "Deployment", "realised_neurons", "REALISED_FIELDS", "Observation", "LayerObservation", "TRAITS", "backend_traits", "mirror_traits"]
