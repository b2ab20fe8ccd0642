"""Reduced-precision weights for the compiled CPU loop: ``"fp32"`` (the default), ``"bf16"`` and ``"int8"``.

At batch 1 a generation step reads every weight matrix once per sample, so the step is bound by how fast the weights
stream from the caches; bf16 halves and int8 quarters the bytes. Only the weights change: activations, the additive
terms, the biases and every sum stay fp32.

What is quantised: every matrix a step multiplies — each layer's dilated conv, its skip and residual 1×1s, the two
output 1×1s — per output row (one scale per row):

* ``"int8"``: ``w ≈ s·q`` with ``s = max|row| / 127`` and ``q = round(w / s)`` in ``[−127, 127]``;
* ``"bf16"``: ``w ≈ s·b`` with ``s = max|row|`` and ``b`` the bfloat16 rounding of ``w / s`` (8 significant bits).

The kernel sums ``q·x`` (or ``b·x``) in fp32 and multiplies the sum by the row's scale. :func:`quantize_model` gives the
same quantised model as a plain :class:`~wavenet_dilated.wavenet.WaveNet` (the codes times the scales, in fp32): the
reference the kernel is exact against, to fp32 rounding. Quantisation is idempotent — the rows of an already quantised
model get the same codes again, even after folding scales the residual and output matrices — which is what makes the
kernel's codes (of the folded matrices) those of :func:`quantize_model` (of the modules).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..nn.layers import fold_weight_norm
from ..wavenet import WaveNet

__all__ = ["PRECISIONS", "CODES", "check_precision", "row_codes", "quantize_rows", "quantize_model"]

#: the weight precisions of the compiled loop, in the order of the kernel's ``WN_FP32``, ``WN_BF16``, ``WN_INT8``
PRECISIONS = ("fp32", "bf16", "int8")

#: the numpy type of each precision's codes in the packed weight stream (bf16 as its 16 bits)
CODES = {"fp32": np.float32, "bf16": np.uint16, "int8": np.int8}

_INT8_MAX = 127


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; else a ``ValueError`` naming them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, found {precision!r}")
    return precision


def row_codes(w: torch.Tensor, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The codes of a matrix ``w (rows, in)`` and its per-row scales ``(rows,)`` (``None`` for fp32): int8 codes,
    bf16 bits as uint16, or the fp32 weights themselves."""
    check_precision(precision)
    w = w.detach().to("cpu", torch.float32)
    if precision == "fp32":
        return np.ascontiguousarray(w.numpy()), None
    top = w.abs().amax(dim=1) if w.shape[1] else torch.zeros(w.shape[0])
    scale = torch.where(top > 0, top / _INT8_MAX if precision == "int8" else top, torch.ones_like(top))
    x = w / scale[:, None]
    if precision == "int8":
        codes = x.round().clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8).numpy()
    else:
        codes = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return np.ascontiguousarray(codes), np.ascontiguousarray(scale.numpy())


def _dequantize(codes: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """fp32 ``codes × scale`` per row."""
    if codes.dtype == np.uint16:
        values = torch.from_numpy(codes.view(np.int16).copy()).view(torch.bfloat16).float()
    else:
        values = torch.from_numpy(codes.astype(np.float32))
    return values * torch.from_numpy(scale)[:, None]


def quantize_rows(w: torch.Tensor, precision: str) -> torch.Tensor:
    """``w (rows, …)`` quantised per row (the trailing dimensions flattened), as fp32 values of ``w``'s shape."""
    if check_precision(precision) == "fp32":
        return w.detach().clone()
    codes, scale = row_codes(w.reshape(w.shape[0], -1), precision)
    assert scale is not None
    return _dequantize(codes, scale).reshape(w.shape).to(w.dtype)


@torch.no_grad()
def quantize_model(model: WaveNet, precision: str) -> WaveNet:
    """A copy of ``model`` whose step matrices (every dilated conv, skip and residual 1×1, both output 1×1s) are
    quantised per output row (module docstring); weight norm is folded into plain weights first. For ``"fp32"``, a
    plain copy. The copy computes in plain PyTorch what the compiled loop computes with ``precision``."""
    check_precision(precision)
    out = copy.deepcopy(model)
    fold_weight_norm(out)
    if precision == "fp32":
        return out
    convs: list[nn.Module] = [out.out1, out.out2]
    for block in out.blocks:
        convs += [block.conv.conv, block.skip] + ([block.residual] if block.residual is not None else [])
    for conv in convs:
        conv.weight.copy_(quantize_rows(conv.weight, precision))
    return out
