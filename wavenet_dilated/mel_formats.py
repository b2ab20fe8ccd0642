"""Mels from elsewhere: reading mel files, their normalisation statistics, and converting between the conventions of
:data:`~wavenet_dilated.audio.MEL_FORMATS` where that is exact.

A vocoder takes the normalised log-mel it was trained on. A text-to-speech model may write another convention: the
natural log of a 0-8000 Hz filterbank (``tacotron2``), a ``log10`` mel normalised with its own statistics
(``espnet``) … :class:`MelReader` turns such a mel into the vocoder's features in three exact steps:

1. undo the input's normalisation (:meth:`~wavenet_dilated.mel.MelStats.denormalize` with its statistics);
2. change the log's base and clamp at the vocoder's floor (:func:`convert_mel`);
3. normalise with the vocoder's training statistics.

Where the filterbanks differ (band edges, number of bands, sample rate, hop, FFT size, window) the spectra are not
the same quantity and no exact conversion exists: :func:`convert_mel` refuses, naming the parameters
(:func:`filterbank_mismatch`), rather than resample the spectrum silently.

Statistics files (:func:`read_stats`, :func:`write_stats`): ``.npy`` arrays of shape ``(2, n_mels)`` (rows mean and
scale, the layout of ParallelWaveGAN's ``stats.npy``), ``.npz`` archives (``mean`` with ``std`` or ``scale``, or
ESPnet2's ``feats_stats.npz`` of ``count``, ``sum`` and ``sum_square``), ``.json`` (:meth:`MelStats.to_dict`, or the
training cache's ``manifest.json``) and this package's checkpoints (``.pt``). ``stats.h5`` needs an HDF5 reader,
which is not among the package's dependencies: the error says how to convert it to ``.npy`` once.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig, get_mel_format
from .mel import MelStats

__all__ = ["FILTERBANK_FIELDS", "MEL_SUFFIXES", "MelReader", "check_convertible", "convert_mel", "filterbank_mismatch",
           "read_mel_file", "read_stats", "write_stats"]

#: the AudioConfig fields that define a mel's filterbank: mels that differ in one are different quantities
FILTERBANK_FIELDS = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax")
#: the file types :func:`read_mel_file` reads
MEL_SUFFIXES = (".npy", ".pt")
_H5_HINT = ("reading {path} needs an HDF5 reader (h5py), which is not a dependency of wavenet_dilated; convert it "
            "once to a .npy of rows mean and scale: python -c \"import h5py, numpy; f = h5py.File('{path}', 'r'); "
            "numpy.save('stats.npy', numpy.stack([f['mean'][()], f['scale'][()]]))\" and pass --stats stats.npy")


# --- conversion ---------------------------------------------------------------------------------------------------


def filterbank_mismatch(source: AudioConfig, target: AudioConfig) -> list[str]:
    """The filterbank parameters in which two configs differ, as ``"fmin 0.0 vs 125.0"`` (empty: the same mels)."""
    return [f"{name} {getattr(source, name)!r} vs {getattr(target, name)!r}" for name in FILTERBANK_FIELDS
            if getattr(source, name) != getattr(target, name)]


def check_convertible(source: AudioConfig, target: AudioConfig) -> None:
    """Raise a ``ValueError`` naming the filterbank parameters in which ``source``'s mels differ from ``target``'s
    (:func:`filterbank_mismatch`): such mels measure different things, and no conversion between them is exact."""
    mismatch = filterbank_mismatch(source, target)
    if mismatch:
        raise ValueError(f"cannot convert a {source.mel_format} mel to {target.mel_format}: the filterbanks differ in "
                         f"{', '.join(mismatch)} (input vs vocoder), so the mels measure different things and no exact "
                         "conversion exists; train the vocoder on the input's convention (train --set "
                         f"audio.mel_format={source.mel_format}) or vocode from audio")


def convert_mel(mel: torch.Tensor, source: AudioConfig, target: AudioConfig) -> torch.Tensor:
    """A raw (not normalised) log-mel ``(..., n_mels, F)`` in ``source``'s convention → the same mel in ``target``'s.

    ``log_t(max(floor_t, m))`` from ``log_s(max(floor_s, m))``: the log's base changes by the factor
    ``ln(base_s) / ln(base_t)``, then the values are clamped at ``log_t(floor_t)``. This equals the target's mel of the
    same audio exactly wherever the source is above its floor; a bin at the source's floor (a value below it, no longer
    known) stays at that floor when the target's is lower. Float32 rounding aside, converting to a convention with a
    floor no higher and back gives the input again.

    Raises:
        ValueError: the filterbanks differ (the message names the parameters, :func:`filterbank_mismatch`), or
            ``mel`` is not a floating-point ``(..., n_mels, F)`` tensor.
    """
    check_convertible(source, target)
    if not isinstance(mel, torch.Tensor) or not torch.is_floating_point(mel) or mel.ndim < 2 \
            or mel.shape[-2] != source.n_mels:
        found = f"shape {tuple(mel.shape)} dtype {mel.dtype}" if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise ValueError(f"mel must be a floating-point tensor (..., {source.n_mels}, frames), found {found}")
    src, dst = source.format, target.format
    out = mel if src.log_base == dst.log_base else mel * (math.log(src.log_base) / math.log(dst.log_base))
    if target.mel_floor > source.mel_floor:  # else every value is at or above the target's floor already
        out = torch.clamp(out, min=math.log(target.mel_floor) / math.log(dst.log_base))
    return out


# --- statistics files ---------------------------------------------------------------------------------------------


def _stats_from_arrays(arrays: dict[str, np.ndarray], path: Path) -> MelStats:
    keys = set(arrays)
    if {"count", "sum", "sum_square"} <= keys:  # ESPnet2's collect_stats output
        count = int(np.asarray(arrays["count"]).reshape(-1)[0])
        return MelStats.from_moments(np.asarray(arrays["sum"]), np.asarray(arrays["sum_square"]), count)
    spread = "std" if "std" in keys else "scale" if "scale" in keys else None
    if "mean" not in keys or spread is None:
        raise ValueError(f"{path}: expected arrays mean and std (or scale), or count, sum and sum_square; found "
                         f"{sorted(keys) or 'none'}")
    return MelStats(tuple(np.asarray(arrays["mean"], np.float64).ravel()),
                    tuple(np.asarray(arrays[spread], np.float64).ravel()))


def _read_json_stats(path: Path) -> MelStats:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file: {err}") from err
    if isinstance(d, dict) and isinstance(d.get("mel_stats"), dict):  # the training cache's manifest.json
        d = d["mel_stats"]
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object with mean and std, found a {type(d).__name__}")
    return MelStats.from_dict(d)


def read_stats(path: str | os.PathLike[str]) -> MelStats:
    """Mean-variance statistics of log-mels from a file (the formats of the module docstring), as :class:`MelStats`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown suffix, a ``stats.h5`` (no HDF5 reader: the message says how to convert it), or
            contents that are not statistics (the message says what was expected and found).
    """
    from .checkpoint import load_checkpoint  # deferred: the checkpoint module is above this one

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file not found: expected a file at {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".h5", ".hdf5"):
            raise ValueError(_H5_HINT.format(path=path))
        if suffix == ".json":
            return _read_json_stats(path)
        if suffix == ".pt":
            d = load_checkpoint(path).get("mel_stats")
            if not isinstance(d, dict):
                raise ValueError(f"{path}: the checkpoint stores no mel statistics")
            return MelStats.from_dict(d)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _stats_from_arrays({k: archive[k] for k in archive.files}, path)
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim != 2 or a.shape[0] != 2:
                raise ValueError(f"{path}: expected an array of shape (2, n_mels) (rows mean and scale), found "
                                 f"shape {a.shape}")
            return MelStats(tuple(a[0].astype(np.float64)), tuple(a[1].astype(np.float64)))
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: could not read statistics: {err}") from err
    except ValueError as err:
        raise ValueError(str(err) if str(path) in str(err) else f"{path}: {err}") from err
    raise ValueError(f"{path}: unknown statistics file type {suffix or '(none)'!r}; expected .npy, .npz, .json, .pt "
                     "or .h5")


def write_stats(path: str | os.PathLike[str], stats: MelStats) -> Path:
    """Write ``stats`` as ``.npy`` (float32 ``(2, n_mels)``, rows mean and scale: what ParallelWaveGAN reads) or
    ``.json`` (:meth:`MelStats.to_dict`). Returns the path. ``ValueError`` for another suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, np.stack([np.asarray(stats.mean), np.asarray(stats.std)]).astype(np.float32), allow_pickle=False)
    elif suffix == ".json":
        path.write_text(json.dumps(stats.to_dict()), encoding="utf-8")
    else:
        raise ValueError(f"cannot write statistics as {suffix or '(no suffix)'!r}: use .npy or .json")
    return path


# --- mel files ----------------------------------------------------------------------------------------------------


def _load_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".pt":
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for foreign or truncated files
            raise ValueError(f"{path}: not a readable torch file ({type(err).__name__})") from err
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: expected one saved tensor (torch.save(mel, path)), found a "
                             f"{type(value).__name__}")
        return value.detach().float().numpy() if value.is_floating_point() else value.numpy()
    if suffix != ".npy":
        raise ValueError(f"{path}: expected a mel saved as {' or '.join(MEL_SUFFIXES)}, found {suffix or 'no suffix'}")
    with open(path, "rb") as f:
        if not f.read(6).startswith(b"\x93NUMPY"):
            raise ValueError(f"{path}: not a .npy array (no NumPy header)")
    try:  # memory-mapped: the shape and type are checked before the values are read
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array: {err}") from err


def read_mel_file(path: str | os.PathLike[str], n_mels: int, frames_first: bool = False) -> torch.Tensor:
    """A saved mel (``.npy`` or ``.pt``) as float32 ``(n_mels, frames)``.

    A leading axis of size 1 is dropped. Either layout is read: ``(n_mels, frames)`` or ``(frames, n_mels)``; when
    both sides have ``n_mels``, ``frames_first`` decides (the convention's usual layout).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mel of ``n_mels`` bins with at least one frame of finite floats (says what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mel file not found: expected a file at {str(path)!r}")
    mel = _load_array(path)
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or n_mels not in mel.shape:
        raise ValueError(f"{path}: expected a mel of shape ({n_mels}, frames) or (frames, {n_mels}), found shape "
                         f"{tuple(mel.shape)}")
    if mel.shape[1] == n_mels and (mel.shape[0] != n_mels or frames_first):
        mel = mel.T
    if not np.issubdtype(mel.dtype, np.floating):
        raise ValueError(f"{path}: the mel must hold floats, found dtype {mel.dtype}")
    if mel.shape[1] == 0:
        raise ValueError(f"{path}: the mel has no frames")
    if not np.isfinite(mel).all():
        raise ValueError(f"{path}: the mel holds {int((~np.isfinite(mel)).sum())} NaN or infinite values")
    return torch.from_numpy(np.array(mel, dtype=np.float32, order="C"))  # a copy: the file may be mapped


# --- a vocoder's reader -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelReader:
    """Reads mels of one convention and turns them into a vocoder's features (see the module docstring).

    Build it with :meth:`create`. ``source`` describes the input mels (their convention and filterbank),
    ``source_stats`` their normalisation (``None``: raw log-mels); ``target`` and ``target_stats`` are the vocoder's
    training config and statistics.

    Examples:
        >>> reader = MelReader.create(vocoder.audio_config, vocoder.stats, "tacotron2")  # doctest: +SKIP
        >>> audio = vocoder(reader.read("tts_output.npy"), seed=0)  # doctest: +SKIP
    """

    source: AudioConfig
    source_stats: MelStats | None
    target: AudioConfig
    target_stats: MelStats

    @classmethod
    def create(cls, target: AudioConfig | None, target_stats: MelStats | None, mel_format: str | None = None,
               stats: str | os.PathLike[str] | MelStats | None = None) -> MelReader:
        """The reader of ``mel_format`` mels for a vocoder trained on ``target`` with ``target_stats``.

        Args:
            target, target_stats: the vocoder's ``audio_config`` and ``stats`` (``None`` when its checkpoint stores
                none: a ``ValueError`` then, for nothing can be converted to features that are not known).
            mel_format: the input's convention; ``None`` or the vocoder's own = the vocoder's config (its filterbank,
                whatever it is), another name = that convention's published parameters.
            stats: what the input mels are normalised with: a :class:`MelStats`, a statistics file
                (:func:`read_stats`), ``"none"`` (raw log-mels) or ``None``, the convention's custom: the vocoder's
                own statistics for ``wavenet_dilated``, raw for ``tacotron2``, and for ``espnet`` a file is required.

        Raises:
            ValueError: no target, an unknown convention, a filterbank that differs from the vocoder's, a missing
                or unreadable statistics file, or statistics with another number of bins.
        """
        if target is None or target_stats is None:
            raise ValueError("the vocoder's checkpoint stores no audio_config or mel statistics, so a mel cannot be "
                             "converted to its features: pass the normalised mels it was trained on, without "
                             "--mel-format or --stats")
        name = target.mel_format if mel_format is None else mel_format
        fmt = get_mel_format(name)
        source = target if name == target.mel_format else AudioConfig.for_mel_format(name)
        if isinstance(stats, MelStats):
            source_stats: MelStats | None = stats
        elif stats is not None and str(stats).lower() == "none":
            source_stats = None
        elif stats is not None:
            source_stats = read_stats(stats)
        elif fmt.normalization == "training" and name == target.mel_format:
            source_stats = target_stats
        elif fmt.normalization == "none":
            source_stats = None
        else:
            whose = "their vocoder's training statistics" if fmt.normalization == "training" else "a statistics file"
            raise ValueError(f"{name} mels are mean-variance normalised with {whose}: name the file with --stats PATH "
                             "(.npy, .npz, .json or .pt), or say --stats none for raw log-mels (as ESPnet2's "
                             "text-to-speech models output)")
        if source_stats is not None and source_stats.n_mels != source.n_mels:
            raise ValueError(f"the statistics have {source_stats.n_mels} bins but {name} mels for this vocoder have "
                             f"{source.n_mels}")
        check_convertible(source, target)  # now, not at the first file
        return cls(source, source_stats, target, target_stats)

    @property
    def is_identity(self) -> bool:
        """Whether the input already is the vocoder's features (nothing to convert)."""
        return self.source == self.target and self.source_stats == self.target_stats

    def convert(self, mel: torch.Tensor) -> torch.Tensor:
        """An input mel ``(..., n_mels, F)`` → the vocoder's normalised features, same shape, float32."""
        mel = torch.as_tensor(mel, dtype=torch.float32)
        if self.is_identity:
            return mel
        raw = self.source_stats.denormalize(mel) if self.source_stats is not None else mel
        return self.target_stats.normalize(convert_mel(raw, self.source, self.target))

    def read(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """Read a mel file (:func:`read_mel_file`) and :meth:`convert` it: ``(n_mels, frames)`` features."""
        return self.convert(read_mel_file(path, self.source.n_mels, self.source.format.frames_first))
