import dataclasses
import io
import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from tests._corpus import SR, tone, write_wav
from wavenet_dilated import audio
from wavenet_dilated.audio import AudioConfig, MelStats, load_audio, log_mel, save_audio

# --- AudioConfig ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"fmax": 12000.0}, "fmax"),
        ({"fmin": 8000.0, "fmax": 7600.0}, "fmax"),
        ({"fmin": -1.0}, "fmin"),
        ({"win_length": 2048}, "win_length"),
        ({"n_mels": 0}, "n_mels"),
        ({"hop_length": 2.5}, "hop_length"),
        ({"sample_rate": True}, "sample_rate"),
        ({"trim_top_db": -5.0}, "trim_top_db"),
        ({"mel_floor": 0.0}, "mel_floor"),
        ({"peak_normalize": 1}, "peak_normalize"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AudioConfig(**kwargs)


def test_config_is_frozen_hashable_and_round_trips():
    c = AudioConfig(trim_top_db=None, peak_normalize=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_mels = 40  # type: ignore[misc]
    assert hash(c) == hash(AudioConfig(trim_top_db=None, peak_normalize=True))
    d = json.loads(json.dumps(c.to_dict()))
    assert AudioConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="bogus"):
        AudioConfig.from_dict({**d, "bogus": 1})


# --- load / save ----------------------------------------------------------------------------------------------------


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really a wave file" * 10)
    with pytest.raises(ValueError, match="bad.wav"):
        load_audio(bad)


def test_load_stereo_mixes_down_and_keeps_rate_when_asked(tmp_path):
    left, right = tone(0.2, freq=300), tone(0.2, freq=500, amp=0.3, seed=1)
    path = write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    x = load_audio(path, SR)
    assert x.dtype == np.float32 and x.shape == left.shape
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)
    assert load_audio(path, None).shape == left.shape


def test_load_resamples_and_preserves_frequency(tmp_path):
    path = write_wav(tmp_path / "16k.flac", tone(0.5, sr=16000, freq=1000.0), sr=16000, subtype="PCM_16")
    x = load_audio(path, SR)
    assert x.shape == (int(0.5 * SR),)
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / x.size - 1000.0) < 5.0


def test_save_creates_dirs_pcm16_and_reports_unwritable(tmp_path):
    x = tone(0.1)
    path = save_audio(tmp_path / "a" / "b" / "out.wav", x, SR)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(path, SR), x, atol=1 / 32768 + 1e-7)
    save_audio(tmp_path / "t.wav", torch.from_numpy(x), SR)  # torch input too
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file, not a directory")
    with pytest.raises(ValueError, match="could not write"):
        save_audio(blocker / "sub" / "out.wav", x, SR)
    with pytest.raises(ValueError, match="shape"):
        save_audio(tmp_path / "x.wav", np.zeros((2, 2, 2), np.float32), SR)


# --- trimming and normalisation ---------------------------------------------------------------------------------


def test_trim_silence_cuts_the_ends_only():
    body = tone(0.5)
    x = np.concatenate([np.zeros(SR // 2, np.float32), body, np.zeros(SR // 2, np.float32)])
    y = audio.trim_silence(x, 60.0, frame_length=1024, hop_length=256)
    assert body.size <= y.size <= body.size + 2 * 1024
    assert audio.trim_silence(x, None) is x
    assert audio.trim_silence(np.zeros(1000, np.float32), 60.0).size == 0


def test_peak_normalize():
    x = tone(0.1, amp=0.25)
    y = audio.peak_normalize(x)
    assert y.dtype == np.float32 and np.isclose(np.abs(y).max(), audio.PEAK)
    t = audio.peak_normalize(torch.from_numpy(x))
    assert torch.isclose(t.abs().max(), torch.tensor(audio.PEAK))
    z = np.zeros(10, np.float32)
    assert np.array_equal(audio.peak_normalize(z), z)


# --- log-mel --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [0, 100, 255, 256, 257, 600, 1024, 256 * 37, 256 * 37 + 255])
def test_log_mel_frame_count_contract(n_samples):
    c = AudioConfig()
    x = torch.randn(2, 3, n_samples, generator=torch.Generator().manual_seed(n_samples)) * 0.1
    m = log_mel(x, c)
    assert m.shape == (2, 3, c.n_mels, n_samples // c.hop_length)
    assert m.dtype == torch.float32
    if n_samples % c.hop_length == 0:
        assert m.shape[-1] * c.hop_length == n_samples


def test_log_mel_frame_i_is_centred_on_sample_i_times_hop():
    """Burst in samples [a, b): a frame is exactly silent iff its window (i·hop ± n_fft/2) misses the burst."""
    c = AudioConfig()
    a, b, n = 40 * c.hop_length, 50 * c.hop_length, 90 * c.hop_length
    x = torch.zeros(n)
    x[a:b] = torch.from_numpy(tone((b - a) / SR))
    m = log_mel(x, c)
    floor = float(np.log(c.mel_floor))
    silent = (m == floor).all(dim=0)
    half = c.n_fft // 2
    for i in range(m.shape[-1]):
        lo, hi = i * c.hop_length - half, i * c.hop_length + half
        if hi <= a or lo >= b - 1:
            assert silent[i], i
        elif min(hi, b) - max(lo, a) >= 64:
            assert not silent[i] and m[:, i].max() > floor + 3, i


def test_log_mel_matches_librosa():
    c = AudioConfig()
    fb = audio.mel_filterbank(c).numpy()
    ref_fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    np.testing.assert_allclose(fb, ref_fb, atol=1e-6)

    x = tone(0.6, freq=330.0, amp=0.4) + tone(0.6, freq=2100.0, amp=0.1, seed=3)
    ref = librosa.feature.melspectrogram(
        y=x, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window="hann",
        center=True, pad_mode="constant", power=1.0, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax,
    )  # fmt: skip
    ref = np.log(np.maximum(ref, c.mel_floor))[:, : x.size // c.hop_length]
    ours = log_mel(torch.from_numpy(x), c).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    # and the comparison has teeth: a different mel scale is far off
    htk = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=True)
    assert np.abs(fb - htk).max() > 1e-3


def test_log_mel_transform_is_cached_per_config():
    audio._mel_transform.cache_clear()
    x = torch.zeros(2048)
    log_mel(x, AudioConfig())
    log_mel(x, AudioConfig())
    log_mel(x, AudioConfig(n_mels=40))
    info = audio._mel_transform.cache_info()
    assert (info.hits, info.misses) == (1, 2)
    assert log_mel(x, AudioConfig(n_mels=40)).shape == (40, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_gpu_matches_cpu():
    x = torch.from_numpy(tone(0.5))
    cpu = log_mel(x)
    gpu = log_mel(x.cuda())
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-4)


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError, match="floating-point"):
        log_mel(torch.zeros(1024, dtype=torch.int64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        log_mel(np.zeros(1024, np.float32))  # type: ignore[arg-type]


# --- MelStats -------------------------------------------------------------------------------------------------------


def test_mel_stats_fit_normalize_round_trip():
    g = torch.Generator().manual_seed(0)
    scale, shift = torch.linspace(0.5, 3, 8)[:, None], torch.linspace(-5, 2, 8)[:, None]
    mels = [torch.randn(8, n, generator=g) * scale + shift for n in (30, 50, 7)]
    mels.append(np.full((8, 5), 1.0, np.float32))  # numpy input is accepted
    stats = MelStats.fit(mels)
    pooled = np.concatenate([np.asarray(m, dtype=np.float64) for m in mels], axis=1)
    np.testing.assert_allclose(stats.mean, pooled.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pooled.std(axis=1), rtol=1e-9)

    z = stats.normalize(torch.from_numpy(pooled).float())
    assert torch.allclose(z.mean(dim=1), torch.zeros(8), atol=1e-5)
    assert torch.allclose(z.std(dim=1, unbiased=False), torch.ones(8), atol=1e-4)
    batch = torch.randn(3, 8, 11, generator=g)
    assert torch.allclose(stats.denormalize(stats.normalize(batch)), batch, atol=1e-5)
    assert isinstance(stats.normalize(pooled), np.ndarray)

    # plain lists: JSON and torch.load(weights_only=True) both take it back
    assert MelStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    buf = io.BytesIO()
    torch.save({"mel_stats": stats.to_dict()}, buf)
    buf.seek(0)
    assert MelStats.from_dict(torch.load(buf, weights_only=True)["mel_stats"]) == stats


def test_mel_stats_edge_cases():
    stats = MelStats.fit([np.ones((4, 10), np.float32)])  # constant bins: std is floored, not 0
    assert min(stats.std) == MelStats.MIN_STD
    assert torch.isfinite(stats.normalize(torch.ones(4, 3))).all()
    with pytest.raises(ValueError, match="4"):
        stats.normalize(torch.ones(5, 3))
    with pytest.raises(ValueError, match="none"):
        MelStats.fit([])
    with pytest.raises(ValueError, match="same n_mels"):
        MelStats.fit([np.ones((4, 2)), np.ones((5, 2))])
    with pytest.raises(ValueError, match="keys"):
        MelStats.from_dict({"mean": [0.0]})
