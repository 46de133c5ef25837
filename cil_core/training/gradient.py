"""Gradient algorithms: the offline baseline and CIL-SPL (chip forward, software backward).

Both minimise the readout loss :math:`\\mathcal{L}(z(\\hat y), y)` with a torch optimizer. They
differ only in where the forward value :math:`\\hat y` comes from:

* ``offline``: :math:`\\hat y = f_{sw}(x; W)`, the software model (BPTT with surrogate
  gradients); the trained weights are transferred to the chip only for evaluation.
* ``cil-spl`` (Liu et al. 2024; Cramer et al. 2020 with ``observe="layers"``): the weights are
  transferred and the chip runs the batch, then

  .. math:: \\hat y = f_{sw}(x; W) + \\mathrm{sg}\\big[f_{hw}(x; T(W)) - f_{sw}(x; W)\\big]

  (``sg`` = stop-gradient): the forward value is the chip's output, the gradient
  :math:`\\partial \\hat y/\\partial W` is the software model's. With ``observe="layers"`` every
  hidden layer's spikes (and membranes, if the backend measures them) are substituted the same
  way, so each software layer is evaluated at the chip's states.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import SpikeData, as_dense
from ..errors import CilError, HardwareError
from ..hardware.transfer import straight_through
from .algorithm import Algorithm, StepResult, TrainState


class GradientAlgorithm(Algorithm):
    """Shared optimizer handling. Options: ``optimizer`` (``"adam"`` or ``"sgd"``), ``lr``,
    ``weight_decay``, ``grad_clip`` (max global norm, ``None`` = off)."""

    def __init__(self, optimizer: str = "adam", lr: float = 5e-3, weight_decay: float = 0.0,
                 grad_clip: float | None = None) -> None:
        if optimizer not in ("adam", "sgd"):
            raise CilError(f"unknown optimizer {optimizer!r}; use 'adam' or 'sgd'")
        self.optimizer_name, self.lr, self.weight_decay, self.grad_clip = optimizer, lr, weight_decay, grad_clip
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, state: TrainState, train: SpikeData) -> None:
        self._make_optimizer(state)

    def _make_optimizer(self, state: TrainState) -> None:
        params = list(state.network.synaptic_parameters().values())
        cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.SGD
        self.optimizer = cls(params, lr=self.lr, weight_decay=self.weight_decay)

    def forward_value(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        """The output whose loss is minimised, and where its value came from."""
        raise NotImplementedError

    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        if self.optimizer is None:
            self._make_optimizer(state)
        assert self.optimizer is not None
        x, y = batch
        out, source = self.forward_value(state, x)
        loss = state.readout.loss(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(state.network.synaptic_parameters().values())
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        backup = [p.detach().clone() for p in params]
        self.optimizer.step()
        if not all(torch.isfinite(p).all() for p in params):
            # never leave the model holding NaN weights: roll back and stop with the reason
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)
            raise CilError(f"step {state.step}: the update produced non-finite weights (loss {float(loss.detach()):.4g}); "
                           "the weights before the step were kept. Lower the learning rate or clip gradients.")
        acc = float(state.readout.correct(out.detach(), y)) / len(y)
        return StepResult(float(loss.detach()), {f"{source}_accuracy": acc})

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore the optimizer (call after :meth:`setup`)."""
        if d.get("optimizer") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(d["optimizer"])


class Offline(GradientAlgorithm):
    """BPTT with surrogate gradients on the software model; the chip is not used in training."""

    name = "offline"

    def forward_value(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        return state.network(as_dense(x)), "software"


class CilSpl(GradientAlgorithm):
    """Chip-in-the-loop proxy learning: chip forward, software backward (straight-through).

    Options (besides the optimizer's): ``observe`` = ``"output"`` (substitute the output only,
    Liu et al.) or ``"layers"`` (substitute every neuron layer's spikes, and membranes when the
    backend measures them, Cramer et al.).
    """

    name = "cil-spl"

    def __init__(self, observe: str = "output", **kw: Any) -> None:
        super().__init__(**kw)
        if observe not in ("output", "layers"):
            raise CilError(f"unknown observe={observe!r}; use 'output' or 'layers'")
        self.observe = observe

    def setup(self, state: TrainState, train: SpikeData) -> None:
        if self.observe == "layers" and not state.session.observes_layers:
            raise CilError(
                f"backend '{state.session.name}' cannot observe hidden layers; use observe='output'"
            )
        super().setup(state, train)

    def forward_value(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        net = state.network
        record = self.observe == "layers"
        obs = state.observe(net.detached_parameters(), x, record=record)
        dense = as_dense(x)
        if record:
            if obs.layers is None or len(obs.layers) != len(net.spec.neuron_layers()):
                raise HardwareError(
                    f"backend '{state.session.name}' returned no per-layer observations for record=True",
                    state.session.name,
                )
            layers = obs.layers if state.session.observes_membrane else [
                type(o)(o.spikes, None) for o in obs.layers
            ]
            sw = net.run(dense, observations=layers).output
        else:
            sw = net(dense)
        hw = obs.output
        if hw.shape != sw.shape:
            raise HardwareError(
                f"backend '{state.session.name}' returned output {tuple(hw.shape)}, the software model {tuple(sw.shape)}",
                state.session.name,
            )
        return straight_through(sw, hw), "hardware"
