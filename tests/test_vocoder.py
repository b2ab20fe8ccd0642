"""The vocoder object and the fast default generator: same samples as the reference and as the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wavenet_dilated as wd
from tests._cli import AUDIO, RATE, make_checkpoints, read, run, tone
from tests._corpus import write_wav
from wavenet_dilated.audio import save_audio
from wavenet_dilated.cli.sample import OUTPUT_SUBTYPE
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation.batch import RowUniforms, generate_rows
from wavenet_dilated.generation.reference import UniformStream
from wavenet_dilated.vocoder import Vocoder, load_vocoder


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("vocoder_ckpts"))


@pytest.fixture(scope="module")
def vocoder(ckpts):
    return load_vocoder(ckpts["vocoder"])


def test_default_generate_equals_the_reference_for_a_seed(ckpts):
    model = wd.WaveNet.from_checkpoint(ckpts["vocoder"])
    model.remove_weight_norm()
    mel = torch.randn(2, AUDIO.n_mels, 6)
    fast = wd.generate(model, mel=mel, seed=11)
    assert wd.generate is wd.fast_generate
    assert torch.equal(fast, wd.reference_generate(model, mel=mel, seed=11))
    assert torch.equal(fast, wd.generate(model, mel=mel, seed=11, backend="reference"))
    assert not torch.equal(fast, wd.generate(model, mel=mel, seed=12))


def test_row_uniforms_equal_one_row_streams():
    seeds = [3, 5, 3]
    rows = RowUniforms(2, [G._make_generator(s, None) for s in seeds])
    got = torch.cat([rows.take(n) for n in (7, G.UNIFORM_BLOCK, 100)])
    for i, s in enumerate(seeds):
        alone = UniformStream(1, 2, G._make_generator(s, None))
        want = torch.cat([alone.take(n) for n in (G.UNIFORM_BLOCK + 7, 100)])
        assert torch.equal(got[:, i : i + 1], want)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_rows_of_different_lengths_equal_one_at_a_time(vocoder, backend):
    model = vocoder.model
    torch.manual_seed(0)
    mels = [torch.randn(AUDIO.n_mels, f) for f in (5, 9, 3, 9)]
    got = generate_rows(model, mels, [7, 7, 7, 8], backend=backend)
    for mel, seed, row in zip(mels, [7, 7, 7, 8], got):
        alone = wd.generate(model, mel=mel[None], seed=seed, backend=backend)[0]
        assert row.shape == alone.shape == (mel.shape[1] * AUDIO.hop_length,)
        assert torch.equal(row, alone)


def test_vocode_many_equals_vocoding_each_alone(vocoder):
    torch.manual_seed(1)
    mels = [torch.randn(AUDIO.n_mels, f) for f in (4, 8, 6)]
    many = vocoder.vocode_many(mels, seed=3, batch_size=2)
    for mel, wave in zip(mels, many):
        assert torch.equal(wave, vocoder(mel, seed=3))
        assert wave.dtype == torch.float32 and float(wave.abs().max()) <= 1.0


def test_mel_is_the_training_feature(vocoder, ckpts, tmp_path):
    from wavenet_dilated.checkpoint import load_checkpoint
    from wavenet_dilated.mel import MelStats, log_mel

    audio = tone(330.0, 13 * AUDIO.hop_length + 5)
    path = write_wav(tmp_path / "a.wav", audio, sr=RATE, subtype="FLOAT")
    stats = MelStats.from_dict(load_checkpoint(ckpts["vocoder"])["mel_stats"])
    prepared = audio[: 13 * AUDIO.hop_length]  # cut to whole hops; the tone's peak is 0.5, no normalisation here
    want = stats.normalize(log_mel(torch.from_numpy(prepared), AUDIO))
    assert torch.equal(vocoder.mel(path), want)
    assert torch.equal(vocoder.mel(audio), want)  # an array at the vocoder's rate
    assert vocoder.mel(path).shape == (AUDIO.n_mels, 13)


def test_vocode_equals_the_cli_with_the_same_seed(vocoder, ckpts, tmp_path, capsys):
    path = write_wav(tmp_path / "in.wav", tone(440.0, 10 * AUDIO.hop_length), sr=RATE)
    wave, rate = vocoder.vocode(path, seed=5)
    out = tmp_path / "out.wav"
    code, _, err = run(["sample", ckpts["vocoder"], "--mel-from", path, "-o", out, "--seed", 5, "--no-progress"],
                       capsys)
    assert code == 0, err
    written, written_rate = read(out)
    assert rate == written_rate == RATE
    api = save_audio(tmp_path / "api.wav", wave.numpy(), rate, subtype=OUTPUT_SUBTYPE)  # the CLI's writer
    assert np.array_equal(read(api)[0], written)
    assert len(written) == 10 * AUDIO.hop_length


@pytest.fixture(scope="module")
def named_speakers(ckpts, tmp_path_factory):
    """The speaker checkpoint with names stored, as the trainer writes them."""
    from wavenet_dilated.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(ckpts["speakers"])
    path = tmp_path_factory.mktemp("named") / "named.pt"
    save_checkpoint(path, {**ckpt, "speakers": ["alice", "bob", "carol"]})
    return path


def test_speakers_by_name_and_id(ckpts, named_speakers, tmp_path, capsys):
    from wavenet_dilated.vocoder import resolve_speaker

    names = ["alice", "bob", "carol"]
    assert [resolve_speaker(s, 3, names) for s in ("bob", 2, "0")] == [1, 2, 0]
    with pytest.raises(ValueError, match="unknown speaker 'dave'; this model knows alice, bob, carol"):
        resolve_speaker("dave", 3, names)
    with pytest.raises(ValueError, match="out of range"):
        resolve_speaker(3, 3, names)
    assert resolve_speaker("19", 2, ["26", "19"]) == 1  # a numeric name is a name before it is an id
    assert resolve_speaker("0", 2, ["26", "19"]) == 0
    with pytest.raises(ValueError, match="no speaker conditioning"):
        resolve_speaker("alice", None, None)
    with pytest.raises(ValueError, match="choose a speaker"):
        resolve_speaker(None, 3, names)
    # the CLI: a name and its id give the same file; an unknown name is one line listing the known ones
    by_name, by_id = tmp_path / "name.wav", tmp_path / "id.wav"
    for out, spk in ((by_name, "carol"), (by_id, "2")):
        code, _, err = run(["sample", named_speakers, "--seconds", "0.01", "--speaker", spk, "--seed", 3, "-o", out,
                            "--no-progress"], capsys)
        assert code == 0, err
    assert np.array_equal(read(by_name)[0], read(by_id)[0])
    code, _, err = run(["sample", named_speakers, "--seconds", "0.01", "--speaker", "dave", "-o", tmp_path / "x.wav"],
                       capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown speaker 'dave'; this model knows alice, bob, carol" in err
    model = wd.WaveNet.from_checkpoint(ckpts["speakers"])
    with pytest.raises(ValueError, match="mel-conditioned"):
        Vocoder(model)


def test_an_unnormalised_mel_is_refused_with_the_fix(ckpts, tmp_path, capsys):
    from wavenet_dilated.checkpoint import load_checkpoint
    from wavenet_dilated.mel import MelStats, log_mel

    stats = MelStats.from_dict(load_checkpoint(ckpts["vocoder"])["mel_stats"])
    raw = log_mel(torch.from_numpy(tone(440.0, 8 * AUDIO.hop_length)), AUDIO).numpy()
    assert abs(raw.mean()) > 2.5  # the premise: a raw log-mel of this tiny config is far from zero mean
    np.save(tmp_path / "raw.npy", raw)
    argv = ["sample", ckpts["vocoder"], "--mel", tmp_path / "raw.npy", "--seed", 1, "--no-progress"]
    code, _, err = run([*argv, "-o", tmp_path / "a.wav"], capsys)
    assert code == 2 and "does not look normalised" in err and "--normalize-mel" in err and "Traceback" not in err
    assert not (tmp_path / "a.wav").exists()
    assert run([*argv, "--normalize-mel", "-o", tmp_path / "b.wav"], capsys)[0] == 0
    assert run([*argv, "--force-mel", "-o", tmp_path / "c.wav"], capsys)[0] == 0
    np.save(tmp_path / "norm.npy", stats.normalize(raw))
    assert run(["sample", ckpts["vocoder"], "--mel", tmp_path / "norm.npy", "--seed", 1, "--no-progress", "-o",
                tmp_path / "d.wav"], capsys)[0] == 0
    assert np.array_equal(read(tmp_path / "b.wav")[0], read(tmp_path / "d.wav")[0])


def test_bad_inputs_are_one_line_errors(vocoder, ckpts, tmp_path):
    with pytest.raises(ValueError, match="unconditioned model, not a vocoder"):
        load_vocoder(ckpts["plain"])
    with pytest.raises(FileNotFoundError):
        vocoder.mel(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="NaN"):
        vocoder(torch.full((AUDIO.n_mels, 3), float("nan")))
    with pytest.raises(ValueError, match="bins"):
        vocoder(torch.zeros(AUDIO.n_mels + 1, 3))
    with pytest.raises(ValueError, match="floating point"):
        vocoder(torch.zeros(AUDIO.n_mels, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch_size"):
        vocoder.vocode_many([torch.zeros(AUDIO.n_mels, 3)], batch_size=0)


def test_a_model_in_memory_is_left_as_it_was(ckpts):
    model = wd.WaveNet.from_checkpoint(ckpts["vocoder"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Vocoder(model, AUDIO)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_mel_command_writes_the_features_sample_vocodes(vocoder, ckpts, tmp_path, capsys):
    rec = write_wav(tmp_path / "in" / "speech.wav", tone(440.0, 10 * AUDIO.hop_length), sr=RATE)
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF not really")
    code, out, err = run(["mel", ckpts["vocoder"], tmp_path / "in", tmp_path / "nothing.wav", "-o", tmp_path / "mels",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "wrote 1 mel (10 bins, 10 frames" in out and "skipped 2 bad inputs" in out
    assert err.count("skipped") == 2 and "broken.wav" in err and "nothing.wav" in err
    mel = np.load(tmp_path / "mels" / "speech.npy")
    assert mel.dtype == np.float32 and np.array_equal(mel, vocoder.mel(rec).numpy())
    # vocoding the written mel is vocoding the recording
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert run(["sample", ckpts["vocoder"], "--mel", tmp_path / "mels" / "speech.npy", "-o", a, "--seed", 2,
                "--no-progress"], capsys)[0] == 0
    assert run(["sample", ckpts["vocoder"], "--mel-from", rec, "-o", b, "--seed", 2, "--no-progress"], capsys)[0] == 0
    assert np.array_equal(read(a)[0], read(b)[0])
    # nothing readable: a one-line error and status 2; a checkpoint without features is refused before reading
    code, _, err = run(["mel", ckpts["vocoder"], tmp_path / "in" / "broken.wav", "-o", tmp_path / "m2"], capsys)
    assert code == 2 and "nothing written" in err
    code, _, err = run(["mel", ckpts["plain"], rec, "-o", tmp_path / "m3"], capsys)
    assert code == 2 and "unconditioned" in err


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_vocoding_is_the_quantised_model(vocoder, ckpts, precision, tmp_path, capsys):
    from wavenet_dilated.generation.precision import quantize_model

    torch.manual_seed(2)
    mels = [torch.randn(AUDIO.n_mels, f) for f in (3, 6)]
    reduced = load_vocoder(ckpts["vocoder"], precision=precision)
    quantised = quantize_model(reduced.model, precision)
    many = reduced.vocode_many(mels, seed=4)
    for mel, wave in zip(mels, many):
        want = wd.to_waveform(wd.reference_generate(quantised, mel=mel[None], seed=4), quantised)[0]
        assert torch.equal(wave, want.float())
    assert not all(torch.equal(a, b) for a, b in zip(many, vocoder.vocode_many(mels, seed=4)))
    np.save(tmp_path / "m.npy", mels[1].numpy())
    out = tmp_path / "o.wav"
    code, _, err = run(["sample", ckpts["vocoder"], "--mel", tmp_path / "m.npy", "--precision", precision, "--seed", 4,
                        "-o", out, "--no-progress"], capsys)
    assert code == 0, err
    api = save_audio(tmp_path / "api.wav", many[1].numpy(), RATE, subtype=OUTPUT_SUBTYPE)
    assert np.array_equal(read(api)[0], read(out)[0])
    with pytest.raises(ValueError, match="precision"):
        load_vocoder(ckpts["vocoder"], precision="fp16")
