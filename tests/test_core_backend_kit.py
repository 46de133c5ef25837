"""The backend test kit (cil_core.testing.check_backend): the ideal backend passes it, and it
catches backends that break the contract — each broken backend below differs from the ideal one
in exactly one way, and the kit must name that way."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

import cil_core as cil
import cil_core.testing
from cil_core.data import as_dense
from cil_core.hardware.ideal import IdealBackend
from cil_core.network.reference import feedforward
from cil_core.testing import check_backend, default_case


def test_the_ideal_backend_meets_the_contract():
    check_backend(IdealBackend())
    check_backend(cil.make_backend("ideal"), seed=3)


@pytest.mark.parametrize("kind", ["membrane readout", "biases", "conv"])
def test_the_ideal_backend_meets_the_contract_on_other_networks(kind):
    if kind == "conv":
        spec = cil.NetworkSpec((cil.Conv2d("c", None, 2, 3, (3, 3), (1, 1), (1, 1)), _leaky(), cil.Flatten(),
                                cil.Dense("d", None, 3 * 5 * 5, 4), _leaky()), (2, 5, 5))
        check_backend(IdealBackend(), spec)  # random parameters and inputs from the spec
        return
    net = feedforward([6, 8, 4], weight_gain=3.0, seed=1, **({"readout": "membrane"} if kind == "membrane readout"
                                                              else {"bias": True}))
    check_backend(IdealBackend(), net.spec, net.detached_parameters(), (torch.rand(10, 5, 6) < 0.4).float())


def test_the_core_tests_mismatched_chip_meets_the_contract():
    from chips import FixedMismatchChip

    check_backend(FixedMismatchChip(sigma=0.5, bits=3, inhibitory=0.5, threshold_sigma=0.6, seed=1))


@pytest.mark.parametrize("cap", [1, 2])
def test_set_splitting_by_max_sets_is_checked(cap):
    class Capped(IdealBackend):
        max_sets = cap

        def transfer(self, spec, params, n_sets=None):
            assert n_sets is None or cap > 1 and n_sets <= cap, f"max_sets={cap} but n_sets={n_sets}"
            return super().transfer(spec, params, n_sets)

    check_backend(Capped())


def test_a_network_that_must_not_fit_is_refused_with_the_limit_named():
    class Small(IdealBackend):
        def check(self, spec):
            for _, layer in spec.synaptic_layers():
                if layer.out_features > 16:
                    raise cil.BackendCapacityError(f"small: neurons per layer: '{layer.weight}' needs "
                                                   f"{layer.out_features}, the chip has 16")

    too_big = feedforward([6, 32, 4]).spec
    check_backend(Small(), too_big=too_big, limit="neurons per layer")
    with pytest.raises(AssertionError, match="does not name the limit 'layers'"):
        check_backend(Small(), too_big=too_big, limit="layers")
    with pytest.raises(AssertionError, match="accepted a network that must not fit"):
        check_backend(IdealBackend(), too_big=too_big)


# ------------------------------------------------------------------ broken backends
class _Broken(IdealBackend):
    """The ideal backend, observing nothing but its output (so that each broken variant below
    breaks one rule only)."""

    observes_layers = False
    observes_membrane = False

    def forward(self, deployment, inputs, record=False):
        return cil.Observation(super().forward(deployment, inputs).output)


class CarriesStateBetweenCalls(_Broken):
    """Never resets: a call starts from the membranes the previous call left behind."""

    def __init__(self):
        self.previous = None

    def forward(self, deployment, inputs, record=False):
        x = as_dense(inputs)
        before, self.previous = self.previous, x
        if before is None or before.shape[1:] != x.shape[1:]:
            return super().forward(deployment, x)
        return cil.Observation(super().forward(deployment, torch.cat([before, x])).output[-x.shape[0]:])


class CrossTalkBetweenSamples(_Broken):
    """Runs the samples back to back: each one starts where the previous sample left off."""

    def forward(self, deployment, inputs, record=False):
        x = as_dense(inputs)
        mixed = x.clone()
        mixed[:, 1:] += x[:, :-1]
        return super().forward(deployment, mixed)


class UploadsTheFirstSetOnly(_Broken):
    max_sets = None

    def transfer(self, spec, params, n_sets=None):
        if n_sets:
            params = {k: v[:1].expand_as(v) for k, v in params.items()}
        return super().transfer(spec, params, n_sets)


class RunsTheLastTransfer(_Broken):
    """Forgets which deployment it runs: always the weights written last."""

    def transfer(self, spec, params, n_sets=None):
        self.held = super().transfer(spec, params, n_sets)
        return self.held

    def forward(self, deployment, inputs, record=False):
        return super().forward(self.held, inputs)


class ClipsTheCallersWeights(_Broken):
    def transfer(self, spec, params, n_sets=None):
        for v in params.values():
            v.clamp_(-0.5, 0.5)
        return super().transfer(spec, params, n_sets)


class DropsAParameter(_Broken):
    def transfer(self, spec, params, n_sets=None):
        dep = super().transfer(spec, params, n_sets)
        del dep.params[spec.parameter_names()[-1]]
        return dep


class BatchFirstOutput(_Broken):
    def forward(self, deployment, inputs, record=False):
        return cil.Observation(super().forward(deployment, inputs).output.transpose(0, 1))


class Silent(_Broken):
    def forward(self, deployment, inputs, record=False):
        return cil.Observation(torch.zeros_like(super().forward(deployment, inputs).output))


class ClaimsLayerObservations(_Broken):
    observes_layers = True


class Noisy(_Broken):
    """Read noise on every call, but it does not say so (stochastic = False)."""

    def __init__(self):
        self.g = torch.Generator().manual_seed(0)

    def forward(self, deployment, inputs, record=False):
        x = as_dense(inputs)
        flips = (torch.rand(x.shape, generator=self.g) < 0.2).float()
        return super().forward(deployment, (x + flips).clamp(max=1))


@pytest.mark.parametrize("backend, message", [
    (CarriesStateBetweenCalls(), "leaks from one call to the next"),
    (CrossTalkBetweenSamples(), "depends on the other samples of the batch"),
    (UploadsTheFirstSetOnly(), "with n_sets=3, set 1 differs from a single call"),
    (RunsTheLastTransfer(), "must run its own deployment"),
    (ClipsTheCallersWeights(), "transfer modified the parameter '0.weight'"),
    (DropsAParameter(), "Deployment.params lacks '1.weight'"),
    (BatchFirstOutput(), r"output of shape \(6, 12, 4\), expected \(12, 6, 4\)"),
    (Silent(), "zero everywhere"),
    (ClaimsLayerObservations(), "observes_layers is set but forward\\(record=True\\) returned no layer"),
    (Noisy(), "leaks from one call to the next"),
], ids=lambda v: type(v).__name__ if isinstance(v, cil.Backend) else "")
def test_the_kit_catches_a_broken_backend(backend, message):
    with pytest.raises(AssertionError, match=message):
        check_backend(backend)


def test_a_stochastic_backend_is_not_held_to_identical_calls():
    noisy = Noisy()
    noisy.stochastic = True  # honest: identical calls may differ
    check_backend(noisy)


def test_a_backend_served_by_hooks_is_checked_through_the_registry(registry_guard):
    """A backend that is not a Backend subclass: its plugin's hooks serve it."""

    class Handle:
        name = "hooked"
        max_sets = 1

    ideal = IdealBackend()

    class Plugin:
        @cil.hookimpl
        def cil_transfer(self, backend, spec, params, n_sets):
            return ideal.transfer(spec, params, n_sets) if isinstance(backend, Handle) else None

        @cil.hookimpl
        def cil_forward(self, backend, deployment, inputs, record):
            return cil.Observation(ideal.forward(deployment, inputs).output) if isinstance(backend, Handle) else None

    cil.register(Plugin(), "hooked-plugin")
    check_backend(Handle())


def test_the_default_case_is_active_and_the_kit_needs_no_test_framework():
    spec, params, x = default_case()
    assert x.shape == (12, 6, 6) and not any(layer.bias for _, layer in spec.synaptic_layers())
    out = cil.simulate(spec, params, x).output
    assert 0 < float(out.mean()) < 1  # neither silent nor saturated
    tree = ast.parse(inspect.getsource(cil_core.testing))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    plugins_or_pytest = [m for m in imported if m.split(".")[0] in ("pytest", "_pytest")
                         or m.startswith("cil_") and m.split(".")[0] != "cil_core"]
    assert not plugins_or_pytest


def _leaky():
    from cil_core.network.reference import leaky_neuron

    return leaky_neuron(0.9)
