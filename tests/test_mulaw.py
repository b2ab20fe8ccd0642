import math

import numpy as np
import pytest
import torch
import torchaudio

from tests._tolerance import assert_close_derived, eps
from wavenet_dilated import mulaw


def decode_scale(x, n_classes: int):
    """``|x| + 1/μ``: decoding is ``x = (e^{|y|·ln(1+μ)} − 1)/μ``, so a relative error ε in the exponential (or an
    absolute error ε/ln(1+μ) in ``y``) moves ``x`` by ``ε·(|x| + 1/μ)``."""
    return abs(x) + 1.0 / (n_classes - 1)


@pytest.mark.parametrize("n_classes", [256, 1024, 65536])
def test_encode_matches_torchaudio_bit_for_bit(n_classes):
    grid = torch.linspace(-1, 1, 200_001)
    noise = torch.rand(100_000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for x in (grid, noise, grid.double()):
        ours = mulaw.mu_law_encode(x, n_classes)
        ref = torchaudio.functional.mu_law_encoding(x, n_classes)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, ref)
        dec = mulaw.mu_law_decode(ours, n_classes)
        ref_dec = torchaudio.functional.mu_law_decoding(ref, n_classes)
        # both compute y = 2c/μ − 1 with the same correctly rounded steps; ln(1+μ) is float64 here and float32 there
        # (an ulp apart, moving exp's argument |y|·ln(1+μ) by ≤ eps·ln(1+μ) relative); exp, −1 and /μ may then
        # round differently by an ulp each
        bound = eps(torch.float32) * (math.log(n_classes) + 3) * decode_scale(ref_dec, n_classes)
        assert_close_derived(dec, ref_dec, bound, f"decode vs torchaudio, {n_classes} classes")


@pytest.mark.parametrize("n_classes", [256, 65536])
def test_round_trip_within_bound(n_classes):
    x = torch.linspace(-1, 1, 100_001, dtype=torch.float64)
    err = (mulaw.mu_law_decode(mulaw.mu_law_encode(x, n_classes), n_classes, dtype=torch.float64) - x).abs()
    bound = mulaw.quantization_bound(x, n_classes)
    # float64 rounding on top of the exact quantization error: decode's exp, −1 and /μ (scaled by |x| + 1/μ, see
    # decode_scale), the subtraction from x, and the few roundings inside quantization_bound itself
    rounding = eps(torch.float64) * ((math.log(n_classes) + 4) * decode_scale(x, n_classes) + 4 * bound)
    assert (err <= bound + rounding).all()
    # the bound is tight enough to mean something: the worst error uses a good part of it
    assert (err / bound).max() > 0.4


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 50_000)
    a = mulaw.mu_law_encode(x)
    b = mulaw.mu_law_encode(torch.from_numpy(x)).numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.int64
    # both compute in float64; allow libm ulp differences to move at most a handful of boundary samples by one class
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    # the same correctly rounded y = 2c/μ − 1 and ln(1+μ) in both; numpy's and torch's exp are each within an ulp
    # or two, and −1, /μ may then round differently: a few eps, scaled by |x| + 1/μ
    dec_np = mulaw.mu_law_decode(a)
    dec_torch = mulaw.mu_law_decode(torch.from_numpy(a), dtype=torch.float64)
    assert_close_derived(torch.from_numpy(dec_np), dec_torch, eps(torch.float64) * 6 * decode_scale(dec_torch, 256),
                         "numpy vs torch decode")
    # compress rounds y by a few eps relative (μ|x|, log1p, /ln(1+μ)), which expand amplifies by ln(1+μ)·(|x| + 1/μ),
    # and adds its own few roundings
    round_trip = torch.from_numpy(mulaw.mu_law_expand(mulaw.mu_law_compress(x)))
    assert_close_derived(round_trip, torch.from_numpy(x),
                         eps(torch.float64) * (2 * math.log(256) + 4) * decode_scale(torch.from_numpy(x), 256),
                         "expand(compress(x))")


def test_endpoints():
    assert mulaw.mu_law_encode(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert mulaw.mu_law_decode(torch.tensor([0, 255])).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("bad,needle", [
    (torch.tensor([0.0, 1.5]), r"\[-1, 1\]"),
    (torch.tensor([float("nan")]), "NaN"),
    (np.array([-1.01]), r"\[-1, 1\]"),
    (torch.tensor([1, 2]), "floating"),
])
def test_bad_audio(bad, needle):
    with pytest.raises(ValueError, match=needle):
        mulaw.mu_law_encode(bad)


def test_bad_classes():
    with pytest.raises(ValueError, match="class indices"):
        mulaw.mu_law_decode(torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mulaw.mu_law_decode(torch.tensor([256]))
    with pytest.raises(ValueError, match="n_classes"):
        mulaw.mu_law_encode(torch.zeros(3), n_classes=1)
