"""One weight folding (generation/folding.py) serves every path: the folded matrices applied in plain torch reproduce
model.forward, and the compiled CPU loop, the CUDA-graph step, the fused training loss and the reference generator all
read their weights from it.

Also home of :func:`folded_logits`, which evaluates the folded step in float64 together with a first-order bound on the
rounding error of an fp32 evaluation of the same network; the other generation tests derive their tolerances from it.
"""

import copy
import math

import pytest
import torch

from tests._models import MEL, SPEAKER, tiny_model
from wavenet_dilated.generation import folding
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation.cuda_graph import CudaGraphGenerator
from wavenet_dilated.generation.packing import host_weights
from wavenet_dilated.train.fused_loss import fused_forward, fused_loss

EPS32 = torch.finfo(torch.float32).eps


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


def within(a, b, bound) -> bool:
    """Whether two fp32 evaluations ``a``, ``b`` of the function :func:`folded_logits` evaluates agree: each lies
    within ``bound`` of the exact value, so they lie within ``2·bound`` of each other."""
    return bool(((a - b).abs() <= 2 * bound).all())


def loss_bound(model, audio, mel=None, speaker=None) -> float:
    """How far two fp32 evaluations of ``model.loss(audio, mel, speaker)`` may differ: to first order
    ``Σ |∂loss/∂logit|·2·bound`` over the logits (:func:`folded_logits`), plus ``eps·√(B·T)·|loss|`` for the mean."""
    ref, bound = folded_logits(model, model.shift_right(audio), mel, speaker)
    z = ref.double().requires_grad_()
    loss = model.head.loss(z, audio.double() if not model.head.quantized else audio)
    (g,) = torch.autograd.grad(loss, z)
    return float((g.abs() * 2 * bound).sum() + EPS32 * math.sqrt(audio.numel()) * loss.detach().abs())


def random_inputs(model, B, T):
    if model.head.quantized:
        return torch.randint(0, model.config.n_classes, (B, T))
    return torch.rand(B, T) * 2 - 1


def without_biases(model):
    """``model`` with every bias the folding reads removed (the config has no switch for it)."""
    for b in model.blocks:
        for conv in (b.conv.conv, b.skip) + ((b.residual,) if b.residual is not None else ()):
            conv.bias = None
    model.out1.bias = model.out2.bias = None
    return model


CASES = {
    "plain": dict(),
    "mel+speaker": dict(**MEL, **SPEAKER),
    "k2-mol": dict(kernel_size=2, output="mol", **MEL),
    "gaussian": dict(output="gaussian"),
    "weight-norm": dict(use_weight_norm=True, **MEL),
    "mel-context": dict(mel_context="1d", **MEL),
}


def case(name, seed=1):
    extra = CASES[name]
    model = tiny_model(seed=seed, **extra)
    if extra.get("use_weight_norm"):
        with torch.no_grad():  # gains away from 1, so that evaluating the weight norm matters
            for p in model.parameters():
                p.mul_(1.1)
    B, T = 3, 96
    x = random_inputs(model, B, T)
    mel = torch.randn(B, 5, T // 8) if "cond_channels" in extra else None
    spk = torch.tensor([0, 2, 1]) if "n_speakers" in extra else None
    return model, x, mel, spk


@pytest.mark.parametrize("name", list(CASES))
def test_folded_matrices_reproduce_forward(name):
    model, x, mel, spk = case(name)
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        full = model(x, mel, spk)
    assert bound.max() < 1e-3 * ref.abs().max()  # the bound is a rounding bound, not a blanket
    assert ((full - ref).abs() <= bound).all()
    # and a real error is far outside it: one layer's residual scale forgotten
    with torch.no_grad():
        for p in model.blocks[2].residual.parameters():  # (weight norm: its gain, so the weight scales too)
            p.mul_(1 / folding.RES_SCALE)
        broken = model(x, mel, spk)
    assert not ((broken - ref).abs() <= bound).all()


def test_missing_biases_fold_to_zeros():
    model = without_biases(tiny_model(seed=4, **MEL, **SPEAKER))
    B, T = 2, 80
    x, mel, spk = random_inputs(model, B, T), torch.randn(B, 5, T // 8), torch.tensor([1, 2])
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        assert ((model(x, mel, spk) - ref).abs() <= bound).all()
    w = folding.fold(model)
    assert not w.conv_bias.any() and not w.skip_bias.any() and not w.res_bias.any() and not w.out2_bias.any()
    # the CUDA-graph step runs such a model (eagerly here) and samples what the reference samples
    uniforms = G.UniformStream(B, 1, torch.Generator().manual_seed(3))
    out = CudaGraphGenerator(model, B, capture=False).run(T, uniforms, model.upsample(mel), model.speaker_vector(spk, B))
    assert torch.equal(out, G.generate(model, mel=mel, speaker=spk, seed=3))


@pytest.mark.parametrize("name", ["plain", "mel+speaker", "gaussian"])
def test_cuda_graph_and_cpu_paths_read_the_same_folded_weights(name):
    model, *_ = case(name)
    host, cuda = host_weights(model), CudaGraphGenerator(model, 2, capture=False)
    for i in range(model.config.n_layers):
        assert torch.equal(cuda.w_conv[i].T, torch.from_numpy(host.conv[i]))
        assert torch.equal(cuda.w_skip[i].T, torch.from_numpy(host.skip[i]))
        if cuda.w_res[i] is None:
            assert i == model.config.n_layers - 1 and host.res[i].shape[0] == 0  # the last layer's residual dropped
        else:
            assert torch.equal(cuda.w_res[i].T, torch.from_numpy(host.res[i]))
            assert torch.equal(cuda.b_res[i], torch.from_numpy(host.res_bias[i]))
    for a, b in ((cuda.b_skip, host.skip_bias), (cuda.w_out1.T, host.out1), (cuda.b_out1, host.out1_bias),
                 (cuda.w_out2.T, host.out2), (cuda.b_out2, host.out2_bias)):
        assert torch.equal(a, torch.from_numpy(b))
    assert torch.equal(cuda.conv_bias, host.conv_bias)
    assert (cuda.cond_weight is None) == (host.cond_weight is None)
    if cuda.cond_weight is not None:
        assert torch.equal(cuda.cond_weight, host.cond_weight)
        assert torch.equal(G.CachedGenerator(model).cond_weight, host.cond_weight)  # the reference's stacked projection


@pytest.mark.parametrize("name", list(CASES))
def test_fused_training_forward_and_loss_are_the_folded_function(name):
    model, x, mel, spk = case(name)
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        fused = fused_forward(model, x, mel, spk)
    assert ((fused - ref).abs() <= bound).all()
    model.train()
    audio = torch.cat([x[:, 1:], x[:, :1]], dim=1)
    loss, want = fused_loss(model, audio, mel, spk), model.loss(audio, mel, spk)
    assert loss.requires_grad  # it trains
    assert (loss - want).abs() <= loss_bound(model, audio, mel, spk)
