"""rockpool → cil network description (adapter ``rockpool``).

Accepted, unchanged: a rockpool ``Sequential`` (``rockpool.nn.combinators.Sequential`` of torch
modules, nested ones flattened) of ``LinearTorch`` and ``LIFTorch``, e.g.
``Sequential(LinearTorch((16, 32)), LIFTorch(32), LinearTorch((32, 2)), LIFTorch(2))``. rockpool
takes batch-first input ``[B, T, C]``; cil presents time-major ``[T, B, C]`` and
:func:`run_native` transposes. The weights stay the model's own tensors under rockpool's names
(``"0_LinearTorch.weight"``), so cil trains the user's module in place.

rockpool 3.1.0's ``LIFTorch.forward`` (read from its source), per step, for a layer of ``n``
neurons with one synapse each (``shape=(n,)`` or ``(n, n)``), membrane decay
:math:`a = e^{-\\Delta t/\\tau_{mem}}` (rockpool's ``alpha``; ``leak_mode="decays"``: given;
``"bitshifts"``: :math:`1 - 2^{-dash_{mem}}`), synaptic decay :math:`b = e^{-\\Delta t/\\tau_{syn}}`
(rockpool's ``beta``), threshold :math:`\\theta`, bias :math:`c`:

.. math::

    i_t &= b\\,\\big((i_{t-1} + x_t) + W_{rec}^{\\top} S_{t-1}\\big)\\\\
    u_t &= \\big((a\\, v_{t-1} + i_t) + \\sigma\\zeta_t\\big) + c\\\\
    S_t &= [u_t \\ge \\theta]\\,\\min\\big(n_{max}, \\lfloor u_t/\\theta \\rfloor\\big)\\\\
    v_t &= u_t - S_t\\,\\theta

(``StepPWL``: it fires *at* the threshold, several spikes per step up to ``max_spikes_per_dt``,
subtract reset in the same step). With ``has_rec=False`` rockpool still adds
``F.linear(S, 0)``, an exact zero, and with ``noise_std=0`` a zero noise trace; with ``bias=0`` the
bias adds an exact zero. This is cil's neuron with ``synaptic_update="add-then-decay"``
(:math:`i_t = b (i_{t-1} + x_t)`), ``beta`` = rockpool's ``alpha``, ``alpha`` = rockpool's
``beta`` (the two libraries name the decays the other way round), ``reset="subtract"``,
``reset_timing="immediate"``, ``fires_at_threshold=True`` and ``max_spikes_per_step`` =
``max_spikes_per_dt``; the decays are rockpool's own tensors (``module.alpha`` / ``module.beta``,
computed by rockpool from the taus), so the floats are the same. ``has_rec=True``: the recurrent
input enters the sum the current decays, :math:`b((i + x) + W_{rec}^\\top S_{t-1})`, with ``w_rec``
held ``[from, to]``: ``Recurrent("<layer>.w_rec", into="current-before-decay",
weight_layout="in-out")``, trained by cil (rockpool's ``F.linear(S, w_rec.T)`` on the same view). ``LinearTorch`` computes
``F.linear(x, W.T, b)`` with ``W`` held ``[in, out]``: ``Dense(weight_layout="in-out")``, one call
on all (sample, step) pairs as rockpool makes it (``synapse_calls="all-steps"``).

Surrogate (software pass only): rockpool's ``StepPWL`` backward is
:math:`\\partial S/\\partial u = [u \\ge \\theta - w]/\\theta` (``w`` = ``learning_window``): cil's
``Surrogate("box", slope=w, scale=1/θ)``, for a threshold shared by the layer. With per-neuron
thresholds, or ``PeriodicExponential`` (a periodic surrogate cil has no counterpart for), the
forward stays exact and cil uses the box with 1/θ̄ (the mean threshold): BPTT gradients then differ
from rockpool's (a ``surrogate=`` option replaces the choice).

Refused, naming the module and parameter (:class:`~cil_core.UnsupportedLayerError`):

* trainable neuron parameters (rockpool's default: ``tau_mem``, ``tau_syn``, ``threshold``,
  ``bias`` are ``rp.Parameter``): cil trains synaptic weights only, so they would stay frozen while
  rockpool's own training moves them. Pass them as ``rockpool.parameters.Constant(...)`` or call
  ``requires_grad_(False)`` on them;
* ``bias != 0``: rockpool adds it to the membrane after the synaptic current,
  :math:`u = (a v + i) + c`; cil's biases are synaptic (a ``Dense`` bias enters the current and
  is decayed by it), a different dynamics;
* ``noise_std > 0`` (a random membrane noise trace per call), ``shape=(N_in, N_out)`` with
  several synapses per neuron (a per-synapse current), ``max_spikes_per_dt`` not a positive
  integer, a ``spike_generation_fn`` other than ``StepPWL`` / ``PeriodicExponential``;
* every other rockpool module (``LIFBitshiftTorch``, ``aLIFTorch``, ``LIFNeuronTorch``,
  ``ExpSynTorch``, ``RateTorch``, ``UpDownTorch``, ``LowPass``, dropout, numpy/jax modules, ...).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from cil_core import Dense, NetworkSpec, Neuron, Surrogate, UnsupportedLayerError
from cil_core.network.description import Recurrent
from cil_core.plugin.adapter import ModelAdapter, qualname

from .sdk import import_rockpool

_rp = import_rockpool()
from rockpool.nn.modules.torch.lif_torch import LIFTorch, PeriodicExponential, StepPWL  # noqa: E402
from rockpool.nn.modules.torch.linear_torch import LinearTorch  # noqa: E402
from rockpool.nn.modules.torch.torch_module import TorchModule  # noqa: E402

#: What this adapter accepts (docs/models.md's table is generated from it by benchmarks/model_table.py).
ACCEPTED_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("LinearTorch (has_bias True or False)", "Dense(weight_layout='in-out'): F.linear(x, W.T, b) on all (sample, "
     "step) pairs, as rockpool calls it", "weight, bias"),
    ("LIFTorch, shape (n,) or (n, n)", "add-then-decay synaptic current, membrane decay, fires at threshold, "
     "subtract reset at once; decays are rockpool's own alpha (membrane) and beta (synaptic) tensors",
     "none: taus, threshold must be Constant"),
    ("leak_mode 'taus', 'decays', 'bitshifts'; per-neuron tau_mem, tau_syn, threshold; any dt",
     "per-neuron beta, alpha, threshold", "-"),
    ("LIFTorch has_rec=True (w_rec)", "Recurrent(into='current-before-decay', weight_layout='in-out'): "
     "b((i + x) + W_rec^T S_{t-1})", "w_rec"),
    ("max_spikes_per_dt (integer >= 1)", "max_spikes_per_step: min(n, floor(u/theta)) spikes, n thresholds "
     "subtracted", "-"),
    ("StepPWL (default spike_generation_fn)", "Surrogate('box', window, 1/theta): rockpool's BPTT gradient", "-"),
    ("Sequential (nested ones flattened), input [B, T, C]", "a chain; cil's inputs time-major [T, B, C]",
     "its LinearTorch tensors"),
)
#: What this adapter refuses, as ``(layer or option, why)`` (docs/models.md's generated table).
REFUSED_LAYERS: tuple[tuple[str, str], ...] = (
    ("trainable tau_mem / tau_syn / alpha / beta / dash_*, threshold, bias (rockpool's default)",
     "cil trains synaptic weights only: pass them as rockpool.parameters.Constant(...)"),
    ("LIFTorch bias != 0", "added to the membrane after the current; cil's biases are synaptic (decayed)"),
    ("noise_std > 0", "a random membrane noise trace per call: no deterministic reference"),
    ("a Constant LinearTorch weight / bias or w_rec", "cil trains every synaptic tensor: it would not stay fixed"),
    ("shape (N_in, N_out) with several synapses per neuron", "one synaptic current per synapse"),
    ("PeriodicExponential", "forward exact; its periodic surrogate has no counterpart (box used, gradients differ)"),
    ("LIFBitshiftTorch, aLIFTorch, LIFNeuronTorch, ExpSynTorch, RateTorch, UpDownTorch, LowPass, dropout, numpy / "
     "jax modules", "no counterpart in the description"),
)

#: the neuron parameters rockpool may hold as trainable ``nn.Parameter`` (per leak mode)
NEURON_PARAMETERS = ("tau_mem", "tau_syn", "alpha", "beta", "dash_mem", "dash_syn", "threshold", "bias")


def _sequential_types() -> tuple[type, ...]:
    from rockpool.nn.combinators.sequential import SequentialMixin

    return (SequentialMixin,)


def flat_modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules of a rockpool ``Sequential`` in call order (nested ones flattened), with the
    dotted names their parameters have in ``model`` (``"0_LinearTorch"``); a single module is a
    chain of one."""
    if not isinstance(model, _sequential_types()):
        return [(prefix.rstrip(".") or "", model)]
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_children():
        out += flat_modules(m, f"{prefix}{name}.") if isinstance(m, _sequential_types()) else [(f"{prefix}{name}", m)]
    return out


def _tensor(v: Any) -> torch.Tensor:
    return torch.as_tensor(v).detach().clone()


def _per_neuron(v: torch.Tensor, n: int, where: str, what: str) -> torch.Tensor | float:
    """A scalar, or a per-neuron ``[n]`` tensor, from rockpool's ``()``, ``(n,)``, ``(n, 1)`` or ``(1, 1)``."""
    t = _tensor(v)
    if t.numel() == 1:
        return float(t.reshape(()))
    if t.numel() != n:
        raise UnsupportedLayerError(f"{where}: {what} of shape {tuple(t.shape)} is neither one value nor one per "
                                    f"neuron ({n})")
    return t.reshape(n)


def _name(name: str, attr: str) -> str:
    return f"{name}.{attr}" if name else attr


def linear_of(m: nn.Module, name: str, where: str) -> Dense:
    """``LinearTorch`` → ``Dense(weight_layout="in-out")`` under the module's own tensor names."""
    params = dict(m.named_parameters(recurse=False))
    for attr in ("weight",) + (("bias",) if m.bias is not None else ()):
        if attr not in params:
            raise UnsupportedLayerError(
                f"{where}: {attr} is a Constant (not an nn.Parameter): cil trains every synaptic tensor, so it would "
                f"not stay fixed as rockpool keeps it. Build the layer with a trainable {attr}")
    n_in, n_out = int(m.size_in), int(m.size_out)
    return Dense(_name(name, "weight"), _name(name, "bias") if m.bias is not None else None, n_in, n_out,
                 weight_layout="in-out")


def surrogate_of(m: nn.Module, threshold: torch.Tensor | float, where: str) -> Surrogate:
    """rockpool's ``StepPWL`` as ``Surrogate("box", slope=learning_window, scale=1/θ)`` (for a
    per-neuron threshold the mean, and the gradient is then not rockpool's)."""
    fn = m.spike_generation_fn
    owner = getattr(fn, "__self__", None)
    if owner not in (StepPWL, PeriodicExponential):
        raise UnsupportedLayerError(
            f"{where}: spike_generation_fn={getattr(fn, '__qualname__', fn)!r} is not supported (rockpool's StepPWL, "
            "the default, and PeriodicExponential are: same forward, a threshold count)")
    window = float(_tensor(m.learning_window).reshape(-1)[0])
    theta = float(torch.as_tensor(threshold, dtype=torch.float64).mean())
    if not (math.isfinite(window) and window > 0):
        raise UnsupportedLayerError(f"{where}: learning_window={window!r} must be a positive finite number")
    return Surrogate("box", window, 1.0 / theta)


def neuron_of(m: nn.Module, name: str, where: str, n_in: int | None) -> Neuron:
    """Translate one ``LIFTorch`` (see the module docstring), or raise naming what is refused."""
    n = int(m.size_out)
    trainable = [a for a, p in m.named_parameters(recurse=False) if a in NEURON_PARAMETERS and p.requires_grad]
    if trainable:
        raise UnsupportedLayerError(
            f"{where}: {', '.join(trainable)} {'are' if len(trainable) > 1 else 'is'} trainable (rockpool's default, "
            "rp.Parameter): cil trains synaptic weights only, so "
            f"{'they' if len(trainable) > 1 else 'it'} would stay frozen while rockpool's own training moves "
            f"{'them' if len(trainable) > 1 else 'it'}. Pass {', '.join(f'{a}=Constant(...)' for a in trainable)} "
            "(rockpool.parameters.Constant) when building LIFTorch, or call "
            f"{', '.join(f'module.{a}.requires_grad_(False)' for a in trainable)}")
    if int(m.n_synapses) != 1 or int(m.size_in) != n:
        raise UnsupportedLayerError(
            f"{where}: shape {(int(m.size_in), n)} gives {int(m.n_synapses)} synapses per neuron, each with its own "
            "synaptic current; cil's neuron has one synaptic current. Use LIFTorch(n) with a LinearTorch before it")
    recurrent = None
    if bool(m._has_rec):
        if "w_rec" not in dict(m.named_parameters(recurse=False)):
            raise UnsupportedLayerError(
                f"{where}: w_rec is a Constant (not an nn.Parameter): cil trains every synaptic tensor, the recurrent "
                "ones included, so it would not stay fixed as rockpool keeps it. Build the layer with a trainable w_rec")
        # rockpool: isyn = (isyn + x) + F.linear(S_{t-1}, w_rec.T), then isyn *= beta; w_rec held [from, to]
        recurrent = Recurrent(_name(name, "w_rec"), None, n, mode="dense", into="current-before-decay",
                              initial="bias", weight_layout="in-out")
    noise = float(_tensor(m.noise_std).reshape(-1)[0])
    if noise != 0.0:
        raise UnsupportedLayerError(
            f"{where}: noise_std={noise:g}: rockpool draws a new Gaussian membrane noise trace on every call "
            "(torch.randn), which has no deterministic reference to reproduce; build the layer with noise_std=0 (cil's "
            "analog-mismatch backend models membrane noise on the chip side)")
    bias = _tensor(m.bias)
    if bool((bias != 0).any()):
        raise UnsupportedLayerError(
            f"{where}: bias (non-zero): rockpool adds the neuron bias to the membrane every step after the synaptic "
            "current, v_t = (alpha * v_{t-1} + i_t) + bias; cil's biases are synaptic (a Dense bias enters the synaptic "
            "current and is decayed with it), a different dynamics. Use bias=Constant(0.0) and "
            "LinearTorch(..., has_bias=True) if a synaptic bias suits the model")
    cap_t = _tensor(m.max_spikes_per_dt).reshape(-1)
    cap = float(cap_t[0])
    if cap_t.numel() != 1 or not math.isfinite(cap) or cap < 1 or cap != int(cap):
        raise UnsupportedLayerError(f"{where}: max_spikes_per_dt={cap_t.tolist()} must be one integer >= 1")
    thr = _per_neuron(m.threshold, n, where, "threshold")
    if bool((torch.as_tensor(thr) <= 0).any()):
        raise UnsupportedLayerError(f"{where}: threshold must be > 0")
    leaks = m._get_all_leak_params()  # rockpool's own alpha (membrane) and beta (synaptic) tensors
    a_mem = _per_neuron(leaks["alpha"], n, where, "alpha (membrane decay)")
    b_syn = _per_neuron(leaks["beta"], n, where, "beta (synaptic decay)")
    for what, d in (("alpha (membrane decay, exp(-dt/tau_mem))", a_mem), ("beta (synaptic decay, exp(-dt/tau_syn))",
                                                                             b_syn)):
        t = torch.as_tensor(d, dtype=torch.float64)
        if not bool(torch.isfinite(t).all()) or bool(((t < 0) | (t > 1)).any()):
            raise UnsupportedLayerError(f"{where}: {what} outside [0, 1] (min {float(t.min()):g}): not a decay")
    return Neuron(
        beta=a_mem, alpha=b_syn, threshold=thr, reset="subtract", reset_timing="immediate",
        current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=None, fires_at_threshold=True,
        max_spikes_per_step=int(cap), dt=float(m.dt), output="spikes", surrogate=surrogate_of(m, thr, where),
        name=where, synaptic_update="add-then-decay", recurrent=recurrent)


class RockpoolAdapter(ModelAdapter):
    """cil adapter for rockpool models (torch backend)."""

    def accepts(self, model: Any) -> bool:
        # nn.Module.modules, not model.modules(): rockpool's modules() returns a dict of submodule names
        return isinstance(model, nn.Module) and any(isinstance(m, (LIFTorch, LinearTorch))
                                                    for m in nn.Module.modules(model))

    def to_spec(self, model: nn.Module, *, input_shape: Sequence[int] | None = None,
                surrogate: Surrogate | None = None) -> NetworkSpec:
        """Describe ``model``. Options: ``input_shape`` (per sample, ``(C,)``; default the first
        ``LinearTorch``'s input size), ``surrogate`` (replaces the box surrogate read from each
        ``LIFTorch``: the software pass's gradient only)."""
        chain = flat_modules(model)
        layers: list = []
        for name, m in chain:
            where = f"module '{name or type(m).__name__}' ({type(m).__name__})"
            if type(m) is LinearTorch:
                layers.append(linear_of(m, name, where))
            elif type(m) is LIFTorch:
                neuron = neuron_of(m, name, where, None)
                layers.append(neuron if surrogate is None else neuron.with_(surrogate=surrogate))
            else:
                kind = "a torch-backend rockpool module" if isinstance(m, TorchModule) else qualname(m)
                raise UnsupportedLayerError(
                    f"{where}: {kind} the rockpool adapter does not support (supported: LinearTorch, LIFTorch in a "
                    "rockpool Sequential; LIFBitshiftTorch, aLIFTorch, LIFNeuronTorch, ExpSynTorch, RateTorch, "
                    "UpDownTorch, LowPass, dropout and numpy/jax modules have no counterpart in cil's description)")
        if not layers or not isinstance(layers[-1], Neuron):
            raise UnsupportedLayerError(f"{qualname(model)}: the last module must be a LIFTorch")
        if input_shape is None:
            first = layers[0]
            input_shape = (first.in_features,) if isinstance(first, Dense) else (int(chain[0][1].size_in),)
        return NetworkSpec(tuple(layers), tuple(int(s) for s in input_shape), source=f"rockpool:{qualname(model)}",
                           synapse_calls="all-steps")

    def run_native(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_native(model, x)


def run_native(model: nn.Module, x: torch.Tensor, record: bool = False) -> Any:
    """rockpool's own forward over time-major ``x`` ``[T, B, C]``: the state reset first (rockpool
    keeps the first sample's final state between calls), the input made batch-first, the output
    ``[T, B, C_out]`` returned (with ``record=True``: ``(output, rockpool's record dict)``)."""
    model.reset_state()
    out, _, rec = model(x.transpose(0, 1), record=record) if record else model(x.transpose(0, 1))
    y = out.transpose(0, 1)
    return (y, rec) if record else y


__all__ = ["RockpoolAdapter", "ACCEPTED_LAYERS", "REFUSED_LAYERS", "run_native", "flat_modules", "neuron_of",
           "linear_of"]
