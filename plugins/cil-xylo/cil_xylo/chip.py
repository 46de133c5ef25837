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

__all__ = ["XyloChip", "AUDIO2", "AUDIO3", "CHIPS"]


@dataclass(frozen=True)
class XyloChip:
    """One Xylo core's limits and parameter domains.

    The network it runs: input channels → one hidden population (feed-forward input synapses,
    optional recurrent synapses) → an output population, every neuron with a synaptic current
    and a bit-shift leak."""

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
    #: the layer chain it runs, for the refusal of any other
    chain: str = field(default="Dense -> Neuron (hidden) -> Dense -> Neuron (output)")

    @property
    def requirements(self) -> Requirements:
        """What the chip requires of every network (the backend's ``requires``): a synaptic
        current in every neuron, exactly one hidden population, and its sizes."""
        return Requirements(
            neuron_features={"synaptic-current": "every Xylo neuron has one, decayed before it reaches the membrane: "
                             "use snn.Synaptic (or norse LIF / sinabs LIF with tau_syn) with alpha = 1 - 2^-k, "
                             "e.g. 0.5, 0.75, 0.875"},
            hidden_layers=(1, 1), hidden_fix=f"the chip runs {self.chain}: use a single hidden layer",
            inputs=self.inputs, hidden=self.hidden, outputs=self.outputs, chip=self.name)

    @property
    def state(self) -> IntegerRange:
        """The saturating state register (membranes, synaptic currents)."""
        return IntegerRange("state", -(2 ** (self.state_bits - 1)), 2 ** (self.state_bits - 1) - 1)

    def table(self) -> list[tuple[str, str]]:
        """The declaration as ``(what, value)`` rows (the README and the docs show it)."""
        return [
            ("input channels", f"<= {self.inputs.maximum}"),
            ("hidden neurons (one population)", f"<= {self.hidden.maximum}"),
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

#: the chips the backend's ``chip`` option names
CHIPS: dict[str, XyloChip] = {"audio2": AUDIO2, "audio3": AUDIO3}
