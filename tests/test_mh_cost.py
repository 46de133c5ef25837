"""The cost of an MH proposal without a change of result (issue 21, item 3).

* the batched path (all chains' proposals in one parameter-set call) and the one-call-per-proposal
  path give the same chains bit for bit, on a seeded run, without any stored reference;
* the fast finiteness test answers exactly as ``torch.isfinite(t).all()``, and a NaN or inf in
  the data, in a direct ``session.forward`` call or in a parameter is still refused by name;
* the neuron loop's shortcuts without autograd (spikes written into the output, the previous
  spikes reused as the deferred reset signal, comparisons written as floats) give the same
  spikes and membranes as the loop with autograd, for every reset mechanism and timing; so does
  the plain leaky layer's own loop with buffers made once (``leaky_steps``).
"""

from __future__ import annotations

import itertools

import pytest
import torch

import cil_core as cil
from cil_core.errors import NonFiniteError
from cil_core.hardware import HardwareSession
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.finite import all_finite, count_non_finite
from cil_core.kernels.neuron import run_neuron_layer
from cil_core.kernels.surrogate import heaviside
from cil_core.network.neuron import Neuron
from cil_core.network.reference import feedforward


# ------------------------------------------------------------------ MH: batched == one call per proposal
@pytest.mark.parametrize("proposal,init", [("block", "calibrate"), ("random-walk", "auto")])
def test_batched_and_one_call_per_proposal_mh_are_bit_identical(breast_cancer, proposal, init):
    """Seeded MH on the ideal backend (62-32-2, the benchmark's network), 4 chains x 12 steps
    across burn-in: the chains' states, log posteriors, accuracies, traces and the deployed
    weights of the batched path equal those of the path with one backend call per proposal."""
    torch.set_num_threads(1)
    train = breast_cancer.train.subset(torch.arange(160))
    runs = {}
    for batched in (True, False):
        net = feedforward([62, 32, 2], seed=0, weight_gain=2.0)
        tr = cil.Trainer(net, "ideal", "mh", seed=3, chains=4, burn_in=6, batched=batched,
                         proposal=proposal, init=init)
        tr.fit(train, steps=12)
        runs[batched] = (tr, net)
    (tb, nb), (ts, ns) = runs[True], runs[False]
    a, b = tb.algorithm, ts.algorithm
    assert tb.session.stats.calls < ts.session.stats.calls  # the two paths really differ in calls
    for name in ("theta", "logpost", "loglik", "acc", "sum", "best_theta"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.trace == b.trace
    assert a.total_accepts == b.total_accepts > 0
    pb, ps = nb.detached_parameters(), ns.detached_parameters()
    assert all(torch.equal(pb[k], ps[k]) for k in pb)
    assert tb.evaluate(breast_cancer.test) == {**ts.evaluate(breast_cancer.test)}


# ------------------------------------------------------------------ finiteness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_all_finite_answers_exactly_as_isfinite(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 33, generator=g).to(dtype)
    assert all_finite(x) is True
    for bad in (float("nan"), float("inf"), -float("inf")):
        for where in ((0, 0), (3, 17), (6, 32)):
            y = x.clone()
            y[where] = bad
            assert all_finite(y) is False
            assert count_non_finite(y) == 1
    both = torch.tensor([float("inf"), -float("inf"), 1.0], dtype=dtype)  # inf + -inf: a NaN sum
    assert all_finite(both) is False
    huge = torch.full((64,), torch.finfo(dtype).max, dtype=dtype)  # finite values whose sum overflows
    assert not bool(torch.isfinite(huge.sum()))
    assert all_finite(huge) is True
    assert all_finite(torch.empty(0, dtype=dtype)) is True


def test_all_finite_on_integers_and_tensors_that_need_grad():
    assert all_finite(torch.arange(5)) and all_finite(torch.ones(3, dtype=torch.bool))
    w = torch.randn(4, requires_grad=True)
    assert all_finite(w)
    with torch.no_grad():
        w[1] = float("nan")
    assert not all_finite(w)


def test_a_nan_still_stops_every_entry_by_name(breast_cancer):
    """The door, a direct session.forward (no trainer, no MH) and a parameter: a NaN is named."""
    net = feedforward([62, 32, 2], seed=0)
    x = breast_cancer.train.x[:, :20].clone()
    y = breast_cancer.train.y[:20]
    x_np = x.numpy()
    x_np[3, 5, 7] = float("nan")  # through a numpy view: torch's version counter does not move
    tr = cil.Trainer(net, "ideal", "mh", chains=2, burn_in=1)
    with pytest.raises(NonFiniteError, match="training data: inputs hold 1 NaN or inf"):
        tr.fit((x, y), steps=2)
    session = HardwareSession(IdealBackend())
    dep = session.transfer(net.spec, net.detached_parameters())
    with pytest.raises(NonFiniteError, match="non-finite"):
        session.forward(dep, x)
    with pytest.raises(NonFiniteError, match="non-finite"):
        session.run(net.spec, net.detached_parameters(), x)
    params = {k: v.clone() for k, v in net.detached_parameters().items()}
    params["0.weight"][1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match="parameter '0.weight' holds 1 non-finite"):
        session.run(net.spec, params, breast_cancer.train.x[:, :20])


# ------------------------------------------------------------------ the neuron loop without autograd
def test_heaviside_writes_the_same_floats_as_a_cast_comparison():
    x = torch.tensor([-1.0, -0.0, 0.0, 1e-30, 2.0, float("nan"), float("inf"), -float("inf")])
    for at in (True, False):
        want = (x >= 0).to(x.dtype) if at else (x > 0).to(x.dtype)
        assert torch.equal(heaviside(x, at), want)
        out = torch.full_like(x, 7.0)
        assert heaviside(x, at, out=out) is out and torch.equal(out, want)


def _neuron(**kw) -> Neuron:
    base = dict(beta=0.9, alpha=None, threshold=1.0, reset="subtract", reset_timing="immediate",
                current_timing="same-step", input_gain=1.0, v_leak=0.0, v_reset=0.0, v_min=None,
                fires_at_threshold=False, max_spikes_per_step=1, dt=1e-3, output="spikes")
    base.update(kw)
    return Neuron(**base)


_CASES = [dict(reset=r, reset_timing=t, fires_at_threshold=f, threshold=thr)
          for r, t, f, thr in itertools.product(("subtract", "zero", "none"),
                                                ("immediate", "deferred-pre", "deferred-post"),
                                                (False, True), (1.0, 0.7))]
_CASES += [dict(reset="subtract", reset_timing="deferred-post", v_min=-0.5),
           dict(reset="zero", reset_timing="deferred-pre", v_reset=0.2),
           dict(reset="subtract", reset_timing="deferred-post", spike_amplitude=0.5),
           dict(reset="subtract", reset_timing="immediate", max_spikes_per_step=3),
           dict(reset="subtract", reset_timing="deferred-post", alpha=0.8),
           dict(reset="subtract", reset_timing="deferred-pre", threshold=torch.tensor([0.8, 1.0, 1.2, 0.5]))]
# the plain leaky loop (_leaky_loop): integrate-and-fire, per-neuron beta and threshold, a start
# above the threshold (R_0 = 1) and a negative threshold
_PLAIN = [dict(reset="subtract", reset_timing="deferred-post", beta=1.0),
          dict(reset="subtract", reset_timing="deferred-post", beta=torch.tensor([0.5, 0.9, 1.0, 0.99]),
               threshold=torch.tensor([0.8, 1.0, 1.2, 0.5])),
          dict(reset="subtract", reset_timing="deferred-post", v_init=1.5, fires_at_threshold=True),
          dict(reset="subtract", reset_timing="deferred-post", threshold=-0.2)]
_CASES += _PLAIN


@pytest.mark.parametrize("kw", _CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()
                                                                 if not isinstance(v, torch.Tensor)))
def test_neuron_loop_without_autograd_equals_the_loop_with_autograd(kw):
    """Spikes and membranes bit for bit, on inputs that hit the threshold exactly too."""
    n = _neuron(**kw)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, 4, generator=g) * 1.5
    x[3, 0, :] = 1.0  # exactly at a threshold of 1 from rest
    with torch.no_grad():
        fast = run_neuron_layer(n, x, record_membrane=True)
    xg = x.clone().requires_grad_(True)
    slow = run_neuron_layer(n, xg, record_membrane=True)
    assert torch.equal(fast.spikes, slow.spikes.detach())
    assert torch.equal(fast.membrane, slow.membrane.detach())
    assert fast.spikes.sum() > 0


@pytest.mark.parametrize("kw", [dict(reset="subtract", reset_timing="deferred-post"),
                                dict(reset="subtract", reset_timing="deferred-post", threshold=0.7,
                                     fires_at_threshold=True)] + _PLAIN, ids=str)
@pytest.mark.parametrize("shape", [(16, 3 * 40, 32), (7, 5, 2, 3), (1, 1, 4)], ids=str)
def test_plain_leaky_loop_equals_the_general_loop(monkeypatch, kw, shape):
    """The plain leaky layer's own loop (taken without autograd) against the general loop with
    autograd, on sets-shaped and convolutional-shaped inputs and on inputs at the threshold: spikes
    and membranes bit for bit; the shortcut is really taken."""
    import cil_core.kernels.neuron as kn

    calls = []
    real = kn.leaky_steps
    monkeypatch.setattr(kn, "leaky_steps", lambda *a, **k: calls.append(1) or real(*a, **k))
    n = _neuron(**{k: (v.repeat(shape[-1])[: shape[-1]] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g) * 0.9
    x.view(shape[0], -1)[0, ::3] = 1.0  # exactly at a threshold of 1 from rest
    for record in (False, True):
        with torch.no_grad():
            fast = run_neuron_layer(n, x, record_membrane=record)
        slow = run_neuron_layer(n, x.clone().requires_grad_(True), record_membrane=record)
        assert torch.equal(fast.spikes, slow.spikes.detach())
        if record:
            assert torch.equal(fast.membrane, slow.membrane.detach())
    assert len(calls) == 2
