"""What a Xylo chip is, as data: sizes, registers, decays, spike caps, state width.

The backend's ``check`` and ``transfer`` read every limit from a :class:`XyloChip` value; no
size or domain rule is written anywhere else: the sizes, the synaptic current and the single
hidden population are the backend's ``requires`` (:attr:`XyloChip.requirements`, a
:class:`~cil_core.hardware.domains.Requirements` the session checks), the decays, weights,
thresholds and spike counts are domains (:class:`ShiftDecay`, :class:`IntegerRange`). Sources: rockpool's Xylo mapper (its design-rule
checks) and xylosim's C++ core (``XyloIAFNeuron.h``: 16-bit state, 8-bit weights, 15 input,
31 hidden and 1 output spike per neuron and step; decays ``v -= v >> dash`` with 4-bit dashes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cil_core.hardware.domains import IntegerRange, Limit, Requirements, ShiftDecay

__all__ = ["XyloChip", "AUDIO2", "AUDIO3", "IMU", "CHIPS"]


@dataclass(frozen=True)
class XyloChip:
    """One Xylo core's limits and parameter domains.

    The network it runs: input channels → one hidden population (feed-forward input synapses,
    optional recurrent synapses) → an output population, every neuron with a synaptic current
    and a bit-shift leak. A chain of hidden layers (``hidden_layers`` above 1, Xylo IMU) is held
    as blocks of that one population: the first layer's neurons receive the input synapses, each
    further layer is driven by its predecessor through the recurrent matrix, the last layer's
    neurons drive the output synapses."""

    name: str
    inputs: Limit
    hidden: Limit
    outputs: Limit
    #: weights: ``weight_bits``-bit signed codes, left-shifted by one shift per matrix
    weight_bits: int
    weight_shift: IntegerRange
    #: membranes, currents, thresholds, biases: ``state_bits``-bit saturating integers
    state_bits: int
    threshold: IntegerRange
    bias: IntegerRange
    #: β = 1 - 2^-dash_mem, α = 1 - 2^-dash_syn (dash_syn = 0 would clear every input: refused)
    beta: ShiftDecay
    alpha: ShiftDecay
    #: spikes per channel (input) or neuron and step the core processes / emits
    input_spikes: IntegerRange
    hidden_spikes_per_step: int
    output_spikes_per_step: int
    #: rockpool's subpackage whose ``XyloSim`` simulates this core (imported without samna)
    rockpool_package: str = "rockpool.devices.xylo.syns61201"
    has_bias: bool = True
    has_recurrent: bool = True
    #: the hidden neuron layers it runs, ``(min, max)`` (``max`` None: any number), and the fix
    hidden_layers: tuple[int, int | None] = (1, 1)
    hidden_fix: str = "the chip runs Dense -> Neuron (hidden) -> Dense -> Neuron (output): use a single hidden layer"
    #: the neurons of all hidden layers together, and of the first (input synapses reach them) and
    #: last (they drive the output synapses) hidden layer (None: ``hidden`` bounds them)
    hidden_total: Limit | None = None
    first_hidden: Limit | None = None
    last_hidden: Limit | None = None
    #: synapses per hidden neuron in rockpool's specification (``weights_in``' last axis)
    synapses: int = 2
    #: the layer chain it runs, for the refusal of any other
    chain: str = field(default="Dense -> Neuron (hidden) -> Dense -> Neuron (output)")

    @property
    def requirements(self) -> Requirements:
        """What the chip requires of every network (the backend's ``requires``): a synaptic
        current in every neuron, the number of hidden layers, and its sizes."""
        return Requirements(
            neuron_features={"synaptic-current": "every Xylo neuron has one, decayed before it reaches the membrane: "
                             "use snn.Synaptic (or norse LIF / sinabs LIF with tau_syn) with alpha = 1 - 2^-k, "
                             "e.g. 0.5, 0.75, 0.875"},
            hidden_layers=self.hidden_layers, hidden_fix=self.hidden_fix,
            inputs=self.inputs, hidden=self.hidden, outputs=self.outputs, first_hidden=self.first_hidden,
            last_hidden=self.last_hidden, hidden_total=self.hidden_total, chip=self.name)

    @property
    def state(self) -> IntegerRange:
        """The saturating state register (membranes, synaptic currents)."""
        return IntegerRange("state", -(2 ** (self.state_bits - 1)), 2 ** (self.state_bits - 1) - 1)

    def table(self) -> list[tuple[str, str]]:
        """The declaration as ``(what, value)`` rows (the README and the docs show it)."""
        lo, hi = self.hidden_layers
        layers = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo}..{hi}"
        rows = [
            ("input channels", f"<= {self.inputs.maximum}"),
            ("hidden layers (blocks of one population)" if hi != 1 else "hidden layers", layers),
            ("hidden neurons (one population)", f"<= {(self.hidden_total or self.hidden).maximum}"),
        ]
        for label, limit in (("neurons in the first hidden layer", self.first_hidden),
                             ("neurons in the last hidden layer", self.last_hidden)):
            if limit is not None:
                rows.append((label, f"<= {limit.maximum}"))
        return rows + [
            ("output neurons", f"<= {self.outputs.maximum}"),
            ("weights", f"int{self.weight_bits}, left shift {self.weight_shift.lo}..{self.weight_shift.hi} per matrix"),
            ("thresholds", f"int{self.state_bits}, {self.threshold.lo}..{self.threshold.hi}"),
            ("biases", f"int{self.state_bits}" if self.has_bias else "none"),
            ("membrane decay beta", f"1 - 2^-k, k = {self.beta.min_shift}..{self.beta.max_shift}"),
            ("synaptic decay alpha", f"1 - 2^-k, k = {self.alpha.min_shift}..{self.alpha.max_shift}"),
            ("input spikes / channel / step", f"{self.input_spikes.lo}..{self.input_spikes.hi}"),
            ("spikes / neuron / step", f"hidden <= {self.hidden_spikes_per_step}, output <= {self.output_spikes_per_step}"),
            ("state", f"int{self.state_bits}, saturating"),
        ]


#: Xylo Audio 2 (SYNS61201), rockpool's ``devices.xylo.syns61201``
AUDIO2 = XyloChip(
    name="Xylo Audio 2",
    inputs=Limit("input channels", 16, "reduce the input features to at most 16 channels (e.g. PCA or a filter bank)"),
    hidden=Limit("hidden neurons", 1000, "use at most 1000 neurons in the hidden layer"),
    outputs=Limit("output neurons", 8, "use at most 8 output classes or neurons"),
    weight_bits=8,
    weight_shift=IntegerRange("weight shift", 0, 7),
    state_bits=16,
    threshold=IntegerRange("threshold", 1, 2 ** 15 - 1),
    bias=IntegerRange("bias", -(2 ** 15), 2 ** 15 - 1),
    beta=ShiftDecay("beta", 0, 15),
    alpha=ShiftDecay("alpha", 1, 15),
    input_spikes=IntegerRange("input spike count", 0, 15),
    hidden_spikes_per_step=31,
    output_spikes_per_step=1,
)

#: Xylo Audio 3 (SYNS65302): the same integer core (rockpool simulates it with the ``XyloSim`` of
#: ``syns63300``, over ``xylosim.v2``), 992 hidden neurons (rockpool's mapper default) and up to 16
#: output channels (its design-rule check). ``syns65302``'s own ``__init__`` imports samna
#: unguarded, so its simulator is reached through ``syns63300``.
AUDIO3 = replace(
    AUDIO2, name="Xylo Audio 3",
    hidden=Limit("hidden neurons", 992, "use at most 992 neurons in the hidden layer"),
    outputs=Limit("output neurons", 16, "use at most 16 output classes or neurons"),
    rockpool_package="rockpool.devices.xylo.syns63300")


#: Xylo IMU (SYNS63300), rockpool's ``devices.xylo.syns63300``: the same integer core
#: (``xylosim.v2``: int8 weights, int16 state, 15/31/1 spikes per step), one synapse per neuron,
#: <= 16 inputs, <= 496 hidden neurons (its mapper's ``max_hidden_neurons``), <= 16 outputs. Its
#: input synapses reach only the first <= 128 hidden neurons (the input expansion neurons) and
#: its output synapses leave only from the last <= 128 (the output expansion neurons;
#: ``config_from_specification`` keeps the first/last 128 and drops the rest). rockpool 3.1's
#: mapper allocates the layer the input drives and the layer that drives the output as two
#: different blocks, so a single hidden layer fails there (``ValueError: 8 is not in list`` for
#: 16-8-2); cil follows the vendor's mapper and asks for at least two hidden layers. Further
#: layers sit between them in the recurrent matrix, so every hidden layer adds one step of delay.
IMU = replace(
    AUDIO2, name="Xylo IMU",
    hidden=Limit("hidden neurons", 496, "use at most 496 hidden neurons"),
    outputs=Limit("output neurons", 16, "use at most 16 output classes or neurons"),
    hidden_layers=(2, None),
    hidden_fix=("rockpool's Xylo IMU mapper needs the layer the input drives and the layer that drives the output "
                "to be two different hidden layers: use a chain of at least two, e.g. Linear, Synaptic, Linear, "
                "Synaptic, Linear, Synaptic (16-8-8-2)"),
    hidden_total=Limit("hidden neurons", 496, "the hidden layers share 496 neurons: make them smaller or fewer"),
    first_hidden=Limit("hidden neurons", 128, "Xylo IMU's input synapses reach 128 neurons (input expansion "
                       "neurons): use at most 128 in the first hidden layer"),
    last_hidden=Limit("hidden neurons", 128, "Xylo IMU's output synapses leave from 128 neurons (output "
                      "expansion neurons): use at most 128 in the last hidden layer"),
    synapses=1,
    rockpool_package="rockpool.devices.xylo.syns63300",
    chain="Dense -> Neuron (hidden 1) -> Dense -> Neuron (hidden 2) [-> Dense -> Neuron ...] -> Dense -> Neuron (output)")

#: the chips the backend's ``chip`` option names
CHIPS: dict[str, XyloChip] = {"audio2": AUDIO2, "audio3": AUDIO3, "imu": IMU}
