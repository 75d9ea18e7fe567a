"""Validated hyper-parameter dataclasses shared by SSL methods and downstream heads.

Fields declared with :func:`param` carry their allowed range (or choices) as metadata; instances
validate on construction and :meth:`ParamsMixin.from_dict` additionally rejects unknown keys, so a
request body maps onto a params object or fails with a ``ValueError`` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Self


def param(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[str] | None = None,
) -> Any:
    """Declare a dataclass field with its allowed range.

    Args:
        default: Default value.
        low: Lower bound (inclusive unless ``low_open``).
        high: Upper bound (inclusive unless ``high_open``).
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        choices: Allowed values for a string field.

    Returns:
        A ``dataclasses.field`` carrying the range in its metadata.
    """
    spec = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices}
    return dataclasses.field(default=default, metadata={"spec": spec})


def _describe(spec: Mapping[str, Any]) -> str:
    """Human-readable range, e.g. ``in [0, 1)`` or ``> 0``."""
    if spec["choices"] is not None:
        return "one of " + ", ".join(repr(c) for c in spec["choices"])
    low, high = spec["low"], spec["high"]
    if low is not None and high is not None:
        return f"in {'(' if spec['low_open'] else '['}{low:g}, {high:g}{')' if spec['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if spec['low_open'] else '>='} {low:g}"
    return f"{'<' if spec['high_open'] else '<='} {high:g}"


def _in_range(value: float, spec: Mapping[str, Any]) -> bool:
    """Whether ``value`` satisfies the bounds in ``spec``."""
    low, high = spec["low"], spec["high"]
    if not math.isfinite(value):
        return False
    if low is not None and (value < low or (spec["low_open"] and value == low)):
        return False
    return not (high is not None and (value > high or (spec["high_open"] and value == high)))


def _optional(kind: Any) -> Any:
    """``T`` for a field declared ``T | None``, else None."""
    args = typing.get_args(kind)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Coerce a JSON-ish value to the field's declared type or raise ValueError naming it (None is kept for a
    field declared ``T | None``: it stands for a default chosen where the params are used)."""
    if (inner := _optional(kind)) is not None:
        return None if value is None else _coerce(name, value, inner)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    return value


class ParamsMixin:
    """``from_dict``/``to_dict``/validation for dataclasses whose fields are declared with :func:`param`."""

    def __post_init__(self) -> None:
        """Validate types and ranges as soon as an instance is built."""
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first parameter with a wrong type or out-of-range value."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _coerce(f.name, getattr(self, f.name), hints.get(f.name))
            setattr(self, f.name, value)
            spec = f.metadata.get("spec")
            if spec is None or value is None:  # None passed _coerce only where the field allows it
                continue
            ok = value in spec["choices"] if spec["choices"] is not None else _in_range(value, spec)
            if not ok:
                raise ValueError(f"{f.name} must be {_describe(spec)}, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Self:
        """Build validated params from a mapping; missing keys take their defaults.

        Raises:
            ValueError: On unknown keys, wrong types or out-of-range values (the message names the key).
        """
        d = dict(d or {})
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown parameter(s) for {cls.__name__}: {unknown}; allowed: {names}")
        kwargs = {k: _coerce(k, v, hints.get(k)) for k, v in d.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a plain dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]
