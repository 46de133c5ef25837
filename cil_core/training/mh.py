"""Metropolis-Hastings sampling of the weights with the likelihood measured on the chip
(after Safa et al., NICE 2024, arXiv 2402.06284; the paper leaves proposal, prior and
initialisation choices open, the ones here are cil's).

Posterior over the flattened synaptic weights :math:`\\theta`:

.. math::

    \\log p(\\theta \\mid D) = \\underbrace{-\\frac{N}{\\tau}\\,\\mathrm{CE}_{hw}(\\theta; D)}_{\\log L(\\theta)}
        - \\frac{1}{2}\\sum_k \\Big(\\frac{\\theta_k}{\\sigma_p u_k}\\Big)^2 + \\text{const}

where :math:`\\mathrm{CE}_{hw}` is the mean cross entropy of the readout of the *chip's* output
(the chip runs the candidate weights after a weight transfer), :math:`N` the number of samples
scored, :math:`\\tau` the temperature, :math:`\\sigma_p` the prior width and :math:`u_k` the
scale of the tensor that holds :math:`\\theta_k` (the standard deviation of its starting
values), so that one step size fits layers of different fan-in. ``chains`` independent chains
advance together; all their proposals of a step are scored in one request (the session splits
it into ``ceil(sets / max_sets)`` backend calls). Every proposal is accepted with probability
:math:`\\min(1, p(\\theta'|D)/p(\\theta|D))` (both proposals below are symmetric).

**Likelihood scale** (``logit_scale``). The cross entropy is taken of the readout's logits times
a factor :math:`\\lambda`, :math:`\\mathrm{CE}_{hw} = -\\frac1N\\sum_i \\log\\mathrm{softmax}(\\lambda z_i)_{y_i}`.
With a rate readout the logits are spike counts (up to :math:`T`): for a large spread a wrong
sample costs about :math:`\\lambda |z_{i,c} - z_{i,y}|` nats and a right one gains at most
:math:`\\log 2` over a tie, so tied outputs (both counts equal, CE = :math:`\\log 2`) become a
trap that a chain drifts into and cannot leave (observed: T = 32, λ = 1, half the test samples
tied). A temperature :math:`\\tau` does not help: it flattens the posterior without changing the
asymmetry. ``logit_scale="auto"`` (default) chooses

.. math:: \\lambda = \\min\\Big(1,\\ \\frac{\\kappa}{s}\\Big),\\qquad
          s = \\sqrt{\\frac{1}{BC}\\sum_{i,c} \\big(z_{i,c} - \\bar z_i\\big)^2},\\quad \\bar z_i = \\frac1C\\sum_c z_{i,c},

from the chains' starting states' outputs on the first step's batch (averaged over the chains; the chip call that scores
them anyway: no extra request), :math:`\\kappa = 1` (``LOGIT_SPREAD``): the centred logits
then spread by about one nat, so one spike more or less moves the likelihood of a sample by a
fraction of :math:`\\log 2` and the chain can climb out of ties; :math:`\\lambda \\le 1` never
sharpens the readout the user chose, and :math:`s = 0` (silent or tied starting outputs) keeps
:math:`\\lambda = 1`. λ is then fixed for the run (the chain targets one posterior), stored in
checkpoints, reported per step (``logit_scale`` in the history and ``trace``); a number fixes it
(``logit_scale=1.0`` is the earlier likelihood). ``init="auto"`` chooses its gain before λ exists
(at λ = 1). :meth:`~cil_core.Trainer.evaluate` reports the share of tied and silent outputs.

**Sparse block proposals** (``proposal="block"``, the default). Each chain, each step, draws one
synaptic layer :math:`\\ell` (its weight and bias tensors together) and
:math:`k = \\min(\\text{block\\_size}, D_\\ell)` distinct entries :math:`B` of it, and moves only
those:

.. math:: \\theta'_i = \\theta_i + s_\\ell\\, u_i\\, \\epsilon_i,\\quad \\epsilon_i \\sim \\mathcal N(0, 1),\\quad i \\in B.

The layer is drawn with probability proportional to its number of entries :math:`D_\\ell`
(``layer_choice="size"``: every weight is about equally likely to move, whatever the depth; on the
benchmark's 62-16-2 and 62-32-16-2 networks this beat choosing the layer uniformly, which in a
2-layer net is the output layer half of the time).

The step sizes :math:`s_\\ell` (one per layer, shared by the chains) start at ``step_size``
(1.0: one tensor scale) and during burn-in, every ``adapt_every`` steps,
:math:`s_\\ell \\leftarrow s_\\ell \\exp(a_\\ell - a^*)` with :math:`a_\\ell` the acceptance rate of
that layer's proposals in the window pooled over the chains (unchanged if it had none) and
:math:`a^*` = ``target_acceptance`` (0.3); frozen after burn-in. Why: an isotropic step over all
:math:`D` weights must shrink like :math:`1/\\sqrt D` to be accepted, and on a chip whose weights
are held as a few DAC codes such a small step almost never changes a code; a move of a few
weights by about one tensor scale does, and is still accepted often.

With ``de_fraction`` :math:`> 0` that share of the block moves are differential-evolution moves
across chains (ter Braak 2006) on the same block:
:math:`\\theta'_B = \\theta_B + \\gamma(\\theta_{a,B} - \\theta_{b,B}) + 0.1\\, s_\\ell u_B \\epsilon`,
:math:`\\gamma = 2.38/\\sqrt{2k}`, :math:`a \\ne b` two other chains (their states at the start of
the step). DE moves do not enter the step adaptation.

**Random walk** (``proposal="random-walk"``, cil's earlier sampler): all weights at once,
:math:`\\theta' = \\theta + s_c\\, u \\odot \\epsilon`, one step size per chain (start 0.05, target
acceptance 0.25), adapted the same way from each chain's own acceptance.

**Initialisation** (``init``):

* ``"calibrate"`` (default): per-layer gain calibration, input to output. For each synaptic
  layer in turn, its tensors are scaled by every gain :math:`g` in ``init_gains`` (0.25 … 16 in steps of √2;
  the layers before it already calibrated, the ones after it as they are), all candidates are
  run in one request with ``record=True`` on the first :math:`\\le 256` training samples (labels
  unused), and the gain whose driven neuron layer fires closest to the target rate (spikes per
  neuron and time step; ``target_rates`` = 0.15 for hidden layers, 0.3 for the output layer) is
  kept (ties: the largest gain if the layer fires too little, the smallest if too much). A
  backend that observes only the output: the hidden layers are calibrated on the software
  model (no chip call), the output layer on the chip's output. A layer that drives a
  non-spiking readout is left as it is. The tensor scales :math:`u` scale with the gains.
* ``"auto"``: one global gain :math:`g` among ``init_gains`` (1 … 8) with the highest posterior
  :math:`\\log p(g\\,\\theta_0 \\mid D)` on the chip (up to 512 training samples, one request; ties
  go to the smallest gain).
* ``"network"``: start at the network's weights as they are (e.g. weights trained offline: MH
  as on-chip fine-tuning).

**Deployment**. After burn-in every ``thin``-th state of every chain is kept. ``deploy="mean"``:
the pooled posterior mean :math:`W^* = \\frac1K\\sum_k\\theta^{(k)}` and every chain's own mean
:math:`W^*_c` are scored once more on the chip (on up to 512 training samples, one request) and
the one with the highest log-likelihood (``deploy_by="likelihood"``, default) or posterior
(``deploy_by="posterior"``) is deployed: chains that drift into different modes (e.g. permuted
hidden units) have a pooled mean between the modes, and the prior favours a shrunken pooled
mean that with little data can be a near-constant predictor. ``deploy="best"``: the best state
or proposal scored during the run, by the same criterion.

With a stochastic chip or a minibatch likelihood the current states are re-scored together
with the proposals each step (Monte-Carlo-within-Metropolis), so a lucky noisy estimate cannot
pin a chain.

**Minibatch likelihood** (``likelihood="sequential"``): each chain's acceptance is decided by
Korattikara et al.'s sequential t-test on as few randomly drawn training samples as the test needs
(``minibatch`` at a time, level ``epsilon``, at most ``max_samples``), so a step's cost does not grow
with N, and the training data may be streamed from a torch Dataset or DataLoader (read by index).
Equations and the error bound in :mod:`cil_core.training.minibatch`. ``likelihood="full"`` (the
default) scores every step on all the data given to the step.
**Neuron parameters** (a model whose neuron layers hold trainable tensors,
:class:`~cil_core.network.neuron.NeuronParameter`: snntorch ``learn_beta``, ``learn_threshold``, ...).
With ``neuron_share`` :math:`q > 0` (default 0.25) they are sampled with the weights: in a block step each
chain moves, with probability :math:`q`, one trained neuron tensor :math:`j` (drawn uniformly;
:math:`k = \\min(\\text{block\\_size}, D_j)` of its entries) instead of a synaptic layer, by a move that
never leaves the field's valid range,

.. math::

    \\beta'_i &= \\mathrm{fold}(\\beta_i + s_j \\epsilon_i), \\qquad
        \\mathrm{fold}(x) = 1 - |1 - (x \\bmod 2)| \\in [0, 1]
        &&(\\beta,\\ \\alpha:\\ \\text{reflected at 0 and 1})\\\\
    \\theta'_i &= \\theta_i\\, e^{s_j \\epsilon_i} > 0
        &&(\\text{threshold, spike amplitude: a step of the logarithm})

with :math:`\\epsilon_i \\sim \\mathcal N(0, 1)` and its own step size :math:`s_j`, starting at
``neuron_steps[field]`` (0.02 for β and α, 0.05 for the threshold and the spike amplitude, i.e. about 5 %)
and adapted during burn-in like a layer's step, capped at 0.5 (β, α) and 1.0 (log scale). The prior is
uniform on :math:`[0, 1]` for β and α, and Gaussian in :math:`\\log\\theta` for the threshold and the
spike amplitude, centred on the chains' starting value :math:`\\theta_{0,i}` (the model's own),

.. math:: \\log\\theta_i \\sim \\mathcal N(\\log\\theta_{0,i},\\ \\sigma_n^2),\\qquad
          z_i = \\frac{\\log\\theta_i - \\log\\theta_{0,i}}{\\sigma_n},

:math:`\\sigma_n` = ``neuron_prior_std`` (1.0: a factor :math:`e` at one standard deviation). The
reflected move is symmetric, and the log-normal move's Hastings factor :math:`\\theta'/\\theta` cancels
the Jacobian :math:`1/\\theta` of that prior's density, so the acceptance is
:math:`\\min\\big(1, \\frac{L(\\theta')}{L(\\theta)}\\, e^{-(z_i'^2 - z_i^2)/2}\\big)`: the prior adds
:math:`-z_i^2/2` per entry to :math:`\\log p`. ``neuron_prior_std=None`` is the scale-free flat prior
in :math:`\\log\\theta` (:math:`p(\\theta) \\propto 1/\\theta`, improper; cil's prior before it), under which
the acceptance is :math:`\\min(1, L(\\theta')/L(\\theta))`: a threshold the likelihood does not see (a
neuron silent for every proposal) then random-walks in :math:`\\log\\theta` without bound, with the step
adapted up to its cap because every such move is accepted (measured with a likelihood made flat,
``tests/test_mh_neurons.py``'s setting: 18 thresholds of 4 chains went from 1 to 6e-12 … 1e16 in 400
steps; with :math:`\\sigma_n = 1` they keep :math:`z` at mean square 1.05 over 1,000 steps).
The chains start from the values the layers use (the library's clamp applied, e.g. snntorch's β clipped
to [0, 1]); a value outside its range at the start is refused by name. The random walk moves every
neuron entry each step the same way, with :math:`s_j` times the chain's step factor
:math:`s_c/s_0`. A chip holds one neuron parameter value for all parameter sets of a call, so sets
whose neuron parameters differ are scored in separate requests, one per distinct value (up to
``2 * chains`` calls per step instead of one). ``neuron_share=0`` keeps them fixed, as before.

*On a chip's finite domain.* A backend that holds a field only on a finite set of values
:math:`v_0 < v_1 < \\dots < v_{n-1}` (its ``neuron_parameters[field].domain`` has ``values()``, e.g. Xylo's
bit-shift decays :math:`\\beta = 1 - 2^{-k}`, a :class:`~cil_core.hardware.domains.ShiftDecay`) gets
proposals on those values only, a discrete random walk over their indices: from :math:`\\beta_i = v_{m}`,

.. math::

    d_i = \\mathrm{sign}(\\epsilon_i)\\,\\big(1 + \\lfloor s_j |\\epsilon_i| \\rfloor\\big),\\qquad
    \\beta'_i = v_{r(m + d_i)},\\qquad
    r(x) = \\begin{cases} y & y < n\\\\ 2n - 1 - y & y \\ge n\\end{cases},\\ y = x \\bmod 2n

(:math:`\\epsilon_i \\sim \\mathcal N(0, 1)`; :math:`r` reflects the index about :math:`-\\tfrac12` and
:math:`n - \\tfrac12`, so a step past an end stays at or comes back from it; :math:`n = 1`: the value stays).
The offset's law is symmetric, :math:`P(d) = P(-d)`, and every index :math:`m'` has exactly two
families of pre-images, :math:`m' + 2nk` and :math:`-1 - m' + 2nk` (distinct: :math:`2m' + 1` is odd), so
:math:`q(m \\to m') = \\sum_k [P(m' - m + 2nk) + P(-1 - m' - m + 2nk)] = q(m' \\to m)`: the proposal is
symmetric (reflecting about the end values themselves, :math:`x \\mapsto -x`, would not be: an end value
has one family of pre-images only, and would be proposed half as often as it is left). The prior is
uniform over the held values, so the acceptance is again :math:`\\min(1, L(\\theta')/L(\\theta))`.
The step :math:`s_j` is in index units (start
``NEURON_INDEX_STEP`` = 0.5: mostly one value up or down; adapted like the others, capped at
``NEURON_INDEX_STEP_MAX`` = 4; ``neuron_steps`` applies to the continuous fields). A start the chip does
not hold is refused before the first chip call, naming the nearest held values (unless the backend
rounds it, e.g. Xylo's ``round_decays=True``: the moves then land on held values), and a deployed
posterior mean holds each such entry's nearest held value. Fields whose domain is not a finite set
(Xylo's thresholds, scaled onto the integer grid by the transfer) move as above.

``proposal="random-walk", init="auto", deploy_by="posterior"`` is cil's earlier sampler, step for
step.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch

from ..data import SpikeData, as_dense
from ..data.stream import BatchStream
from ..errors import BackendCapacityError, CheckpointError, CilError, OptionError, SpecError
from ..network.description import Neuron, check_neuron_ranges
from ..network.neuron import NEURON_PARAMETER_FIELDS
from .algorithm import Algorithm, StepResult, TrainState
from .minibatch import Decision, MinibatchDraws, SequentialTest
from .readout import Readout

#: at most this many training samples are run for the per-layer gain calibration
CALIBRATION_SAMPLES = 256
#: at most this many training samples score the deployment candidates (and ``init="auto"``)
DEPLOY_SAMPLES = 512
#: κ, the centred RMS spread of the starting logits that ``logit_scale="auto"`` aims at
LOGIT_SPREAD = 1.0

#: initial MH step of each trainable neuron field: absolute for beta and alpha (reflected into [0, 1]),
#: of the logarithm for the threshold and the spike amplitude (see the module doc)
NEURON_STEPS = {"beta": 0.02, "alpha": 0.02, "threshold": 0.05, "spike_amplitude": 0.05}
#: the largest step a neuron field's step may be set to or adapt to
NEURON_STEP_MAX = {"beta": 0.5, "alpha": 0.5, "threshold": 1.0, "spike_amplitude": 1.0}
#: initial and largest step, in index units, of a neuron field on a finite domain (a walk over the held values)
NEURON_INDEX_STEP = 0.5
NEURON_INDEX_STEP_MAX = 4.0
#: neuron fields held in [0, 1] (the others are positive)
_UNIT_INTERVAL = ("beta", "alpha")

_DEFAULTS = {  # (step_size, target_acceptance) per proposal
    "block": (1.0, 0.3),
    "random-walk": (0.05, 0.25),
}
_GAINS = {
    "calibrate": tuple(round(2 ** (k / 2), 2) for k in range(-4, 9)),  # 0.25, 0.35, 0.5, 0.71, 1, ..., 11.31, 16
    "auto": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
    "network": (1.0,),
}


def _nearest(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The index in ``table`` of the value nearest to each entry of ``x`` (ties: the first)."""
    return (x.unsqueeze(-1) - table).abs().argmin(-1)


class MetropolisHastings(Algorithm):
    """Metropolis-Hastings over the weights, likelihood measured on the backend (equations in
    :mod:`cil_core.training.mh`).

    Options: ``chains`` (parallel chains: proposals per step), ``proposal`` (``"block"``: sparse
    block moves on one layer per chain and step; ``"random-walk"``: isotropic moves of all weights),
    ``block_size`` (weights moved per block proposal, k = min(block_size, layer size)),
    ``layer_choice`` (which layer a block proposal moves: ``"uniform"`` over the synaptic layers,
    ``"output-half"`` the output layer with probability 1/2 and the others share the rest, ``"size"``
    in proportion to the layers' numbers of weights, ``"sqrt-size"`` to their square roots), ``step_size`` (initial step in units of each
    tensor's scale; ``None``: 1.0 for block, 0.05 for random-walk proposals), ``target_acceptance``
    (the acceptance the burn-in adaptation aims at; ``None``: 0.3 for block, 0.25 for random-walk),
    ``burn_in`` (steps before samples are kept; step sizes frozen after), ``thin`` (keep every
    thin-th state), ``prior_std`` (Gaussian prior width σ_p, in tensor scales), ``temperature``
    (likelihood temperature τ), ``adapt_every`` (steps between step-size adaptations), ``deploy``
    (``"mean"``: the best of the pooled and per-chain posterior means; ``"best"``: the best sample
    scored), ``deploy_by`` (``"likelihood"`` or ``"posterior"``: how deployment candidates are
    ranked), ``rescore`` (``"auto"``, ``True``, ``False``: re-score the current states with the
    proposals each step; auto: on a stochastic chip or with minibatches), ``batched`` (score all
    sets of a request in one backend call when the backend allows), ``init`` (``"calibrate"``,
    ``"auto"`` or ``"network"``: how the chains start), ``init_gains`` (the gain candidates of
    ``init``; ``None``: 0.25 … 16 in steps of √2 for calibrate, 1 … 8 for auto), ``target_rates`` (firing rates,
    hidden and output, that the calibration aims at), ``de_fraction`` (share of block proposals that
    are differential-evolution moves across chains; needs 3 chains), ``logit_scale`` (``"auto"``: the
    likelihood's factor λ on the readout logits chosen from the starting outputs, λ = min(1, 1/s) with s
    their centred RMS spread; a positive number fixes λ, 1.0 is the earlier likelihood), ``likelihood``
    (``"full"``: every step scored on all the data it is given; ``"sequential"``: Korattikara et al.'s
    sequential test on random minibatches, step cost independent of N, streamed Datasets and DataLoaders
    accepted; :mod:`cil_core.training.minibatch`), ``minibatch`` (samples read per look of the sequential
    test, m >= 2), ``epsilon`` (level of the sequential test per look, 0 <= epsilon < 1; 0: exact MH),
    ``max_samples`` (at most this many samples per sequential decision, then the sign of the estimate
    decides; ``None``: all N), ``neuron_share``
    (the probability that a block proposal moves a trained neuron parameter tensor instead of a synaptic layer;
    0 keeps the neuron parameters fixed; no effect on a model without them), ``neuron_prior_std`` (σ_n, the
    width of the Gaussian prior on the logarithm of a trained threshold or spike amplitude, centred on its
    starting value; ``None`` or ``"flat"`` (a TOML config has no None): the flat prior in the logarithm; see the
    module doc), ``neuron_steps`` (initial step per
    neuron field, ``{"beta": 0.02, "alpha": 0.02, "threshold": 0.05, "spike_amplitude": 0.05}`` for the fields
    not given: absolute for beta and alpha, of the logarithm for threshold and spike amplitude; at most 0.5 and
    1.0; a field the backend holds on a finite set of values moves over those values instead, its step in
    index units, see the module doc).

    Chip requests per fit: ``init="calibrate"``: one request of ``len(init_gains)`` sets per
    synaptic layer (on at most 256 samples; only the output layer's on a backend that does not
    observe hidden layers); ``init="auto"``: one of ``len(init_gains)`` sets; then ``chains`` sets
    for the starting states at the first step, ``chains`` proposals per step (``2 * chains`` when
    re-scoring the current states) and ``chains + 1`` sets at the end (``deploy="mean"``).
    """

    name = "mh"
    default_batch_size = None
    default_epochs = None
    default_steps = 400

    def __init__(self, chains: int = 4, proposal: str = "block", block_size: int = 16,
                 layer_choice: str = "size", step_size: float | None = None,
                 target_acceptance: float | None = None, burn_in: int = 200, thin: int = 1,
                 prior_std: float = 3.0, temperature: float = 1.0, adapt_every: int = 20,
                 deploy: str = "mean", deploy_by: str = "likelihood", rescore: bool | str = "auto",
                 batched: bool = True, init: str = "calibrate", init_gains: tuple[float, ...] | None = None,
                 target_rates: tuple[float, float] = (0.15, 0.3), de_fraction: float = 0.0,
                 logit_scale: float | str = "auto", likelihood: str = "full", minibatch: int = 32,
                 epsilon: float = 0.05, max_samples: int | None = None, neuron_share: float = 0.25,
                 neuron_steps: dict[str, float] | None = None, neuron_prior_std: float | str | None = 1.0) -> None:
        if proposal not in _DEFAULTS:
            raise OptionError(f"proposal must be 'block' or 'random-walk', not {proposal!r}")
        if init not in _GAINS:
            raise OptionError(f"init must be 'calibrate', 'auto' or 'network', not {init!r}")
        if layer_choice not in ("uniform", "output-half", "size", "sqrt-size"):
            raise OptionError(f"layer_choice must be 'uniform', 'output-half', 'size' or 'sqrt-size', not {layer_choice!r}")
        if deploy not in ("mean", "best"):
            raise OptionError(f"deploy must be 'mean' or 'best', not {deploy!r}")
        if deploy_by not in ("likelihood", "posterior"):
            raise OptionError(f"deploy_by must be 'likelihood' or 'posterior', not {deploy_by!r}")
        if not (rescore == "auto" or isinstance(rescore, bool)):
            raise OptionError(f"rescore must be 'auto', True or False, not {rescore!r}")
        default_step, default_target = _DEFAULTS[proposal]
        step_size = default_step if step_size is None else step_size
        target_acceptance = default_target if target_acceptance is None else target_acceptance
        gains = _GAINS[init] if init_gains is None else init_gains
        if not gains or any(not g > 0 for g in gains):
            raise OptionError("init_gains must be a non-empty sequence of positive gains")
        if not 0 < target_acceptance < 1:
            raise OptionError("target_acceptance must lie in (0, 1)")
        if chains < 1 or thin < 1 or adapt_every < 1 or not step_size > 0 or not temperature > 0 or not prior_std > 0:
            raise OptionError("chains, thin, adapt_every must be >= 1; step_size, temperature, prior_std > 0")
        if block_size < 1:
            raise OptionError(f"block_size must be >= 1, not {block_size}")
        if burn_in < 0:
            raise OptionError(f"burn_in must be >= 0, not {burn_in}")
        if len(target_rates) != 2 or any(not 0 < r < 1 for r in target_rates):
            raise OptionError(f"target_rates must be two firing rates (hidden, output) in (0, 1), not {target_rates!r}")
        if not 0 <= de_fraction <= 1:
            raise OptionError(f"de_fraction must lie in [0, 1], not {de_fraction}")
        if de_fraction > 0 and (chains < 3 or proposal != "block"):
            raise OptionError("de_fraction > 0 needs proposal='block' and chains >= 3 (a move uses two other chains)")
        if not (logit_scale == "auto" or (isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool)
                                          and math.isfinite(logit_scale) and logit_scale > 0)):
            raise OptionError(f"logit_scale must be 'auto' or a positive number, not {logit_scale!r}")
        #: the sequential test (``likelihood="sequential"``), ``None`` for full-data MH
        self.sequential = _sequential_test(likelihood, minibatch, epsilon, max_samples, rescore)
        #: a sequential-test MH trains on streamed Datasets and DataLoaders too (it reads samples by index)
        self.streaming = self.sequential is not None
        self.draws: MinibatchDraws | None = None
        if isinstance(neuron_share, bool) or not isinstance(neuron_share, (int, float)) or not 0 <= neuron_share <= 1:
            raise OptionError(f"neuron_share must lie in [0, 1], not {neuron_share!r}")
        steps = dict(NEURON_STEPS)
        for f, v in (neuron_steps or {}).items():
            if f not in NEURON_STEPS:
                raise OptionError(f"neuron_steps: unknown neuron field {f!r}; trainable neuron fields: "
                                  f"{', '.join(NEURON_PARAMETER_FIELDS)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= NEURON_STEP_MAX[f]:
                raise OptionError(f"neuron_steps[{f!r}] must lie in (0, {NEURON_STEP_MAX[f]}] "
                                  f"({'absolute, in [0, 1]' if f in _UNIT_INTERVAL else 'a step of the logarithm'}), "
                                  f"not {v!r}")
            steps[f] = float(v)
        self.neuron_share, self.neuron_steps = float(neuron_share), steps
        if neuron_prior_std == "flat":  # None's spelling where there is no None (a TOML config)
            neuron_prior_std = None
            self.options["neuron_prior_std"] = None  # recorded (checkpoints) as the same option
        if neuron_prior_std is not None and (isinstance(neuron_prior_std, bool)
                                             or not isinstance(neuron_prior_std, (int, float))
                                             or not math.isfinite(neuron_prior_std) or not neuron_prior_std > 0):
            raise OptionError(f"neuron_prior_std must be a positive number (the prior's width in the logarithm of a "
                              f"threshold or spike amplitude), or None or 'flat' (a flat prior there; null on the command line or in "
                              f"JSON, 'flat' in TOML), not {neuron_prior_std!r}")
        self.neuron_prior_std = None if neuron_prior_std is None else float(neuron_prior_std)
        self.chains, self.proposal, self.block_size, self.layer_choice = chains, proposal, block_size, layer_choice
        self.step_size, self.target = float(step_size), float(target_acceptance)
        self.burn_in, self.thin, self.prior_std, self.temperature = burn_in, thin, prior_std, temperature
        self.adapt_every, self.deploy, self.deploy_by = adapt_every, deploy, deploy_by
        self.rescore, self.batched = rescore, batched
        self.init, self.init_gains = init, tuple(float(g) for g in sorted(gains))
        self.target_rates = (float(target_rates[0]), float(target_rates[1]))
        self.de_fraction = float(de_fraction)
        self.logit_scale_option = logit_scale
        #: λ, the factor on the readout's logits in the likelihood (chosen at the first step when "auto")
        self.logit_scale: float | None = None if logit_scale == "auto" else float(logit_scale)
        self.logit_spread: float = float("nan")
        self.init_gain = 1.0
        self.layer_gains: list[float] = []
        self.theta: torch.Tensor | None = None

    # ------------------------------------------------------------ vector <-> named tensors
    def _layout(self, state: TrainState) -> None:
        params = state.network.detached_parameters()
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        device = state.network.device
        self.unit = tensor_scales(params).to(device)
        # blocks: the flat indices of every tensor-owning layer's tensors (weight, then bias), in layer order
        offset, start = {}, 0
        for n, k in zip(self.names, self.sizes):
            offset[n] = (start, k)
            start += k
        spec = state.network.spec
        neuron_pos = {i: k for k, (i, _) in enumerate(spec.neuron_layers())}
        driven = spec.driven_neurons()
        self.blocks: list[torch.Tensor] = []
        self.block_neuron: list[int | None] = []  # position (among neuron layers) of the layer each block drives
        for i, layer in spec.tensor_layers():  # synapses, recurrent synapses, batch-norm affine terms
            tensors = [n for n in (layer.weight, getattr(layer, "bias", None)) if n is not None and n in offset]
            if not tensors:
                continue
            self.blocks.append(torch.cat([torch.arange(offset[n][0], offset[n][0] + offset[n][1]) for n in tensors]))
            self.block_neuron.append(neuron_pos.get(driven[i]) if i in driven else None)
        self.block_sizes = [len(b) for b in self.blocks]
        self._layout_neurons(spec, offset, start, getattr(state.session.backend, "neuron_parameters", None))
        L = len(self.blocks)
        if self.layer_choice == "uniform" or L == 1:
            p = torch.full((L,), 1.0 / L)
        elif self.layer_choice == "output-half":
            p = torch.full((L,), 0.5 / (L - 1))
            p[-1] = 0.5
        else:
            p = torch.tensor(self.block_sizes, dtype=torch.float64)
            p = p.sqrt() if self.layer_choice == "sqrt-size" else p
            p = (p / p.sum()).float()
        self.layer_p = p

    def _layout_neurons(self, spec: Any, offset: dict[str, tuple[int, int]], dim: int,
                        held: dict[str, Any] | None = None) -> None:
        """The trained neuron tensors: their flat indices (``nblocks``), fields, which entries are
        positive (threshold, spike amplitude) and their steps; ``neuron_moves``: whether MH moves
        them (``neuron_share > 0``; otherwise they stay fixed). ``held``: the backend's
        ``neuron_parameters``; a field whose domain is a finite set of values (a domain with
        ``values()``, e.g. :class:`~cil_core.hardware.domains.ShiftDecay`) is moved over those values
        (``tables``: ``{tensor position: ascending held values}``), its step in index units."""
        self.nblocks: list[torch.Tensor] = []
        self.nfields: list[str] = []
        self._nparams: list[tuple[str, Any]] = []
        for _, _, p in spec.neuron_parameters():
            if p.name in offset and all(p.name != n for n, _ in self._nparams):
                s, k = offset[p.name]
                self.nblocks.append(torch.arange(s, s + k))
                self.nfields.append(p.field)
                self._nparams.append((p.name, p))
        self.neuron_moves = self.neuron_share > 0 and bool(self.nblocks)
        device = self.unit.device
        self.nidx = (torch.cat(self.nblocks) if self.nblocks else torch.zeros(0, dtype=torch.long)).to(device)
        self.weight_mask = torch.ones(dim, dtype=torch.bool, device=device)
        self.weight_mask[self.nidx] = False
        self.positive = torch.zeros(dim, dtype=torch.bool, device=device)
        entry_step, entry_max = torch.zeros(dim), torch.zeros(dim)
        #: the held values of every neuron tensor on a finite domain, and which tensor each entry belongs to
        self.tables: dict[int, torch.Tensor] = {}
        self.domains: dict[int, Any] = {}
        self.table_id = torch.full((dim,), -1, dtype=torch.long, device=device)
        steps0, caps = [], []
        for j, (blk, f) in enumerate(zip(self.nblocks, self.nfields)):
            self.positive[blk.to(device)] = f not in _UNIT_INTERVAL
            domain = getattr((held or {}).get(f), "domain", None)
            values = getattr(domain, "values", None)
            if callable(values):  # a finite domain: a walk over the indices of its values (module doc)
                self.tables[j] = torch.tensor(sorted(values()), dtype=torch.float64).to(device)
                self.domains[j] = domain
                self.table_id[blk.to(device)] = j
                step, cap = NEURON_INDEX_STEP, NEURON_INDEX_STEP_MAX
            else:
                step, cap = self.neuron_steps[f], NEURON_STEP_MAX[f]
            entry_step[blk], entry_max[blk] = step, cap
            steps0.append(step)
            caps.append(cap)
        #: the flat indices moved in the logarithm (thresholds and spike amplitudes not on a finite domain),
        #: under the Gaussian prior there unless neuron_prior_std=None, and its centres (_neuron_start)
        moved = self.positive & (self.table_id < 0) if self.neuron_moves else torch.zeros_like(self.positive)
        self.log_cols = moved.nonzero().reshape(-1)
        self.log_center = torch.zeros(len(self.log_cols), device=device)
        self.nstep0 = torch.tensor(steps0, dtype=torch.float32).to(device)
        self.nstep_max = torch.tensor(caps, dtype=torch.float32).to(device)
        self.entry_step, self.entry_max = entry_step[self.nidx.cpu()].to(device), entry_max[self.nidx.cpu()].to(device)

    def _neuron_start(self, state: TrainState, theta0: torch.Tensor) -> torch.Tensor:
        """``theta0`` with the moved neuron entries set to the values the layers use (the library's
        clamp applied); a value outside its valid range is refused (SpecError naming the tensor)."""
        if not self.neuron_moves:
            return theta0
        params = {k: v[0] for k, v in self._unflatten(theta0.unsqueeze(0)).items()}
        check_neuron_ranges(state.network.spec, params, where="MH cannot start from ")
        theta0 = theta0.clone()
        for j, (blk, (name, p)) in enumerate(zip(self.nblocks, self._nparams)):
            v = p.value(params[name]).reshape(-1)
            if p.field == "spike_amplitude" and bool((v <= 0).any()):
                raise SpecError(f"MH cannot start from the trained spike amplitude '{name}': it moves it in log space, "
                                f"which needs values > 0 (min {float(v.min()):.6g}); make the factor positive or pass "
                                "neuron_share=0 to keep the neuron parameters fixed")
            if j in self.tables:
                self._check_held_start(state, name, p.field, j, v)
            theta0[blk.to(theta0.device)] = v
        self.log_center = theta0[self.log_cols].clamp(min=torch.finfo(theta0.dtype).tiny).log()
        return theta0

    def _check_held_start(self, state: TrainState, name: str, field: str, j: int, v: torch.Tensor) -> None:
        """Refuse, before the first chip call, a start value of a neuron tensor on a finite domain that
        the backend does not hold (unless the backend rounds it: the domain's ``option``, e.g.
        ``round_decays=True``); the refusal names the nearest held values and the fix."""
        backend = state.session.backend
        domain = self.domains[j]
        if getattr(backend, getattr(domain, "option", "") or "", False) is True:
            return  # the chip runs the nearest held value (and says so); the moves then stay on the held values
        table = self.tables[j].to(torch.float64)
        x = v.detach().double().reshape(-1)
        off = (x - table[_nearest(x, table)]).abs() > 1e-6 * x.abs().clamp(min=1e-12)
        if not bool(off.any()):
            return
        where = f"MH moves the trained {field} '{name}' over the values the chip holds; its start"
        realise = getattr(domain, "realise", None)
        if callable(realise):  # the domain's own refusal: the nearest held values and the option that rounds
            realise(x, where=where, chip=state.session.name, mode="refuse")
        bad = float(x[off][0])
        raise BackendCapacityError(f"{state.session.name}: {where} {bad:.6g} is not one of them "
                                   f"({', '.join(f'{float(t):.6g}' for t in table)}): start from one of them, or pass "
                                   "neuron_share=0 to keep the neuron parameters fixed")

    def _neuron_move(self, cur: torch.Tensor, pick: torch.Tensor, step: torch.Tensor | float,
                     eps: torch.Tensor) -> torch.Tensor:
        """Proposed values of the neuron entries ``pick`` (flat indices) from ``cur``: reflected into
        [0, 1] (beta, alpha) or multiplied by :math:`e^{s\\epsilon}` (threshold, spike amplitude)."""
        x = cur + step * eps
        folded = torch.remainder(x, 2.0)
        folded = torch.where(folded > 1, 2.0 - folded, folded)
        fmax = torch.finfo(cur.dtype)
        scaled = (cur * torch.exp(step * eps)).clamp(fmax.tiny, fmax.max / 4)
        out = torch.where(self.positive[pick], scaled, folded)
        return self._held_move(out, cur, pick, step, eps) if self.tables else out

    def _held_move(self, out: torch.Tensor, cur: torch.Tensor, pick: torch.Tensor, step: torch.Tensor | float,
                   eps: torch.Tensor) -> torch.Tensor:
        """``out`` with the entries of ``pick`` that lie on a finite domain replaced by a move over the
        held values (module doc): from index :math:`i`,
        :math:`d = \\mathrm{sign}(\\epsilon)(1 + \\lfloor s|\\epsilon| \\rfloor)`,
        the index :math:`i + d` reflected into :math:`0..n-1` about :math:`-\\tfrac12` and :math:`n - \\tfrac12`."""
        tid = self.table_id[pick]
        offset = torch.sign(eps) * (1.0 + torch.floor(torch.as_tensor(step, dtype=eps.dtype) * eps.abs()))
        for j, table in self.tables.items():
            on = tid == j
            if not bool(on.any()):
                continue
            t = table.to(cur.dtype)
            n = len(t)
            i = _nearest(cur, t)  # the current value's index (the nearest held value)
            y = torch.remainder(i + offset.long(), 2 * n)  # reflected about -1/2 and n - 1/2 (module doc)
            out = torch.where(on, t[torch.where(y < n, y, 2 * n - 1 - y)], out)
        return out

    def _on_held_values(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` (``[S, D]``) with every entry on a finite domain replaced by its nearest held value
        (a posterior mean of held values need not be one); unchanged without such entries."""
        if not self.tables:
            return theta
        theta = theta.clone()
        for j, table in self.tables.items():
            cols = (self.table_id == j).nonzero().reshape(-1)
            t = table.to(theta.dtype)
            theta[:, cols] = t[_nearest(theta[:, cols], t)]
        return theta

    def _flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[S, D]`` → ``{name: [S, *shape]}``."""
        out, i = {}, 0
        for n, shape, k in zip(self.names, self.shapes, self.sizes):
            out[n] = theta[:, i : i + k].reshape(theta.shape[0], *shape)
            i += k
        return out

    # ------------------------------------------------------------ chip requests
    def _observe(self, state: TrainState, theta: torch.Tensor, x: Any, record: bool = False):
        """Output ``[T, S, B, *out]`` and per-layer spikes (a list, or ``None``) of every row of ``theta``."""
        S = theta.shape[0]
        if self.neuron_moves and self.batched and S > 1:
            groups = self._neuron_groups(theta)
            if len(groups) > 1:  # a chip holds one neuron value per call: one request per distinct value
                parts = [(rows, self._observe(state, theta[rows], x, record)) for rows in groups]
                out = torch.cat([o for _, (o, _) in parts], 1)
                order = torch.argsort(torch.cat([rows for rows, _ in parts]).to(out.device))
                layers = None
                if all(ls is not None for _, (_, ls) in parts):
                    layers = [torch.cat([ls[k] for _, (_, ls) in parts], 1)[:, order]
                              for k in range(len(parts[0][1][1]))]
                return out[:, order], layers
        params = self._unflatten(theta)
        if self.batched:
            obs = state.observe(params, x, n_sets=S, record=record)
            return obs.output, (None if obs.layers is None else [lo.spikes for lo in obs.layers])
        parts = [state.observe({k: v[s] for k, v in params.items()}, x, record=record) for s in range(S)]
        layers = None
        if record and all(p.layers is not None for p in parts):
            layers = [torch.stack([p.layers[k].spikes for p in parts], 1) for k in range(len(parts[0].layers))]
        return torch.stack([p.output for p in parts], 1), layers

    def _neuron_groups(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """The rows of ``theta`` grouped by their neuron parameter values (first occurrence order)."""
        _, inverse = torch.unique(theta[:, self.nidx], dim=0, return_inverse=True)
        firsts: dict[int, list[int]] = {}
        for r, gi in enumerate(inverse.tolist()):
            firsts.setdefault(gi, []).append(r)
        return [torch.tensor(rows, device=theta.device) for rows in firsts.values()]

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        """The Gaussian prior of the weights and the Gaussian prior in the logarithm of the moved
        thresholds and spike amplitudes (module doc), up to constants; β and α (flat on [0, 1]) and
        values on a finite domain (flat over the held values) add nothing."""
        z = theta / (self.prior_std * self.unit)
        if self.nblocks:
            z = torch.where(self.weight_mask, z, torch.zeros((), dtype=z.dtype, device=z.device))
        lp = -0.5 * (z ** 2).sum(-1)
        if self.neuron_prior_std is not None and self.nblocks and len(self.log_cols):
            zn = (theta[..., self.log_cols].clamp(min=torch.finfo(theta.dtype).tiny).log() - self.log_center) \
                / self.neuron_prior_std
            lp = lp - 0.5 * (zn ** 2).sum(-1)
        return lp

    def _choose_logit_scale(self, readout: Readout, out: torch.Tensor) -> None:
        """``logit_scale="auto"``: λ = min(1, κ / s) from the readout logits of ``out``
        (``[T, S, B, C]``, the chains' starting states), s their centred RMS spread (module doc)."""
        z = readout.logits(out).double()  # [S, B, C]
        spread = float((z - z.mean(-1, keepdim=True)).pow(2).mean().sqrt())
        self.logit_spread = spread
        lam = min(1.0, LOGIT_SPREAD / spread) if math.isfinite(spread) and spread > 0 else 1.0
        self.logit_scale = lam

    def likelihood_readout(self, readout: Readout) -> Readout:
        """The readout whose logits enter the likelihood: ``readout`` with its scale times λ
        (``logit_scale``; 1 until an ``"auto"`` scale is chosen)."""
        lam = 1.0 if self.logit_scale is None else self.logit_scale
        return readout if lam == 1.0 else dataclasses.replace(readout, scale=readout.scale * lam)

    def _score3(self, state: TrainState, theta: torch.Tensor, x: Any, y: torch.Tensor, calibrate_rows: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log posterior, log-likelihood and accuracy of every row of ``theta`` (``[S, D]``), measured
        on the backend. With ``calibrate_rows`` and no logit scale chosen yet, the first
        ``calibrate_rows`` rows' outputs choose it (``logit_scale="auto"``) before scoring."""
        out, _ = self._observe(state, theta, x)
        if calibrate_rows and self.logit_scale is None:
            self._choose_logit_scale(state.readout, out[:, :calibrate_rows])
        readout = self.likelihood_readout(state.readout)
        ce = readout.loss(out, y)  # [S]
        correct = readout.correct(out, y).float() / len(y)
        ll = torch.nan_to_num(-len(y) * ce / self.temperature, nan=-math.inf)
        lp = torch.nan_to_num(ll + self.log_prior(theta), nan=-math.inf)
        return lp, ll, correct

    def _score(self, state: TrainState, theta: torch.Tensor, x: Any, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log posterior and accuracy of every row of ``theta`` (``[S, D]``), measured on the backend."""
        lp, _, acc = self._score3(state, theta, x, y)
        return lp, acc

    def _rank(self, lp: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
        return ll if self.deploy_by == "likelihood" else lp

    # ------------------------------------------------------------ initialisation
    def _auto_gain(self, state: TrainState, theta0: torch.Tensor, train: SpikeData) -> float:
        """The candidate gain with the highest posterior measured on the chip (see the module doc)."""
        n = min(len(train), DEPLOY_SAMPLES)
        x, y = train.select(torch.arange(n))
        gains = torch.tensor(self.init_gains, dtype=theta0.dtype, device=theta0.device)
        with torch.no_grad():
            lp, _ = self._score(state, self._gained(gains[:, None], theta0), x, y)
        return float(gains[int(torch.argmax(lp))])  # ties: the smallest gain

    def _gained(self, gain: torch.Tensor | float, theta: torch.Tensor) -> torch.Tensor:
        """``gain * theta`` on the weights; the neuron parameters unchanged."""
        return gain * theta if not self.nblocks else torch.where(self.weight_mask, gain * theta, theta)

    @staticmethod
    def _pick_gain(gains: list[float], rates: torch.Tensor, target: float) -> int:
        err = (rates - target).abs()
        best = float(err.min())
        tied = [i for i in range(len(gains)) if float(err[i]) <= best + 1e-9]
        # a tie (e.g. every candidate silent, or every one saturated): move as far toward the target as possible
        return tied[-1] if float(rates[tied[0]]) < target else tied[0]

    def _calibrate(self, state: TrainState, theta0: torch.Tensor, train: SpikeData) -> torch.Tensor:
        """Per-layer gains, input to output (module doc); returns the calibrated weights."""
        n = min(len(train), CALIBRATION_SAMPLES)
        x, _ = train.select(torch.arange(n))
        spec = state.network.spec
        neurons = [layer for _, layer in spec.neuron_layers()]
        n_neuron = len(neurons)
        gains = list(self.init_gains)
        g = torch.tensor(gains, dtype=theta0.dtype, device=theta0.device)
        theta = theta0.clone()
        self.layer_gains, self.calibration_rates = [], []
        observes = state.session.observes_layers
        for blk, k in zip(self.blocks, self.block_neuron):
            if k is None or not isinstance(neurons[k], Neuron) or neurons[k].output != "spikes":
                self.layer_gains.append(1.0)
                self.calibration_rates.append(float("nan"))
                continue
            is_output = k == n_neuron - 1
            target = self.target_rates[1] if is_output else self.target_rates[0]
            cands = theta.unsqueeze(0).repeat(len(gains), 1)
            blk_d = blk.to(theta.device)
            cands[:, blk_d] = cands[:, blk_d] * g[:, None]
            with torch.no_grad():
                if is_output or observes:
                    out, layers = self._observe(state, cands, x, record=not is_output and observes)
                    spikes = out if is_output else (layers[k] if layers is not None else None)
                else:
                    spikes = None
                if spikes is None:  # the chip does not show this layer: the software model's activity
                    from ..network.executor import simulate

                    tr = simulate(spec, self._unflatten(cands), as_dense(x).to(theta.dtype), n_sets=len(gains),
                                  record=True)
                    spikes = tr.layers[k].spikes
            rates = spikes.float().transpose(0, 1).reshape(len(gains), -1).mean(1)
            i = self._pick_gain(gains, rates, target)
            theta[blk_d] = cands[i, blk_d]
            self.unit[blk_d] = self.unit[blk_d] * gains[i]
            self.layer_gains.append(gains[i])
            self.calibration_rates.append(float(rates[i]))
        return theta

    def batch_source(self, state: TrainState, stream: BatchStream) -> Any:
        """Full-data MH: the data's own batches; sequential test: its own minibatch draws
        (:class:`~cil_core.training.minibatch.MinibatchDraws`)."""
        if self.sequential is None:
            return stream
        if stream.batch_size is not None:
            raise OptionError(f"mh with likelihood='sequential' reads its own minibatches (option minibatch="
                              f"{self.sequential.minibatch}); leave fit's batch_size unset (got {stream.batch_size})")
        data = stream.in_memory if stream.in_memory is not None else stream
        self.draws = MinibatchDraws(data, self.sequential.minibatch, state.generator)
        return self.draws

    def setup(self, state: TrainState, train: SpikeData | BatchStream) -> None:
        if self.sequential is not None:
            if self.draws is None:  # setup called without the trainer
                self.draws = MinibatchDraws(train, self.sequential.minibatch, state.generator)
            train = self.draws  # type: ignore[assignment]  # len() and select(), read by index
        self._layout(state)
        theta0 = self._neuron_start(state, self._flatten(state.network.detached_parameters()))
        self.init_gain = 1.0
        self.layer_gains = [1.0] * len(self.blocks)
        self.calibration_rates: list[float] = []
        if self.init == "auto":
            self.init_gain = self._auto_gain(state, theta0, train)
            theta0 = self._gained(self.init_gain, theta0)
            self.unit = self.unit * self.init_gain
        elif self.init == "calibrate":
            theta0 = self._calibrate(state, theta0, train)
        C, L = self.chains, len(self.blocks)
        dev = theta0.device
        self.theta = theta0.unsqueeze(0).repeat(C, 1)
        self.logpost = torch.full((C,), -math.inf, device=dev)
        self.loglik = torch.full((C,), -math.inf, device=dev)
        self.acc = torch.zeros(C, device=dev)
        if self.proposal == "block":
            self.scale = torch.full((L,), self.step_size, device=dev)  # one step size per layer
            if self.neuron_moves:  # then one per trained neuron tensor
                self.scale = torch.cat([self.scale, self.nstep0.to(dev)])
                L = len(self.scale)
            self.window_accepts = torch.zeros(L, device=dev)
            self.window_props = torch.zeros(L, device=dev)
        else:
            self.scale = torch.full((C,), self.step_size, device=dev)  # one step size per chain
            self.window_accepts = torch.zeros(C, device=dev)
            self.window_props = torch.zeros(C, device=dev)
        self.total_accepts = 0
        self.total_proposals = 0
        self.de_accepts = 0
        self.de_proposals = 0
        self.n_steps = 0
        self.sum = torch.zeros_like(theta0)
        self.chain_sum = torch.zeros_like(self.theta)
        self.n_kept = 0
        # a fixed scoring set for choosing among posterior means at the end
        self._final_data = deploy_samples(train)
        self.best_theta = theta0.clone()
        self.best_logpost = -math.inf  # the best score by the deploy_by criterion
        self.scored = False
        self.n_train = len(train)
        self.trace: dict[str, list[float]] = {"log_posterior": [], "acceptance": [], "step_size": [],
                                              "logit_scale": []}
        self.logit_scale = None if self.logit_scale_option == "auto" else float(self.logit_scale_option)
        self.logit_spread = float("nan")

    # ------------------------------------------------------------ proposals
    def _propose_random_walk(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eps = torch.randn(self.theta.shape, generator=g).to(self.theta.device)
        prop = self.theta + self.scale[:, None] * self.unit * eps
        if self.nblocks:  # the neuron parameters: their own moves (module doc), or held fixed
            cur = self.theta[:, self.nidx]
            if self.neuron_moves:
                step = torch.minimum(self.entry_step[None, :] * (self.scale[:, None] / self.step_size), self.entry_max)
                cur = self._neuron_move(cur, self.nidx, step, eps[:, self.nidx])
            prop[:, self.nidx] = cur
        who = torch.arange(self.chains, device=self.theta.device)
        return prop, who, torch.zeros(self.chains, dtype=torch.bool, device=self.theta.device)

    def _propose_block(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block proposals; returns them, the layer each chain moved and which were DE moves."""
        C, L, dev = self.chains, len(self.blocks), self.theta.device
        layers = torch.multinomial(self.layer_p, C, replacement=True, generator=g) if L > 1 else torch.zeros(C, dtype=torch.long)
        if self.neuron_moves:  # with probability neuron_share a trained neuron tensor instead (index L + j)
            to_neuron = torch.rand(C, generator=g) < self.neuron_share
            which = torch.randint(len(self.nblocks), (C,), generator=g)
            layers = torch.where(to_neuron, L + which, layers)
        prop = self.theta.clone()
        de = torch.zeros(C, dtype=torch.bool)
        for c in range(C):
            ell = int(layers[c])
            if ell >= L:  # a neuron tensor: k of its entries, within their range; no DE move
                blk = self.nblocks[ell - L]
                k = min(self.block_size, len(blk))
                pick = blk[torch.randperm(len(blk), generator=g)[:k]].to(dev)
                eps = torch.randn(k, generator=g).to(dev)
                prop[c, pick] = self._neuron_move(prop[c, pick], pick, self.scale[ell], eps)
                continue
            blk = self.blocks[ell]
            k = min(self.block_size, len(blk))
            pick = blk[torch.randperm(len(blk), generator=g)[:k]].to(dev)
            eps = torch.randn(k, generator=g).to(dev)
            step = self.scale[ell] * self.unit[pick] * eps
            if self.de_fraction > 0 and float(torch.rand(1, generator=g)) < self.de_fraction:
                others = torch.randperm(C - 1, generator=g)[:2]
                a, b = [int(o) + (int(o) >= c) for o in others]
                gamma = 2.38 / math.sqrt(2 * k)
                step = gamma * (self.theta[a, pick] - self.theta[b, pick]) + 0.1 * step
                de[c] = True
            prop[c, pick] = prop[c, pick] + step
        return prop, layers.to(dev), de.to(dev)

    # ------------------------------------------------------------ the step
    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        if self.theta is None:
            raise CilError("MetropolisHastings.step called before setup")
        x, y = batch
        C = self.chains
        rescore = self.rescore
        if rescore == "auto":
            rescore = state.session.stochastic or len(y) != self.n_train
        g = state.generator
        n_like = len(y)  # the number of samples the log-likelihood counts
        if self.sequential is not None and (self.draws is None or batch is not self.draws.current):
            raise CilError("mh with likelihood='sequential' steps on the minibatches it draws itself "
                           "(Trainer.fit hands them over); this batch is not one of them")
        if self.proposal == "block":
            prop, moved, de = self._propose_block(g)
        else:
            prop, moved, de = self._propose_random_walk(g)
        if self.sequential is not None:
            d = self._decide_sequential(state, batch, prop, g)
            self.logpost, self.loglik, self.acc = d.lp_cur, d.ll_cur, d.acc_cur
            lp_prop, ll_prop, acc_prop, accept = d.lp_prop, d.ll_prop, d.acc_prop, d.accept
            self.scored, n_like = True, self.draws.n  # type: ignore[union-attr]
            self.trace.setdefault("samples_read", []).append(float(d.samples.float().mean()))
        else:
            with torch.no_grad():
                if rescore or not self.scored:
                    lp, ll, acc = self._score3(state, torch.cat([self.theta, prop]), x, y, calibrate_rows=C)
                    self.logpost, self.loglik, self.acc = lp[:C], ll[:C], acc[:C]
                    lp_prop, ll_prop, acc_prop = lp[C:], ll[C:], acc[C:]
                    self.scored = True
                else:
                    lp_prop, ll_prop, acc_prop = self._score3(state, prop, x, y)
            u = torch.rand(C, generator=g).to(prop.device)
            log_ratio = lp_prop - self.logpost
            accept = torch.log(u) < log_ratio
        with torch.no_grad():
            self.theta = torch.where(accept[:, None], prop, self.theta)
            self.logpost = torch.where(accept, lp_prop, self.logpost)
            self.loglik = torch.where(accept, ll_prop, self.loglik)
            self.acc = torch.where(accept, acc_prop, self.acc)
        self.n_steps += 1
        self.total_accepts += int(accept.sum())
        self.total_proposals += C
        self.de_accepts += int((accept & de).sum())
        self.de_proposals += int(de.sum())
        plain = (~de).float()
        self.window_props.index_add_(0, moved, plain)
        self.window_accepts.index_add_(0, moved, accept.float() * plain)

        self._keep_best(lp_prop, ll_prop, prop)

        if self.n_steps <= self.burn_in:
            if self.n_steps % self.adapt_every == 0:
                seen = self.window_props > 0
                rate = self.window_accepts / self.window_props.clamp(min=1)
                self.scale = torch.where(seen, self.scale * torch.exp(rate - self.target), self.scale)
                if self.neuron_moves and self.proposal == "block":  # a neuron step stays within its cap
                    L = len(self.blocks)
                    self.scale[L:] = torch.minimum(self.scale[L:], self.nstep_max.to(self.scale.device))
                self.window_accepts.zero_()
                self.window_props.zero_()
        elif (self.n_steps - self.burn_in) % self.thin == 0:
            self.sum += self.theta.sum(0)
            self.chain_sum += self.theta
            self.n_kept += C

        rate = self.total_accepts / self.total_proposals
        mean_lp = float(self.logpost.mean())
        self.trace["log_posterior"].append(mean_lp)
        self.trace["acceptance"].append(float(accept.float().mean()))
        self.trace["step_size"].append(float(self.scale.mean()))
        lam = 1.0 if self.logit_scale is None else self.logit_scale
        self.trace.setdefault("logit_scale", []).append(lam)
        metrics = {"hardware_accuracy": float(self.acc.mean()), "acceptance": rate,
                   "log_posterior": mean_lp, "step_size": float(self.scale.mean()), "logit_scale": lam}
        if self.sequential is not None:
            metrics["samples_read"] = self.trace["samples_read"][-1]
        return StepResult(loss=float(-self.logpost.mean()) / n_like * self.temperature, metrics=metrics)

    def _decide_sequential(self, state: TrainState, first: tuple[Any, torch.Tensor], prop: torch.Tensor,
                           g: torch.Generator) -> Decision:
        """Every chain's acceptance by the sequential test (:mod:`cil_core.training.minibatch`): the
        current states and proposals of the undecided chains scored together on each minibatch."""
        C = self.chains

        def score(rows: torch.Tensor, x: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, _ = self._observe(state, torch.cat([self.theta[rows], prop[rows]]), x)
            if self.logit_scale is None:
                self._choose_logit_scale(state.readout, out[:, :len(rows)])
            readout = self.likelihood_readout(state.readout)
            return readout.loss(out, y, reduction="none"), readout.correct(out, y)

        with torch.no_grad():
            return self.sequential.decide(  # type: ignore[union-attr]
                score, self.draws, first, self.log_prior(torch.cat([self.theta, prop])),  # type: ignore[arg-type]
                lambda: torch.log(torch.rand(C, generator=g).to(prop.device)), self.temperature)

    def _keep_best(self, lp_prop: torch.Tensor, ll_prop: torch.Tensor, prop: torch.Tensor) -> None:
        """Keep the best sample ever scored (this step's proposals and the current states, after
        the acceptance), by the ``deploy_by`` criterion."""
        rank_prop, rank_cur = self._rank(lp_prop, ll_prop), self._rank(self.logpost, self.loglik)
        i = int(torch.argmax(rank_prop))
        if float(rank_prop[i]) > self.best_logpost:
            self.best_logpost, self.best_theta = float(rank_prop[i]), prop[i].clone()
        j = int(torch.argmax(rank_cur))
        if float(rank_cur[j]) > self.best_logpost:
            self.best_logpost, self.best_theta = float(rank_cur[j]), self.theta[j].clone()

    # ------------------------------------------------------------ results
    @property
    def acceptance_rate(self) -> float:
        return self.total_accepts / max(1, self.total_proposals)

    def posterior_mean(self) -> torch.Tensor | None:
        return None if self.n_kept == 0 else self.sum / self.n_kept

    def chain_means(self) -> torch.Tensor | None:
        """Per-chain posterior means ``[C, D]`` (``None`` before the first kept sample)."""
        return None if self.n_kept == 0 else self.chain_sum / (self.n_kept / self.chains)

    def parameter_sets(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat weight vectors ``[S, D]`` (e.g. :meth:`chain_means`) as named tensors ``{name: [S, *shape]}``."""
        return self._unflatten(theta)

    def _choose_mean(self, state: TrainState) -> torch.Tensor:
        """The pooled mean or a chain's own mean, whichever scores best on the chip (``deploy_by``)."""
        pooled = self.posterior_mean()
        assert pooled is not None
        pooled = self._on_held_values(pooled.unsqueeze(0))[0]
        if self.chains == 1 or getattr(self, "_final_data", None) is None:
            return pooled
        cands = torch.cat([pooled.unsqueeze(0), self._on_held_values(self.chain_means())])
        x, y = self._final_data
        with torch.no_grad():
            lp, ll, acc = self._score3(state, cands, x, y)
        rank = self._deploy_rank(lp, ll, acc)
        self.deploy_scores = rank.tolist()
        return cands[int(torch.argmax(rank))]

    def _deploy_rank(self, lp: torch.Tensor, ll: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        """How the deployment candidates are ranked (``deploy_by``), from their scores on the chip."""
        return self._rank(lp, ll)

    def finish(self, state: TrainState) -> None:
        mean = self.posterior_mean()
        if mean is None and self.deploy == "mean":
            warnings.warn(f"MH kept no sample (the run ended within burn_in={self.burn_in} steps): the best sample "
                          "seen is deployed instead of the posterior mean; run more steps than burn_in",
                          RuntimeWarning, stacklevel=2)
        if self.deploy == "best" or mean is None:
            theta = self.best_theta
        else:
            theta = self._choose_mean(state)
        state.network.load_parameters({k: v[0] for k, v in self._unflatten(theta.unsqueeze(0)).items()})

    #: a checkpoint written before an option existed ran with these values (logit scale 1, full data,
    #: neuron parameters held fixed)
    _LEGACY = {"logit_scale": 1.0, "likelihood": "full", **dataclasses.asdict(SequentialTest()),
               "neuron_share": 0.0, "neuron_steps": None}

    @property
    def legacy_options(self) -> dict[str, Any]:  # type: ignore[override]
        """:attr:`_LEGACY`, and ``neuron_prior_std``: a checkpoint written before it existed had the flat
        prior in the logarithm (``None``) where thresholds or spike amplitudes moved; where none moves
        the option changes nothing, so such a checkpoint counts as recorded with this run's value."""
        moved = len(getattr(self, "log_cols", ())) > 0  # set by setup
        return {**self._LEGACY, "neuron_prior_std": None if moved else self.neuron_prior_std}

    _STATE = ("theta", "logpost", "loglik", "acc", "scale", "window_accepts", "window_props", "total_accepts",
              "total_proposals", "de_accepts", "de_proposals", "n_steps", "sum", "n_kept", "best_theta",
              "best_logpost", "scored", "n_train", "trace", "unit", "init_gain", "layer_gains",
              "calibration_rates", "chain_sum", "logit_scale", "logit_spread",
              "log_center")  # _final_data and the layout: rebuilt by setup

    def state_dict(self) -> dict[str, Any]:
        # index_steps: the neuron tensors whose step is in index units (a walk over a finite domain's
        # held values); their entries of ``scale`` mean nothing in value units
        return {**{k: getattr(self, k) for k in self._STATE}, "index_steps": sorted(self.tables)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        d = dict(d)
        saved = d.pop("index_steps", None)
        if self.neuron_moves and self.tables and saved != sorted(self.tables):
            fields = ", ".join(sorted({self.nfields[j] for j in self.tables}))
            if saved is None:
                raise CheckpointError(
                    f"this checkpoint was written before MH moved neuron fields the chip holds on a finite set of "
                    f"values ({fields}) as a walk over those values: its step sizes for them are in value units, "
                    "this MH's are in index units, so resuming would silently change the proposals; start a fresh "
                    "fit from the checkpoint's weights instead (load its 'weights' into the model, then fit with "
                    "init='network')")
            raise CheckpointError(f"this checkpoint's neuron tensors on a finite domain ({saved}) are not this run's "
                                  f"({sorted(self.tables)}): it was written for another chip")
        for k, v in d.items():
            setattr(self, k, v)


def deploy_samples(train: SpikeData) -> tuple[Any, torch.Tensor]:
    """The fixed scoring set that chooses among the deployment candidates: the first
    ``DEPLOY_SAMPLES`` samples of ``train``."""
    return train.select(torch.arange(min(len(train), DEPLOY_SAMPLES)))


def tensor_scales(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The flat tensor scales :math:`u` of ``params`` (module doc): each entry gets the standard deviation
    of its tensor's values (1/sqrt(fan-in) where that is 0 or undefined), in the order of ``params``."""
    units = []
    for p in params.values():
        u = float(p.float().std()) if p.numel() > 1 else 0.0
        if not math.isfinite(u) or u <= 0:
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else max(1, p.numel())
            u = 1.0 / math.sqrt(fan_in)
        units.append(torch.full((p.numel(),), u))
    return torch.cat(units)


def _sequential_test(likelihood: str, minibatch: int, epsilon: float, max_samples: int | None,
                     rescore: bool | str) -> SequentialTest | None:
    """The sequential test for ``likelihood="sequential"`` (its options checked), ``None`` for ``"full"``."""
    if likelihood not in ("full", "sequential"):
        raise OptionError(f"likelihood must be 'full' (every step on all the data) or 'sequential' (minibatches, "
                          f"Korattikara et al.'s test), not {likelihood!r}")
    test = SequentialTest(minibatch, epsilon, max_samples)  # checks the options either way
    if likelihood == "full":
        default = SequentialTest()
        given = [f"{k}={getattr(test, k)!r}" for k in ("minibatch", "epsilon", "max_samples")
                 if getattr(test, k) != getattr(default, k)]
        if given:
            raise OptionError(f"{', '.join(given)} apply to the minibatch likelihood only; add "
                              "likelihood='sequential' or drop them")
        return None
    if rescore is False:
        raise OptionError("likelihood='sequential' scores the current states with the proposals on the same samples "
                          "each step; rescore=False cannot be used with it")
    return test

