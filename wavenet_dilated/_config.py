"""What the package's frozen config dataclasses share: rebuilding one from the dict it was saved as."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    """``cls(**d)`` for a dataclass ``cls``; keys that are not its fields are a ValueError naming them (a checkpoint or
    file written by something else). Missing keys take the field defaults; values are checked by ``cls`` itself."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}")
    return cls(**d)
