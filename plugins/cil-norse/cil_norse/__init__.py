"""cil plugin: wrap norse models unchanged (see :mod:`cil_norse.adapter`)."""


def __getattr__(name: str):  # keep `import cil_norse.plugin` free of norse imports
    if name in ("NorseAdapter", "neuron_of", "run_native"):
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(name)


__all__ = ["NorseAdapter", "neuron_of", "run_native"]
