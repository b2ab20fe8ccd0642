"""The training state beyond the weights: the EMA of the weights, the random number generators, and resuming.

Everything here is stored as plain types and tensors, so ``torch.load(weights_only=True)`` reads it back (the
checkpoint format itself is :mod:`wavenet_dilated.checkpoint`'s). Resuming is four steps: :func:`find_resume_checkpoint`
picks the checkpoint (rank 0 decides, every rank receives it; weights that are not finite are never resumed from) and
:func:`check_resumable` refuses one that does not fit this run; the trainer then loads it, applies the settings that
changed since (:func:`apply_changed_config`), calls :func:`restore_rng`, and :func:`restore_best` repairs ``best.pt``.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..audio import AudioConfig
from ..checkpoint import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_audio_config,
    read_config,
    remove_partial_checkpoints,
    repair_best,
)
from ..data.dataset import mix_seed
from ..mel import MelStats
from ..wavenet import WaveNetConfig
from . import distributed as dist
from .config import TrainConfig, lr_factor

__all__ = [
    "FIXED_ON_RESUME",
    "ModelEMA",
    "all_finite",
    "apply_changed_config",
    "check_resumable",
    "find_resume_checkpoint",
    "restore_best",
    "restore_rng",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]

logger = logging.getLogger(__name__)


class ModelEMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    ``module`` is a full copy of the model, so its ``state_dict()`` loads into a plain
    :class:`~wavenet_dilated.wavenet.WaveNet` (``WaveNet.from_checkpoint`` picks it up from the checkpoint's ``"ema"``
    entry).
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


# --- random number generators -------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's torch, Python, numpy (and CUDA, when initialised) generator states as plain types and tensors.

    numpy's legacy global generator is saved although the package does not draw from it: third-party code may.
    """
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


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the CUDA states only on a machine with as many GPUs)."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def restore_rng(ckpt: Mapping[str, Any], rank: int, world_size: int, seed: int, step: int) -> None:
    """Put this process's generators where they were when ``ckpt`` was saved: its own saved state when the checkpoint
    has one per rank for this world size, rank 0's single state on rank 0; otherwise a fresh seed from
    ``(seed, rank, step)``."""
    by_rank = ckpt.get("rng_by_rank")
    if by_rank is not None and len(by_rank) == world_size:
        set_rng_state(by_rank[rank])
    elif rank == 0 and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    else:
        seed_everything(mix_seed(seed, rank, step))


def all_finite(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (no NaN or infinity)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- resuming -----------------------------------------------------------------------------------------------------


def find_resume_checkpoint(
    checkpoint_dir: Path, resume: bool | str | os.PathLike[str] | None
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run resumes from, loaded, or ``None`` for a fresh start. Collective: call on every process.

    ``resume=True``: the newest loadable ``ckpt_*.pt`` in ``checkpoint_dir`` (``None`` when there is none; a
    ``ValueError`` when there are some but none loads). ``False``/``None``: ``None``, and a ``ValueError`` when the
    directory already holds checkpoints. A path: that file. Rank 0 reads and decides (first removing what killed saves
    left behind); every rank receives the same checkpoint, so no shared filesystem is needed.
    """
    found: tuple[Path, dict[str, Any]] | None = None
    if dist.is_main():
        remove_partial_checkpoints(checkpoint_dir)
    if resume is True:
        if dist.is_main():
            found = find_checkpoint(checkpoint_dir)
            existing = list_checkpoints(checkpoint_dir)
            if found is None and existing:
                raise ValueError(f"none of the {len(existing)} checkpoints in {str(checkpoint_dir)!r} "
                                 "loads (see the warnings above); move them away to start afresh")
    elif resume is False or resume is None:
        existing = list_checkpoints(checkpoint_dir)
        if existing:
            raise ValueError(
                f"{str(checkpoint_dir)!r} already holds checkpoints (latest: step {existing[-1][0]}): resume "
                "from them, or start a fresh run in another out_dir"
            )
    else:
        path = Path(resume)
        if dist.is_main():
            found = (path, load_checkpoint(path, map_location="cpu"))
    if dist.world_size() > 1:
        box = [found]
        torch.distributed.broadcast_object_list(box, src=0)
        found = box[0]
    return found


def check_resumable(ckpt: Mapping[str, Any], path: Path, model_config: WaveNetConfig, audio_config: AudioConfig,
                    mel_stats: MelStats) -> None:  # fmt: skip
    """Refuse (``ValueError``) a checkpoint of another model, of audio prepared otherwise, or without the training
    state; warn when the cache's mel statistics changed since it was saved."""
    stored = read_config(ckpt, path)
    if stored != model_config:
        ours = asdict(model_config)
        diff = {k: (v, ours[k]) for k, v in asdict(stored).items() if v != ours[k]}
        raise ValueError(f"{path}: checkpoint model config differs from the requested one (checkpoint, requested):"
                         f" {diff}")
    stored_audio = read_audio_config(ckpt, path)
    if stored_audio is not None and stored_audio != audio_config:
        raise ValueError(f"{path}: checkpoint was trained with another AudioConfig than the cache's: "
                         f"{ckpt['audio_config']} vs {audio_config.to_dict()}")
    for key in ("optimizer", "scheduler", "step"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a training checkpoint (no {key!r} entry); use it as weights instead")
    if "mel_stats" in ckpt and MelStats.from_dict(ckpt["mel_stats"]) != mel_stats:
        logger.warning("%s: the cache's mel statistics differ from the checkpoint's (was the cache rebuilt?)", path)


#: TrainConfig fields a resumed run may not change: validation NLLs measured otherwise would not compare with
#: ``best.pt``'s and the best so far (both the choice of best.pt and the divergence stop compare them)
FIXED_ON_RESUME = ("val_max_utterances", "val_max_time_steps")


def apply_changed_config(ckpt: Mapping[str, Any], config: TrainConfig, optimizer: torch.optim.Optimizer,
                         scheduler: torch.optim.lr_scheduler.LambdaLR, path: Path) -> dict[str, tuple[Any, Any]]:
    """Make the restored optimiser and schedule follow ``config``, and log what changed since the checkpoint.

    The optimiser's hyperparameters (lr, betas, weight decay, the Adam/AdamW choice) are set from ``config`` in every
    parameter group, and the learning rate of the next update is recomputed from ``config.lr`` and the schedule
    (warm-up, decay, ``max_steps``); the other settings (grad_clip, batch_size, EMA decay, divergence limits, …) are
    read from ``config`` by the trainer at every step. With nothing changed this leaves the restored state
    bit-identical.

    Returns the changed settings as ``{name: (was, now)}``.

    Raises:
        ValueError: a setting of :data:`FIXED_ON_RESUME` changed (the message names it and both values).
    """
    stored = ckpt.get("train_config")
    ours = asdict(config)
    changed: dict[str, tuple[Any, Any]] = {}
    if isinstance(stored, Mapping):
        for key, was in stored.items():
            was = tuple(was) if isinstance(was, list) else was
            if key in ours and was != ours[key]:
                changed[key] = (was, ours[key])
    for key in FIXED_ON_RESUME:
        if key in changed:
            was, now = changed[key]
            raise ValueError(f"{path}: {key} was {was!r} and is now {now!r}, but it cannot change when resuming: "
                             "validation NLLs measured otherwise would not compare with best.pt's; keep "
                             f"{key}={was!r} or train in a new run directory")
    defaults = optimizer.defaults  # the hyperparameters ``config`` built the optimiser with
    step = scheduler.last_epoch
    scheduler.base_lrs = [config.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        for key, value in defaults.items():
            if key in group and key != "lr":
                group[key] = value
        group["initial_lr"] = config.lr
        group["lr"] = config.lr * lr_factor(step, config)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    if changed:
        logger.warning("applied the settings changed since %s (was → now): %s", path.name,
                       ", ".join(f"{k} {was!r} → {now!r}" for k, (was, now) in changed.items()))
    return changed


def restore_best(checkpoint_dir: Path) -> float | None:
    """Repair ``best.pt`` (rank 0, :func:`~wavenet_dilated.checkpoint.repair_best`) and return, on every process,
    the validation NLL it holds (``None`` when there is no validated checkpoint in ``checkpoint_dir``). Collective."""
    box: list[float | None] = [repair_best(checkpoint_dir) if dist.is_main() else None]
    if dist.world_size() > 1:
        torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
