"""The trainer: optimiser and learning-rate schedule, gradient clipping, EMA, bf16 autocast, DDP, checkpoints with exact
resume, validation NLL in bits per sample, a stop on divergence, and a stop on SIGINT/SIGTERM that checkpoints first.

One run lives in one directory::

    out_dir/checkpoints/ckpt_00001000.pt   the last ``keep_last`` checkpoints, written atomically
    out_dir/checkpoints/best.pt            a copy of the best checkpoint so far: the lowest validation NLL, or the
                                           best copy-synthesis metric (``best_metric``, :mod:`.quality_log`)
    out_dir/tensorboard/                   event files (rank 0)
    out_dir/samples/step_00001000.wav      audio vocoded from a validation mel

Determinism: the batch at step ``k`` is a function of ``(seed, k, rank)`` only (:mod:`.sampler`), so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have seen; with the optimiser, scheduler, EMA
and RNG states restored (:mod:`.state`), a deterministic CPU run interrupted and resumed ends with the same weights as
an uninterrupted one.

Reliability: ``ckpt_<step>.pt`` is written before ``best.pt`` and old checkpoints are deleted only after both, so a
kill or a full disk at any moment leaves the newest complete checkpoint to resume from; a resumed run repairs a
missing or stale ``best.pt`` (:func:`~wavenet_dilated.checkpoint.repair_best`). Settings changed on resume are applied
to the restored optimiser and schedule, or refused (:func:`.state.apply_changed_config`). A loss far above a uniform
guess or a validation NLL far above the best stops the run with :class:`~.monitor.DivergedError` before the diverged
weights are saved (see ``TrainConfig.diverge_margin_bits``).

Under ``torchrun`` each process trains on its shard of every global batch (``batch_size`` per process); gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`; only rank 0 logs, writes TensorBoard and saves.

This module is over 500 lines because it is the :class:`Trainer` class alone, cut into setup, step, validation,
checkpoint and loop methods; what they use lives in the sibling modules (config, sampler, state, monitor, signals,
fused_loss, quality_log; speakers in :mod:`wavenet_dilated.data.speakers`). Each method only wires those together for
the run's own state (model, EMA, optimiser, step, speakers, quality log); splitting the class itself would spread that
one object's state over several files.

Examples:
    >>> from wavenet_dilated.presets import MODEL_PRESETS
    >>> trainer = Trainer(MODEL_PRESETS["demo"], TrainConfig(max_steps=100), "cache/demo", "runs/demo")  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
    >>> summary.step, summary.val_nll_bits  # doctest: +SKIP
    (100, 6.1)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..audio import AudioConfig
from ..checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    checkpoint_name,
    copy_checkpoint,
    list_checkpoints,
    read_speakers,
    save_checkpoint,
)
from ..data.dataset import AudioDataset, history_length, mix_seed
from ..data.manifest import Manifest, load_manifest
from ..data.speakers import speaker_conditioning
from ..mel import MelStats
from ..nn.heads import nats_to_bits
from ..wavenet import WaveNet, WaveNetConfig
from . import distributed as dist
from . import sampler
from .config import TrainConfig, lr_factor
from .fused_loss import LossModule, training_loss
from .monitor import DivergedError, Monitor, NonFiniteLossError, TrainMeter, divergence, generate_sample, sample_source
from .quality_log import QualityLog
from .signals import StopRequest
from .state import (
    ModelEMA,
    all_finite,
    apply_changed_config,
    check_resumable,
    find_resume_checkpoint,
    restore_best,
    restore_rng,
    rng_state,
    seed_everything,
)

__all__ = ["DivergedError", "NonFiniteLossError", "TrainSummary", "Trainer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    """What :meth:`Trainer.fit` did: the step reached, the last and best validation NLL (bits/sample, ``None`` if
    never validated), the last checkpoint written, the wall time and whether a signal stopped it early."""

    step: int
    val_nll_bits: float | None
    best_val_nll_bits: float | None
    checkpoint: Path | None
    seconds: float
    stopped_early: bool = False


class Trainer:
    """Trains a :class:`WaveNet` on a cache made by :func:`~wavenet_dilated.data.dataset.preprocess`.

    Args:
        model_config: the model to build (must match the cache: ``cond_channels == n_mels``, same ``hop_length``).
            A cache of 2 speakers or more switches speaker conditioning on when ``n_speakers`` is ``None``
            (:func:`~wavenet_dilated.data.speakers.speaker_conditioning`; :attr:`model_config` is then the model
            trained); a set ``n_speakers`` must equal the cache's number of speakers.
        config: how to train.
        cache_dir: a preprocessed cache (``manifest.json``, ``audio/``, ``mel/``).
        out_dir: the run directory (checkpoints, TensorBoard, samples).
        resume: ``True`` resumes from the newest loadable checkpoint in ``out_dir/checkpoints`` (a fresh run when
            there is none); a path resumes from that file; ``False`` starts fresh and refuses a run directory that
            already holds checkpoints.
        use_speakers: condition on the speaker ids of a multi-speaker cache (see ``model_config``); ``False`` trains
            one speaker-independent model on all its voices.

    Under ``torchrun``, :func:`wavenet_dilated.train.distributed.setup` is called here (idempotent); call
    :func:`wavenet_dilated.train.distributed.teardown` when done.

    Attributes:
        model: the WaveNet being trained (unwrapped).
        model_config: its config (with the speaker conditioning the cache asks for).
        speakers: the speakers' names of a speaker-conditioned model (index = id; stored in every checkpoint as
            ``"speakers"``), else ``None``.
        ema: its :class:`~.state.ModelEMA`, or ``None``.
        step: optimiser updates done so far.
        device: where training runs.
        fused: whether the loss goes through :func:`~wavenet_dilated.train.fused_loss.fused_loss` (``config.fused``
            on CPU).
    """

    def __init__(
        self,
        model_config: WaveNetConfig,
        config: TrainConfig,
        cache_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        resume: bool | str | os.PathLike[str] = True,
        use_speakers: bool = True,
    ) -> None:
        if not isinstance(model_config, WaveNetConfig):
            raise ValueError(f"model_config must be a WaveNetConfig, found {type(model_config).__name__}")
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, found {type(config).__name__}")
        self.model_config, self.config, self.use_speakers = model_config, config, bool(use_speakers)
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / CHECKPOINT_DIR
        self.device = dist.setup(config.device)
        self.rank, self.world_size = dist.rank(), dist.world_size()
        if config.amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp='bf16' needs a GPU with bfloat16 support; set amp=None")
        self._setup_data(cache_dir)
        self.monitor = Monitor(self.out_dir, self.audio_config, self.mel_stats)
        self.quality = QualityLog(self.monitor, self.manifest.cache_dir, config, self.audio_config, self.mel_stats)
        self._setup_model()

        self.step = 0
        self.val_nll_bits: float | None = None
        self.val_step: int | None = None  # the step val_nll_bits was measured at
        self.best_val_nll_bits: float | None = None
        self._last_batch: Mapping[str, torch.Tensor] | None = None
        self.last_checkpoint: Path | None = None
        self._stop, self._stop_agreed = StopRequest(), False
        self._last_sample: tuple[int, Path] | None = None
        seed_everything(mix_seed(config.seed, self.rank))  # dropout streams differ per rank
        self._resume(resume)

    # ------------------------------------------------------------------ setup
    def _setup_data(self, cache_dir: str | os.PathLike[str]) -> None:
        """The cache's manifest, audio settings and mel statistics; the training and validation sets."""
        c = self.config
        self.manifest: Manifest = load_manifest(cache_dir)
        self.audio_config: AudioConfig = self.manifest.audio_config
        self.mel_stats: MelStats = self.manifest.mel_stats
        # a multi-speaker cache switches speaker conditioning on; a model that asks for it must match the cache
        self.model_config = speaker_conditioning(self.model_config, self.manifest.speakers,
                                                 f"the cache {str(cache_dir)!r}", self.use_speakers)  # fmt: skip
        #: the speakers' names (index = id) of a speaker-conditioned model, stored in every checkpoint
        self.speakers: list[str] | None = list(self.manifest.speakers) if self.model_config.n_speakers else None
        self._check_compatible(self.model_config)
        n_classes = self.model_config.n_classes if self.model_config.output == "categorical" else None
        self.n_history = (history_length(self.model_config.receptive_field, self.audio_config.hop_length)
                          if c.crop_history == "receptive_field" else 0)  # fmt: skip
        self.train_set = AudioDataset(cache_dir, "train", c.max_time_steps, n_classes=n_classes, seed=c.seed,
                                      history=self.n_history, noise_db=c.dither_db)  # fmt: skip
        self.val_set: AudioDataset | None = None
        if self.manifest.entries("val"):
            self.val_set = AudioDataset(cache_dir, "val", None, n_classes=n_classes, seed=c.seed)
        else:
            logger.warning("the cache has no validation utterances: no validation NLL and no best.pt")
        hop = self.audio_config.hop_length
        if c.val_max_time_steps is not None and c.val_max_time_steps % hop:
            raise ValueError(f"val_max_time_steps must be a multiple of hop_length={hop}, "
                             f"found {c.val_max_time_steps}")

    def _check_compatible(self, c: WaveNetConfig) -> None:
        a = self.audio_config
        if c.cond_channels is not None:
            if c.cond_channels != a.n_mels:
                raise ValueError(f"the model expects {c.cond_channels} mel bins (cond_channels) but the cache has "
                                 f"n_mels={a.n_mels}")
            if c.hop_length != a.hop_length:
                raise ValueError(f"the model's hop_length {c.hop_length} differs from the cache's {a.hop_length}")

    def _setup_model(self) -> None:
        """The model (the same seed on every rank: identical initial weights), optimiser, schedule, the loss module
        (DDP-wrapped and compiled as asked) and the EMA."""
        c = self.config
        seed_everything(c.seed)
        self.model = WaveNet(self.model_config).to(self.device)
        self.model.train()
        opt_cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.config))
        self.fused = c.fused and self.device.type == "cpu"
        self.net: nn.Module = LossModule(self.model, self.fused, self.n_history)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)  # broadcasts rank 0's weights
        if c.compile:
            self.net = torch.compile(self.net)
        self.ema = ModelEMA(self.model, c.ema_decay) if c.ema_decay is not None else None

    def _resume(self, resume: bool | str | os.PathLike[str]) -> None:
        found = find_resume_checkpoint(self.checkpoint_dir, resume)
        if found is None:
            return
        path, ckpt = found
        self._load_state(ckpt, path)
        self.last_checkpoint = path
        if self.config.best_metric == "val_nll":  # else best.pt is the best by a quality metric: no repair by NLL
            self.best_val_nll_bits = restore_best(self.checkpoint_dir)  # what best.pt holds, after any repair
        logger.info("resumed from %s at step %d", path, self.step)

    def _load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        check_resumable(ckpt, path, self.model_config, self.audio_config, self.mel_stats)
        stored = read_speakers(ckpt, path, self.model_config.n_speakers)
        if stored is not None and stored != self.speakers:
            raise ValueError(f"{path} was trained on the speakers {', '.join(stored)} but the cache has "
                             f"{', '.join(self.speakers or ['none'])}: the speaker ids would change meaning; resume "
                             "with the same corpus, or start a new run in another run directory")  # fmt: skip
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            else:
                self.ema = ModelEMA(self.model, self.config.ema_decay)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        apply_changed_config(ckpt, self.config, self.optimizer, self.scheduler, path)
        self.val_nll_bits = ckpt.get("val_nll_bits")
        self.quality.load_state_dict(ckpt.get("quality"))
        self.val_step = ckpt.get("val_step", self.step if self.val_nll_bits is not None else None)
        restore_rng(ckpt, self.rank, self.world_size, self.config.seed, self.step)

    @property
    def writer(self):
        """The TensorBoard ``SummaryWriter`` on rank 0 (``None`` elsewhere); created on first use."""
        return self.monitor.writer(self.step)

    @property
    def eval_model(self) -> WaveNet:
        """The weights used for validation and samples: the EMA's when there is one and ``eval_ema`` is set."""
        if self.ema is not None and self.config.eval_ema:
            return self.ema.module
        return self.model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_loader(self, start_step: int, end_step: int) -> DataLoader:
        """The batches of steps ``start_step … end_step − 1`` for this process (see :func:`.sampler.train_loader`)."""
        return sampler.train_loader(self.train_set, self.config, start_step, end_step, self.rank, self.world_size,
                                    pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        """One optimiser update on ``batch`` (``audio (B, T)``, ``mel (B, n_mels, T / hop)``).

        Returns ``(loss in nats, gradient norm before clipping)``, both averaged over processes.

        Raises:
            NonFiniteLossError: the loss or gradient is NaN/inf; nothing was updated.
            DivergedError: the loss is far above a uniform guess (``diverge_margin_bits``); nothing was updated.
        """
        non_blocking = self.device.type == "cuda"
        audio = batch["audio"].to(self.device, non_blocking=non_blocking)
        mel = batch["mel"].to(self.device, non_blocking=non_blocking) if self.model_config.cond_channels else None
        speaker = self._speaker_ids(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.net(audio, mel, speaker)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # one reduction (and one device sync) for the logged loss, the NaN check and a pending stop request
        stats = torch.stack([loss.detach().float(), grad_norm.detach().float().to(loss.device),
                             torch.tensor(float(self._stop.requested), device=loss.device)])
        loss_v, norm_v, stop = dist.all_reduce_sum(stats).tolist()
        loss_v, norm_v = loss_v / self.world_size, norm_v / self.world_size
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise NonFiniteLossError(self.step + 1, loss_v, norm_v, self.last_checkpoint)
        diverged = divergence("the training loss", nats_to_bits(loss_v), self.model_config, self.config)
        if diverged is not None:
            raise DivergedError(self.step + 1, diverged, self.last_checkpoint, kept="the weights were not updated")
        self._last_batch = batch
        self._stop_agreed = stop > 0
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return loss_v, norm_v

    # ------------------------------------------------------------------ validation and samples
    @torch.no_grad()
    def validate(self) -> float | None:
        """Teacher-forced NLL in bits per sample on the validation split (``None`` without one).

        Deterministic: the first ``val_max_utterances`` utterances (by id), each from its start, at most
        ``val_max_time_steps`` samples, one at a time (no padding); shared out across processes and summed.
        """
        if self.val_set is None:
            return None
        model, c, hop = self.eval_model, self.config, self.audio_config.hop_length
        n = len(self.val_set) if c.val_max_utterances is None else min(c.val_max_utterances, len(self.val_set))
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # Σ nll (nats), Σ samples
        try:
            for i in range(self.rank, n, self.world_size):
                item = self.val_set[i]
                audio, mel = item["audio"], item["mel"]
                if c.val_max_time_steps is not None:
                    audio, mel = audio[: c.val_max_time_steps], mel[:, : c.val_max_time_steps // hop]
                audio = audio[None].to(self.device)
                mel = mel[None].to(self.device) if self.model_config.cond_channels else None
                with self._autocast():
                    nll = training_loss(model, audio, mel, self.fused, speaker=self._speaker_ids(item))
                totals[0] += nll.double() * audio.shape[1]
                totals[1] += audio.shape[1]
        finally:
            model.train(was_training)
        dist.all_reduce_sum(totals)
        return float(nats_to_bits(totals[0] / totals[1]))

    def _speaker_ids(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The speaker ids ``(B,)`` of a batch (or ``(1,)`` of an item) on the device; ``None`` for a model without
        speaker conditioning."""
        if self.model_config.n_speakers is None:
            return None
        return batch["speaker"].reshape(-1).to(self.device)

    def _sample_source(self, seconds: float) -> tuple[torch.Tensor | None, int, int | None]:
        """The normalised mel ``(n_mels, F)`` to vocode (first validation utterance, else first training one; ``None``
        for an unconditioned model), the number of samples to generate and that utterance's speaker id (``None``
        without speaker conditioning)."""
        c = self.model_config
        if c.cond_channels is None and c.n_speakers is None:
            return (*sample_source(None, seconds, self.audio_config), None)
        dataset = self.val_set if self.val_set is not None else AudioDataset(
            self.manifest.cache_dir, "train", None, n_classes=None, seed=self.config.seed)  # fmt: skip
        item = dataset[0]
        mel, n = sample_source(item["mel"] if c.cond_channels is not None else None, seconds, self.audio_config)
        return mel, n, int(item["speaker"]) if c.n_speakers is not None else None

    def sample(self, seconds: float | None = None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vocode the start of the first validation utterance's mel with :func:`~.monitor.generate_sample`.

        Args:
            seconds: how much (default ``sample_seconds``; at most the utterance).
            seed: sampling seed (default the training seed).

        Returns ``(waveform (T,) in [−1, 1] on the CPU, the conditioning mel (n_mels, F) or None)``.
        """
        mel, n, speaker = self._sample_source(self.config.sample_seconds if seconds is None else seconds)
        seed = self.config.seed if seed is None else seed
        return generate_sample(self.eval_model, mel, n, self.device, seed, speaker), mel

    def log_sample(self, seconds: float | None = None) -> Path | None:
        """Write a vocoded sample (:meth:`sample`) to ``out_dir/samples/step_<step>.wav`` and to TensorBoard (audio
        and mel image). Rank 0 only (returns ``None`` elsewhere); a second call at the same step returns the same
        file.
        """
        if not dist.is_main():
            return None
        if self._last_sample is not None and self._last_sample[0] == self.step:
            return self._last_sample[1]
        started = time.perf_counter()
        wave, mel = self.sample(seconds)
        path = self.monitor.log_sample(self.step, wave, mel, started)
        self._last_sample = (self.step, path)
        return path

    def _run_validation(self) -> bool:
        """Validate, log, and say whether this is the best validation NLL so far.

        Raises:
            DivergedError: the NLL is far above a uniform guess or the best so far (nothing is saved).
        """
        started = time.perf_counter()
        val = self.validate()
        if val is None:
            return False
        diverged = divergence("the validation NLL", val, self.model_config, self.config, self.best_val_nll_bits)
        if diverged is not None:
            raise DivergedError(self.step, diverged, self.last_checkpoint)
        self.val_nll_bits, self.val_step = val, self.step
        best = self.best_val_nll_bits is None or val < self.best_val_nll_bits
        if best:
            self.best_val_nll_bits = val
        self.monitor.log_validation(self.step, val, best and self.config.best_metric == "val_nll", started)
        return best

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (call on every process: it gathers the RNG states)."""
        rng = rng_state()
        rng_by_rank = dist.all_gather_object(rng)
        return {
            "config": asdict(self.model_config),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": rng,
            "rng_by_rank": rng_by_rank if self.world_size > 1 else None,
            "world_size": self.world_size,
            "audio_config": self.audio_config.to_dict(),
            "mel_stats": self.mel_stats.to_dict(),
            "train_config": asdict(self.config),
            "val_nll_bits": self.val_nll_bits,
            "val_step": self.val_step,
            "best_val_nll_bits": self.best_val_nll_bits,
            "quality": self.quality.state_dict(),
            "speakers": self.speakers,
        }

    def save_checkpoint(self, best: bool = False) -> Path:
        """Write ``ckpt_<step>.pt``, then (when ``best``) copy it to ``best.pt``, then drop the checkpoints beyond
        ``keep_last``: a kill or a failed write between leaves the newest complete checkpoint, and a resumed run
        repairs ``best.pt``.

        Collective: call on every process; rank 0 writes, the others wait. Never writes non-finite weights, nor
        weights whose loss shows divergence (:meth:`_check_unvalidated_weights`).

        Raises:
            CheckpointWriteError: a write failed (e.g. a full disk); the files already there are intact.
        """
        path = self.checkpoint_dir / checkpoint_name(self.step)
        self._check_unvalidated_weights()
        payload = self.state_dict()
        dist.barrier()
        if dist.is_main():
            if not all_finite(self.model):
                raise NonFiniteLossError(self.step, math.nan, math.nan, self.last_checkpoint)
            save_checkpoint(path, payload)
            if best:
                copy_checkpoint(path, self.checkpoint_dir / BEST_CHECKPOINT)
            for _, old in list_checkpoints(self.checkpoint_dir)[: -self.config.keep_last]:
                old.unlink(missing_ok=True)
            logger.info("step %d: saved %s%s", self.step, path, " (best)" if best else "")
        dist.barrier()
        self.last_checkpoint = path
        return path

    @torch.no_grad()
    def _check_unvalidated_weights(self) -> None:
        """Before saving weights no validation judged (a ``checkpoint_every`` step without validation): the loss of
        the last training batch under them (eval mode: no dropout, no random numbers drawn), so that a step that
        diverged is not saved as the last good checkpoint. Collective."""
        if self.config.diverge_margin_bits is None or self.val_step == self.step or self._last_batch is None:
            return
        batch = self._last_batch
        audio = batch["audio"].to(self.device)
        mel = batch["mel"].to(self.device) if self.model_config.cond_channels else None
        self.model.eval()
        try:
            with self._autocast():
                loss = training_loss(self.model, audio, mel, False, self.n_history, self._speaker_ids(batch))
                loss = loss.detach().float().reshape(1)
        finally:
            self.model.train()
        loss_v = dist.all_reduce_sum(loss).item() / self.world_size
        diverged = None if math.isfinite(loss_v) else f"non-finite loss {loss_v} after the update"
        diverged = diverged or divergence("the loss after the update", nats_to_bits(loss_v), self.model_config,
                                          self.config)  # fmt: skip
        if diverged is not None:
            raise DivergedError(self.step, diverged, self.last_checkpoint)

    # ------------------------------------------------------------------ the loop
    def fit(self, until_step: int | None = None, progress: bool = True) -> TrainSummary:
        """Train from :attr:`step` to ``max_steps`` (or ``until_step``, to stop early as if interrupted).

        Validates every ``val_every`` steps and at the end, samples every ``sample_every`` steps, checkpoints every
        ``checkpoint_every`` steps, at the end, and when a signal asks to stop.

        Raises:
            DivergedError: the loss diverged (:class:`NonFiniteLossError` when it is NaN or infinite); the last good
                checkpoint stays the newest one.
            CheckpointWriteError: a checkpoint could not be written (e.g. a full disk); the older ones are intact.
        """
        c = self.config
        end = c.max_steps if until_step is None else min(until_step, c.max_steps)
        t_start = time.perf_counter()
        if self.step >= end:
            logger.info("nothing to do: at step %d, training ends at step %d", self.step, end)
            return self._summary(t_start)
        self._log_start(end)
        self._stop, self._stop_agreed = StopRequest(), False
        bar = tqdm(total=end, initial=self.step, unit="step", dynamic_ncols=True, desc="train",
                   disable=not (progress and dist.is_main()))
        meter = TrainMeter(c.batch_size * c.max_time_steps * self.world_size)
        finished = False
        try:
            with self._stop.on_signals():
                for batch in self.train_loader(self.step, end):
                    loss, grad_norm = self.train_step(batch)
                    self.step += 1
                    meter.add(loss)
                    finished = self._after_step(loss, grad_norm, self.step == end or self._stop_agreed, meter, bar)
                    if self._stop_agreed:
                        logger.warning("stopped at step %d on request; rerun the same command to resume", self.step)
                        break
        finally:
            bar.close()
            self.monitor.flush()
        assert finished, "the loader ended before the last step"
        return self._summary(t_start, stopped_early=self._stop_agreed)

    def _log_start(self, end: int) -> None:
        c = self.config
        logger.info(
            "training steps %d → %d on %s (%d process%s, global batch %d × %d samples, %.2fM parameters, %s)",
            self.step, end, self.device, self.world_size, "es" if self.world_size > 1 else "",
            c.batch_size * self.world_size, c.max_time_steps, self.model.n_parameters / 1e6,
            "fused loss" if self.fused else "model.loss",
        )  # fmt: skip

    def _after_step(self, loss: float, grad_norm: float, last: bool, meter: TrainMeter, bar: tqdm) -> bool:
        """Log, validate, sample and checkpoint as the schedule asks after a step (``last``: the run's final step
        or a stop was agreed, which always validates and checkpoints). Says whether this step validated and saved."""
        c = self.config
        if self.step % c.log_every == 0 or last:
            loss_bits, rate = meter.mean()
            self.monitor.log_train(self.step, loss_bits, self.scheduler.get_last_lr()[0], grad_norm, rate)
            bar.set_postfix(loss=f"{nats_to_bits(loss):.3f}b", sps=f"{rate:,.0f}", refresh=False)
            meter.reset()
        bar.update()
        best = validated = False
        if (c.val_every is not None and self.step % c.val_every == 0) or last:
            best = self._run_validation()
            validated = True
        best = self.quality.after_step(self.eval_model, self.step, validated, last, best, self.device)
        if c.sample_every is not None and self.step % c.sample_every == 0:
            self.log_sample()
            dist.barrier()
        saved = (c.checkpoint_every is not None and self.step % c.checkpoint_every == 0) or last or best
        if saved:
            self.save_checkpoint(best=best)
        return validated and saved

    def _summary(self, t_start: float, stopped_early: bool = False) -> TrainSummary:
        return TrainSummary(self.step, self.val_nll_bits, self.best_val_nll_bits, self.last_checkpoint,
                            time.perf_counter() - t_start, stopped_early)
