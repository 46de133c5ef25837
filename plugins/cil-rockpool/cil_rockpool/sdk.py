"""Import rockpool without ``samna``.

``import rockpool`` tries ``import samna`` (``rockpool.utilities.backend_management`` runs
``check_samna_available()`` when imported). The ``samna`` on the package registry is a stub that
tries to pip-install SynSense's SDK from an unreachable host *when imported*, and it is present
wherever cil-sinabs is installed. While rockpool is imported,
:func:`cil_core.plugin.sdk.blocked_modules` therefore puts ``None`` under ``sys.modules["samna"]``
(Python's own way of making an import fail at once) and removes it afterwards: rockpool records
samna as unavailable and nothing is downloaded. (cil-xylo uses the same core helper: plugins
never import each other.)
"""

from __future__ import annotations

import types

from cil_core.errors import PluginError
from cil_core.plugin.sdk import blocked_modules

#: the rockpool release this adapter is written and tested for
ROCKPOOL_VERSION = "3.1.0"


def import_rockpool() -> types.ModuleType:
    """``rockpool`` with its torch modules loaded (``rockpool.nn.modules``,
    ``rockpool.nn.combinators``), imported without samna. Raises
    :class:`~cil_core.errors.PluginError` naming the cause if it cannot be."""
    with blocked_modules("samna"):
        try:
            import rockpool
            import rockpool.nn.combinators  # noqa: F401
            import rockpool.nn.modules  # noqa: F401
            import rockpool.nn.modules.torch.lif_torch  # noqa: F401
        except Exception as exc:  # pragma: no cover - depends on the installation
            from importlib import metadata

            try:
                have = f"rockpool {metadata.version('rockpool')}"
            except metadata.PackageNotFoundError:
                have = "rockpool not installed"
            raise PluginError(f"cil-rockpool cannot import rockpool's torch modules: {type(exc).__name__}: {exc} "
                              f"(installed: {have}; cil-rockpool is written for rockpool=={ROCKPOOL_VERSION}: "
                              f"pip install rockpool=={ROCKPOOL_VERSION} torch)") from exc
    return rockpool
