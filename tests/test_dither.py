"""Dithering (``TrainConfig.dither_db``, ``AudioDataset(noise_db=...)``): every training item gets white noise at the
asked RMS level, its mel is the log-mel of the noisy audio, the noise is reproducible from (seed, epoch, index), and
validation stays clean."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from tests.test_train import AUDIO, MODEL, TRAIN, tone_cache
from wavenet_dilated.data import AudioDataset
from wavenet_dilated.mel import log_mel
from wavenet_dilated.train import TrainConfig, Trainer

EPS32 = torch.finfo(torch.float32).eps
NOISE_DB = -40.0
HISTORY = 4 * AUDIO.hop_length


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tone_cache(tmp_path_factory.mktemp("dither_corpus"), seconds=0.5)


def dataset(cache: Path, noise_db: float | None, max_time_steps: int | None = 8 * AUDIO.hop_length,
            history: int = HISTORY) -> AudioDataset:  # fmt: skip
    return AudioDataset(cache, "train", max_time_steps, n_classes=None, mel_normalize=False, seed=3,
                        history=history if max_time_steps else 0, noise_db=noise_db)  # fmt: skip


def test_the_noise_has_the_asked_rms_and_is_white(cache):
    clean, noisy = dataset(cache, None), dataset(cache, NOISE_DB)
    noise = torch.cat([noisy[i]["audio"] - clean[i]["audio"] for i in range(len(clean))]).double()
    rms = noise.pow(2).mean().sqrt().item()
    # the RMS of n Gaussian samples has a relative standard deviation of 1/√(2n): allow five of them
    assert abs(rms / 10 ** (NOISE_DB / 20) - 1) < 5 / math.sqrt(2 * noise.numel())
    lag1 = (noise[1:] * noise[:-1]).mean().item() / noise.pow(2).mean().item()
    assert abs(lag1) < 5 / math.sqrt(noise.numel())  # white: no correlation between neighbours (five σ)


def test_the_mel_is_the_log_mel_of_the_noisy_audio(cache):
    whole = dataset(cache, NOISE_DB, max_time_steps=None)
    for i in range(len(whole)):
        item = whole[i]
        assert torch.equal(item["mel"], log_mel(item["audio"], AUDIO))  # the same computation on the same samples
    crops = dataset(cache, NOISE_DB)
    edge = AUDIO.n_fft // 2 // AUDIO.hop_length  # frames whose window reaches past the crop's ends
    # the same windows of the same samples, transformed inside a longer signal: FFT rounding of a length-n_fft sum,
    # relative, which the log turns into an absolute difference
    tolerance = 4 * EPS32 * math.sqrt(AUDIO.n_fft)
    for i in range(len(crops)):
        item = crops[i]
        own = log_mel(item["audio"], AUDIO)
        assert item["mel"].shape == own.shape
        torch.testing.assert_close(item["mel"][:, edge:-edge], own[:, edge:-edge], atol=tolerance, rtol=0)
        clean_mel = dataset(cache, None)[i]["mel"]
        assert not torch.allclose(item["mel"], clean_mel, atol=tolerance, rtol=0)  # it was recomputed


def test_history_before_the_start_is_noise_under_the_mel_of_noise(cache):
    ds = dataset(cache, NOISE_DB, max_time_steps=2 * AUDIO.hop_length, history=16 * AUDIO.hop_length)
    n_history = ds.history // ds.hop_length
    reaching = []
    for epoch in range(10):
        ds.set_epoch(epoch)
        reaching += [(epoch, i) for i in range(len(ds)) if ds.crop_start(i) < n_history]
    assert reaching, "no crop reaches before its utterance's start"
    floor = math.log(AUDIO.mel_floor)
    for epoch, i in reaching:
        ds.set_epoch(epoch)
        item = ds[i]
        lead = (n_history - ds.crop_start(i)) * ds.hop_length
        silence = item["audio"][:lead].double()
        assert abs(silence.pow(2).mean().sqrt().item() / 10 ** (NOISE_DB / 20) - 1) < 5 / math.sqrt(2 * lead)
        assert (item["mel"][:, : lead // ds.hop_length] > floor).all()  # not the mel of digital silence


def test_the_noise_is_reproducible_and_fresh_every_epoch(cache):
    a, b = dataset(cache, NOISE_DB), dataset(cache, NOISE_DB)
    assert torch.equal(a[0]["audio"], b[0]["audio"])
    b.set_epoch(1)
    a.set_epoch(1)
    assert torch.equal(a[0]["audio"], b[0]["audio"])
    clean = dataset(cache, None)
    clean.set_epoch(1)
    first = dataset(cache, NOISE_DB)
    first_noise = first[0]["audio"] - dataset(cache, None)[0]["audio"]
    assert not torch.allclose(a[0]["audio"] - clean[0]["audio"], first_noise)


def test_dithered_training_validates_on_clean_audio(cache, tmp_path):
    config = dataclasses.replace(TRAIN, dither_db=NOISE_DB, max_steps=2)
    trainer = Trainer(MODEL, config, cache, tmp_path)
    assert trainer.train_set.noise_rms == pytest.approx(10 ** (NOISE_DB / 20))
    assert trainer.val_set is not None and trainer.val_set.noise_rms is None
    assert math.isfinite(trainer.fit(progress=False).val_nll_bits)


@pytest.mark.parametrize("bad", [1.0, math.inf, math.nan, "-60"])
def test_a_dither_level_above_full_scale_or_not_a_number_is_refused(bad):
    with pytest.raises(ValueError, match=r"TrainConfig\.dither_db must be a number in \[-inf, 0\.0\] or None"):
        TrainConfig(dither_db=bad)
