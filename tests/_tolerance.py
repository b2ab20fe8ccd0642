"""Floating-point tolerances derived from the computation, not tuned on one CPU.

Why a bound of this shape: a sum of ``n`` terms computed in floating point (a dot product, one output of a convolution,
a reduction) is rounded once per partial sum, each time by a relative ``u = eps / 2`` at most. Those errors behave like
independent zero-mean variables (Higham & Mary, *A New Approach to Probabilistic Rounding Error Analysis*, 2019), so
one evaluation is within ``λ · u · √n · Σ|term_i|`` of the exact sum whatever order the kernel adds in (AVX2 or AVX-512
blocking, a step-by-step or a whole-sequence kernel). :func:`reduction_bound` takes ``λ = 2``:
``eps · √n · Σ|term_i|``, which also covers the worst case ``n · u · Σ|term_i|`` of short sums (``n ≤ 4``). Two
evaluations compared with each other differ by at most the sum of their bounds (twice the bound when both add ``n``
terms).

``Σ|term_i|`` is the *magnitude* of the computation: for a linear (or multilinear) computation it is the same
computation run on the absolute values of every operand (a convolution of ``|x|`` with ``|w|``), which gives a bound
per output element. Normwise, Cauchy–Schwarz gives ``Σ|a_i b_i| ≤ ‖a‖₂ ‖b‖₂`` (:func:`matmul_bound`). Where layers
are stacked, each layer's error is carried to the output by the layers after it, i.e. scaled like the magnitude, so
the bound of a stack is ``eps · Σ_layers √n_layer · magnitude`` to first order (:func:`stack_bound`).

Use: derive the bound where it is used, with a one-line why, and compare with :func:`assert_close_derived`, which
reports how much of the bound the error used (the margin). A bound stays far below the O(magnitude) errors a real bug
(an off-by-one tap, a wrong scale) makes, so a test still fails on one.
"""

from __future__ import annotations

import math

import torch

__all__ = ["assert_close_derived", "eps", "matmul_bound", "reduction_bound", "stack_bound"]


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype`` (``2**-23`` for float32, ``2**-52`` for float64): twice the unit roundoff."""
    return torch.finfo(dtype).eps


def reduction_bound(magnitude: float | torch.Tensor, n: int | float, dtype: torch.dtype) -> float | torch.Tensor:
    """``eps(dtype) · √n · magnitude``: how far one evaluation of a sum of ``n`` terms may be from the exact sum.

    Args:
        magnitude: ``Σ|term_i|`` of the sum — a number, or a tensor (one bound per output element), usually the
            computation run on absolute values.
        n: terms per sum (the reduction length; for stacked layers see :func:`stack_bound`).
        dtype: the floating-point type the sums are computed in.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, found {n!r}")
    return eps(dtype) * math.sqrt(n) * magnitude


def matmul_bound(a_norm: float | torch.Tensor, b_norm: float | torch.Tensor, n: int | float,
                 dtype: torch.dtype) -> float | torch.Tensor:
    """``eps(dtype) · √n · ‖a‖ · ‖b‖``: the normwise :func:`reduction_bound` of a length-``n`` dot product ``a · b``
    (``Σ|a_i b_i| ≤ ‖a‖₂ ‖b‖₂``); pass the largest row and column norms for a matrix product."""
    return reduction_bound(a_norm * b_norm, n, dtype)


def stack_bound(magnitude: float | torch.Tensor, ns: list[int] | tuple[int, ...],
                dtype: torch.dtype) -> float | torch.Tensor:
    """``eps(dtype) · Σ_i √n_i · magnitude``: the first-order bound of stacked sums of ``n_i`` terms each (layers,
    stages), where each layer's error reaches the output through the later layers, i.e. scaled by the stack's
    ``magnitude`` (the stack run on absolute values)."""
    if not ns or min(ns) < 1:
        raise ValueError(f"ns must be a non-empty list of term counts >= 1, found {ns!r}")
    return eps(dtype) * sum(math.sqrt(n) for n in ns) * magnitude


def assert_close_derived(actual: torch.Tensor, expected: torch.Tensor, bound: float | torch.Tensor,
                         what: str = "values") -> float:
    """Assert ``|actual − expected| ≤ bound`` elementwise and return the margin used, ``max(|error| / bound)``.

    ``bound`` is a number or a tensor broadcastable to ``actual``; where it is 0 the values must be equal. The failure
    message names the worst element, its error, its bound and the ratio, so a tolerance that is too tight for some CPU
    shows by how much.
    """
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.detach().double() - expected.detach().double()).abs()
    bound_t = torch.as_tensor(bound, dtype=torch.float64).detach().expand_as(err)
    assert bool((bound_t >= 0).all()), f"{what}: a derived bound must be >= 0"
    ratio = torch.where(err == 0, torch.zeros_like(err), err / bound_t)  # error/0 is inf: a failure
    worst = int(ratio.flatten().argmax()) if ratio.numel() else 0
    margin = float(ratio.flatten()[worst]) if ratio.numel() else 0.0
    if not margin <= 1.0:
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
        raise AssertionError(
            f"{what}: |error| {float(err.flatten()[worst]):.3g} exceeds the derived bound "
            f"{float(bound_t.flatten()[worst]):.3g} at index {index} (error/bound = {margin:.3g})"
        )
    return margin
