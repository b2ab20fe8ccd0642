"""``wavenet-dilated vocode``: many inputs, bad ones skipped, batching that changes nothing, conventions converted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _cli import AUDIO, HOP, N_MELS, RATE, make_checkpoints, read, run, tone

from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.checkpoint import load_checkpoint
from wavenet_dilated.cli.vocode import output_names
from wavenet_dilated.mel import MelStats, log_mel
from wavenet_dilated.mel_formats import write_stats


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpt"))


def _mel(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N_MELS, frames)).astype(np.float32)


def _inputs(root: Path) -> dict[str, int]:
    """A directory of good and bad inputs; returns the good ones' expected output names → frames."""
    root.mkdir()
    np.save(root / "short.npy", _mel(5, 0))
    np.save(root / "long.npy", _mel(17, 1).T)  # (frames, n_mels): read too
    torch.save(torch.from_numpy(_mel(9, 2)), root / "mid.pt")
    sf.write(root / "speech.wav", tone(330.0, 11 * HOP + 7), RATE)  # 11 whole hops; the 7 samples left are cut
    np.save(root / "wrong_bins.npy", np.zeros((N_MELS + 3, 6), np.float32))
    (root / "broken.npy").write_bytes(b"not numpy at all")
    np.save(root / "nan.npy", np.full((N_MELS, 4), np.nan, np.float32))
    (root / "notes.txt").write_text("ignored: not a mel or audio file")
    return {"short.wav": 5, "long.wav": 17, "mid.wav": 9, "speech.wav": 11}


def test_a_directory_of_good_and_bad_inputs(ckpts, tmp_path, capsys):
    good = _inputs(tmp_path / "in")
    code, out, err = run(["vocode", ckpts["vocoder"], tmp_path / "in", tmp_path / "missing.npy", "-o",
                          tmp_path / "out", "--seed", "5", "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(good)
    for name, frames in good.items():
        data, rate = read(tmp_path / "out" / name)
        assert (data.shape, rate) == ((frames * HOP,), RATE), name
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 4
    for name in ("wrong_bins.npy", "broken.npy", "nan.npy", "missing.npy"):
        assert sum(name in line for line in skipped) == 1, (name, err)
    assert "expected a mel of shape (10, frames) or (frames, 10), found shape (13, 6)" in err
    assert "Traceback" not in err
    assert out.startswith(f"vocoded 4 files into {tmp_path / 'out'}: {42 * HOP / RATE:.2f} s of audio at {RATE} Hz")
    assert "(seed 5)" in out and "real-time factor" in out and "skipped 4 bad inputs" in out


def test_nothing_vocodable_fails(ckpts, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.npy").write_bytes(b"junk")
    code, out, err = run(["vocode", ckpts["vocoder"], tmp_path / "in", tmp_path / "nope.wav", "-o",
                          tmp_path / "out"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "wavenet-dilated: error: nothing to vocode: all 2 inputs were skipped (see above)"
    assert list((tmp_path / "out").iterdir()) == []


def test_batching_gives_the_samples_of_one_file_at_a_time(ckpts, tmp_path, capsys):
    good = _inputs(tmp_path / "in")
    code, _, err = run(["vocode", ckpts["vocoder"], tmp_path / "in", "-o", tmp_path / "batched", "--batch-size", "3",
                        "--seed", "11", "--no-progress"], capsys)
    assert code == 0, err
    for path in sorted((tmp_path / "in").iterdir()):
        if path.stem in {Path(n).stem for n in good}:
            code, _, err = run(["vocode", ckpts["vocoder"], path, "-o", tmp_path / "alone", "--seed", "11",
                                "--batch-size", "1", "--no-progress"], capsys)
            assert code == 0, err
    for name in good:
        batched, alone = read(tmp_path / "batched" / name)[0], read(tmp_path / "alone" / name)[0]
        np.testing.assert_array_equal(batched, alone, err_msg=name)
    assert len(set(read(tmp_path / "batched" / "short.wav")[0][:50].tolist())) > 1  # not a constant output


def test_no_input_is_overwritten(ckpts, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    wav = tmp_path / "in" / "speech.wav"
    sf.write(wav, tone(330.0, 8 * HOP), RATE)
    before = wav.read_bytes()
    code, out, err = run(["vocode", ckpts["vocoder"], tmp_path / "in", "-o", tmp_path / "in"], capsys)
    assert code == 2 and out == ""
    assert f"the output {str(wav)!r} would replace the input {str(wav)!r}" in err
    assert wav.read_bytes() == before


def test_output_names_are_distinct():
    files = [Path("a/x.npy"), Path("a/x.wav"), Path("b/x.npy"), Path("a/y.pt"), Path("b/z.npy")]
    assert output_names(files) == ["x_npy.wav", "x_wav.wav", "x_npy_2.wav", "y.wav", "z.wav"]


def test_a_filterbank_mismatch_is_refused_naming_the_parameters(ckpts, tmp_path, capsys):
    np.save(tmp_path / "t.npy", _mel(6, 0) - 5)
    code, _, err = run(["vocode", ckpts["vocoder"], tmp_path / "t.npy", "-o", tmp_path / "out", "--mel-format",
                        "tacotron2"], capsys)
    assert code == 2
    assert ("the filterbanks differ in sample_rate 22050 vs 8000, n_fft 1024 vs 256, hop_length 256 vs 32, "
            "win_length 1024 vs 256, n_mels 80 vs 10, fmax 8000.0 vs 4000.0 (input vs vocoder)") in err


@pytest.fixture(scope="module")
def espnet_ckpt(ckpts, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AudioConfig, MelStats]:
    """The test vocoder as if trained on the espnet convention (its filterbank, log10, floor 1e-10)."""
    ckpt = load_checkpoint(ckpts["vocoder"])
    config = dataclasses.replace(AUDIO, mel_format="espnet", mel_floor=1e-10)
    path = tmp_path_factory.mktemp("espnet") / "espnet.pt"
    torch.save({**ckpt, "audio_config": config.to_dict()}, path)
    return path, config, MelStats.from_dict(ckpt["mel_stats"])


def test_espnet_mels_raw_or_normalised_give_the_same_audio(espnet_ckpt, tmp_path, capsys):
    path, config, stats = espnet_ckpt
    raw = log_mel(torch.from_numpy(tone(330.0, 12 * HOP)), config)  # log10 mel, as the convention defines it
    np.save(tmp_path / "raw.npy", raw.numpy().T)  # ESPnet writes (frames, n_mels)
    np.save(tmp_path / "features.npy", stats.normalize(raw).numpy())
    code, _, err = run(["vocode", path, tmp_path / "raw.npy", "-o", tmp_path / "a", "--mel-format", "espnet",
                        "--stats", "none", "--seed", "3", "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run(["vocode", path, tmp_path / "features.npy", "-o", tmp_path / "b", "--stats", path, "--seed",
                        "3", "--no-progress"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(read(tmp_path / "a" / "raw.wav")[0], read(tmp_path / "b" / "features.wav")[0])
    assert read(tmp_path / "a" / "raw.wav")[0].shape == (12 * HOP,)


def test_espnet_mels_need_their_statistics(espnet_ckpt, tmp_path, capsys):
    path, _, _ = espnet_ckpt
    np.save(tmp_path / "m.npy", _mel(6, 0))
    code, _, err = run(["vocode", path, tmp_path / "m.npy", "-o", tmp_path / "out"], capsys)
    assert code == 2 and "mean-variance normalised with a statistics file: name the file with --stats" in err
    write_stats(tmp_path / "stats.npy", MelStats((0.0,) * N_MELS, (2.0,) * N_MELS))
    code, _, err = run(["vocode", path, tmp_path / "m.npy", "-o", tmp_path / "out", "--stats", tmp_path / "stats.npy",
                        "--no-progress"], capsys)
    assert code == 0, err
    (tmp_path / "stats.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    code, _, err = run(["vocode", path, tmp_path / "m.npy", "-o", tmp_path / "out", "--stats", tmp_path / "stats.h5"],
                       capsys)
    assert code == 2 and "h5py" in err and "not a dependency" in err and err.count("\n") == 1
