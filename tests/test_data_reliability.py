"""The data side of reliability (issue 12): a full disk while preprocessing, output paths that are files, a device
name torch does not train on, recordings without signal, a corpus without ``wavs/``, data warnings as users see them,
and crop lengths refused before preprocessing."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes import train_ljspeech as recipe
from tests._cli import NET, VOCODER
from tests._cli import run as run_cli
from tests._cli import train as train_tiny
from tests._corpus import SR, add_line, tone, write_corpus, write_wav
from wavenet_dilated import audio
from wavenet_dilated.audio import MIN_SIGNAL_DBFS, AudioConfig, prepare_audio, read_audio
from wavenet_dilated.data import DataWarning, preprocess, read_metadata
from wavenet_dilated.data.cache import CacheWriteError, check_output_dir
from wavenet_dilated.data.dataset import check_crop_length
from wavenet_dilated.train import distributed as dist
from wavenet_dilated.wavenet import WaveNetConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "wavenet_dilated" / "data" / "demo_corpus"
HOP = AudioConfig().hop_length
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_preprocess(corpus, cache, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = preprocess(corpus, cache, n_workers=1, progress=False, **kwargs)
    return manifest, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".log")


@pytest.fixture()
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    write_corpus(root, n=4, seconds=0.3)
    return root


@pytest.fixture()
def quiet_logging():
    """``main()`` configures the root logger for the run (a file handler in --out-dir): put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], root.level = handlers, level


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- defect 6: a full disk while preprocessing ----------------------------------------------------------------------


def fail_on_write(monkeypatch, nth: int) -> list[str]:
    """Make the ``nth`` ``np.save`` (1-based) write half a file and then fail as a full disk does."""
    real_save, calls = np.save, []

    def save(path, array, *args, **kwargs):
        calls.append(str(path))
        if len(calls) == nth:
            Path(path).write_bytes(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    return calls


@pytest.mark.parametrize("nth", [1, 4, 5])  # the first write, a mel, an audio file after two whole utterances
def test_disk_full_while_caching_removes_the_partial_cache_and_a_rerun_completes_it(corpus, tmp_path, monkeypatch, nth):
    cache = tmp_path / "cache"
    calls = fail_on_write(monkeypatch, nth)
    with pytest.raises(CacheWriteError) as err:
        run_preprocess(corpus, cache)
    assert isinstance(err.value, OSError) and len(calls) == nth  # nothing written after the failure
    message = str(err.value)
    assert os.strerror(errno.ENOSPC) in message and calls[-1] in message and "run the same command again" in message
    assert cache_files(cache) == []  # no partial .npy (nor a manifest) left filling the disk

    monkeypatch.undo()
    manifest, caught = run_preprocess(corpus, cache)
    assert len(manifest.utterances) == 4 and manifest.is_complete() and not caught
    assert len(cache_files(cache)) == 1 + 2 * 4


def test_disk_full_at_the_manifest_removes_the_cache_files(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith("manifest.json"):
            real_write_text(self, data[:10], *args, **kwargs)
            raise ENOSPC
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(CacheWriteError, match="manifest.json.*No space left on device"):
        run_preprocess(corpus, cache)
    assert cache_files(cache) == []
    monkeypatch.undo()
    manifest, _ = run_preprocess(corpus, cache)
    assert manifest.is_complete() and len(manifest.utterances) == 4


def test_disk_full_through_the_recipe_is_one_line_and_status_2(corpus, tmp_path, monkeypatch, capsys, quiet_logging):
    fail_on_write(monkeypatch, 3)
    out = tmp_path / "run"
    code = recipe.main(["--preset", "demo", "--data-dir", str(corpus), "--out-dir", str(out), "--preprocess-only",
                        "--no-progress"])  # fmt: skip
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "preprocessing stopped" in line and os.strerror(errno.ENOSPC) in line
    assert cache_files(out / "cache") == []


# --- defect 6: output paths that are files, and devices -------------------------------------------------------------


def test_check_output_dir(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper", "x") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not made
    with pytest.raises(NotADirectoryError, match=r"out '.*a_file' is a file"):
        check_output_dir(a_file, "out")
    with pytest.raises(NotADirectoryError, match=r"cannot be made: '.*a_file' is a file"):
        check_output_dir(a_file / "sub" / "more", "out")


def test_preprocess_into_a_file_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    # the corpus does not exist either: the cache directory is checked first, before anything is read
    with pytest.raises(NotADirectoryError, match="cache .* is a file; expected a directory"):
        preprocess(tmp_path / "no_corpus", a_file, n_workers=1, progress=False)
    with pytest.raises(NotADirectoryError, match="cannot be made"):
        preprocess(tmp_path / "no_corpus", a_file / "cache", n_workers=1, progress=False)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--out-dir", "{file}"], "error: run directory '{file}' is a file; expected a directory"),
     (["--out-dir", "{file}/sub"], "error: run directory '{file}/sub' cannot be made: '{file}' is a file"),
     (["--out-dir", "{tmp}/run", "--cache-dir", "{file}"], "error: cache '{file}' is a file; expected a directory"),
     (["--out-dir", "{tmp}/run", "--cache-dir", "{file}/sub"], "error: cache '{file}/sub' cannot be made"),
     (["--out-dir", "{tmp}/run", "--device", "tpu"], "device must be 'cpu', 'cuda' or 'cuda:N', found 'tpu'"),
     (["--out-dir", "{tmp}/run", "--device", "cuda:99"], "cuda:99"),
     (["--out-dir", "{tmp}/run", "--set", "max_time_steps=100"], "max_time_steps must be at least one hop"),
     (["--out-dir", "{tmp}/run", "--set", "max_time_steps=1000"], "(nearest: 768 or 1024)"),
     (["--out-dir", "{tmp}/run", "--set", "val_max_time_steps=300"], "val_max_time_steps must be a multiple")],
)  # fmt: skip
def test_bad_paths_devices_and_crop_lengths_are_one_line_before_any_work(corpus, tmp_path, capsys, flags, needle):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    fill = {"file": str(a_file), "tmp": str(tmp_path)}
    argv = ["--preset", "demo", "--data-dir", str(corpus), "--no-progress", *(f.format(**fill) for f in flags)]
    assert recipe.main(argv) == 2
    assert needle.format(**fill) in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists() and a_file.read_text() == "x"  # nothing made, nothing preprocessed


def test_device_names_are_checked():
    for name in ("tpu", "mps", "gpu", "cpu:1", "", "cuda:x"):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            dist.resolve_device(name)
    with pytest.raises(ValueError, match="device must be"):
        dist.setup("tpu")
    assert dist.resolve_device("cpu") == torch.device("cpu")
    assert dist.resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"this machine has {n} GPU" if n else "CUDA is not available"):
        dist.resolve_device(f"cuda:{n}")
    if n:
        assert dist.resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)


# --- defect 7: recordings without signal ----------------------------------------------------------------------------


def noise(seconds: float, peak_dbfs: float, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)
    return x * np.float32(10 ** (peak_dbfs / 20) / np.abs(x).max())


def test_hiss_only_and_constant_dc_files_are_skipped_listed_and_quiet_speech_kept(corpus, tmp_path):
    wavs = corpus / "wavs"
    write_wav(wavs / "HISS.wav", noise(0.5, -80.0), subtype="FLOAT")
    write_wav(wavs / "DC.wav", np.full(int(0.5 * SR), 0.5, np.float32))  # 16-bit PCM, as most corpora are
    write_wav(wavs / "DCHISS.wav", 0.3 + noise(0.5, -75.0, seed=1), subtype="FLOAT")
    write_wav(wavs / "QUIET.wav", tone(0.4, amp=0.01) + 0.2, subtype="FLOAT")  # −40 dBFS speech on a DC offset: kept
    for uid in ("HISS", "DC", "DCHISS", "QUIET"):
        add_line(corpus, f"{uid}|Text.|Text.")
    manifest, caught = run_preprocess(corpus, tmp_path / "cache")
    assert "QUIET" in {e.id for e in manifest.utterances} and len(manifest.utterances) == 5
    reasons = {s.id: s.reason for s in manifest.skipped}
    assert set(reasons) == {"HISS", "DC", "DCHISS"}
    assert reasons["HISS"] == f"silent: peak -80.0 dBFS is below {MIN_SIGNAL_DBFS:g} dBFS (hiss or silence only)"
    assert reasons["DC"].startswith("constant: a DC level of 0.5 with no variation")
    assert reasons["DCHISS"].startswith("constant: a DC level of 0.3") and "-75.0 dBFS" in reasons["DCHISS"]
    stored = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert stored["n_skipped"] == 3 and {s["id"] for s in stored["skipped"]} == set(reasons)
    assert len(caught) == 3 and all(any(f"{uid}.wav" in m and reasons[uid] in m for m in caught) for uid in reasons)


def test_the_signal_check_is_the_caches_only():
    c = AudioConfig()
    hiss = noise(0.5, -80.0)
    with pytest.raises(ValueError, match="silent: peak -80.0 dBFS"):
        prepare_audio(hiss, SR, c, check_signal=True)
    with pytest.raises(ValueError, match="silent: every sample is zero"):
        prepare_audio(np.zeros(4 * HOP, np.float32), SR, c, check_signal=True)
    with pytest.raises(ValueError, match="constant: a DC level of -0.25 with no variation"):
        prepare_audio(np.full((2, 4 * HOP), -0.25, np.float32), SR, c, check_signal=True)  # checked after mix-down
    # at the file's own rate: resampling a constant rings at its ends, which must not pass for signal
    with pytest.raises(ValueError, match="constant"):
        prepare_audio(np.full(8000, 0.5, np.float32), 8000, c, check_signal=True)
    # by default (vocoding a given recording) a quiet one is prepared as it is
    assert prepare_audio(hiss, SR, c, trim=False, check_range=False).audio.size == hiss.size // HOP * HOP
    assert prepare_audio(hiss, SR, c).audio.size > 0


def test_sample_mel_from_still_vocodes_a_quiet_recording(tmp_path, capsys):
    model, stats, _ = train_tiny(WaveNetConfig(**NET, **VOCODER), steps=1)
    from tests._cli import AUDIO, RATE

    ckpt = tmp_path / "vocoder.pt"
    model.save(ckpt, audio_config=AUDIO.to_dict(), mel_stats=stats.to_dict())
    quiet = write_wav(tmp_path / "quiet.wav", noise(0.05, -80.0)[: 400], sr=RATE, subtype="FLOAT")
    code, _, err = run_cli(["sample", ckpt, "--mel-from", quiet, "-o", tmp_path / "out.wav", "--no-progress",
                            "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    assert read_audio(tmp_path / "out.wav")[0].shape[1] == 400 // AUDIO.hop_length * AUDIO.hop_length


def test_the_demo_corpus_passes_the_signal_check():
    """None of the 30 demo utterances is skipped by the check (the demo's cache must keep them all)."""
    c = AudioConfig()
    for path in sorted((DEMO / "wavs").glob("*.wav")):
        prepare_audio(*read_audio(path), c, trim=False, check_signal=True)
    assert audio.MIN_SIGNAL_DBFS == MIN_SIGNAL_DBFS < 0


# --- defect 8: a corpus without wavs/, warnings as users see them, crop lengths ------------------------------------


def test_a_corpus_without_wavs_is_one_error_not_a_warning_per_line(tmp_path, capsys, quiet_logging):
    write_corpus(tmp_path / "corpus", n=5)
    for wav in (tmp_path / "corpus" / "wavs").iterdir():
        wav.unlink()
    (tmp_path / "corpus" / "wavs").rmdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DataWarning would fail here
        with pytest.raises(FileNotFoundError, match=r"no wavs/ folder in '.*corpus'"):
            read_metadata(tmp_path / "corpus")
        with pytest.raises(FileNotFoundError, match="no wavs/ folder"):
            preprocess(tmp_path / "corpus", tmp_path / "cache", n_workers=1, progress=False)
    argv = ["--preset", "demo", "--data-dir", str(tmp_path / "corpus"), "--out-dir", str(tmp_path / "run"),
            "--no-progress"]  # fmt: skip
    assert recipe.main(argv) == 2
    assert "no wavs/ folder in" in one_error_line(capsys.readouterr().err)


def test_data_warnings_are_one_line_each_without_a_source_line(corpus, tmp_path):
    """What a user sees: ``python -m recipes.train_ljspeech`` on a corpus with a missing and a hiss-only file."""
    write_wav(corpus / "wavs" / "HISS.wav", noise(0.5, -80.0), subtype="FLOAT")
    add_line(corpus, "HISS|Text.|Text.")
    add_line(corpus, "GONE|Text.|Text.")
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.train_ljspeech", "--preset", "demo", "--data-dir", str(corpus),
         "--out-dir", str(tmp_path / "run"), "--preprocess-only", "--no-progress"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if " INFO " not in line and " WARNING " not in line]
    assert lines == [
        f"warning: {corpus / 'metadata.csv'}:6: skipped: audio file '{corpus / 'wavs' / 'GONE.wav'}' is missing",
        f"warning: skipping {corpus / 'wavs' / 'HISS.wav'} (metadata.csv line 5): silent: peak -80.0 dBFS is below "
        f"{MIN_SIGNAL_DBFS:g} dBFS (hiss or silence only)",
    ], proc.stderr


def test_check_crop_length():
    assert check_crop_length("max_time_steps", None, HOP) is None
    assert check_crop_length("max_time_steps", 4 * HOP, HOP) == 4 * HOP
    with pytest.raises(ValueError, match=f"at least one hop \\(hop_length={HOP}\\) and a multiple of it, found 100"):
        check_crop_length("max_time_steps", 100, HOP)
    with pytest.raises(ValueError, match=f"multiple of hop_length={HOP}, found 1000 \\(nearest: 768 or 1024\\)"):
        check_crop_length("max_time_steps", 1000, HOP)
    with pytest.raises(ValueError, match="max_time_steps"):
        check_crop_length("max_time_steps", 0, HOP)
