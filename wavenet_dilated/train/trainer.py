"""Training: optimiser and learning-rate schedule, gradient clipping, EMA, bf16 autocast, DDP, atomic checkpoints with
exact resume, validation NLL in bits per sample, TensorBoard and a tqdm bar.

One run lives in one directory::

    out_dir/checkpoints/ckpt_00001000.pt   the last ``keep_last`` checkpoints, written atomically
    out_dir/checkpoints/best.pt            the checkpoint with the lowest validation NLL so far
    out_dir/tensorboard/                   event files (rank 0)
    out_dir/samples/step_00001000.wav      audio vocoded from a validation mel

Determinism: the batch at step ``k`` is a function of ``(seed, k, rank)`` only — utterance order is a permutation per
epoch seeded from ``(seed, epoch)``, and each utterance's crop comes from ``(seed, epoch, index)``
(:class:`~wavenet_dilated.data.AudioDataset`) — so a run resumed from a checkpoint sees exactly the batches the
uninterrupted run would have seen; with the optimiser, scheduler, EMA and RNG states restored, a deterministic CPU run
interrupted and resumed ends with the same weights as an uninterrupted one.

Under ``torchrun`` each process trains on its shard of every global batch (``batch_size`` per process); gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`; only rank 0 logs, writes TensorBoard and saves.

Examples:
    >>> from wavenet_dilated.presets import MODEL_PRESETS
    >>> trainer = Trainer(MODEL_PRESETS["demo"], TrainConfig(max_steps=100), "cache/demo", "runs/demo")  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
    >>> summary.step, summary.val_nll_bits  # doctest: +SKIP
    (100, 6.1)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..audio import AudioConfig, MelStats, log_mel, save_audio
from ..checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    checkpoint_name,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ..config import config_from_dict
from ..data.dataset import AudioDataset, Manifest, load_manifest, mix_seed
from ..generation.fast import fast_generate
from ..generation.reference import to_waveform
from ..nn.heads import nats_to_bits
from ..wavenet import WaveNet, WaveNetConfig
from . import distributed as dist
from .fused_loss import fused_loss

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainSummary",
    "NonFiniteLossError",
    "ModelEMA",
    "StepBatchSampler",
    "lr_factor",
]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    """How to train; stored in every checkpoint as ``asdict(config)``.

    Attributes:
        optimizer: ``"adam"`` or ``"adamw"`` (decoupled weight decay).
        lr: peak learning rate.
        betas: Adam's ``(β1, β2)``.
        weight_decay: L2 (adam) or decoupled (adamw) weight decay.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``.
        lr_decay: after warm-up, ``"cosine"`` or ``"exponential"`` from ``lr`` down to ``lr · min_lr_ratio`` at
            ``max_steps``; ``None`` keeps ``lr``.
        min_lr_ratio: the floor of the decay as a fraction of ``lr``.
        max_steps: optimiser steps in the whole run.
        batch_size: crops per process and step (the global batch is ``batch_size · world_size``).
        max_time_steps: crop length in samples, a multiple of the hop length.
        grad_clip: clip the global gradient norm to this; ``None`` = no clipping (the norm is still reported).
        ema_decay: decay of the exponential moving average of the weights (``None`` = no EMA). The effective decay is
            ``min(ema_decay, (1 + step) / (10 + step))``, so the average follows the weights early in training.
        eval_ema: validate and sample with the EMA weights (when there are any).
        amp: ``None`` (fp32) or ``"bf16"`` (autocast; for CUDA, optional on CPU).
        compile: run the training forward and backward through ``torch.compile``.
        fused: on the CPU, compute the training and validation loss with
            :func:`~wavenet_dilated.fasttrain.fused_loss` — the same function as ``WaveNet.loss`` (to fp32 rounding;
            with dropout, other random masks of the same distribution) as plain matrix products, measured 2–6 % faster
            per step for the ``demo`` and ``ljspeech`` presets. On CUDA ``WaveNet.loss`` is used either way: its
            convolutions run on cuDNN, and the fused path has not been measured there.
        log_every: steps between training scalars (mean loss over the interval, lr, grad norm, samples/s).
        val_every: steps between validations (``None`` = only at the end).
        val_max_utterances: validate on at most this many validation utterances (the first ones, by id).
        val_max_time_steps: validate on at most this many samples from the start of each utterance (a multiple of
            the hop length); ``None`` = whole utterances.
        checkpoint_every: steps between checkpoints (``None`` = only at the end).
        keep_last: how many ``ckpt_*.pt`` to keep (``best.pt`` is kept in addition).
        sample_every: steps between vocoded samples written to TensorBoard and ``samples/`` (``None`` = never).
        sample_seconds: length of those samples.
        seed: seeds initialisation, data order, crops, dropout and sampling.
        num_workers: DataLoader worker processes (0 = load in the training process).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None`` (CUDA when available).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    lr_decay: str | None = "cosine"
    min_lr_ratio: float = 0.01
    max_steps: int = 200_000
    batch_size: int = 8
    max_time_steps: int = 10240
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.9999
    eval_ema: bool = True
    amp: str | None = None
    compile: bool = False
    fused: bool = True
    log_every: int = 50
    val_every: int | None = 5000
    val_max_utterances: int | None = 64
    val_max_time_steps: int | None = None
    checkpoint_every: int | None = 5000
    keep_last: int = 3
    sample_every: int | None = 20000
    sample_seconds: float = 1.0
    seed: int = 0
    num_workers: int = 2
    device: str | None = None

    def __post_init__(self) -> None:
        def integer(name: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                off = " or None" if optional else ""
                raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}{off}, found {value!r}")

        def number(name: str, lo: float, hi: float, optional: bool = False, lo_open: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
            if not ok:
                bracket = "(" if lo_open else "["
                off = " or None" if optional else ""
                raise ValueError(f"TrainConfig.{name} must be a number in {bracket}{lo}, {hi}]{off}, found {value!r}")

        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'adamw', found {self.optimizer!r}")
        number("lr", 0.0, math.inf, lo_open=True)
        if not isinstance(self.betas, tuple):
            object.__setattr__(self, "betas", tuple(self.betas))
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), found {self.betas!r}")
        number("weight_decay", 0.0, math.inf)
        integer("warmup_steps", 0)
        if self.lr_decay not in (None, "cosine", "exponential"):
            raise ValueError(f"TrainConfig.lr_decay must be None, 'cosine' or 'exponential', found {self.lr_decay!r}")
        number("min_lr_ratio", 0.0, 1.0, lo_open=self.lr_decay == "exponential")
        integer("max_steps", 1)
        integer("batch_size", 1)
        integer("max_time_steps", 1)
        number("grad_clip", 0.0, math.inf, optional=True, lo_open=True)
        if self.ema_decay is not None:
            number("ema_decay", 0.0, 1.0, lo_open=True)
            if self.ema_decay >= 1.0:
                raise ValueError(f"TrainConfig.ema_decay must be < 1 (None = no EMA), found {self.ema_decay!r}")
        for name in ("eval_ema", "compile", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, found {getattr(self, name)!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"TrainConfig.amp must be None or 'bf16', found {self.amp!r}")
        integer("log_every", 1)
        integer("val_every", 1, optional=True)
        integer("val_max_utterances", 1, optional=True)
        integer("val_max_time_steps", 1, optional=True)
        integer("checkpoint_every", 1, optional=True)
        integer("keep_last", 1)
        integer("sample_every", 1, optional=True)
        number("sample_seconds", 0.0, math.inf, lo_open=True)
        integer("seed", 0)
        integer("num_workers", 0)
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device must be a string such as 'cpu' or 'cuda', found {self.device!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from ``asdict(config)``; unknown keys are a ValueError naming them."""
        return config_from_dict(cls, d)


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the weights were not updated by that step.

    Attributes:
        step: the step that failed (1-based: the update that would have made ``step`` updates).
        loss: the loss in nats (mean over processes).
        grad_norm: the global gradient norm.
        checkpoint: the last good checkpoint, or ``None`` when none was written.
    """

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint: Path | None) -> None:
        self.step, self.loss, self.grad_norm, self.checkpoint = step, loss, grad_norm, checkpoint
        last = f"the last good checkpoint is {str(checkpoint)!r}" if checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"training stopped at step {step}: non-finite loss {loss} (grad norm {grad_norm}); the weights were not "
            f"updated and {last}. Try a lower lr, a grad_clip, more warmup_steps or amp=None."
        )


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


# --- learning rate ------------------------------------------------------------------------------------------------


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` for the update that follows ``step`` completed updates.

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then ``lr_decay`` from 1 at the end of
    warm-up to ``min_lr_ratio`` at ``max_steps`` (constant beyond). Cosine: ``r + (1 − r)(1 + cos πp)/2``;
    exponential: ``r^p``, with ``p`` the fraction of the decay done.
    """
    c = config
    if step < c.warmup_steps:
        return (step + 1) / c.warmup_steps
    if c.lr_decay is None:
        return 1.0
    span = max(1, c.max_steps - c.warmup_steps)
    p = min(1.0, (step - c.warmup_steps) / span)
    r = c.min_lr_ratio
    if c.lr_decay == "cosine":
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    return r**p


# --- data order ---------------------------------------------------------------------------------------------------


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(item index, epoch)`` keys whose content depends only on ``(seed, step, rank)``.

    The stream of items is an endless sequence of epochs, each a permutation of ``range(n_items)`` seeded from
    ``(seed, epoch)``. The global batch of step ``k`` is positions ``[k·B·W, (k+1)·B·W)`` of that stream (``B`` =
    ``batch_size`` per process, ``W`` = ``world_size``) and process ``rank`` takes its ``rank``-th slice of ``B`` — so
    one process with batch ``2B`` sees exactly the items two processes with batch ``B`` see, and a resumed run picks
    up at any step without replaying the ones before.

    Args:
        n_items: dataset size.
        batch_size: items per process and step.
        seed: data-order seed.
        start_step, end_step: yields the batches of steps ``start_step … end_step − 1``.
        rank, world_size: this process's shard.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, start_step: int, end_step: int, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, found {n_items}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), found {rank}")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_step, self.end_step = start_step, max(start_step, end_step)
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, list[int]] = {}  # the last few epochs' permutations (batches straddle epochs)

    def permutation(self, epoch: int) -> list[int]:
        """The order of items in ``epoch``."""
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.n_items, generator=g).tolist()
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This process's ``(index, epoch)`` keys for ``step``."""
        first = (step * self.world_size + self.rank) * self.batch_size
        keys = []
        for p in range(first, first + self.batch_size):
            epoch, pos = divmod(p, self.n_items)
            keys.append((self.permutation(epoch)[pos], epoch))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.end_step - self.start_step


class _EpochCrops(Dataset):
    """``dataset[(index, epoch)]``: item ``index`` with the crop of ``epoch`` (see :meth:`AudioDataset.set_epoch`).

    Items are fetched one at a time in each process (main or worker), so selecting the epoch right before the fetch
    is safe.
    """

    def __init__(self, dataset: AudioDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


# --- EMA ----------------------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    ``module`` is a full copy of the model, so its ``state_dict()`` loads into a plain :class:`WaveNet`
    (``WaveNet.from_checkpoint`` picks it up from the checkpoint's ``"ema"`` entry).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Decay used for the update after ``step`` completed updates: ``min(decay, (1 + step) / (10 + step))``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, weight)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


# --- RNG state, as plain types and tensors (torch.load(weights_only=True) must read it) -----------------------------


# numpy's legacy global generator is saved and restored (not used by us): third-party code may draw from it.
def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def _finite_state(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- the trainer --------------------------------------------------------------------------------------------------


def _loss(model: WaveNet, audio: torch.Tensor, mel: torch.Tensor | None, fused: bool) -> torch.Tensor:
    """``model.loss(audio, mel)``, through :func:`~wavenet_dilated.fasttrain.fused_loss` when ``fused``."""
    return fused_loss(model, audio, mel) if fused else model.loss(audio, mel)


class _LossModule(nn.Module):
    """``forward`` returns the WaveNet's teacher-forced loss, so DDP (which hooks ``forward``) and ``torch.compile``
    see the whole training computation."""

    def __init__(self, model: WaveNet, fused: bool) -> None:
        super().__init__()
        self.model, self.fused = model, fused

    def forward(self, audio: torch.Tensor, mel: torch.Tensor | None) -> torch.Tensor:
        return _loss(self.model, audio, mel, self.fused)


class Trainer:
    """Trains a :class:`WaveNet` on a cache made by :func:`~wavenet_dilated.data.preprocess`.

    Args:
        model_config: the model to build (must match the cache: ``cond_channels == n_mels``, same ``hop_length``).
        config: how to train.
        cache_dir: a preprocessed cache (``manifest.json``, ``audio/``, ``mel/``).
        out_dir: the run directory (checkpoints, TensorBoard, samples).
        resume: ``True`` resumes from the newest loadable checkpoint in ``out_dir/checkpoints`` (a fresh run when
            there is none); a path resumes from that file; ``False`` starts fresh and refuses a run directory that
            already holds checkpoints.

    Under ``torchrun``, :func:`wavenet_dilated.distributed.setup` is called here (idempotent); call
    :func:`wavenet_dilated.distributed.teardown` when done.

    Attributes:
        model: the WaveNet being trained (unwrapped).
        ema: its :class:`ModelEMA`, or ``None``.
        step: optimiser updates done so far.
        device: where training runs.
        fused: whether the loss goes through :func:`~wavenet_dilated.fasttrain.fused_loss` (``config.fused`` on CPU).
    """

    def __init__(
        self,
        model_config: WaveNetConfig,
        config: TrainConfig,
        cache_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        resume: bool | str | os.PathLike[str] = True,
    ) -> None:
        if not isinstance(model_config, WaveNetConfig):
            raise ValueError(f"model_config must be a WaveNetConfig, found {type(model_config).__name__}")
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, found {type(config).__name__}")
        self.model_config, self.config = model_config, config
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / CHECKPOINT_DIR
        self.device = dist.setup(config.device)
        self.rank, self.world_size = dist.rank(), dist.world_size()
        if config.amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp='bf16' needs a GPU with bfloat16 support; set amp=None")

        # data
        self.manifest: Manifest = load_manifest(cache_dir)
        self.audio_config: AudioConfig = self.manifest.audio_config
        self.mel_stats: MelStats = self.manifest.mel_stats
        self._check_compatible(model_config)
        n_classes = model_config.n_classes if model_config.output == "categorical" else None
        self.train_set = AudioDataset(cache_dir, "train", config.max_time_steps, n_classes=n_classes, seed=config.seed)
        self.val_set: AudioDataset | None = None
        if self.manifest.entries("val"):
            self.val_set = AudioDataset(cache_dir, "val", None, n_classes=n_classes, seed=config.seed)
        else:
            logger.warning("the cache has no validation utterances: no validation NLL and no best.pt")
        hop = self.audio_config.hop_length
        if config.val_max_time_steps is not None and config.val_max_time_steps % hop:
            raise ValueError(f"val_max_time_steps must be a multiple of hop_length={hop}, "
                             f"found {config.val_max_time_steps}")

        # model, optimiser, schedule (same seed on every rank: identical initial weights)
        _seed_everything(config.seed)
        self.model = WaveNet(model_config).to(self.device)
        self.model.train()
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr, betas=config.betas,
                                 weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.config))
        self.fused = config.fused and self.device.type == "cpu"
        self.net: nn.Module = _LossModule(self.model, self.fused)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)  # broadcasts rank 0's weights
        if config.compile:
            self.net = torch.compile(self.net)
        self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay is not None else None

        self.step = 0
        self.val_nll_bits: float | None = None
        self.best_val_nll_bits: float | None = None
        self.last_checkpoint: Path | None = None
        self._stop_requested = self._stop_agreed = False
        self._last_sample: tuple[int, Path] | None = None
        _seed_everything(mix_seed(config.seed, self.rank))  # dropout streams differ per rank
        self._resume(resume)
        self._writer = None

    # ------------------------------------------------------------------ setup helpers
    def _check_compatible(self, c: WaveNetConfig) -> None:
        a = self.audio_config
        if c.cond_channels is not None:
            if c.cond_channels != a.n_mels:
                raise ValueError(f"the model expects {c.cond_channels} mel bins (cond_channels) but the cache has "
                                 f"n_mels={a.n_mels}")
            if c.hop_length != a.hop_length:
                raise ValueError(f"the model's hop_length {c.hop_length} differs from the cache's {a.hop_length}")
        if c.n_speakers is not None:
            raise ValueError("speaker-conditioned models need speaker ids, which LJSpeech-format caches do not have; "
                             "set n_speakers=None")

    def _resume(self, resume: bool | str | os.PathLike[str]) -> None:
        found: tuple[Path, dict[str, Any]] | None = None
        if dist.is_main() and self.checkpoint_dir.is_dir():
            for tmp in self.checkpoint_dir.glob("*.pt.*.tmp"):  # half-written by a killed save_checkpoint
                tmp.unlink(missing_ok=True)
        if resume is True:
            if dist.is_main():
                found = find_checkpoint(self.checkpoint_dir)
                existing = list_checkpoints(self.checkpoint_dir)
                if found is None and existing:
                    raise ValueError(f"none of the {len(existing)} checkpoints in {str(self.checkpoint_dir)!r} "
                                     "loads (see the warnings above); move them away to start afresh")
        elif resume is False or resume is None:
            existing = list_checkpoints(self.checkpoint_dir)
            if existing:
                raise ValueError(
                    f"{str(self.checkpoint_dir)!r} already holds checkpoints (latest: step {existing[-1][0]}): resume "
                    "from them, or start a fresh run in another out_dir"
                )
        else:
            path = Path(resume)
            if dist.is_main():
                found = (path, load_checkpoint(path, map_location="cpu"))
        if self.world_size > 1:  # rank 0 decides; every rank gets the same state (no shared filesystem needed)
            box = [found]
            torch.distributed.broadcast_object_list(box, src=0)
            found = box[0]
        if found is None:
            return
        path, ckpt = found
        self._load_state(ckpt, path)
        self.last_checkpoint = path
        logger.info("resumed from %s at step %d", path, self.step)

    def _load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        stored = WaveNetConfig.from_dict(ckpt["config"])
        if stored != self.model_config:
            ours = asdict(self.model_config)
            diff = {k: (v, ours[k]) for k, v in asdict(stored).items() if v != ours[k]}
            raise ValueError(f"{path}: checkpoint model config differs from the requested one (checkpoint, requested):"
                             f" {diff}")
        if "audio_config" in ckpt and AudioConfig.from_dict(ckpt["audio_config"]) != self.audio_config:
            raise ValueError(f"{path}: checkpoint was trained with another AudioConfig than the cache's: "
                             f"{ckpt['audio_config']} vs {self.audio_config.to_dict()}")
        for key in ("optimizer", "scheduler", "step"):
            if key not in ckpt:
                raise ValueError(f"{path}: not a training checkpoint (no {key!r} entry); use it as weights instead")
        if "mel_stats" in ckpt and MelStats.from_dict(ckpt["mel_stats"]) != self.mel_stats:
            logger.warning("%s: the cache's mel statistics differ from the checkpoint's (was the cache rebuilt?)", path)
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            else:
                self.ema = ModelEMA(self.model, self.config.ema_decay)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        if isinstance(ckpt.get("train_config"), Mapping):
            ours = asdict(self.config)
            changed = {k: (v, ours[k]) for k, v in ckpt["train_config"].items() if k in ours and v != ours[k]}
            if changed:
                logger.info("train config changed since the checkpoint (was, now): %s", changed)
        self.val_nll_bits = ckpt.get("val_nll_bits")
        self.best_val_nll_bits = ckpt.get("best_val_nll_bits")
        by_rank = ckpt.get("rng_by_rank")
        if by_rank is not None and len(by_rank) == self.world_size:
            _set_rng_state(by_rank[self.rank])
        elif self.rank == 0 and "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        else:
            _seed_everything(mix_seed(self.config.seed, self.rank, self.step))

    @property
    def writer(self):
        """The TensorBoard ``SummaryWriter`` on rank 0 (``None`` elsewhere); created on first use."""
        if self._writer is None and dist.is_main():
            from torch.utils.tensorboard import SummaryWriter  # deferred: importing tensorboard takes a second

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step or None)
        return self._writer

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
        """The batches of steps ``start_step … end_step − 1`` for this process (see :class:`StepBatchSampler`)."""
        c = self.config
        sampler = StepBatchSampler(len(self.train_set), c.batch_size, c.seed, start_step, end_step, self.rank,
                                   self.world_size)
        # its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG, which would
        # shift the dropout stream of a resumed run (the batches themselves use no RNG state)
        generator = torch.Generator().manual_seed(mix_seed(c.seed, start_step, self.rank))
        return DataLoader(_EpochCrops(self.train_set), batch_sampler=sampler, num_workers=c.num_workers,
                          collate_fn=self.train_set.collate_fn, pin_memory=self.device.type == "cuda",
                          generator=generator)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        """One optimiser update on ``batch`` (``audio (B, T)``, ``mel (B, n_mels, T / hop)``).

        Returns ``(loss in nats, gradient norm before clipping)``, both averaged over processes.

        Raises:
            NonFiniteLossError: the loss or gradient is NaN/inf; nothing was updated.
        """
        non_blocking = self.device.type == "cuda"
        audio = batch["audio"].to(self.device, non_blocking=non_blocking)
        mel = batch["mel"].to(self.device, non_blocking=non_blocking) if self.model_config.cond_channels else None
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.net(audio, mel)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # one reduction (and one device sync) for the logged loss, the NaN check and a pending stop request
        stats = torch.stack([loss.detach().float(), grad_norm.detach().float().to(loss.device),
                             torch.tensor(float(self._stop_requested), device=loss.device)])
        loss_v, norm_v, stop = dist.all_reduce_sum(stats).tolist()
        loss_v, norm_v = loss_v / self.world_size, norm_v / self.world_size
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise NonFiniteLossError(self.step + 1, loss_v, norm_v, self.last_checkpoint)
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
                    nll = _loss(model, audio, mel, self.fused)
                totals[0] += nll.double() * audio.shape[1]
                totals[1] += audio.shape[1]
        finally:
            model.train(was_training)
        dist.all_reduce_sum(totals)
        return float(nats_to_bits(totals[0] / totals[1]))

    def _sample_source(self, seconds: float) -> tuple[torch.Tensor | None, int]:
        """The normalised mel ``(n_mels, F)`` to vocode (first validation utterance, else first training one) and
        the number of samples to generate."""
        sr, hop = self.audio_config.sample_rate, self.audio_config.hop_length
        n = max(1, round(seconds * sr))
        if self.model_config.cond_channels is None:
            return None, n
        dataset = self.val_set if self.val_set is not None else AudioDataset(
            self.manifest.cache_dir, "train", None, n_classes=None, seed=self.config.seed)  # fmt: skip
        mel = dataset[0]["mel"]
        frames = min(mel.shape[1], math.ceil(n / hop))
        return mel[:, :frames], frames * hop

    @torch.no_grad()
    def sample(self, seconds: float | None = None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vocode the start of the first validation utterance's mel with the cached generator.

        Runs :func:`~wavenet_dilated.fastgen.fast_generate` (the cached generator in compiled code: the same samples
        as :func:`~wavenet_dilated.generation.generate` for a seed; it falls back to that with a warning).

        Args:
            seconds: how much (default ``sample_seconds``; at most the utterance).
            seed: sampling seed (default the training seed).

        Returns ``(waveform (T,) in [−1, 1] on the CPU, the conditioning mel (n_mels, F) or None)``.
        """
        mel, n = self._sample_source(self.config.sample_seconds if seconds is None else seconds)
        seed = self.config.seed if seed is None else seed
        model = self.eval_model
        was_training = model.training
        model.eval()
        threads = torch.get_num_threads()
        # one sample at a time is latency-bound: extra torch threads only add synchronisation (the reference
        # generator on 2 busy cores: 40 samples/s with one thread, 4 with two); fast_generate picks its own threads
        torch.set_num_threads(1)
        try:
            if mel is None:
                samples = fast_generate(model, n_samples=n, batch_size=1, seed=seed)
            else:
                samples = fast_generate(model, mel=mel[None].to(self.device), seed=seed)
            wave = to_waveform(samples, model)[0].float().cpu()
        finally:
            torch.set_num_threads(threads)
            model.train(was_training)
        return wave, mel

    def log_sample(self, seconds: float | None = None) -> Path | None:
        """Write a vocoded sample (:meth:`sample`) to ``out_dir/samples/step_<step>.wav`` and to TensorBoard (audio
        and mel image). Rank 0 only (returns ``None`` elsewhere); a second call at the same step returns the same
        file.
        """
        if not dist.is_main():
            return None
        if self._last_sample is not None and self._last_sample[0] == self.step:
            return self._last_sample[1]
        t0 = time.perf_counter()
        wave, mel = self.sample(seconds)
        path = save_audio(self.out_dir / "samples" / f"step_{self.step:08d}.wav", wave.numpy(),
                          self.audio_config.sample_rate)
        self.writer.add_audio("sample/audio", wave[None], self.step, sample_rate=self.audio_config.sample_rate)
        self.writer.add_image("sample/mel", self._mel_image(wave, mel), self.step, dataformats="CHW")
        self.writer.flush()
        self._last_sample = (self.step, path)
        logger.info("step %d: wrote sample %s (%.2f s of audio in %.1f s)", self.step, path,
                    wave.shape[0] / self.audio_config.sample_rate, time.perf_counter() - t0)
        return path

    def _mel_image(self, wave: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """``(1, H, F)`` grey image in [0, 1]: the conditioning mel above the generated audio's mel, low bins at the
        bottom of each."""
        n = wave.shape[0] - wave.shape[0] % self.audio_config.hop_length
        generated = self.mel_stats.normalize(log_mel(wave[:n], self.audio_config))
        rows = [generated]
        if target is not None:
            frames = min(target.shape[1], generated.shape[1])
            rows = [target[:, :frames].cpu(), torch.full((2, frames), 3.0), generated[:, :frames]]
        image = torch.cat([r.flip(0) for r in rows], dim=0)  # flip: low frequencies at the bottom
        return ((image + 3.0) / 6.0).clamp(0.0, 1.0)[None]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (call on every process: it gathers the RNG states)."""
        rng = _rng_state()
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
            "best_val_nll_bits": self.best_val_nll_bits,
        }

    def save_checkpoint(self, best: bool = False) -> Path:
        """Write ``ckpt_<step>.pt`` (and ``best.pt`` when ``best``), drop checkpoints beyond ``keep_last``.

        Collective: call on every process; rank 0 writes, the others wait. Never writes non-finite weights.
        """
        path = self.checkpoint_dir / checkpoint_name(self.step)
        payload = self.state_dict()
        dist.barrier()
        if dist.is_main():
            if not _finite_state(self.model):
                raise NonFiniteLossError(self.step, math.nan, math.nan, self.last_checkpoint)
            save_checkpoint(path, payload)
            if best:
                save_checkpoint(self.checkpoint_dir / BEST_CHECKPOINT, payload)
            for _, old in list_checkpoints(self.checkpoint_dir)[: -self.config.keep_last]:
                old.unlink(missing_ok=True)
            logger.info("step %d: saved %s%s", self.step, path, " (best)" if best else "")
        dist.barrier()
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _stop_on_signal(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask for a clean stop after the current step (checkpoint, then return); a second one
        interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt
            self._stop_requested = True
            logger.warning("stopping after this step (signal %d); send it again to interrupt at once", signum)

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def fit(self, until_step: int | None = None, progress: bool = True) -> TrainSummary:
        """Train from :attr:`step` to ``max_steps`` (or ``until_step``, to stop early as if interrupted).

        Validates every ``val_every`` steps and at the end, samples every ``sample_every`` steps, checkpoints every
        ``checkpoint_every`` steps, at the end, and when a signal asks to stop.

        Raises:
            NonFiniteLossError: the loss diverged (the last good checkpoint stays the newest one).
        """
        c = self.config
        end = c.max_steps if until_step is None else min(until_step, c.max_steps)
        t_start = time.perf_counter()
        if self.step >= end:
            logger.info("nothing to do: at step %d, training ends at step %d", self.step, end)
            return self._summary(t_start)
        samples_per_step = c.batch_size * c.max_time_steps * self.world_size
        logger.info(
            "training steps %d → %d on %s (%d process%s, global batch %d × %d samples, %.2fM parameters, %s)",
            self.step, end, self.device, self.world_size, "es" if self.world_size > 1 else "",
            c.batch_size * self.world_size, c.max_time_steps, self.model.n_parameters / 1e6,
            "fused loss" if self.fused else "model.loss",
        )  # fmt: skip
        self._stop_requested = self._stop_agreed = False
        bar = tqdm(total=end, initial=self.step, unit="step", dynamic_ncols=True, desc="train",
                   disable=not (progress and dist.is_main()))
        interval_loss, interval_steps, t_interval = 0.0, 0, time.perf_counter()
        saved_at = validated_at = -1
        try:
            with self._stop_on_signal():
                for batch in self.train_loader(self.step, end):
                    loss, grad_norm = self.train_step(batch)
                    self.step += 1
                    interval_loss += loss
                    interval_steps += 1
                    last = self.step == end or self._stop_agreed
                    if self.step % c.log_every == 0 or last:
                        dt = time.perf_counter() - t_interval
                        rate = interval_steps * samples_per_step / max(dt, 1e-9)
                        self._log_train(nats_to_bits(interval_loss / interval_steps), grad_norm, rate)
                        bar.set_postfix(loss=f"{nats_to_bits(loss):.3f}b", sps=f"{rate:,.0f}", refresh=False)
                        interval_loss, interval_steps, t_interval = 0.0, 0, time.perf_counter()
                    bar.update()
                    best = False
                    if (c.val_every is not None and self.step % c.val_every == 0) or last:
                        best = self._run_validation()
                        validated_at = self.step
                    if c.sample_every is not None and self.step % c.sample_every == 0:
                        self.log_sample()
                        dist.barrier()
                    if (c.checkpoint_every is not None and self.step % c.checkpoint_every == 0) or last or best:
                        self.save_checkpoint(best=best)
                        saved_at = self.step
                    if self._stop_agreed:
                        logger.warning("stopped at step %d on request; rerun the same command to resume", self.step)
                        break
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        assert saved_at == self.step and validated_at == self.step
        return self._summary(t_start, stopped_early=self._stop_agreed)

    def _summary(self, t_start: float, stopped_early: bool = False) -> TrainSummary:
        return TrainSummary(self.step, self.val_nll_bits, self.best_val_nll_bits, self.last_checkpoint,
                            time.perf_counter() - t_start, stopped_early)

    def _log_train(self, loss_bits: float, grad_norm: float, samples_per_s: float) -> None:
        if not dist.is_main():
            return
        w, s = self.writer, self.step
        w.add_scalar("train/nll_bits", loss_bits, s)
        w.add_scalar("train/lr", self.scheduler.get_last_lr()[0], s)
        w.add_scalar("train/grad_norm", grad_norm, s)
        w.add_scalar("train/samples_per_s", samples_per_s, s)
        logger.debug("step %d: loss %.4f bits/sample, grad norm %.3g, %.0f samples/s", s, loss_bits, grad_norm,
                     samples_per_s)

    def _run_validation(self) -> bool:
        """Validate, log, and say whether this is the best validation NLL so far."""
        t0 = time.perf_counter()
        val = self.validate()
        if val is None:
            return False
        self.val_nll_bits = val
        best = self.best_val_nll_bits is None or val < self.best_val_nll_bits
        if best:
            self.best_val_nll_bits = val
        if dist.is_main():
            self.writer.add_scalar("val/nll_bits", val, self.step)
            self.writer.flush()
            logger.info("step %d: validation NLL %.4f bits/sample%s (%.1f s)", self.step, val,
                        " (best)" if best else "", time.perf_counter() - t0)
        return best
