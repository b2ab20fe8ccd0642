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

from ..config import check_int, is_int

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


def _path_counts(kernels: list[int], dilations: list[int]) -> list[int]:
    """Convolve the layers' tap indicators. Each layer adds shifted copies of the running counts (k shifts, not a full
    convolution), in int64 when the total path count ``Π k_i`` fits and in Python ints otherwise."""
    total_paths = math.prod(kernels)
    counts = np.ones(1, dtype=np.int64 if total_paths < 2**62 else object)
    for k, d in zip(kernels, dilations):
        out = np.zeros(len(counts) + (k - 1) * d, dtype=counts.dtype)
        for j in range(k):
            out[j * d : j * d + len(counts)] += counts
        counts = out
    return [int(c) for c in counts]


def coverage(kernel_sizes: int | Sequence[int], dilations: Sequence[int], dims: int = 1) -> Coverage:
    """Fraction of offsets inside the receptive field that at least one input→output path reaches.

    Each layer's taps form an indicator ``1 at 0, r, 2r, …, (k−1)r``; convolving the indicators of all layers counts
    the paths from every input offset to one output. A k×k kernel is separable in its tap positions, so the 2D count
    is the outer product of the 1D counts and the 2D fraction is the 1D fraction squared. Stride-1 stacks only.

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
