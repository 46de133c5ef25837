"""Pure numerical kernels (no orchestration, no I/O): surrogate spike functions, synaptic
operators, neuron step functions and their time loop.

The kernels sit above the network vocabulary and below the network runtime: they read layer
descriptions (:mod:`cil_core.network.layers`, :mod:`cil_core.network.neuron`) by duck typing
and import those modules for annotations only (under ``TYPE_CHECKING``); at run time they
import no cil module, so importing them never runs ``cil_core.network``."""
