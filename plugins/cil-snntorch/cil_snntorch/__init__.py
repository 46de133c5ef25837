"""cil plugin: wrap snntorch models unchanged (see :mod:`cil_snntorch.adapter`)."""


def __getattr__(name: str):  # keep `import cil_snntorch.plugin` free of snntorch imports
    if name in ("SnnTorchAdapter", "run_native"):
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(name)


__all__ = ["SnnTorchAdapter", "run_native"]
