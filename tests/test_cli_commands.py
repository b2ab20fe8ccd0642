"""End-to-end tests of ``wavenet-dilated rf``, ``info``, ``bench``, ``train --help`` and every command's help, on tiny
checkpoints trained in the test, and of the command line's runtime settings (``sample``: test_cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import wavenet_dilated.cli as cli_module
from tests._cli import NET, RATE, make_checkpoints, run, script, subparsers
from wavenet_dilated.cli import COMMANDS, build_parser, cli
from wavenet_dilated.cli import train as train_command
from wavenet_dilated.nn.dilation import compare_standard_dilated
from wavenet_dilated.wavenet import WaveNet


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"))


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


def test_bench_is_wired_to_run_bench(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.ModuleType("wavenet_dilated.bench")
    fake.run_bench = lambda **kwargs: calls.append(kwargs) or {"rows": [{"preset": "demo", "samples_per_s": 1.5}]}
    fake.format_table = lambda result: f"TABLE {result['rows'][0]['preset']}"
    monkeypatch.setitem(sys.modules, "wavenet_dilated.bench", fake)
    code, stdout, _ = run(["bench", "--quick", "--preset", "demo", "--preset", "small", "--device", "cpu"], capsys)
    assert code == 0 and stdout.strip() == "TABLE demo"
    assert calls == [{"presets": ["demo", "small"], "quick": True, "device": "cpu"}]
    code, stdout, _ = run(["bench", "--json"], capsys)
    from wavenet_dilated.runtime import RUNTIME_ENV

    settings = {k: os.environ.get(k) for k in RUNTIME_ENV}  # the runtime settings the numbers were measured under
    assert json.loads(stdout) == {"rows": [{"preset": "demo", "samples_per_s": 1.5}], "runtime_env": settings}
    assert calls[-1] == {"quick": False}  # run_bench's own defaults for what was not asked
    code, stdout, _ = run(["bench", "--checkpoint", "a.pt", "--batch", "2", "--precision", "bf16", "--no-naive",
                           "--baseline", "main.json", "--json", str(tmp_path / "out.json")], capsys)
    assert code == 0 and stdout.strip() == "TABLE demo"  # --json FILE: the table here, the JSON there
    assert json.loads((tmp_path / "out.json").read_text())["rows"][0]["preset"] == "demo"
    assert calls[-1] == {"quick": False, "checkpoints": [Path("a.pt")], "batches": [2], "precision": "bf16",
                         "naive": False, "baseline": Path("main.json")}


def test_bench_real_run_bench_json_and_table(monkeypatch, capsys):
    """The real run_bench and format_table through the CLI, trimmed to a few seconds (the full --quick run is the slow
    test below)."""
    import functools

    import wavenet_dilated.bench as bench

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
    code, stdout, _ = run(["bench", "--quick", "--json", "--preset", "demo"], capsys)
    assert code == 0
    assert "demo" in json.loads(stdout)["presets"]


# ------------------------------------------------------------------------------------------------ help



def test_every_command_documents_every_flag(capsys):
    parser = build_parser()
    commands = subparsers(parser)
    assert set(commands) == set(COMMANDS) >= {"sample", "vocode", "rf", "bench", "info", "train"}
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



def test_train_command_takes_the_recipes_flags_with_the_same_defaults(capsys):
    from recipes.train_ljspeech import build_parser as recipe_parser

    def options(parser: argparse.ArgumentParser) -> dict[str, object]:
        return {o: (a.dest, a.default, a.const, a.choices, a.nargs, a.type) for a in parser._actions
                for o in a.option_strings}

    train = subparsers(build_parser())["train"]
    assert options(train) == options(recipe_parser())
    code, stdout, _ = run(["train", "--help"], capsys)
    assert code == 0
    for option in options(recipe_parser()):
        assert option in stdout
    assert train.parse_args([]).preset == "ljspeech" and train.parse_args([]).resume is True


def test_train_help_through_the_console_script():
    proc = subprocess.run([script(), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: wavenet-dilated train")
    for action in train_command.build_parser("x")._actions:
        for option in action.option_strings:
            assert option in proc.stdout


def test_importing_the_runtime_module_or_the_command_line_imports_no_torch():
    for module in ("wavenet_dilated.runtime", "wavenet_dilated.cli"):
        code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (module, proc.stderr[-2000:])


def test_closed_stdout_ends_quietly_with_the_sigpipe_status():
    # `wavenet-dilated rf ... | head -1`: the reader is gone before the output is written. Python ignores SIGPIPE, so
    # the write raises BrokenPipeError; the command must end with 128 + SIGPIPE and print nothing (no traceback, no
    # "error:" line, no failed flush at exit).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([script(), "rf", "--compare", "--layers", "6"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == cli_module.EXIT_BROKEN_PIPE == 141
    assert proc.stderr == ""


# ------------------------------------------------------------------------------------------------ train: loose ends


def test_missing_corpus_is_reported_by_rank_0_alone(monkeypatch, tmp_path, capsys):
    """Under torchrun every rank stops before the rendezvous, but only rank 0 prints why (not once per rank)."""
    argv = ["train", "--data-dir", str(tmp_path / "no-corpus"), "--out-dir", str(tmp_path / "run")]
    monkeypatch.setenv("RANK", "1")
    code, stdout, err = run(argv, capsys)
    assert code == 2 and stdout == "" and err == ""
    monkeypatch.setenv("RANK", "0")
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "no-corpus" in err and "--download" in err
    assert not (tmp_path / "run").exists()


def test_offline_download_is_one_line(monkeypatch, tmp_path, capsys):
    """No network: ``train --download`` says so in one line (the reason, what was kept, the way by hand), and the
    library raises an OSError with the same message and no chained traceback."""
    import socket
    import urllib.error
    import urllib.request

    from wavenet_dilated.data.download import download_ljspeech

    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, _, err = run(["train", "--download", "--data-dir", str(tmp_path / "data"), "--out-dir",
                        str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("wavenet-dilated: error: cannot download https://")
    assert "Name or service not known (no network connection?)" in err and "LJSpeech-1.1.tar.bz2" in err
    with pytest.raises(OSError, match="nothing was written; rerun when the network is back") as info:
        download_ljspeech(tmp_path / "lib", progress=False)
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_training_without_tensorboard_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    """tensorboard is the ``train`` extra: training without it stops before writing anything, with one line naming
    the extra (rank 0 only under torchrun); the trainer's writer raises the same hint."""
    import importlib.util

    from wavenet_dilated.train.monitor import Monitor

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    argv = ["train", "--preset", "demo", "--out-dir", str(tmp_path / "run"), "--max-steps", "1"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install 'wavenet_dilated[train]'" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "1")
    assert run(argv, capsys)[1:] == ("", "")
    monkeypatch.delenv("RANK")
    assert train_command.main(argv[1:]) == 2 and "wavenet_dilated[train]" in capsys.readouterr().err  # the recipe
    with pytest.raises(ModuleNotFoundError, match=r"wavenet_dilated\[train\]") as info:
        Monitor(tmp_path / "m", None, None).writer(0)
    assert info.value.name == "tensorboard"
