"""What the commands share: the program name, the argument types, the one-line messages and the report helpers.

This module imports no torch (:func:`device` loads it when called), so that :mod:`wavenet_dilated.cli` can start and
apply :mod:`wavenet_dilated.runtime` settings before anything loads torch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._format import format_count

__all__ = [
    "DEFAULT_SAMPLE_RATE", "EXIT_USAGE", "MAX_SEED", "MEMORY_FRACTION", "PROG", "Parser", "UsageError",
    "add_generation_arguments", "available_memory",
    "device", "dilation_list", "fail", "format_rates",
    "int_at_least", "int_in", "milliseconds", "note", "positive_float", "print_fields", "show_warning", "wrap",
]  # fmt: skip

PROG = "wavenet-dilated"
#: the rate assumed for a checkpoint that stores no audio_config (LJSpeech's)
DEFAULT_SAMPLE_RATE = 22050
#: exit status for every user error (argparse's convention)
EXIT_USAGE = 2
#: largest ``--seed`` (a torch generator takes a signed 64-bit seed)
MAX_SEED = 2**63 - 1
#: the share of the memory the system reports available (``MemAvailable``) that one command may plan to use
MEMORY_FRACTION = 0.8
#: numbers with more digits than this are printed as ``about 1.27 x 10^30``


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


def int_in(minimum: int, maximum: int, maximum_text: str | None = None) -> Callable[[str], int]:
    """An integer in ``[minimum, maximum]``; ``maximum_text`` names the maximum in the message (``"2**63 - 1"``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be an integer in [{minimum}, {maximum_text or maximum}], "
                                             f"found {value}")
        return value

    parse.__name__ = f"int in [{minimum}, {maximum}]"
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


def available_memory() -> int | None:
    """Bytes the system reports available to a new allocation: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the
    physical memory (``sysconf``), else ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def milliseconds(samples: int, rate: int) -> str:
    """``samples`` at ``rate`` Hz in ms: two decimals, or a whole (or approximate) number beyond 10^12 ms, which a
    float might not even hold."""
    whole = samples * 1000 // rate
    if whole >= 10**12:
        return f"{format_count(whole, grouped=True)} ms"
    return f"{samples / rate * 1000:.2f} ms"


def format_rates(group: Sequence[int], n_stacks: int) -> str:
    shown = list(group) if len(group) <= 8 else [*group[:3], group[-1]]
    rates = [format_count(r) for r in shown]
    text = ", ".join(rates) if len(group) <= 8 else ", ".join(rates[:3]) + f", ..., {rates[-1]}"
    return text + (f" (x {format_count(n_stacks)} stacks)" if n_stacks > 1 else "")


def print_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} : {value}")


def add_generation_arguments(p: argparse.ArgumentParser, seed_help: str, seed_default: int | None = None) -> None:
    """The flags every command that generates audio from a checkpoint shares (``sample``, ``vocode``, ``evaluate``):
    ``--temperature``, ``--seed``, ``--speaker``, ``--device``, ``--precision``, ``--no-ema`` and ``--no-progress``."""
    p.add_argument("--temperature", metavar="T", type=positive_float, default=1.0,
                   help="sampling temperature > 0: below 1 is more conservative, above 1 noisier (default: 1.0)")
    p.add_argument("--seed", metavar="SEED", type=int_in(0, MAX_SEED, "2**63 - 1"), default=seed_default,
                   help=f"random seed in [0, 2**63 - 1]; {seed_help}")
    p.add_argument("--speaker", metavar="NAME|ID",
                   help="speaker of a speaker-conditioned model: the name its training corpus gave it, or its id in "
                   "[0, n_speakers - 1]; required by such a model, refused by others")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8", "w8a8"), default="fp32",
                   help="weights of the generation steps: fp32 (default, exact), bf16 or int8 (per-row scales, fp32 "
                   "sums; faster where memory bandwidth limits generation), or w8a8 (int8 weights and activations, "
                   "exact int32 sums: the fastest on CPUs with AVX-512 VNNI or AVX-VNNI; CPU only); see the README's "
                   "Performance section")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw trained weights even when the checkpoint holds EMA weights (default: EMA when "
                   "present)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
