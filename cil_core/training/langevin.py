"""Gradient-informed Metropolis-Hastings: a Metropolis-adjusted Langevin (MALA) proposal driven by
the CIL-SPL proxy gradient (chip forward, software backward), accepted on the likelihood measured
on the chip.

The target is :mod:`cil_core.training.mh`'s posterior over the flattened weights :math:`\\theta`
(same likelihood, logit scale λ, temperature τ, prior and tensor scales :math:`u`):

.. math:: \\log p(\\theta\\mid D) = -\\frac{N}{\\tau}\\mathrm{CE}_{hw}(\\theta; D)
          - \\frac12\\sum_k\\Big(\\frac{\\theta_k}{\\sigma_p u_k}\\Big)^2 + \\text{const}.

**The proxy gradient.** Every parameter set the chip runs (a proposal, or a current state being
re-scored) is also run through the software model, and the chip's output is substituted
straight-through (:func:`~cil_core.hardware.transfer.straight_through`, as CIL-SPL does):

.. math:: \\hat y(\\theta) = f_{sw}(x;\\theta) + \\mathrm{sg}\\big[f_{hw}(x; T(\\theta)) - f_{sw}(x;\\theta)\\big],\\qquad
          g(\\theta) = \\nabla_\\theta\\Big[-\\frac{N}{\\tau}\\mathrm{CE}(\\lambda\\,z(\\hat y), y)\\Big]
          - \\frac{\\theta}{\\sigma_p^2 u^2},

the gradient of the chip's log posterior as the software model sees it (surrogate spike
derivative). The log posterior itself is taken from the chip's output alone, exactly as MH
scores it. One chip request per step carries all proposals (and, on a noisy chip, the current
states): the same chip calls as MH, plus one request for the starting states at the first step
(their gradients are needed before the first proposal).

**Block Langevin proposal.** Each chain, each step, draws a layer :math:`\\ell` (``layer_choice``,
as MH) and, with probability :math:`\\pi_\\ell` (the layer's Langevin share), makes a Langevin move
on :math:`k = \\min(\\text{langevin\\_block\\_size}, D_\\ell)` distinct entries :math:`B` of it
(default: the whole layer, weights and bias), with the preconditioner :math:`M = \\mathrm{diag}(u^2)`
and step :math:`h_\\ell` (in tensor scales):

.. math:: \\theta'_B = \\mu_B(\\theta) + h_\\ell u_B\\,\\epsilon,\\quad
          \\mu_B(\\theta) = \\theta_B + \\tfrac12 h_\\ell^2 u_B^2\\, \\beta_\\ell\\, g_B(\\theta),\\quad \\epsilon\\sim\\mathcal N(0, I_k),

the other entries unchanged; otherwise (probability :math:`1-\\pi_\\ell`) it is MH's symmetric
block move on :math:`\\min(\\text{block\\_size}, D_\\ell)` entries, :math:`\\theta'_B = \\theta_B + s_\\ell u_B \\epsilon`.
The layer, the kind of move and the entries are drawn independently of :math:`\\theta`, so the
reverse move picks the same block with the same probability and only the Gaussian densities on
:math:`B` enter the acceptance:

.. math:: \\log\\alpha = \\log p(\\theta'\\mid D) - \\log p(\\theta\\mid D) + \\log q(\\theta_B\\mid\\theta') - \\log q(\\theta'_B\\mid\\theta),

.. math:: \\log q(a_B\\mid b) = -\\sum_{i\\in B}\\Big[\\frac{(a_i - \\mu_i(b))^2}{2\\sigma_i(b)^2} + \\log\\sigma_i(b)\\Big] + \\text{const},

with :math:`(\\mu(b), \\sigma(b)) = (\\mu_B(b), h_\\ell u_B)` for a Langevin move from :math:`b`.
The reverse density needs :math:`g(\\theta')`: the proposal's own chip forward and software
backward, done in the request that scores it.

**Calibrating the proxy against the chip** (:math:`\\beta_\\ell`). The surrogate gradient
over-states how fast the chip's log posterior changes (measured on the benchmark net: about 3x,
correlation 0.9 over small random moves), and a Langevin drift built on it is mostly rejected.
Every random-walk move :math:`\\Delta` of the burn-in gives a pair (the chip's change
:math:`\\log p(\\theta') - \\log p(\\theta)`, the proxy's prediction
:math:`\\tfrac12(g(\\theta)+g(\\theta'))\\cdot\\Delta`); every ``adapt_every`` steps
:math:`\\beta_\\ell` is their least-squares slope through 0, clipped to :math:`[0, 1]` (the sums
halve at every update, so recent moves weigh most), frozen after burn-in. A proxy that points the
wrong way gets :math:`\\beta_\\ell = 0`: the Langevin move is then a Gaussian random walk.

**Guided burn-in** (``exact_burn_in=False``, the default). Burn-in states are discarded and the
tuning parameters change during it anyway, so during burn-in a Langevin move is a chip-checked,
RMS-normalised gradient step (RMSprop's direction, with noise of relative size ν, ``guided_noise``, default 1):

.. math:: \\theta'_B = \\theta_B + \\eta_\\ell u_B\\Big(\\frac{u_B g_B(\\theta)}{\\sqrt{v_B}} + \\nu\\,\\epsilon\\Big),\\qquad
          v \\leftarrow 0.9\\,v + 0.1\\,(u\\odot g(\\theta))^2 \\text{ per chain and step},

accepted with :math:`\\min(1, p(\\theta'|D)/p(\\theta|D))` *without* the proposal-density terms
(so during burn-in the chains climb the chip's posterior; they are not yet a reversible chain).
Why: with the exact ratio, the Langevin step that keeps moves accepted is small (the chip's
likelihood is a step function of the weights: spike counts); in tuning runs (62-16-2, chip 0,
strength 0, 200 steps from a random init) exact moves in burn-in reached 80.7–89.5 % over six
settings of block size, target and shares, guided burn-in 94.7 %. After burn-in every
Langevin move is the exact MALA move above. ``exact_burn_in=True`` uses exact MALA moves in
burn-in too.

With ``guided_batch`` = m (< N), a guided move (and the RMS state v) uses a minibatch estimate of
the proxy gradient instead of :math:`g`, on m samples :math:`M_t` drawn afresh at every step and
the chip's output of the current state already measured (no chip call):

.. math:: \hat g(\theta) = \nabla_\theta\Big[-\frac{N}{\tau m}\sum_{i\in M_t}\mathrm{CE}(\lambda\,z(\hat y_i), y_i)\Big]
          - \frac{\theta}{\sigma_p^2 u^2}

(SGD's gradient noise in the climb). The acceptance, β's calibration pairs, the stored gradient and
every kept step use the whole set's :math:`g`, so the chain after burn-in is unchanged. Measured on
the analog chip (``benchmarks/mala_analog.py --mala guided_batch=64``, docs/results.md) it did not
raise the test accuracy, so it is off by default.

**Fallback** (documented, and part of the proposal density, so the chain stays exact on a
deterministic chip):

* *useless gradient*: if :math:`g_B(b)` holds a NaN/inf or is all zero (a silent layer: the
  surrogate gradient vanishes), the Langevin kernel at :math:`b` is the block random walk,
  :math:`(\\mu, \\sigma) = (b_B, s_\\ell u_B)`. The rule depends only on :math:`b` and :math:`B`, so
  the reverse density applies it at :math:`\\theta'` (a move from a usable gradient to an
  unusable one is scored with a Langevin forward and a random-walk reverse density);
* *acceptance collapse*: during burn-in, every ``adapt_every`` steps, the Langevin share of a
  layer whose Langevin moves were accepted with mean probability below ``collapse_acceptance``
  in the window, or gained the chains less log posterior per move than its random-walk moves
  (the mean over moves of the accepted change of :math:`\\log p`), is halved, down to
  ``min_share``; otherwise it doubles, up to ``1 - min_share`` (both kinds stay measured). Where
  the proxy gradient points the wrong way (a strongly distorting chip) the sampler thus becomes
  MH's block sampler.

**Adaptation.** The Langevin step adapts every step, per layer with Langevin moves in that step:
:math:`\\log h_\\ell \\leftarrow \\log h_\\ell + \\gamma_t(\\bar\\alpha_\\ell - a^*_L)`, with
:math:`\\bar\\alpha_\\ell` the mean acceptance probability of those moves, :math:`a^*_L` =
``langevin_target`` and :math:`\\gamma_t` = ``adapt_rate`` during burn-in, ``adapt_rate``
:math:`/\\sqrt{t}` at the t-th step after it (**diminishing adaptation**, Roberts & Rosenthal 2007:
the adaptation vanishes, so the chain keeps the posterior as its limit). During a guided burn-in
the same rule adapts :math:`\\eta_\\ell` instead (start 0.1, ``GUIDED_STEP``), and :math:`h_\\ell`
starts after burn-in at :math:`\\min(s_\\ell, 1/\\mathrm{rms}(\\beta_\\ell u_\\ell g_\\ell))` over the
chains' gradients (the drift comparable with the noise; ``langevin_step`` sets both starts).
The random-walk steps :math:`s_\\ell`, the shares :math:`\\pi_\\ell` and :math:`\\beta_\\ell` adapt every
``adapt_every`` steps during burn-in and are **frozen** after it (:math:`s_\\ell` as MH's, toward
``target_acceptance``). After burn-in the chain is therefore a fixed mixture of two kernels, each
with its own exact acceptance, with a Langevin step whose adaptation diminishes.

**Restart at the best state** (``restart_at_best=True``, the default). At the end of burn-in
(before the first kept step) every chain :math:`c` is set to the state of the chain ranked best by
the ``deploy_by`` criterion on the training data (its log-likelihood, or log posterior),

.. math:: \theta_c \leftarrow \theta_{c^*},\qquad c^* = \arg\max_c \log p(D\mid\theta_c)

(on held-out samples instead with ``holdout``, below)

with its score, proxy gradient and RMS state; no chip call. The kept chains then start in one
mode, so the pooled posterior mean :math:`W^*` is an average within a mode (chains that ended
burn-in in different modes, e.g. permuted hidden units, or a chain stuck at a silent output,
would otherwise enter it), and a chain that burn-in left behind does not spend the kept steps
catching up. The starting point of a Markov chain does not change its target, so every kept
step is still the exact kernel above. Measured (``benchmarks/mala_analog.py`` setup, 5 chips):
the pooled mean's chip accuracy at strengths 1.5 / 2 rose from 84.9 / 83.7 % to 92.3 / 90.1 %;
the deployed accuracy (the best of the pooled and per-chain means) moved by −0.2 … +0.2 points
at strengths 0 … 2 (noise level); with 1 % of the data (4 samples, strength 2) it fell from 78.7
to 71.6 %: with so few samples the chain with the best training likelihood is a poor start.

On a noisy chip (or with minibatches) the current states are re-scored with the proposals
(Monte-Carlo-within-Metropolis, as MH): their log posterior *and* gradient are refreshed; the
proposal's forward density uses the gradient the move was drawn with.

**Minibatch guided burn-in** (``burn_in_minibatch=m``; default ``None``: every step on all the
data it is given). Each *guided* burn-in step draws a fresh random subset :math:`D_t` of
:math:`m` of the step's :math:`N` samples (from the trainer's generator, so a resumed fit draws the
same subsets) and scores the proposals **and re-scores the current states** on it, in the step's
one chip request, with the likelihood scaled to the whole set:

.. math:: \log\hat p_t(\theta\mid D) = -\frac{N}{\tau}\,\frac1m\sum_{i\in D_t}\mathrm{CE}_{hw}(\theta; x_i, y_i)
          + \log p(\theta),

its proxy gradient likewise (the software backward on :math:`D_t`). The guided acceptance compares
:math:`\log\hat p_t(\theta')` with :math:`\log\hat p_t(\theta)` on common samples, so the noise of the
subset largely cancels in the difference; the chains still climb, now at :math:`m/N` of the chip's
sample-inferences per step. This is an estimate, not the chip's posterior: a guided burn-in is not a
reversible chain anyway (above) and its states are discarded, so no exactness claim changes. The
restart at the best chain ranks the chains on the last burn-in step's common subset. After burn-in
the exact MALA moves score on all the data: the first of them re-scores the current states (their
burn-in scores were subset estimates) in the request that scores its proposals, and the best sample
kept for ``deploy="best"`` is chosen again from whole-data scores. A run that ends within burn-in
deploys the best subset-scored sample (MH's warning). ``m >= N`` reads every sample (in a random
order). It applies to guided burn-in only (``exact_burn_in=False``) and needs ``burn_in >= 1``.

**Whole-network guided moves** (``guided_block="network"``; default ``"layer"``). A guided burn-in
Langevin move then moves every synaptic layer at once (each layer :math:`\ell` with its own
:math:`\eta_\ell`, a layer whose gradient is useless by its random walk :math:`s_\ell u`), so a chain
takes one RMS-normalised gradient step on the whole network per chip request, as CIL-SPL's optimiser
does, instead of one layer's. The move is drawn when the drawn layer's share says Langevin (its
window statistics are kept on that layer); every layer's :math:`\eta_\ell` adapts on its acceptance.
Burn-in only (guided moves carry no proposal density); the exact moves after burn-in stay per layer.

**Software warm start** (``warm_start=k``; default 0). Before the first chip call the algorithm
trains the user's network (as given: its random init) in software, as the ``offline`` algorithm
does (:class:`~cil_core.training.gradient.Offline`: BPTT with surrogate gradients, Adam, learning
rate ``warm_lr``, gradient norm clipped at ``warm_grad_clip`` if given, ``warm_steps`` minibatches
of ``warm_batch`` samples drawn from the training samples the chains fit, from the trainer's
generator), **no chip call**, and starts the first k
chains there, :math:`\theta_c^{(0)} = W_{sw}` for :math:`c < k`; the other chains start at the
``init`` state (calibrated random init) and the network goes back to the user's weights. Each
chain has its own tensor scales :math:`u_c` (steps, prior): the warm chains' are computed from
:math:`W_{sw}` as MH computes them from its start, the others are the ``init`` state's (the
calibrated init's scales can be far too small for the trained weights), and a restart copies the
chosen chain's scales with its state. The user supplies
no trained weights: the software training is part of the method (its cost is CPU time, not chip
calls). Which start wins is left to the chip: ``restart_at_best`` and the deployment choose among
the chains — on held-out samples with ``holdout`` (below), since a start that fits the training
set better on the chip need not generalise better.

With ``warm_moves="block"`` the warm chains make only MH's symmetric block moves during burn-in (the
Langevin share is 0 for them; their moves enter the random-walk windows and β's calibration as any
block move), so they explore around the software solution as MH started there does, while the
other chains climb with guided moves; after burn-in every chain makes the moves above.

**Keep the software start unless the chip refutes it** (``warm_prefer=z``; default 0: off). With
warm and randomly started chains, the restart at the end of burn-in ranks the chains as above but
lands on the best warm chain :math:`w` unless the best chain :math:`c^*` is not warm and its chip
accuracy on the :math:`n` samples it was scored on beats the warm chain's by more than z standard
errors of the difference (taken as independent):

.. math:: a_{c^*} - a_w > z\,\sqrt{\big(a_{c^*}(1-a_{c^*}) + a_w(1-a_w)\big)/n}.

The software-trained start is the prior favourite (it generalises as offline training does); the
chip must show that it no longer classifies as well (strong distortion) before the chains leave
it. When the restart lands on a warm chain, the warm chains go on as they are and only the others
restart, at the warm chains in rank order (round robin): the kept chains are independent MH chains
from the software start, as MH started from offline weights (restarting every chain at the single
best one fits the training set and cost 0.4–0.7 points of test accuracy at strengths 0 / 0.5 in
the measurement below). With ``warm_moves="mh"`` a chain keeps MH's block moves after a restart at
a warm chain, so where the software start holds the method *is* MH from it, and where the chip
refutes it, it is the gradient-informed sampler above from its best chain. ``warm_moves="auto"``
chooses ``"mala"`` with a minibatch guided burn-in (``burn_in_minibatch``) and ``"mh"`` otherwise: a
block move accepted on a random subset's score is often accepted on the subset's noise rather than
on merit and drifts away from the software start (on the Speck-style re-creation,
``benchmarks/cil_spl_speck.py`` (h), 3 seeds: 90.0 % chip accuracy with ``"mh"`` against 96.7 % with
the guided moves), while a guided move still follows the gradient. Measured on the analog chip
(``benchmarks/mala_analog.py --algorithms mala --no-fractions``, its recommended options
``warm_start=4 warm_moves=auto warm_prefer=2``, "auto" being "mh" there; chips 0–4):
95.4 / 95.4 / 95.5 / 93.2 / 90.9 % at strengths 0 / 0.5 / 1 / 1.5 / 2;
with every chain restarted at the best warm chain instead 94.9 / 95.0 / 95.7 / 93.3 / 91.4.

**Held-out selection** (``holdout=f``; default 0: every choice on the training samples the chains
fit). At setup a class-stratified random share f of the training samples (round(f·n_c) of each
class c, from the trainer's generator) is set aside: the chains' likelihood, their gradients, the
warm start and the logit-scale calibration see only the other samples :math:`D_{fit}`; the held-out
samples :math:`D_{ho}` enter nothing but two choices:

* the restart at the end of burn-in ranks the chains by the held-out score,
  :math:`c^* = \arg\max_c s_{ho}(\theta_c)`, :math:`s_{ho}` the log-likelihood
  :math:`-\frac{1}{\tau}\sum_{i\in D_{ho}}\mathrm{CE}_{hw}(\theta; x_i, y_i)` (``holdout_by="likelihood"``)
  or the accuracy on :math:`D_{ho}` with the log-likelihood breaking ties (``"accuracy"``). The
  held-out samples ride in the last burn-in step's chip request (the current states are re-scored
  in it, with the proposals): more sample-inferences, **no extra chip call**;
* the deployment (``deploy="mean"``) scores its candidates (the pooled and per-chain means) on
  :math:`D_{ho}` instead of the first training samples, in the request it makes anyway.

With ``holdout_rejoin=True`` the held-out samples serve the restart only: from the first kept step on
they join the likelihood (every kept step fits all N samples; the current states are re-scored on
them in that step's request, the best sample and the deployment are chosen on the training samples
as without ``holdout``). The chain's target from there on is the whole-data posterior; the one step
at the join draws its Langevin moves with the gradient on the fitted samples (as a noisy chip's
re-scoring does, the forward density uses the gradient the move was drawn with).

Measured (``benchmarks/mala_analog.py --algorithms mala --no-fractions --mala warm_start=4 holdout=0.2``,
5 chips, docs/results.md): 95.4 / 95.2 / 94.6 / 90.3 / 91.7 % at strengths 0 / 0.5 / 1 / 1.5 / 2
against the defaults' 95.1 / 95.2 / 93.8 / 92.4 / 91.5 — within the noise of a 5-chip mean; with 80
held-out samples one sample is 1.25 points, coarser than the 0.5–1 point differences between the
starts it is to tell apart, and the restart mostly chose a randomly started chain. So both are off by
default.

A split is made only when it leaves at least ``HOLDOUT_MIN`` (10) samples held out and at least as
many to fit; below that (e.g. 1 % of the benchmark's 398 samples: 4) ``holdout`` does nothing and
every choice is on the training samples (``n_holdout`` = 0 says so). The held-out indices are part
of the checkpoint. With ``holdout`` the fit must take the whole set per step (no ``batch_size``).

Initialisation, deployment, logit scale and the chip-call layout are MH's
(:class:`~cil_core.training.mh.MetropolisHastings`, which this class extends).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..data import EventBatch, SpikeData, as_dense, stratified_indices
from ..errors import CilError, OptionError
from ..hardware.transfer import straight_through
from ..network.executor import simulate
from .algorithm import StepResult, TrainState
from .gradient import Offline
from .mh import MetropolisHastings, deploy_samples, tensor_scales

#: decay of the running mean square of u·g that normalises a guided burn-in move (RMSprop's)
RMS_DECAY = 0.9
#: the first guided step η, in tensor scales (adapted from the first step on)
GUIDED_STEP = 0.1
#: ``holdout`` splits the training set only if at least this many samples are held out and left to fit
HOLDOUT_MIN = 10


def recommended_options(chains: int = 8) -> dict[str, Any]:
    """The options README recommends for ``mala`` on a chip of unknown distortion (module doc:
    ``warm_prefer``), over its defaults: half the ``chains`` warm-started in software,
    ``warm_moves="auto"``, ``warm_prefer=2``."""
    return {"warm_start": chains // 2, "warm_moves": "auto", "warm_prefer": 2.0}


def _block_log_density(a: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_i -(a_i-\\mu_i)^2/(2\\sigma_i^2) - \\log\\sigma_i` (the Gaussian log density
    without its :math:`-\\frac k2\\log 2\\pi`, which cancels in the ratio)."""
    return (-0.5 * ((a - mu) / sd) ** 2 - torch.log(sd)).sum()


class Langevin(MetropolisHastings):
    """Gradient-informed MH: block Langevin (MALA) proposals on the CIL-SPL proxy gradient,
    accepted on the chip's likelihood (equations in :mod:`cil_core.training.langevin`).
    Recommended options: ``warm_start=chains//2, warm_moves="auto", warm_prefer=2``
    (:func:`recommended_options`; the defaults start no chain from software training).

    Options (besides MH's ``chains``, ``block_size``, ``layer_choice``, ``step_size``,
    ``target_acceptance`` (for the random-walk moves), ``burn_in``, ``thin``, ``prior_std``,
    ``temperature``, ``adapt_every``, ``deploy``, ``deploy_by``, ``rescore``, ``batched``,
    ``init``, ``init_gains``, ``target_rates``, ``logit_scale``; ``block_size`` is the random-walk
    moves'): ``langevin_block_size`` (entries moved by a Langevin move; ``None``: the whole layer),
    ``exact_burn_in`` (``False``: guided gradient moves during burn-in, without the proposal
    densities; ``True``: exact MALA moves from the first step), ``langevin_step`` (the first
    Langevin step h, and guided step η, in tensor scales; ``None``: chosen from the gradients),
    ``langevin_target`` (the acceptance the Langevin step adapts toward), ``langevin_share`` (the
    starting share of Langevin moves per layer; the rest are MH's block random-walk moves),
    ``min_share`` (the floor, and 1 − the cap, of a layer's Langevin share during burn-in),
    ``collapse_acceptance`` (a layer whose Langevin moves are accepted below this in a window
    halves its share), ``adapt_rate`` (γ, the gain of the per-step Langevin step adaptation),
    ``neuron_share`` (must stay 0: trained neuron parameters are held fixed; ``mh`` moves them),
    ``restart_at_best`` (``True``: at the end of burn-in every chain restarts at the best chain's
    state, so the kept samples explore one mode; ``False``: the chains go on where they are),
    ``guided_batch`` (the guided burn-in moves follow a minibatch estimate of the proxy gradient on
    this many training samples, drawn afresh every step, the chip's output already measured; ``None``:
    the whole training set's gradient; acceptance, calibration and the kept steps use the whole set).
    ``burn_in_minibatch`` (not with ``guided_batch``; ``None``: every step on all the data; ``m``: each guided burn-in step
    scores its proposals and the current states on a fresh random subset of m samples, the
    likelihood scaled to N; module doc), ``guided_block`` (``"layer"``: a guided burn-in move moves
    one layer; ``"network"``: every layer at once; module doc), ``guided_noise`` (ν, the noise of a
    guided burn-in move in units of its step η: 1 = as much noise as drift, 0 = a plain RMS-normalised
    gradient step checked on the chip).
    ``warm_start`` (chains that start from the network trained in software first, Adam on the
    training samples, no chip call; 0: none; module doc), ``warm_steps`` (the software training's
    minibatch steps), ``warm_lr`` (its Adam learning rate), ``warm_batch`` (its minibatch size),
    ``warm_grad_clip`` (its gradient's largest global norm; ``None``: no clipping),
    ``holdout`` (the share of the training samples set aside, class-stratified, that the chains never
    fit; the restart at the end of burn-in and the deployment choose on them; 0: none; no split below
    10 held-out samples; module doc), ``holdout_by`` (``"likelihood"`` or ``"accuracy"``: the held-out
    score that ranks the chains and the deployment candidates), ``holdout_rejoin`` (``True``: the
    held-out samples choose the restart only and join the likelihood for the kept steps; module doc),
    ``warm_moves`` (``"mala"``: the warm-started chains move as the others; ``"block"``: during burn-in
    they make MH's block random-walk moves only, as MH from the software-trained weights would;
    ``"mh"``: they make only those moves for the whole run, and a chain restarted at a warm chain
    moves as one; ``"auto"``: ``"mh"``, or ``"mala"`` with ``burn_in_minibatch``), ``warm_prefer``
    (z ≥ 0: the restart at the end of burn-in keeps the software start unless another chain's chip
    accuracy beats the best warm chain's by more than z standard errors; 0: the plain best chain;
    module doc).

    Chip requests per fit: MH's, plus one request of ``chains`` sets at the first step (the
    starting states' gradients). Each scored set also costs one software forward and backward.
    """

    name = "mala"

    def __init__(self, chains: int = 8, langevin_block_size: int | None = None, exact_burn_in: bool = False,
                 langevin_step: float | None = None,
                 langevin_target: float = 0.3, langevin_share: float = 0.75, min_share: float = 0.1,
                 collapse_acceptance: float = 0.05, adapt_rate: float = 0.3, neuron_share: float = 0.0,
                 restart_at_best: bool = True, guided_batch: int | None = None,
                 burn_in_minibatch: int | None = None, guided_block: str = "layer", guided_noise: float = 1.0,
                 warm_start: int = 0, warm_steps: int = 200, warm_lr: float = 0.01, warm_batch: int = 64,
                 holdout: float = 0.0, holdout_by: str = "likelihood", holdout_rejoin: bool = False,
                 warm_moves: str = "mala", warm_prefer: float = 0.0, warm_grad_clip: float | None = None,
                 **kw: Any) -> None:
        if kw.get("proposal", "block") != "block":
            raise OptionError("mala's moves are block moves; proposal must be 'block' (drop the option)")
        if kw.get("de_fraction", 0.0):
            raise OptionError("mala does not take de_fraction (differential-evolution moves): use 'mh' for them")
        if kw.get("likelihood", "full") != "full":
            raise OptionError("mala scores every proposal on the whole training set: likelihood must be 'full' "
                              "(the minibatch sequential test is mh's)")
        if neuron_share:
            raise OptionError("mala moves the synaptic weights only: neuron_share must be 0 (trained neuron "
                              "parameters stay fixed; 'mh' moves them)")
        if not isinstance(restart_at_best, bool):
            raise OptionError(f"restart_at_best must be True or False, not {restart_at_best!r}")
        if guided_batch is not None and (isinstance(guided_batch, bool) or not isinstance(guided_batch, int)
                                         or guided_batch < 1):
            raise OptionError(f"guided_batch must be an integer >= 1 or None (the whole training set), "
                              f"not {guided_batch!r}")
        if langevin_step is not None and not (math.isfinite(langevin_step) and langevin_step > 0):
            raise OptionError(f"langevin_step must be a positive number or None, not {langevin_step!r}")
        if langevin_block_size is not None and langevin_block_size < 1:
            raise OptionError(f"langevin_block_size must be >= 1 or None (the whole layer), not {langevin_block_size!r}")
        if not 0 < langevin_target < 1:
            raise OptionError(f"langevin_target must lie in (0, 1), not {langevin_target!r}")
        if not 0 <= min_share < 0.5:
            raise OptionError(f"min_share must lie in [0, 0.5), not {min_share!r}")
        if not 0 <= langevin_share <= 1:
            raise OptionError(f"langevin_share must lie in [0, 1], not {langevin_share!r}")
        if not 0 <= collapse_acceptance < 1:
            raise OptionError(f"collapse_acceptance must lie in [0, 1), not {collapse_acceptance!r}")
        if not (math.isfinite(adapt_rate) and adapt_rate >= 0):
            raise OptionError(f"adapt_rate must be a number >= 0, not {adapt_rate!r}")
        if burn_in_minibatch is not None and guided_batch is not None:
            raise OptionError("burn_in_minibatch (score each guided burn-in step on a subset) and guided_batch (a "
                              "minibatch gradient from whole-data scores) are two ways to cut a guided step's cost: "
                              "choose one")
        if burn_in_minibatch is not None:
            if isinstance(burn_in_minibatch, bool) or not isinstance(burn_in_minibatch, int) or burn_in_minibatch < 1:
                raise OptionError(f"burn_in_minibatch must be a whole number >= 1 (samples per guided burn-in step) or "
                                  f"None (all the data), not {burn_in_minibatch!r}")
            if exact_burn_in:
                raise OptionError("burn_in_minibatch applies to the guided burn-in; with exact_burn_in=True every "
                                  "move is an exact MALA move on all the data: drop one of the two options")
            if kw.get("burn_in", 0) < 1:
                raise OptionError(f"burn_in_minibatch={burn_in_minibatch} applies to burn-in steps, but burn_in="
                                  f"{kw.get('burn_in', 0)}: set burn_in >= 1 or drop burn_in_minibatch")
            if kw.get("rescore", "auto") is False:
                raise OptionError("burn_in_minibatch re-scores the current states on each step's subset; "
                                  "rescore=False cannot be used with it")
        if not (math.isfinite(guided_noise) and guided_noise >= 0):
            raise OptionError(f"guided_noise must be a number >= 0, not {guided_noise!r}")
        if guided_block not in ("layer", "network"):
            raise OptionError(f"guided_block must be 'layer' or 'network', not {guided_block!r}")
        if guided_block == "network" and exact_burn_in:
            raise OptionError("guided_block='network' applies to the guided burn-in; with exact_burn_in=True there "
                              "is none (exact moves are per layer): drop one of the two options")
        for name, v in (("warm_start", warm_start), ("warm_steps", warm_steps), ("warm_batch", warm_batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warm_start" else 1):
                raise OptionError(f"{name} must be a whole number >= {0 if name == 'warm_start' else 1}, not {v!r}")
        if warm_start > chains:
            raise OptionError(f"warm_start={warm_start} chains start from the software-trained weights, but there are "
                              f"only chains={chains}: set warm_start <= chains")
        if not (math.isfinite(warm_lr) and warm_lr > 0):
            raise OptionError(f"warm_lr must be a positive number, not {warm_lr!r}")
        if warm_grad_clip is not None and not (math.isfinite(warm_grad_clip) and warm_grad_clip > 0):
            raise OptionError(f"warm_grad_clip must be a positive number (the gradient's largest global norm) or None, "
                              f"not {warm_grad_clip!r}")
        if not (math.isfinite(holdout) and 0 <= holdout < 1):
            raise OptionError(f"holdout must lie in [0, 1) (the share of the training samples set aside), "
                              f"not {holdout!r}")
        if holdout_by not in ("likelihood", "accuracy"):
            raise OptionError(f"holdout_by must be 'likelihood' or 'accuracy', not {holdout_by!r}")
        if warm_moves not in ("mala", "block", "mh", "auto"):
            raise OptionError(f"warm_moves must be 'mala', 'block', 'mh' or 'auto', not {warm_moves!r}")
        if warm_moves != "mala" and not warm_start:
            raise OptionError(f"warm_moves={warm_moves!r} sets how the warm-started chains move, but warm_start=0: "
                              f"set warm_start >= 1 or drop warm_moves")
        if isinstance(warm_prefer, bool) or not isinstance(warm_prefer, (int, float)) \
                or not (math.isfinite(warm_prefer) and warm_prefer >= 0):
            raise OptionError(f"warm_prefer must be a number >= 0 (standard errors), not {warm_prefer!r}")
        if warm_prefer and not (0 < warm_start < chains and restart_at_best and kw.get("burn_in", 200) >= 1):
            raise OptionError(f"warm_prefer={warm_prefer} keeps the restart at the end of burn-in on a warm-started "
                              f"chain unless another chain is clearly better: it needs 0 < warm_start < chains "
                              f"(warm_start={warm_start}, chains={chains}), restart_at_best=True and burn_in >= 1")
        if holdout_rejoin and not (holdout and restart_at_best and kw.get("burn_in", 200) >= 1):
            raise OptionError("holdout_rejoin=True lets the held-out samples join the likelihood after the restart at "
                              "the end of burn-in: it needs holdout > 0, restart_at_best=True and burn_in >= 1")
        super().__init__(chains=chains, neuron_share=0.0, **kw)
        self.langevin_block_size, self.exact_burn_in = langevin_block_size, bool(exact_burn_in)
        self.restart_at_best, self.guided_batch = restart_at_best, guided_batch
        self.burn_in_minibatch, self.guided_block = burn_in_minibatch, guided_block
        self.guided_noise = float(guided_noise)
        self.warm_start, self.warm_steps, self.warm_batch = warm_start, warm_steps, warm_batch
        self.warm_lr, self.holdout, self.holdout_by = float(warm_lr), float(holdout), holdout_by
        self.holdout_rejoin, self.warm_moves = bool(holdout_rejoin), warm_moves
        self.warm_prefer = float(warm_prefer)
        #: how the warm chains move: warm_moves, with "auto" resolved (module doc)
        self._warm_kind = warm_moves if warm_moves != "auto" else ("mala" if burn_in_minibatch is not None else "mh")
        self.warm_grad_clip = None if warm_grad_clip is None else float(warm_grad_clip)

        self.langevin_step, self.langevin_target = langevin_step, float(langevin_target)
        self.langevin_share, self.min_share = float(langevin_share), float(min_share)
        self.collapse_acceptance, self.adapt_rate = float(collapse_acceptance), float(adapt_rate)

    # ------------------------------------------------------------ set-up
    def batch_source(self, state: TrainState, stream: Any) -> Any:
        """With ``holdout``: every step on the samples the chains fit (the split is made in
        :meth:`setup`); the whole set per step is required."""
        src = super().batch_source(state, stream)
        if not self.holdout:
            return src
        if stream.batch_size is not None:
            raise OptionError(f"mala with holdout={self.holdout} scores every step on all the samples it fits; leave "
                              f"fit's batch_size unset (got {stream.batch_size})")
        return _FitSamples(self, src)

    def _split(self, train: Any, g: torch.Generator) -> None:
        """The held-out split (module doc): ``holdout_index`` (``None``: no split) and the two parts."""
        self.holdout_index = None
        if self.holdout and isinstance(train, SpikeData):
            held = stratified_indices(train.y.cpu(), self.holdout, g)
            if HOLDOUT_MIN <= len(held) <= len(train) - HOLDOUT_MIN:
                self.holdout_index = held
        self._apply_split(train)

    def _apply_split(self, train: Any) -> None:
        """The samples the chains fit and the held-out ones, from ``holdout_index``."""
        self._all = train
        self._held: tuple[Any, torch.Tensor] | None = None
        self._fit = train
        if self.holdout_index is not None:
            keep = torch.ones(len(train), dtype=torch.bool)
            keep[self.holdout_index] = False
            self._fit = train.subset(keep.nonzero().reshape(-1))
            self._held = train.select(self.holdout_index)
        self.n_holdout = 0 if self._held is None else len(self._held[1])

    def _warm_theta(self, state: TrainState, train: Any) -> torch.Tensor:
        """``warm_start`` (module doc): the user's network trained in software (the ``offline``
        algorithm's Adam steps on minibatches of ``train``; no chip call), flattened; the network
        is left holding the weights it came with."""
        net = state.network
        before = {k: v.detach().clone() for k, v in net.detached_parameters().items()}
        soft = Offline(lr=self.warm_lr, grad_clip=self.warm_grad_clip)
        soft.setup(state, train)
        done, bs = 0, min(self.warm_batch, len(train))
        while done < self.warm_steps:
            for batch in train.batches(bs, shuffle=True, generator=state.generator):
                soft.step(state, batch)
                done += 1
                if done == self.warm_steps:
                    break
        theta = self._flatten(net.detached_parameters()).detach().clone()
        with torch.no_grad():
            net.load_parameters(before)
        return theta

    def setup(self, state: TrainState, train: Any) -> None:
        self._split(train, state.generator)
        super().setup(state, self._fit)
        self.rejoined = False  # whether the held-out samples have joined the likelihood (holdout_rejoin)
        self._choose_final_data()
        self.cunit = self.unit.expand(self.chains, -1).clone()  # per-chain tensor scales (module doc)
        if self.warm_start:
            warm = self._warm_theta(state, self._fit).to(self.theta)
            self.theta[:self.warm_start] = warm
            self.cunit[:self.warm_start] = tensor_scales({k: v[0] for k, v in self._unflatten(warm[None]).items()}
                                                         ).to(self.cunit)
            if self.warm_start == self.chains:
                self.unit = self.cunit[0].clone()
        self.held_score = torch.full((self.chains, 2), -math.inf, device=self.theta.device)  # (accuracy, log-lik)
        self.restart_chain = -1  # the chain the restart chose (restart_at_best; -1: not yet; module doc)
        self.warm = torch.arange(self.chains) < self.warm_start  # which chains hold a warm start (a restart copies it)
        C, L, dev = self.chains, len(self.blocks), self.theta.device
        self.grad = torch.zeros_like(self.theta)
        self.h = torch.full((L,), math.nan, device=dev)  # Langevin steps, set at the first step
        self.eta = torch.full((L,), math.nan, device=dev)  # guided burn-in steps, set at the first step
        self.v = torch.zeros_like(self.theta)  # per chain: running mean square of u·g (guided moves)
        self.share = torch.full((L,), self.langevin_share, device=dev)
        # Langevin window (per layer): proposals, summed acceptance probability, summed α·jump²
        self.lw_props = torch.zeros(L, device=dev)
        self.lw_alpha = torch.zeros(L, device=dev)
        self.lw_jump = torch.zeros(L, device=dev)
        self.rw_jump = torch.zeros(L, device=dev)  # random-walk α·jump², window (counts: MH's window_props)
        self.beta = torch.ones(L, device=dev)  # the proxy gradient's calibration against the chip (module doc)
        self.beta_xy = torch.zeros(L, device=dev)
        self.beta_xx = torch.zeros(L, device=dev)
        self.langevin_proposals = 0
        self.langevin_accepts = 0
        self.fallback_proposals = 0
        self._guided_step = False
        self.out_cur: torch.Tensor | None = None  # the chip's output of the current states (guided_batch)
        self._scored_out: torch.Tensor | None = None
        self.subset_scores = False  # whether the current states' scores are subset estimates (burn_in_minibatch)
        self.trace.update({"langevin_share": [], "langevin_step": [], "guided_step": []})

    # ------------------------------------------------------------ chip forward, software backward
    def _score_grad(self, state: TrainState, theta: torch.Tensor, x: Any, y: torch.Tensor, calibrate_rows: int = 0,
                    n_like: int | None = None, held: tuple[Any, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log posterior, log-likelihood and accuracy of every row of ``theta`` (``[S, D]``) measured
        on the chip (as :meth:`_score3`), and the proxy gradient of the log posterior ``[S, D]``:
        the software model's backward through the chip's output (module doc). ``n_like``: the
        number of samples the log-likelihood counts (``None``: ``len(y)``; N for a subset estimate).
        ``held``: held-out samples run in the same request; their scores (``[S, 2]``: accuracy,
        log-likelihood) go to ``_held_scores`` and nothing else (module doc: held-out selection)."""
        if held is None:
            out, _ = self._observe(state, theta, x)
        else:
            out, _ = self._observe(state, theta, _join(x, held[0]))
            out, out_held = out[:, :, :len(y)], out[:, :, len(y):]
        if calibrate_rows and self.logit_scale is None:
            self._choose_logit_scale(state.readout, out[:, :calibrate_rows])
        readout = self.likelihood_readout(state.readout)
        n = len(y) if n_like is None else n_like
        with torch.no_grad():
            ce = readout.loss(out, y)
            correct = readout.correct(out, y).float() / len(y)
            ll = torch.nan_to_num(-n * ce / self.temperature, nan=-math.inf)
            lp = torch.nan_to_num(ll + self.log_prior(theta), nan=-math.inf)
            if held is not None:
                self._held_scores = self._held_score(readout, out_held, held[1])
        self._scored_out = out
        return lp, ll, correct, self._proxy_grad(state, theta, out, as_dense(x), y, n)

    def _held_score(self, readout: Any, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[S, 2]``: the held-out accuracy and log-likelihood of every set from its chip output."""
        ll = torch.nan_to_num(-len(y) * readout.loss(out, y) / self.temperature, nan=-math.inf)
        return torch.stack([readout.correct(out, y).float() / len(y), ll], 1)

    def _held_rank(self, acc: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
        """A ranking (for argmax) by the held-out score (``holdout_by``): the log-likelihood, or the
        accuracy with the log-likelihood breaking ties."""
        if self.holdout_by == "likelihood":
            return ll
        top = acc == acc.max()
        return torch.where(top, torch.nan_to_num(ll, nan=-1e30, neginf=-1e30), torch.full_like(ll, -math.inf))

    def _deploy_rank(self, lp: torch.Tensor, ll: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_held", None) is not None and not self.rejoined:  # scored on the held-out samples
            return self._held_rank(acc, ll) if self.holdout_by == "accuracy" else self._rank(lp, ll)
        return super()._deploy_rank(lp, ll, acc)

    def _held_step(self) -> bool:
        """Whether this step's request also scores the held-out samples: the last burn-in step, when the
        restart that follows chooses on them."""
        return (getattr(self, "_held", None) is not None and self.restart_at_best and self.burn_in > 0
                and self.n_steps == self.burn_in - 1)

    def _proxy_grad(self, state: TrainState, theta: torch.Tensor, out: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor, n: int) -> torch.Tensor:
        """The proxy gradient ``[S, D]`` of the log posterior of every row of ``theta`` from the chip's
        output ``out`` on the samples ``x`` (time-major), ``y``: the software model's backward through
        the chip's output, the mean cross entropy over these samples counted ``n`` times (``n = len(y)``:
        the module doc's :math:`g`; fewer samples: a minibatch estimate of it)."""
        readout = self.likelihood_readout(state.readout)
        S = theta.shape[0]
        th = theta.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            sw = simulate(state.network.spec, self._unflatten(th), x.to(th.dtype), n_sets=S, validate=False).output
            surrogate = -n * readout.loss(straight_through(sw, out), y) / self.temperature  # [S]
            (g,) = torch.autograd.grad(surrogate.sum(), th)
        prior = theta / (self.prior_std * self._units(theta.shape[0])) ** 2
        if self.nblocks:  # the neuron parameters' priors are flat (MH's log_prior); mala does not move them
            prior = torch.where(self.weight_mask, prior, torch.zeros((), dtype=prior.dtype, device=prior.device))
        return (g - prior).detach()

    # ------------------------------------------------------------ proposals
    @staticmethod
    def _usable(g: torch.Tensor) -> bool:
        return bool(torch.isfinite(g).all()) and bool((g != 0).any())

    def _minibatch_drift(self, n: int) -> bool:
        """Whether the guided burn-in moves are drawn with a minibatch gradient (``guided_batch``)."""
        return not self.exact_burn_in and self.guided_batch is not None and self.guided_batch < n

    def _guided(self) -> bool:
        """Whether this step's Langevin moves are burn-in guided moves (no proposal-density terms)."""
        return not self.exact_burn_in and self.n_steps < self.burn_in

    def _network_kernel(self, theta: torch.Tensor, g: torch.Tensor, v: torch.Tensor, u: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """A guided whole-network move from one chain's state (``guided_block="network"``): the
        entries (every layer's), their mean and std, and whether any layer moved along its gradient."""
        picks, mus, sds, any_lang = [], [], [], False
        for ell, blk in enumerate(self.blocks):
            pick = blk.to(theta.device)
            mu, sd, lang = self._kernel(ell, theta[pick], g[pick], u[pick], True, v[pick])
            picks.append(pick), mus.append(mu), sds.append(sd)
            any_lang = any_lang or lang
        return torch.cat(picks), torch.cat(mus), torch.cat(sds), any_lang

    def _on_subset(self) -> bool:
        """Whether this step scores on a random subset (``burn_in_minibatch``, guided burn-in steps)."""
        return self.burn_in_minibatch is not None and self._guided()

    def _kernel(self, ell: int, theta_b: torch.Tensor, g_b: torch.Tensor, u_b: torch.Tensor, langevin: bool,
                v_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Mean and std of the proposal on a block from a state (``theta_b``, gradient ``g_b``), and
        whether it is a Langevin move (False: a random-walk move, chosen or as the fallback).
        ``v_b``: the chain's running mean square of u·g on the block (guided burn-in moves)."""
        if langevin and self._usable(g_b):
            if self._guided():
                eta = self.eta[ell]
                d = u_b * g_b / torch.sqrt(v_b).clamp(min=1e-12)
                return theta_b + eta * u_b * d, self.guided_noise * eta * u_b, True
            h = self.h[ell]
            return theta_b + 0.5 * h * h * u_b * u_b * (self.beta[ell] * g_b), h * u_b, True
        return theta_b, self.scale[ell] * u_b, False

    # ------------------------------------------------------------ the step
    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        if self.theta is None:
            raise CilError("Langevin.step called before setup")
        x, y = batch
        C, L, dev = self.chains, len(self.blocks), self.theta.device
        rescore = self.rescore
        if rescore == "auto":
            rescore = state.session.stochastic or len(y) != self.n_train
        g = state.generator
        n_like = len(y)  # the samples the log-likelihood counts (a subset's estimate is scaled to them)
        subset = self._on_subset()
        if subset:  # a fresh random subset of the step's samples (module doc: minibatch guided burn-in)
            x, y = SpikeData(x, y).select(torch.randperm(n_like, generator=g)[:self.burn_in_minibatch])
        fresh = False
        if not self.scored:  # the starting states' gradients are needed before the first proposal
            self.logpost, self.loglik, self.acc, self.grad = self._score_grad(state, self.theta, x, y, calibrate_rows=C,
                                                                              n_like=n_like)
            self.scored = fresh = True
            self.v = (self.cunit * self.grad).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) ** 2
            self._first_steps()
            self.out_cur = self._scored_out if self._minibatch_drift(len(y)) else None
        drift = None  # the gradient the Langevin moves of this step are drawn with (None: self.grad)
        if self._guided():
            if self._minibatch_drift(len(y)):  # a minibatch estimate, from the chip output already measured
                assert self.out_cur is not None
                idx = torch.randperm(len(y), generator=g)[:self.guided_batch].to(y.device)
                drift = self._proxy_grad(state, self.theta, self.out_cur[:, :, idx],
                                         as_dense(x)[:, idx], y[idx], len(y))
            ug = (self.cunit * (self.grad if drift is None else drift)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
            self.v = RMS_DECAY * self.v + (1 - RMS_DECAY) * ug * ug
        else:
            self.out_cur = None  # only guided moves draw on it
            if not self.exact_burn_in and self.n_steps == self.burn_in:
                self._first_steps(exact_only=True)  # the exact Langevin moves start here
        if subset or self.subset_scores:  # current scores from another subset: re-score them on this step's data
            rescore = not fresh
        if self.holdout_rejoin and self._held is not None and not self.rejoined and self.n_steps >= self.burn_in:
            self._rejoin(len(y))  # from here on every sample counts (module doc); the current states are re-scored
            rescore = True
        if self.restart_at_best and self.n_steps == self.burn_in and self.burn_in > 0:
            self._restart_at_best(min(self.burn_in_minibatch or n_like, n_like))
        if drift is None:
            drift = self.grad

        layers = torch.multinomial(self.layer_p, C, replacement=True, generator=g) if L > 1 else torch.zeros(C, dtype=torch.long)
        prop = self.theta.clone()
        picks, eps_all, wants = [], [], []
        whole = torch.zeros(C, dtype=torch.bool)  # guided whole-network moves (guided_block="network")
        for c in range(C):
            ell = int(layers[c])
            blk = self.blocks[ell]
            want = float(torch.rand(1, generator=g)) < float(self.share[ell])
            if self.warm[c] and (self._warm_kind == "mh" or (self._warm_kind == "block" and self.n_steps < self.burn_in)):
                want = False  # a warm chain: MH's block moves only (warm_moves="block": in burn-in; "mh": always)
            if want and self.guided_block == "network" and self._guided():
                pick, mu, sd, _ = self._network_kernel(self.theta[c], drift[c], self.v[c], self.cunit[c])
                eps = torch.randn(len(pick), generator=g).to(dev)
                prop[c, pick] = mu + sd * eps
                picks.append(pick), eps_all.append(eps), wants.append(want)
                whole[c] = True
                continue
            k = self.block_size if not want else (self.langevin_block_size or len(blk))
            k = min(k, len(blk))
            pick = blk[torch.randperm(len(blk), generator=g)[:k]].to(dev)
            eps = torch.randn(k, generator=g).to(dev)
            mu, sd, _ = self._kernel(ell, self.theta[c, pick], drift[c, pick], self.cunit[c, pick], want,
                                     self.v[c, pick])
            prop[c, pick] = mu + sd * eps
            picks.append(pick), eps_all.append(eps), wants.append(want)

        held = self._held if self._held_step() else None  # the held-out samples ride in this request
        with torch.no_grad():
            if rescore or held is not None:
                lp, ll, acc, gr = self._score_grad(state, torch.cat([self.theta, prop]), x, y, n_like=n_like,
                                                   held=held)
                cur = (lp[:C], ll[:C], acc[:C], gr[:C])
                lp_prop, ll_prop, acc_prop, g_prop = lp[C:], ll[C:], acc[C:], gr[C:]
                out_cur, out_prop = self._scored_out[:, :C], self._scored_out[:, C:]
                if not rescore:  # the current states were run for their held-out scores only
                    cur, out_cur = (self.logpost, self.loglik, self.acc, self.grad), self.out_cur
            else:
                cur = (self.logpost, self.loglik, self.acc, self.grad)
                lp_prop, ll_prop, acc_prop, g_prop = self._score_grad(state, prop, x, y, n_like=n_like)
                out_cur, out_prop = self.out_cur, self._scored_out

            log_ratio = lp_prop - cur[0]
            langevin = torch.zeros(C, dtype=torch.bool)
            for c in range(C):
                ell, pick, want = int(layers[c]), picks[c], wants[c]
                u_b = self.cunit[c, pick]
                if whole[c]:  # a guided whole-network move: no proposal density (guided burn-in only)
                    langevin[c] = self._network_kernel(self.theta[c], drift[c], self.v[c], self.cunit[c])[3]
                    if not langevin[c]:
                        self.fallback_proposals += 1
                    continue
                mu_f, sd_f, lang_f = self._kernel(ell, self.theta[c, pick], drift[c, pick], u_b, want,
                                                  self.v[c, pick])
                langevin[c] = lang_f
                if want and not lang_f:
                    self.fallback_proposals += 1
                if self._guided():  # a guided burn-in move: no proposal-density terms (module doc)
                    continue
                mu_r, sd_r, lang_r = self._kernel(ell, prop[c, pick], g_prop[c, pick], u_b, want)
                if lang_f or lang_r:  # a random-walk move both ways is symmetric: its densities cancel
                    log_ratio[c] = log_ratio[c] + _block_log_density(self.theta[c, pick], mu_r, sd_r) \
                        - _block_log_density(prop[c, pick], mu_f, sd_f)
            u = torch.rand(C, generator=g).to(dev)
            log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
            accept = torch.log(u) < log_ratio
            #: the last step's proposals, log acceptance ratios and blocks (diagnostics; not checkpointed)
            self.last_proposal, self.last_log_ratio, self.last_blocks = prop, log_ratio.clone(), picks
            alpha = torch.exp(log_ratio.clamp(max=0.0))
            # the proxy's prediction of each move's change of log posterior (trapezoid) against the chip's
            pred = torch.stack([(0.5 * (self.grad[c, picks[c]] + g_prop[c, picks[c]]) * (prop[c, picks[c]] - self.theta[c, picks[c]])).sum()
                                for c in range(C)])
            actual = lp_prop - cur[0]
            ok = torch.isfinite(actual) & torch.isfinite(pred)
            calib = ok & ~torch.tensor(wants, dtype=torch.bool, device=dev)  # random-walk moves: random directions
            if self.n_steps < self.burn_in:
                self.beta_xy.index_add_(0, layers.to(dev)[calib], (actual * pred)[calib])
                self.beta_xx.index_add_(0, layers.to(dev)[calib], (pred * pred)[calib])
            gain = torch.where(accept & ok, actual, torch.zeros_like(actual))  # what the move gained the chain
            self.logpost, self.loglik, self.acc, self.grad = cur
            a2 = accept[:, None]
            self.theta = torch.where(a2, prop, self.theta)
            self.grad = torch.where(a2, g_prop, self.grad)
            self.logpost = torch.where(accept, lp_prop, self.logpost)
            self.loglik = torch.where(accept, ll_prop, self.loglik)
            self.acc = torch.where(accept, acc_prop, self.acc)
            if held is not None:
                hs = self._held_scores
                self.held_score = torch.where(accept[:, None], hs[C:], hs[:C])
            if self.out_cur is not None:
                self.out_cur = torch.where(accept.to(out_prop.device)[None, :, None, None], out_prop, out_cur)

        self._guided_step = self._guided()
        self.n_steps += 1
        self.total_accepts += int(accept.sum())
        self.total_proposals += C
        lang = langevin.to(dev)
        moved = layers.to(dev)
        self.langevin_proposals += int(lang.sum())
        self.langevin_accepts += int((accept & lang).sum())
        rw = (~lang).float()
        self.window_props.index_add_(0, moved, rw)
        self.window_accepts.index_add_(0, moved, accept.float() * rw)
        self.rw_jump.index_add_(0, moved, gain * rw)
        lf = lang.float()
        self.lw_props.index_add_(0, moved, lf)
        self.lw_alpha.index_add_(0, moved, alpha * lf)
        self.lw_jump.index_add_(0, moved, gain * lf)

        if self.subset_scores and not subset:  # the first whole-data scores: the best sample is chosen on them
            self.best_logpost = -math.inf
        self.subset_scores = subset
        self._keep_best(lp_prop, ll_prop, prop)
        self._adapt_steps(moved, lang, alpha, whole.to(dev))
        if self.n_steps <= self.burn_in:
            self._adapt()
        elif (self.n_steps - self.burn_in) % self.thin == 0:
            self.sum += self.theta.sum(0)
            self.chain_sum += self.theta
            self.n_kept += C
        return self._report(accept, n_like)

    def _units(self, rows: int) -> torch.Tensor:
        """The tensor scales of ``rows`` parameter sets: the chains' own (``[rows, D]``) when the rows are
        chain-ordered blocks of the chains' states (current states, proposals), else the shared ``unit``."""
        cunit = getattr(self, "cunit", None)
        if cunit is None or rows % self.chains:
            return self.unit
        return cunit.repeat(rows // self.chains, 1)

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        """MH's Gaussian prior with each chain's own tensor scales (a warm-started chain's, module doc)."""
        z = theta / (self.prior_std * self._units(theta.shape[0]))
        if self.nblocks:
            z = torch.where(self.weight_mask, z, torch.zeros((), dtype=z.dtype, device=z.device))
        return -0.5 * (z ** 2).sum(-1)

    def _rejoin(self, n: int) -> None:
        """``holdout_rejoin``: the held-out samples join the likelihood (the step's batch is now every
        sample); the deployment candidates and the best sample are chosen on the training samples."""
        if n != len(self._all):
            raise CilError(f"mala with holdout_rejoin expected all {len(self._all)} training samples after burn-in, "
                           f"got a batch of {n}")
        self.rejoined, self.n_train, self.best_logpost = True, n, -math.inf
        self._choose_final_data()

    def _choose_final_data(self) -> None:
        """Where the deployment candidates are scored: on the held-out samples while they stay out
        (module doc), on the first training samples once they have joined (as MH); without a split,
        MH's choice made in setup stands."""
        if self.rejoined:
            self._final_data = deploy_samples(self._all)
        elif self._held is not None:
            self._final_data = self._held

    def _restart_at_best(self, n_scored: int) -> None:
        """End of burn-in (module doc): every chain restarts at the chain state ranked best by the
        ``deploy_by`` criterion, with its score, gradient and RMS state (no chip call); with
        ``warm_prefer`` at the best warm-started chain unless the best is clearly better (module doc).
        ``n_scored``: the training samples the chains' accuracies were measured on."""
        held = getattr(self, "_held", None) is not None  # chosen on the held-out samples (module doc)
        rank = (self._held_rank(self.held_score[:, 0], self.held_score[:, 1]) if held
                else self._rank(self.logpost, self.loglik))
        i = int(torch.argmax(rank))
        warm_rank = torch.where(self.warm.to(rank.device), rank, torch.full_like(rank, -math.inf))
        if self.warm_prefer and not bool(self.warm[i]) and bool(self.warm.any()):
            w = int(torch.argmax(warm_rank))
            acc = self.held_score[:, 0] if held else self.acc
            if not _clearly_better(float(acc[i]), float(acc[w]), self.n_holdout if held else n_scored,
                                   self.warm_prefer):
                i = w
        self.restart_chain = i
        self.unit = self.cunit[i].clone()
        src = torch.full((self.chains,), i, dtype=torch.long)  # the chain each chain restarts at
        if self.warm_prefer and bool(self.warm[i]):  # the warm chains go on; the others restart at them
            order = torch.argsort(warm_rank, descending=True, stable=True)[:int(self.warm.sum())].cpu()
            src = torch.arange(self.chains)
            cold = (~self.warm).nonzero().flatten()
            src[cold] = order[torch.arange(len(cold)) % len(order)]
        self.warm = self.warm[src].clone()
        for name in ("theta", "grad", "v", "logpost", "loglik", "acc", "held_score", "cunit"):
            t = getattr(self, name)
            setattr(self, name, t[src.to(t.device)].clone())

    def _first_steps(self, exact_only: bool = False) -> None:
        """The first steps (module doc): h_ℓ = min(s_ℓ, 1 / rms(β_ℓ u g)) over the layer's entries and
        the chains (``langevin_step`` if given); η_ℓ = ``langevin_step`` or ``GUIDED_STEP``."""
        dev = self.theta.device
        for ell, blk in enumerate(self.blocks):
            if not exact_only:
                self.eta[ell] = GUIDED_STEP if self.langevin_step is None else self.langevin_step
            if self.langevin_step is not None:
                self.h[ell] = self.langevin_step
                continue
            ug = float(self.beta[ell]) * self.cunit[:, blk.to(dev)] * self.grad[:, blk.to(dev)]
            ug = ug[torch.isfinite(ug)]
            rms = float(ug.pow(2).mean().sqrt()) if ug.numel() else 0.0
            self.h[ell] = min(float(self.scale[ell]), 1.0 / rms) if rms > 0 else float(self.scale[ell])

    def _adapt_steps(self, moved: torch.Tensor, lang: torch.Tensor, alpha: torch.Tensor,
                     whole: torch.Tensor | None = None) -> None:
        """Every step: log step += γ_t (mean α of the layer's Langevin moves − ``langevin_target``), the
        guided step η during a guided burn-in, else h with γ_t = γ during burn-in and γ/√(t − burn_in)
        after it (diminishing adaptation). ``whole``: the chains whose move was a whole-network move
        (it counts for every layer)."""
        L = len(self.blocks)
        if whole is not None and bool(whole.any()):
            credit = torch.nn.functional.one_hot(moved, L).to(alpha.dtype)  # [C, L]: the layers each move counts for
            credit[whole] = 1.0
            n = (credit * lang.float()[:, None]).sum(0)
            s = (credit * (alpha * lang.float())[:, None]).sum(0)
        else:
            n = torch.zeros(L, device=alpha.device).index_add_(0, moved, lang.float())
            s = torch.zeros(L, device=alpha.device).index_add_(0, moved, alpha * lang.float())
        seen = n > 0
        after = self.n_steps - self.burn_in  # steps done after burn-in (this one included)
        gamma = self.adapt_rate if after <= 0 else self.adapt_rate / math.sqrt(after)
        factor = torch.exp(gamma * (s / n.clamp(min=1) - self.langevin_target))
        if self._guided_step:
            self.eta = torch.where(seen, self.eta * factor, self.eta)
        else:
            self.h = torch.where(seen, self.h * factor, self.h)

    def _adapt(self) -> None:
        """Burn-in only, every ``adapt_every`` steps: the random-walk steps, the shares and β (module doc)."""
        L = len(self.blocks)
        if self.n_steps % self.adapt_every:
            return
        rw_n = self.window_props
        for ell in range(L):
            ln, rn = float(self.lw_props[ell]), float(rw_n[ell])
            if ln == 0:
                if rn > 0:  # no Langevin move measured in the window: try Langevin moves again
                    self.share[ell] = min(1 - self.min_share, max(float(self.share[ell]), self.min_share) * 2)
                continue
            a_l = float(self.lw_alpha[ell]) / ln
            worse = a_l < self.collapse_acceptance or (
                rn > 0 and float(self.lw_jump[ell]) / ln < float(self.rw_jump[ell]) / rn)
            share = float(self.share[ell]) * (0.5 if worse else 2.0)
            self.share[ell] = min(1 - self.min_share, max(self.min_share, share))
        seen = self.window_props > 0
        rate = self.window_accepts / self.window_props.clamp(min=1)
        self.scale = torch.where(seen, self.scale * torch.exp(rate - self.target), self.scale)
        has = self.beta_xx > 0
        self.beta = torch.where(has, (self.beta_xy / self.beta_xx.clamp(min=1e-30)).clamp(0.0, 1.0), self.beta)
        self.beta_xy.mul_(0.5)
        self.beta_xx.mul_(0.5)
        for t in (self.window_accepts, self.window_props, self.lw_props, self.lw_alpha, self.lw_jump, self.rw_jump):
            t.zero_()

    def _report(self, accept: torch.Tensor, n: int) -> StepResult:
        rate = self.total_accepts / self.total_proposals
        mean_lp = float(self.logpost.mean())
        lam = 1.0 if self.logit_scale is None else self.logit_scale
        self.trace["log_posterior"].append(mean_lp)
        self.trace["acceptance"].append(float(accept.float().mean()))
        self.trace["step_size"].append(float(self.scale.mean()))
        self.trace["logit_scale"].append(lam)
        self.trace["langevin_share"].append(float(self.share.mean()))
        self.trace["langevin_step"].append(float(self.h.mean()))
        self.trace["guided_step"].append(float(self.eta.mean()))
        lang_rate = self.langevin_accepts / max(1, self.langevin_proposals)
        return StepResult(
            loss=float(-self.logpost.mean()) / n * self.temperature,
            metrics={"hardware_accuracy": float(self.acc.mean()), "acceptance": rate,
                     "langevin_acceptance": lang_rate, "langevin_share": float(self.share.mean()),
                     "log_posterior": mean_lp, "step_size": float(self.scale.mean()),
                     "langevin_step": float(self.h.mean()), "logit_scale": lam},
        )

    #: a checkpoint written before ``guided_batch`` / ``burn_in_minibatch`` / ``guided_block`` existed scored
    #: and drew every step on all the data and moved one layer per guided move (and before ``warm_start`` /
    #: ``holdout``: every chain from the init state, every choice on the training samples)
    _LEGACY = {**MetropolisHastings._LEGACY, "guided_batch": None, "burn_in_minibatch": None,
               "guided_block": "layer", "guided_noise": 1.0, "warm_start": 0, "warm_steps": 200, "warm_lr": 0.01,
               "warm_batch": 64, "holdout": 0.0, "holdout_by": "likelihood",
               "holdout_rejoin": False, "warm_moves": "mala", "warm_prefer": 0.0,
               "warm_grad_clip": None}

    _STATE = MetropolisHastings._STATE + (
        "grad", "h", "eta", "v", "share", "lw_props", "lw_alpha", "lw_jump", "rw_jump", "langevin_proposals",
        "langevin_accepts", "fallback_proposals", "beta", "beta_xy", "beta_xx", "out_cur", "subset_scores",
        "holdout_index", "held_score", "rejoined", "restart_chain", "cunit", "warm")

    def load_state_dict(self, d: dict[str, Any]) -> None:
        super().load_state_dict(d)
        if "cunit" not in d:  # written before per-chain scales existed: every chain had the shared ones
            self.cunit = self.unit.expand(self.chains, -1).clone()
        if "warm" not in d:  # written before the label travelled with a restart: warm_moves acted in burn-in only
            self.warm = torch.arange(self.chains) < self.warm_start
        if "holdout_index" in d:  # the checkpointed split, applied to this fit's training data
            self._apply_split(self._all)
            self._choose_final_data()


def _clearly_better(a: float, b: float, n: int, z: float) -> bool:
    """Whether accuracy ``a`` beats ``b`` (both measured on the same ``n`` samples) by more than ``z``
    standard errors of their difference, taken as independent (module doc: ``warm_prefer``)."""
    se = math.sqrt(max(a * (1 - a) + b * (1 - b), 0.0) / max(n, 1))
    return a - b > z * se


def _join(x: Any, more: Any) -> Any:
    """Two batches of inputs as one (samples of ``x`` first): dense tensors or :class:`EventBatch`es."""
    if isinstance(x, torch.Tensor):
        return torch.cat([x, more.to(x.device)], 1)
    return EventBatch(torch.cat([x.dense, more.dense.to(x.dense.device)], 1), list(x.events) + list(more.events),
                      x.duration_us)


class _FitSamples:
    """The batches of a fit with ``holdout``: the samples the chains fit, the whole of them per step
    (the stream's own batches where no split was made)."""

    num_batches = 1

    def __init__(self, algo: "Langevin", stream: Any) -> None:
        self.algo, self.stream = algo, stream

    def __iter__(self) -> Any:
        a = self.algo
        if getattr(a, "_held", None) is None:
            yield from self.stream
            return
        part = a._all if a.holdout_rejoin and a.n_steps >= a.burn_in else a._fit
        yield part.select(torch.arange(len(part)))
