"""The one weight folding: a :class:`~wavenet_dilated.wavenet.WaveNet`'s layers as plain matrices.

Every path that computes the network without its ``nn.Module`` calls reads the weights through this module: the compiled
CPU loop (:mod:`.cpu`), the CUDA-graph step (:mod:`.cuda_graph`), the matrix-product training loss
(:mod:`wavenet_dilated.train.fused_loss`) and the reference generator's stacked conditioning (:mod:`.reference`). Here,
and only here, weight norm is evaluated (reading ``conv.weight`` runs the parametrisation), a missing bias becomes zeros,
the dilated conv becomes one matrix over its concatenated taps, and — for a generation step — the √½ residual scale,
the skip biases, ``skip_scale`` and the first layer's embedding are folded in.

Two levels:

* per module, differentiable (the training loss back-propagates through them): :func:`conv_matrix`,
  :func:`pointwise`, :func:`skip_residual`, :func:`cond_matrix`, :func:`conv_biases`, :func:`speaker_terms`,
  :func:`input_affine`;
* the whole step, under ``no_grad``: :func:`fold` → :class:`StepWeights`, in the model's dtype and device:
    * ``x_{l+1} = √½·x_l + (√½·W_res) z + √½·b_res``; the last layer's residual (nothing reads it) is absent;
    * the skip sum starts from ``Σ_l b_skip_l`` (summed in float64, rounded once);
    * ``skip_scale`` folded into the first output 1×1 (``relu(s·x) = s·relu(x)`` for ``s > 0``);
    * for a categorical model, optionally the first layer's conv applied to every class embedding, per tap:
      ``T_j = E W_j^T (n_classes × G)``, so that layer's conv is ``K`` row look-ups;
* the mel upsampler's stages as 3-tap polyphase filters, :func:`polyphase_plan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..wavenet import ConditionUpsampler, ResidualBlock, WaveNet

__all__ = [
    "RES_SCALE",
    "StepWeights",
    "fold",
    "conv_matrix",
    "pointwise",
    "skip_residual",
    "cond_matrix",
    "conv_biases",
    "speaker_terms",
    "input_affine",
    "polyphase_plan",
]

#: the residual stream's scale per block, ``x_{l+1} = (x_l + W_res z + b_res)·√½`` (:class:`ResidualBlock`)
RES_SCALE = math.sqrt(0.5)


def _bias(conv: nn.Conv1d) -> torch.Tensor:
    """``conv``'s bias, or zeros of the same length, dtype and device when it has none."""
    if conv.bias is not None:
        return conv.bias
    w = conv.weight
    return torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)


def conv_matrix(block: ResidualBlock) -> torch.Tensor:
    """The dilated conv as one matrix ``(G, K·R)`` over the concatenated taps, oldest first (weight norm evaluated)."""
    w = block.conv.conv.weight  # (G, R, K)
    return w.permute(0, 2, 1).reshape(w.shape[0], -1)


def pointwise(conv: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×1 conv as ``(weight (out, in), bias (out,))``; a missing bias is zeros."""
    return conv.weight[:, :, 0], _bias(conv)


def skip_residual(block: ResidualBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """``[W_skip; W_res]`` ``(S + R, G/2)`` and its bias: both 1×1s of the gate output in one product (only the skip,
    ``(S, G/2)``, for the last block, which has no residual)."""
    w_skip, b_skip = pointwise(block.skip)
    if block.residual is None:
        return w_skip, b_skip
    w_res, b_res = pointwise(block.residual)
    return torch.cat([w_skip, w_res]), torch.cat([b_skip, b_res])


def cond_matrix(blocks: Sequence[ResidualBlock]) -> torch.Tensor:
    """The blocks' 1×1 mel projections stacked, ``(n·G, C_mel)``: all of them in one product."""
    return torch.cat([b.cond_proj.weight[:, :, 0] for b in blocks])


def conv_biases(blocks: Sequence[ResidualBlock]) -> torch.Tensor:
    """The blocks' conv biases stacked, ``(n·G,)`` (zeros for a conv without bias)."""
    return torch.cat([_bias(b.conv.conv) for b in blocks])


def speaker_terms(blocks: Sequence[ResidualBlock], speaker_vec: torch.Tensor) -> torch.Tensor:
    """Every block's speaker projection of ``speaker_vec (B, C_spk, 1)``, stacked: ``(B, n·G)``."""
    return torch.cat([b.speaker_proj(speaker_vec) for b in blocks], dim=1)[:, :, 0]


def input_affine(model: WaveNet) -> tuple[torch.Tensor, torch.Tensor]:
    """A continuous-input model's 1×1 input embedding as ``(weight (R,), bias (R,))``: ``x ↦ x·weight + bias``."""
    _, bias = pointwise(model.embed)
    return model.embed.weight[:, 0, 0], bias


@dataclass(frozen=True)
class StepWeights:
    """A generation step's weights, folded (see the module docstring); the model's dtype and device, no grad.

    Attributes:
        conv: per layer ``(G, K·R)``, taps oldest first.
        skip: per layer ``(S, G/2)``.
        res: per layer ``(R, G/2)`` × √½; ``None`` for the last layer.
        res_bias: ``(L, R)`` × √½ (the last row zero).
        skip_bias: ``(S,)``, the sum over layers.
        conv_bias: ``(L·G,)``.
        cond_weight: ``(L·G, C_mel)``, or ``None`` for a model without mel.
        embed: ``(n_classes, R)`` the class embedding (categorical), or ``(2, R)`` the input 1×1's weight and bias.
        table: ``(K, n_classes, G)`` the first layer's per-class tables, or ``None`` (not asked for, or not categorical).
        out1 / out1_bias: ``(S, S)`` × ``skip_scale``, ``(S,)``.
        out2 / out2_bias: ``(n_out, S)``, ``(n_out,)``.
    """

    conv: list[torch.Tensor]
    skip: list[torch.Tensor]
    res: list[torch.Tensor | None]
    res_bias: torch.Tensor
    skip_bias: torch.Tensor
    conv_bias: torch.Tensor
    cond_weight: torch.Tensor | None
    embed: torch.Tensor
    table: torch.Tensor | None
    out1: torch.Tensor
    out1_bias: torch.Tensor
    out2: torch.Tensor
    out2_bias: torch.Tensor


def _first_layer_tables(model: WaveNet) -> torch.Tensor:
    """``(K, n_classes, G)``: tap ``j`` of the first layer's conv applied to every class embedding (in float64)."""
    e = model.embed.weight.double()  # (n_classes, R)
    w0 = model.blocks[0].conv.conv.weight.double()  # (G, R, K)
    return torch.stack([e @ w0[:, :, j].T for j in range(w0.shape[2])])


@torch.no_grad()
def fold(model: WaveNet, tables: bool = False) -> StepWeights:
    """The step weights of ``model`` (:class:`StepWeights`); ``tables=True`` adds a categorical model's first-layer
    tables."""
    blocks = list(model.blocks)
    w = blocks[0].conv.conv.weight
    dtype, device = w.dtype, w.device
    R = model.config.residual_channels
    res, res_bias = [], torch.zeros(len(blocks), R, dtype=dtype, device=device)
    skip_bias = torch.zeros(model.config.skip_channels, dtype=torch.float64, device=device)
    for i, b in enumerate(blocks):
        skip_bias += _bias(b.skip).double()
        if b.residual is None:
            res.append(None)
            continue
        w_res, b_res = pointwise(b.residual)
        res.append(w_res * RES_SCALE)
        res_bias[i] = b_res * RES_SCALE
    embed = model.embed.weight.detach() if model.head.quantized else torch.stack(input_affine(model))
    out1, out1_bias = pointwise(model.out1)
    out2, out2_bias = pointwise(model.out2)
    return StepWeights(
        conv=[conv_matrix(b) for b in blocks], skip=[b.skip.weight[:, :, 0] for b in blocks], res=res,
        res_bias=res_bias, skip_bias=skip_bias.to(dtype), conv_bias=conv_biases(blocks),
        cond_weight=cond_matrix(blocks) if model.config.cond_channels is not None else None, embed=embed,
        table=_first_layer_tables(model).to(dtype) if tables and model.head.quantized else None,
        out1=out1 * model.skip_scale, out1_bias=out1_bias.detach(), out2=out2, out2_bias=out2_bias.detach(),
    )


def polyphase_plan(model: WaveNet) -> list[tuple[int, np.ndarray]] | None:
    """Per upsampling stage ``(s, a (s × 3))``: a nearest stretch by ``s`` then the zero-padded ``2s+1``-tap smoothing
    conv of :class:`~wavenet_dilated.wavenet.ConditionUpsampler`, as a 3-tap filter per output phase ``p``:
    ``y[f·s + p] = a[p, 0]·x[f−1] + a[p, 1]·x[f] + a[p, 2]·x[f+1]``. ``None`` when the upsampler is not that module
    (the generator then projects the upsampled mel instead)."""
    up = model.upsampler
    if type(up) is not ConditionUpsampler:
        return None
    plan = []
    for s, conv in zip(up.scales, up.smoothers):
        if not (type(conv) is nn.Conv2d and conv.bias is None and conv.in_channels == conv.out_channels == 1
                and conv.kernel_size == (1, 2 * s + 1) and conv.padding == (0, s) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"):
            return None
        a = ConditionUpsampler.polyphase_taps(conv.weight.detach().double().cpu(), s)  # the model's own map
        plan.append((s, np.ascontiguousarray(a.numpy(), np.float32)))
    return plan
