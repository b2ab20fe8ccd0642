"""The float64 oracle of the generation tests: the folded network (generation/folding.py) evaluated in plain float64
torch, with a first-order bound on the rounding error of any fp32 evaluation of the same function.

:func:`folded_logits` gives the logits and a bound per logit; :func:`conditioning_bound` the bound of the conditioning
terms alone; :func:`loss_bound` carries the logit bound to the training loss and :func:`sample_bound` carries it through
a continuous head's sampling map and the feedback of generated samples. Compare with
:func:`tests._tolerance.assert_close_derived` (two fp32 evaluations: twice the bound).
"""

import copy
import math

import torch

from tests._tolerance import assert_close_derived, eps
from wavenet_dilated.generation import folding
from wavenet_dilated.generation.reference import UniformStream

__all__ = ["assert_same_samples", "conditioning_bound", "folded_logits", "loss_bound", "sample_bound"]

EPS32 = eps(torch.float32)


def gamma(n: int) -> float:
    """Relative rounding of an fp32 sum of ``n`` products: ``eps·√n`` (rounding errors add like a random walk), plus
    ``2·eps`` for the rounding of a folded weight (× √½, × skip_scale, a float64 table) and of a bias added after."""
    return EPS32 * (math.sqrt(n) + 2)


def _rss(*terms):
    """Independent rounding errors add in quadrature (root sum of squares)."""
    return torch.sqrt(sum(t * t for t in terms))


def _linear(x, ex, w, b):
    """``x @ wᵀ + b`` and the error scale of its fp32 evaluation from input errors ``ex``: ``ex`` propagated through
    ``w`` (independent errors: ``√(w²·ex²)``) and ``gamma(n)·(|w|·|x| + |b|)`` made here."""
    made = gamma(w.shape[1]) * (x.abs() @ w.abs().T + b.abs())
    return x @ w.T + b, _rss(((ex * ex) @ (w * w).T).sqrt(), made)


def _shift(x, k):
    """``x (B, T, C)`` delayed by ``k`` steps along time, zeros before the start."""
    return torch.cat([x.new_zeros(x.shape[0], k, x.shape[2]), x[:, : x.shape[1] - k]], dim=1) if k else x


def _conditioning(model, mel, speaker, B, T):
    """Per layer the additive conditioning term ``(B, T, G)`` and its error bound (float64 model), or zeros."""
    L, G_ = model.config.n_layers, model.config.gate_channels
    term, err = torch.zeros(B, T, L * G_, dtype=torch.float64), torch.zeros(B, T, L * G_, dtype=torch.float64)
    if mel is not None:
        frames = model.mel_context(mel) if model.mel_context is not None else mel  # computed alike by every path
        up_abs = copy.deepcopy(model.upsampler)
        for p in up_abs.parameters():
            p.data.abs_()
        c, c_env = model.upsampler(frames).transpose(1, 2), up_abs(frames.abs()).transpose(1, 2)
        # the upsampler's stages are 3-tap filters: gamma(3) each; then the mel projection of C_mel terms
        w = folding.cond_matrix(model.blocks)
        term, err = _linear(c, len(model.config.upsample_scales) * gamma(3) * c_env, w, torch.zeros(L * G_).double())
    g = model.speaker_vector(speaker, B)
    if g is not None:
        spk = folding.speaker_terms(model.blocks, g)[:, None, :]
        term, err = term + spk, _rss(err, gamma(model.config.speaker_channels) * spk.abs())
    return term, err


@torch.no_grad()
def folded_logits(model, inputs, mel=None, speaker=None):
    """Teacher-forced logits ``(B, out, T)`` from ``folding.fold`` applied in plain float64 torch, and a first-order
    bound on the error of one fp32 evaluation of the same network (any order of the same sums), per logit.

    Each product adds ``gamma(n)·(|W|·|x| + |b|)`` and passes on the errors of its inputs through ``W``; tanh, ReLU and
    σ pass on at most 1, 1 and ¼ of an error; an elementwise op rounds by an ulp or two. Rounding errors are treated as
    independent (they add in quadrature), as ``eps·√n`` does for one sum; the worst case (``|W|`` and ``n·eps``) grows
    with depth far past anything a real evaluation shows, and would then hide real bugs."""
    m = copy.deepcopy(model).double()
    w = folding.fold(m, tables=True)
    c = m.config
    B, T = inputs.shape
    G_, H = c.gate_channels, c.gate_channels // 2
    if m.head.quantized:
        x, ex = w.embed[inputs], torch.zeros(B, T, c.residual_channels, dtype=torch.float64)
    else:
        u = inputs.double()[:, :, None]
        x, ex = _linear(u, torch.zeros_like(u), w.embed[:1].T, w.embed[1])
    cond, econd = _conditioning(m, None if mel is None else mel.double(), speaker, B, T)
    skips, eskips = w.skip_bias.expand(B, T, -1), gamma(c.n_layers) * w.skip_bias.abs().expand(B, T, -1)
    for i, d in enumerate(c.dilations):
        taps = torch.cat([_shift(x, (c.kernel_size - 1 - j) * d) for j in range(c.kernel_size)], dim=2)
        etaps = torch.cat([_shift(ex, (c.kernel_size - 1 - j) * d) for j in range(c.kernel_size)], dim=2)
        lay = slice(i * G_, (i + 1) * G_)
        h, eh = _linear(taps, etaps, w.conv[i], w.conv_bias[lay] + cond[:, :, lay])
        if i == 0 and w.table is not None:  # the first layer by per-class table rows (zero before the start)
            rows = [_shift(w.table[j][inputs], (c.kernel_size - 1 - j) * d) for j in range(c.kernel_size)]
            h = sum(rows) + w.conv_bias[lay] + cond[:, :, lay]
        eh = _rss(eh, econd[:, :, lay])
        a, b = h[:, :, :H], h[:, :, H:]
        z = torch.tanh(a) * torch.sigmoid(b)
        ez = _rss(torch.sigmoid(b) * eh[:, :, :H], torch.tanh(a).abs() * eh[:, :, H:] / 4, 4 * EPS32 * z.abs())
        s, es = _linear(z, ez, w.skip[i], torch.zeros(c.skip_channels).double())
        skips, eskips = skips + s, _rss(eskips, es, gamma(c.n_layers) * s.abs())
        if w.res[i] is not None:
            r, er = _linear(z, ez, w.res[i], w.res_bias[i] + folding.RES_SCALE * x)
            x, ex = r, _rss(er, folding.RES_SCALE * ex)
    hidden, ehidden = _linear(torch.relu(skips), eskips, w.out1, w.out1_bias)
    logits, elogits = _linear(torch.relu(hidden), ehidden, w.out2, w.out2_bias)
    # errors are scales of independent roundings: the largest of N such deviations stays below √(2·ln N) scales
    return logits.transpose(1, 2).float(), (math.sqrt(2 * math.log(elogits.numel())) * elogits).transpose(1, 2).float()


def conditioning_bound(model, mel, speaker=None) -> torch.Tensor:
    """``(B, T, L·G)``: how far an fp32 evaluation of every layer's conditioning term (mel projection, speaker
    projection; not the conv bias) may lie from the exact value (as in :func:`folded_logits`)."""
    B, T = mel.shape[0], mel.shape[2] * model.config.hop_length
    with torch.no_grad():
        _, err = _conditioning(copy.deepcopy(model).double(), mel.double(), speaker, B, T)
    return (math.sqrt(2 * math.log(err.numel())) * err).float()


def loss_bound(model, audio, mel=None, speaker=None, n_history: int = 0) -> float:
    """How far two fp32 evaluations of ``model.loss(audio, mel, speaker)`` may differ: to first order
    ``Σ |∂loss/∂logit|·2·bound`` over the logits (:func:`folded_logits`), plus ``eps·√(B·T)·|loss|`` for the mean.
    With ``n_history``, of the loss over ``audio[:, n_history:]`` only (a crop with history)."""
    ref, bound = folded_logits(model, model.shift_right(audio), mel, speaker)
    ref, bound, target = ref[:, :, n_history:], bound[:, :, n_history:], audio[:, n_history:]
    z = ref.double().requires_grad_()
    loss = model.head.loss(z, target.double() if not model.head.quantized else target)
    (g,) = torch.autograd.grad(loss, z)
    return float((g.abs() * 2 * bound).sum() + EPS32 * math.sqrt(target.numel()) * loss.detach().abs())


def _sample_map(head, z, u, temperature):
    """The continuous head's sample before its clamp to [−1, 1] (1-Lipschitz, so it only shrinks differences), as a
    differentiable function of float64 logits ``z (B, out, T)`` with ``u (B, n_uniforms, T)``; also the magnitudes
    ``|σ·T·noise|`` of the noise term and ``σ·T·Λ`` of the library functions the noise is made of (``Λ = |noise|``
    for erfinv, ``|log u| + |log1p(−u)|`` for the logistic)."""
    if head.n_uniforms == 1:  # Gaussian: mean + σ·T·√2·erfinv(2u − 1)
        mean, log_std = z[:, 0], z[:, 1].clamp(min=head.log_scale_min)
        noise = math.sqrt(2.0) * torch.erfinv(2.0 * u[:, 0].clamp(1e-7, 1.0 - 1e-7) - 1.0)
        scale, magnitude = torch.exp(log_std) * temperature, noise.abs()
    else:  # mixture of logistics: the chosen mixture's mean + σ·T·logit(u); the choice as the head makes it, in fp32
        k = head.n_mixtures
        cdf = torch.softmax(z[:, :k].float(), dim=1).cumsum(1)
        pick = (cdf < u[:, :1].float() * cdf[:, -1:]).sum(1, keepdim=True).clamp_(max=k - 1)
        mean = z[:, k : 2 * k].gather(1, pick)[:, 0]
        scale = torch.exp(z[:, 2 * k :].clamp(min=head.log_scale_min).gather(1, pick)[:, 0]) * temperature
        v = u[:, 1].clamp(1e-5, 1.0 - 1e-5)
        noise, magnitude = torch.log(v) - torch.log1p(-v), torch.log(v).abs() + torch.log1p(-v).abs()
    return mean + scale * noise, (scale * noise.abs()).detach(), (scale * magnitude).detach()


def sample_bound(model, samples, seed, mel=None, speaker=None, temperature=1.0) -> torch.Tensor:
    """``(B, T)``: how far two fp32 generations of the float ``samples`` (continuous head, uniforms of ``seed``) may
    lie apart, to first order, sample by sample.

    Step ``t`` samples ``y_t = S(z_t, u_t)`` from logits ``z_t`` that depend on the earlier samples fed back as
    inputs ``x_τ = y_{τ−1}``. Its difference between two evaluations is at most the earlier differences carried by
    ``|∂y_t/∂x_τ|`` (the float64 model and sampling map, autograd), plus ``|∂y_t/∂z_t|·2·bound_t`` from the logits'
    rounding (:func:`folded_logits`), plus the rounding of ``S`` itself on each side: its exp and the functions of its
    noise (erfinv, or log and log1p) within 2 ulp each (``2·eps`` relative), at most three products by ``eps/2`` each
    (under ``4·eps·|σ·T·noise|`` with the exp), the final sum by ``eps/2·|y|``."""
    head = model.head
    assert not head.quantized, "categorical samples are compared exactly"
    B, T = samples.shape
    x = model.shift_right(samples)
    _, bound = folded_logits(model, x, mel, speaker)
    u = UniformStream(B, head.n_uniforms, torch.Generator().manual_seed(seed)).take(T).permute(1, 2, 0).double()
    m = copy.deepcopy(model).double()
    x64 = x.double().requires_grad_()
    z = m(x64, None if mel is None else mel.double(), speaker)
    y, product, functions = _sample_map(head, z, u, temperature)
    (dz,) = torch.autograd.grad(y.sum(), z, retain_graph=True)  # y[b, t] reads z[b, :, t] only
    # row t of ∂y/∂x for every batch row at once (rows are independent): one batched backward pass
    rows = torch.eye(T, dtype=torch.float64)[:, None, :].expand(T, B, T)
    (dx,) = torch.autograd.grad(y, x64, grad_outputs=rows, is_grads_batched=True)  # (t, B, τ)
    made = (dz.abs() * 2 * bound.double()).sum(1) + 2 * EPS32 * (y.abs() + 4 * product + 2 * functions).detach()
    err = torch.zeros(B, T + 1, dtype=torch.float64)  # err[:, τ]: bound on the difference of input x_τ
    for t in range(T):
        err[:, t + 1] = (dx[t].abs() * err[:, :T]).sum(1) + made[:, t]
    return err[:, 1:].float()


def assert_same_samples(model, actual, expected, seed, mel=None, speaker=None, temperature=1.0) -> None:
    """Two generations from the same uniforms (``seed``) agree: categorical classes exactly; float samples, which feed
    back as inputs, within :func:`sample_bound` of ``expected`` (each step's logit rounding, carried through sampling
    and feedback)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if model.head.quantized:
        assert torch.equal(actual, expected)
    else:
        bound = sample_bound(model, expected, seed, mel, speaker, temperature)
        assert_close_derived(actual, expected, bound, "samples")
