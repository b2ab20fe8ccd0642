"""μ-law companding and quantization for torch tensors and numpy arrays, any number of classes.

``mu_law_encode`` (float audio in [−1, 1] → integer classes) reproduces ``torchaudio.functional.mu_law_encoding`` bit for
bit on torch tensors; ``mu_law_decode`` is its inverse up to quantization. Out-of-range or NaN input is an error, never a
silent clip: a clip would hide a bug upstream (unnormalised or corrupt audio).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from .config import check_int

__all__ = [
    "DEFAULT_CLASSES",
    "mu_law_compress",
    "mu_law_expand",
    "quantize",
    "dequantize",
    "mu_law_encode",
    "mu_law_decode",
    "quantization_bound",
]

DEFAULT_CLASSES = 256

Array = TypeVar("Array", torch.Tensor, np.ndarray)


def _mu(n_classes: int) -> float:
    """``μ = n_classes − 1`` as a float, after checking ``n_classes`` is an int >= 2."""
    return float(check_int("n_classes", n_classes, minimum=2) - 1)


def _check_audio(x: torch.Tensor | np.ndarray, what: str = "audio") -> None:
    if isinstance(x, torch.Tensor):
        if not torch.is_floating_point(x):
            raise ValueError(f"{what} must be a floating-point tensor, found dtype {x.dtype}")
        if x.numel() == 0:
            return
        if torch.isnan(x).any():
            raise ValueError(f"{what} contains NaN")
        lo, hi = x.min().item(), x.max().item()
    elif isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{what} must be a floating-point array, found dtype {x.dtype}")
        if x.size == 0:
            return
        if np.isnan(x).any():
            raise ValueError(f"{what} contains NaN")
        lo, hi = float(x.min()), float(x.max())
    else:
        raise ValueError(f"{what} must be a torch.Tensor or numpy.ndarray, found {type(x).__name__}")
    if lo < -1.0 or hi > 1.0:
        raise ValueError(f"{what} must lie in [-1, 1], found values in [{lo:.6g}, {hi:.6g}]")


def _check_classes_tensor(c: torch.Tensor | np.ndarray, n_classes: int) -> None:
    if isinstance(c, torch.Tensor):
        if torch.is_floating_point(c) or torch.is_complex(c) or c.dtype == torch.bool:
            raise ValueError(f"class indices must be an integer tensor, found dtype {c.dtype}")
        bad = c.numel() > 0 and (c.min().item() < 0 or c.max().item() >= n_classes)
    elif isinstance(c, np.ndarray):
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"class indices must be an integer array, found dtype {c.dtype}")
        bad = c.size > 0 and (int(c.min()) < 0 or int(c.max()) >= n_classes)
    else:
        raise ValueError(f"class indices must be a torch.Tensor or numpy.ndarray, found {type(c).__name__}")
    if bad:
        raise ValueError(f"class indices must lie in [0, {n_classes - 1}], found values outside")


def mu_law_compress(x: Array, n_classes: int = DEFAULT_CLASSES) -> Array:
    """Continuous μ-law companding ``sign(x)·ln(1 + μ|x|)/ln(1 + μ)`` with ``μ = n_classes − 1``; same shape and type."""
    mu = _mu(n_classes)
    _check_audio(x)
    if isinstance(x, torch.Tensor):
        mu_t = torch.tensor(mu, dtype=x.dtype, device=x.device)
        return torch.sign(x) * torch.log1p(mu_t * torch.abs(x)) / torch.log1p(mu_t)
    return (np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)).astype(x.dtype, copy=False)


def mu_law_expand(y: Array, n_classes: int = DEFAULT_CLASSES) -> Array:
    """Inverse of :func:`mu_law_compress`: ``sign(y)·((1 + μ)^|y| − 1)/μ``."""
    mu = _mu(n_classes)
    _check_audio(y, "companded signal")
    if isinstance(y, torch.Tensor):
        return torch.sign(y) * (torch.exp(torch.abs(y) * math.log1p(mu)) - 1.0) / mu
    return (np.sign(y) * (np.exp(np.abs(y) * math.log1p(mu)) - 1.0) / mu).astype(y.dtype, copy=False)


def quantize(y: Array, n_classes: int = DEFAULT_CLASSES) -> Array:
    """Uniform quantization of [−1, 1] into ``n_classes`` integer classes (int64), rounding half up."""
    mu = _mu(n_classes)
    _check_audio(y, "signal")
    if isinstance(y, torch.Tensor):
        return ((y + 1) / 2 * mu + 0.5).to(torch.int64)
    return ((y + 1) / 2 * mu + 0.5).astype(np.int64)


def dequantize(c: Array, n_classes: int = DEFAULT_CLASSES, dtype: torch.dtype = torch.float32) -> Array:
    """Class centres in [−1, 1] for integer classes (inverse of :func:`quantize` up to rounding).

    ``dtype`` applies to torch input; numpy input returns float64 (numpy's default float).
    """
    mu = _mu(n_classes)
    _check_classes_tensor(c, n_classes)
    if isinstance(c, torch.Tensor):
        return c.to(dtype) / mu * 2 - 1.0
    return c.astype(np.float64) / mu * 2 - 1.0


def mu_law_encode(x: Array, n_classes: int = DEFAULT_CLASSES) -> Array:
    """Float audio in [−1, 1] → μ-law class indices in ``[0, n_classes)`` (int64); shape is kept.

    Examples:
        >>> mu_law_encode(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([  0, 128, 255])
    """
    return quantize(mu_law_compress(x, n_classes), n_classes)


def mu_law_decode(c: Array, n_classes: int = DEFAULT_CLASSES, dtype: torch.dtype = torch.float32) -> Array:
    """μ-law class indices → float audio in [−1, 1] (inverse of :func:`mu_law_encode` up to quantization)."""
    return mu_law_expand(dequantize(c, n_classes, dtype), n_classes)


def quantization_bound(x: Array, n_classes: int = DEFAULT_CLASSES) -> Array:
    """Largest error ``|decode(encode(x)) − x|`` that quantization allows at each sample.

    Rounding moves the companded value ``y`` by at most half a class step, ``1/μ``. Expansion has slope
    ``ln(1+μ)/μ · (1+μ)^|y|``, increasing in ``|y|``, so the error is at most ``1/μ`` times that slope at
    ``min(|y| + 1/μ, 1)``.
    """
    mu = _mu(n_classes)
    y = mu_law_compress(x, n_classes)
    if isinstance(y, torch.Tensor):
        top = torch.clamp(torch.abs(y) + 1.0 / mu, max=1.0)
        return math.log1p(mu) / mu * torch.exp(top * math.log1p(mu)) / mu
    top = np.minimum(np.abs(y) + 1.0 / mu, 1.0)
    return math.log1p(mu) / mu * np.exp(top * math.log1p(mu)) / mu
