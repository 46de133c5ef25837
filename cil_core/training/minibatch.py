"""A minibatch likelihood for Metropolis-Hastings whose step cost does not grow with the number
of training samples :math:`N`: the sequential test of Korattikara, Chen & Welling 2014
("Austerity in MCMC land: cutting the Metropolis-Hastings budget", ICML 2014, Algorithm 1).
``MetropolisHastings(likelihood="sequential")`` uses it (:mod:`cil_core.training.mh`).

**Exact MH** (``likelihood="full"``, the default). With a symmetric proposal and
:math:`u \\sim \\mathcal U(0, 1)`, :math:`\\theta'` is accepted iff

.. math:: \\log u < \\log p(\\theta') - \\log p(\\theta) + \\sum_{i=1}^N \\big(\\ell_i(\\theta') - \\ell_i(\\theta)\\big),
          \\qquad \\ell_i(\\theta) = -\\mathrm{CE}_i(\\theta) / \\tau,

(:math:`p` the prior, :math:`\\mathrm{CE}_i` the cross entropy of sample :math:`i`'s readout on the
chip, logits times λ, :math:`\\tau` the temperature), that is iff :math:`\\mu > \\mu_0` with

.. math:: \\mu = \\frac1N \\sum_{i=1}^N l_i,\\quad l_i = \\ell_i(\\theta') - \\ell_i(\\theta),\\qquad
          \\mu_0 = \\frac1N \\Big(\\log u + \\log p(\\theta) - \\log p(\\theta')\\Big).

Each step costs :math:`N` sample-inferences per scored parameter set.

**The sequential test** (``likelihood="sequential"``). Each step draws one uniformly random order
:math:`\\pi` of the :math:`N` samples (without replacement; ``torch.randperm`` from the trainer's
seeded generator) and reads it :math:`m` = ``minibatch`` samples at a time; the current state and
the proposal of every undecided chain are scored on the same samples (paired differences; on a
noisy chip this is also Monte-Carlo-within-Metropolis). After :math:`n` samples

.. math:: \\bar l_n = \\frac1n \\sum_{j \\le n} l_{\\pi_j},\\qquad
          s_n = \\frac{\\hat\\sigma_n}{\\sqrt n} \\sqrt{1 - \\frac{n - 1}{N - 1}},\\qquad
          t = \\frac{\\bar l_n - \\mu_0}{s_n},\\qquad
          \\delta = 1 - F_{n-1}(|t|),

with :math:`\\hat\\sigma_n` the sample standard deviation of the :math:`l`'s read, the square root
the finite-population correction and :math:`F_{n-1}` Student's t distribution with :math:`n - 1`
degrees of freedom. If :math:`\\delta < \\varepsilon` (``epsilon``) the chain decides: accept iff
:math:`\\bar l_n > \\mu_0`; otherwise it reads :math:`m` more samples. At :math:`n = N`,
:math:`\\bar l_N = \\mu` and the decision is exact MH's (computed with the same expressions, so with
:math:`\\varepsilon = 0`, or :math:`m \\ge N`, the chain takes exactly full-data MH's decisions).
:math:`\\hat\\sigma_n = 0` (every difference read so far equal: e.g. a proposal that changed no
output on those samples of a deterministic chip) is not taken for certainty, the chain reads on
(the t-test's normal approximation says nothing there; on a deterministic chip set ``max_samples``
to bound what such proposals read).

*Error.* Each look is a t-test of :math:`\\mu = \\mu_0` at level :math:`\\varepsilon`: under the
central-limit approximation for :math:`\\bar l_n` (the test's assumption; poor for very small
:math:`m` or a few samples that carry all of the difference), a look decides on the wrong side of
:math:`\\mu_0` with probability at most about :math:`\\varepsilon`, so one decision differs from
exact MH's with probability :math:`\\Delta \\lesssim J\\varepsilon` over its :math:`J` looks (a union
bound; usually far less, since a wrong decision needs :math:`\\mu` near :math:`\\mu_0`: on
synthetic close calls, :math:`\\mu` within a few standard errors of :math:`\\mu_0`, 1.2--1.3
:math:`\\varepsilon` of the decisions differed from exact MH's, ``tests/test_mh_minibatch.py``). If the
exact chain contracts, :math:`d_{TV}(P T_0, S_0) \\le \\eta\\, d_{TV}(P, S_0)` with
:math:`\\eta < 1`, the stationary distribution :math:`S_\\varepsilon` of the test's chain satisfies
:math:`d_{TV}(S_\\varepsilon, S_0) \\le \\Delta_{\\max} / (1 - \\eta)` (Korattikara et al. 2014,
Theorem 1). :math:`\\varepsilon = 0` is exact MH.

*Cost.* A decision reads :math:`n` samples per chain and scores two sets on each (current state
and proposal): :math:`2n` sample-inferences. :math:`n` is set by how far :math:`\\mu` lies from
:math:`\\mu_0` in units of :math:`\\hat\\sigma / \\sqrt n`, not by :math:`N` (as :math:`N` grows,
:math:`\\mu_0 \\to 0` and the population of :math:`l_i` stays the same); ``max_samples`` caps it: a
chain still undecided after that many samples decides by the sign of
:math:`\\bar l_n - \\mu_0` (a bias the level :math:`\\varepsilon` does not cover; ``None``: no cap
but :math:`N`). The other chip requests of a fit read fixed numbers of samples (calibration
:math:`\\le 256`, ``init="auto"`` and the deployment choice :math:`\\le 512`), so a whole fit costs
the same for any :math:`N` above those.

*Reported values.* The log-likelihoods a step reports (and the chain keeps) are estimates
:math:`\\hat\\ell(\\theta) = -N\\,\\overline{\\mathrm{CE}}_n / \\tau` from the samples its
decision read (exact at :math:`n = N`).

*Data.* The samples are read by index: in-memory data, a map-style torch ``Dataset`` (through its
own ``collate_fn`` or cil's time-major collation) or a ``DataLoader`` over one (its ``dataset``
through its ``collate_fn``; its batch size, order and workers do not apply), each minibatch checked
at the door as any batch (:meth:`~cil_core.data.stream.BatchStream.take`). The order comes from the
trainer's generator, drawn at the start of each step, so a fit resumed from a checkpoint reads the
same samples in the same order as an uninterrupted one. An iterable of batches without random
access is refused (materialize it, or wrap its samples in a Dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..data import SpikeData
from ..data.stream import BatchStream
from ..errors import DataError, OptionError

Batch = tuple[Any, torch.Tensor]
#: ``score(rows, x, y)``: per-sample cross entropies ``[2k, b]`` (the current states of chains
#: ``rows`` first, then their proposals) and numbers of correct predictions ``[2k]`` on ``(x, y)``
Score = Callable[[torch.Tensor, Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class MinibatchDraws:
    """The training samples of sequential-test MH, read by index. Iterated by the trainer as its
    batches (one per step: the step's first minibatch, from a fresh random order drawn with
    ``generator``; ``ceil(N / minibatch)`` steps make a nominal epoch); the step reads further
    minibatches of the same order with :meth:`more`. ``len()`` and :meth:`select` make it stand
    in for the training set where MH reads fixed samples (calibration, deployment)."""

    def __init__(self, data: SpikeData | BatchStream, minibatch: int, generator: torch.Generator) -> None:
        if isinstance(data, SpikeData):
            self._select: Callable[[torch.Tensor], Batch] = data.select
            n = len(data)
        else:
            if not data.random_access:
                raise DataError(
                    f"{data.door.what}: minibatch MH (likelihood='sequential') reads samples by index, and a "
                    f"{type(data.source).__name__} of batches cannot be read so; pass the data in memory, a map-style "
                    "torch Dataset or a DataLoader over one, or hold it in memory first: trainer.materialize(data)")
            self._select = data.take
            n = int(data.sample_count or 0)
        if n < 1:
            raise DataError("minibatch MH needs at least one training sample")
        self.n, self.minibatch, self.generator = n, minibatch, generator
        self._order = torch.arange(n)
        self._read = 0
        #: the last minibatch read (the batch the trainer hands the step is the first of its step)
        self.current: Batch | None = None

    def __len__(self) -> int:
        return self.n

    def select(self, idx: torch.Tensor) -> Batch:
        """The samples ``idx`` (fixed samples, e.g. the first 256 for the calibration)."""
        return self._select(idx)

    @property
    def num_batches(self) -> int:
        return -(-self.n // self.minibatch)

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.num_batches):
            yield self.first()

    def first(self) -> Batch:
        """A step's first minibatch: a fresh random order of the N samples, its first ``minibatch``."""
        self._order = torch.randperm(self.n, generator=self.generator)
        self._read = 0
        return self.more(self.minibatch)

    def more(self, k: int) -> Batch:
        """The next ``k`` samples (fewer at the end) of the current step's order."""
        k = min(k, self.n - self._read)
        if k < 1:
            raise DataError("minibatch MH read all samples of the step already")
        idx = self._order[self._read:self._read + k]
        self._read += k
        self.current = self._select(idx)
        return self.current


@dataclass
class Decision:
    """The outcome of one step's sequential test, per chain: ``accept``; log posteriors and
    log-likelihoods (estimates scaled to N, exact where ``samples == N``) and accuracies of the
    current state and the proposal on the samples read; ``samples`` read; ``looks`` taken."""

    accept: torch.Tensor
    lp_cur: torch.Tensor
    lp_prop: torch.Tensor
    ll_cur: torch.Tensor
    ll_prop: torch.Tensor
    acc_cur: torch.Tensor
    acc_prop: torch.Tensor
    samples: torch.Tensor
    looks: int


@dataclass(frozen=True)
class SequentialTest:
    """Korattikara et al.'s sequential acceptance test (equations in the module docstring):
    ``minibatch`` samples read per look (m >= 2), level ``epsilon`` in [0, 1) (0: exact MH), and at
    most ``max_samples`` samples per decision (``None``: N)."""

    minibatch: int = 32
    epsilon: float = 0.05
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.minibatch, bool) or not isinstance(self.minibatch, int) or self.minibatch < 2:
            raise OptionError(f"minibatch must be a whole number >= 2 (the test needs a sample variance), "
                              f"not {self.minibatch!r}")
        if (isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float))
                or not 0 <= self.epsilon < 1):
            raise OptionError(f"epsilon must lie in [0, 1) (0: exact MH, every decision reads all samples), "
                              f"not {self.epsilon!r}")
        if self.max_samples is not None and (isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int)
                                             or self.max_samples < self.minibatch):
            raise OptionError(f"max_samples must be None or a whole number >= minibatch ({self.minibatch}), "
                              f"not {self.max_samples!r}")

    def decide(self, score: Score, draws: MinibatchDraws, first: Batch, log_prior: torch.Tensor,
               draw_log_u: Callable[[], torch.Tensor], temperature: float) -> Decision:
        """Run the test for every chain. ``log_prior``: ``[2C]``, the current states' then the
        proposals'; ``draw_log_u()`` gives ``log u`` ``[C]`` and is called once, after the first look."""
        from scipy.special import stdtr

        C = log_prior.shape[0] // 2
        N = draws.n
        cap = N if self.max_samples is None else min(N, self.max_samples)
        dev = log_prior.device
        def empty(dtype: torch.dtype = log_prior.dtype) -> torch.Tensor:
            return torch.empty(C, dtype=dtype, device=dev)

        out = Decision(torch.zeros(C, dtype=torch.bool, device=dev), empty(), empty(), empty(), empty(),
                       empty(torch.float32), empty(torch.float32), torch.zeros(C, dtype=torch.long), 0)
        active = torch.arange(C, device=dev)
        ce: torch.Tensor | None = None  # [2k, n]: the active chains' current states, then their proposals
        hits: torch.Tensor | None = None
        log_u: torch.Tensor | None = None
        x, y = first
        n = 0
        while True:
            k = len(active)
            ce_new, hits_new = score(active, x, y)
            ce = ce_new if ce is None else torch.cat([ce, ce_new], 1)
            hits = hits_new if hits is None else hits + hits_new
            n += len(y)
            out.looks += 1
            if log_u is None:
                log_u = draw_log_u()
            # the same expressions as full-data MH (mh.py _score3 and step): exact at n = N
            ll = torch.nan_to_num(-N * ce.mean(1) / temperature, nan=-math.inf)
            lp = torch.nan_to_num(ll + log_prior[torch.cat([active, active + C])], nan=-math.inf)
            log_ratio = lp[k:] - lp[:k]
            lu = log_u[active]
            if n >= cap:
                decided = torch.ones(k, dtype=torch.bool, device=dev)
            else:
                diff = (ce[:k] - ce[k:]) / temperature  # l_i, [k, n]
                s = diff.std(1) / math.sqrt(n) * math.sqrt(1.0 - (n - 1) / (N - 1))
                t = ((log_ratio - lu) / N / s).double().cpu()
                delta = torch.as_tensor(stdtr(n - 1, -t.abs().numpy()))
                decided = ((delta < self.epsilon) & (s > 0).cpu()).to(dev)
            acc = hits.float() / n
            idx = active[decided]
            out.accept[idx] = (lu < log_ratio)[decided]
            out.lp_cur[idx], out.lp_prop[idx] = lp[:k][decided], lp[k:][decided]
            out.ll_cur[idx], out.ll_prop[idx] = ll[:k][decided], ll[k:][decided]
            out.acc_cur[idx], out.acc_prop[idx] = acc[:k][decided], acc[k:][decided]
            out.samples[idx.cpu()] = n
            if bool(decided.all()):
                return out
            keep = torch.cat([~decided, ~decided])
            ce, hits, active = ce[keep], hits[keep], active[~decided]
            x, y = draws.more(min(self.minibatch, cap - n))


__all__ = ["SequentialTest", "MinibatchDraws", "Decision"]
