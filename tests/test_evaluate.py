"""Copy-synthesis evaluation: the corpus split it reads, the evaluation itself, and the ``evaluate`` command."""

from __future__ import annotations

import csv
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import AUDIO, HOP, NET, RATE, VOCODER, make_checkpoints, run
from _corpus import write_corpus, write_wav

from wavenet_dilated.data import DataWarning, load_manifest, preprocess
from wavenet_dilated.mel import MelStats, log_mel
from wavenet_dilated.mulaw import mu_law_encode
from wavenet_dilated.quality.evaluate import corpus_utterances, evaluate_vocoder, write_csv
from wavenet_dilated.quality.metrics import METRICS, compare_estimates, copy_synthesis_metrics
from wavenet_dilated.vocoder import Vocoder
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

NAMES = [m.name for m in METRICS]


def syllables(f0: float, n: int, seed: int = 0) -> np.ndarray:
    """Speech-like test audio at RATE: a gliding three-harmonic voice in syllables (2.5 per second, so STOI's
    envelopes have structure) over a faint noise floor."""
    t = np.arange(n) / RATE
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 4))
    return (0.4 * envelope * voice + np.random.default_rng(seed).standard_normal(n) * 3e-3).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("wavs")
    return [write_wav(root / f"utt{i}.wav", syllables(f0, int(0.6 * RATE), i), RATE)
            for i, f0 in enumerate((165.0, 294.0))]


# --------------------------------------------------------------------------------------------------- the corpus split


def test_corpus_utterances_are_the_training_cache_split(tmp_path):
    ids = write_corpus(tmp_path / "corpus", n=12, seconds=0.2)
    manifest = preprocess(tmp_path / "corpus", tmp_path / "cache", n_workers=1, progress=False, val_fraction=0.25,
                          test_fraction=0.1)  # fmt: skip
    for split in ("train", "val", "test"):
        cached = sorted(e.id for e in load_manifest(manifest.cache_dir).entries(split))
        assert [u.id for u in corpus_utterances(tmp_path / "corpus", split, 0.25, 0.1)] == cached, split
    assert [u.id for u in corpus_utterances(tmp_path / "corpus", "all")] == sorted(ids)
    with pytest.raises(ValueError, match="split must be one of"):
        corpus_utterances(tmp_path / "corpus", "dev")
    with pytest.raises(FileNotFoundError):
        corpus_utterances(tmp_path / "nowhere", "val")


# --------------------------------------------------------------------------------------------------- the library


def test_compare_estimates_is_copy_synthesis_metrics_of_each():
    x = syllables(165.0, int(0.6 * RATE))
    y = syllables(165.0, int(0.6 * RATE), seed=5)
    both = compare_estimates(x, {"same": x, "other": y}, RATE, AUDIO)
    assert both["same"] == copy_synthesis_metrics(x, x, RATE, AUDIO)
    assert both["other"] == copy_synthesis_metrics(x, y, RATE, AUDIO)


def test_evaluate_vocoder_scores_every_utterance_repeatably(checkpoints, wavs):
    vocoder = Vocoder.from_checkpoint(checkpoints["vocoder"])
    inputs = [(p.stem, p) for p in wavs]
    first = evaluate_vocoder(vocoder, inputs, seed=3, progress=False)
    assert [u.id for u in first.utterances] == ["utt0", "utt1"]
    for u, path in zip(first.utterances, wavs):
        assert u.seconds == vocoder.prepare(path).size / RATE
        assert list(u.model) == NAMES and list(u.griffin_lim) == NAMES
    for system in ("model", "griffin_lim"):
        for name in NAMES:
            values = [getattr(u, system)[name] for u in first.utterances]
            finite = [v for v in values if math.isfinite(v)]
            expected = sum(finite) / len(finite) if finite else math.nan
            got = getattr(first, system)[name]
            assert got == pytest.approx(expected, rel=1e-12) or (math.isnan(got) and math.isnan(expected))
    again = evaluate_vocoder(vocoder, inputs, seed=3, progress=False)
    assert again.to_dict()["utterances"] == first.to_dict()["utterances"]
    json.dumps(first.to_dict(), allow_nan=False)  # NaN is written as null


def test_max_seconds_cuts_reference_and_mel_alike(checkpoints, wavs, tmp_path):
    vocoder = Vocoder.from_checkpoint(checkpoints["vocoder"])
    result = evaluate_vocoder(vocoder, [("a", wavs[0])], max_seconds=0.25, save_audio_dir=tmp_path, progress=False)
    n = int(0.25 * RATE) // HOP * HOP
    assert result.utterances[0].seconds == n / RATE
    import soundfile as sf

    for kind in ("reference", "vocoded", "griffin_lim"):
        audio, rate = sf.read(str(tmp_path / f"a.{kind}.wav"))
        assert rate == RATE and audio.shape == (n,), kind
    reference, _ = sf.read(str(tmp_path / "a.reference.wav"), dtype="float32")
    # the saved reference is the prepared recording's first n samples, within 16-bit quantisation (half a step)
    np.testing.assert_allclose(reference, vocoder.prepare(wavs[0])[:n], rtol=0, atol=0.5 / 2**15)


def test_csv_holds_every_utterance_and_metric(checkpoints, wavs, tmp_path):
    vocoder = Vocoder.from_checkpoint(checkpoints["vocoder"])
    result = evaluate_vocoder(vocoder, [(p.stem, p) for p in wavs], progress=False)
    with open(write_csv(result, tmp_path / "sub" / "eval.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["utt0", "utt1"]
    for row, u in zip(rows, result.utterances):
        for system in ("model", "griffin_lim"):
            for name in NAMES:
                value = getattr(u, system)[name]
                text = row[f"{system}_{name}"]
                assert (text == "" and math.isnan(value)) or float(text) == value


def test_unusable_inputs_are_skipped_or_refused(checkpoints, wavs):
    vocoder = Vocoder.from_checkpoint(checkpoints["vocoder"])
    bad = np.full(4000, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_vocoder(vocoder, [("bad", bad), ("good", wavs[0])], progress=False)
    with pytest.warns(DataWarning, match="skipping bad"):
        result = evaluate_vocoder(vocoder, [("bad", bad), ("good", wavs[0])], skip_unusable=True, progress=False)
    assert [u.id for u in result.utterances] == ["good"] and [uid for uid, _ in result.skipped] == ["bad"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match="nothing to evaluate"):
            evaluate_vocoder(vocoder, [("bad", bad)], skip_unusable=True, progress=False)


# --------------------------------------------------------------------------------------------------- the command


def test_evaluate_command_prints_every_metric_for_both_systems(checkpoints, wavs, tmp_path, capsys):
    code, out, err = run(["evaluate", checkpoints["vocoder"], *wavs, "--no-progress", "--csv", tmp_path / "e.csv",
                          "--save-audio", tmp_path / "audio"], capsys)  # fmt: skip
    assert code == 0, err
    for m in METRICS:
        line = next(line for line in out.splitlines() if line.startswith(m.label))
        assert len(line.split()) >= 4, line  # label, model, Griffin-Lim, better
    assert "Griffin-Lim" in out and "utterances : 2" in out
    assert (tmp_path / "e.csv").is_file() and len(list((tmp_path / "audio").glob("*.wav"))) == 6


def test_evaluate_command_json_and_na(checkpoints, tmp_path, capsys):
    short = write_wav(tmp_path / "short.wav", syllables(200.0, int(0.3 * RATE)), RATE)  # under STOI's 0.4 s
    code, out, err = run(["evaluate", checkpoints["vocoder"], short, "--no-progress"], capsys)
    assert code == 0, err
    assert next(line for line in out.splitlines() if line.startswith("STOI")).split()[1:3] == ["n/a", "n/a"]
    code, out, err = run(["evaluate", checkpoints["vocoder"], short, "--no-progress", "--json"], capsys)
    assert code == 0, err
    facts = json.loads(out)
    assert facts["n_utterances"] == 1 and facts["step"] == 4
    assert set(facts["model"]) == set(NAMES) and facts["model"]["stoi"] is None


def test_evaluate_command_reads_a_corpus_split_with_the_run_fractions(checkpoints, tmp_path, capsys):
    write_corpus(tmp_path / "corpus", n=8, seconds=0.5)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "cache").mkdir()
    ckpt = run_dir / "checkpoints" / "best.pt"
    ckpt.write_bytes(checkpoints["vocoder"].read_bytes())
    (run_dir / "cache" / "manifest.json").write_text(json.dumps({"val_fraction": 0.5, "test_fraction": 0.0}))
    code, out, err = run(["evaluate", ckpt, "--data", tmp_path / "corpus", "--no-progress", "--json",
                          "--max-utterances", "2", "--max-seconds", "0.2"], capsys)  # fmt: skip
    assert code == 0, err
    facts = json.loads(out)
    expected = [u.id for u in corpus_utterances(tmp_path / "corpus", "val", 0.5, 0.0)][:2]
    assert [u["id"] for u in facts["utterances"]] == expected
    assert "val 0.5, test 0 from manifest" in facts["inputs"]


def test_evaluate_command_says_which_split_it_assumes_without_a_run_directory(checkpoints, tmp_path, capsys):
    write_corpus(tmp_path / "corpus", n=4, seconds=0.5)
    code, out, err = run(["evaluate", checkpoints["vocoder"], "--data", tmp_path / "corpus", "--no-progress", "--json",
                          "--max-seconds", "0.2"], capsys)  # fmt: skip
    assert code == 0, err
    assert "no cache manifest" in err and "val fraction 0.02" in err
    expected = [u.id for u in corpus_utterances(tmp_path / "corpus", "val", 0.02, 0.02)]
    assert [u["id"] for u in json.loads(out)["utterances"]] == expected


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([], "nothing to evaluate"),
        (["WAV", "--data", "CORPUS"], "not both"),
        (["missing.wav"], "audio file not found"),
        (["WAV", "--val-fraction", "0.1"], "--data only"),
        (["WAV", "--csv", "DIR"], "is a directory"),
    ],
)
def test_evaluate_command_errors_are_one_line(checkpoints, wavs, tmp_path, capsys, extra, match):
    write_corpus(tmp_path / "corpus", n=3)
    names = {"CORPUS": tmp_path / "corpus", "WAV": wavs[0], "DIR": tmp_path, "missing.wav": tmp_path / "missing.wav"}
    code, out, err = run(["evaluate", checkpoints["vocoder"], *(names.get(e, e) for e in extra)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("wavenet-dilated: error:") and len(err.strip().splitlines()) == 1 and match in err


def test_evaluate_command_refuses_an_unconditioned_model(checkpoints, wavs, capsys):
    code, _, err = run(["evaluate", checkpoints["plain"], wavs[0], "--no-progress"], capsys)
    assert code == 2 and "not a vocoder" in err and len(err.strip().splitlines()) == 1


def test_evaluate_command_names_the_extra_when_a_metric_library_is_missing(checkpoints, wavs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pesq", None)
    code, out, err = run(["evaluate", checkpoints["vocoder"], wavs[0]], capsys)
    assert code == 2 and out == ""
    assert err.strip() == ("wavenet-dilated: error: the copy-synthesis metrics need 'pesq', which is not installed: "
                           'pip install -e ".[eval]"')


# --------------------------------------------------------------------------------------------------- trained vs not


def _fit(steps: int) -> tuple[WaveNet, MelStats]:
    """The test vocoder trained ``steps`` Adam steps on syllables at six pitches (crops of 40 frames)."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**NET, **VOCODER))
    audio = torch.from_numpy(np.stack([syllables(f, RATE, i) for i, f in enumerate((110, 147, 196, 262, 330, 392))]))
    raw = log_mel(audio, AUDIO)
    stats = MelStats.fit(list(raw))
    mel, target = stats.normalize(raw), mu_law_encode(audio, model.config.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crop = 40 * HOP
    starts = torch.randint(0, (RATE - crop) // HOP, (steps,), generator=torch.Generator().manual_seed(0))
    model.train()
    for start in starts.tolist():
        loss = model.loss(target[:, start * HOP : start * HOP + crop], mel[:, :, start : start + crop // HOP], None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), stats


@pytest.mark.slow
def test_a_trained_checkpoint_scores_better_than_an_untrained_one(tmp_path, capsys):
    held_out = [write_wav(tmp_path / f"held{i}.wav", syllables(f0, RATE, 10 + i), RATE)
                for i, f0 in enumerate((165.0, 294.0))]  # pitches between the training ones
    means = {}
    for name, steps in (("untrained", 0), ("trained", 300)):
        model, stats = _fit(steps)
        model.save(tmp_path / f"{name}.pt", audio_config=AUDIO.to_dict(), mel_stats=stats.to_dict(), step=steps)
        code, out, err = run(["evaluate", tmp_path / f"{name}.pt", *held_out, "--no-progress", "--json"], capsys)
        assert code == 0, err
        means[name] = json.loads(out)["model"]
    assert means["trained"]["mel_l1"] < means["untrained"]["mel_l1"]
    assert means["trained"]["mcd_db"] < means["untrained"]["mcd_db"]
    assert means["trained"]["stoi"] > means["untrained"]["stoi"]
