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
  way, so each software layer is evaluated at the chip's states. The software pass
  :math:`f_{sw}` runs the neuron parameters the deployment says the chip realises
  (:func:`cil_core.hardware.realised_neurons`: e.g. β = 0.875 where the model says 0.9 and the
  chip rounds decays onto its bit-shift grid).
* ``cil-spl`` with ``proxy=`` (Liu et al.'s ANN-to-SNN variant): a differentiable proxy
  :math:`z_\phi(x)` (e.g. the ANN the network was converted from) gives the per-class output
  rates in the readout's units (its logits: for the rate readout with scale :math:`s`,
  :math:`s\,T` times the rate); with :math:`\ell` the readout's logits of a chip output,

  .. math:: \hat z = z_\phi(x) + \mathrm{sg}\big[\ell(f_{hw}(x; T(W(\phi)))) - z_\phi(x)\big]

  so the loss value is the chip's and the gradient reaches :math:`\phi` through the proxy only;
  the optimizer trains :math:`\phi` and the chip runs :math:`W(\phi)` (the proxy's
  ``network_parameters()``, e.g. the converted ANN weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..data import SpikeData, as_dense
from ..errors import CilError, HardwareError, OptionError
from ..hardware.transfer import straight_through
from .algorithm import Algorithm, StepResult, TrainState

if TYPE_CHECKING:  # pragma: no cover
    from ..data.stream import BatchStream


class GradientAlgorithm(Algorithm):
    """Shared optimizer handling. Options: ``optimizer`` (``"adam"`` or ``"sgd"``), ``lr``,
    ``weight_decay``, ``grad_clip`` (max global norm, ``None`` = off). On resume, a new
    ``lr``, ``weight_decay`` or ``grad_clip`` is applied; another optimizer is refused."""

    resume_safe = frozenset({"lr", "weight_decay", "grad_clip"})
    streaming = True  # setup does not read the data: any stream of batches trains

    def __init__(self, optimizer: str = "adam", lr: float = 5e-3, weight_decay: float = 0.0,
                 grad_clip: float | None = None) -> None:
        if optimizer not in ("adam", "sgd"):
            raise OptionError(f"unknown optimizer {optimizer!r}; use 'adam' or 'sgd'")
        self.optimizer_name, self.lr, self.weight_decay, self.grad_clip = optimizer, lr, weight_decay, grad_clip
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, state: TrainState, train: "SpikeData | BatchStream") -> None:
        self._make_optimizer(state)

    def trained_parameters(self, state: TrainState) -> list[torch.Tensor]:
        """The tensors the optimizer updates (the network's synaptic weights)."""
        return list(state.network.synaptic_parameters().values())

    def _make_optimizer(self, state: TrainState) -> None:
        params = self.trained_parameters(state)
        cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.SGD
        self.optimizer = cls(params, lr=self.lr, weight_decay=self.weight_decay)

    def forward_value(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        """The output whose loss is minimised, and where its value came from."""
        raise NotImplementedError

    def forward_logits(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        """The class scores ``[B, C]`` whose cross entropy (the readout's loss) is minimised: the
        readout's logits of :meth:`forward_value`."""
        out, source = self.forward_value(state, x)
        return state.readout.logits(out), source

    def step(self, state: TrainState, batch: tuple[Any, torch.Tensor]) -> StepResult:
        if self.optimizer is None:
            self._make_optimizer(state)
        assert self.optimizer is not None
        x, y = batch
        z, source = self.forward_logits(state, x)
        loss = F.cross_entropy(z, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = self.trained_parameters(state)
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
        acc = float((z.detach().argmax(-1) == y).sum()) / len(y)
        return StepResult(float(loss.detach()), {f"{source}_accuracy": acc})

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore the optimizer (call after :meth:`setup`)."""
        if d.get("optimizer") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(d["optimizer"])
            for group in self.optimizer.param_groups:  # this run's options win over the saved ones
                group["lr"], group["weight_decay"] = self.lr, self.weight_decay


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

    ``proxy``: an ``nn.Module`` mapping the dense time-major input ``[T, B, ...]`` to per-class
    output rates ``[B, C]`` in the readout's logit units (rate readout with scale ``s``:
    ``s * T * rate``; e.g. the ANN a network was converted from, with ``s = λ_L / T`` for its
    last layer's normalisation factor ``λ_L``). Its value is replaced by the readout's logits of
    the chip's output (module docstring), so the gradient flows through the proxy instead of the
    SNN, and the optimizer trains ``proxy.parameters()``. Before every chip call (and in
    :meth:`finish`) the network's weights are set to ``proxy.network_parameters()`` (a dict by
    parameter name) when the proxy has that method; without it the proxy must use the network's
    own weight tensors. Needs ``observe="output"``.
    """

    name = "cil-spl"

    def __init__(self, observe: str = "output", proxy: torch.nn.Module | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if observe not in ("output", "layers"):
            raise OptionError(f"unknown observe={observe!r}; use 'output' or 'layers'")
        if proxy is not None and observe != "output":
            raise OptionError("a proxy replaces the output only; use observe='output' with proxy=")
        if proxy is not None and not isinstance(proxy, torch.nn.Module):
            raise OptionError(f"proxy must be a torch.nn.Module, got {type(proxy).__name__}")
        self.observe, self.proxy = observe, proxy

    def setup(self, state: TrainState, train: "SpikeData | BatchStream") -> None:
        if self.observe == "layers" and not state.session.observes_layers:
            raise CilError(
                f"backend '{state.session.name}' cannot observe hidden layers; use observe='output'"
            )
        super().setup(state, train)

    def trained_parameters(self, state: TrainState) -> list[torch.Tensor]:
        if self.proxy is None:
            return super().trained_parameters(state)
        return list(self.proxy.parameters())

    def _sync_from_proxy(self, state: TrainState) -> None:
        if self.proxy is not None and hasattr(self.proxy, "network_parameters"):
            with torch.no_grad():
                state.network.load_parameters(self.proxy.network_parameters())

    def finish(self, state: TrainState) -> None:
        self._sync_from_proxy(state)

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        if self.proxy is not None:
            d["proxy"] = self.proxy.state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if self.proxy is not None and d.get("proxy") is not None:
            self.proxy.load_state_dict(d["proxy"])
        super().load_state_dict(d)

    def forward_logits(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        if self.proxy is None:
            return super().forward_logits(state, x)
        self._sync_from_proxy(state)
        hw = state.readout.logits(state.observe(state.network.detached_parameters(), x).output)
        z = self.proxy(as_dense(x))
        if z.shape != hw.shape:
            raise CilError(f"the proxy returned {tuple(z.shape)}; the readout's logits of the chip's output are "
                           f"{tuple(hw.shape)}")
        return straight_through(z, hw), "hardware"

    def forward_value(self, state: TrainState, x: Any) -> tuple[torch.Tensor, str]:
        if self.proxy is not None:
            raise CilError("with a proxy the forward value is a logit (forward_logits), not a network output")
        net = state.network
        record = self.observe == "layers"
        obs = state.observe(net.detached_parameters(), x, record=record)
        # the software pass runs the neuron parameters the chip realised (e.g. a decay rounded onto its
        # grid), in software units, so its gradient is the gradient of what the chip runs
        neurons = state.session.realised_neurons(net.spec)
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
            sw = net.run(dense, observations=layers, neurons=neurons).output
        else:
            sw = net.run(dense, neurons=neurons).output
        hw = obs.output
        if hw.shape != sw.shape:
            raise HardwareError(
                f"backend '{state.session.name}' returned output {tuple(hw.shape)}, the software model {tuple(sw.shape)}",
                state.session.name,
            )
        return straight_through(sw, hw), "hardware"
