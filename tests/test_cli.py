"""End-to-end tests of the ``wavenet-dilated`` command line on tiny checkpoints trained in the test.

Most run :func:`wavenet_dilated.cli.cli` in-process (fast); two run it as a subprocess, through the installed console
script and ``python -m``, to catch packaging problems.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavenet_dilated.audio import AudioConfig, MelStats, log_mel, save_audio
from wavenet_dilated.cli import main as cli_module
from wavenet_dilated.cli.main import build_parser, cli
from wavenet_dilated.mulaw import mu_law_encode
from wavenet_dilated.nn.dilation import compare_standard_dilated
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

RATE = 8000
HOP = 32
N_MELS = 10
AUDIO = AudioConfig(sample_rate=RATE, n_fft=256, hop_length=HOP, win_length=256, n_mels=N_MELS, fmin=0.0, fmax=4000.0,
                    trim_top_db=None)
NET = dict(n_layers=4, n_stacks=2, kernel_size=2, residual_channels=8, gate_channels=16, skip_channels=8)
VOCODER = dict(cond_channels=N_MELS, upsample_scales=(4, 8), hop_length=HOP)


def tone(freq: float, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def train(config: WaveNetConfig, steps: int = 4) -> tuple[WaveNet, MelStats | None, float]:
    """A few Adam steps on generated tones; returns the model, the mel stats (vocoder) and the last loss in bits."""
    torch.manual_seed(0)
    model = WaveNet(config)
    audio = torch.from_numpy(np.stack([tone(f, 20 * HOP) for f in (220.0, 330.0, 440.0, 660.0)]))
    stats = mel = None
    if config.cond_channels is not None:
        raw = log_mel(audio, AUDIO)  # (4, n_mels, 20)
        stats = MelStats.fit(list(raw))
        mel = stats.normalize(raw)
    speaker = torch.arange(4) % config.n_speakers if config.n_speakers else None
    target = mu_law_encode(audio, config.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model.loss(target, mel, speaker)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, stats, float(loss.detach()) / math.log(2)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints: a trained vocoder (with EMA), an unconditioned model, one with speakers, one without
    audio_config."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    vocoder, stats, bits = train(WaveNetConfig(**NET, **VOCODER))
    ema = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in vocoder.state_dict().items()}
    out["vocoder"] = root / "vocoder.pt"
    vocoder.save(out["vocoder"], ema=ema, audio_config=AUDIO.to_dict(), mel_stats=stats.to_dict(), step=4,
                 val_nll_bits=bits, best_val_nll_bits=bits - 0.25, train_config={"lr": 3e-3, "batch_size": 4})
    plain, _, bits = train(WaveNetConfig(**NET))
    out["plain"] = root / "plain.pt"
    plain.save(out["plain"], audio_config=AUDIO.to_dict(), step=4, val_nll_bits=bits)
    out["bare"] = root / "bare.pt"
    plain.save(out["bare"])  # no audio_config, no step
    speakers, _, _ = train(WaveNetConfig(**NET, n_speakers=3, speaker_channels=4), steps=2)
    out["speakers"] = root / "speakers.pt"
    speakers.save(out["speakers"], audio_config=AUDIO.to_dict())
    return out


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="int16")
    return data, rate


# ------------------------------------------------------------------------------------------------ sample


def test_sample_unconditional_writes_exact_length_at_checkpoint_rate(ckpts, tmp_path, capsys):
    out = tmp_path / "sub" / "dir" / "uncond.wav"  # missing directories are created
    code, stdout, _ = run(["sample", ckpts["plain"], "--seconds", "0.025", "--seed", "1", "-o", out], capsys)
    assert code == 0
    info = sf.info(str(out))
    assert info.samplerate == RATE
    assert info.frames == round(0.025 * RATE) == 200
    assert info.subtype == "PCM_16"
    assert "samples/s" in stdout and "real-time factor" in stdout and "0.025 s" in stdout


def test_sample_same_seed_same_file_other_seed_other_file(ckpts, tmp_path, capsys):
    paths = [tmp_path / f"{name}.wav" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6)):
        assert run(["sample", ckpts["plain"], "--seconds", "0.02", "--seed", seed, "-o", path, "--no-progress"],
                   capsys)[0] == 0
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_sample_without_seed_prints_the_seed_it_used(ckpts, tmp_path, capsys):
    first = tmp_path / "first.wav"
    code, stdout, _ = run(["sample", ckpts["plain"], "--seconds", "0.02", "-o", first], capsys)
    assert code == 0
    seed = stdout.split("(seed ")[1].split(")")[0]
    again = tmp_path / "again.wav"
    assert run(["sample", ckpts["plain"], "--seconds", "0.02", "--seed", seed, "-o", again], capsys)[0] == 0
    assert first.read_bytes() == again.read_bytes()


def test_sample_batch_writes_n_different_files(ckpts, tmp_path, capsys):
    out = tmp_path / "take.wav"
    code, stdout, _ = run(["sample", ckpts["plain"], "--seconds", "0.02", "--batch", "3", "--seed", "2", "-o", out],
                          capsys)
    assert code == 0
    assert not out.exists()
    files = [tmp_path / f"take_{i}.wav" for i in range(3)]
    data = [read(f)[0] for f in files]
    assert all(len(d) == 160 for d in data)
    assert not np.array_equal(data[0], data[1]) and not np.array_equal(data[1], data[2])
    assert not np.array_equal(data[0], data[2])
    assert not (tmp_path / "take_3.wav").exists()


def test_vocode_mel_from_wav_gives_input_length_within_one_hop(ckpts, tmp_path, capsys):
    wav = tmp_path / "speech.wav"
    n = 5 * HOP + 7
    save_audio(wav, tone(300.0, n), RATE)
    out = tmp_path / "vocoded.wav"
    code, stdout, _ = run(["sample", ckpts["vocoder"], "--mel-from", wav, "--seed", "0", "-o", out], capsys)
    assert code == 0
    data, rate = read(out)
    assert rate == RATE
    assert abs(len(data) - n) <= HOP
    assert len(data) == (n // HOP) * HOP  # frames x hop exactly


def test_vocode_resamples_an_input_at_another_rate(ckpts, tmp_path, capsys):
    wav = tmp_path / "speech16k.wav"
    save_audio(wav, tone(300.0, 2 * 4 * HOP, rate=2 * RATE), 2 * RATE)  # 4 hops' worth at 8 kHz
    out = tmp_path / "vocoded.wav"
    assert run(["sample", ckpts["vocoder"], "--mel-from", wav, "--seed", "0", "-o", out], capsys)[0] == 0
    data, rate = read(out)
    assert rate == RATE and abs(len(data) - 4 * HOP) <= HOP


def test_vocode_mel_npy_frames_times_hop(ckpts, tmp_path, capsys):
    mel = tmp_path / "mel.npy"
    np.save(mel, np.random.default_rng(0).standard_normal((N_MELS, 5)).astype(np.float32))
    out = tmp_path / "vocoded.flac"
    assert run(["sample", ckpts["vocoder"], "--mel", mel, "--seed", "0", "-o", out], capsys)[0] == 0
    info = sf.info(str(out))
    assert info.frames == 5 * HOP and info.samplerate == RATE and info.format == "FLAC"
    # --seconds vocodes only the start of the mel
    short = tmp_path / "short.wav"
    assert run(["sample", ckpts["vocoder"], "--mel", mel, "--seconds", "0.01", "-o", short], capsys)[0] == 0
    assert sf.info(str(short)).frames == 80


def test_vocode_normalize_mel_applies_the_checkpoint_stats(ckpts, tmp_path, capsys):
    raw = log_mel(torch.from_numpy(tone(300.0, 4 * HOP)), AUDIO).numpy()
    stats = MelStats.from_dict(torch.load(ckpts["vocoder"], weights_only=True)["mel_stats"])
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "normalised.npy", stats.normalize(raw))
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert run(["sample", ckpts["vocoder"], "--mel", tmp_path / "raw.npy", "--normalize-mel", "--seed", "3", "-o", a],
               capsys)[0] == 0
    assert run(["sample", ckpts["vocoder"], "--mel", tmp_path / "normalised.npy", "--seed", "3", "-o", b],
               capsys)[0] == 0
    assert np.array_equal(read(a)[0], read(b)[0])


def test_no_ema_uses_the_other_weights(ckpts, tmp_path, capsys):
    mel = tmp_path / "mel.npy"
    np.save(mel, np.zeros((N_MELS, 4), dtype=np.float32))
    ema, raw = tmp_path / "ema.wav", tmp_path / "raw.wav"
    assert run(["sample", ckpts["vocoder"], "--mel", mel, "--seed", "4", "-o", ema], capsys)[0] == 0
    assert run(["sample", ckpts["vocoder"], "--mel", mel, "--seed", "4", "--no-ema", "-o", raw], capsys)[0] == 0
    assert not np.array_equal(read(ema)[0], read(raw)[0])


def test_speaker_conditioned_sampling(ckpts, tmp_path, capsys):
    out0, out2 = tmp_path / "s0.wav", tmp_path / "s2.wav"
    for out, spk in ((out0, 0), (out2, 2)):
        assert run(["sample", ckpts["speakers"], "--seconds", "0.02", "--speaker", spk, "--seed", "1", "-o", out],
                   capsys)[0] == 0
    assert not np.array_equal(read(out0)[0], read(out2)[0])


def test_checkpoint_without_audio_config_writes_22050_and_says_so(ckpts, tmp_path, capsys):
    out = tmp_path / "bare.wav"
    code, _, stderr = run(["sample", ckpts["bare"], "--seconds", "0.01", "-o", out, "--no-progress"], capsys)
    assert code == 0
    assert sf.info(str(out)).samplerate == 22050 and sf.info(str(out)).frames == round(0.01 * 22050)
    assert "22050" in stderr and "audio_config" in stderr


def test_temperature_is_passed_through(ckpts, tmp_path, capsys):
    cold, hot = tmp_path / "cold.wav", tmp_path / "hot.wav"
    assert run(["sample", ckpts["plain"], "--seconds", "0.02", "--seed", "1", "--temperature", "0.05", "-o", cold],
               capsys)[0] == 0
    assert run(["sample", ckpts["plain"], "--seconds", "0.02", "--seed", "1", "--temperature", "3", "-o", hot],
               capsys)[0] == 0
    assert not np.array_equal(read(cold)[0], read(hot)[0])


def test_generator_falls_back_when_fastgen_is_missing(monkeypatch):
    from wavenet_dilated.generation.reference import generate

    monkeypatch.setitem(sys.modules, "wavenet_dilated.generation.fast", None)  # makes the import raise ImportError
    assert cli_module._generator() == (generate, "cached")
    fake = types.ModuleType("wavenet_dilated.generation.fast")
    fake.fast_generate = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "wavenet_dilated.generation.fast", fake)
    assert cli_module._generator() == (fake.fast_generate, "fast")


def test_library_warnings_are_one_line(ckpts, tmp_path, capsys, monkeypatch):
    import warnings

    from wavenet_dilated.generation.reference import generate

    def fallback(*args, **kwargs):
        warnings.warn("fast generation unavailable (no compiler);\n using the reference", RuntimeWarning, stacklevel=2)
        return generate(*args, **kwargs)

    monkeypatch.setattr(cli_module, "_generator", lambda: (fallback, "reference"))
    code, _, stderr = run(["sample", ckpts["plain"], "--seconds", "0.01", "-o", tmp_path / "w.wav", "--no-progress"],
                          capsys)
    assert code == 0
    assert stderr.splitlines() == ["wavenet-dilated: warning: fast generation unavailable (no compiler); using the "
                                   "reference"]


# ------------------------------------------------------------------------------------------------ errors


def _fail_if_generating(*args, **kwargs):
    raise AssertionError("generation started although the command should have failed first")


ERRORS = {
    "missing checkpoint": (["sample", "{tmp}/nope.pt", "--seconds", "1", "-o", "{tmp}/o.wav"], "not found"),
    "corrupt checkpoint": (["sample", "{tmp}/corrupt.pt", "--seconds", "1", "-o", "{tmp}/o.wav"], "corrupt"),
    "truncated checkpoint": (["sample", "{tmp}/truncated.pt", "--seconds", "1", "-o", "{tmp}/o.wav"], "checkpoint"),
    "foreign checkpoint": (["sample", "{tmp}/foreign.pt", "--seconds", "1", "-o", "{tmp}/o.wav"],
                           "not a wavenet_dilated checkpoint"),
    "info on corrupt": (["info", "{tmp}/corrupt.pt"], "corrupt"),
    "rf on foreign": (["rf", "--checkpoint", "{tmp}/foreign.pt"], "not a wavenet_dilated checkpoint"),
    "mel wrong bins": (["sample", "{vocoder}", "--mel", "{tmp}/mel12.npy", "-o", "{tmp}/o.wav"], "12 bins"),
    "mel wrong ndim": (["sample", "{vocoder}", "--mel", "{tmp}/mel1d.npy", "-o", "{tmp}/o.wav"], "shape"),
    "mel not npy": (["sample", "{vocoder}", "--mel", "{tmp}/text.wav", "-o", "{tmp}/o.wav"], "npy"),
    "unreadable wav": (["sample", "{vocoder}", "--mel-from", "{tmp}/text.wav", "-o", "{tmp}/o.wav"], "could not read"),
    "missing wav": (["sample", "{vocoder}", "--mel-from", "{tmp}/none.wav", "-o", "{tmp}/o.wav"], "not found"),
    "unwritable output": (["sample", "{plain}", "--seconds", "1", "-o", "{tmp}/text.wav/o.wav"], "not a directory"),
    "output without extension": (["sample", "{plain}", "--seconds", "1", "-o", "{tmp}"], "format"),
    "output is a directory": (["sample", "{plain}", "--seconds", "1", "-o", "{tmp}/folder.wav"], "is a directory"),
    "output format": (["sample", "{plain}", "--seconds", "1", "-o", "{tmp}/o.xyz"], "format"),
    "temperature 0": (["sample", "{plain}", "--seconds", "1", "--temperature", "0", "-o", "{tmp}/o.wav"],
                      "--temperature"),
    "temperature < 0": (["sample", "{plain}", "--seconds", "1", "--temperature", "-1", "-o", "{tmp}/o.wav"],
                        "--temperature"),
    "seconds 0": (["sample", "{plain}", "--seconds", "0", "-o", "{tmp}/o.wav"], "--seconds"),
    "seconds < 0": (["sample", "{plain}", "--seconds", "-2", "-o", "{tmp}/o.wav"], "--seconds"),
    "seconds nan": (["sample", "{plain}", "--seconds", "nan", "-o", "{tmp}/o.wav"], "--seconds"),
    "seconds missing": (["sample", "{plain}", "-o", "{tmp}/o.wav"], "--seconds"),
    "seconds beyond mel": (["sample", "{vocoder}", "--mel", "{tmp}/mel10.npy", "--seconds", "5", "-o", "{tmp}/o.wav"],
                           "covers"),
    "mel-from on unconditioned": (["sample", "{plain}", "--mel-from", "{tmp}/good.wav", "-o", "{tmp}/o.wav"],
                                  "unconditioned"),
    "mel on unconditioned": (["sample", "{plain}", "--mel", "{tmp}/mel10.npy", "-o", "{tmp}/o.wav"], "unconditioned"),
    "vocoder without mel": (["sample", "{vocoder}", "--seconds", "1", "-o", "{tmp}/o.wav"], "--mel-from"),
    "both mel flags": (["sample", "{vocoder}", "--mel", "{tmp}/mel10.npy", "--mel-from", "{tmp}/good.wav", "-o",
                        "{tmp}/o.wav"], "not allowed"),
    "speaker out of range": (["sample", "{speakers}", "--seconds", "1", "--speaker", "3", "-o", "{tmp}/o.wav"],
                             "out of range"),
    "speaker missing": (["sample", "{speakers}", "--seconds", "1", "-o", "{tmp}/o.wav"], "--speaker"),
    "speaker on a model without": (["sample", "{plain}", "--seconds", "1", "--speaker", "0", "-o", "{tmp}/o.wav"],
                                   "speaker"),
    "speaker negative": (["sample", "{speakers}", "--seconds", "1", "--speaker", "-1", "-o", "{tmp}/o.wav"],
                         "--speaker"),
    "batch 0": (["sample", "{plain}", "--seconds", "1", "--batch", "0", "-o", "{tmp}/o.wav"], "--batch"),
    "normalize without mel": (["sample", "{vocoder}", "--mel-from", "{tmp}/good.wav", "--normalize-mel", "-o",
                               "{tmp}/o.wav"], "--normalize-mel"),
    "no mel stats": (["sample", "{tmp}/nostats.pt", "--mel-from", "{tmp}/good.wav", "-o", "{tmp}/o.wav"],
                     "mel_stats"),
    "bad device": (["sample", "{plain}", "--seconds", "1", "--device", "tpu", "-o", "{tmp}/o.wav"], "--device"),
    "no command": ([], "command"),
    "unknown command": (["transcribe"], "invalid choice"),
    "rf without a stack": (["rf"], "--preset"),
    "rf unknown preset": (["rf", "--preset", "huge"], "invalid choice"),
    "rf two stacks": (["rf", "--preset", "demo", "--layers", "3"], "not allowed"),
    "rf bad dilations": (["rf", "--dilations", "1,two"], "--dilations"),
    "rf kernel with preset": (["rf", "--preset", "demo", "--kernel", "2"], "--kernel"),
    "rf measure 2d too big": (["rf", "--layers", "10", "--dims", "2", "--measure"], "too large"),
}


@pytest.fixture
def error_files(ckpts, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(os.urandom(300))
    good = ckpts["vocoder"].read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    np.save(tmp_path / "mel12.npy", np.zeros((12, 5), dtype=np.float32))
    np.save(tmp_path / "mel10.npy", np.zeros((N_MELS, 5), dtype=np.float32))
    np.save(tmp_path / "mel1d.npy", np.zeros(50, dtype=np.float32))
    (tmp_path / "text.wav").write_text("this is not audio\n")
    (tmp_path / "folder.wav").mkdir()
    save_audio(tmp_path / "good.wav", tone(200.0, 10 * HOP), RATE)
    model = WaveNet.from_checkpoint(ckpts["vocoder"])
    model.save(tmp_path / "nostats.pt", audio_config=AUDIO.to_dict())
    return {"tmp": tmp_path, **{k: str(v) for k, v in ckpts.items()}}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line_exit_2(case, error_files, capsys, monkeypatch):
    argv, expected = ERRORS[case]
    argv = [a.format(**error_files) for a in argv]
    monkeypatch.setattr(cli_module, "_generator", lambda: (_fail_if_generating, "test"))
    code, stdout, stderr = run(argv, capsys)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wavenet-dilated: error: ")
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout
    assert not (error_files["tmp"] / "o.wav").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_device_cuda_without_cuda(ckpts, tmp_path, capsys):
    code, _, stderr = run(["sample", ckpts["plain"], "--seconds", "1", "--device", "cuda", "-o", tmp_path / "o.wav"],
                          capsys)
    assert code == 2
    assert stderr.count("\n") == 1 and "CUDA is not available" in stderr


def test_output_directory_is_checked_before_generating(ckpts, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # root ignores permission bits, so simulate an unwritable directory at the probe the CLI does
    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    monkeypatch.setattr(cli_module, "_generator", lambda: (_fail_if_generating, "test"))
    code, _, stderr = run(["sample", ckpts["plain"], "--seconds", "1", "-o", locked / "new" / "o.wav"], capsys)
    assert code == 2
    assert "not writable" in stderr and "Permission denied" in stderr and stderr.count("\n") == 1
    assert not (locked / "new").exists()


# ------------------------------------------------------------------------------------------------ rf


def parse_table(stdout: str) -> list[list[int]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["layers"])
    return [[int(v.replace(",", "")) for v in line.split()] for line in lines[start + 1 :] if line.strip()]


def test_rf_compare_six_layers_of_3x3(capsys):
    code, stdout, _ = run(["rf", "--compare", "--layers", "6", "--dims", "2", "--channels", "4"], capsys)
    assert code == 0
    rows = parse_table(stdout)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r[1] for r in rows] == [1, 2, 4, 8, 16, 32]
    assert [r[2] for r in rows] == [3, 5, 7, 9, 11, 13]
    assert [r[3] for r in rows] == [3, 7, 15, 31, 63, 127]
    reference = compare_standard_dilated(6, kernel_size=3, channels=4, dims=2)
    assert [r[4] for r in rows] == [ref["parameters"] for ref in reference] == [(4 * 4 * 9 + 4) * i for i in range(1, 7)]
    assert "127 x 127" in stdout


def test_rf_explicit_report(capsys):
    code, stdout, _ = run(["rf", "--layers", "6", "--sample-rate", "16000", "--channels", "8"], capsys)
    assert code == 0
    assert "127 samples = 7.94 ms at 16000 Hz" in stdout
    assert f"{6 * (8 * 8 * 3 + 8):,}" in stdout
    assert "100.0%" in stdout and "no gridding" in stdout
    assert "HDC (Wang et al.) : valid" in stdout


def test_rf_gridding_stack_and_measurement(capsys):
    code, stdout, _ = run(["rf", "--dilations", "2,2,2", "--kernel", "3", "--stacks", "2", "--measure"], capsys)
    assert code == 0
    # 6 layers of k=3, r=2: RF 25, only even offsets reached: 13 of 25
    assert "25 samples" in stdout and "52.0%" in stdout and "NOT valid" in stdout and "factor 2" in stdout
    assert "measured RF       : 25 samples, matches; causal; 48.0% zero gradients" in stdout


def test_rf_hdc_sawtooth_valid_and_invalid(capsys):
    assert "valid (M_2 = 2" in run(["rf", "--dilations", "1,2,5"], capsys)[1]
    stdout = run(["rf", "--dilations", "1,2,9"], capsys)[1]
    assert "NOT valid: M_2 = 5 > K = 3" in stdout and "gridding" in stdout


def test_rf_preset_and_measure_through_the_network(capsys):
    code, stdout, _ = run(["rf", "--preset", "demo", "--measure", "--compare"], capsys)
    assert code == 0
    assert "2047 samples = 92.83 ms at 22050 Hz" in stdout
    assert "measured RF       : 2047 samples, matches; causal" in stdout
    rows = parse_table(stdout)
    assert len(rows) == 10 and rows[-1][3] == 2047 and rows[-1][2] == 21


def test_rf_checkpoint_uses_its_rate_and_parameters(ckpts, capsys):
    model = WaveNet.from_checkpoint(ckpts["vocoder"])
    code, stdout, _ = run(["rf", "--checkpoint", ckpts["vocoder"], "--measure"], capsys)
    assert code == 0
    rf = model.receptive_field
    assert rf == 1 + 1 * (1 + 2) * 2
    assert f"{rf} samples = {rf / RATE * 1000:.2f} ms at {RATE} Hz" in stdout
    assert f"{model.n_parameters:,}" in stdout
    assert f"measured RF       : {rf} samples, matches; causal" in stdout


# ------------------------------------------------------------------------------------------------ info


def test_info_prints_step_rf_params_nll_and_weights(ckpts, capsys):
    ckpt = torch.load(ckpts["vocoder"], weights_only=True)
    model = WaveNet.from_checkpoint(ckpts["vocoder"])
    code, stdout, _ = run(["info", ckpts["vocoder"]], capsys)
    assert code == 0
    assert "step                : 4" in stdout
    assert f"sample rate         : {RATE} Hz" in stdout
    rf = model.receptive_field
    assert f"receptive field     : {rf} samples = {rf / RATE * 1000:.2f} ms" in stdout
    assert f"parameters          : {model.n_parameters:,}" in stdout
    assert f"validation NLL      : {ckpt['val_nll_bits']:.4f} bits/sample" in stdout
    assert f"best validation NLL : {ckpt['best_val_nll_bits']:.4f} bits/sample" in stdout
    assert "model + EMA" in stdout
    assert "cond_channels" in stdout and "hop_length" in stdout
    assert "train config:" in stdout and "batch_size  4" in stdout


def test_info_without_extras_and_as_json(ckpts, capsys):
    code, stdout, _ = run(["info", ckpts["bare"]], capsys)
    assert code == 0
    assert "model only (no EMA weights)" in stdout and "not recorded" in stdout and "22050" in stdout
    code, stdout, _ = run(["info", ckpts["plain"], "--json"], capsys)
    facts = json.loads(stdout)
    assert facts["step"] == 4 and facts["sample_rate"] == RATE and facts["ema"] is False
    assert facts["parameters"] == WaveNet.from_checkpoint(ckpts["plain"]).n_parameters
    assert facts["config"]["n_layers"] == NET["n_layers"]


# ------------------------------------------------------------------------------------------------ bench


def test_bench_is_wired_to_run_bench(monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("wavenet_dilated.bench")
    fake.run_bench = lambda **kwargs: calls.append(kwargs) or {"rows": [{"preset": "demo", "samples_per_s": 1.5}]}
    fake.format_table = lambda result: f"TABLE {result['rows'][0]['preset']}"
    monkeypatch.setitem(sys.modules, "wavenet_dilated.bench", fake)
    code, stdout, _ = run(["bench", "--quick", "--preset", "demo", "--preset", "small", "--device", "cpu"], capsys)
    assert code == 0 and stdout.strip() == "TABLE demo"
    assert calls == [{"presets": ["demo", "small"], "quick": True, "device": "cpu"}]
    code, stdout, _ = run(["bench", "--json"], capsys)
    assert json.loads(stdout) == {"rows": [{"preset": "demo", "samples_per_s": 1.5}]}
    assert calls[-1] == {"quick": False}  # run_bench's own defaults for what was not asked


def test_bench_real_run_bench_json_and_table(monkeypatch, capsys):
    """The real run_bench and format_table through the CLI, trimmed to a few seconds (the full --quick run takes
    about a minute on two cores; see the slow test below)."""
    import functools

    bench = pytest.importorskip("wavenet_dilated.bench", reason="the benchmark module has not landed")
    trimmed = functools.partial(bench.run_bench, batches=(1,), seconds=0.2, threads=(1,), naive=False, train=False)
    monkeypatch.setattr(bench, "run_bench", trimmed)
    code, stdout, _ = run(["bench", "--quick", "--json", "--preset", "demo", "--device", "cpu"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert list(result["presets"]) == ["demo"] and result["settings"]["quick"] is True
    code, table, _ = run(["bench", "--quick", "--preset", "demo"], capsys)
    assert code == 0
    assert "demo" in table and "samples/s" in table  # format_table's text, not JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)


def test_bench_command_restarts_with_the_runtime_settings_other_uses_do_not(monkeypatch, capsys):
    restarts = []
    monkeypatch.setattr(cli_module, "reexec_with_runtime_env", lambda: restarts.append(sys.argv[1:]))
    fake = types.ModuleType("wavenet_dilated.bench")
    fake.run_bench = lambda **kwargs: {}
    fake.format_table = lambda result: "TABLE"
    monkeypatch.setitem(sys.modules, "wavenet_dilated.bench", fake)
    monkeypatch.setattr(sys, "argv", ["wavenet-dilated", "bench", "--quick"])

    assert cli() == 0 and restarts == []  # called from another program (here pytest): never restart it
    monkeypatch.setattr(cli_module, "_started_as_the_command", lambda: True)
    assert cli() == 0 and restarts == [["bench", "--quick"]]
    assert cli(["bench", "--quick"]) == 0 and len(restarts) == 1  # an explicit argv: in-process use
    monkeypatch.setattr(sys, "argv", ["wavenet-dilated", "rf", "--layers", "3"])
    assert cli() == 0 and len(restarts) == 1  # only bench
    capsys.readouterr()


def test_restart_runs_the_same_command_line_once_with_the_settings_and_keeps_the_users(tmp_path):
    script = tmp_path / "restart.py"  # imports the runtime module alone: no torch, so the two starts take milliseconds
    script.write_text(textwrap.dedent("""
        import json, os, sys
        import wavenet_dilated.runtime as runtime
        assert "torch" not in sys.modules
        print("start", sys.argv[1:], flush=True)
        runtime.reexec_with_runtime_env()
        print(json.dumps({k: os.environ.get(k) for k in [*runtime.RUNTIME_ENV, runtime.REEXEC_MARKER]}),
              sys.flags.utf8_mode)
    """))
    from wavenet_dilated.runtime import REEXEC_MARKER, RUNTIME_ENV

    clean = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV and k != REEXEC_MARKER}
    proc = subprocess.run([sys.executable, "-X", "utf8", str(script), "a b", "--flag"], capture_output=True, text=True,
                          timeout=60, env={**clean, "MALLOC_TOP_PAD_": "4096"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:2] == ["start ['a b', '--flag']"] * 2 and len(lines) == 3  # ran twice, restarted once
    settings, utf8_mode = lines[2].rsplit(" ", 1)
    assert json.loads(settings) == {**RUNTIME_ENV, "MALLOC_TOP_PAD_": "4096", REEXEC_MARKER: "1"}
    assert utf8_mode == "1"  # the interpreter's options (-X utf8) survive the restart
    everything = {**clean, **RUNTIME_ENV}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=everything)
    assert proc.stdout.strip().splitlines()[0] == "start []" and len(proc.stdout.strip().splitlines()) == 2  # no restart


@pytest.mark.slow
def test_bench_quick_json_untrimmed(capsys):
    pytest.importorskip("wavenet_dilated.bench", reason="the benchmark module has not landed")
    code, stdout, _ = run(["bench", "--quick", "--json", "--preset", "demo"], capsys)
    assert code == 0
    assert "demo" in json.loads(stdout)["presets"]


# ------------------------------------------------------------------------------------------------ help


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_documents_every_flag(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == {"sample", "rf", "bench", "info"}
    for name, sub in [("", parser), *commands.items()]:
        code, stdout, _ = run([name, "--help"] if name else ["--help"], capsys)
        assert code == 0
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            for option in action.option_strings:
                assert option in stdout, f"{name} --help does not mention {option}"
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name}: {action.option_strings} has no help text"
            if not action.option_strings:
                assert action.metavar in stdout and action.help
            # house rule: no flag that is on by default and cannot be turned off
            assert not (isinstance(action, argparse._StoreTrueAction) and action.default is True)


# ------------------------------------------------------------------------------------------------ packaging


def _script() -> str:
    path = Path(sys.executable).parent / "wavenet-dilated"
    if not path.exists():
        pytest.fail(f"the console script is not installed next to {sys.executable}: pip install -e .")
    return str(path)


def test_console_script_samples_end_to_end(ckpts, tmp_path):
    out = tmp_path / "script.wav"
    proc = subprocess.run([_script(), "sample", str(ckpts["plain"]), "--seconds", "0.01", "--seed", "3", "-o", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(out)).frames == 80 and "real-time factor" in proc.stdout


def test_python_m_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wavenet_dilated", "info", str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"wavenet-dilated: error: checkpoint not found: {tmp_path / 'missing.pt'}"]
    assert proc.stdout == ""
