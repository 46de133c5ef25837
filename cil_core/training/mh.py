"""Metropolis-Hastings sampling of the weights with the likelihood measured on the chip
(after Safa et al., NICE 2024, arXiv 2402.06284; the paper leaves proposal, prior and
initialisation choices open, the ones here are cil's).

Posterior over the flattened synaptic weights :math:`\\theta`:

.. math::

    \\log p(\\theta \\mid D) = -\\frac{N}{\\tau}\\,\\mathrm{CE}_{hw}(\\theta; D)
        - \\frac{1}{2}\\sum_k \\Big(\\frac{\\theta_k}{\\sigma_p u_k}\\Big)^2 + \\text{const}

where :math:`\\mathrm{CE}_{hw}` is the mean cross entropy of the readout of the *chip's* output
(the chip runs the candidate weights after a weight transfer), :math:`N` the number of samples
scored, :math:`\\tau` the temperature, :math:`\\sigma_p` the prior width and :math:`u_k` the
scale of the tensor that holds :math:`\\theta_k` (the standard deviation of its initial
values), so that one step size fits layers of different fan-in.

Proposal (Gaussian random walk): :math:`\\theta' = \\theta + s_c\\, u \\odot \\epsilon`,
:math:`\\epsilon \\sim \\mathcal N(0, I)`; accept with probability
:math:`\\min(1, p(\\theta'|D)/p(\\theta|D))`. ``chains`` independent chains advance together and
all their proposals are scored in one backend call when the backend can hold several
parameter sets.

Burn-in: every ``adapt_every`` steps each chain's step size is multiplied by
:math:`\\exp(a_c - a^*)` (:math:`a_c` its acceptance rate over the window, :math:`a^*` the target).
After burn-in the step size is frozen and every ``thin``-th state of every chain is averaged:
the deployed weights are the posterior mean :math:`W^* = \\frac{1}{K}\\sum_k \\theta^{(k)}`
(``deploy="mean"``) or the best sample seen (``deploy="best"``). Chains that drift into
different modes (e.g. permuted hidden units) have a pooled mean that falls between the modes,
so with ``deploy="mean"`` the pooled mean and every chain's own mean
:math:`W^*_c = \\frac{1}{K_c}\\sum_k \\theta_c^{(k)}` are scored once more on the chip (on up to
512 training samples, one batched call) and the one with the highest posterior is deployed.

Initialisation (``init="auto"``, default): see :class:`MetropolisHastings`.

With a stochastic chip or a minibatch likelihood the current state is re-scored together with
the proposals each step (Monte-Carlo-within-Metropolis), so a lucky noisy estimate cannot pin
a chain.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..data import SpikeData
from ..errors import CilError, OptionError
from .algorithm import Algorithm, StepResult, TrainState


class MetropolisHastings(Algorithm):
    """Metropolis-Hastings over the weights, likelihood measured on the backend.

    Options: ``chains`` (parallel chains, proposals per step), ``step_size`` (initial
    :math:`s`, in units of each tensor's scale), ``target_acceptance``, ``burn_in`` (steps),
    ``thin``, ``prior_std`` (:math:`\\sigma_p`), ``temperature`` (:math:`\\tau`), ``adapt_every``,
    ``deploy`` (``"mean"`` or ``"best"``), ``rescore`` (``"auto"``, ``True``, ``False``),
    ``batched`` (score all sets in one backend call when the backend allows), ``init``
    (``"auto"`` or ``"network"``, see below), ``init_gains`` (the candidates of ``"auto"``).

    ``init="auto"``: a network whose output is silent on the chip gives every proposal the
    same likelihood (a flat posterior), and one that is far too active saturates; neither is a
    good start. Before the first step the initial weights :math:`\\theta_0` are therefore
    scaled by the gain :math:`g` among ``init_gains`` with the highest posterior
    :math:`\\log p(g\\,\\theta_0 \\mid D)` measured on the chip (up to 512 training samples, all
    candidates in one backend call; ties go to the smallest gain). A silent output scores the
    chance-level cross entropy :math:`\\log C`, so a gain wins over silence only if the chip's
    output at that gain already carries information about the labels. The chains start at
    :math:`g\\,\\theta_0` (tensor scales :math:`u_k` scale with it). ``init="network"`` starts
    at the network's weights as they are (e.g. weights trained offline: MH as on-chip
    fine-tuning).
    """

    name = "mh"
    default_batch_size = None
    default_epochs = None
    default_steps = 400

    def __init__(self, chains: int = 4, step_size: float = 0.05, target_acceptance: float = 0.25,
                 burn_in: int = 200, thin: int = 1, prior_std: float = 3.0, temperature: float = 1.0,
                 adapt_every: int = 20, deploy: str = "mean", rescore: Any = "auto", batched: bool = True,
                 init: str = "auto", init_gains: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)) -> None:
        if init not in ("auto", "network"):
            raise OptionError(f"init must be 'auto' or 'network', not {init!r}")
        if not init_gains or any(g <= 0 for g in init_gains):
            raise OptionError("init_gains must be a non-empty sequence of positive gains")
        if deploy not in ("mean", "best"):
            raise OptionError(f"deploy must be 'mean' or 'best', not {deploy!r}")
        if not 0 < target_acceptance < 1:
            raise OptionError("target_acceptance must lie in (0, 1)")
        if chains < 1 or thin < 1 or adapt_every < 1 or step_size <= 0 or temperature <= 0 or prior_std <= 0:
            raise OptionError("chains, thin, adapt_every must be >= 1; step_size, temperature, prior_std > 0")
        self.chains, self.step_size, self.target = chains, step_size, target_acceptance
        self.burn_in, self.thin, self.prior_std, self.temperature = burn_in, thin, prior_std, temperature
        self.adapt_every, self.deploy, self.rescore, self.batched = adapt_every, deploy, rescore, batched
        self.init, self.init_gains = init, tuple(float(g) for g in sorted(init_gains))
        self.init_gain = 1.0
        self.theta: torch.Tensor | None = None

    # ------------------------------------------------------------ vector <-> named tensors
    def _layout(self, state: TrainState) -> None:
        params = state.network.detached_parameters()
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        units = []
        for p in params.values():
            u = float(p.float().std()) if p.numel() > 1 else 0.0
            if not math.isfinite(u) or u <= 0:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else max(1, p.numel())
                u = 1.0 / math.sqrt(fan_in)
            units.append(torch.full((p.numel(),), u))
        self.unit = torch.cat(units).to(state.network.device)

    def _flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[S, D]`` → ``{name: [S, *shape]}``."""
        out, i = {}, 0
        for n, shape, k in zip(self.names, self.shapes, self.sizes):
            out[n] = theta[:, i : i + k].reshape(theta.shape[0], *shape)
            i += k
        return out

    # ------------------------------------------------------------ algorithm
    def _auto_gain(self, state: TrainState, theta0: torch.Tensor, train: SpikeData) -> float:
        """The candidate gain with the highest posterior measured on the chip (see the class doc)."""
        n = min(len(train), 512)
        x, y = train.select(torch.arange(n))
        gains = torch.tensor(self.init_gains, dtype=theta0.dtype, device=theta0.device)
        with torch.no_grad():
            lp, _ = self._score(state, gains[:, None] * theta0, x, y)
        return float(gains[int(torch.argmax(lp))])  # ties: the smallest gain

    def setup(self, state: TrainState, train: SpikeData) -> None:
        self._layout(state)
        theta0 = self._flatten(state.network.detached_parameters())
        self.init_gain = 1.0
        if self.init == "auto":
            self.init_gain = self._auto_gain(state, theta0, train)
            theta0 = theta0 * self.init_gain
            self.unit = self.unit * self.init_gain
        C = self.chains
        self.theta = theta0.unsqueeze(0).repeat(C, 1)
        self.logpost = torch.full((C,), -math.inf, device=theta0.device)
        self.acc = torch.zeros(C, device=theta0.device)
        self.scale = torch.full((C,), self.step_size, device=theta0.device)
        self.window_accepts = torch.zeros(C, device=theta0.device)
        self.total_accepts = 0
        self.total_proposals = 0
        self.n_steps = 0
        self.sum = torch.zeros_like(theta0)
        self.chain_sum = torch.zeros_like(self.theta)
        self.n_kept = 0
        # a fixed scoring set for choosing among posterior means at the end (at most 512 samples)
        self._final_data = train.select(torch.arange(min(len(train), 512)))
        self.best_theta = theta0.clone()
        self.best_logpost = -math.inf
        self.scored = False
        self.n_train = len(train)
        self.trace: dict[str, list[float]] = {"log_posterior": [], "acceptance": [], "step_size": []}

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((theta / (self.prior_std * self.unit)) ** 2).sum(-1)

    def _score(self, state: TrainState, theta: torch.Tensor, x: Any, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log posterior and accuracy of every row of ``theta`` (``[S, D]``), measured on the backend."""
        S = theta.shape[0]
        params = self._unflatten(theta)
        if self.batched:
            out = state.observe(params, x, n_sets=S).output
        else:
            out = torch.stack([state.observe({k: v[s] for k, v in params.items()}, x).output for s in range(S)], 1)
        ce = state.readout.loss(out, y)  # [S]
        correct = state.readout.correct(out, y).float() / len(y)
        lp = -len(y) * ce / self.temperature + self.log_prior(theta)
        return torch.nan_to_num(lp, nan=-math.inf), correct

    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        if self.theta is None:
            raise CilError("MetropolisHastings.step called before setup")
        x, y = batch
        C = self.chains
        rescore = self.rescore
        if rescore == "auto":
            rescore = state.session.stochastic or len(y) != self.n_train
        eps = torch.randn(self.theta.shape, generator=state.generator).to(self.theta.device)
        prop = self.theta + self.scale[:, None] * self.unit * eps
        if rescore or not self.scored:
            lp, acc = self._score(state, torch.cat([self.theta, prop]), x, y)
            self.logpost, self.acc = lp[:C], acc[:C]
            lp_prop, acc_prop = lp[C:], acc[C:]
            self.scored = True
        else:
            lp_prop, acc_prop = self._score(state, prop, x, y)
        u = torch.rand(C, generator=state.generator).to(prop.device)
        with torch.no_grad():
            log_ratio = lp_prop - self.logpost
            accept = torch.log(u) < log_ratio
            self.theta = torch.where(accept[:, None], prop, self.theta)
            self.logpost = torch.where(accept, lp_prop, self.logpost)
            self.acc = torch.where(accept, acc_prop, self.acc)
        self.n_steps += 1
        self.total_accepts += int(accept.sum())
        self.total_proposals += C
        self.window_accepts += accept.float()

        # keep the best sample ever scored (current states and proposals)
        i = int(torch.argmax(lp_prop))
        if float(lp_prop[i]) > self.best_logpost:
            self.best_logpost, self.best_theta = float(lp_prop[i]), prop[i].clone()
        j = int(torch.argmax(self.logpost))
        if float(self.logpost[j]) > self.best_logpost:
            self.best_logpost, self.best_theta = float(self.logpost[j]), self.theta[j].clone()

        if self.n_steps <= self.burn_in:
            if self.n_steps % self.adapt_every == 0:
                rate = self.window_accepts / self.adapt_every
                self.scale = self.scale * torch.exp(rate - self.target)
                self.window_accepts.zero_()
        elif (self.n_steps - self.burn_in) % self.thin == 0:
            self.sum += self.theta.sum(0)
            self.chain_sum += self.theta
            self.n_kept += C

        rate = self.total_accepts / self.total_proposals
        mean_lp = float(self.logpost.mean())
        self.trace["log_posterior"].append(mean_lp)
        self.trace["acceptance"].append(float(accept.float().mean()))
        self.trace["step_size"].append(float(self.scale.mean()))
        return StepResult(
            loss=float(-self.logpost.mean()) / len(y) * self.temperature,
            metrics={"hardware_accuracy": float(self.acc.mean()), "acceptance": rate,
                     "log_posterior": mean_lp, "step_size": float(self.scale.mean())},
        )

    @property
    def acceptance_rate(self) -> float:
        return self.total_accepts / max(1, self.total_proposals)

    def posterior_mean(self) -> torch.Tensor | None:
        return None if self.n_kept == 0 else self.sum / self.n_kept

    def chain_means(self) -> torch.Tensor | None:
        """Per-chain posterior means ``[C, D]`` (``None`` before the first kept sample)."""
        return None if self.n_kept == 0 else self.chain_sum / (self.n_kept / self.chains)

    def _choose_mean(self, state: TrainState) -> torch.Tensor:
        """Pooled mean if it scores best on the chip, else the best chain's own mean."""
        pooled = self.posterior_mean()
        assert pooled is not None
        if self.chains == 1 or getattr(self, "_final_data", None) is None:
            return pooled
        cands = torch.cat([pooled.unsqueeze(0), self.chain_means()])
        x, y = self._final_data
        with torch.no_grad():
            lp, _ = self._score(state, cands, x, y)
        return cands[int(torch.argmax(lp))]

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

    def state_dict(self) -> dict[str, Any]:
        keys = ("theta", "logpost", "acc", "scale", "window_accepts", "total_accepts", "total_proposals",
                "n_steps", "sum", "n_kept", "best_theta", "best_logpost", "scored", "n_train", "trace",
                "unit", "init_gain", "chain_sum")  # _final_data: re-selected by setup
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)
