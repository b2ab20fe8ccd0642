"""What a hostile but fair user types at ``wavenet-dilated rf``, ``sample`` and ``info`` (issue 12, defects 5, 7 and 8):
sizes far beyond any machine, files that are not what a flag expects, an output that is an input. Each gets one line
and exit status 2, or an instant answer; none a traceback, a hang or an allocation it cannot hold.

The ``rf`` size cases run in one child process (:func:`rf_answers`) with a cap on its address space and a wall-clock
limit, so that code which sizes an array by the receptive field fails these tests within a minute instead of filling the
machine or hanging in a C loop that no signal interrupts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._cli import HOP, N_MELS, RATE, make_checkpoints, run, tone
from wavenet_dilated.audio import save_audio
from wavenet_dilated.cli.sample import MAX_ABS_MEL

#: what the ``rf`` child may map beyond what it holds once the package is imported: far less than any
#: receptive-field-sized array of the stacks below (the smallest, --layers 25, would need 512 MiB of int64 counts)
EXTRA_ADDRESS_SPACE = 256 * 2**20
#: wall-clock limit of the whole ``rf`` child: start-up plus instant answers, with room for a loaded machine
RF_CHILD_SECONDS = 90
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"))


def one_error_line(code: int, stdout: str, stderr: str) -> str:
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavenet-dilated: error: "), stderr
    assert "Traceback" not in stdout + stderr
    return lines[0]


def fail_if_generating(*args, **kwargs):
    raise AssertionError("generation started: the request should have been refused before anything was allocated")


# ------------------------------------------------------------------------------------------------ rf: any size

RF_INSTANT = {
    "layers 25": (["--layers", "25"], "67108863 samples"),
    "layers 100": (["--layers", "100"], "about 2.54 x 10^30 samples"),
    "kernel 1e6": (["--kernel", "1000000", "--layers", "3"], "6999994 samples"),
    "stacks 1e9": (["--stacks", "1000000000", "--layers", "2"], "6000000001 samples"),
    "gridded stacks 1e9": (["--dilations", "2,2,2", "--stacks", "1000000000"], "12000000001 samples"),
    "all huge": (["--layers", "4096", "--kernel", "1000000", "--stacks", str(10**15), "--channels", str(10**8)],
                 "about 1.04 x 10^1254 samples"),
}
RF_MEASURE_REFUSED = {
    "layers 30": (["--layers", "30", "--measure"], "2.1 TiB"),
    "2D layers 12": (["--layers", "12", "--dims", "2", "--measure"], "18.5 GiB"),
    "stacks 1e9": (["--layers", "2", "--stacks", "1000000000", "--measure"], "333.1 EiB"),
}
RF_OTHER = {
    "too large to count": ["--dilations", "1,1000000000000"],
    "compare 6000 layers": ["--layers", "3", "--stacks", "2000", "--compare"],
    "layers 5000": ["--layers", "5000"],
}
_CHILD = """
import contextlib, io, json, os, resource, sys
from wavenet_dilated.cli import build_parser, cli
build_parser()  # imports every command, torch included: the cap is on what the cases allocate
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_AS)[1]))
for name, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli(argv)
        except BaseException as exc:  # reported to the test, which fails on it
            code = f"{type(exc).__name__}: {exc}"
    print(json.dumps([name, code, out.getvalue(), err.getvalue()]), flush=True)
"""


@pytest.fixture(scope="module")
def rf_answers() -> dict[str, tuple[int | str, str, str]]:
    """``name -> (exit status or the exception, stdout, stderr)`` of every ``rf`` case above, run in one bounded child;
    a case missing from it did not finish (the limits stopped the child)."""
    cases = {f"instant {k}": ["rf", *v[0]] for k, v in RF_INSTANT.items()}
    cases |= {f"measure {k}": ["rf", *v[0]] for k, v in RF_MEASURE_REFUSED.items()}
    cases |= {k: ["rf", *v] for k, v in RF_OTHER.items()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", _CHILD, json.dumps(cases), str(EXTRA_ADDRESS_SPACE)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=RF_CHILD_SECONDS, cwd=REPO, env=env)
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = (expired.stdout or b"").decode(), f"killed after {RF_CHILD_SECONDS} s"
    answers = {}
    for line in stdout.splitlines():
        name, code, out, err = json.loads(line)
        answers[name] = (code, out, err)
    answers["child stderr"] = (0, "", stderr[-2000:])
    return answers


def rf_answer(answers: dict, name: str) -> tuple[int | str, str, str]:
    if name not in answers:
        pytest.fail(f"rf case {name!r} did not finish: {answers['child stderr'][2]}")
    return answers[name]


@pytest.mark.parametrize("name", list(RF_INSTANT))
def test_rf_receptive_field_parameters_hdc_and_coverage_are_instant_for_any_size(name, rf_answers):
    code, stdout, stderr = rf_answer(rf_answers, f"instant {name}")
    assert code == 0, (code, stderr)
    assert f"receptive field   : {RF_INSTANT[name][1]}" in stdout
    assert "parameters        : " in stdout and "HDC (Wang et al.) : " in stdout
    assert "gridding coverage : " in stdout and "not counted" not in stdout


def test_rf_coverage_of_a_gridded_stack_of_any_size_with_a_common_factor(rf_answers):
    code, stdout, _ = rf_answer(rf_answers, "instant gridded stacks 1e9")
    assert code == 0
    assert "gridding coverage : 50.0% of the offsets" in stdout  # every even offset: 6,000,000,001 of 12,000,000,001


def test_rf_gridded_stack_too_large_to_count_says_how_much_it_would_need(rf_answers):
    code, stdout, stderr = rf_answer(rf_answers, "too large to count")
    assert code == 0, (code, stderr)
    assert "receptive field   : 2000000000003 samples" in stdout
    line = next(line for line in stdout.splitlines() if line.startswith("gridding coverage"))
    assert "not counted" in line and "2,000,000,000,003 offsets" in line and "232.8 GiB" in line, line
    assert "HDC (Wang et al.) : NOT valid" in stdout


@pytest.mark.parametrize("name", list(RF_MEASURE_REFUSED))
def test_rf_measure_refuses_in_one_line_saying_what_it_would_need(name, rf_answers):
    line = one_error_line(*rf_answer(rf_answers, f"measure {name}"))
    needs = RF_MEASURE_REFUSED[name][1]
    assert "--measure" in line and "too large" in line and needs in line and "4.0 GiB" in line, line


def test_rf_compare_and_layers_state_their_bounds(rf_answers):
    line = one_error_line(*rf_answer(rf_answers, "compare 6000 layers"))
    assert "at most 4,096 layers" in line and "6,000" in line
    line = one_error_line(*rf_answer(rf_answers, "layers 5000"))
    assert "[1, 4096]" in line and "5000" in line


# ------------------------------------------------------------------------------------------------ sample: sizes


@pytest.mark.parametrize("seconds", ["1e9", "1e308"])
def test_sample_refuses_a_length_it_cannot_hold_before_allocating(seconds, ckpts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fail_if_generating)
    line = one_error_line(*run(["sample", ckpts["plain"], "--seconds", seconds, "-o", tmp_path / "o.wav"], capsys))
    assert f"--seconds {float(seconds):g}" in line and "of memory" in line and "available" in line, line
    assert not (tmp_path / "o.wav").exists()


def test_sample_refuses_a_batch_beyond_the_memory_cap(ckpts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fail_if_generating)
    monkeypatch.setattr("wavenet_dilated.cli.sample.available_memory", lambda: 64 * 2**20)
    line = one_error_line(*run(["sample", ckpts["plain"], "--seconds", "0.01", "--batch", "100000",
                                "-o", tmp_path / "o.wav"], capsys))
    assert "--batch 100000" in line and "51.2 MiB" in line and "80% of the 64.0 MiB available" in line, line
    line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel-from", tmp_path / "missing.wav", "--batch",
                                str(10**12), "-o", tmp_path / "o.wav"], capsys))
    assert "--batch 1000000000000" in line and "PiB" in line, line  # refused before 10^12 output names are made
    assert list(tmp_path.iterdir()) == []


def test_sample_within_the_cap_still_runs(ckpts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("wavenet_dilated.cli.sample.available_memory", lambda: 64 * 2**20)
    code, _, stderr = run(["sample", ckpts["plain"], "--seconds", "0.01", "--batch", "2", "--seed", "1", "--no-progress",
                           "-o", tmp_path / "o.wav"], capsys)
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o_0.wav", "o_1.wav"]


# ------------------------------------------------------------------------------------------------ sample: files


@pytest.mark.parametrize("value", [1e30, -1e30, MAX_ABS_MEL * 1.5])
def test_sample_refuses_a_mel_of_absurd_magnitude(value, ckpts, tmp_path, capsys, monkeypatch):
    mel = np.zeros((N_MELS, 20), dtype=np.float32)
    mel[3, 7] = value
    np.save(tmp_path / "mel.npy", mel)
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fail_if_generating)
    for extra in ([], ["--normalize-mel"]):
        line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel", tmp_path / "mel.npy", *extra,
                                    "-o", tmp_path / "o.wav"], capsys))
        assert "mel.npy" in line and f"{abs(value):.3g}" in line and "+-1000" in line, line


def test_sample_takes_a_mel_at_the_edge_of_the_bound(ckpts, tmp_path, capsys):
    mel = np.zeros((N_MELS, 4), dtype=np.float32)
    mel[0, 0] = -MAX_ABS_MEL
    np.save(tmp_path / "mel.npy", mel)
    # --force-mel: the bound on values is what is tested, not the check that a mel looks normalised
    code, _, stderr = run(["sample", ckpts["vocoder"], "--mel", tmp_path / "mel.npy", "--seed", "0", "--no-progress",
                           "--force-mel", "-o", tmp_path / "o.wav"], capsys)
    assert code == 0, stderr


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "hard link", "symlink"])
def test_sample_never_overwrites_its_input_recording(spelling, ckpts, tmp_path, capsys, monkeypatch):
    recording = tmp_path / "in.wav"
    save_audio(recording, tone(220.0, 10 * HOP), RATE)
    before = recording.read_bytes()
    output = {"same": recording, "dot-slash": tmp_path / "." / "in.wav", "hard link": tmp_path / "link.wav",
              "symlink": tmp_path / "sym.wav"}[spelling]
    if spelling == "hard link":
        os.link(recording, output)
    elif spelling == "symlink":
        output.symlink_to(recording)
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fail_if_generating)
    line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel-from", recording, "-o", output], capsys))
    assert "is the input --mel-from" in line and "destroy" in line, line
    assert recording.read_bytes() == before


def test_sample_never_overwrites_its_checkpoint_or_mel(ckpts, tmp_path, capsys, monkeypatch):
    mel = tmp_path / "mel.wav"  # a .npy under a name soundfile can write: only the same-file rule stops it
    with open(mel, "wb") as f:
        np.save(f, np.zeros((N_MELS, 4), dtype=np.float32))
    before = mel.read_bytes()
    monkeypatch.setattr("wavenet_dilated.generation.fast.fast_generate", fail_if_generating)
    line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel", mel, "-o", mel], capsys))
    assert "is the input --mel" in line
    assert mel.read_bytes() == before
    copy = tmp_path / "plain.wav"
    copy.write_bytes(ckpts["plain"].read_bytes())
    line = one_error_line(*run(["sample", copy, "--seconds", "0.01", "-o", copy], capsys))
    assert "is the input CHECKPOINT" in line


def test_mel_that_is_not_a_npy_file_says_so(ckpts, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("these are not mel frames\n")
    save_audio(tmp_path / "speech.wav", tone(220.0, 10 * HOP), RATE)
    (tmp_path / "empty.npy").write_bytes(b"")
    for name, looks in (("notes.txt", "text"), ("speech.wav", "WAV file"), ("empty.npy", "empty file")):
        line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel", tmp_path / name, "-o", tmp_path / "o.wav"],
                                   capsys))
        assert "not a .npy array" in line and looks in line and "pickled" not in line, line
    line = one_error_line(*run(["sample", ckpts["vocoder"], "--mel", tmp_path, "-o", tmp_path / "o.wav"], capsys))
    assert "is a directory" in line


# ------------------------------------------------------------------------------------------------ messages


def test_seed_beyond_64_bits_names_the_range(ckpts, tmp_path, capsys):
    line = one_error_line(*run(["sample", ckpts["plain"], "--seconds", "0.01", "--seed", str(2**70),
                                "-o", tmp_path / "o.wav"], capsys))
    assert "--seed" in line and "[0, 2**63 - 1]" in line and str(2**70) in line and "Overflow" not in line, line
    code, stdout, stderr = run(["sample", ckpts["plain"], "--seconds", "0.01", "--seed", str(2**63 - 1),
                                "--no-progress", "-o", tmp_path / "o.wav"], capsys)
    assert code == 0, stderr
    assert f"seed {2**63 - 1}" in stdout


@pytest.mark.parametrize("command", [["sample", "{dir}", "--seconds", "0.01", "-o", "{dir}/o.wav"], ["info", "{dir}"],
                                     ["rf", "--checkpoint", "{dir}"]], ids=["sample", "info", "rf"])
def test_a_directory_given_as_a_checkpoint_says_it_is_a_directory(command, ckpts, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(ckpts["plain"].read_bytes())
    line = one_error_line(*run([a.format(dir=run_dir) for a in command], capsys))
    assert "is a directory, not a checkpoint file" in line and "not found" not in line, line
    assert str(run_dir / "checkpoints" / "best.pt") in line  # the file it probably meant


@pytest.mark.parametrize("command", [["info", "{ckpt}"], ["info", "{ckpt}", "--json"], ["rf", "--checkpoint", "{ckpt}"],
                                     ["sample", "{ckpt}", "--seconds", "0.01", "-o", "{tmp}/o.wav"]],
                         ids=["info", "info json", "rf", "sample"])
def test_a_stored_sample_rate_of_minus_5_is_reported_invalid(command, ckpts, tmp_path, capsys):
    ckpt = torch.load(ckpts["plain"], weights_only=True)
    ckpt["audio_config"]["sample_rate"] = -5
    torch.save(ckpt, tmp_path / "negative.pt")
    argv = [a.format(ckpt=tmp_path / "negative.pt", tmp=tmp_path) for a in command]
    code, stdout, stderr = run(argv, capsys)
    line = one_error_line(code, stdout, stderr)
    assert "audio_config is invalid" in line and "sample_rate" in line and "-5" in line, line
    assert "-5 Hz" not in stdout
