"""Pure arithmetic of dilated convolution stacks: padding, receptive fields, schedules, HDC and gridding.

Nothing here imports torch (only numpy, for path counting, and the shared checks of :mod:`wavenet_dilated.config`), so
the numbers can be checked (and used by the CLI and notebooks) without building a model.
Conventions: a stack is a list of layers, layer ``i`` having kernel size ``k_i``, dilation ``r_i`` and stride ``s_i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce

import numpy as np

from .._format import format_bytes, format_count
from ..config import check_int, is_int

#: most work :func:`coverage` does: the sum over its layers of the receptive field so far (one addition per offset per
#: layer); its memory is about 50 bytes per offset of the final receptive field (arrays and the tuple of counts), so
#: this also bounds that to about 200 MiB; beyond it, it refuses
MAX_PATH_COUNT_WORK = 2**22
#: most offsets :func:`coverage_fraction` counts one by one for a gridded stack (one bit each: 16 MiB, about three times
#: that at its peak); a stack that is not gridded needs no count, whatever its size
MAX_REACH_OFFSETS = 2**27

__all__ = [
    "Coverage",
    "HDCReport",
    "causal_padding",
    "same_padding",
    "receptive_field",
    "receptive_fields",
    "exponential_dilations",
    "hdc_dilations",
    "hdc_check",
    "is_hdc_valid",
    "coverage",
    "coverage_fraction",
    "MAX_PATH_COUNT_WORK",
    "MAX_REACH_OFFSETS",
    "conv_parameters",
    "stack_parameters",
    "compare_standard_dilated",
]


def causal_padding(kernel_size: int, dilation: int = 1) -> int:
    """Left zero-padding that makes a dilated convolution causal and length-preserving: ``(k - 1) * d``."""
    check_int("kernel_size", kernel_size, minimum=1)
    check_int("dilation", dilation, minimum=1)
    return (kernel_size - 1) * dilation


def same_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """(left, right) padding that keeps the length of a stride-1 dilated convolution.

    The span ``(k - 1) * d`` is split evenly; when it is odd the extra sample goes on the right, as PyTorch's
    ``padding="same"`` does.
    """
    total = causal_padding(kernel_size, dilation)
    return total // 2, total - total // 2


def _broadcast(name: str, value: int | Sequence[int], n_layers: int) -> list[int]:
    if is_int(value):
        values = [value] * n_layers
    else:
        values = list(value)
        if len(values) != n_layers:
            raise ValueError(f"{name} must have one entry per layer ({n_layers}), found {len(values)}")
    for v in values:
        check_int(name, v, minimum=1)
    return values


def _as_layers(
    kernel_sizes: int | Sequence[int], dilations: Sequence[int], strides: int | Sequence[int] | None
) -> tuple[list[int], list[int], list[int]]:
    if isinstance(dilations, int) or isinstance(dilations, (str, bytes)):
        raise ValueError(f"dilations must be a sequence of ints, found {dilations!r}")
    dilations = list(dilations)
    if not dilations:
        raise ValueError("dilations must name at least one layer, found an empty list")
    for d in dilations:
        check_int("dilation", d, minimum=1)
    n = len(dilations)
    ks = _broadcast("kernel_size", kernel_sizes, n)
    ss = _broadcast("stride", 1 if strides is None else strides, n)
    return ks, dilations, ss


def receptive_fields(
    kernel_sizes: int | Sequence[int], dilations: Sequence[int], strides: int | Sequence[int] | None = None
) -> list[int]:
    """Receptive field (in input samples) after each layer of a stack.

    ``RF_i = 1 + Σ_{j≤i} (k_j − 1) · r_j · Π_{l<j} s_l``: each layer widens the field by its span measured in input
    samples, and a stride multiplies the spacing of every later layer's taps.

    Examples:
        >>> receptive_fields(3, [1, 1, 2, 4, 8, 16, 1])
        [3, 5, 9, 17, 33, 65, 67]
    """
    ks, ds, ss = _as_layers(kernel_sizes, dilations, strides)
    out, rf, jump = [], 1, 1
    for k, d, s in zip(ks, ds, ss):
        rf += (k - 1) * d * jump
        jump *= s
        out.append(rf)
    return out


def receptive_field(
    kernel_sizes: int | Sequence[int], dilations: Sequence[int], strides: int | Sequence[int] | None = None
) -> int:
    """Receptive field of the whole stack (see :func:`receptive_fields`).

    Examples:
        >>> receptive_field(2, exponential_dilations(10))
        1024
        >>> receptive_field(2, exponential_dilations(10, n_stacks=3))
        3070
    """
    return receptive_fields(kernel_sizes, dilations, strides)[-1]


def exponential_dilations(layers_per_stack: int = 10, n_stacks: int = 1, base: int = 2) -> list[int]:
    """``base**0 .. base**(layers_per_stack-1)`` repeated ``n_stacks`` times (WaveNet's 1, 2, …, 512 × stacks)."""
    check_int("layers_per_stack", layers_per_stack, minimum=1)
    check_int("n_stacks", n_stacks, minimum=1)
    check_int("base", base, minimum=1)
    return [base**i for i in range(layers_per_stack)] * n_stacks


def hdc_dilations(group: Sequence[int] = (1, 2, 5), n_groups: int = 1) -> list[int]:
    """Hybrid dilated convolution sawtooth: ``group`` repeated ``n_groups`` times (Wang et al. 2018)."""
    check_int("n_groups", n_groups, minimum=1)
    group = list(group)
    if not group:
        raise ValueError("group must name at least one dilation, found an empty list")
    for d in group:
        check_int("dilation", d, minimum=1)
    return group * n_groups


@dataclass(frozen=True)
class HDCReport:
    """Result of :func:`hdc_check`.

    ``max_distances[i]`` is ``M_{i+1}`` in Wang et al.'s notation (the largest gap between two non-zero taps after
    layer ``i+1`` seen from the top); the group is valid when ``M_2 ≤ K`` and its rates share no common factor > 1.
    """

    dilations: tuple[int, ...]
    kernel_size: int
    max_distances: tuple[int, ...]
    common_factor: int
    valid: bool


def hdc_check(dilations: Sequence[int], kernel_size: int = 3) -> HDCReport:
    """Wang et al. (2018) HDC condition for one group of rates.

    ``M_n = r_n`` and ``M_i = max(M_{i+1} − 2 r_i, M_{i+1} − 2 (M_{i+1} − r_i), r_i)``; valid when ``M_2 ≤ K`` and
    ``gcd(r) = 1``. The rule assumes ``r_1 = 1`` and does not check it: ``[2, 3]`` passes yet leaves holes, so pair a
    group that does not start at 1 with :func:`coverage`.
    """
    _, ds, _ = _as_layers(kernel_size, dilations, None)
    check_int("kernel_size", kernel_size, minimum=1)
    m = [0] * len(ds)
    m[-1] = ds[-1]
    for i in range(len(ds) - 2, -1, -1):
        r, nxt = ds[i], m[i + 1]
        m[i] = max(nxt - 2 * r, nxt - 2 * (nxt - r), r)
    m2 = m[1] if len(ds) > 1 else m[0]
    factor = reduce(math.gcd, ds)
    return HDCReport(tuple(ds), kernel_size, tuple(m), factor, m2 <= kernel_size and factor == 1)


def is_hdc_valid(dilations: Sequence[int], kernel_size: int = 3) -> bool:
    """``True`` when the rates satisfy the HDC condition (see :func:`hdc_check`)."""
    return hdc_check(dilations, kernel_size).valid


@dataclass(frozen=True)
class Coverage:
    """Gridding coverage of a stack.

    Attributes:
        fraction: reached offsets / all offsets inside the receptive field (exact rational).
        path_counts: number of input→output paths for each offset ``0..RF−1`` along one axis (1D; for 2D it is the
            outer product of this vector with itself).
        min_paths / max_paths: over the whole (1D or 2D) receptive field; ``min_paths == 0`` means gridding.
        receptive_field: along one axis.
        dims: 1 or 2.
    """

    fraction: Fraction
    path_counts: tuple[int, ...]
    min_paths: int
    max_paths: int
    receptive_field: int
    dims: int


def _count(n: int) -> str:
    """A count for a message: thousands separators, or ``about … x 10^N`` beyond 30 digits."""
    return format_count(n, grouped=True)


def _dilated_box_sum(counts: np.ndarray, k: int, d: int) -> np.ndarray:
    """``out[t] = Σ_{j<k} counts[t − j·d]``: one layer's taps, in time linear in the output (a running sum along each
    residue class mod ``d``) whatever ``k``."""
    n = len(counts) + (k - 1) * d
    rows = -(-n // d)
    x = np.zeros(rows * d, dtype=counts.dtype)
    x[: len(counts)] = counts
    running = np.cumsum(x.reshape(rows, d), axis=0)
    out = running.copy()
    out[k:] -= running[:-k]
    return out.reshape(-1)[:n]


def _path_counts(kernels: list[int], dilations: list[int]) -> list[int]:
    """Convolve the layers' tap indicators, in int64 when the total path count ``Π k_i`` fits and in Python ints
    otherwise; ``ValueError`` beyond :data:`MAX_PATH_COUNT_WORK`."""
    layers = [(k, d) for k, d in zip(kernels, dilations) if k > 1]  # a 1-tap layer passes the counts through
    work = sum(receptive_fields([k for k, _ in layers], [d for _, d in layers])) if layers else 0
    if work > MAX_PATH_COUNT_WORK:
        rf = receptive_field([k for k, _ in layers], [d for _, d in layers])
        raise ValueError(f"counting the paths to each of the {_count(rf)} offsets of this receptive field takes "
                         f"{_count(work)} additions and about {format_bytes(50 * rf)}; at most "
                         f"{MAX_PATH_COUNT_WORK:,} additions are "
                         "done (coverage_fraction gives the fraction without path counts, for any size)")
    total_paths = math.prod(k for k, _ in layers)
    counts = np.ones(1, dtype=np.int64 if total_paths < 2**62 else object)
    for k, d in layers:
        counts = _dilated_box_sum(counts, k, d)
    return [int(c) for c in counts]


def coverage(kernel_sizes: int | Sequence[int], dilations: Sequence[int], dims: int = 1) -> Coverage:
    """Fraction of offsets inside the receptive field that at least one input→output path reaches.

    Each layer's taps form an indicator ``1 at 0, r, 2r, …, (k−1)r``; convolving the indicators of all layers counts
    the paths from every input offset to one output. A k×k kernel is separable in its tap positions, so the 2D count
    is the outer product of the 1D counts and the 2D fraction is the 1D fraction squared. Stride-1 stacks only.
    The counts take time and memory linear in the receptive field per layer: beyond :data:`MAX_PATH_COUNT_WORK` it
    raises ``ValueError``; :func:`coverage_fraction` gives the fraction alone for any size.

    Examples:
        >>> coverage(3, [2, 2, 2]).fraction
        Fraction(7, 13)
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, found {dims!r}")
    ks, ds, _ = _as_layers(kernel_sizes, dilations, None)
    counts = _path_counts(ks, ds)
    rf = len(counts)
    reached = sum(1 for c in counts if c)
    fraction = Fraction(reached, rf) ** dims
    lo, hi = min(counts), max(counts)
    if dims == 2:
        lo, hi = lo * lo, hi * hi
    return Coverage(fraction, tuple(counts), lo, hi, rf, dims)


def _add_progression(reach: int, d: int, n: int) -> int:
    """``reach + {0, d, 2d, …, (n−1)·d}`` for a set of offsets held as the bits of ``reach``, in O(log n) shifts."""
    base, out, m = reach, reach, 1
    for bit in bin(n)[3:]:  # from the second most significant bit: out = base + {0..m−1}·d
        out |= out << (m * d)
        m *= 2
        if bit == "1":
            out = base | (out << d)
            m += 1
    return out


def coverage_fraction(
    kernel_sizes: int | Sequence[int], dilations: Sequence[int], dims: int = 1, n_stacks: int = 1
) -> Fraction:
    """:func:`coverage`'s ``fraction`` for ``dilations`` repeated ``n_stacks`` times, without path counts.

    The offsets a stack reaches are the sums of one tap offset per layer. Layers of one dilation ``d`` together add
    ``{0, d, …, s·d}`` (``s`` = the sum of their ``k − 1``), so only the distinct dilations matter. Taken from the
    smallest up, the offsets reached stay an interval ``[0, R]`` as long as each next ``d ≤ R + 1``; when every
    dilation passes, every offset is reached and the answer is immediate for any size (1, or ``1/g`` of the offsets
    when all rates share the factor ``g``, which is worked out first). The first ``d > R + 1`` leaves offset ``R + 1``
    unreached; then the offsets are counted exactly, one bit each, up to :data:`MAX_REACH_OFFSETS` of them
    (``ValueError`` beyond, naming the memory it would take).

    Examples:
        >>> coverage_fraction(3, [2, 2, 2])
        Fraction(7, 13)
        >>> coverage_fraction(1_000_000, [1, 2, 4], n_stacks=10**9)
        Fraction(1, 1)
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, found {dims!r}")
    check_int("n_stacks", n_stacks, minimum=1)
    ks, ds, _ = _as_layers(kernel_sizes, dilations, None)
    spans: dict[int, int] = {}
    for k, d in zip(ks, ds):
        if k > 1:
            spans[d] = spans.get(d, 0) + (k - 1) * n_stacks
    rf = 1 + sum(d * s for d, s in spans.items())
    # every offset reached is a multiple of the rates' common factor g: work on the rates divided by g, whose field
    # has (rf − 1) / g + 1 offsets, each standing for one reached offset of the real field
    g = reduce(math.gcd, spans, 0) or 1
    steps = sorted((d // g, s) for d, s in spans.items())
    reduced_rf = (rf - 1) // g + 1
    reached, gap = 0, len(steps)  # the offsets [0, reached] are reached by the layers before steps[gap]
    for i, (d, s) in enumerate(steps):
        if d > reached + 1:
            gap = i
            break
        reached += d * s
    if gap == len(steps):
        return Fraction(reduced_rf, rf) ** dims
    if reduced_rf > MAX_REACH_OFFSETS:
        raise ValueError(f"this stack is gridded (offset {_count(g * (reached + 1))} is never reached), and "
                         f"counting the offsets it does reach takes one bit for each of {_count(reduced_rf)} "
                         f"offsets, {format_bytes(-(-reduced_rf // 8))}; at "
                         f"most {MAX_REACH_OFFSETS:,} offsets ({format_bytes(MAX_REACH_OFFSETS // 8)}) are counted")
    reach = (1 << (reached + 1)) - 1
    for d, s in steps[gap:]:
        reach = _add_progression(reach, d, s + 1)
    return Fraction(reach.bit_count(), rf) ** dims


def conv_parameters(
    in_channels: int, out_channels: int, kernel_size: int, dims: int = 1, bias: bool = True
) -> int:
    """Parameters of one convolution: dilation does not change it, which is the whole point of dilation."""
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size)):
        check_int(name, v, minimum=1)
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, found {dims!r}")
    return in_channels * out_channels * kernel_size**dims + (out_channels if bias else 0)


def stack_parameters(channels: int, n_layers: int, kernel_size: int = 3, dims: int = 2, bias: bool = True) -> int:
    """Parameters of ``n_layers`` convolutions with ``channels`` in and out (standard or dilated: the same)."""
    check_int("n_layers", n_layers, minimum=1)
    return n_layers * conv_parameters(channels, channels, kernel_size, dims, bias)


def compare_standard_dilated(
    n_layers: int, kernel_size: int = 3, channels: int = 1, dims: int = 2, base: int = 2
) -> list[dict[str, int]]:
    """Rows ``{layers, rf_standard, rf_dilated, parameters}`` for 1..n_layers layers.

    Standard layers all have dilation 1 (RF ``1 + L(k−1)``); dilated layers use ``base**(i)`` (RF
    ``1 + (k−1)(base^L − 1)/(base − 1)``). Parameters are identical for both.
    """
    check_int("n_layers", n_layers, minimum=1)
    rf_std = receptive_fields(kernel_size, [1] * n_layers)
    rf_dil = receptive_fields(kernel_size, exponential_dilations(n_layers, base=base))
    return [
        {
            "layers": i + 1,
            "rf_standard": rf_std[i],
            "rf_dilated": rf_dil[i],
            "parameters": stack_parameters(channels, i + 1, kernel_size, dims),
        }
        for i in range(n_layers)
    ]
