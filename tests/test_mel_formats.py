"""Mel conventions: each one against its defining formula, exact conversions, refusals, statistics and mel files."""

from __future__ import annotations

import dataclasses
import json
import math

import librosa
import numpy as np
import pytest
import torch
from _corpus import SR, tone, write_corpus
from _tolerance import assert_close_derived, eps

from wavenet_dilated.audio import MEL_FORMATS, AudioConfig, prepare_audio
from wavenet_dilated.cli.train import PRESETS, apply_overrides
from wavenet_dilated.data.cache import preprocess
from wavenet_dilated.mel import MelStats, log_mel, mel_filterbank
from wavenet_dilated.mel_formats import (
    MelReader,
    check_convertible,
    convert_mel,
    filterbank_mismatch,
    read_mel_file,
    read_stats,
    write_stats,
)

F32 = torch.float32


def _speech_like(seconds: float = 0.5) -> np.ndarray:
    return tone(seconds, freq=330.0, amp=0.4) + tone(seconds, freq=2100.0, amp=0.1, seed=3)


# --- each convention against the formula that defines it ------------------------------------------------------------


def _own(x: np.ndarray, c: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """The package's convention: zero-padded centred frames, natural log (float64 throughout); ``(|mel|, log)``."""
    s = np.abs(librosa.stft(x.astype(np.float64), n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                            window="hann", center=True, pad_mode="constant"))
    fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax,
                             dtype=np.float64)
    return fb @ s, np.log(np.maximum(c.mel_floor, fb @ s))


def _tacotron2(x: np.ndarray, c: AudioConfig, pad_mode: str = "reflect") -> tuple[np.ndarray, np.ndarray]:
    """NVIDIA Tacotron 2 as published: reflect-pad filter_length / 2 on each side, frame every hop_length, periodic
    Hann window of win_length, |rfft|, librosa's mel filters (0-8000 Hz), log(clamp(x, 1e-5))."""
    n_fft, hop = 1024, 256
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode=pad_mode)
    window = np.hanning(1024 + 1)[:-1]  # scipy.signal.get_window("hann", 1024, fftbins=True)
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(1 + x.size // hop)], axis=1)
    s = np.abs(np.fft.rfft(frames, axis=0))
    fb = librosa.filters.mel(sr=22050, n_fft=n_fft, n_mels=80, fmin=0.0, fmax=8000.0, dtype=np.float64)
    return fb @ s, np.log(np.maximum(1e-5, fb @ s))


def _espnet(x: np.ndarray, c: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """ESPnet / ParallelWaveGAN as published: |librosa.stft| with reflect padding (fft_size 1024, hop 256, window =
    fft_size), librosa's mel filters 80-7600 Hz, log10(max(1e-10, mel))."""
    s = np.abs(librosa.stft(x.astype(np.float64), n_fft=1024, hop_length=256, win_length=None, window="hann",
                            pad_mode="reflect"))
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=80.0, fmax=7600.0, dtype=np.float64)
    return fb @ s, np.log10(np.maximum(1e-10, fb @ s))


def _bound(x: np.ndarray, c: AudioConfig, magnitude: np.ndarray, pad_mode: str) -> np.ndarray:
    """How far the package's float32 mel magnitude may be from the float64 reference, per (bin, frame).

    Two FFTs (ours and the reference), each ``eps · log2(n_fft) · √n_fft · ‖frame‖`` per bin, carried through a filter
    row (``‖row‖``); the filterbank product, ``eps · √(n_fft/2 + 1) · ‖row‖ · ‖|S|‖``; the float32 filter weights, good
    to ``eps · fmax / (smallest spacing of the filter edges)`` of the largest weight (see test_audio) times ``Σ|S|``;
    the float32 log, a relative ``eps · |ln m|`` of the magnitude once taken back out of the log.
    """
    e = eps(F32)
    padded = np.pad(x.astype(np.float64), c.n_fft // 2, mode=pad_mode)
    window = np.hanning(c.win_length + 1)[:-1]
    n = x.size // c.hop_length
    frames = np.stack([padded[i * c.hop_length : i * c.hop_length + c.n_fft] * window for i in range(n)])
    frame_norm = np.linalg.norm(frames, axis=1)[None, :]
    spec = np.abs(np.fft.rfft(frames, axis=1)).T
    fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    rows = np.linalg.norm(fb, axis=1)[:, None]
    spacing = np.diff(librosa.mel_frequencies(c.n_mels + 2, fmin=c.fmin, fmax=c.fmax)).min()
    weights = e * c.fmax / spacing * np.abs(fb).max() * spec.sum(axis=0)[None, :]
    fft = 2 * e * np.log2(c.n_fft) * np.sqrt(c.n_fft) * rows * frame_norm
    product = e * np.sqrt(c.n_fft // 2 + 1) * rows * np.linalg.norm(spec, axis=0)[None, :]
    return fft + product + weights + e * np.abs(np.log(magnitude)) * magnitude


@pytest.mark.parametrize("name, reference, pad_mode",
                         [("wavenet_dilated", _own, "constant"), ("tacotron2", _tacotron2, "reflect"),
                          ("espnet", _espnet, "reflect")])
def test_each_convention_equals_its_defining_formula(name, reference, pad_mode):
    c = AudioConfig.for_mel_format(name)
    x = _speech_like()
    n = x.size // c.hop_length
    magnitude, ref_log = reference(x, c)
    magnitude, ref_log = magnitude[:, :n], ref_log[:, :n]  # the package keeps one frame per whole hop
    ours = log_mel(torch.from_numpy(x), c).double()
    assert ours.shape == ref_log.shape == (80, n)
    assert magnitude.min() > c.mel_floor  # every bin above the floor: the comparison sees the whole formula
    base = MEL_FORMATS[name].log_base
    bound = _bound(x, c, magnitude, pad_mode)
    assert_close_derived(base**ours, torch.from_numpy(magnitude), torch.from_numpy(bound), f"{name} mel")
    # the log itself, as the convention writes it: log_base(m) to within the magnitude's bound, relative
    assert_close_derived(ours, torch.from_numpy(ref_log), torch.from_numpy(bound / magnitude / math.log(base)),
                         f"{name} log-mel")


@pytest.mark.parametrize("name, floor_log", [("wavenet_dilated", math.log(1e-5)), ("tacotron2", math.log(1e-5)),
                                              ("espnet", -10.0)])
def test_silence_sits_at_the_published_floor(name, floor_log):
    """log(clamp(0, 1e-5)) for Tacotron 2 and the package, log10(max(1e-10, 0)) for ESPnet: one float32 log."""
    silent = log_mel(torch.zeros(4096), AudioConfig.for_mel_format(name))
    assert_close_derived(silent, torch.full_like(silent, floor_log), eps(F32) * abs(floor_log), f"{name} floor")


def test_the_padding_is_part_of_the_convention():
    """Zero padding instead of reflection changes the edge frames far beyond the bound (the test above has teeth)."""
    c = AudioConfig.for_mel_format("tacotron2")
    x = _speech_like()
    n = x.size // c.hop_length
    zero_padded, _ = _tacotron2(x, c, pad_mode="constant")
    ours = torch.exp(log_mel(torch.from_numpy(x), c).double()).numpy()
    bound = _bound(x, c, zero_padded[:, :n], "constant")
    assert (np.abs(ours[:, 0] - zero_padded[:, 0]) > bound[:, 0]).any()


def test_the_default_convention_is_unchanged():
    c = AudioConfig()
    assert c.mel_format == "wavenet_dilated" and (c.fmin, c.fmax, c.mel_floor) == (125.0, 7600.0, 1e-5)
    old = {k: v for k, v in c.to_dict().items() if k != "mel_format"}  # a checkpoint written before conventions
    assert AudioConfig.from_dict(old) == c
    x = torch.from_numpy(_speech_like())
    raw = torch.log(torch.clamp(mel_filterbank(c) @ torch.stft(
        x, c.n_fft, c.hop_length, c.win_length, torch.hann_window(c.win_length), center=True, pad_mode="constant",
        return_complex=True).abs(), min=c.mel_floor))  # fmt: skip
    n = x.numel() // c.hop_length
    bound = eps(F32) * math.sqrt(c.n_fft) * (raw.abs()[:, :n] + 1)  # same float32 steps, summed in another order
    assert_close_derived(log_mel(x, c), raw[:, :n], bound, "default log-mel")


def test_a_convention_brings_its_published_parameters():
    t = AudioConfig.for_mel_format("tacotron2")
    assert (t.sample_rate, t.n_fft, t.hop_length, t.win_length, t.n_mels, t.fmin, t.fmax, t.mel_floor) == \
        (22050, 1024, 256, 1024, 80, 0.0, 8000.0, 1e-5)
    e = AudioConfig.for_mel_format("espnet")
    assert (e.fmin, e.fmax, e.mel_floor, e.format.log_base) == (80.0, 7600.0, 1e-10, 10.0)
    assert AudioConfig().replace(mel_format="tacotron2") == t
    assert AudioConfig().replace(mel_format="espnet", fmin=50.0).fmin == 50.0  # what is set alongside wins
    assert t.replace(trim_top_db=None).fmax == 8000.0  # other changes keep the convention's values
    with pytest.raises(ValueError, match="unknown mel format 'htk'; expected one of wavenet_dilated, tacotron2"):
        AudioConfig(mel_format="htk")


def test_train_set_mel_format_reaches_the_config_and_the_checkpoint_dict():
    preset = PRESETS["demo"]
    configs = apply_overrides({k: preset[k] for k in ("model", "train", "audio")}, ["audio.mel_format=tacotron2"])
    audio = configs["audio"]
    assert audio == AudioConfig.for_mel_format("tacotron2", trim_top_db=preset["audio"].trim_top_db,
                                               peak_normalize=preset["audio"].peak_normalize)
    assert AudioConfig.from_dict(json.loads(json.dumps(audio.to_dict()))).mel_format == "tacotron2"
    assert configs["model"] == preset["model"] and configs["train"] == preset["train"]


def test_the_cache_computes_the_convention_it_is_given(tmp_path):
    write_corpus(tmp_path / "data", n=3)
    c = AudioConfig.for_mel_format("espnet", trim_top_db=None)
    manifest = preprocess(tmp_path / "data", tmp_path / "cache", c, n_workers=1, progress=False, val_fraction=0.0,
                          test_fraction=0.0)
    assert manifest.audio_config == c
    uid = manifest.utterances[0].id
    audio = np.load(manifest.audio_path(uid))
    np.testing.assert_array_equal(np.load(manifest.mel_path(uid)), log_mel(torch.from_numpy(audio), c).numpy())


def test_reflecting_conventions_refuse_audio_shorter_than_the_padding():
    c = AudioConfig.for_mel_format("tacotron2")
    with pytest.raises(ValueError, match="too short: 512 samples; the tacotron2 mel reflects n_fft // 2 = 512"):
        prepare_audio(tone(600 / SR), SR, c, trim=False)
    with pytest.raises(ValueError, match="too short for the tacotron2 mel"):
        log_mel(torch.zeros(300), c)
    assert log_mel(torch.zeros(300), AudioConfig()).shape == (80, 1)  # zero padding takes any length


# --- conversion -----------------------------------------------------------------------------------------------------

# the same filterbank in two conventions: Tacotron 2's bands, ESPnet's log10 and floor
TACO = AudioConfig.for_mel_format("tacotron2")
ESP = AudioConfig.for_mel_format("espnet", fmin=0.0, fmax=8000.0)


def test_conversion_equals_the_other_conventions_mel_of_the_same_audio():
    x = torch.from_numpy(_speech_like() * 1e-4)  # quiet: some bins fall below 1e-5, Tacotron 2's floor
    a, b = log_mel(x, TACO), log_mel(x, ESP)
    assert (b < -5.0).any() and (a == torch.log(torch.tensor(1e-5))).any()
    # one float32 log each side and one scaling by a float32 ln(10): relative 2 eps of the value; a bin at Tacotron 2's
    # floor stays at that floor (its value below it is gone)
    assert_close_derived(convert_mel(a, TACO, ESP), b.clamp(min=-5.0), 2 * eps(F32) * b.abs(), "tacotron2 -> espnet")
    assert_close_derived(convert_mel(b, ESP, TACO), a, 2 * eps(F32) * a.abs(), "espnet -> tacotron2")


def test_exact_conversions_round_trip():
    x = torch.from_numpy(_speech_like())
    a = log_mel(x, TACO)
    there = convert_mel(a, TACO, ESP)
    # each way one product with a float32 factor (ln 10 or 1 / ln 10, each rounded): 2 eps of the value in all
    assert_close_derived(convert_mel(there, ESP, TACO), a, 2 * eps(F32) * a.abs(), "A -> B -> A")
    # with normalisation: a normalised tacotron2 mel -> an espnet vocoder's features -> back
    source_stats, target_stats = MelStats.fit([a]), MelStats.fit([log_mel(x, ESP) * 0.5 + 1.0])
    reader = MelReader.create(ESP, target_stats, "tacotron2", source_stats)  # ESP has Tacotron 2's filterbank
    assert reader.source == TACO
    z = source_stats.normalize(a)
    features = reader.convert(z)
    assert torch.equal(features, target_stats.normalize(convert_mel(source_stats.denormalize(z), TACO, ESP)))
    back = source_stats.normalize(convert_mel(target_stats.denormalize(features), ESP, TACO))
    # eight float32 operations (two scalings, four normalisation steps, two conversions), each rounding a relative
    # eps / 2 of an intermediate no larger than R (log domain, times ln 10 at most), seen through 1 / std of the input
    r = (a.abs().max() + max(map(abs, source_stats.mean + target_stats.mean)) + z.abs().max()) * math.log(10)
    bound = 8 * eps(F32) / 2 * r * max(target_stats.std) / min(source_stats.std) / min(target_stats.std)
    assert_close_derived(back, z, float(bound), "normalised A -> B -> A")


def test_a_filterbank_mismatch_is_refused_naming_the_parameters():
    with pytest.raises(ValueError, match=r"differ in fmin 0\.0 vs 125\.0, fmax 8000\.0 vs 7600\.0 \(input vs") as e:
        convert_mel(torch.zeros(80, 3), TACO, AudioConfig())
    assert "n_fft" not in str(e.value) and "sample_rate" not in str(e.value)
    other = dataclasses.replace(TACO, sample_rate=16000, hop_length=200, n_mels=40, fmax=7000.0)
    assert filterbank_mismatch(TACO, other) == ["sample_rate 22050 vs 16000", "hop_length 256 vs 200",
                                                "n_mels 80 vs 40", "fmax 8000.0 vs 7000.0"]
    with pytest.raises(ValueError, match="sample_rate 22050 vs 16000, hop_length 256 vs 200"):
        check_convertible(TACO, other)
    with pytest.raises(ValueError, match="fmin 0.0 vs 125.0"):
        MelReader.create(AudioConfig(), MelStats((0.0,) * 80, (1.0,) * 80), "tacotron2")


def test_reader_defaults_follow_each_convention():
    stats = MelStats.fit([torch.randn(80, 50) - 5])
    own = MelReader.create(AudioConfig(), stats)
    z = torch.randn(80, 7)
    assert own.is_identity and torch.equal(own.convert(z), z)  # the vocoder's own normalised features
    taco = MelReader.create(TACO, stats, "tacotron2")
    raw = torch.randn(80, 7) - 5
    assert taco.source_stats is None and torch.equal(taco.convert(raw), stats.normalize(raw))
    esp_ckpt = AudioConfig.for_mel_format("espnet")
    with pytest.raises(ValueError, match="mean-variance normalised with a statistics file: name the file with --stats"):
        MelReader.create(esp_ckpt, stats, "espnet")
    assert MelReader.create(esp_ckpt, stats, "espnet", "none").source_stats is None
    with pytest.raises(ValueError, match="statistics have 40 bins but espnet mels for this vocoder have 80"):
        MelReader.create(esp_ckpt, stats, "espnet", MelStats((0.0,) * 40, (1.0,) * 40))


# --- statistics files -----------------------------------------------------------------------------------------------


def test_statistics_files_round_trip(tmp_path):
    stats = MelStats.fit([torch.randn(80, 40) * 2 - 4])
    as_json = read_stats(write_stats(tmp_path / "s.json", stats))
    assert as_json == stats
    as_npy = read_stats(write_stats(tmp_path / "s.npy", stats))  # float32 on disk, as ParallelWaveGAN writes it
    np.testing.assert_array_equal(as_npy.mean, np.float32(stats.mean))
    np.testing.assert_array_equal(as_npy.std, np.float32(stats.std))
    assert np.load(tmp_path / "s.npy").shape == (2, 80)


def test_statistics_in_the_formats_people_have(tmp_path):
    mel = np.random.default_rng(0).standard_normal((80, 30)) - 3
    fitted = MelStats.fit([mel])
    s, s2, n = MelStats.moments(mel)
    np.savez(tmp_path / "feats_stats.npz", count=np.array(n), sum=s, sum_square=s2)  # ESPnet2's collect_stats
    assert read_stats(tmp_path / "feats_stats.npz") == fitted
    np.savez(tmp_path / "ms.npz", mean=np.asarray(fitted.mean), scale=np.asarray(fitted.std))
    assert read_stats(tmp_path / "ms.npz") == fitted
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 3, "mel_stats": fitted.to_dict()}))
    assert read_stats(tmp_path / "manifest.json") == fitted
    (tmp_path / "stats.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"needs an HDF5 reader \(h5py\), which is not a dependency.*numpy.save"):
        read_stats(tmp_path / "stats.h5")
    np.save(tmp_path / "bad.npy", np.zeros((3, 80)))
    with pytest.raises(ValueError, match=r"expected an array of shape \(2, n_mels\).*found shape \(3, 80\)"):
        read_stats(tmp_path / "bad.npy")
    np.savez(tmp_path / "odd.npz", average=np.zeros(80))
    with pytest.raises(ValueError, match=r"expected arrays mean and std \(or scale\).*found \['average'\]"):
        read_stats(tmp_path / "odd.npz")
    with pytest.raises(FileNotFoundError, match="statistics file not found"):
        read_stats(tmp_path / "missing.npy")
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unknown statistics file type '\.txt'"):
        read_stats(tmp_path / "s.txt")


# --- mel files ------------------------------------------------------------------------------------------------------


def test_mel_files_in_either_layout(tmp_path):
    mel = np.random.default_rng(1).standard_normal((10, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", mel)
    np.save(tmp_path / "b.npy", mel.T)
    np.save(tmp_path / "c.npy", mel[None])
    torch.save(torch.from_numpy(mel), tmp_path / "d.pt")
    for name in ("a.npy", "b.npy", "c.npy", "d.pt"):
        assert torch.equal(read_mel_file(tmp_path / name, 10), torch.from_numpy(mel)), name
    square = np.random.default_rng(2).standard_normal((10, 10)).astype(np.float32)
    np.save(tmp_path / "sq.npy", square)
    assert torch.equal(read_mel_file(tmp_path / "sq.npy", 10), torch.from_numpy(square))
    assert torch.equal(read_mel_file(tmp_path / "sq.npy", 10, frames_first=True), torch.from_numpy(square.T))


@pytest.mark.parametrize("content, message", [
    (np.zeros((12, 7), np.float32), r"expected a mel of shape \(10, frames\) or \(frames, 10\), found shape \(12, 7\)"),
    (np.zeros((10, 7), np.int16), "must hold floats, found dtype int16"),
    (np.full((10, 3), np.nan, np.float32), "holds 30 NaN or infinite values"),
    (np.zeros((10, 0), np.float32), "has no frames"),
    (b"RIFF....WAVE", r"not a \.npy array \(no NumPy header\)"),
])
def test_bad_mel_files_are_refused_saying_what_was_found(tmp_path, content, message):
    path = tmp_path / "m.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(ValueError, match=message):
        read_mel_file(path, 10)


def test_a_pt_file_must_hold_one_tensor(tmp_path):
    torch.save({"mel": torch.zeros(10, 3)}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"expected one saved tensor .* found a dict"):
        read_mel_file(tmp_path / "m.pt", 10)
    with pytest.raises(FileNotFoundError, match="mel file not found"):
        read_mel_file(tmp_path / "none.npy", 10)
