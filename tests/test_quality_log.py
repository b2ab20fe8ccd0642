"""Quality during training: copy-synthesis metrics, audio and spectrograms in TensorBoard; best.pt by a metric."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch

from tests._corpus import write_corpus
from tests.test_train import AUDIO, EPS32, MODEL, SR
from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.checkpoint import BEST_CHECKPOINT, list_checkpoints, load_checkpoint
from wavenet_dilated.data import preprocess
from wavenet_dilated.mel import MelStats
from wavenet_dilated.quality.metrics import METRICS
from wavenet_dilated.train import TrainConfig, Trainer
from wavenet_dilated.train.config import BEST_METRICS
from wavenet_dilated.train.quality_log import spectrogram_image

# quality at every validation (steps 2 and 4): two utterances, their first 0.5 s (STOI needs about 0.4 s)
TRAIN = TrainConfig(lr=1e-2, warmup_steps=2, max_steps=4, batch_size=2, max_time_steps=512, ema_decay=0.9,
                    log_every=1, val_every=2, checkpoint_every=2, keep_last=10, sample_every=None, num_workers=0,
                    device="cpu", quality_utterances=2, quality_seconds=0.5, best_metric="stoi")  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Eight tones of 0.6–0.95 s at 8 kHz, two or more of them in the validation split."""
    root = tmp_path_factory.mktemp("quality_corpus")
    write_corpus(root / "corpus", n=8, seconds=0.6, sr=SR)
    manifest = preprocess(root / "corpus", root / "cache", AUDIO, n_workers=1, progress=False, val_fraction=0.3)
    assert len(manifest.entries("val")) >= 2
    return root / "cache"


def events_of(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    events.Reload()
    return events


def test_training_logs_quality_scalars_audio_and_spectrograms(cache, tmp_path):
    trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    ids = [u.id for u in trainer.quality.utterances]
    assert len(ids) == 2 and ids == trainer.val_set.ids[:2]  # the first validation utterances, fixed
    trainer.fit(progress=False)
    events = events_of(tmp_path)
    tags = events.Tags()
    for name in ("stoi", "pesq_wb", "mel_l1", "mcd_db", "seconds"):
        assert [e.step for e in events.Scalars(f"quality/{name}")] == [2, 4], name
    for name in ("stoi", "pesq_wb", "mel_l1"):
        assert [e.step for e in events.Scalars(f"quality_griffin_lim/{name}")] == [2]  # once: a reference line
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("quality/stoi"))
    hop = AUDIO.hop_length
    frames = math.ceil(TRAIN.quality_seconds * SR / hop)
    for uid in ids:
        vocoded = events.Audio(f"quality_audio/{uid}/vocoded")
        assert [a.step for a in vocoded] == [2, 4]
        assert all(a.sample_rate == SR and a.length_frames == frames * hop for a in vocoded)
        for once in ("original", "griffin_lim"):
            logged = events.Audio(f"quality_audio/{uid}/{once}")
            assert [a.step for a in logged] == [2] and logged[0].length_frames == frames * hop
        images = events.Images(f"quality_spectrogram/{uid}")
        assert [i.step for i in images] == [2, 4]
        assert images[0].width == frames and images[0].height == 2 * AUDIO.n_mels + 2  # original, gap, vocoded
    assert f"quality_spectrogram/{ids[0]}" in tags["images"]

    # best.pt is the checkpoint with the highest STOI; every checkpoint records the latest quality
    stoi = {e.step: e.value for e in events.Scalars("quality/stoi")}
    best = load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)
    best_step = max(stoi, key=lambda s: (stoi[s], -s))  # the earliest on a tie: a tie is not an improvement
    assert best["step"] == best_step
    # TensorBoard stores fp32: within eps32 / 2 relative of the Python float
    assert best["quality"]["best"] == pytest.approx(stoi[best_step], rel=EPS32 / 2, abs=0.0)
    assert best["quality"]["metrics"]["stoi"] == best["quality"]["best"]
    last = torch.load(list_checkpoints(tmp_path / "checkpoints")[-1][1], weights_only=True)
    assert last["quality"]["metrics"]["stoi"] == pytest.approx(stoi[4], rel=EPS32 / 2, abs=0.0)


def test_resume_restores_the_best_quality_so_far(cache, tmp_path):
    first = Trainer(MODEL, TRAIN, cache, tmp_path)
    first.fit(until_step=2, progress=False)
    resumed = Trainer(MODEL, TRAIN, cache, tmp_path)
    assert resumed.quality.best == first.quality.best and resumed.quality.best is not None
    a, b = resumed.quality.metrics, first.quality.metrics
    assert a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_without_pystoi_and_pesq_one_warning_and_the_other_metrics(cache, tmp_path, monkeypatch, caplog):
    import wavenet_dilated.quality.metrics as qm

    real_require = qm._require

    def without_extra(name):
        if name in ("pystoi", "pesq"):
            raise qm.MissingEvalDependency(f"the copy-synthesis metrics need {name!r}, which is not installed")
        return real_require(name)

    monkeypatch.setattr(qm, "_require", without_extra)
    config = dataclasses.replace(TRAIN, best_metric="mel_l1")
    with caplog.at_level(logging.WARNING, logger="wavenet_dilated.train.quality_log"):
        Trainer(MODEL, config, cache, tmp_path).fit(progress=False)
    warnings = [r for r in caplog.records if "without STOI and PESQ" in r.getMessage()]
    assert len(warnings) == 1
    tags = events_of(tmp_path).Tags()["scalars"]
    assert "quality/mel_l1" in tags and "quality/mcd_db" in tags
    assert "quality/stoi" not in tags and "quality/pesq_wb" not in tags
    assert (tmp_path / "checkpoints" / BEST_CHECKPOINT).is_file()


def test_best_metric_names_and_directions_are_the_quality_metrics():
    directions = {m.name: m.higher_is_better for m in METRICS}
    for name, higher in BEST_METRICS.items():
        if name != "val_nll":
            assert directions[name] == higher, name
    with pytest.raises(ValueError, match="quality_utterances"):
        TrainConfig(best_metric="stoi")
    with pytest.raises(ValueError, match="best_metric"):
        TrainConfig(best_metric="pesq", quality_utterances=2)


def test_spectrogram_image_is_a_colour_ramp_dark_for_quiet():
    config = AudioConfig(sample_rate=SR, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmax=4000.0)
    stats = MelStats(mean=[0.0] * 16, std=[1.0] * 16)
    wave = torch.zeros(64 * 10)  # digital silence: the lowest value of the ramp
    target = torch.linspace(-3.0, 3.0, 16)[:, None].expand(16, 10)  # every level of the ramp, low bins quiet
    image = spectrogram_image(wave, target, config, stats)
    assert image.shape == (3, 2 * 16 + 2, 10) and image.min() >= 0.0 and image.max() <= 1.0
    luminance = (0.2126 * image[0] + 0.7152 * image[1] + 0.0722 * image[2])[:, 0]
    top = luminance[:16]  # the target, flipped: the loudest bin first
    assert torch.all(top[:-1] > top[1:])  # brighter for louder, strictly
    assert torch.all(luminance[18:] == luminance[-1])  # the silent estimate: all one (the darkest) colour
    assert luminance[-1] <= top.min()
