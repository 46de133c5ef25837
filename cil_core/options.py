"""Options declared once, in the signature of the thing they configure.

An algorithm's, backend's or adapter's options are the keyword parameters of its constructor
(or factory), with their type annotations and defaults; ranges are checked by the constructor
itself and raise :class:`~cil_core.errors.OptionError`. From that one declaration this module

* validates options at the door: an unknown name gets the list of valid ones and the closest
  match; a value of the wrong type names the option, the expected type and what was given;
* describes them (``cil describe NAME``, the docs tables): name, type, default, and the line of
  the docstring that mentions the option.
"""

from __future__ import annotations

import difflib
import json
import re
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Union

from .errors import OptionError


@dataclass(frozen=True)
class OptionSpec:
    """One declared option."""

    name: str
    annotation: Any
    default: Any
    required: bool

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)


def declared_options(factory: Callable[..., Any]) -> tuple[dict[str, OptionSpec], bool]:
    """The options ``factory`` declares, following ``**kw`` up the ``__init__`` chain of a class
    (a subclass passing ``**kw`` to its parent accepts the parent's options). Returns the options
    and whether further names are accepted (an unresolved ``**kwargs``)."""
    out: dict[str, OptionSpec] = {}
    if inspect.isclass(factory):
        chain = [k.__dict__["__init__"] for k in factory.__mro__ if "__init__" in k.__dict__ and k is not object]
        skip_self = True
    else:
        chain, skip_self = [factory], False
    open_ended = False
    for func in chain:
        func = inspect.unwrap(func)
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            return out, True
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:  # an annotation that cannot be resolved: check names only
            hints = {}
        params = list(sig.parameters.values())[1 if skip_self else 0:]
        var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in out:
                out[p.name] = OptionSpec(p.name, hints.get(p.name, Any), None if p.default is p.empty else p.default,
                                         p.default is p.empty)
        if not var_kw:
            open_ended = False
            break
        open_ended = True
        if not skip_self:
            break
    return out, open_ended


def validate(factory: Callable[..., Any], options: Mapping[str, Any], what: str, skip: int = 0) -> dict[str, Any]:
    """Check ``options`` against what ``factory`` declares (less its first ``skip`` parameters,
    e.g. the model an adapter receives); return them unchanged (ints given for floats are
    passed as they are). Raises :class:`OptionError` naming the problem."""
    declared, open_ended = declared_options(factory)
    declared = dict(list(declared.items())[skip:])
    for name, value in options.items():
        spec = declared.get(name)
        if spec is None:
            if open_ended:
                continue
            valid = ", ".join(sorted(declared)) or "none"
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise OptionError(f"unknown option {name!r} for {what} (valid options: {valid}){hint}")
        if not _matches(value, spec.annotation):
            hint = ""
            if isinstance(value, str):  # Python's spelling of a JSON value typed on the command line
                meant = {"none": None, "true": True, "false": False}.get(value.strip().lower(), value)
                if meant is not value and _matches(meant, spec.annotation):
                    hint = f"; for {meant!r} write {json.dumps(meant)} (values are read as JSON)"
            raise OptionError(f"option {name!r} of {what} must be {spec.type_name}, got {value!r} "
                              f"({type(value).__name__}){hint}")
    missing = [n for n, s in declared.items() if s.required and n not in options]
    if missing:
        raise OptionError(f"{what} needs the option(s) {', '.join(missing)}")
    return dict(options)


def describe(factory: Callable[..., Any]) -> list[dict[str, str]]:
    """One row per option: name, type, default and the docstring line that mentions it."""
    declared, _ = declared_options(factory)
    doc = inspect.getdoc(factory) or ""
    if inspect.isclass(factory):
        doc += "\n" + "\n".join(inspect.getdoc(k) or "" for k in factory.__mro__[1:] if k is not object)
    flat = " ".join(doc.split())
    rows = []
    for spec in declared.values():
        m = re.search(rf"``{re.escape(spec.name)}``(?: = [^(]*?)?\s*\(((?:[^()]|\([^()]*\))*)\)", flat)
        line = m.group(1).strip() if m else ""
        rows.append({"name": spec.name, "type": spec.type_name,
                     "default": "(required)" if spec.required else repr(spec.default), "doc": line})
    return rows


def _matches(value: Any, ann: Any) -> bool:
    if ann is Any or ann is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _matches(value, typing.get_args(ann)[0])
    if origin is Union or (origin is not None and type(ann).__name__ == "UnionType"):
        return any(_matches(value, a) for a in typing.get_args(ann))
    if type(ann).__name__ == "UnionType":
        return any(_matches(value, a) for a in typing.get_args(ann))
    if origin is Literal:
        return value in typing.get_args(ann)
    if ann is type(None) or ann is None:
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if origin in (tuple, list, typing.Sequence) or ann in (tuple, list) or origin is getattr(
            __import__("collections.abc").abc, "Sequence"):
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        return len(args) != 1 or all(_matches(v, args[0]) for v in value)
    if origin is dict or ann is dict:
        return isinstance(value, dict)
    if inspect.isclass(ann):
        return isinstance(value, ann)
    return True  # an annotation this checker does not know: the constructor decides


def _type_name(ann: Any) -> str:
    if ann is Any or ann is inspect.Parameter.empty:
        return "any"
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(ann)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin is Union or type(ann).__name__ == "UnionType":
        return " | ".join(_type_name(a) for a in typing.get_args(ann))
    if ann is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(_type_name(a) if a is not Ellipsis else "..." for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(ann, "__name__", str(ann))


__all__ = ["OptionSpec", "declared_options", "validate", "describe"]
