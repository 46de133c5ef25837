"""cil plugin for NIR (the Neuromorphic Intermediate Representation).

* :func:`from_nir` — a NIR graph (object or ``.nir`` file) → :class:`NIRNetwork`, a torch module
  that :func:`cil_core.wrap` turns into a trainable network (:func:`load` does both);
* :func:`to_nir` — a wrapped network, its deployment on a backend, or a trainer → ``nir.NIRGraph``
  (:func:`export` also writes the file).

The conventions (time step, discretization, reset, parameter shapes) are stated in
:mod:`cil_nir.importer`.
"""

_EXPORTS = {"NIRNetwork": "importer", "NirAdapter": "importer", "from_nir": "importer", "load": "importer",
            "to_nir": "exporter", "export": "exporter", "NIRSemanticsWarning": "exporter"}


def __getattr__(name: str):  # keep `import cil_nir.plugin` free of nir / h5py imports
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
