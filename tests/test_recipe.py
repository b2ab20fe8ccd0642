"""Training as users run it, ``python -m recipes.train_ljspeech`` and ``wavenet-dilated train``: missing data, bad
--set, the runtime settings, kill -9 and resume, NaN stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes import train_ljspeech as recipe
from tests._corpus import write_corpus
from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.checkpoint import list_checkpoints, load_checkpoint
from wavenet_dilated.cli import cli
from wavenet_dilated.cli import train as train_command
from wavenet_dilated.train.config import TrainConfig
from wavenet_dilated.train.trainer import NonFiniteLossError
from wavenet_dilated.wavenet import WaveNet

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
#: a tiny model and 8 kHz audio through --set, so the real command line runs in seconds
TINY = [
    "audio.sample_rate=8000", "n_fft=256", "win_length=256", "hop_length=64", "n_mels=16", "fmin=0", "fmax=4000",
    "trim_top_db=None", "cond_channels=16", "upsample_scales=8,8", "n_layers=4", "n_stacks=2",
    "residual_channels=8", "gate_channels=16", "skip_channels=8", "batch_size=2", "max_time_steps=512",
    "warmup_steps=2", "val_every=None", "sample_seconds=0.02", "log_every=5",
]  # fmt: skip


def command(corpus: Path, out: Path, *extra: str, program: tuple[str, ...] = ("-m", "recipes.train_ljspeech")) -> list[str]:
    cmd = [sys.executable, *program, "--preset", "demo", "--data-dir", str(corpus), "--out-dir", str(out),
           "--no-progress", *extra]  # fmt: skip
    for item in TINY:
        cmd += ["--set", item]
    return cmd


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe_corpus")
    write_corpus(root, n=6, seconds=0.4, sr=SR)
    return root


# --- command line ---------------------------------------------------------------------------------------------------


def test_missing_dataset_prints_how_to_get_it_and_exits_nonzero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.train_ljspeech", "--data-dir", str(tmp_path / "nowhere"),
         "--out-dir", str(tmp_path / "run")],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no LJSpeech-format corpus" in proc.stderr and str(tmp_path / "nowhere") in proc.stderr
    assert "--download" in proc.stderr and "https://" in proc.stderr and "--preset demo" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_missing_dataset_through_the_command_is_one_line_naming_the_command(tmp_path, capsys):
    assert cli(["train", "--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("wavenet-dilated: error: no LJSpeech-format corpus")
    assert "wavenet-dilated train --download --data-dir" in err and "wavenet-dilated train --preset demo" in err
    assert "recipes" not in err and not (tmp_path / "run").exists()


def test_the_bundled_demo_corpus_is_package_data():
    demo = train_command.PRESETS["demo"]["data_dir"]
    assert demo == train_command.DEMO_CORPUS == ROOT / "wavenet_dilated" / "data" / "demo_corpus"
    assert (demo / "metadata.csv").is_file() and len(list((demo / "wavs").glob("*.wav"))) == 30
    assert recipe.PRESETS is train_command.PRESETS  # the recipe trains the package's presets


@pytest.mark.parametrize("main", [recipe.main, lambda argv: cli(["train", *argv])], ids=["recipe", "command"])
def test_unknown_set_key_names_it_and_lists_the_valid_ones(capsys, main):
    assert main(["--preset", "demo", "--set", "learning_rate=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rate'" in err and "lr" in err and "residual_channels" in err and "n_mels" in err
    assert len(err.strip().splitlines()) == 1


def test_command_divergence_is_status_1_and_interrupt_130_with_the_resume_hint(capsys, monkeypatch):
    def diverge(args, command):
        raise NonFiniteLossError(7, float("nan"), float("inf"), Path("run/checkpoints/ckpt_00000006.pt"))

    monkeypatch.setattr(train_command, "run", diverge)
    assert cli(["train", "--preset", "demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wavenet-dilated: error: training stopped at step 7: non-finite loss")

    def interrupt(args, command):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run", interrupt)
    assert cli(["train", "--preset", "demo"]) == 130
    assert capsys.readouterr().err == ("wavenet-dilated: interrupted; rerun the same command to resume from the last "
                                       "checkpoint\n")


@pytest.mark.parametrize(
    ("item", "message"),
    [("lr=fast", "expected float"), ("betas=0.9", "expected 2"), ("compile=maybe", "expected true or false"),
     ("optimizer=sgd", "TrainConfig.optimizer"), ("nokey", "key=value"), ("loss.lr=1", "unknown section")],
)  # fmt: skip
def test_bad_set_values_are_one_line_errors(capsys, item, message):
    assert recipe.main(["--preset", "demo", "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_set_converts_from_the_field_types():
    p = train_command.PRESETS["demo"]
    configs = {"model": p["model"], "train": p["train"], "audio": p["audio"]}
    out = train_command.apply_overrides(configs, ["lr=3e-4", "ema_decay=None", "betas=(0.8, 0.99)", "upsample_scales=8,32",
                                           "hop_length=256", "model.residual_channels=48", "amp=bf16",
                                           "compile=true", "trim_top_db=none"])  # fmt: skip
    t, m, a = out["train"], out["model"], out["audio"]
    assert isinstance(t, TrainConfig) and t.lr == 3e-4 and t.ema_decay is None and t.betas == (0.8, 0.99)
    assert t.amp == "bf16" and t.compile is True
    assert m.upsample_scales == (8, 32) and m.residual_channels == 48
    assert m.hop_length == a.hop_length == 256  # an unqualified key goes to every config that has it
    assert isinstance(a, AudioConfig) and a.trim_top_db is None
    assert p["train"].lr != 3e-4  # the presets themselves are untouched


# --- runtime settings -----------------------------------------------------------------------------------------------

#: runs MODULE as ``python -m`` does with ARGV (``--help``: it stops after parsing) and reports, as JSON on stderr, what
#: the environment held when torch was first imported and whether glibc now serves a 4 MiB block from the heap
_PROBE = """
import ctypes, json, os, runpy, sys
seen = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch" not in seen:
            seen["torch"] = {k: os.environ.get(k) for k in KEYS}
sys.meta_path.insert(0, Watch())
sys.argv = ARGV
try:
    runpy.run_module(MODULE, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblks
libc.malloc(4 << 20)
print(json.dumps({"at_torch_import": seen["torch"], "mmapped_4mib": libc.mallinfo2().hblks - before}), file=sys.stderr)
"""


def _glibc() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="the malloc check needs glibc >= 2.33 (mallinfo2)")
@pytest.mark.parametrize(
    ("module", "argv"),
    [("recipes.train_ljspeech", ["train_ljspeech", "--help"]),
     ("wavenet_dilated", ["wavenet-dilated", "train", "--help"])],  # python -m wavenet_dilated train
    ids=["recipe", "command"],
)  # fmt: skip
def test_training_applies_the_runtime_settings_before_torch_and_keeps_the_users(module, argv):
    import json

    from wavenet_dilated.runtime import RUNTIME_ENV

    probe = f"KEYS = {sorted(RUNTIME_ENV)!r}\nMODULE = {module!r}\nARGV = {argv!r}\n{_PROBE}"
    clean = {k: v for k, v in env().items() if k not in RUNTIME_ENV}
    for user, expected in [({}, RUNTIME_ENV), ({"OMP_WAIT_POLICY": "ACTIVE", "MALLOC_TOP_PAD_": "4096"},
                                                {**RUNTIME_ENV, "OMP_WAIT_POLICY": "ACTIVE", "MALLOC_TOP_PAD_": "4096"})]:
        proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**clean, **user}, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        assert report["at_torch_import"] == expected
        assert report["mmapped_4mib"] == 0  # glibc's default would mmap it (threshold 128 KiB): mallopt took effect


def test_importing_the_recipe_changes_no_environment():
    from wavenet_dilated.runtime import RUNTIME_ENV

    clean = {k: v for k, v in env().items() if k not in RUNTIME_ENV}
    code = "import os, recipes.train_ljspeech; print(sorted(k for k in os.environ if k.startswith(('OMP_W', 'MALLOC'))))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-3000:]


# --- kill -9 and resume -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint_with_the_same_command(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = command(corpus, out, "--max-steps", "60", "--set", "checkpoint_every=5", "--set", "keep_last=50")
    first = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while not list_checkpoints(out / "checkpoints"):
            assert first.poll() is None, "the first run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = [s for s, _ in list_checkpoints(out / "checkpoints")]
    assert steps and steps[-1] < 60, f"the run finished before it was killed: {steps}"
    killed_at = steps[-1]
    log_before = (out / "train.log").read_text()

    second = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    log = (out / "train.log").read_text()[len(log_before) :]
    assert f"resumed from {out / 'checkpoints' / f'ckpt_{killed_at:08d}.pt'} at step {killed_at}" in log
    assert f"training steps {killed_at} → 60" in log
    steps_after = [s for s, _ in list_checkpoints(out / "checkpoints")]
    assert steps_after == [*range(5, 61, 5)]
    assert load_checkpoint(out / "checkpoints" / "ckpt_00000060.pt")["step"] == 60
    assert "wrote sample" in second.stdout
    wav = Path(second.stdout.strip().splitlines()[-1].removeprefix("wrote sample "))
    assert wav.is_file() and wav.parent == out / "samples"
    WaveNet.from_checkpoint(out / "checkpoints" / "ckpt_00000060.pt")  # usable for sampling

    again = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stderr  # a finished run stays finished


@pytest.mark.slow
def test_diverging_run_stops_with_a_clear_message_and_keeps_a_good_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    good = command(corpus, out, "--max-steps", "2", "--set", "checkpoint_every=1")
    assert subprocess.run(good, cwd=ROOT, env=env(), capture_output=True, timeout=300).returncode == 0
    # resumed with an absurd learning rate (applied on resume): Adam moves every weight by ~1e30 in step 3; those
    # weights are judged before they are saved, so ckpt_00000002.pt stays the last (good) checkpoint
    cmd = command(corpus, out, "--max-steps", "30", "--set", "lr=1e30", "--set", "grad_clip=None",
                  "--set", "warmup_steps=0", "--set", "checkpoint_every=1")  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped at step 3:") and "the diverged weights were not saved" in last
    ckpts = list_checkpoints(out / "checkpoints")
    assert [s for s, _ in ckpts] == [1, 2]
    assert "the last good checkpoint is" in last and "ckpt_00000002.pt" in last
    WaveNet.from_checkpoint(ckpts[-1][1])  # loadable


def test_the_command_trains_the_demo_preset_a_few_steps(corpus, tmp_path):
    script = Path(sys.executable).parent / "wavenet-dilated"
    out = tmp_path / "run"
    cmd = command(corpus, out, "--max-steps", "3", program=())
    cmd[:1] = [str(script), "train"]  # the console script instead of the interpreter
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: step 3" in proc.stdout and "wrote sample" in proc.stdout
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3]
    WaveNet.from_checkpoint(out / "checkpoints" / "ckpt_00000003.pt")
