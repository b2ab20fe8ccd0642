"""A faster teacher-forced forward for training on CPU: the same function as :meth:`WaveNet.forward`, as matrix products.

:meth:`~wavenet_dilated.wavenet.WaveNet.forward` runs every layer as convolutions in the ``(B, C, T)`` layout: a dilated
oneDNN convolution for the gate pre-activation and ``slow_conv2d`` for the 1×1s, both well below a plain sgemm on
CPU. Here the activations are time-major ``(B, T, C)`` so that every layer is plain matrix products over all
``B·T`` samples at once:

* ``Σ_j x(t − (k−1−j)d) @ W_jᵀ + [mel(t) | 1] @ [W_mel | bias]ᵀ`` — the dilated conv as one product per tap, each
  reading its shifted window of the input in place, and the mel projection with the conv bias;
* ``z @ W_skipᵀ`` and ``z @ W_resᵀ`` accumulated into the skip sum and the residual stream by the products;
* the categorical loss over ``(B·T, classes)`` rows, the class dimension contiguous (the ``(B, classes, T)`` layout
  costs a transposed copy and a strided log-softmax).

The blocks' forward and backward are written out by hand (:class:`_ResidualStack`, a ``torch.autograd.Function``):
at these sizes a step is mostly sgemm, and autograd's generic backward of the same expression (zero-filled slice
gradients for every tap, concatenations for ``chunk``/``split``, the taps' copy) costs about half as much again in
memory passes. Where it does not apply (dropout being drawn, autocast, ``torch.compile``, which fuses the plain
expression itself) the blocks run as plain autograd operations (:func:`_autograd_skips`): the taps concatenated for
one product, the mel projections of several layers in one product (:func:`_mel_projections`), skip and residual
1×1s in one product. Measured on one thread at the ``ljspeech`` sizes (2 × 8192): 1.47× the peer's (r9y9's)
training step with the hand-written stack, 1.05× with the plain autograd blocks, 1.18× with those through
``torch.compile`` (``benchmarks/peer.py``).

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
    starts = _layer_starts(list(model.blocks), start)
    if _stack_applies(model, x):
        skips = _stack_skips(model, x, cond, g, starts, start)
    else:
        skips = _autograd_skips(model, x, cond, g, starts, start)
    hidden = F.relu(F.linear(F.relu(skips * model.skip_scale), *pointwise(model.out1)))
    return F.linear(hidden, *pointwise(model.out2))


def _stack_applies(model: WaveNet, x: torch.Tensor) -> bool:
    """Whether :class:`_ResidualStack` computes this model's blocks: no dropout being drawn, every block but the last
    with a residual 1×1, not under autocast (its products write into buffers of the input's dtype) and not under
    ``torch.compile`` (which fuses the plain expression itself)."""
    blocks = list(model.blocks)
    return (not torch.compiler.is_compiling() and not torch.is_autocast_enabled(x.device.type)
            and not any(b.dropout > 0 and b.training for b in blocks)
            and all(b.residual is not None for b in blocks[:-1]) and blocks[-1].residual is None)


def _stack_skips(model: WaveNet, x: torch.Tensor, cond: torch.Tensor | None, g: torch.Tensor | None,
                 starts: list[int], start: int) -> torch.Tensor:
    """The skip sum ``(B, T − start, S)`` (biases included) through :class:`_ResidualStack`."""
    blocks = list(model.blocks)
    if cond is not None:
        cond = cond.contiguous()
    weights: list[torch.Tensor | None] = []
    for block in blocks:
        w_aux = conv_biases([block])[:, None]  # [W_mel | bias]: the bias's column meets a column of ones
        if cond is not None:
            w_aux = torch.cat([cond_matrix([block]), w_aux], dim=1)
        w_skip, _ = pointwise(block.skip)
        w_res, b_res = pointwise(block.residual) if block.residual is not None else (None, None)
        weights += [conv_matrix(block), w_aux, w_skip, w_res, b_res]
    layers = tuple((b.conv.kernel_size, b.conv.dilation, s_l) for b, s_l in zip(blocks, starts))
    spk = speaker_terms(blocks, g) if g is not None else None
    skips = _ResidualStack.apply(layers, start, torch.is_grad_enabled(), x, cond, spk, *weights)
    return skips + torch.stack([pointwise(b.skip)[1] for b in blocks]).sum(0)


def _autograd_skips(model: WaveNet, x: torch.Tensor, cond: torch.Tensor | None, g: torch.Tensor | None,
                    starts: list[int], start: int) -> torch.Tensor:
    """The skip sum ``(B, T − start, S)`` block by block in plain autograd operations (dropout included)."""
    c = model.config
    B, T, _ = x.shape
    blocks = list(model.blocks)
    G = c.gate_channels
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
    return skips


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


class _ResidualStack(torch.autograd.Function):
    """The residual blocks' forward and backward written out: the skip sum ``(B, T − start, S)`` (skip biases left out)
    from the first block's input ``x (B, T, R)``.

    The same function as the per-block autograd expression (:func:`_autograd_skips`), in fewer passes over memory:

    * a block's conv is one product per tap, each reading its shifted window of the input in place and adding into
      the gate pre-activation (``addmm_``), after one product ``[cond | 1] @ [W_mel | bias]ᵀ`` that starts it (the
      bias, and a speaker's term, ride in the column of ones): no concatenated taps, no bias copy;
    * the gate is evaluated in place in that buffer, its gradient in two passes per half (no ``chunk``
      concatenation);
    * the skip sum and the residual stream are accumulated by the 1×1 products themselves (``addmm`` with ``beta``);
    * in the backward the taps' weight gradients are products over the same windows, and the input's gradient is
      accumulated in place, one product per tap (no zero-filled slice gradients).

    Saved per block (when ``keep``: a graph is being recorded): its input, the gate's ``tanh``/``sigmoid`` and their
    product; the backward frees them (and overwrites the gate's) as it passes, so a graph is back-propagated once.

    ``layers``: per block ``(kernel_size, dilation, first position)``; ``weights``: per block ``(W_conv (G, K·R),
    [W_mel | conv bias] (G, C_mel + 1), W_skip (S, G/2), W_res (R, G/2), b_res (R,))``, the last two ``None`` for the
    last block; ``cond``: ``(B, T, C_mel)`` or ``None``; ``spk``: ``(B, L·G)`` speaker terms or ``None``.
    """

    @staticmethod
    def forward(ctx, layers, start, keep, x, cond, spk, *weights):  # noqa: D102
        B, T, R = x.shape
        aux = _with_ones(x, cond)  # (B, T, C + 1)
        skips, first, saved = None, 0, []
        for l, (k, d, s) in enumerate(layers):
            w, w_aux, w_skip, w_res, b_res = weights[5 * l : 5 * l + 5]
            G = w.shape[0]
            T_l = T - s
            h = x.new_empty(B, T_l, G)
            for b in range(B):
                torch.mm(aux[b, s:], _batch_aux(w_aux, spk, b, l).T, out=h[b])
                for j, rows, window in _taps(k, d, first, s, T):
                    h[b, rows:].addmm_(x[b, window], w[:, j * R : (j + 1) * R].T)
            t, g = h[:, :, : G // 2], h[:, :, G // 2 :]
            t.tanh_()
            g.sigmoid_()
            z = t * g  # (B, T_l, G/2)
            if skips is None:
                skips = torch.matmul(z[:, start - s :], w_skip.T)
            else:
                for out, zm in _matrices(skips, z[:, start - s :]):
                    out.addmm_(zm, w_skip.T)
            if keep:
                saved.append((x, h, z))
            if w_res is not None:  # x ← (x + z W_resᵀ + b_res)·√½ on positions s …
                nxt = x.new_empty(B, T_l, R)
                for out, xm, zm in _matrices(nxt, x[:, s - first :], z):
                    torch.addmm(xm, zm, w_res.T, beta=RES_SCALE, alpha=RES_SCALE, out=out)
                nxt.add_(b_res, alpha=RES_SCALE)
                x, first = nxt, s
        ctx.layers, ctx.start, ctx.saved = layers, start, saved
        ctx.save_for_backward(cond, spk, *weights)
        return skips

    @staticmethod
    def backward(ctx, g_skips):  # noqa: D102
        cond, spk, *weights = ctx.saved_tensors
        layers, start, saved = ctx.layers, ctx.start, ctx.saved
        if saved[-1] is None:
            raise RuntimeError("the fused residual stack frees its saved tensors in backward: back-propagate once")
        g_skips = g_skips.contiguous()
        x0 = saved[0][0]
        B, T, R = x0.shape
        aux = _with_ones(x0, cond)
        g_cond = torch.zeros_like(cond) if cond is not None and ctx.needs_input_grad[4] else None
        g_spk = torch.zeros_like(spk) if spk is not None and ctx.needs_input_grad[5] else None
        g_weights: list[torch.Tensor | None] = [None] * len(weights)
        g_next = None  # the gradient of the block's output (positions s …)
        for l in reversed(range(len(layers))):
            k, d, s = layers[l]
            first = layers[l - 1][2] if l else 0
            w, w_aux, w_skip, w_res, b_res = weights[5 * l : 5 * l + 5]
            x, h, z = saved[l]
            saved[l] = None
            G, T_l = w.shape[0], T - s
            H = G // 2
            dz = x.new_empty(B, T_l, H)
            if g_next is None:
                dz[:, : start - s].zero_()
                for out, gm in _matrices(dz[:, start - s :], g_skips):
                    torch.mm(gm, w_skip, out=out)
            else:
                for out, gm in _matrices(dz, g_next):
                    torch.mm(gm, w_res * RES_SCALE, out=out)
                for out, gm in _matrices(dz[:, start - s :], g_skips):
                    out.addmm_(gm, w_skip)
                g_weights[5 * l + 3] = _sum_of_products(g_next, z).mul_(RES_SCALE)
                g_weights[5 * l + 4] = g_next.sum((0, 1)).mul_(RES_SCALE)
            g_weights[5 * l + 2] = _sum_of_products(g_skips, z[:, start - s :])
            t, g = h[:, :, :H], h[:, :, H:]
            dh = h  # the gate's gradient overwrites its saved values, half by half
            torch.mul(dz, t, out=z)  # z is no longer needed: ∂/∂b = dz·tanh(a)·σ(b)(1 − σ(b))
            dz.mul_(g)  # ∂/∂a = dz·σ(b)·(1 − tanh²(a))
            torch.ops.aten.tanh_backward(dz, t, grad_input=t)
            torch.ops.aten.sigmoid_backward(z, g, grad_input=g)
            del dz, z
            g_w = torch.zeros_like(w)
            g_aux = torch.zeros_like(w_aux)
            gx = x.new_empty(B, T - first, R)  # the input's gradient, positions first …
            gx[:, : s - first].zero_()
            last = w[:, (k - 1) * R :]
            for b in range(B):
                per_batch = dh[b].T @ aux[b, s:]  # (G, C + 1): the mel weights' and the bias's (last column)
                g_aux += per_batch
                if g_spk is not None:
                    g_spk[b, l * G : (l + 1) * G] = per_batch[:, -1]
                if g_cond is not None:
                    g_cond[b, s:].addmm_(dh[b], w_aux[:, :-1])
                # the residual path and the last tap (both at positions s …) in one product, the others added in place
                out = gx[b, s - first :]
                if g_next is None:
                    torch.mm(dh[b], last, out=out)
                else:
                    torch.addmm(g_next[b], dh[b], last, beta=RES_SCALE, out=out)
                for j, rows, window in _taps(k, d, first, s, T):
                    g_w[:, j * R : (j + 1) * R].addmm_(dh[b, rows:].T, x[b, window])
                    if j < k - 1:
                        gx[b, window].addmm_(dh[b, rows:], w[:, j * R : (j + 1) * R])
            g_weights[5 * l], g_weights[5 * l + 1] = g_w, g_aux
            g_next = gx
        return (None, None, None, g_next, g_cond, g_spk, *g_weights)


def _taps(k: int, d: int, first: int, s: int, T: int):
    """Per tap ``j`` of a block computing positions ``s … T − 1`` from an input holding positions ``first … T − 1``:
    ``(j, rows, window)``, the output rows ``rows …`` that read the input (the earlier ones read causal zeros) and the
    slice of the input they read. Taps that read only zeros are left out."""
    pad, T_l = (k - 1) * d, T - s
    out = []
    for j in range(k):
        lo = s - pad + j * d  # the position row 0 reads
        rows = min(T_l, max(0, first - lo))
        if rows < T_l:
            out.append((j, rows, slice(lo + rows - first, lo + T_l - first)))
    return out


def _with_ones(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """``[cond | 1]`` ``(B, T, C + 1)`` (``(B, T, 1)`` without cond): the conv bias's column rides with the mel."""
    B, T, _ = x.shape
    aux = x.new_empty(B, T, (cond.shape[2] if cond is not None else 0) + 1)
    if cond is not None:
        aux[:, :, :-1] = cond
    aux[:, :, -1] = 1
    return aux


def _batch_aux(w_aux: torch.Tensor, spk: torch.Tensor | None, b: int, l: int) -> torch.Tensor:
    """``[W_mel | bias]`` of block ``l`` with batch row ``b``'s speaker term added to the bias column."""
    if spk is None:
        return w_aux
    G = w_aux.shape[0]
    return torch.cat([w_aux[:, :-1], (w_aux[:, -1] + spk[b, l * G : (l + 1) * G])[:, None]], dim=1)


def _matrices(*tensors: torch.Tensor):
    """``(B, n, ·)`` tensors of equal ``B`` and ``n`` as 2-D matrices for ``mm``/``addmm``: one ``(B·n, ·)`` view of
    each when all allow it, else one ``(n, ·)`` matrix per batch row."""
    if all(t.dim() == 3 and (t.shape[0] == 1 or t.stride(0) == t.shape[1] * t.stride(1)) for t in tensors):
        return [tuple(t.reshape(-1, t.shape[2]) for t in tensors)]
    return list(zip(*(t.unbind(0) for t in tensors)))


def _sum_of_products(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Σ_rows gᵀ z`` of two ``(B, n, ·)`` tensors, as products."""
    out = None
    for gm, zm in _matrices(g, z):
        out = gm.T @ zm if out is None else out.addmm_(gm.T, zm)
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
