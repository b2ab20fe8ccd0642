"""Numbers for people: counts and byte sizes of any magnitude, in messages and tables. Standard library only."""

from __future__ import annotations

import math

__all__ = ["format_bytes", "format_count"]

# an int printed exactly has at most this many digits; beyond, ``about 1.27 x 10^30`` (Python refuses to print ints of
# more than 4300 digits, floats overflow, and no one reads 30 digits)
_MAX_EXACT_DIGITS = 30


def format_bytes(n: int | float) -> str:
    """``n`` bytes in the largest binary unit that keeps the number >= 1 (``"3.0 GiB"``)."""
    if n >= 1024**7:
        return f"{format_count(int(n) >> 60)} EiB"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def format_count(n: int, grouped: bool = False) -> str:
    """A non-negative integer exactly (``grouped``: with thousands separators) when it has at most 30 digits, else
    ``about 1.27 x 10^30`` (Python refuses to print ints of more than 4300 digits, and no one reads them)."""
    if n < 10**_MAX_EXACT_DIGITS:
        return f"{n:,}" if grouped else str(n)
    shift = n.bit_length() - 64
    exponent = math.log10(n >> shift) + shift * math.log10(2)
    whole = math.floor(exponent)
    return f"about {10 ** (exponent - whole):.2f} x 10^{whole}"
