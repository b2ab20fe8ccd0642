"""The checkpoint format: one place that writes, reads, validates and describes a checkpoint.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(..., weights_only=True)`` (tensors and
plain Python values only, so loading a file runs no code from it)::

    {"format": "wavenet_dilated", "version": 1,
     "config": asdict(WaveNetConfig), "model": state_dict,
     "ema": state_dict,                                  # optional: the EMA weights, used for sampling when present
     "audio_config": asdict(AudioConfig),                # optional (the trainer writes it): how the audio was prepared
     "mel_stats": MelStats.to_dict(),                    # optional: the mel normalisation the model was trained with
     "step": int, "train_config": dict, "val_nll_bits": float, "best_val_nll_bits": float, ...}  # training state

:func:`save_checkpoint` writes atomically (temp file in the same directory, fsync, rename, fsync of the directory), so
a reader never sees half a file. :func:`load_checkpoint` checks the format marker and version; the ``read_*``
functions turn each optional section into its object with a ``ValueError`` naming the file when it is invalid.
A training run keeps ``ckpt_<step>.pt`` files and ``best.pt`` in its ``checkpoints/`` directory
(:func:`list_checkpoints`, :func:`find_checkpoint`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .audio import AudioConfig
    from .mel import MelStats
    from .wavenet import WaveNetConfig

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "checkpoint_name",
    "describe",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_audio_config",
    "read_config",
    "read_mel_stats",
    "remove_partial_checkpoints",
    "sample_rate",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "wavenet_dilated"  # the marker that tells our checkpoints from any other torch.save file
CHECKPOINT_VERSION = 1  # bump when a reader of the old layout would misread the new one
CHECKPOINT_DIR = "checkpoints"  # inside a run directory
BEST_CHECKPOINT = "best.pt"  # the checkpoint with the best validation NLL, beside the ckpt_<step>.pt files
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint of ``step`` in a run's checkpoint directory (``ckpt_00000120.pt``)."""
    return f"ckpt_{step:08d}.pt"


# --- writing and reading ------------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Atomically write a checkpoint: a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint with ``weights_only=True``; ``ValueError`` if it is corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or truncated?): {type(err).__name__}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a wavenet_dilated checkpoint (no format marker)")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt['version']} is newer than this package supports "
                         f"({CHECKPOINT_VERSION})")
    for key in ("config", "model"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint has no {key!r} entry")
    return ckpt


# --- the sections of a loaded checkpoint --------------------------------------------------------------------------


def read_config(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> WaveNetConfig:
    """The model's :class:`~wavenet_dilated.wavenet.WaveNetConfig`; ``ValueError`` naming ``path`` when invalid."""
    from .wavenet import WaveNetConfig

    try:
        return WaveNetConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored model config is invalid: {err}") from err


def read_audio_config(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> AudioConfig | None:
    """The :class:`~wavenet_dilated.audio.AudioConfig` the training audio was prepared with, ``None`` if not stored."""
    from .audio import AudioConfig

    d = ckpt.get("audio_config")
    if d is None:
        return None
    try:
        return AudioConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored audio_config is invalid: {err}") from err


def read_mel_stats(ckpt: dict[str, Any], path: str | os.PathLike[str], n_mels: int, why: str) -> MelStats:
    """The mel normalisation the model was trained with; ``why`` names what needs it, for the error message."""
    from .mel import MelStats

    d = ckpt.get("mel_stats")
    if d is None:
        raise ValueError(f"{path}: the checkpoint stores no mel_stats, which {why} needs to normalise the mel; pass an "
                         "already normalised --mel FILE.npy instead")
    try:
        stats = MelStats.from_dict(d)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored mel_stats are invalid: {err}") from err
    if stats.n_mels != n_mels:
        raise ValueError(f"{path}: mel_stats have {stats.n_mels} bins but the model takes {n_mels}")
    return stats


def sample_rate(ckpt: dict[str, Any]) -> int | None:
    """The checkpoint's sample rate, or ``None`` when it stores no audio_config."""
    audio = ckpt.get("audio_config")
    if not isinstance(audio, dict) or "sample_rate" not in audio:
        return None
    return int(audio["sample_rate"])


def describe(ckpt: dict[str, Any], path: str | os.PathLike[str], default_rate: int) -> dict[str, Any]:
    """What ``wavenet-dilated info`` shows, as one JSON-able dict: step, sample rate, receptive field (samples and ms
    at the stored rate, else ``default_rate``), parameters, validation NLL, EMA, and the stored configs."""
    from .wavenet import WaveNet

    config = read_config(ckpt, path)
    stored_rate = sample_rate(ckpt)
    rate = stored_rate or default_rate
    return {
        "checkpoint": str(path),
        "version": ckpt.get("version"),
        "step": ckpt.get("step"),
        "sample_rate": stored_rate,
        "receptive_field_samples": config.receptive_field,
        "receptive_field_ms": round(config.receptive_field / rate * 1000, 3),
        "parameters": WaveNet(config).n_parameters,
        "val_nll_bits": ckpt.get("val_nll_bits"),
        "best_val_nll_bits": ckpt.get("best_val_nll_bits"),
        "ema": ckpt.get("ema") is not None,
        "config": ckpt["config"],
        "audio_config": ckpt.get("audio_config"),
        "mel_stats": ckpt.get("mel_stats") is not None,
        "train_config": ckpt.get("train_config"),
    }


# --- a run's checkpoint directory ---------------------------------------------------------------------------------


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``ckpt_<step>.pt`` in ``directory``, oldest first (``[]`` if there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        m = _CKPT_RE.match(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def remove_partial_checkpoints(directory: str | os.PathLike[str]) -> None:
    """Delete the temp files that :func:`save_checkpoint` calls killed before their rename left in ``directory``."""
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.glob("*.pt.*.tmp"):
            tmp.unlink(missing_ok=True)


def find_checkpoint(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads, with its contents; ``None`` when there is none.

    A checkpoint that does not load (truncated, corrupt: :func:`load_checkpoint` raises ``ValueError``) is skipped with
    a warning naming it, and the one before it is tried.
    """
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location="cpu")
        except ValueError as err:
            logger.warning("skipping checkpoint %s (step %d): %s; trying the previous one", path, step, err)
    return None
