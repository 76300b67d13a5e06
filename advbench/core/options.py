"""The one option converter: user text (a ``--set`` value, a TOML entry, a CLI flag) to a typed value.

Defenses, attacks, models, datasets and the training config all convert through :func:`convert`, so one
rule holds everywhere: booleans are true/false/yes/no/on/off/1/0, integers are integral numbers within 64
bits, floats are finite (``nan``, ``inf`` and ``1e400`` are refused) and may be written as fractions
(``2/255``), ``Literal`` fields take one of their choices, ``X | None`` takes ``none``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import tokenize
import types
import typing
from typing import Any, Literal, get_args, get_origin

from advbench.errors import UserError
from advbench.registry import closest
from advbench.threat import parse_eps

INT64 = 2**63


def _in_int64(v: int, raw: Any, where: str) -> int:
    if not -INT64 <= v < INT64:
        raise UserError(f"invalid value {raw!r} for {where}; the integer is out of range (at most 2**63 - 1)")
    return v


def _finite(f: float, raw: Any, where: str) -> float:
    if not math.isfinite(f):
        raise UserError(f"invalid value {raw!r} for {where}; expected a finite number")
    return f


def convert(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (often a string from the command line) to the type ``tp``; UserError naming ``where``."""
    return _convert_one(value, tp, where)


def _union(value: Any, tp: Any, where: str) -> Any:
    args = get_args(tp)
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", ""}):
        if type(None) in args:
            return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, where)
        except UserError as err:
            errors.append(str(err))
    raise UserError(errors[0] if errors else f"invalid value {value!r} for {where}")


def _literal(value: Any, tp: Any, where: str) -> Any:
    choices = get_args(tp)
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text in choices:
        return text
    hint = closest(str(value), [str(c) for c in choices])
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UserError(f"invalid value {value!r} for {where}; choose one of {', '.join(map(str, choices))}{extra}")


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise UserError(f"invalid value {value!r} for {where}; write true or false")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise UserError(f"invalid value {value!r} for {where}; expected an integer")
    if isinstance(value, int):
        return _in_int64(value, value, where)
    text = str(value).strip()
    try:
        return _in_int64(int(text), value, where)  # exact for long digit strings
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        raise UserError(f"invalid value {value!r} for {where}; expected an integer") from None
    if not math.isfinite(f) or not f.is_integer():
        raise UserError(f"invalid value {value!r} for {where}; expected an integer")
    return _in_int64(int(f), value, where)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"invalid value {value!r} for {where}; expected a number")
    if isinstance(value, (int, float)):
        return _finite(float(value), value, where)
    text = str(value).strip()
    if "/" in text:  # paper-style fractions: 2/255
        return _finite(parse_eps(text)[0], value, where)
    try:
        return _finite(float(text), value, where)
    except ValueError:
        raise UserError(f"invalid value {value!r} for {where}; expected a number") from None


def _sequence(value: Any, tp: Any, where: str) -> list[Any] | tuple[Any, ...]:
    (inner, *_) = get_args(tp) or (str,)
    items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
    out = [convert(v, inner, where) for v in items]
    return tuple(out) if get_origin(tp) is tuple else out


def _convert_one(value: Any, tp: Any, where: str) -> Any:
    """Dispatch on the type: unions, literals, bool, int, float, str, list/tuple, dict; other types pass."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(value, tp, where)
    if origin is Literal:
        return _literal(value, tp, where)
    simple = {bool: _bool, int: _int, float: _float}
    if tp in simple:
        return simple[tp](value, where)
    if tp is str:
        return str(value)
    if origin in (list, tuple):
        return _sequence(value, tp, where)
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise UserError(f"invalid value {value!r} for {where}; expected a table")
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (a copy of :func:`_field_types`'s, resolved once per class)."""
    return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _trailing_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` -> {name: comment} for the fields declared in ``cls``'s own body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    line_field: dict[int, str] = {}
    for line_no, line in enumerate(source.splitlines(), 1):
        head = line.strip().split(":", 1)[0]
        if line.startswith("    ") and not line.startswith("     ") and head.isidentifier():
            line_field[line_no] = head
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            out.setdefault(line_field[tok.start[0]], tok.string.lstrip("#").strip())
    return out


def describe_fields(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of every field of dataclass ``cls``: the ``--set`` keys of a defense or attack
    (help: the field's trailing comment in the class body, searched along the class hierarchy)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_trailing_comments(klass))
    hints = field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        kind = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
        rows.append((f.name, kind, default, comments.get(f.name, "")))
    return rows
