"""Reduced precisions for the compiled CPU loop: ``"fp32"`` (the default), ``"bf16"`` and ``"int8"`` weights, and
``"w8a8"``, int8 weights and int8 activations.

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

``"w8a8"`` has the weights of ``"int8"`` and quantises the activations of every layer's products too, so that the
kernel multiplies int8 by int8 with exact int32 sums (``vpdpbusd`` where the CPU has AVX-512 VNNI or AVX-VNNI;
``csrc/qmatmul.h``):

* the input of every layer's dilated conv, per time step and batch row, over its ``R`` channels, with a scale of its
  own (dynamic): ``q = round(x · 127 / max|x|)``, value ``q · max|x| / 127`` (:func:`quantize_dynamic`);
* the gate output ``z`` (``|z| < 1``), before the skip and residual 1×1s: ``q = round(127 z)``, value ``q / 127``
  (:func:`quantize_unit`).

The residual stream itself, the conditioning, the sums and the output 1×1s' inputs stay fp32 (the output 1×1s have
int8 weights, as in ``"int8"``). A categorical model's first layer reads per-class tables and is not quantised. The
model of :func:`quantize_model` runs these roundings in its forward (module hooks): its teacher-forced logits are what
the kernel computes, up to where fp32 rounding moves an activation across a rounding boundary (one code).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..nn.layers import fold_weight_norm
from ..wavenet import WaveNet

__all__ = ["PRECISIONS", "CODES", "check_precision", "row_codes", "quantize_rows", "quantize_model", "quantize_dynamic",
           "quantize_unit", "activations_quantized"]

#: the precisions of the compiled loop, in the order of the kernel's ``WN_FP32``, ``WN_BF16``, ``WN_INT8``, ``WN_W8A8``
PRECISIONS = ("fp32", "bf16", "int8", "w8a8")

#: the numpy type of each precision's codes in the packed weight stream (bf16 as its 16 bits)
CODES = {"fp32": np.float32, "bf16": np.uint16, "int8": np.int8, "w8a8": np.int8}

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
    precision = "int8" if precision == "w8a8" else precision
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


def quantize_dynamic(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x`` with every vector along ``dim`` rounded to 255 levels of its own scale (module docstring): the fp32 values
    ``q · max|x| / 127`` of the codes ``q = round(x · (127 / max|x|))``; a zero vector stays zero."""
    top = x.abs().amax(dim=dim, keepdim=True)
    nonzero = top > 0
    inv = 127.0 / torch.where(nonzero, top, torch.ones_like(top))
    codes = torch.where(nonzero, torch.round(x * inv), torch.zeros_like(x))
    return codes * (top / 127.0)


def quantize_unit(z: torch.Tensor) -> torch.Tensor:
    """``z`` (a gate output, ``|z| ≤ 1``) rounded to the codes ``round(127 z)`` in ``[−127, 127]``, as fp32 values."""
    return torch.round((z * 127.0).clamp(-_INT8_MAX, _INT8_MAX)) * (1.0 / 127.0)


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (quantize_dynamic(args[0], dim=1), *args[1:])


def _quantize_gate(module: nn.Module, args: tuple) -> tuple:
    return (quantize_unit(args[0]), *args[1:])


def activations_quantized(model: nn.Module) -> bool:
    """Whether ``model`` is a ``"w8a8"`` model of :func:`quantize_model` (its forward rounds the activations)."""
    return bool(getattr(model, "_w8a8", False))


@torch.no_grad()
def quantize_model(model: WaveNet, precision: str) -> WaveNet:
    """A copy of ``model`` whose step matrices (every dilated conv, skip and residual 1×1, both output 1×1s) are
    quantised per output row (module docstring); weight norm is folded into plain weights first. For ``"fp32"``, a
    plain copy. The copy computes in plain PyTorch what the compiled loop computes with ``precision``: for ``"w8a8"``
    in its forward (``model(inputs, mel)``) only, which rounds the activations through module hooks; its one-step
    methods (the reference generator's) do not."""
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
    if precision == "w8a8":
        for i, block in enumerate(out.blocks):
            if not (i == 0 and out.head.quantized):  # a categorical first layer: per-class tables, not quantised
                block.conv.register_forward_pre_hook(_quantize_input)
            for conv in (block.skip, block.residual):
                if conv is not None:
                    conv.register_forward_pre_hook(_quantize_gate)
        out._w8a8 = True
    return out
