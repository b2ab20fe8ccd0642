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

Crops with history (``n_history``: leading samples that are inputs only, see
:func:`wavenet_dilated.data.dataset.history_length`) compute each layer only where a loss position can see it:
layer ``l`` from ``n_history − (the later layers' receptive field)`` on, its skip only from ``n_history`` on, the
output head only on the targets. With a receptive field's history every layer is a "valid" convolution (no
padding), and the extra cost of the history is about the later layers' padding, not ``n_history`` per layer.

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
    model: WaveNet,
    audio: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    n_history: int = 0,
) -> torch.Tensor:
    """:meth:`WaveNet.loss` through :func:`fused_forward`: teacher-forced mean NLL (nats) of ``audio (B, T)``.

    With ``n_history``, the mean over ``audio[:, n_history:]`` only (the samples before are inputs, not targets):
    the same as ``WaveNet.loss`` of the whole crop with the first ``n_history`` positions left out of the mean.
    """
    _check_history(n_history, audio)
    logits = _fused_logits(model, model.shift_right(audio), mel, speaker, start=n_history)  # (B, T − n_history, out)
    target = audio[:, n_history:]
    if isinstance(model.head, Categorical):  # Categorical.loss, one row per sample (inputs checked: int64 classes)
        return F.cross_entropy(logits.reshape(-1, logits.shape[2]).float(), target.reshape(-1))
    return model.head.loss(logits.transpose(1, 2), target)


def _check_history(n_history: int, audio: torch.Tensor) -> None:
    if not isinstance(n_history, int) or isinstance(n_history, bool) or n_history < 0:
        raise ValueError(f"n_history must be an int ≥ 0, found {n_history!r}")
    if isinstance(audio, torch.Tensor) and audio.dim() == 2 and n_history >= audio.shape[1]:
        raise ValueError(f"n_history={n_history} leaves no targets in a crop of {audio.shape[1]} samples")


def _fused_logits(
    model: WaveNet,
    inputs: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    start: int = 0,
) -> torch.Tensor:
    """:func:`fused_forward` in the time-major layout: logits ``(B, T − start, out)``, those of positions
    ``start … T − 1`` (each layer computed only where those positions can see it)."""
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
    starts = _layer_starts(blocks, start)
    mel_terms = _mel_projections(model, cond, starts) if cond is not None else [None] * len(blocks)
    spk_terms = speaker_terms(blocks, g).split(G, dim=1) if g is not None else [None] * len(blocks)
    skips, first = None, 0  # x holds positions first … T − 1
    for block, mel_term, spk_term, s_l in zip(blocks, mel_terms, spk_terms, starts):
        conv = block.conv
        k, d, T_l = conv.kernel_size, conv.dilation, T - s_l
        xin = F.dropout(x, block.dropout, block.training)
        lead = first - (s_l - conv.padding)  # zeros to add on the left (< 0: inputs to skip)
        padded = F.pad(xin, (0, 0, lead, 0)) if lead > 0 else xin[:, -lead:]
        parts = [padded[:, j * d : j * d + T_l] for j in range(k)]
        taps = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        if mel_term is None:
            h = F.linear(taps, conv_matrix(block), conv.conv.bias)
        elif mel_term.dim() == 2:  # the mel projection (conv bias included) is the product's additive term
            h = torch.addmm(mel_term, taps.reshape(B * T_l, -1), conv_matrix(block).T).view(B, T_l, -1)
        else:  # a later position range of its group's projection: not a contiguous block of rows
            h = F.linear(taps, conv_matrix(block)) + mel_term
        if spk_term is not None:
            h = h + spk_term[:, None, :]  # (B, 1, G)
        a, b = h.chunk(2, dim=2)
        z = torch.tanh(a) * torch.sigmoid(b)
        w, bias = skip_residual(block)
        S = c.skip_channels
        if start == s_l:  # [skip | residual] in one product
            out = F.linear(z, w, bias)
            sk, r = (out, None) if block.residual is None else out.split([S, c.residual_channels], dim=2)
        else:  # the skip only where the loss sees it, the residual everywhere the next layers read it
            sk = F.linear(z[:, start - s_l :], w[:S], bias[:S])
            r = None if block.residual is None else F.linear(z, w[S:], bias[S:])
        if r is not None:
            x = (x[:, s_l - first :] + r) * RES_SCALE
            first = s_l
        skips = sk if skips is None else skips + sk
    hidden = F.relu(F.linear(F.relu(skips * model.skip_scale), *pointwise(model.out1)))
    return F.linear(hidden, *pointwise(model.out2))


def _layer_starts(blocks: list, start: int) -> list[int]:
    """The first position each layer must compute for the outputs ``start …`` (non-decreasing): ``start`` less the
    padding of all later layers, at least 0."""
    starts, reach = [], 0
    for block in reversed(blocks):
        starts.append(max(0, start - reach))
        reach += block.conv.padding
    return starts[::-1]


def _mel_projections(model: WaveNet, cond: torch.Tensor, starts: list[int]) -> list[torch.Tensor]:
    """Each block's ``cond_proj(cond) + conv bias`` from the upsampled mel ``(B, T, C_mel)``, at the block's positions
    ``starts[l] … T − 1``: ``(B·T_l, G)`` rows when they are a group's first positions, else a ``(B, T_l, G)`` view.

    Consecutive layers share one product ``cond @ [W_mel; …]ᵀ`` (from the group's first start) as long as their
    projections take at most ``_MEL_PROJECTION_BYTES``: one wide product is faster than one per layer, but all layers
    at once make a buffer of ``L·G`` columns per sample (``ljspeech``, 2 × 8192: 503 MB, and as much again for its
    gradient) whose fresh pages cost more than the product saves.
    """
    B, T, _ = cond.shape
    blocks = list(model.blocks)
    G = model.config.gate_channels
    per_group = max(1, _MEL_PROJECTION_BYTES // (B * T * G * cond.element_size()))
    out: list[torch.Tensor] = []
    for i in range(0, len(blocks), per_group):
        group, first = blocks[i : i + per_group], starts[i]
        rows = cond[:, first:].reshape(B * (T - first), -1)
        terms = F.linear(rows, cond_matrix(group), conv_biases(group)).split(G, dim=1)
        for s_l, term in zip(starts[i : i + per_group], terms):
            out.append(term if s_l == first else term.view(B, T - first, G)[:, s_l - first :])
    return out


def training_loss(
    model: WaveNet,
    audio: torch.Tensor,
    mel: torch.Tensor | None,
    fused: bool,
    n_history: int = 0,
    speaker: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model.loss(audio, mel)``, through :func:`fused_loss` when ``fused`` (the trainer's loss on the CPU).

    ``n_history`` leading samples of each row are inputs only: the loss is the mean over the others (see
    :func:`fused_loss`; without ``fused``, the whole crop's logits with the history positions left out).
    """
    if fused:
        return fused_loss(model, audio, mel, speaker, n_history)
    if n_history == 0:
        return model.loss(audio, mel, speaker)
    _check_history(n_history, audio)
    logits = model(model.shift_right(audio), mel, speaker)
    return model.head.loss(logits[:, :, n_history:], audio[:, n_history:])


class LossModule(nn.Module):
    """``forward`` returns the WaveNet's teacher-forced loss, so DDP (which hooks ``forward``) and ``torch.compile``
    see the whole training computation; ``n_history`` leading samples of each crop are inputs only."""

    def __init__(self, model: WaveNet, fused: bool, n_history: int = 0) -> None:
        super().__init__()
        self.model, self.fused, self.n_history = model, fused, n_history

    def forward(
        self, audio: torch.Tensor, mel: torch.Tensor | None, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        return training_loss(self.model, audio, mel, self.fused, self.n_history, speaker)
