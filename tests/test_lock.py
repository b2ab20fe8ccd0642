"""One run per run directory, one builder per cache: the advisory lock of :mod:`wavenet_dilated.lock`, held by real
processes (a killed one included), through the training command and :func:`preprocess`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._corpus import write_corpus
from wavenet_dilated import lock as lock_module
from wavenet_dilated.cli import cli
from wavenet_dilated.cli import train as train_command
from wavenet_dilated.data.cache import CACHE_LOCK_FILE, preprocess
from wavenet_dilated.data.manifest import MANIFEST_FILE, Manifest
from wavenet_dilated.lock import LOCK_FILE, DirectoryLock, LockError, LockHeldError, LockUnavailableWarning

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
#: 8 kHz features with a small FFT (and a model that fits them), so that preprocessing the tiny corpus takes a moment
AUDIO_SET = ["audio.sample_rate=8000", "n_fft=256", "win_length=256", "hop_length=64", "n_mels=16", "fmin=0",
             "fmax=4000", "trim_top_db=None", "cond_channels=16", "upsample_scales=8,8"]  # fmt: skip
#: a process that takes the lock on argv[1] (lock file argv[2]), says so on stdout, and holds it until stdin closes
_HOLD = (
    "import sys\n"
    "from wavenet_dilated.lock import DirectoryLock\n"
    "DirectoryLock(sys.argv[1], name=sys.argv[2], what='test').acquire()\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def hold() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``hold(directory, name=".lock")`` starts another process that holds the lock; it returns once the lock is
    held (the process's "locked" line is the event waited for). Closing its stdin ends it."""
    started: list[subprocess.Popen[str]] = []

    def start(directory: Path, name: str = LOCK_FILE) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory), name], cwd=ROOT, env=_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "locked":
            proc.kill()
            pytest.fail(f"the holder process did not take the lock: {line!r} {proc.communicate(timeout=30)[1]}")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


def _release(proc: subprocess.Popen[str]) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


# --- the run directory -----------------------------------------------------------------------------------------------


def test_a_second_run_on_a_busy_out_dir_is_refused_in_one_line_naming_the_holder(tmp_path, hold, capsys):
    out = tmp_path / "run"
    holder = hold(out)
    before = (out / LOCK_FILE).read_text()
    assert cli(["train", "--preset", "demo", "--out-dir", str(out), "--max-steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("wavenet-dilated: error: run directory")
    assert f"PID {holder.pid} on host " in err and "in use" in err
    # refused before anything was written: no cache, no log, and the holder's lock file untouched
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert (out / LOCK_FILE).read_text() == before


def test_the_recipe_refuses_a_busy_out_dir_with_status_2_and_no_traceback(tmp_path, hold):
    out = tmp_path / "run"
    holder = hold(out)
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.train_ljspeech", "--preset", "demo", "--out-dir", str(out), "--max-steps", "2",
         "--no-progress"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: run directory") and f"PID {holder.pid}" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_lock_left_by_a_killed_run_does_not_block_the_next_run(tmp_path, hold, capsys):
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    write_corpus(corpus, n=6, seconds=0.4, sr=SR)
    holder = hold(out)
    _kill(holder)
    assert f'"pid": {holder.pid}' in (out / LOCK_FILE).read_text()  # the stale file stays; it must not block
    argv = ["train", "--preset", "demo", "--data-dir", str(corpus), "--out-dir", str(out), "--preprocess-only",
            "--no-progress"]  # fmt: skip
    for item in AUDIO_SET:
        argv += ["--set", item]
    assert cli(argv) == 0, capsys.readouterr().err
    assert (out / "cache" / MANIFEST_FILE).is_file()
    assert (out / LOCK_FILE).read_text() == ""  # released (and emptied) when the run ended


def test_only_rank_0_takes_the_run_directory_lock(tmp_path, hold, monkeypatch):
    out = tmp_path / "run"
    holder = hold(out)
    monkeypatch.setenv("RANK", "1")
    with train_command._lock_run_dir(out):  # another rank: neither blocks nor refuses, nor writes the lock file
        assert f'"pid": {holder.pid}' in (out / LOCK_FILE).read_text()
    for rank in ("0", None):
        if rank is None:
            monkeypatch.delenv("RANK")
        else:
            monkeypatch.setenv("RANK", rank)
        with pytest.raises(LockHeldError, match=f"PID {holder.pid}"):
            with train_command._lock_run_dir(out):
                pass


# --- the lock itself -------------------------------------------------------------------------------------------------


def test_a_lock_is_exclusive_within_one_process_too_and_free_again_after_release(tmp_path):
    first = DirectoryLock(tmp_path / "d", what="thing").acquire()
    assert first.held and f'"pid": {os.getpid()}' in first.path.read_text()
    with pytest.raises(LockHeldError, match=f"^directory .* is in use by PID {os.getpid()} on host ") as caught:
        DirectoryLock(tmp_path / "d").acquire()
    assert caught.value.holder.pid == os.getpid() and isinstance(caught.value, OSError)
    first.release()
    assert not first.held and first.path.read_text() == ""
    with DirectoryLock(tmp_path / "d") as again:
        assert again.held


def test_a_holder_that_recorded_no_pid_is_still_a_one_line_refusal(tmp_path):
    with DirectoryLock(tmp_path) as first:
        first.path.write_text("")  # as a holder on a full disk leaves it
        with pytest.raises(LockHeldError, match="in use by another process \\(its lock file names no PID\\)") as caught:
            DirectoryLock(tmp_path).acquire()
    assert caught.value.holder is None


def test_the_run_and_cache_locks_of_one_directory_do_not_collide(tmp_path):
    # --cache-dir equal to --out-dir: the run's own cache lock must not wait for the run's lock (a deadlock)
    with DirectoryLock(tmp_path, what="run directory"):
        with DirectoryLock(tmp_path, name=CACHE_LOCK_FILE, what="cache") as cache:
            assert cache.held


def test_a_lock_file_that_cannot_be_created_is_a_clear_oserror(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LockError, match="^run directory .*file' is a file; expected a directory$"):
        DirectoryLock(tmp_path / "file", what="run directory").acquire()
    with pytest.raises(LockError, match="^cannot create the lock file .*file/sub/.lock"):
        DirectoryLock(tmp_path / "file" / "sub").acquire()


def test_without_fcntl_it_warns_and_runs_unlocked(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "fcntl", None)
    with pytest.warns(LockUnavailableWarning, match="no fcntl.*without a lock"):
        with DirectoryLock(tmp_path / "d", what="run directory") as lock:
            assert not lock.held
    assert not (tmp_path / "d" / LOCK_FILE).exists()


# --- the preprocessing cache -----------------------------------------------------------------------------------------


class _Waiting(logging.Handler):
    """Sets :attr:`seen` when the cache logs that it waits for another process."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("waiting for"):
            self.messages.append(record.getMessage())
            self.seen.set()


def test_a_second_preprocess_of_one_cache_waits_for_the_first_then_builds(tmp_path, hold):
    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    write_corpus(corpus, n=4, seconds=0.3)
    holder = hold(cache, CACHE_LOCK_FILE)
    waiting, result = _Waiting(), {}
    logger = logging.getLogger("wavenet_dilated.data.cache")
    logger.addHandler(waiting)
    try:
        worker = threading.Thread(
            target=lambda: result.setdefault("manifest", preprocess(corpus, cache, n_workers=1, progress=False,
                                                                    val_fraction=0.25, test_fraction=0.0)),
            daemon=True,  # blocked in flock if the test fails before releasing the holder
        )
        worker.start()
        while not waiting.seen.wait(0.05) and worker.is_alive():
            pass
        assert waiting.seen.is_set(), "preprocess did not wait for the process holding the cache's lock"
        assert f"PID {holder.pid} on host " in waiting.messages[0] and str(cache) in waiting.messages[0]
        assert worker.is_alive() and not (cache / MANIFEST_FILE).exists()  # still waiting, nothing built
        _release(holder)
        worker.join(timeout=120)
        assert not worker.is_alive()
    finally:
        logger.removeHandler(waiting)
    assert isinstance(result["manifest"], Manifest) and (cache / MANIFEST_FILE).is_file()
    assert len(waiting.messages) == 1


def test_a_cache_lock_left_by_a_killed_process_does_not_block_preprocess(tmp_path, hold):
    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    write_corpus(corpus, n=4, seconds=0.3)
    _kill(hold(cache, CACHE_LOCK_FILE))
    waiting = _Waiting()
    logger = logging.getLogger("wavenet_dilated.data.cache")
    logger.addHandler(waiting)
    try:
        manifest = preprocess(corpus, cache, n_workers=1, progress=False, val_fraction=0.25, test_fraction=0.0)
    finally:
        logger.removeHandler(waiting)
    assert not waiting.seen.is_set() and manifest.is_complete()
