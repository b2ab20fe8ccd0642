"""What survives a kill, a full disk, changed settings and divergence (issue 12): best.pt is always the best checkpoint
on disk, settings changed on resume are applied or refused, a diverging run stops before saving garbage, checkpoints
whose weights are not finite are refused (and reported by ``info``), and a save interrupted at any file operation
resumes from the newest complete checkpoint."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import pathlib
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import torch

import wavenet_dilated.checkpoint as checkpoint_module
from tests.test_train import MODEL, TRAIN, assert_same_state, tone_cache, weights
from wavenet_dilated.checkpoint import (
    BEST_CHECKPOINT,
    CheckpointWriteError,
    NonFiniteCheckpointError,
    list_checkpoints,
    load_checkpoint,
    validated_nll_bits,
)
from wavenet_dilated.cli import cli
from wavenet_dilated.train import TrainConfig, Trainer, lr_factor
from wavenet_dilated.train.trainer import DivergedError, NonFiniteLossError
from wavenet_dilated.wavenet import WaveNet


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tone_cache(tmp_path_factory.mktemp("reliability_corpus"))


def on_disk(run: Path) -> dict[int, dict]:
    """Every complete ``ckpt_<step>.pt`` of ``run``, loaded (raw: weights that are not finite included)."""
    return {step: load_checkpoint(path, require_finite=False) for step, path in list_checkpoints(run / "checkpoints")}


def assert_best_is_the_best_on_disk(run: Path) -> dict:
    """best.pt exists, loads, and is at least as good as every validated checkpoint on disk; when the checkpoint of
    its step is still there, it is that checkpoint."""
    best = load_checkpoint(run / "checkpoints" / BEST_CHECKPOINT)
    ckpts = on_disk(run)
    vals = {s: validated_nll_bits(c) for s, c in ckpts.items() if validated_nll_bits(c) is not None}
    assert vals, "no validated checkpoint on disk"
    assert best["val_nll_bits"] <= min(vals.values()), (best["step"], best["val_nll_bits"], vals)
    if best["step"] in ckpts:
        assert_same_state(best["model"], ckpts[best["step"]]["model"])
    assert not list((run / "checkpoints").glob("*.tmp"))
    return best


def scripted_validation(monkeypatch, values: dict[int, float]) -> None:
    """``Trainer.validate`` returns ``values[step]`` (the weights are untouched: only which checkpoint is best, and
    the divergence check, see it)."""
    monkeypatch.setattr(Trainer, "validate", lambda self: values[self.step])


# --- defect 1: best.pt missing or stale ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "stale", "truncated"])
def test_resume_repairs_a_missing_or_stale_best_pt(cache, tmp_path, monkeypatch, damage):
    scripted_validation(monkeypatch, {2: 6.0, 4: 5.0, 6: 5.5})
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=6, progress=False)
    best_path = tmp_path / "checkpoints" / BEST_CHECKPOINT
    assert load_checkpoint(best_path)["step"] == 4
    # what a kill between writing ckpt_00000004.pt and best.pt (or a full disk at best.pt) leaves
    if damage == "missing":
        best_path.unlink()
    elif damage == "stale":
        shutil.copyfile(tmp_path / "checkpoints" / "ckpt_00000002.pt", best_path)
    else:
        best_path.write_bytes(best_path.read_bytes()[:1000])
    resumed = Trainer(MODEL, TRAIN, cache, tmp_path)
    assert resumed.step == 6
    best = assert_best_is_the_best_on_disk(tmp_path)
    assert best["step"] == 4 and resumed.best_val_nll_bits == 5.0
    assert (best_path.read_bytes() == (tmp_path / "checkpoints" / "ckpt_00000004.pt").read_bytes())


def test_rotation_keeps_best_pt_when_the_best_checkpoint_is_rotated_away(cache, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, {2: 6.0, 4: 5.0, 6: 5.5, 8: 5.9})
    config = dataclasses.replace(TRAIN, max_steps=8, keep_last=1)
    trainer = Trainer(MODEL, config, cache, tmp_path)
    trainer.fit(until_step=4, progress=False)
    at_best = weights(trainer)
    trainer.fit(progress=False)
    assert sorted(on_disk(tmp_path)) == [8]  # the last good one
    best = load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)
    assert best["step"] == 4 and best["val_nll_bits"] == 5.0
    assert_same_state(best["model"], at_best)
    resumed = Trainer(MODEL, config, cache, tmp_path)  # nothing on disk is better: best.pt is left alone
    assert resumed.best_val_nll_bits == 5.0 and load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)["step"] == 4


def test_a_checkpoint_saved_without_validation_does_not_count_as_validated(cache, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, {2: 6.0, 4: 6.2})
    config = dataclasses.replace(TRAIN, max_steps=4, val_every=2, checkpoint_every=3, keep_last=2)
    Trainer(MODEL, config, cache, tmp_path).fit(progress=False)
    assert sorted(on_disk(tmp_path)) == [3, 4]
    ckpt_3 = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000003.pt")
    assert ckpt_3["val_nll_bits"] == 6.0 and ckpt_3["val_step"] == 2  # step 2's NLL, not its own weights'
    assert validated_nll_bits(ckpt_3) is None
    (tmp_path / "checkpoints" / BEST_CHECKPOINT).unlink()
    Trainer(MODEL, config, cache, tmp_path)
    best = load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)
    assert best["step"] == 4 and best["val_nll_bits"] == 6.2


# --- defect 3: settings changed on resume -------------------------------------------------------------------------


def test_changed_optimiser_and_schedule_settings_are_applied_on_resume(cache, tmp_path, caplog):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=4, progress=False)
    changed = dataclasses.replace(TRAIN, optimizer="adamw", lr=2e-3, betas=(0.8, 0.99), weight_decay=0.05,
                                  warmup_steps=8, lr_decay=None, grad_clip=None)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="wavenet_dilated.train"):
        resumed = Trainer(MODEL, changed, cache, tmp_path)
    (group,) = resumed.optimizer.param_groups
    assert lr_factor(4, changed) == 5 / 8 and group["lr"] == 2e-3 * lr_factor(4, changed)  # the new lr and warm-up
    assert group["betas"] == (0.8, 0.99) and group["weight_decay"] == 0.05
    assert group.get("decoupled_weight_decay", True) is True  # AdamW's decoupled decay (torch ≥ 2.x stores the flag)
    assert resumed.scheduler.get_last_lr() == [group["lr"]]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "applied" in message and "lr 0.01 → 0.002" in message and "grad_clip 1.0 → None" in message

    resumed.fit(until_step=6, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000006.pt")
    assert TrainConfig.from_dict(ckpt["train_config"]) == changed  # the checkpoint records what was used
    (saved,) = ckpt["optimizer"]["param_groups"]
    assert saved["lr"] == 2e-3 * lr_factor(6, changed) and saved["initial_lr"] == 2e-3
    assert tuple(saved["betas"]) == (0.8, 0.99) and saved["weight_decay"] == 0.05


def test_unchanged_settings_leave_the_restored_optimiser_as_it_was(cache, tmp_path):
    trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    trainer.fit(until_step=4, progress=False)
    before = trainer.optimizer.state_dict()["param_groups"]
    assert Trainer(MODEL, TRAIN, cache, tmp_path).optimizer.state_dict()["param_groups"] == before


def test_changing_the_validation_set_on_resume_is_refused(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    with pytest.raises(ValueError, match=r"val_max_utterances was 64 and is now 1, but it cannot change when resuming"):
        Trainer(MODEL, dataclasses.replace(TRAIN, val_max_utterances=1), cache, tmp_path)


# --- defect 4: divergence -----------------------------------------------------------------------------------------


def test_a_loss_far_above_uniform_stops_the_run_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    good = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000002.pt")
    wild = dataclasses.replace(TRAIN, lr=1e3, grad_clip=None)  # step 3's update throws the weights far away
    trainer = Trainer(MODEL, wild, cache, tmp_path)
    with pytest.raises(DivergedError, match=r"step 4: the training loss [0-9.e+]+ bits/sample is more than "
                                            r"diverge_margin_bits=8 above the uniform baseline 8;.*ckpt_00000002\.pt"):
        trainer.fit(progress=False)
    assert sorted(on_disk(tmp_path)) == [2]  # step 4's weights were not saved
    assert_same_state(load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000002.pt")["model"], good["model"])
    assert load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)["step"] == 2


def test_diverged_weights_are_not_saved_at_a_checkpoint_without_validation(cache, tmp_path):
    config = dataclasses.replace(TRAIN, lr=1e3, grad_clip=None, val_every=None, checkpoint_every=1)
    with pytest.raises(DivergedError, match=r"step 1: the loss after the update .* no checkpoint was written yet"):
        Trainer(MODEL, config, cache, tmp_path).fit(progress=False)
    assert on_disk(tmp_path) == {}


def test_a_validation_nll_far_above_its_best_stops_the_run(cache, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, {2: 6.0, 4: 5.0, 6: 7.5})
    with pytest.raises(DivergedError, match=r"step 6: the validation NLL 7\.5 bits/sample is more than "
                                            r"diverge_val_rise_bits=2 above the best 5;.*ckpt_00000004\.pt"):
        Trainer(MODEL, TRAIN, cache, tmp_path).fit(progress=False)
    assert sorted(on_disk(tmp_path)) == [2, 4]
    assert load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)["step"] == 4
    off = dataclasses.replace(TRAIN, max_steps=6, diverge_val_rise_bits=None)  # "off" lets it carry on
    assert Trainer(MODEL, off, cache, tmp_path).fit(progress=False).step == 6


def test_divergence_is_exit_status_1_with_one_line(capsys, monkeypatch):
    from wavenet_dilated.cli import train as train_command

    def diverge(args, command):
        raise DivergedError(9, "the training loss 6110 bits/sample is more than diverge_margin_bits=8 above the "
                               "uniform baseline 8", Path("run/checkpoints/ckpt_00000008.pt"))  # fmt: skip

    monkeypatch.setattr(train_command, "run", diverge)
    assert cli(["train", "--preset", "demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wavenet-dilated: error: training stopped at step 9: the training loss")
    assert issubclass(NonFiniteLossError, DivergedError)  # NaN is a divergence too: the same status


# --- defect 7 (checkpoints): weights that are not finite ----------------------------------------------------------


@pytest.fixture
def nan_checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = WaveNet(MODEL)
    with torch.no_grad():
        model.out2.bias[3] = float("nan")
    path = tmp_path / "nan.pt"
    model.save(path, step=7)
    return path


def test_a_checkpoint_with_nan_weights_is_refused_at_load_naming_the_tensor(nan_checkpoint):
    expected = r"nan\.pt: the weights are not finite \(model\.out2\.bias \(1 NaN of 256\)\)"
    with pytest.raises(NonFiniteCheckpointError, match=expected):
        load_checkpoint(nan_checkpoint)
    with pytest.raises(ValueError, match=expected):
        WaveNet.from_checkpoint(nan_checkpoint)
    assert load_checkpoint(nan_checkpoint, require_finite=False)["step"] == 7


def test_sample_refuses_and_info_reports_a_nan_checkpoint(nan_checkpoint, tmp_path, capsys):
    assert cli(["sample", str(nan_checkpoint), "--seconds", "0.01", "-o", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the weights are not finite (model.out2.bias" in err[0]
    assert not (tmp_path / "x.wav").exists()
    assert cli(["info", str(nan_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "NOT FINITE (model.out2.bias (1 NaN of 256))" in out


def test_resume_never_starts_from_weights_that_are_not_finite(cache, tmp_path, caplog):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=4, progress=False)
    newest = tmp_path / "checkpoints" / "ckpt_00000004.pt"
    ckpt = load_checkpoint(newest)
    ckpt["model"]["out2.bias"][0] = float("inf")
    torch.save(ckpt, newest)
    with pytest.raises(NonFiniteCheckpointError, match="ckpt_00000004.pt: the weights are not finite"):
        Trainer(MODEL, TRAIN, cache, tmp_path / "other", resume=newest)
    with caplog.at_level(logging.WARNING, logger="wavenet_dilated"):
        trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    assert trainer.step == 2 and trainer.last_checkpoint.name == "ckpt_00000002.pt"
    assert any("ckpt_00000004.pt" in r.getMessage() and "not finite" in r.getMessage() for r in caplog.records)


# --- fault injection: a save interrupted at every file operation, and a full disk ---------------------------------


class Killed(OSError):
    """The simulated kill: this file operation, and every one after it, never happens."""


class FaultInjector:
    """Counts the file operations made while :meth:`Trainer.save_checkpoint` runs at step ``at_step`` (in the main
    thread), and "kills" the process at operation ``kill_at``: that operation and all later ones raise
    :class:`Killed` without touching the disk, as if the process had died there."""

    OPERATIONS = [(tempfile, "mkstemp"), (os, "fdopen"), (os, "fsync"), (os, "replace"), (os, "open"),
                  (torch, "save"), (shutil, "copyfileobj"), (pathlib.Path, "unlink"), (pathlib.Path, "mkdir")]  # fmt: skip

    def __init__(self, monkeypatch, at_step: int, kill_at: int | None) -> None:
        self.at_step, self.kill_at, self.count, self.dead, self.armed = at_step, kill_at, 0, False, False
        for owner, name in self.OPERATIONS:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), f"{owner.__name__}.{name}"))
        real_save = Trainer.save_checkpoint

        def save(trainer: Trainer, best: bool = False) -> Path:
            self.armed = trainer.step == at_step
            try:
                return real_save(trainer, best)
            finally:
                self.armed = False

        monkeypatch.setattr(Trainer, "save_checkpoint", save)

    def _wrap(self, fn, name):
        def operation(*args, **kwargs):
            if self.armed and threading.current_thread() is threading.main_thread():
                self.count += 1
                if self.dead or self.count == self.kill_at:
                    self.dead = True
                    raise Killed(f"killed at file operation {self.count} ({name})")
            return fn(*args, **kwargs)

        return operation


def test_a_save_killed_at_every_file_operation_resumes_from_the_newest_complete_checkpoint(cache, tmp_path,
                                                                                            monkeypatch):  # fmt: skip
    config = dataclasses.replace(TRAIN, max_steps=8, keep_last=2)
    scripted_validation(monkeypatch, {s: 8.0 - 0.25 * s for s in range(2, 9, 2)})  # every validation is the best
    straight = Trainer(MODEL, config, cache, tmp_path / "straight")
    straight.fit(progress=False)
    base = tmp_path / "base"
    Trainer(MODEL, config, cache, base).fit(until_step=4, progress=False)

    with monkeypatch.context() as patch:  # count the operations of the save at step 6 (ckpt, best.pt, rotation)
        counter = FaultInjector(patch, at_step=6, kill_at=None)
        Trainer(MODEL, config, cache, tmp_path / "count").fit(until_step=6, progress=False)
    n_operations = counter.count
    assert n_operations >= 10, n_operations

    for kill_at in range(1, n_operations + 1):
        run = tmp_path / f"killed_at_{kill_at}"
        shutil.copytree(base, run)
        with monkeypatch.context() as patch:
            FaultInjector(patch, at_step=6, kill_at=kill_at)
            with pytest.raises(OSError, match="killed at file operation"):
                Trainer(MODEL, config, cache, run).fit(progress=False)
        newest = max(on_disk(run))
        assert newest in (4, 6), (kill_at, sorted(on_disk(run)))
        resumed = Trainer(MODEL, config, cache, run)  # the same command again
        assert resumed.step == newest, kill_at
        best = assert_best_is_the_best_on_disk(run)
        assert best["step"] == newest, (kill_at, best["step"])
        resumed.fit(progress=False)
        assert_same_state(weights(resumed), weights(straight))
        assert sorted(on_disk(run)) == [6, 8] and assert_best_is_the_best_on_disk(run)["step"] == 8


class FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("target", ["ckpt", "best"])
def test_a_full_disk_during_a_checkpoint_write_is_one_clear_error_and_nothing_is_lost(cache, tmp_path, monkeypatch,
                                                                                        target):  # fmt: skip
    scripted_validation(monkeypatch, {2: 6.0, 4: 5.0})
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    real_fdopen = os.fdopen

    def full_disk_fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        wanted = BEST_CHECKPOINT if target == "best" else "ckpt_00000004.pt"
        return FullDisk(f, room=4096) if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(wanted) else f

    monkeypatch.setattr(checkpoint_module.os, "fdopen", full_disk_fdopen)
    with pytest.raises(CheckpointWriteError) as info:
        Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=4, progress=False)
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err).count("\n") == 0 and "No space left on device" in str(err)
    assert str(err).startswith("could not write checkpoint ") and "the checkpoints already there are intact" in str(err)
    after = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    assert not [name for name in after if name.endswith(".tmp")]
    assert {k: v for k, v in after.items() if k in before} == before  # the old files are untouched
    assert set(after) - set(before) == (set() if target == "ckpt" else {"ckpt_00000004.pt"})
    monkeypatch.undo()
    scripted_validation(monkeypatch, {2: 6.0, 4: 5.0})
    resumed = Trainer(MODEL, TRAIN, cache, tmp_path)  # with room again, the same command carries on
    assert resumed.step == (2 if target == "ckpt" else 4)
    assert assert_best_is_the_best_on_disk(tmp_path)["step"] == resumed.step


def test_the_command_reports_a_full_disk_in_one_line(capsys, monkeypatch):
    from wavenet_dilated.cli import train as train_command

    def full(args, command):
        raise CheckpointWriteError(Path("run/checkpoints/ckpt_00000004.pt"),
                                   OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))  # fmt: skip

    monkeypatch.setattr(train_command, "run", full)
    assert cli(["train", "--preset", "demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["wavenet-dilated: error: could not write checkpoint run/checkpoints/ckpt_00000004.pt: No space left "
                   "on device; the checkpoints already there are intact"]
