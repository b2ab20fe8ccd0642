"""The trainer: end to end on a generated corpus, exact resume, corrupt checkpoints, NaN stop, DDP on CPU/gloo."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tests._corpus import write_corpus
from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.checkpoint import BEST_CHECKPOINT, list_checkpoints, load_checkpoint
from wavenet_dilated.data import preprocess
from wavenet_dilated.train import NonFiniteLossError, StepBatchSampler, TrainConfig, Trainer, lr_factor
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
AUDIO = AudioConfig(sample_rate=SR, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmin=0.0, fmax=4000.0,
                    trim_top_db=None)  # fmt: skip
MODEL = WaveNetConfig(n_layers=4, n_stacks=2, kernel_size=3, residual_channels=8, gate_channels=16, skip_channels=8,
                      cond_channels=16, upsample_scales=(8, 8), hop_length=64)  # fmt: skip
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps
TRAIN = TrainConfig(lr=1e-2, warmup_steps=2, max_steps=12, batch_size=2, max_time_steps=512, ema_decay=0.9,
                    log_every=1, val_every=2, checkpoint_every=2, keep_last=10, sample_every=None,
                    sample_seconds=0.02, num_workers=0, device="cpu")  # fmt: skip


def tone_cache(root: Path, seconds: float = 0.4) -> Path:
    """Six tones of ``seconds``–``seconds + 0.25`` s at 8 kHz in ``root/corpus``, preprocessed with :data:`AUDIO`
    into ``root/cache`` (train/val split by id hash); returns the cache."""
    write_corpus(root / "corpus", n=6, seconds=seconds, sr=SR)
    manifest = preprocess(root / "corpus", root / "cache", AUDIO, n_workers=1, progress=False, val_fraction=0.2)
    assert manifest.entries("val") and len(manifest.entries("train")) >= 3
    return root / "cache"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tone_cache(tmp_path_factory.mktemp("train_corpus"))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item():.3g}"
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0.0, msg=lambda m, k=k: f"{k}: {m}")


# --- pieces -----------------------------------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    approx = functools.partial(pytest.approx, rel=4 * EPS64, abs=0.0)  # a few fp64 operations, each within eps
    c = TrainConfig(lr=1.0, warmup_steps=4, max_steps=104, lr_decay="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, c) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, c) == approx(1.0)
    assert lr_factor(54, c) == approx(0.55)  # half way: (1 + r) / 2
    assert lr_factor(104, c) == approx(0.1) and lr_factor(10_000, c) == approx(0.1)
    e = dataclasses.replace(c, lr_decay="exponential")
    assert lr_factor(54, e) == approx(0.1**0.5) and lr_factor(104, e) == approx(0.1)
    assert lr_factor(50, dataclasses.replace(c, lr_decay=None)) == 1.0


@pytest.mark.parametrize(
    "bad",
    [dict(optimizer="sgd"), dict(lr=0.0), dict(betas=(0.9, 1.0)), dict(lr_decay="linear"), dict(ema_decay=1.0),
     dict(amp="fp16"), dict(val_every=0), dict(keep_last=0), dict(batch_size=True), dict(grad_clip=-1.0)],
)  # fmt: skip
def test_train_config_rejects_bad_values_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_batches_depend_only_on_seed_step_and_rank():
    full = StepBatchSampler(n_items=5, batch_size=4, seed=3, start_step=0, end_step=10)
    batches = list(full)
    assert len(batches) == 10 and all(len(b) == 4 for b in batches)
    # resuming at step 6 gives the same batches as the uninterrupted run
    assert list(StepBatchSampler(5, 4, 3, start_step=6, end_step=10)) == batches[6:]
    # every epoch is a permutation of all items
    flat = [k for b in batches for k in b]
    for epoch in range(8):
        assert sorted(i for i, e in flat if e == epoch) == list(range(5))
    # two ranks with batch 2 see exactly the items one process with batch 4 sees
    ranks = [StepBatchSampler(5, 2, 3, 0, 10, rank=r, world_size=2) for r in range(2)]
    for step in range(10):
        assert ranks[0].batch(step) + ranks[1].batch(step) == full.batch(step)
    assert list(StepBatchSampler(5, 4, 4, 0, 10)) != batches  # the seed matters


# --- end to end -----------------------------------------------------------------------------------------------------


def test_end_to_end_checkpoints_validation_and_tensorboard(cache, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = dataclasses.replace(TRAIN, max_steps=8, sample_every=8, keep_last=2)
    trainer = Trainer(MODEL, config, cache, tmp_path)
    summary = trainer.fit(progress=False)
    assert summary.step == 8 and trainer.step == 8
    assert summary.val_nll_bits is not None and math.isfinite(summary.val_nll_bits)
    assert summary.val_nll_bits < 8.0  # below a uniform guess over 256 classes (8 bits)

    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [s for s, _ in ckpts] == [6, 8]  # keep_last=2
    assert (tmp_path / "checkpoints" / BEST_CHECKPOINT).is_file()
    ckpt = torch.load(ckpts[-1][1], weights_only=True)  # everything in it is weights_only-safe
    for key in ("config", "model", "ema", "optimizer", "scheduler", "step", "rng", "audio_config", "mel_stats",
                "train_config", "val_nll_bits", "best_val_nll_bits"):  # fmt: skip
        assert key in ckpt, key
    assert ckpt["step"] == 8 and ckpt["val_nll_bits"] == summary.val_nll_bits  # the same Python float
    assert AudioConfig.from_dict(ckpt["audio_config"]) == AUDIO
    assert TrainConfig.from_dict(ckpt["train_config"]) == config
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"}
    best = load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)
    assert best["val_nll_bits"] == best["best_val_nll_bits"] == summary.best_val_nll_bits
    model = WaveNet.from_checkpoint(ckpts[-1][1])  # EMA weights by default
    for k, v in model.state_dict().items():
        assert torch.equal(v, trainer.ema.module.state_dict()[k])

    wav = tmp_path / "samples" / "step_00000008.wav"
    assert wav.is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/nll_bits", "train/lr", "train/grad_norm", "train/samples_per_s", "val/nll_bits"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in events.Scalars("val/nll_bits")] == [2, 4, 6, 8]
    assert [e.step for e in events.Scalars("train/nll_bits")] == list(range(1, 9))
    # TensorBoard stores fp32: rounding to the nearest fp32 is within eps32 / 2 relative
    assert events.Scalars("val/nll_bits")[-1].value == pytest.approx(summary.val_nll_bits, rel=EPS32 / 2, abs=0.0)
    losses = [e.value for e in events.Scalars("train/nll_bits")]
    assert losses[-1] < losses[0]  # it learns
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[1]  # after step 1: warmed up; then cosine decay
    assert "sample/audio" in tags["audio"] and "sample/mel" in tags["images"]
    audio = events.Audio("sample/audio")[0]
    assert audio.step == 8 and audio.sample_rate == SR and audio.length_frames == 192  # 0.02 s → 3 frames of 64


def test_validation_is_deterministic_and_uses_the_ema(cache, tmp_path):
    trainer = Trainer(MODEL, dataclasses.replace(TRAIN, max_steps=3), cache, tmp_path)
    trainer.fit(progress=False)
    first, second = trainer.validate(), trainer.validate()
    assert first == second
    raw = Trainer(MODEL, dataclasses.replace(TRAIN, max_steps=3, eval_ema=False), cache, tmp_path / "raw")
    raw.fit(progress=False)
    assert raw.validate() != first  # the raw weights are not the average


def test_fused_loss_is_the_models_loss_and_is_used_on_cpu(cache, tmp_path, monkeypatch):
    import wavenet_dilated.train.fused_loss as train_module  # the trainer's loss looks fused_loss up here

    calls = []
    real_fused_loss = train_module.fused_loss

    def counting_fused_loss(*args):
        calls.append(1)
        return real_fused_loss(*args)

    monkeypatch.setattr(train_module, "fused_loss", counting_fused_loss)
    # whole crops as targets, so that the loss is model.loss (crops with history: tests/test_context_crops.py)
    config = dataclasses.replace(TRAIN, max_steps=2, crop_history="none")
    fused = Trainer(MODEL, config, cache, tmp_path / "fused")
    plain = Trainer(MODEL, dataclasses.replace(config, fused=False), cache, tmp_path / "plain")
    assert fused.fused and not plain.fused

    batch = next(iter(fused.train_loader(0, 1)))
    loss = fused.net(batch["audio"], batch["mel"])
    assert calls == [1]
    reference = fused.model.loss(batch["audio"], batch["mel"])
    assert torch.equal(plain.net(batch["audio"], batch["mel"]), reference)  # the same initial weights
    # the same function summed in another order: each position's logits come through the layers' k·R-term dot
    # products (eps·√(k·R) relative per layer), and the loss is a mean over the batch's B·T positions (eps·√(B·T))
    depth = MODEL.n_layers * MODEL.n_stacks * math.sqrt(MODEL.kernel_size * MODEL.residual_channels)
    rel = EPS32 * (math.sqrt(batch["audio"].numel()) + depth)
    assert abs(loss.item() - reference.item()) <= rel * abs(reference.item()), (loss.item(), reference.item())
    longest = max(fused.val_set[i]["audio"].numel() for i in range(len(fused.val_set)))
    val_rel = EPS32 * (math.sqrt(longest) + depth)  # the same per utterance; their weighted mean keeps the bound
    assert plain.validate() == pytest.approx(fused.validate(), rel=val_rel, abs=0.0)
    assert len(calls) == 1 + len(fused.val_set)  # validation too, one utterance at a time

    calls.clear()
    plain.fit(progress=False)
    assert calls == []
    fused.fit(progress=False)
    assert len(calls) == 2 + len(fused.val_set)  # two steps, then one validation (step 2)
    # Adam divides each gradient element by its own size, so a relative gradient error e moves a weight by at most
    # lr·e per step; the two losses' gradients sum B·T per-position terms in other orders: e <= B·T·eps
    lr_sum = sum(lr_factor(s, config) * config.lr for s in range(config.max_steps))
    assert_same_state(weights(fused), weights(plain), atol=lr_sum * EPS32 * config.batch_size * config.max_time_steps)


# --- resume ---------------------------------------------------------------------------------------------------------

DROPOUT = dataclasses.replace(MODEL, dropout=0.1)  # dropout draws from the RNG: resume must restore it


@pytest.mark.parametrize("how", ["until_step", "raise_max_steps"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(cache, tmp_path, how):
    config = dataclasses.replace(TRAIN, max_steps=12, checkpoint_every=4, val_every=4)
    if how == "raise_max_steps":  # "train 6 steps, then ask for 12": the schedule must not depend on max_steps
        config = dataclasses.replace(config, lr_decay=None)
    straight = Trainer(DROPOUT, config, cache, tmp_path / "straight")
    straight.fit(progress=False)

    if how == "until_step":
        Trainer(DROPOUT, config, cache, tmp_path / "resumed").fit(until_step=6, progress=False)
    else:
        Trainer(DROPOUT, dataclasses.replace(config, max_steps=6), cache, tmp_path / "resumed").fit(progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [4, 6]
    resumed = Trainer(DROPOUT, config, cache, tmp_path / "resumed")  # automatic resume from the run directory
    assert resumed.step == 6
    resumed.fit(progress=False)

    assert resumed.step == straight.step == 12
    assert_same_state(weights(resumed), weights(straight))
    assert_same_state(resumed.ema.state_dict(), straight.ema.state_dict())
    a, b = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    for i in a:
        assert_same_state(a[i], b[i])
    assert resumed.val_nll_bits == straight.val_nll_bits


def test_resume_from_an_explicit_checkpoint_file(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path / "a").fit(until_step=4, progress=False)
    other = Trainer(MODEL, TRAIN, cache, tmp_path / "b", resume=tmp_path / "a" / "checkpoints" / "ckpt_00000002.pt")
    assert other.step == 2 and other.last_checkpoint.name == "ckpt_00000002.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Trainer(MODEL, TRAIN, cache, tmp_path / "c", resume=tmp_path / "nope.pt")


def test_truncated_latest_checkpoint_is_skipped_with_a_warning(cache, tmp_path, caplog):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=4, progress=False)
    latest = tmp_path / "checkpoints" / "ckpt_00000004.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="wavenet_dilated.train"):
        trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    assert trainer.step == 2
    assert trainer.last_checkpoint.name == "ckpt_00000002.pt"
    assert any("ckpt_00000004.pt" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    trainer.fit(until_step=4, progress=False)  # and it carries on, overwriting the broken file
    assert load_checkpoint(latest)["step"] == 4


def test_no_loadable_checkpoint_at_all_is_an_error_not_a_silent_restart(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    (tmp_path / "checkpoints" / "ckpt_00000002.pt").write_bytes(b"garbage")
    (tmp_path / "checkpoints" / "ckpt_00000004.pt.abc123.tmp").write_bytes(b"half")  # a killed save
    with pytest.raises(ValueError, match="none of the 1 checkpoints"):
        Trainer(MODEL, TRAIN, cache, tmp_path)
    assert not (tmp_path / "checkpoints" / "ckpt_00000004.pt.abc123.tmp").exists()


def test_fresh_start_refuses_a_run_directory_with_checkpoints(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(MODEL, TRAIN, cache, tmp_path, resume=False)


def test_resume_with_another_model_config_is_a_clear_error(cache, tmp_path):
    Trainer(MODEL, TRAIN, cache, tmp_path).fit(until_step=2, progress=False)
    with pytest.raises(ValueError, match="residual_channels"):
        Trainer(dataclasses.replace(MODEL, residual_channels=16), TRAIN, cache, tmp_path)


def test_model_that_does_not_match_the_cache_is_a_clear_error(cache, tmp_path):
    with pytest.raises(ValueError, match="n_mels=16"):
        Trainer(dataclasses.replace(MODEL, cond_channels=80), TRAIN, cache, tmp_path)
    with pytest.raises(ValueError, match="multiple of hop_length"):
        Trainer(MODEL, dataclasses.replace(TRAIN, max_time_steps=500), cache, tmp_path)


# --- NaN --------------------------------------------------------------------------------------------------------------


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    trainer.fit(until_step=2, progress=False)
    good = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000002.pt")
    with torch.no_grad():
        trainer.model.out2.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 3: non-finite loss nan.*ckpt_00000002\.pt") as info:
        trainer.fit(progress=False)
    assert info.value.step == 3 and info.value.checkpoint.name == "ckpt_00000002.pt"
    assert trainer.step == 2  # the failed step did not count
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2]
    again = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000002.pt")
    assert all(torch.isfinite(v).all() for v in again["model"].values())
    assert_same_state(again["model"], good["model"])


# --- DDP ------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_close_after_first_adam_step(trainer: Trainer, other: dict[str, torch.Tensor], n_terms: int) -> None:
    """``other`` equals ``trainer``'s weights after its first Adam step up to the rounding of the gradient.

    The first step moves each weight by ``lr·g/(|g| + ε)`` (the bias corrections cancel), whose change for a gradient
    error ``δ`` is at most ``lr·ε·δ/(|g| + ε)²`` (and never more than ``2·lr``, a flipped sign); a sum of ``n_terms``
    fp32 terms in another order errs by ``δ <= eps·√n_terms·‖g‖``; the new weight itself is rounded (``eps·|w|``), and
    so is the update before it is added (``eps·lr``: its magnitude is at most ``lr``).
    """
    (group,) = trainer.optimizer.param_groups
    lr, adam_eps = trainer.config.lr * lr_factor(0, trainer.config), group["eps"]
    grads = {k: p.grad for k, p in trainer.model.named_parameters() if p.grad is not None}
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])).item()
    delta = EPS32 * math.sqrt(n_terms) * norm
    ours = weights(trainer)
    assert ours.keys() == other.keys()
    for k, w in ours.items():
        if k not in grads:  # buffers, and parameters without a gradient: Adam leaves them alone
            assert torch.equal(w, other[k]), k
            continue
        tol = lr * (adam_eps * delta / (grads[k].abs() + adam_eps) ** 2).clamp(max=2.0) + 2 * EPS32 * (w.abs() + lr)
        diff = (w - other[k]).abs()
        assert (diff <= tol).all(), f"{k} differs by {(diff - tol).max().item():.3g} beyond its tolerance"


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process_with_the_global_batch(cache, tmp_path):
    config = dataclasses.replace(TRAIN, ema_decay=None, batch_size=2, max_steps=3, val_every=None,
                                 checkpoint_every=None, lr=1e-3)  # fmt: skip
    spec = {"model": asdict(MODEL), "train": asdict(config), "steps": [1, 3]}
    (tmp_path / "dump").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(ROOT / "tests" / "_ddp_worker.py"), str(cache),
           str(tmp_path / "ddp"), str(tmp_path / "dump"), json.dumps(spec)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    dumps = {(r, s): torch.load(tmp_path / "dump" / f"rank{r}_step{s}.pt", weights_only=True)
             for r in range(2) for s in (1, 3)}  # fmt: skip
    for s in (1, 3):  # DDP keeps the replicas identical
        assert_same_state(dumps[0, s], dumps[1, s])
    # rank 0 alone saved the checkpoint, and it holds the replicas' weights
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "ckpt_00000003.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_by_rank"]) == 2
    assert_same_state(ckpt["model"], dumps[0, 3])

    # one step of 2 processes × batch 2 == one step of 1 process × batch 4 (same crops: see StepBatchSampler)
    single = Trainer(MODEL, dataclasses.replace(config, batch_size=4), cache, tmp_path / "single")
    single.fit(until_step=1, progress=False)
    assert_close_after_first_adam_step(single, dumps[0, 1], n_terms=4 * config.max_time_steps)
    changed = [k for k in dumps[0, 1] if not torch.equal(dumps[0, 1][k], dumps[0, 3][k])]
    assert changed  # (the comparison is not vacuous: training moves the weights)


def test_bf16_autocast_trains_on_cpu(cache, tmp_path):
    summary = Trainer(MODEL, dataclasses.replace(TRAIN, amp="bf16", max_steps=2), cache, tmp_path).fit(progress=False)
    assert summary.step == 2 and math.isfinite(summary.val_nll_bits)
    ckpt = load_checkpoint(summary.checkpoint)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values())  # autocast: fp32 weights
