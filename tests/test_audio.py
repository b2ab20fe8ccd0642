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
from wavenet_dilated import mel as mel_module
from wavenet_dilated.audio import AudioConfig, load_audio, save_audio
from wavenet_dilated.mel import MelStats, log_mel

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
    expected = (left + right) / 2  # a float32 sum halved exactly: the correctly rounded mean, as is load_audio's
    np.testing.assert_allclose(x, expected, rtol=0, atol=np.finfo(np.float32).eps * np.abs(expected).max())
    assert load_audio(path, None).shape == left.shape


def test_load_resamples_and_preserves_frequency(tmp_path):
    path = write_wav(tmp_path / "16k.flac", tone(0.5, sr=16000, freq=1000.0), sr=16000, subtype="PCM_16")
    x = load_audio(path, SR)
    assert x.shape == (int(0.5 * SR),)
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / x.size - 1000.0) <= SR / x.size  # within one FFT bin


def test_save_creates_dirs_pcm16_and_reports_unwritable(tmp_path):
    x = tone(0.1)
    path = save_audio(tmp_path / "a" / "b" / "out.wav", x, SR)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    # at most one 16-bit step (libsndfile's float → int16 need not round to nearest), plus the float32 rounding of x
    np.testing.assert_allclose(load_audio(path, SR), x, rtol=0, atol=1 / 32768 + np.finfo(np.float32).eps * np.abs(x).max())
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
    tol = 2 * np.finfo(np.float32).eps * audio.PEAK  # float32 roundings of peak, peak / max and x · (peak / max)
    assert y.dtype == np.float32 and abs(np.abs(y).max() - audio.PEAK) <= tol
    t = audio.peak_normalize(torch.from_numpy(x))
    assert abs(float(t.abs().max()) - audio.PEAK) <= tol
    z = np.zeros(10, np.float32)
    assert np.array_equal(audio.peak_normalize(z), z)


# --- prepare_audio --------------------------------------------------------------------------------------------------


def _old_mel_from_steps(path, config):
    """What ``sample --mel-from`` computed before :func:`prepare_audio` existed: load at the config's rate, check
    finite, check at least one hop, peak-normalise per config, log-mel (no trimming, no cut)."""
    x = load_audio(path, sample_rate=config.sample_rate)
    assert np.isfinite(x).all() and x.size >= config.hop_length
    if config.peak_normalize:
        x = audio.peak_normalize(x)
    return x, log_mel(torch.from_numpy(x), config)


@pytest.mark.parametrize("peak_normalize", [False, True])
def test_prepare_audio_without_trim_gives_the_old_mel_from_mel(tmp_path, peak_normalize):
    c = AudioConfig(peak_normalize=peak_normalize)
    # whole hops: the same samples and the same mel, bit for bit
    path = write_wav(tmp_path / "whole.wav", tone(37 * c.hop_length / SR, amp=0.3), subtype="FLOAT")
    old_audio, old_mel = _old_mel_from_steps(path, c)
    prepared = audio.prepare_audio(*audio.read_audio(path), c, trim=False, check_range=False)
    assert prepared.conversions == () and np.array_equal(prepared.audio, old_audio)
    assert torch.equal(log_mel(torch.from_numpy(prepared.audio), c), old_mel)

    # stereo at another rate and not whole hops: the only difference is the cut to whole hops, which keeps the frame
    # count (T // hop_length either way) and makes the last frames see what the training cache's did
    lr = np.stack([tone(0.3, sr=16000, freq=300), tone(0.3, sr=16000, freq=500, amp=0.3, seed=1)], axis=1)
    path = write_wav(tmp_path / "other.wav", lr, sr=16000, subtype="FLOAT")
    old_audio, old_mel = _old_mel_from_steps(path, c)
    prepared = audio.prepare_audio(*audio.read_audio(path), c, trim=False, check_range=False)
    n = old_audio.size // c.hop_length * c.hop_length
    assert old_audio.size % c.hop_length and np.array_equal(prepared.audio, old_audio[:n])
    assert log_mel(torch.from_numpy(prepared.audio), c).shape == old_mel.shape
    assert prepared.conversions == ("mixed 2 channels down to mono", f"resampled 16000 Hz -> {c.sample_rate} Hz")


def test_prepare_audio_reasons():
    c, hop = AudioConfig(), AudioConfig().hop_length
    prepare = audio.prepare_audio
    cases = [
        (np.zeros((1, 0), np.float32), {}, "empty: the file holds no samples"),
        (np.array([[0.1, np.nan, np.inf, 0.2]], np.float32), {}, "contains 2 NaN or infinite samples"),
        (np.zeros(4 * hop, np.float32), {}, "silent: nothing left after trimming"),
        (tone(0.2, amp=1.5), {}, "samples outside [-1, 1] (peak 1.5"),
        (tone(0.2)[: hop - 1], {"trim": False}, f"too short: {hop - 1} samples < one hop ({hop})"),
        (tone(0.2)[: 3 * hop + 5], {"trim": False, "min_samples": 4 * hop},
         f"too short: {3 * hop} samples < min_samples={4 * hop}"),
    ]  # fmt: skip
    for x, kwargs, reason in cases:
        with pytest.raises(ValueError) as err:
            prepare(x, SR, c, **kwargs)
        assert str(err.value).startswith(reason), (reason, str(err.value))
    with pytest.raises(ValueError, match="after trimming < min_samples"):
        prepare(tone(0.2), SR, c, min_samples=SR)
    loud = prepare(tone(0.2, amp=1.5), SR, c, check_range=False).audio  # a mel alone needs no range
    assert np.abs(loud).max() > 1 and loud.size % hop == 0
    normalised = prepare(tone(0.2, amp=1.5), SR, AudioConfig(peak_normalize=True)).audio
    assert np.abs(normalised).max() <= 1


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


def _mel_tolerance(x: np.ndarray, c: AudioConfig, fb: np.ndarray) -> np.ndarray:
    """``(n_mels, frames)`` bound on the difference of two float32 mel magnitudes of ``x`` computed by two FFTs: each
    FFT is off by ≤ eps·log2(n_fft)·‖X‖₂ = eps·log2(n_fft)·√n_fft·‖windowed frame‖₂ (Higham), and mel bin m sums the
    error with weights of norm ‖fb[m]‖₂."""
    padded = np.pad(x.astype(np.float64), c.n_fft // 2)  # centred frames, zero padding
    window = np.hanning(c.n_fft + 1)[:-1]  # periodic Hann
    frames = [padded[i * c.hop_length : i * c.hop_length + c.n_fft] * window for i in range(x.size // c.hop_length)]
    frame_norms = np.linalg.norm(frames, axis=1)
    fft_error = 2 * np.finfo(np.float32).eps * np.log2(c.n_fft) * np.sqrt(c.n_fft)  # two FFTs, one bound each
    return fft_error * np.linalg.norm(fb, axis=1)[:, None] * frame_norms[None, :]


def test_log_mel_matches_librosa():
    c = AudioConfig()
    fb = mel_module.mel_filterbank(c).numpy()
    ref_fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    # a weight (f − f_lo) / (f_c − f_lo) of frequencies held to eps·fmax is good to eps·fmax / (smallest spacing of
    # the filter edges), relative to the largest (Slaney-normalised) weight
    spacing = np.diff(librosa.mel_frequencies(c.n_mels + 2, fmin=c.fmin, fmax=c.fmax)).min()
    np.testing.assert_allclose(fb, ref_fb, rtol=0, atol=np.finfo(np.float32).eps * c.fmax / spacing * np.abs(ref_fb).max())

    x = tone(0.6, freq=330.0, amp=0.4) + tone(0.6, freq=2100.0, amp=0.1, seed=3)
    ref = librosa.feature.melspectrogram(
        y=x, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window="hann",
        center=True, pad_mode="constant", power=1.0, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax,
    )  # fmt: skip
    ref = ref[:, : x.size // c.hop_length]
    ours = log_mel(torch.from_numpy(x), c).numpy()
    assert ours.shape == ref.shape and ref.min() > c.mel_floor  # no bin at the floor: compare magnitudes
    np.testing.assert_array_less(np.abs(np.exp(ours) - ref), _mel_tolerance(x, c, ref_fb))
    # and the comparison has teeth: a different mel scale is far off
    htk = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=True)
    assert np.abs(fb - htk).max() > 1e-3


def test_log_mel_transform_is_cached_per_config():
    mel_module._mel_transform.cache_clear()
    x = torch.zeros(2048)
    log_mel(x, AudioConfig())
    log_mel(x, AudioConfig())
    log_mel(x, AudioConfig(n_mels=40))
    info = mel_module._mel_transform.cache_info()
    assert (info.hits, info.misses) == (1, 2)
    assert log_mel(x, AudioConfig(n_mels=40)).shape == (40, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_gpu_matches_cpu():
    c = AudioConfig()
    x = tone(0.5)
    cpu = log_mel(torch.from_numpy(x), c)
    gpu = log_mel(torch.from_numpy(x).cuda(), c)
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    bound = torch.from_numpy(_mel_tolerance(x, c, mel_module.mel_filterbank(c).numpy())).float()
    assert (gpu.cpu().exp() - cpu.exp()).abs().le(bound).all()


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
    # float64 sums of n values in two orders: ≤ n·eps·max|x| apart per mean, and var = E[x²] − mean² moves by
    # ≤ 3·n·eps·max|x|², which std = √var divides by 2·std
    n, big, eps64 = pooled.shape[1], np.abs(pooled).max(), np.finfo(np.float64).eps
    np.testing.assert_allclose(stats.mean, pooled.mean(axis=1), rtol=0, atol=n * eps64 * big)
    np.testing.assert_allclose(stats.std, pooled.std(axis=1), rtol=0, atol=1.5 * n * eps64 * big**2 / min(stats.std))

    # float32 (unit roundoff u = eps/2): x, x − mean and / std round by ≤ u·max|x| / std each, and a mean or std over
    # n frames adds ≤ √n·u·max|z| (rounding errors of a sum grow like √n)
    u = np.finfo(np.float32).eps / 2
    z = stats.normalize(torch.from_numpy(pooled).float())
    z_tol = u * (3 * big / min(stats.std) + np.sqrt(n) * float(z.abs().max()))
    assert torch.allclose(z.mean(dim=1), torch.zeros(8), rtol=0, atol=z_tol)
    assert torch.allclose(z.std(dim=1, unbiased=False), torch.ones(8), rtol=0, atol=z_tol)
    batch = torch.randn(3, 8, 11, generator=g)
    # four float32 roundings (− mean, / std, · std, + mean), each ≤ u·(|x| + |mean|)
    round_trip_tol = 4 * u * (float(batch.abs().max()) + max(abs(m) for m in stats.mean))
    assert torch.allclose(stats.denormalize(stats.normalize(batch)), batch, rtol=0, atol=round_trip_tol)
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
