"""What every backend can run: the capability table, generated from the backends' own
``capabilities`` and ``requires`` declarations (never written by hand).

``python -m cil_core.app.capabilities`` prints the Markdown table the README shows between the
``<!-- capabilities:begin -->`` / ``<!-- capabilities:end -->`` markers; ``--write README.md``
replaces that section in place.

A backend whose options change what it can run (e.g. the Xylo backend's ``chip``) may list
``table_variants``, ``{label: options}``: each gets its own column, ``name (label)``, from an
instance built with those options.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from ..hardware.domains import Requirements
from ..network.description import FEATURES
from ..network.neuron import NEURON_PARAMETER_FIELDS
from .sections import replace_section, section_main

BEGIN, END = "<!-- capabilities:begin -->", "<!-- capabilities:end -->"
_NO_REQUIREMENTS = Requirements()


def registered_backends() -> dict[str, Any]:
    """The loaded backends by name (their classes or factories), wrappers such as ``ray:``
    excluded (they run what the backend they wrap runs)."""
    from ..plugin.registry import get_manager

    reg = get_manager()
    return {n: reg.entry("backends", n).value for n in reg.names("backends") if not n.endswith(":")}


def support(backend: Any, feature: str) -> str:
    """One cell of the table: ``yes``, ``folded`` (batch norm folded at transfer), ``software
    only`` (dropout), or ``no`` (with the backend's hint)."""
    caps = getattr(backend, "capabilities", None)
    if feature == "dropout":
        return "training passes only"
    if caps is None or feature in caps:
        return "yes"
    if feature == "batchnorm":
        return "folded at transfer"
    hint = (getattr(backend, "capability_hints", {}) or {}).get(feature)
    return f"no ({hint})" if hint else "no"


def held_neuron_parameters(backend: Any) -> dict[str, Any] | None:
    """The trained neuron parameters ``backend`` holds (its ``neuron_parameters``,
    ``{field: HeldParameter}``); for a backend class that declares them per instance (they depend
    on its options, e.g. the Xylo chip's decay domain), those of an instance built with its
    defaults (only a class that declares ``capabilities``: a wrapper such as ``ray:`` is never
    started here). ``None``: not declared (a backend without ``capabilities`` checks for itself,
    a wrapper holds what the backend it wraps holds)."""
    held = getattr(backend, "neuron_parameters", None)
    if held is None and isinstance(backend, type) and getattr(backend, "capabilities", None) is not None:
        try:
            held = getattr(backend(), "neuron_parameters", None)
        except Exception:  # needs options, or cannot start here: report what the class declares
            held = None
    return held


def neuron_parameter_support(backend: Any, field: str) -> str:
    """One cell of the trained-neuron-parameter rows: ``per neuron`` / ``per layer`` (with the
    declaration's note), or ``no`` (with the backend's hint)."""
    held = held_neuron_parameters(backend)
    if held is None and getattr(backend, "capabilities", None) is None:
        return "not declared"
    h = (held or {}).get(field)
    if h is None:
        hint = (getattr(backend, "neuron_parameter_hints", {}) or {}).get(field)
        return f"no ({hint})" if hint else "no"
    return h.granularity.replace("-", " ") + (f", {h.note}" if h.note else "")


def with_variants(backends: Mapping[str, Any]) -> dict[str, Any]:
    """``backends`` and, after each, the variants it lists in ``table_variants`` (``{label:
    options}``), as ``"name (label)"``: an instance built with those options."""
    out: dict[str, Any] = {}
    for name in sorted(backends):
        out[name] = backends[name]
        for label, options in (getattr(backends[name], "table_variants", None) or {}).items():
            out[f"{name} ({label})"] = backends[name](**options)
    return out


def markdown_table(backends: Mapping[str, Any] | None = None) -> str:
    """Features (rows) x backends (columns, with their ``table_variants``) as a Markdown table,
    then one row per trainable neuron field: whether the chip holds a trained value of it (per
    neuron, per layer, no)."""
    backends = with_variants(registered_backends() if backends is None else backends)
    names = list(backends)
    rows = ["| feature | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for feature, meaning in FEATURES.items():
        cells = [support(backends[n], feature) for n in names]
        rows.append(f"| {feature}: {meaning} | " + " | ".join(cells) + " |")
    for field in NEURON_PARAMETER_FIELDS:
        cells = [neuron_parameter_support(backends[n], field) for n in names]
        rows.append(f"| trained {field}: a trainable neuron parameter (snntorch learn_*) | " + " | ".join(cells) + " |")
    # what each backend requires of every network (its Requirements declaration)
    declared = {n: getattr(backends[n], "requires", None) for n in names}
    if any(r is not None for r in declared.values()):
        labels = [label for label, _ in _NO_REQUIREMENTS.rows()]
        for j, label in enumerate(labels):
            cells = ["-" if declared[n] is None else declared[n].rows()[j][1] for n in names]
            rows.append(f"| requires: {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def section(backends: Mapping[str, Any] | None = None) -> str:
    backends = registered_backends() if backends is None else backends
    return (f"{BEGIN}\n<!-- generated by `python -m cil_core.app.capabilities --write README.md` from the loaded backends: "
            f"{', '.join(sorted(backends))} -->\n{markdown_table(backends)}\n{END}")


def write(path: Path) -> None:
    """Replace the capability section of ``path`` (which must hold the markers)."""
    replace_section(path, BEGIN, END, section())


def main(argv: list[str] | None = None) -> int:
    return section_main(argv, "python -m cil_core.app.capabilities", __doc__.splitlines()[0], section, BEGIN, END)


__all__ = ["markdown_table", "section", "support", "registered_backends", "held_neuron_parameters",
           "neuron_parameter_support"]

if __name__ == "__main__":
    sys.exit(main())
