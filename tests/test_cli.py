"""End-to-end tests of ``wavenet-dilated sample`` and of the command line's errors and packaging, on tiny checkpoints
trained in the test (the other commands: test_cli_commands.py).

Most run :func:`wavenet_dilated.cli.cli` in-process (fast); two run it as a subprocess, through the installed console
script and ``python -m``, to catch packaging problems.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests._cli import AUDIO, HOP, N_MELS, NET, RATE, make_checkpoints, read, run, script, tone, train
from wavenet_dilated.audio import save_audio
from wavenet_dilated.generation.reference import generate, to_waveform
from wavenet_dilated.mel import MelStats, log_mel
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"))


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


def test_a_model_the_kernel_cannot_run_falls_back_to_the_reference_with_one_warning(tmp_path, capsys):
    # residual_channels 12 is not a multiple of 8: the compiled kernel refuses it and fast_generate falls back
    model, _, _ = train(WaveNetConfig(**{**NET, "residual_channels": 12}), steps=1)
    path = tmp_path / "odd.pt"
    model.save(path, audio_config=AUDIO.to_dict())
    out = tmp_path / "odd.wav"
    code, _, stderr = run(["sample", path, "--seconds", "0.01", "--seed", "9", "-o", out, "--no-progress"], capsys)
    assert code == 0
    assert stderr.splitlines() == ["wavenet-dilated: warning: fast generation unavailable (the compiled kernel needs "
                                   "residual_channels to be a multiple of 8, found 12); using the plain-PyTorch "
                                   "generator"]
    # the file holds exactly what the reference generator gives for the seed
    reference = WaveNet.from_checkpoint(path)
    reference.remove_weight_norm()
    samples = generate(reference, n_samples=80, batch_size=1, seed=9)
    save_audio(tmp_path / "reference.wav", to_waveform(samples, reference)[0].float().numpy(), RATE, subtype="PCM_16")
    assert out.read_bytes() == (tmp_path / "reference.wav").read_bytes()


def test_library_warnings_are_one_line(ckpts, tmp_path, capsys, monkeypatch):
    def fallback(*args, **kwargs):
        warnings.warn("fast generation unavailable (no compiler);\n using the reference", RuntimeWarning, stacklevel=2)
        assert kwargs.pop("precision") == "fp32"  # the reference generator has no reduced precisions
        return generate(*args, **kwargs)

    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fallback)
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
    "rf measure 2d too big": (["rf", "--layers", "12", "--dims", "2", "--measure"], "too large"),
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
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", _fail_if_generating)
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
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", _fail_if_generating)
    code, _, stderr = run(["sample", ckpts["plain"], "--seconds", "1", "-o", locked / "new" / "o.wav"], capsys)
    assert code == 2
    assert "not writable" in stderr and "Permission denied" in stderr and stderr.count("\n") == 1
    assert not (locked / "new").exists()


# ------------------------------------------------------------------------------------------------ packaging



def test_console_script_samples_end_to_end(ckpts, tmp_path):
    out = tmp_path / "script.wav"
    proc = subprocess.run([script(), "sample", str(ckpts["plain"]), "--seconds", "0.01", "--seed", "3", "-o", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(out)).frames == 80 and "real-time factor" in proc.stdout


def test_python_m_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wavenet_dilated", "info", str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"wavenet-dilated: error: checkpoint not found: {tmp_path / 'missing.pt'}"]
    assert proc.stdout == ""
