import numpy as np
import pytest
import torch
import torchaudio

from wavenet_dilated import mulaw


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
        assert torch.allclose(dec, torchaudio.functional.mu_law_decoding(ref, n_classes), atol=1e-6)


@pytest.mark.parametrize("n_classes", [256, 65536])
def test_round_trip_within_bound(n_classes):
    x = torch.linspace(-1, 1, 100_001, dtype=torch.float64)
    err = (mulaw.mu_law_decode(mulaw.mu_law_encode(x, n_classes), n_classes, dtype=torch.float64) - x).abs()
    bound = mulaw.quantization_bound(x, n_classes)
    assert (err <= bound + 1e-12).all()
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
    np.testing.assert_allclose(mulaw.mu_law_decode(a), mulaw.mu_law_decode(torch.from_numpy(a), dtype=torch.float64),
                               atol=1e-12)
    np.testing.assert_allclose(mulaw.mu_law_expand(mulaw.mu_law_compress(x)), x, atol=1e-12)


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
