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
a reader never sees half a file; a failed write (a full disk) raises :class:`CheckpointWriteError`, one ``OSError``
naming the file, after removing its temp file: the files already there are untouched. :func:`load_checkpoint`
checks the format marker and version and, unless asked not to (``wavenet-dilated info`` reports instead), refuses
weights that are not finite (:class:`NonFiniteCheckpointError`, naming the first such tensor); the ``read_*``
functions turn each optional section into its object with a ``ValueError`` naming the file when it is invalid.
A training run keeps ``ckpt_<step>.pt`` files and ``best.pt`` in its ``checkpoints/`` directory
(:func:`list_checkpoints`, :func:`find_checkpoint`); :func:`repair_best` makes ``best.pt`` the checkpoint with the
lowest validation NLL on disk again after a kill or a full disk left it missing or stale.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
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
    "CheckpointWriteError",
    "NonFiniteCheckpointError",
    "checkpoint_name",
    "copy_checkpoint",
    "describe",
    "find_checkpoint",
    "first_non_finite",
    "list_checkpoints",
    "load_checkpoint",
    "read_audio_config",
    "read_config",
    "read_mel_stats",
    "read_speakers",
    "remove_partial_checkpoints",
    "repair_best",
    "sample_rate",
    "save_checkpoint",
    "validated_nll_bits",
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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, …); the temp file is gone and the files that were
    there before are untouched. ``errno`` is the underlying error's (``errno.ENOSPC`` for a full disk)."""

    def __init__(self, path: Path, err: BaseException) -> None:
        cause = _os_error(err)
        reason = (cause.strerror or str(cause)) if cause is not None else f"{type(err).__name__}: {err}"
        self.message = f"could not write checkpoint {path}: {reason}; the checkpoints already there are intact"
        super().__init__(self.message)
        self.errno = cause.errno if cause is not None else None
        self.path = path

    def __str__(self) -> str:  # OSError's own would print "[Errno …] None: path"
        return self.message


def _os_error(err: BaseException | None) -> OSError | None:
    """The first ``OSError`` in ``err``'s chain: torch reports a failed write as a ``RuntimeError`` raised while it
    handles the ``OSError`` of the write."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, OSError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, rename it over ``path``, fsync the directory.

    Any failure removes the temp file; an ``OSError`` (or torch's ``RuntimeError`` wrapping one) becomes a
    :class:`CheckpointWriteError`.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except Exception as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, CheckpointWriteError) or _os_error(err) is None:
            raise
        raise CheckpointWriteError(path, err) from err
    except BaseException:  # KeyboardInterrupt: no half file, and the interrupt goes on
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every filesystem)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Atomically write a checkpoint: a temp file in the same directory, fsync, then rename over ``path``.

    Raises:
        CheckpointWriteError: the write failed (e.g. ``errno.ENOSPC``); nothing at ``path`` changed.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    _atomic_write(Path(path), lambda f: torch.save(payload, f))


def copy_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically copy the checkpoint file ``src`` to ``dst`` (byte for byte), as :func:`save_checkpoint` writes."""
    with open(src, "rb") as source:
        _atomic_write(Path(dst), lambda f: shutil.copyfileobj(source, f, 1 << 20))


class NonFiniteCheckpointError(ValueError):
    """A checkpoint whose weights hold NaN or infinity: it cannot be sampled from or resumed."""


def _weight_sections(ckpt: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(key, ckpt[key]) for key in ("model", "ema") if isinstance(ckpt.get(key), dict)]


def first_non_finite(ckpt: dict[str, Any]) -> str | None:
    """The first tensor of the checkpoint's weights (``model``, then ``ema``) holding NaN or infinity, as
    ``"model.out2.bias (3 NaN of 256)"``; ``None`` when every weight is finite."""
    for section, state in _weight_sections(ckpt):
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all()):
                n_nan = int(value.isnan().sum())
                bad = f"{n_nan} NaN" if n_nan else f"{int(value.isinf().sum())} infinite"
                return f"{section}.{name} ({bad} of {value.numel()})"
    return None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    require_finite: bool = True) -> dict[str, Any]:  # fmt: skip
    """Load and validate a checkpoint with ``weights_only=True``.

    Args:
        path: the file.
        map_location: where its tensors go.
        require_finite: refuse weights holding NaN or infinity (``False`` only to describe such a file: use
            :func:`first_non_finite` to say what is wrong).

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: ``path`` is a directory (a run directory, say; the message names the checkpoint in it).
        ValueError: corrupt, truncated, not ours or too new; :class:`NonFiniteCheckpointError` when
            ``require_finite`` and a weight is not finite.
    """
    path = Path(path)
    if path.is_dir():
        hint = next((f"; did you mean {str(c)!r}?" for c in (path / CHECKPOINT_DIR / BEST_CHECKPOINT, path / BEST_CHECKPOINT)
                     if c.is_file()), "")
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a checkpoint file{hint}")
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
    if require_finite:
        bad = first_non_finite(ckpt)
        if bad is not None:
            raise NonFiniteCheckpointError(f"{path}: the weights are not finite ({bad}); the training that wrote "
                                           "them had diverged: use an earlier checkpoint")
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


def read_speakers(ckpt: dict[str, Any], path: str | os.PathLike[str], n_speakers: int | None = None) -> list[str] | None:
    """The speaker names a multi-speaker model was trained with (index = speaker id), ``None`` if not stored.

    With ``n_speakers`` (the model's), a stored list must name exactly that many speakers.

    Raises:
        ValueError: the names are not distinct non-empty strings, or their number is not ``n_speakers``.
    """
    names = ckpt.get("speakers")
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise ValueError(f"{path}: the stored speaker names must be distinct non-empty strings, found {names!r}")
    if n_speakers is not None and len(names) != n_speakers:
        raise ValueError(f"{path}: the checkpoint names {len(names)} speakers but the model has {n_speakers}")
    return list(names)


def sample_rate(ckpt: dict[str, Any]) -> int | None:
    """The checkpoint's sample rate, or ``None`` when it stores no audio_config."""
    audio = ckpt.get("audio_config")
    if not isinstance(audio, dict) or "sample_rate" not in audio:
        return None
    return int(audio["sample_rate"])


def describe(ckpt: dict[str, Any], path: str | os.PathLike[str], default_rate: int) -> dict[str, Any]:
    """What ``wavenet-dilated info`` shows, as one JSON-able dict: step, sample rate, receptive field (samples and ms
    at the stored rate, else ``default_rate``), parameters, validation NLL, EMA, the first non-finite weight
    (``non_finite``, ``None`` when all are finite), the speaker names and the stored configs."""
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
        "non_finite": first_non_finite(ckpt),
        "config": ckpt["config"],
        "audio_config": ckpt.get("audio_config"),
        "mel_stats": ckpt.get("mel_stats") is not None,
        "speakers": read_speakers(ckpt, path, config.n_speakers),
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

    A checkpoint that does not load (truncated, corrupt, weights not finite: :func:`load_checkpoint` raises
    ``ValueError``) is skipped with a warning naming it, and the one before it is tried.
    """
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location="cpu")
        except ValueError as err:
            logger.warning("skipping checkpoint %s (step %d): %s; trying the previous one", path, step, err)
    return None


def validated_nll_bits(ckpt: dict[str, Any]) -> float | None:
    """The checkpoint's validation NLL (bits/sample) when it was measured on the checkpoint's own weights (the
    trainer records the step it validated at as ``val_step``); ``None`` otherwise. Checkpoints written before
    ``val_step`` existed count as validated at their step."""
    nll = ckpt.get("val_nll_bits")
    if nll is None or ckpt.get("val_step", ckpt.get("step")) != ckpt.get("step"):
        return None
    return float(nll)


def repair_best(directory: str | os.PathLike[str]) -> float | None:
    """Make ``best.pt`` in ``directory`` the checkpoint with the lowest validation NLL among itself and the
    ``ckpt_<step>.pt`` files there, copying that checkpoint over it when it is missing, unreadable or worse.

    A kill or a full disk between writing ``ckpt_<step>.pt`` and ``best.pt`` leaves ``best.pt`` missing or stale;
    the trainer calls this when it resumes. Returns the validation NLL ``best.pt`` now holds (``None``: no validated
    checkpoint, and no ``best.pt``).
    """
    directory = Path(directory)
    best_path = directory / BEST_CHECKPOINT
    candidates: list[tuple[float, int, Path]] = []
    for step, path in list_checkpoints(directory):
        try:
            nll = validated_nll_bits(load_checkpoint(path, map_location="cpu"))
        except ValueError as err:
            logger.warning("best.pt repair: skipping %s: %s", path, err)
            continue
        if nll is not None:
            candidates.append((nll, step, path))
    current: float | None = None
    if best_path.is_file():
        try:
            current = validated_nll_bits(load_checkpoint(best_path, map_location="cpu"))
        except ValueError as err:
            logger.warning("%s does not load (%s); rewriting it", best_path, err)
    if not candidates or (current is not None and current <= min(candidates)[0]):
        return current
    nll, step, path = min(candidates)  # the lowest NLL; the earliest step on a tie
    copy_checkpoint(path, best_path)
    was = "was missing or unreadable" if current is None else f"held validation NLL {current:.4f}"
    logger.warning("repaired %s (it %s): now a copy of %s, validation NLL %.4f bits/sample", best_path, was,
                   path.name, nll)
    return nll
