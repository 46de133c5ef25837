"""Shared check for adapter tests: the BPTT gradient through a library's own forward pass and
the gradient CIL-SPL computes with the ideal chip in the loop, for the same loss."""

from __future__ import annotations

from typing import Any, Callable

import torch

import cil_core as cil


def native_and_cil_spl_gradients(model: torch.nn.Module, net: Any, x: torch.Tensor, y: torch.Tensor,
                                 run_native: Callable[[Any, torch.Tensor], torch.Tensor], **trainer_options: Any
                                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], cil.Trainer]:
    """Gradients of the rate readout's cross entropy w.r.t. ``net``'s module parameters:
    ``(through run_native(model, x), through CIL-SPL's forward value on ideal, the trainer)``.

    ``model`` and ``net`` may be the same module (``net`` wraps it) or twins; the trainer is
    returned ready for a ``fit`` that trains ``net``'s module in place. Asserts that CIL-SPL's
    forward value came from the chip."""
    readout = cil.Readout("rate")
    model.zero_grad()
    readout.loss(run_native(model, x), y).backward()
    # parameters the library keeps frozen (requires_grad=False, e.g. LeakyParallel's decays) have no gradient
    native = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    wrapped = net if isinstance(net, cil.WrappedNetwork) else cil.wrap(net)
    trainer = cil.Trainer(wrapped, "ideal", "cil-spl", **trainer_options)
    trainer.algorithm.setup(trainer.state, cil.SpikeData(x, y))
    out, source = trainer.algorithm.forward_value(trainer.state, x)
    assert source == "hardware"
    wrapped.module.zero_grad()
    readout.loss(out, y).backward()
    cil_grads = {k: p.grad.clone() for k, p in wrapped.module.named_parameters() if p.grad is not None}
    return native, cil_grads, trainer


def native_and_wrapped_bptt_gradients(model: torch.nn.Module, net: Any, x: torch.Tensor,
                                      run_native: Callable[[Any, torch.Tensor], torch.Tensor], seed: int
                                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of one smooth function of every output value, :math:`L = \\sum w \\odot out / B`
    with a seeded random ``w`` over the output features, w.r.t. ``model``'s parameters: through the
    library's own forward (``run_native(model, x)``) and through the wrapped network's software
    pass (``net(x)``). Parameters without a gradient are left out of both."""
    w = torch.randn(*run_native(model, x).shape[2:], generator=torch.Generator().manual_seed(seed))
    params = dict(model.named_parameters())

    def grads(out: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        ((out * w).sum() / out.shape[1]).backward()
        return {k: p.grad.clone() for k, p in params.items() if p.grad is not None}

    native = grads(run_native(model, x))
    return native, grads(net(x))


def neuron_parameter_names(net: Any) -> list[str]:
    """The names of ``net``'s trainable neuron parameters (beta, alpha, threshold, spike
    factor: :meth:`~cil_core.network.spec.NetworkSpec.neuron_parameters`). Both helpers above
    compare every parameter of the model that has a gradient, these included: a test asserts
    they are among the compared ones."""
    return [p.name for _, _, p in net.spec.neuron_parameters()]


def snntorch_layer_traces(model: torch.nn.Module, x: torch.Tensor
                          ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """snntorch's output, and the spikes and membranes of every neuron layer in call order
    (forward hooks on each ``snn.SpikingNeuron`` while ``cil_snntorch.run_native`` runs)."""
    import snntorch as snn
    from cil_snntorch import run_native

    spikes: dict[str, list[torch.Tensor]] = {}
    mems: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, snn.SpikingNeuron):
            def hook(mod, inp, out, name=name):
                spikes.setdefault(name, []).append((out[0] if isinstance(out, tuple) else out).detach())
                mems.setdefault(name, []).append(mod.mem.detach().clone())
            handles.append(m.register_forward_hook(hook))
    try:
        out = run_native(model, x)
    finally:
        for h in handles:
            h.remove()
    return out, [torch.stack(v) for v in spikes.values()], [torch.stack(v) for v in mems.values()]


def assert_layer_traces_equal(kind: str, ref: torch.Tensor, hidden: list[torch.Tensor], mems: list[torch.Tensor],
                              obs: Any, soft: Any) -> None:
    """The library's trace (``ref`` output, per-layer ``hidden`` spikes and ``mems`` membranes, e.g.
    from :func:`snntorch_layer_traces`) equals cil's bit for bit: the chip observation ``obs``
    (output, layer spikes) and the software pass ``soft`` (output, layer membranes, recorded with
    ``record_membrane=True``); and the comparison is not vacuous: every neuron layer fires, none
    saturates (firing rate in (0.01, 0.9))."""
    assert torch.equal(obs.output, ref), f"{kind}: {(obs.output != ref).sum()} of {ref.numel()} values differ"
    assert torch.equal(soft.output, ref)
    assert len(hidden) == len(obs.layers) == len(soft.layers)
    for k, (h, o) in enumerate(zip(hidden, obs.layers)):
        assert torch.equal(o.spikes, h), f"{kind}: neuron layer {k}: {(o.spikes != h).sum()} values differ"
    for k, (m, o) in enumerate(zip(mems, soft.layers)):
        assert torch.equal(o.membrane, m), f"{kind}: neuron layer {k}: {(o.membrane != m).sum()} membranes differ"
    for k, o in enumerate(obs.layers):
        rate = float((o.spikes != 0).float().mean())
        assert 0.01 < rate < 0.9, (kind, k, rate)
