"""How to train: :class:`TrainConfig` (validated on construction, stored in every checkpoint) and the learning-rate
schedule :func:`lr_factor` it describes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import check_int, check_number, config_from_dict

__all__ = ["BEST_METRICS", "CROP_HISTORY", "TrainConfig", "lr_factor"]

#: what ``TrainConfig.crop_history`` may be (see :func:`wavenet_dilated.data.dataset.history_length`)
CROP_HISTORY = ("none", "receptive_field")
#: what ``best.pt`` can be chosen by, and whether higher is better: the validation NLL or a copy-synthesis metric of
#: :data:`wavenet_dilated.quality.metrics.METRICS` (the same names and directions)
BEST_METRICS: dict[str, bool] = {"val_nll": False, "stoi": True, "pesq_wb": True, "mel_l1": False, "mcd_db": False,
                                 "f0_rmse_cents": False}


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
        max_time_steps: crop length in samples, a multiple of the hop length: the samples the loss is taken on.
        crop_history: ``"receptive_field"``: each crop also carries the receptive field less one (rounded up to whole
            hops) of real audio and mel before its ``max_time_steps`` targets, as inputs only, so that every target
            is predicted from real history (silence before an utterance's start); ``"none"``: the first
            ``receptive_field − 1`` targets of a crop see zero padding instead. Validation (whole utterances from
            their start) is the same either way, so validation NLLs compare across the two.
        dither_db: dithering: white noise at this RMS level (dB relative to full scale, e.g. −60) added to every
            training crop's utterance, its mel recomputed from the noisy audio
            (:class:`~wavenet_dilated.data.dataset.AudioDataset`'s ``noise_db``), so that the model hears a noise
            floor under the mel of a noise floor (real recordings have one; synthetic ones are digitally silent);
            validation and quality are measured on the clean audio. ``None`` = off.
        grad_clip: clip the global gradient norm to this; ``None`` = no clipping (the norm is still reported).
        diverge_margin_bits: stop the run (:class:`~wavenet_dilated.train.monitor.DivergedError`) when a step's
            training loss, or a validation NLL, is more than this many bits/sample above a baseline
            (:func:`~wavenet_dilated.train.monitor.divergence_baseline_bits`): for the categorical head the NLL of a
            uniform guess, ``log2(n_classes)``; for the continuous heads (mixture of logistics, gaussian), whose
            healthy loss can jump far above a uniform guess for a few steps, the NLL of the worst prediction inside
            the signal's range (locations in [−1, 1], scales at ``exp(log_scale_min)``). The default, 8 bits, is a
            model 256 times less likely than that baseline on average, which a converging run does not reach even at
            initialisation; ``None`` = off.
        diverge_val_rise_bits: stop the run when a validation NLL is more than this many bits/sample above the best
            one so far (a run that has started to diverge, not one that overfits a little); ``None`` = off.
        ema_decay: decay of the exponential moving average of the weights (``None`` = no EMA). The effective decay is
            ``min(ema_decay, (1 + step) / (10 + step))``, so the average follows the weights early in training.
        eval_ema: validate and sample with the EMA weights (when there are any).
        amp: ``None`` (fp32) or ``"bf16"`` (autocast; for CUDA, optional on CPU).
        compile: run the training forward and backward through ``torch.compile``.
        fused: on the CPU, compute the training and validation loss with
            :func:`~wavenet_dilated.train.fused_loss.fused_loss` — the same function as ``WaveNet.loss`` (to fp32
            rounding; with dropout, other random masks of the same distribution) as plain matrix products, faster per
            step on the CPU (see benchmarks/README.md). On CUDA ``WaveNet.loss`` is used either way: its convolutions
            run on cuDNN, and the fused path has not been measured there.
        log_every: steps between training scalars (mean loss over the interval, lr, grad norm, samples/s).
        val_every: steps between validations (``None`` = only at the end).
        val_max_utterances: validate on at most this many validation utterances (the first ones, by id).
        val_max_time_steps: validate on at most this many samples from the start of each utterance (a multiple of
            the hop length); ``None`` = whole utterances.
        checkpoint_every: steps between checkpoints (``None`` = only at the end).
        keep_last: how many ``ckpt_*.pt`` to keep (``best.pt`` is kept in addition).
        sample_every: steps between vocoded samples written to TensorBoard and ``samples/`` (``None`` = never).
        sample_seconds: length of those samples.
        quality_utterances: copy-synthesis quality during training: vocode the first this many validation
            utterances (their first ``quality_seconds``) with the eval weights and log their metrics (STOI, PESQ,
            log-mel L1, …), audio and spectrograms to TensorBoard (:mod:`~wavenet_dilated.train.quality_log`);
            ``None`` = off.
        quality_every: steps between those; ``None`` = with every validation.
        quality_seconds: how much of each utterance to vocode.
        best_metric: what ``best.pt`` is chosen by: ``"val_nll"`` (lowest), or a copy-synthesis metric measured as
            above: ``"stoi"``, ``"pesq_wb"`` (highest), ``"mel_l1"``, ``"mcd_db"``, ``"f0_rmse_cents"`` (lowest);
            a quality metric needs ``quality_utterances``.
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
    crop_history: str = "receptive_field"
    dither_db: float | None = None
    grad_clip: float | None = 1.0
    diverge_margin_bits: float | None = 8.0
    diverge_val_rise_bits: float | None = 2.0
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
    quality_utterances: int | None = None
    quality_every: int | None = None
    quality_seconds: float = 3.0
    best_metric: str = "val_nll"
    seed: int = 0
    num_workers: int = 2
    device: str | None = None

    def __post_init__(self) -> None:
        # checked in field order, so the first bad field is the one named
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'adamw', found {self.optimizer!r}")
        self._check_number("lr", 0.0, math.inf, low_open=True)
        if not isinstance(self.betas, tuple):
            object.__setattr__(self, "betas", tuple(self.betas))
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), found {self.betas!r}")
        self._check_number("weight_decay", 0.0, math.inf)
        self._check_int("warmup_steps", 0)
        if self.lr_decay not in (None, "cosine", "exponential"):
            raise ValueError(f"TrainConfig.lr_decay must be None, 'cosine' or 'exponential', found {self.lr_decay!r}")
        self._check_number("min_lr_ratio", 0.0, 1.0, low_open=self.lr_decay == "exponential")
        for name in ("max_steps", "batch_size", "max_time_steps"):
            self._check_int(name, 1)
        if self.crop_history not in CROP_HISTORY:
            raise ValueError(f"TrainConfig.crop_history must be one of {CROP_HISTORY}, found {self.crop_history!r}")
        self._check_number("dither_db", -math.inf, 0.0, optional=True)
        self._check_number("grad_clip", 0.0, math.inf, low_open=True, optional=True)
        self._check_number("diverge_margin_bits", 0.0, math.inf, low_open=True, optional=True)
        self._check_number("diverge_val_rise_bits", 0.0, math.inf, low_open=True, optional=True)
        if self.ema_decay is not None:
            self._check_number("ema_decay", 0.0, 1.0, low_open=True)
            if self.ema_decay >= 1.0:
                raise ValueError(f"TrainConfig.ema_decay must be < 1 (None = no EMA), found {self.ema_decay!r}")
        for name in ("eval_ema", "compile", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, found {getattr(self, name)!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"TrainConfig.amp must be None or 'bf16', found {self.amp!r}")
        self._check_int("log_every", 1)
        for name in ("val_every", "val_max_utterances", "val_max_time_steps", "checkpoint_every"):
            self._check_int(name, 1, optional=True)
        self._check_int("keep_last", 1)
        self._check_int("sample_every", 1, optional=True)
        self._check_number("sample_seconds", 0.0, math.inf, low_open=True)
        self._check_int("quality_utterances", 1, optional=True)
        self._check_int("quality_every", 1, optional=True)
        self._check_number("quality_seconds", 0.0, math.inf, low_open=True)
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"TrainConfig.best_metric must be one of {tuple(BEST_METRICS)}, found {self.best_metric!r}")
        if self.best_metric != "val_nll" and self.quality_utterances is None:
            raise ValueError(f"TrainConfig.best_metric={self.best_metric!r} is measured on quality_utterances, which is "
                             "None (off): set quality_utterances (e.g. 3) or best_metric='val_nll'")
        self._check_int("seed", 0)
        self._check_int("num_workers", 0)
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device must be a string such as 'cpu' or 'cuda', found {self.device!r}")

    def _check_int(self, name: str, minimum: int, optional: bool = False) -> None:
        check_int(f"TrainConfig.{name}", getattr(self, name), minimum, optional=optional)

    def _check_number(self, name: str, low: float, high: float, low_open: bool = False, optional: bool = False) -> None:
        check_number(f"TrainConfig.{name}", getattr(self, name), low, high, low_open=low_open, optional=optional)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from ``asdict(config)``; unknown keys are a ValueError naming them."""
        return config_from_dict(cls, d)


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
