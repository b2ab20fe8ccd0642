"""Reduced-precision weights (generation/precision.py): the quantisation itself, and the compiled loop with bf16 and
int8 weights against a plain-PyTorch WaveNet of the same quantised model (quantize_model) to fp32 tolerance."""

import math

import pytest
import torch

from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._oracle import assert_same_samples, folded_logits
from tests._tolerance import assert_close_derived
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.generation import kernel as K
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation.folding import RES_SCALE
from wavenet_dilated.generation.precision import PRECISIONS, check_precision, quantize_model, quantize_rows, row_codes
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

try:
    K.load_kernel()
    HAVE_KERNEL = True
except K.KernelUnavailable:
    HAVE_KERNEL = False
needs_kernel = pytest.mark.skipif(not HAVE_KERNEL, reason="compiled kernel unavailable")
REDUCED = ["bf16", "int8"]  # weights only; w8a8 (activations too): tests/test_w8a8.py


# ------------------------------------------------------------------------------------------------ quantisation


@pytest.mark.parametrize("precision", REDUCED)
def test_row_codes_and_scales(precision):
    torch.manual_seed(0)
    w = torch.randn(24, 40) * torch.logspace(-3, 1, 24)[:, None]  # rows of very different sizes
    w[5] = 0.0  # an all-zero row keeps scale 1 and codes 0
    codes, scale = row_codes(w, precision)
    assert codes.shape == (24, 40) and scale.shape == (24,)
    assert scale[5] == 1.0 and not codes[5].any()
    q = quantize_rows(w, precision)
    top = w.abs().amax(dim=1, keepdim=True)
    if precision == "int8":
        assert codes.dtype.name == "int8" and abs(codes).max() == 127
        assert (abs(codes).max(axis=1)[torch.arange(24) != 5] == 127).all()  # each row's largest weight is ±127
        # rounding to the nearest of 255 levels: half a level, plus fp32 rounding of w / s and of s·q
        assert ((q - w).abs() <= top / 127 * (0.5 + 1e-5)).all()
    else:
        assert codes.dtype.name == "uint16"
        # bfloat16 keeps 8 significant bits: within half an ulp (2^-8 relative) of w / s, plus fp32 rounding of s·b
        assert ((q - w).abs() <= w.abs() * (2**-8 + 2**-22)).all()
    assert not torch.equal(q, w)


@pytest.mark.parametrize("precision", REDUCED)
def test_quantisation_is_idempotent_under_the_folded_scales(precision):
    # what lets the kernel quantise the folded matrices (residual × √½, out1 × skip_scale) and get the modules' codes
    torch.manual_seed(1)
    q = quantize_rows(torch.randn(32, 48), precision)
    codes, scale = row_codes(q, precision)
    for factor in (1.0, RES_SCALE, 0.37):
        again, scale_again = row_codes(q * factor, precision)
        assert (again == codes).all()
        assert torch.allclose(torch.from_numpy(scale_again), torch.from_numpy(scale) * factor, rtol=4e-7, atol=0)


def test_quantize_model_changes_only_the_step_matrices():
    model = tiny_model(seed=3, **MEL)
    q = quantize_model(model, "int8")
    assert q is not model and q.config == model.config
    plain, quantised = dict(model.named_parameters()), dict(q.named_parameters())
    assert plain.keys() == quantised.keys()
    step = {"out1.weight", "out2.weight"} | {f"blocks.{i}.{m}.weight" for i in range(model.config.n_layers)
                                             for m in ("conv.conv", "skip", "residual")}
    changed = {k for k in plain if not torch.equal(plain[k], quantised[k])}
    assert changed == step & plain.keys()
    x, mel = random_inputs(model, 1, 16), torch.randn(1, 5, 2)
    with torch.no_grad():
        assert torch.equal(quantize_model(model, "fp32")(x, mel), model(x, mel))
    # weight norm is folded first: the quantised weights are those the parametrisation computes
    normed = tiny_model(seed=3, use_weight_norm=True, **MEL)
    with torch.no_grad():
        for p in normed.parameters():
            p.mul_(1.1)
        weight = normed.out1.weight.clone()
    assert torch.equal(quantize_model(normed, "bf16").out1.weight, quantize_rows(weight, "bf16"))


def test_unknown_precision_is_refused_in_one_line():
    for bad in ("fp16", "INT8", None, 8):
        with pytest.raises(ValueError, match=r"^precision must be one of fp32, bf16, int8, w8a8, found ") as info:
            check_precision(bad)
        assert "\n" not in str(info.value)
    model = tiny_model(seed=0)
    with pytest.raises(ValueError, match="precision must be one of"):
        FG.fast_generate(model, n_samples=8, precision="int4")
    with pytest.raises(ValueError, match="precision must be one of"):
        FG.fast_logits(model, torch.zeros(1, 8, dtype=torch.long), precision="fp64")


# ------------------------------------------------------------------------------------------------ the kernel


def _check_logits(model, precision, x, mel=None, spk=None, **generator):
    """The kernel's logits with ``precision`` weights equal the quantised model's forward to fp32 rounding, and differ
    from the fp32 model's by more than that (the weights really are quantised)."""
    q = quantize_model(model, precision)
    with torch.no_grad():
        full, original = q(x, mel, spk), model(x, mel, spk)
    bound = 2 * folded_logits(q, x, mel, spk)[1]  # two fp32 evaluations of one function
    if generator:
        frames = None if mel is None else model.upsample(mel)
        fast = FG.FastGenerator(model, precision=precision, **generator)
        steps = fast.logits(x, frames, model.speaker_vector(spk, x.shape[0]))
    else:
        steps = FG.fast_logits(model, x, mel, spk, precision=precision)
    assert_close_derived(steps, full, bound, f"{precision} logits")
    assert ((original - full).abs() > bound).any()


@needs_kernel
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}], ids=["plain", "mel", "mel+speaker"])
@pytest.mark.parametrize("output", ["categorical", "mol"])
def test_kernel_matches_the_quantised_model(precision, extra, output):
    model = tiny_model(seed=4, output=output, **extra)
    B, T = 2, 160
    x = random_inputs(model, B, T)
    mel = torch.randn(B, 5, T // MEL["hop_length"]) if extra else None
    spk = torch.tensor([2, 0]) if "n_speakers" in extra else None
    _check_logits(model, precision, x, mel, spk)


@needs_kernel
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("threads,block,B", [(1, 1, 1), (2, 16, 3), (3, 5, 8)])
def test_kernel_quantised_across_threads_blocks_and_batches(precision, threads, block, B):
    # the threads own slices of every matrix's rows or columns and blocked layers split the conv into past and current
    # taps: every piece keeps its rows' scales
    torch.manual_seed(5)
    model = WaveNet(WaveNetConfig(n_layers=6, n_stacks=1, kernel_size=3, residual_channels=16, gate_channels=48,
                                  skip_channels=24, **MEL)).eval()
    T = 200
    x, mel = random_inputs(model, B, T), torch.randn(B, 5, T // MEL["hop_length"])
    _check_logits(model, precision, x, mel, threads=threads, block=block)


@needs_kernel
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("output", ["categorical", "gaussian"])
def test_quantised_generation_samples_the_quantised_model(precision, output):
    model = tiny_model(seed=6, output=output, **MEL)
    mel = torch.randn(2, 5, 10)
    fast = FG.fast_generate(model, mel=mel, seed=3, temperature=0.9, backend="cpp", precision=precision)
    q = quantize_model(model, precision)
    ref = G.generate(q, mel=mel, seed=3, temperature=0.9)
    assert_same_samples(q, fast, ref, 3, mel, temperature=0.9)
    # the reference backend runs the same quantised model
    same = FG.fast_generate(model, mel=mel, seed=3, temperature=0.9, backend="reference", precision=precision)
    assert torch.equal(same, ref)


@needs_kernel
def test_fp32_is_the_default_and_unchanged():
    model = tiny_model(seed=7, **MEL)
    x, mel = random_inputs(model, 2, 96), torch.randn(2, 5, 12)
    assert torch.equal(FG.fast_logits(model, x, mel), FG.fast_logits(model, x, mel, precision="fp32"))
    sizes = {p: FG.FastGenerator(model, threads=1, precision=p)._pack(1, 1).weights.nbytes for p in PRECISIONS}
    # the weight stream shrinks with the codes (each matrix is padded to 64 bytes)
    assert sizes["bf16"] <= sizes["fp32"] / 2 + 64 * 4 * model.config.n_layers * 8
    assert sizes["int8"] < sizes["bf16"] and math.isclose(sizes["int8"] / sizes["fp32"], 0.25, rel_tol=0.5)
