"""Pure numerical kernels (no orchestration, no I/O): surrogate spike functions, synaptic
operators, neuron time loops."""
