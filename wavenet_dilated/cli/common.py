"""What the commands share: the program name, the argument types, the one-line messages and the report helpers.

This module imports no torch (:func:`device` loads it when called), so that :mod:`wavenet_dilated.cli` can start and
apply :mod:`wavenet_dilated.runtime` settings before anything loads torch.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_SAMPLE_RATE", "EXIT_USAGE", "PROG", "Parser", "UsageError", "device", "dilation_list", "fail",
    "format_rates", "int_at_least", "milliseconds", "note", "positive_float", "print_fields", "show_warning", "wrap",
]  # fmt: skip

PROG = "wavenet-dilated"
#: the rate assumed for a checkpoint that stores no audio_config (LJSpeech's)
DEFAULT_SAMPLE_RATE = 22050
#: exit status for every user error (argparse's convention)
EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad command line: raised by the parser instead of argparse's print-usage-and-exit, and by ``train --set``."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors become one line (see :func:`wavenet_dilated.cli.cli`) instead of usage +
    ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------------- argument types


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, found {text}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, found {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def dilation_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, found {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or more dilations >= 1 such as 1,2,4, found {text!r}")
    return values


def wrap(text: str) -> str:
    """A description paragraph wrapped for the raw formatters (which keep the examples' line breaks)."""
    return textwrap.fill(text, width=79)


# --------------------------------------------------------------------------------------------------- messages


def fail(message: str, status: int = EXIT_USAGE) -> int:
    """Print ``message`` as one ``wavenet-dilated: error: …`` line on stderr; return ``status``."""
    one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return status


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """Library warnings (e.g. the fast generator falling back) as one line, without a source excerpt."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- report helpers


def device(name: str | None) -> str:
    """``--device``: the name itself, or ``cuda`` when available and none was given; a clear error for a missing GPU."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (no GPU, or torch was built without CUDA); "
                         "use --device cpu")
    return name


def milliseconds(samples: int, rate: int) -> str:
    return f"{samples / rate * 1000:.2f} ms"


def format_rates(group: Sequence[int], n_stacks: int) -> str:
    rates = list(group)
    text = ", ".join(map(str, rates)) if len(rates) <= 8 else ", ".join(map(str, rates[:3])) + f", ..., {rates[-1]}"
    return text + (f" (x {n_stacks} stacks)" if n_stacks > 1 else "")


def print_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} : {value}")
