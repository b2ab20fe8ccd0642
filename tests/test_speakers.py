"""Multi-speaker training: the VCTK corpus layout, speaker ids in the cache and the batches, per-speaker splits, the
trainer's speaker conditioning, the speaker names in the checkpoint, and generation by speaker.

The two-speaker corpus is spoken by espeak-ng in two voices (an American male and a British female voice); without
espeak-ng each speaker is a tone of its own pitch, so the tests run everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests._corpus import tone, write_corpus, write_wav
from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.checkpoint import BEST_CHECKPOINT, list_checkpoints, load_checkpoint, read_speakers
from wavenet_dilated.data import (
    AudioDataset,
    DataWarning,
    collate,
    corpus_layout,
    load_manifest,
    preprocess,
    scan_corpus,
    speaker_conditioning,
    split_by_speaker,
    split_ids,
)
from wavenet_dilated.generation.fast import fast_generate
from wavenet_dilated.train import TrainConfig, Trainer
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

ESPEAK = shutil.which("espeak-ng")
SR = 8000
AUDIO = AudioConfig(sample_rate=SR, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmin=0.0, fmax=4000.0,
                    trim_top_db=None)  # fmt: skip
MODEL = WaveNetConfig(n_layers=4, n_stacks=2, kernel_size=3, residual_channels=8, gate_channels=16, skip_channels=8,
                      cond_channels=16, upsample_scales=(8, 8), hop_length=64)  # fmt: skip
TRAIN = TrainConfig(lr=1e-2, warmup_steps=2, max_steps=6, batch_size=2, max_time_steps=512, ema_decay=0.9,
                    log_every=1, val_every=3, val_max_time_steps=1024, checkpoint_every=3, keep_last=10,
                    sample_every=None, sample_seconds=0.02, num_workers=0, device="cpu")  # fmt: skip
#: speaker → (espeak-ng voice, the fallback tone's pitch in Hz)
VOICES = {"p225": ("en-us", 180.0), "p226": ("en-gb+f3", 330.0)}
SENTENCES = ("Please call Stella.", "Ask her to bring these things.", "Six spoons of fresh snow peas.",
             "We also need a small plastic snake.", "She can scoop these things into three bags.")  # fmt: skip


def speech(voice: str, pitch: float, text: str, index: int, work: Path) -> tuple[np.ndarray, int]:
    """``text`` spoken by the espeak-ng ``voice`` (or, without espeak-ng, a tone at ``pitch``): ``(audio, rate)``."""
    if ESPEAK is None:
        return tone(0.5 + 0.05 * index, SR, freq=pitch * (1 + 0.05 * index), seed=index), SR
    out = work / f"{voice}_{index}.wav"
    subprocess.run([ESPEAK, "-v", voice, "-w", str(out), text], check=True, capture_output=True, timeout=60)
    audio, rate = sf.read(str(out), dtype="float32")
    return audio, rate


def write_vctk(root: Path, n: int = len(SENTENCES)) -> dict[str, list[str]]:
    """A two-speaker corpus in VCTK 0.92's layout (``wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac`` and
    ``txt/<spk>/<spk>_<nnn>.txt``); returns each speaker's utterance ids."""
    work = root / "_espeak"
    work.mkdir(parents=True)
    ids: dict[str, list[str]] = {}
    for speaker, (voice, pitch) in VOICES.items():
        for i, text in enumerate(SENTENCES[:n]):
            uid = f"{speaker}_{i + 1:03d}"
            audio, rate = speech(voice, pitch, text, i, work)
            path = root / "wav48_silence_trimmed" / speaker / f"{uid}_mic1.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, rate, format="FLAC")
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{uid}.txt").write_text(text + "\n", encoding="utf-8")
            ids.setdefault(speaker, []).append(uid)
    shutil.rmtree(work)
    return ids


@pytest.fixture(scope="module")
def vctk(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("speakers") / "VCTK-Corpus-0.92"
    return root, write_vctk(root)


@pytest.fixture(scope="module")
def cache(vctk, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speakers_cache") / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the corpus is clean: nothing may be skipped
        preprocess(vctk[0], out, AUDIO, n_workers=1, progress=False, val_fraction=0.3)
    return out


# --- the corpus layout ------------------------------------------------------------------------------------------------


def test_vctk_layout_is_read_with_speakers_texts_and_ids(vctk):
    root, ids = vctk
    assert corpus_layout(root) == "speakers"
    corpus = scan_corpus(root)
    assert corpus.layout == "speakers" and corpus.speakers == tuple(sorted(VOICES)) and not corpus.problems
    assert [u.id for u in corpus.utterances] == [uid for speaker in sorted(ids) for uid in ids[speaker]]
    by_id = {u.id: u for u in corpus.utterances}
    assert by_id["p226_002"].speaker == "p226" and by_id["p226_002"].text == SENTENCES[1]
    assert by_id["p225_001"].line is None and by_id["p225_001"].wav_path.name == "p225_001_mic1.flac"


def test_own_layout_prefixes_ids_prefers_mic1_and_reports_what_it_leaves_out(tmp_path):
    wavs = tmp_path / "wavs"
    for rel in ("anna/001.wav", "anna/deep/002.flac", "bert/001.wav", "bert/a_mic2.wav", "bert/a_mic1.wav",
                "bert/b_mic2.wav", "bert/.hidden/003.wav", "loose.wav", "bert/dup.wav", "bert/sub/dup.wav"):
        write_wav(wavs / rel, tone(0.1, SR), SR)
    (wavs / "carl").mkdir()  # a speaker folder without audio
    (wavs / "anna" / "notes.md").write_text("not audio")
    (wavs / "anna" / "001.txt").write_text("Beside the audio.\n")
    (tmp_path / "txt" / "bert").mkdir(parents=True)
    (tmp_path / "txt" / "bert" / "a.txt").write_text("In  txt/ .\n")
    corpus = scan_corpus(tmp_path)
    got = {u.id: (u.speaker, str(u.wav_path.relative_to(wavs)), u.text) for u in corpus.utterances}
    assert got == {
        "anna_001": ("anna", "anna/001.wav", "Beside the audio."),
        "anna_002": ("anna", "anna/deep/002.flac", ""),
        "bert_001": ("bert", "bert/001.wav", ""),
        "bert_a": ("bert", "bert/a_mic1.wav", "In txt/ ."),  # mic1 kept, mic2 dropped without a problem
        "bert_b": ("bert", "bert/b_mic2.wav", ""),  # only mic2 recorded: taken
        "bert_dup": ("bert", "bert/dup.wav", ""),
    }
    problems = {Path(p.path).relative_to(wavs).as_posix(): p.why for p in corpus.problems}
    assert set(problems) == {"loose.wav", "carl", "bert/sub/dup.wav"}
    assert "not in a speaker folder" in problems["loose.wav"] and "without audio" in problems["carl"]
    assert "duplicate utterance id 'bert_dup'" in problems["bert/sub/dup.wav"]
    assert corpus.speakers == ("anna", "bert")  # carl has nothing to train on


def test_metadata_csv_decides_the_layout_and_a_flat_wavs_folder_is_no_corpus(tmp_path):
    write_corpus(tmp_path / "lj", n=2, sr=SR)
    write_wav(tmp_path / "lj" / "wavs" / "someone" / "x.wav", tone(0.1, SR), SR)
    assert corpus_layout(tmp_path / "lj") == "ljspeech" and scan_corpus(tmp_path / "lj").speakers is None
    write_wav(tmp_path / "flat" / "wavs" / "a.wav", tone(0.1, SR), SR)
    assert corpus_layout(tmp_path / "flat") is None
    with pytest.raises(FileNotFoundError, match=r"no corpus in .*flat.*metadata\.csv.*wavs/<speaker>/<utterance>"):
        preprocess(tmp_path / "flat", tmp_path / "cache", AUDIO, n_workers=1, progress=False)


# --- the cache ----------------------------------------------------------------------------------------------------------


def test_cache_records_speakers_and_splits_each_speaker_on_its_own(vctk, cache):
    _, ids = vctk
    manifest = load_manifest(cache)
    assert manifest.speakers == ("p225", "p226")
    stored = json.loads((cache / "manifest.json").read_text())
    assert stored["speakers"] == ["p225", "p226"]
    for speaker, members in ids.items():
        expected = split_ids(members, 0.3, 0.02)  # each speaker's own split, independent of the other's ids
        for split in ("train", "val", "test"):
            assert sorted(e.id for e in manifest.entries(split) if e.speaker == speaker) == expected[split]
        assert expected["val"], "every speaker is validated"
    assert {e.id: e.speaker for e in manifest.utterances} == {u: s for s, us in ids.items() for u in us}
    assert manifest.speaker_id("p226") == 1
    with pytest.raises(ValueError, match="unknown speaker 'p999'; the cache's speakers: p225, p226"):
        manifest.speaker_id("p999")


def test_split_by_speaker_keeps_a_speakers_split_when_others_change():
    a = {f"a_{i:03d}": "a" for i in range(40)}
    b = {f"b_{i:03d}": "b" for i in range(7)}
    alone = split_by_speaker(a, 0.1, 0.05)
    both = split_by_speaker({**a, **b}, 0.1, 0.05)
    for split in ("train", "val", "test"):
        assert [i for i in both[split] if i.startswith("a_")] == alone[split]
    assert any(i.startswith("b_") for i in both["val"])  # the small speaker is validated too
    assert split_by_speaker(dict.fromkeys(a), 0.1, 0.05) == split_ids(a, 0.1, 0.05)  # no speakers: split_ids


def test_dataset_items_and_batches_carry_speaker_ids(cache, tmp_path):
    ds = AudioDataset(cache, "train", max_time_steps=512)
    for i, entry in enumerate(ds.entries):
        item = ds[i]
        assert item["speaker"].dtype == torch.int64 and item["speaker"].shape == ()
        assert int(item["speaker"]) == ds.manifest.speakers.index(entry.speaker)
    batch = ds.collate_fn([ds[0], ds[len(ds) - 1]])
    assert batch["speaker"].dtype == torch.int64 and batch["speaker"].tolist() == [
        int(ds[0]["speaker"]), int(ds[len(ds) - 1]["speaker"])]  # fmt: skip
    assert {int(ds[i]["speaker"]) for i in range(len(ds))} == {0, 1}
    write_corpus(tmp_path / "lj", n=4, sr=SR)
    preprocess(tmp_path / "lj", tmp_path / "lj_cache", AUDIO, n_workers=1, progress=False)
    lj = AudioDataset(tmp_path / "lj_cache", "train")
    assert "speaker" not in lj[0] and "speaker" not in collate([lj[0]])
    with pytest.raises(ValueError, match="speaker id in every item or in none, found 1 of 2"):
        collate([ds[0], {"audio": ds[0]["audio"], "mel": ds[0]["mel"]}])


# --- speaker conditioning ---------------------------------------------------------------------------------------------


def test_speaker_conditioning_follows_the_cache():
    on = speaker_conditioning(MODEL, ["a", "b", "c"])
    assert (on.n_speakers, on.speaker_channels) == (3, 3)
    assert speaker_conditioning(MODEL, [f"s{i}" for i in range(100)]).speaker_channels == 32
    assert speaker_conditioning(MODEL, ["solo"]) == MODEL and speaker_conditioning(MODEL, None) == MODEL
    chosen = dataclasses.replace(MODEL, n_speakers=2, speaker_channels=8)
    assert speaker_conditioning(chosen, ["a", "b"]) == chosen  # the user's width is kept
    with pytest.raises(ValueError, match=r"n_speakers=2 but the cache has 3 speakers \(a, b, c\): set n_speakers=3"):
        speaker_conditioning(chosen, ["a", "b", "c"])
    with pytest.raises(ValueError, match="n_speakers=2.*no speaker ids.*set n_speakers=None"):
        speaker_conditioning(chosen, None)
    assert speaker_conditioning(MODEL, ["a", "b"], use_speakers=False) == MODEL
    with pytest.raises(ValueError, match="n_speakers=2.*speaker ids are switched off"):
        speaker_conditioning(chosen, ["a", "b"], use_speakers=False)


def test_trainer_refuses_a_speaker_model_on_a_single_speaker_cache(tmp_path):
    write_corpus(tmp_path / "lj", n=4, sr=SR)
    preprocess(tmp_path / "lj", tmp_path / "cache", AUDIO, n_workers=1, progress=False, val_fraction=0.3)
    with pytest.raises(ValueError, match="no speaker ids"):
        Trainer(dataclasses.replace(MODEL, n_speakers=2, speaker_channels=2), TRAIN, tmp_path / "cache", tmp_path / "r")


def test_training_on_two_speakers_stores_their_names_and_generates_by_speaker(cache, tmp_path):
    """The acceptance test: a few steps on the two-voice corpus, the names in every checkpoint, generation by id."""
    trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    assert (trainer.model_config.n_speakers, trainer.model_config.speaker_channels) == (2, 2)
    assert trainer.speakers == ["p225", "p226"]
    embedding = trainer.model.speaker_embed.weight.detach().clone()
    summary = trainer.fit(progress=False)
    assert summary.step == TRAIN.max_steps and summary.val_nll_bits is not None  # validated with speaker ids
    # the batches' speaker ids reached the loss: both speakers' embeddings were trained
    moved = (trainer.model.speaker_embed.weight.detach() - embedding).abs().amax(dim=1)
    assert bool((moved > 0).all()), moved
    paths = [p for _, p in list_checkpoints(tmp_path / "checkpoints")] + [tmp_path / "checkpoints" / BEST_CHECKPOINT]
    assert len(paths) == 3
    for path in paths:
        ckpt = load_checkpoint(path)
        assert ckpt["speakers"] == ["p225", "p226"] and read_speakers(ckpt, path, 2) == ["p225", "p226"]
    model = WaveNet.from_checkpoint(paths[-1]).eval()
    assert model.config.n_speakers == 2
    mel = AudioDataset(cache, "val", None, n_classes=None)[0]["mel"][:, :3][None]
    a, b = (fast_generate(model, mel=mel, speaker=s, seed=0) for s in (0, 1))
    assert a.shape == b.shape == (1, 3 * AUDIO.hop_length)
    inputs = torch.randint(0, 256, (1, 3 * AUDIO.hop_length))
    logits = [model(inputs, mel, torch.tensor([s])) for s in (0, 1)]
    assert not torch.equal(logits[0], logits[1])  # the speaker id changes the prediction
    with pytest.raises(ValueError, match=r"speaker ids must lie in \[0, 1\]"):
        fast_generate(model, mel=mel, speaker=2, seed=0)


def test_a_speaker_independent_model_on_a_multi_speaker_cache(cache, tmp_path):
    trainer = Trainer(MODEL, dataclasses.replace(TRAIN, max_steps=2, val_every=2, checkpoint_every=2), cache, tmp_path,
                      use_speakers=False)  # fmt: skip
    assert trainer.model_config == MODEL and trainer.speakers is None and trainer.model.speaker_embed is None
    assert trainer.fit(progress=False).val_nll_bits is not None
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1][1])
    assert ckpt["speakers"] is None and ckpt["config"]["n_speakers"] is None


def test_vocoder_generates_by_speaker_name(cache, tmp_path):
    from wavenet_dilated.vocoder import load_vocoder

    Trainer(MODEL, dataclasses.replace(TRAIN, max_steps=2, val_every=2, checkpoint_every=2), cache, tmp_path).fit(
        progress=False)  # fmt: skip
    vocoder = load_vocoder(list_checkpoints(tmp_path / "checkpoints")[-1][1], device="cpu")
    assert vocoder.speakers == ["p225", "p226"]
    mel = AudioDataset(cache, "val", None, n_classes=None)[0]["mel"][:, :2]
    assert torch.equal(vocoder(mel, seed=3, speaker="p226"), vocoder(mel, seed=3, speaker=1))
    with pytest.raises(ValueError, match="unknown speaker 'nobody'.*p225, p226"):
        vocoder(mel, seed=3, speaker="nobody")


def test_resuming_with_other_speaker_names_is_refused(cache, tmp_path):
    Trainer(MODEL, dataclasses.replace(TRAIN, max_steps=2, val_every=2, checkpoint_every=2), cache, tmp_path / "run"
            ).fit(progress=False)  # fmt: skip
    renamed = tmp_path / "renamed"
    shutil.copytree(cache, renamed)
    manifest = json.loads((renamed / "manifest.json").read_text())
    manifest["speakers"] = ["p000", "p226"]  # same count, same audio and statistics: only a name differs
    for entry in manifest["utterances"]:
        entry["speaker"] = "p000" if entry["speaker"] == "p225" else entry["speaker"]
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="trained on the speakers p225, p226 but the cache has p000, p226"):
        Trainer(MODEL, TRAIN, renamed, tmp_path / "run")


# --- the command line -------------------------------------------------------------------------------------------------

#: ``--set`` values that make the demo preset as small as the models above
TINY_SETTINGS = ("sample_rate=8000", "n_fft=256", "win_length=256", "hop_length=64", "n_mels=16", "fmin=0",
                 "fmax=4000", "trim_top_db=None", "n_layers=4", "n_stacks=2", "residual_channels=8",
                 "gate_channels=16", "skip_channels=8", "cond_channels=16", "upsample_scales=8,8", "max_time_steps=512",
                 "batch_size=2", "val_every=2", "checkpoint_every=2", "val_max_time_steps=1024",
                 "sample_seconds=0.02")  # fmt: skip
#: written by the lead once ``sample --speaker NAME`` is in


def test_train_command_on_a_vctk_corpus_then_sample_by_speaker_name(vctk, tmp_path, capsys):
    from tests._cli import run

    root, _ = vctk
    sets = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    code, out, err = run(["train", "--preset", "demo", "--data-dir", root, "--out-dir", tmp_path / "run", "--max-steps",
                          "2", "--no-progress", *sets], capsys)  # fmt: skip
    assert code == 0, err
    assert "done: step 2" in out
    best = tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT
    ckpt = load_checkpoint(best)
    assert ckpt["speakers"] == ["p225", "p226"] and ckpt["config"]["n_speakers"] == 2
    wav = next((root / "wav48_silence_trimmed" / "p226").iterdir())
    code, _, err = run(["sample", best, "--mel-from", wav, "--seconds", "0.02", "--speaker", "p226", "--seed", "1",
                        "-o", tmp_path / "by_name.wav", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    code, _, _ = run(["sample", best, "--mel-from", wav, "--seconds", "0.02", "--speaker", "1", "--seed", "1",
                      "-o", tmp_path / "by_id.wav", "--no-progress"], capsys)  # fmt: skip
    assert code == 0
    assert np.array_equal(sf.read(str(tmp_path / "by_name.wav"))[0], sf.read(str(tmp_path / "by_id.wav"))[0])
    code, _, err = run(["sample", best, "--mel-from", wav, "--speaker", "nobody", "-o", tmp_path / "x.wav"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown speaker 'nobody'" in err and "p225, p226" in err
