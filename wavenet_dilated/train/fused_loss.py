"""A faster teacher-forced forward for training on CPU: the same function as :meth:`WaveNet.forward`, as matrix products.

:meth:`~wavenet_dilated.wavenet.WaveNet.forward` runs every layer as convolutions in the ``(B, C, T)`` layout: a dilated
oneDNN convolution for the gate pre-activation and ``slow_conv2d`` for the 1×1s, both well below a plain sgemm on
CPU. Here the activations are time-major ``(B, T, C)`` so that every layer is two plain matrix products over all
``B·T`` samples at once:

* ``[x(t − (k−1)d) … x(t)] @ W_convᵀ`` — the dilated conv in one product (the taps are shifted views of the
  left-padded input, concatenated), added to the layer's mel projection ``mel(t) @ W_melᵀ``; the mel projections of
  several layers are one product over all samples (see :func:`_mel_projections`);
* ``z @ [W_skip; W_res]ᵀ`` — skip and residual 1×1s in one product;
* the categorical loss over ``(B·T, classes)`` rows, the class dimension contiguous (the ``(B, classes, T)`` layout
  costs a transposed copy and a strided log-softmax).

Same parameters (weight norm and dropout included), same outputs up to fp32 rounding (tested against
:meth:`WaveNet.forward` for logits and gradients); the layers' matrices come from
:mod:`wavenet_dilated.generation.folding`, the one place that turns the modules into matrices. Dropout draws its mask in
the time-major layout, so with ``dropout > 0`` the random masks (not their distribution) differ from
:meth:`WaveNet.forward`'s.

Examples:
    >>> loss = fused_loss(model, audio, mel)     # instead of model.loss(audio, mel)
    >>> loss.backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..generation.folding import (
    RES_SCALE,
    cond_matrix,
    conv_biases,
    conv_matrix,
    input_affine,
    pointwise,
    skip_residual,
    speaker_terms,
)
from ..nn.heads import Categorical
from ..wavenet import WaveNet

__all__ = ["fused_forward", "fused_loss"]

#: bytes of one group's mel projections (see :func:`_mel_projections`)
_MEL_PROJECTION_BYTES = 32 << 20


def fused_forward(
    model: WaveNet,
    inputs: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """:meth:`WaveNet.forward` (same arguments and checks, logits ``(B, out, T)``) computed as matrix products."""
    return _fused_logits(model, inputs, mel, speaker, cond).transpose(1, 2)


def fused_loss(
    model: WaveNet, audio: torch.Tensor, mel: torch.Tensor | None = None, speaker: torch.Tensor | None = None
) -> torch.Tensor:
    """:meth:`WaveNet.loss` through :func:`fused_forward`: teacher-forced mean NLL (nats) of ``audio (B, T)``."""
    logits = _fused_logits(model, model.shift_right(audio), mel, speaker)  # (B, T, out)
    if isinstance(model.head, Categorical):  # Categorical.loss, one row per sample (inputs checked: int64 classes)
        return F.cross_entropy(logits.reshape(-1, logits.shape[2]).float(), audio.reshape(-1))
    return model.head.loss(logits.transpose(1, 2), audio)


def _fused_logits(
    model: WaveNet,
    inputs: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`fused_forward` in the time-major layout: logits ``(B, T, out)``."""
    c = model.config
    model.check_inputs(inputs)
    B, T = inputs.shape
    if c.cond_channels is not None:
        if cond is None:
            if mel is None:
                raise ValueError("this model is mel-conditioned: pass mel (batch, bins, frames)")
            model.check_mel(mel)
            if mel.shape[2] * c.hop_length != T:
                raise ValueError(f"mel has {mel.shape[2]} frames × hop {c.hop_length} = {mel.shape[2] * c.hop_length} "
                                 f"samples, expected {T} (the input length)")
            cond = model.upsample(mel)
        elif cond.shape[0] != B or cond.shape[2] != T:
            raise ValueError(f"cond must have shape ({B}, {c.cond_channels}, {T}), found {tuple(cond.shape)}")
        cond = cond.transpose(1, 2)  # (B, T, C_mel)
    elif mel is not None or cond is not None:
        raise ValueError("this model is unconditioned: it takes no mel")
    g = model.speaker_vector(speaker, B)
    if model.head.quantized:
        x = model.embed(inputs)  # (B, T, R)
    else:
        w, bias = input_affine(model)
        x = inputs.to(w.dtype)[:, :, None] * w + bias
    blocks = list(model.blocks)
    G = model.config.gate_channels
    mel_terms = _mel_projections(model, cond) if cond is not None else [None] * len(blocks)
    spk_terms = speaker_terms(blocks, g).split(G, dim=1) if g is not None else [None] * len(blocks)
    skips = None
    for block, mel_term, spk_term in zip(blocks, mel_terms, spk_terms):
        conv = block.conv
        k, d = conv.kernel_size, conv.dilation
        xin = F.dropout(x, block.dropout, block.training)
        padded = F.pad(xin, (0, 0, conv.padding, 0))
        parts = [padded[:, j * d : j * d + T] for j in range(k)]
        taps = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        if mel_term is None:
            h = F.linear(taps, conv_matrix(block), conv.conv.bias)
        else:  # the mel projection (conv bias included) is the product's additive term
            h = torch.addmm(mel_term, taps.reshape(B * T, -1), conv_matrix(block).T).view(B, T, -1)
        if spk_term is not None:
            h = h + spk_term[:, None, :]  # (B, 1, G)
        a, b = h.chunk(2, dim=2)
        z = torch.tanh(a) * torch.sigmoid(b)
        s = F.linear(z, *skip_residual(block))  # [skip | residual] in one product
        if block.residual is not None:
            s, r = s.split([c.skip_channels, c.residual_channels], dim=2)
            x = (x + r) * RES_SCALE
        skips = s if skips is None else skips + s
    hidden = F.relu(F.linear(F.relu(skips * model.skip_scale), *pointwise(model.out1)))
    return F.linear(hidden, *pointwise(model.out2))


def _mel_projections(model: WaveNet, cond: torch.Tensor) -> list[torch.Tensor]:
    """Each block's ``cond_proj(cond) + conv bias`` as ``(B·T, G)`` rows, from the upsampled mel ``(B, T, C_mel)``.

    Consecutive layers share one product ``cond @ [W_mel; …]ᵀ`` as long as their projections take at most
    ``_MEL_PROJECTION_BYTES``: one wide product is faster than one per layer, but all layers at once make a buffer of
    ``L·G`` columns per sample (``ljspeech``, 2 × 8192: 503 MB, and as much again for its gradient) whose fresh pages
    cost more than the product saves.
    """
    B, T, _ = cond.shape
    rows = cond.reshape(B * T, -1)
    blocks = list(model.blocks)
    G = model.config.gate_channels
    per_group = max(1, _MEL_PROJECTION_BYTES // (rows.shape[0] * G * rows.element_size()))
    out: list[torch.Tensor] = []
    for i in range(0, len(blocks), per_group):
        group = blocks[i : i + per_group]
        out += F.linear(rows, cond_matrix(group), conv_biases(group)).split(G, dim=1)
    return out


def training_loss(model: WaveNet, audio: torch.Tensor, mel: torch.Tensor | None, fused: bool) -> torch.Tensor:
    """``model.loss(audio, mel)``, through :func:`fused_loss` when ``fused`` (the trainer's loss on the CPU)."""
    return fused_loss(model, audio, mel) if fused else model.loss(audio, mel)


class LossModule(nn.Module):
    """``forward`` returns the WaveNet's teacher-forced loss, so DDP (which hooks ``forward``) and ``torch.compile``
    see the whole training computation."""

    def __init__(self, model: WaveNet, fused: bool) -> None:
        super().__init__()
        self.model, self.fused = model, fused

    def forward(self, audio: torch.Tensor, mel: torch.Tensor | None) -> torch.Tensor:
        return training_loss(self.model, audio, mel, self.fused)
