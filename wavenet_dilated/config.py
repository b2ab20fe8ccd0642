"""What the package's configs and public functions share: rebuilding a frozen dataclass from the dict it was saved
as, and the checks every public entry point makes on what a caller passes in.

Every check raises ``ValueError`` naming what was expected and what was found, so a caller (and the command line,
which prints it as one line) sees the same message wherever the value came in. This module imports no torch: the
checks that need a model only read attributes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["check_eval_mode", "check_int", "check_number", "check_temperature", "config_from_dict", "is_int"]

T = TypeVar("T")


def config_from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    """``cls(**d)`` for a dataclass ``cls``; keys that are not its fields are a ValueError naming them (a checkpoint or
    file written by something else). Missing keys take the field defaults; values are checked by ``cls`` itself."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}")
    return cls(**d)


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer and not a bool (``True`` is an ``int`` in Python, never a size here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``, or ``None`` when ``optional``; else a
    ``ValueError`` such as ``n_layers must be an int >= 1, found 0``."""
    if optional and value is None:
        return None
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bound = (f" in [{minimum}, {maximum}]" if minimum is not None and maximum is not None
                 else f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else "")
        off = " or None" if optional else ""
        raise ValueError(f"{name} must be an int{bound}{off}, found {value!r}")
    return value  # type: ignore[return-value]


def check_number(name: str, value: object, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                 optional: bool = False) -> float | None:
    """``value`` if it is a finite int or float (not a bool) in ``[low, high]`` (``(low, high]`` when ``low_open``),
    or ``None`` when ``optional``; else a ``ValueError`` naming the interval."""
    if optional and value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high  # type: ignore[operator]
    if not ok:
        bracket = "(" if low_open else "["
        off = " or None" if optional else ""
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}]{off}, found {value!r}")
    return value  # type: ignore[return-value]


def check_temperature(temperature: object) -> float:
    """A sampling temperature: a finite number > 0 (``1`` samples the model's distribution, lower is greedier)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, found {temperature!r}")
    return float(temperature)


def check_eval_mode(model: Any) -> None:
    """Generation runs a model in eval mode: with dropout on, no two steps would compute the same function."""
    if getattr(model, "training", False):
        raise ValueError("put the model in eval mode (model.eval()) before generating: dropout is on")
