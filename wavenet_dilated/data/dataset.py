"""LJSpeech-format corpora: metadata, download/verify/extract, preprocessing into a cache, dataset with aligned crops.

The pipeline, and the one contract it keeps: cached audio has a length that is a multiple of ``hop_length`` and its
log-mel has exactly ``len(audio) // hop_length`` frames (see :func:`wavenet_dilated.audio.log_mel`), so a crop of
``max_time_steps`` samples starting on a hop boundary pairs with ``max_time_steps // hop_length`` mel frames.

    corpus dir (metadata.csv + wavs/)          ← download_ljspeech(dest) / your own LJSpeech-format corpus
      → preprocess(corpus, cache, AudioConfig()) → cache dir: manifest.json + audio/<id>.npy + mel/<id>.npy
      → AudioDataset(cache, "train", max_time_steps=...) → DataLoader(..., collate_fn=collate)

Bad inputs never stop a run silently and never stop it loudly for one file: malformed metadata lines and unusable
audio (unreadable, empty, too short, NaN/inf, out of range) are skipped with one :class:`DataWarning` each, counted and
listed in the manifest. Convertible inputs (stereo, another sample rate) are converted and counted.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..audio import AudioConfig, MelStats, log_mel, peak_normalize, read_audio, resample_audio, to_mono, trim_silence
from ..mulaw import mu_law_encode

__all__ = [
    "LJSPEECH_URL",
    "LJSPEECH_SIZE",
    "LJSPEECH_SHA256",
    "LJSPEECH_DIRNAME",
    "METADATA_FILE",
    "MANIFEST_FILE",
    "SPLITS",
    "DataWarning",
    "Utterance",
    "read_metadata",
    "split_ids",
    "download",
    "verify_file",
    "extract_archive",
    "download_ljspeech",
    "ManifestEntry",
    "SkippedFile",
    "Manifest",
    "load_manifest",
    "preprocess",
    "AudioDataset",
    "collate",
]

logger = logging.getLogger(__name__)

# --- LJSpeech 1.1 as published by Keith Ito (public domain) ----------------------------------------------------------
LJSPEECH_URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
LJSPEECH_SIZE = 2_748_572_632  # bytes of the official archive
# sha256 of the official archive; the same value is pinned by torchaudio.datasets.LJSPEECH and Homebrew's lj-speech.
LJSPEECH_SHA256 = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
LJSPEECH_DIRNAME = "LJSpeech-1.1"  # the archive's single top-level directory

METADATA_FILE = "metadata.csv"  # id|transcription|normalized transcription, UTF-8, no header, no quoting
WAVS_DIR = "wavs"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1  # bump when the cache layout or the preprocessing steps change: old caches then rebuild
SPLITS = ("train", "val", "test")

_CHUNK = 1 << 20  # bytes per read when downloading and hashing


class DataWarning(UserWarning):
    """A metadata line or an audio file was skipped (the message names it and says why)."""


def _warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


# --- metadata ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One line of an LJSpeech-format ``metadata.csv``.

    Args:
        id: utterance id, e.g. ``"LJ001-0001"``; the audio is ``<root>/wavs/<id>.wav``.
        text: the transcription as read.
        normalized_text: numbers, abbreviations … spelled out (equals ``text`` for two-column files).
        wav_path: path of the audio file.
        line: 1-based line number in ``metadata.csv``.
    """

    id: str
    text: str
    normalized_text: str
    wav_path: Path
    line: int


def _parse_metadata(root: Path) -> tuple[list[Utterance], list[tuple[int, str]]]:
    """Utterances and ``(line number, problem)`` for every skipped line."""
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory not found: expected a directory at {str(root)!r}")
    meta = root / METADATA_FILE
    if not meta.is_file():
        raise FileNotFoundError(
            f"{METADATA_FILE} not found: expected an LJSpeech-format corpus with {str(meta)!r} (and {WAVS_DIR}/)"
        )
    utterances: list[Utterance] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    with open(meta, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append((line_no, f"not valid UTF-8 ({e.reason} at byte {e.start})"))
                continue
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) carry nothing to skip
            fields = line.split("|")
            if len(fields) not in (2, 3):
                problems.append((line_no, f"expected 3 '|'-separated fields (id|text|normalized text), found {len(fields)}"))
                continue
            uid, text = fields[0].strip(), fields[1].strip()
            normalized = fields[2].strip() if len(fields) == 3 else text
            if not uid or not text or not normalized:
                problems.append((line_no, "empty id or transcription"))
                continue
            if "/" in uid or "\\" in uid or uid.startswith(".") or uid != os.path.basename(uid):
                problems.append((line_no, f"id {uid!r} is not a plain file name"))
                continue
            if uid in seen:
                problems.append((line_no, f"duplicate id {uid!r} (first on line {seen[uid]})"))
                continue
            wav = root / WAVS_DIR / f"{uid}.wav"
            if not wav.is_file():
                problems.append((line_no, f"audio file {str(wav)!r} is missing"))
                continue
            seen[uid] = line_no
            utterances.append(Utterance(uid, text, normalized, wav, line_no))
    return utterances, problems


def read_metadata(root: str | os.PathLike[str]) -> list[Utterance]:
    """Parse ``<root>/metadata.csv`` of an LJSpeech-format corpus, in file order.

    Format: ``id|transcription|normalized transcription`` per line, UTF-8, no header, ``|``-separated with no quoting
    (LJSpeech's texts contain ``"``). Two-column lines (``id|text``) are accepted. Malformed lines (wrong field count,
    empty fields, invalid UTF-8, duplicate ids, ids that are not plain file names) and lines whose
    ``<root>/wavs/<id>.wav`` is missing are skipped with one :class:`DataWarning` each, naming the line number.

    Raises:
        FileNotFoundError: ``root`` or ``root/metadata.csv`` does not exist.
    """
    root = Path(root)
    utterances, problems = _parse_metadata(root)
    for line_no, why in problems:
        _warn(f"{root / METADATA_FILE}:{line_no}: skipped: {why}")
    return utterances


def split_ids(
    ids: Iterable[str], val_fraction: float = 0.02, test_fraction: float = 0.02, min_val: int = 1
) -> dict[str, list[str]]:
    """Deterministic train/val/test split by a hash of each id: same ids → same split, in any order.

    Each id maps to ``u = sha256(id) / 2^64 ∈ [0, 1)``: ``u < test_fraction`` → test, then the next ``val_fraction`` →
    val, the rest → train. Adding or removing other ids never moves an id between splits, except through ``min_val``:
    when there are ≥ 3 ids and ``val_fraction > 0``, val gets at least ``min_val`` ids, taken from train in ``u`` order;
    and train always keeps at least one id (the one with the largest ``u``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    """
    ids = list(ids)
    for i in ids:
        if not isinstance(i, str):
            raise ValueError(f"ids must be strings, found {type(i).__name__} {i!r}")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"ids must be unique, found duplicates {dup}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), found {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, found {val_fraction + test_fraction}")
    if isinstance(min_val, bool) or not isinstance(min_val, int) or min_val < 0:
        raise ValueError(f"min_val must be an int >= 0, found {min_val!r}")

    def u(i: str) -> float:
        return int.from_bytes(hashlib.sha256(i.encode("utf-8")).digest()[:8], "big") / 2.0**64

    ordered = sorted(ids, key=lambda i: (u(i), i))
    test = [i for i in ordered if u(i) < test_fraction]
    val = [i for i in ordered if test_fraction <= u(i) < test_fraction + val_fraction]
    train = [i for i in ordered if u(i) >= test_fraction + val_fraction]
    if not train and ordered:  # a lone id (or a few unlucky ones) still leaves something to train on
        train = [ordered[-1]]
        val, test = [i for i in val if i != ordered[-1]], [i for i in test if i != ordered[-1]]
    if len(ids) >= 3 and val_fraction > 0:
        n_move = min(max(0, min_val - len(val)), len(train) - 1)
        val, train = val + train[:n_move], train[n_move:]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


# --- download, verification, extraction -----------------------------------------------------------------------------


def verify_file(path: str | os.PathLike[str], expected_size: int | None = None, expected_sha256: str | None = None) -> None:
    """Check a file's size in bytes and/or sha256 (hex); ``None`` skips that check.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a mismatch, naming the expected and the found value (the file is left in place).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a file to verify at {str(path)!r}")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ValueError(f"{str(path)!r} has the wrong size: expected {expected_size} bytes, found {size}")
    if expected_sha256 is not None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        found = h.hexdigest()
        if found != expected_sha256.lower():
            raise ValueError(f"{str(path)!r} has the wrong sha256: expected {expected_sha256.lower()}, found {found}")


def _open_at(url: str, offset: int, timeout: float) -> tuple[Any, int, int | None]:
    """Open ``url`` for reading from byte ``offset``: ``(stream, actual offset, total size or None)``.

    ``actual offset`` is 0 when the source cannot resume (an HTTP server that ignores Range): the caller restarts.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise FileNotFoundError(f"cannot download {url!r}: expected a file at {str(path)!r}")
        total = path.stat().st_size
        f = open(path, "rb")  # closed by the caller
        offset = offset if offset <= total else 0
        f.seek(offset)
        return f, offset, total
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"url must be http(s):// or file://, found {url!r}")
    headers = {"User-Agent": "wavenet_dilated"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    length = response.headers.get("Content-Length")
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
        try:
            start = int(content_range.split()[1].split("-")[0])
            total_str = content_range.split("/")[1]
        except (IndexError, ValueError):
            response.close()
            raise ValueError(f"bad Content-Range {content_range!r} from {url!r} for a request from byte {offset}") from None
        if start != offset:
            response.close()
            raise ValueError(f"{url!r} answered a request from byte {offset} with bytes from {start}")
        total = int(total_str) if total_str.isdigit() else (offset + int(length) if length else None)
        return response, offset, total
    return response, 0, int(length) if length else None


def download(
    url: str,
    path: str | os.PathLike[str],
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path``, resuming a partial ``<path>.part`` left by an interrupted run, then verify.

    Resuming sends ``Range: bytes=<size of .part>-``; a server that ignores it (200 instead of 206) restarts the
    download. ``file://`` URLs resume by seeking. An existing ``path`` that verifies is returned untouched.

    Raises:
        ValueError: size or sha256 mismatch (the bad file is deleted, so the next run starts afresh), a bad URL scheme,
            or an inconsistent server answer.
        FileNotFoundError: a ``file://`` URL names no file.
        OSError: network errors (``urllib.error.URLError``) propagate; the ``.part`` file is kept for resuming.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            verify_file(path, expected_size, expected_sha256)
            return path
        except ValueError as e:
            logger.warning("%s; downloading it again", e)
            path.unlink()
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    stream = None
    if expected_size is None or offset < expected_size:
        try:
            stream, offset, total = _open_at(url, offset, timeout)
        except urllib.error.HTTPError as e:
            if not (e.code == 416 and offset):
                raise
            # "Range Not Satisfiable" for a request from the end of .part: it is complete; verification decides.
            e.close()
            stream = None
    if stream is not None:
        with stream, open(part, "ab" if offset else "wb") as out:
            bar = tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"download {path.name}", disable=not progress,
            )  # fmt: skip
            with bar:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    try:
        verify_file(part, expected_size, expected_sha256)
    except ValueError as e:
        part.unlink()
        raise ValueError(f"download of {url!r} failed verification and was deleted: {e}") from None
    os.replace(part, path)
    return path


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """Refuse a tar member that would write (or link) outside ``root`` or is not a plain file/dir/link."""
    name = member.name

    def escapes(p: str) -> bool:
        return os.path.commonpath([root, os.path.normpath(os.path.join(root, p))]) != root

    def refuse(why: str) -> None:
        raise ValueError(f"unsafe archive member {name!r}: {why}; refusing to extract")

    if name.startswith(("/", "\\")) or os.path.isabs(name) or PurePosixPath(name).drive or ":" in name.split("/")[0]:
        refuse("absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        refuse("path contains '..'")
    if escapes(name):
        refuse("path outside the target directory")
    if member.issym():
        link = member.linkname
        if os.path.isabs(link) or escapes(os.path.join(os.path.dirname(name), link)):
            refuse(f"symlink to {link!r} points outside the target directory")
    elif member.islnk():
        link = member.linkname
        if os.path.isabs(link) or escapes(link):
            refuse(f"hard link to {link!r} points outside the target directory")
    elif not (member.isfile() or member.isdir()):
        refuse("not a regular file, directory or link (device, fifo …)")


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a tar archive (any compression tarfile reads) into ``dest``, refusing members that escape it.

    Every member is checked before it is written: absolute paths, ``..`` components, symlinks or hard links pointing
    outside ``dest`` and special files raise a ValueError naming the member. Extraction also uses tarfile's
    ``filter="data"`` where the Python version has it. One streaming pass (no seeking, which is slow for bz2); if a bad
    member is found, the members before it have already been extracted — all of them inside ``dest``.

    Returns:
        ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: expected a file at {str(archive)!r}")
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        tf = tarfile.open(archive, "r|*")
    except tarfile.TarError as e:
        raise ValueError(f"cannot open {str(archive)!r} as a tar archive: {e}") from e
    with tf:
        for member in tf:
            _check_member(member, root)
            tf.extract(member, root, **extra)
    return dest


def _archive_stem(name: str) -> str:
    for suffix in (".tar.bz2", ".tar.gz", ".tar.xz", ".tbz2", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def download_ljspeech(
    dest_dir: str | os.PathLike[str],
    url: str = LJSPEECH_URL,
    expected_size: int | None = LJSPEECH_SIZE,
    expected_sha256: str | None = LJSPEECH_SHA256,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Download, verify and extract LJSpeech 1.1 under ``dest_dir``; returns the corpus directory.

    Idempotent: a finished extraction (marked by ``dest_dir/.<archive>.extracted``) returns at once; an interrupted
    download resumes (see :func:`download`). The archive is ~2.6 GB and extracts to ~3.8 GB.

    Returns:
        ``dest_dir / "LJSpeech-1.1"`` (the archive's name without its tar suffix), containing ``metadata.csv``.

    Raises:
        ValueError: verification failed (the bad archive is deleted), an unsafe archive member, or an archive without
            ``<name>/metadata.csv``.
    """
    dest_dir = Path(dest_dir)
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"url must end in an archive file name, found {url!r}")
    corpus = dest_dir / _archive_stem(name)
    marker = dest_dir / f".{name}.extracted"
    if marker.is_file() and (corpus / METADATA_FILE).is_file():
        return corpus
    archive = download(url, dest_dir / name, expected_size, expected_sha256, progress=progress)
    logger.info("extracting %s into %s", archive, dest_dir)
    extract_archive(archive, dest_dir)
    if not (corpus / METADATA_FILE).is_file():
        raise ValueError(f"archive {str(archive)!r} has no {corpus.name}/{METADATA_FILE}: expected an LJSpeech archive")
    marker.write_text(f"{name}\n")
    if not keep_archive:
        archive.unlink()
    return corpus


# --- preprocessing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    """One cached utterance: ``n_samples == n_frames * hop_length``."""

    id: str
    split: str
    n_samples: int
    n_frames: int
    text: str


@dataclass(frozen=True)
class SkippedFile:
    """An utterance left out of the cache, and why. ``line`` is its metadata line number."""

    id: str | None
    path: str
    line: int | None
    reason: str


@dataclass(frozen=True)
class Manifest:
    """Contents of ``<cache_dir>/manifest.json``, written last by :func:`preprocess` (atomically).

    ``fingerprint`` hashes everything the cache depends on (the AudioConfig, ``min_samples``, the split fractions,
    the bytes of ``metadata.csv`` and :data:`MANIFEST_VERSION`); ``audio_config_fingerprint`` hashes the AudioConfig
    alone.
    """

    cache_dir: Path
    audio_config: AudioConfig
    fingerprint: str
    audio_config_fingerprint: str
    utterances: tuple[ManifestEntry, ...]
    mel_stats: MelStats
    skipped: tuple[SkippedFile, ...]
    converted: Mapping[str, tuple[str, ...]]

    def entries(self, split: str) -> list[ManifestEntry]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
        return [e for e in self.utterances if e.split == split]

    def audio_path(self, uid: str) -> Path:
        return self.cache_dir / "audio" / f"{uid}.npy"

    def mel_path(self, uid: str) -> Path:
        return self.cache_dir / "mel" / f"{uid}.npy"

    def is_complete(self) -> bool:
        """Every listed utterance has both of its cache files."""
        return all(self.audio_path(e.id).is_file() and self.mel_path(e.id).is_file() for e in self.utterances)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def load_manifest(cache_dir: str | os.PathLike[str]) -> Manifest:
    """Read ``<cache_dir>/manifest.json``.

    Raises:
        FileNotFoundError: no manifest (run :func:`preprocess` first).
        ValueError: the manifest is unreadable or from another format version.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {str(cache_dir)!r}: expected a cache made by preprocess()")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format_version") != MANIFEST_VERSION:
            raise ValueError(f"expected format_version {MANIFEST_VERSION}, found {d.get('format_version')!r}")
        return Manifest(
            cache_dir=cache_dir,
            audio_config=AudioConfig.from_dict(d["audio_config"]),
            fingerprint=d["fingerprint"],
            audio_config_fingerprint=d["audio_config_fingerprint"],
            utterances=tuple(ManifestEntry(**e) for e in d["utterances"]),
            mel_stats=MelStats.from_dict(d["mel_stats"]),
            skipped=tuple(SkippedFile(**s) for s in d["skipped"]),
            converted={k: tuple(v) for k, v in d["converted"].items()},
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read {str(path)!r}: {e}") from e


@dataclass(frozen=True)
class _Job:
    id: str
    wav_path: str
    audio_out: str
    mel_out: str
    config: AudioConfig
    min_samples: int | None


@dataclass(frozen=True)
class _Result:
    id: str
    reason: str | None = None  # why it was skipped; None = cached
    n_samples: int = 0
    conversions: tuple[str, ...] = ()
    moments: tuple[np.ndarray, np.ndarray, int] | None = None


def _process(job: _Job) -> _Result:
    """Load → mono → resample → check → trim → normalise → cut to whole hops → log-mel → save. Runs in workers."""
    cfg = job.config
    path = Path(job.wav_path)
    try:
        if path.stat().st_size == 0:
            return _Result(job.id, "empty file (0 bytes)")
        audio, rate = read_audio(path)
    except (FileNotFoundError, ValueError) as e:
        return _Result(job.id, f"unreadable: {e}")
    if audio.shape[1] == 0:
        return _Result(job.id, "empty: the file holds no samples")
    if not np.isfinite(audio).all():
        return _Result(job.id, f"contains {int((~np.isfinite(audio)).sum())} NaN or infinite samples")
    conversions = []
    if audio.shape[0] > 1:
        conversions.append(f"mixed {audio.shape[0]} channels down to mono")
    audio = to_mono(audio)
    if rate != cfg.sample_rate:
        conversions.append(f"resampled {rate} Hz -> {cfg.sample_rate} Hz")
        audio = resample_audio(audio, rate, cfg.sample_rate)
    audio = trim_silence(audio, cfg.trim_top_db, frame_length=cfg.n_fft, hop_length=cfg.hop_length)
    if audio.size == 0:
        return _Result(job.id, "silent: nothing left after trimming", conversions=tuple(conversions))
    if cfg.peak_normalize:
        audio = peak_normalize(audio)
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        # Never clip silently: μ-law needs [-1, 1], and a clip would hide a level problem upstream.
        return _Result(job.id, f"samples outside [-1, 1] (peak {peak:.4g}); use peak_normalize=True or fix the file")
    n = audio.size - audio.size % cfg.hop_length
    if n == 0:
        return _Result(job.id, f"too short: {audio.size} samples after trimming < one hop ({cfg.hop_length})")
    if job.min_samples is not None and n < job.min_samples:
        return _Result(job.id, f"too short: {n} samples after trimming < min_samples={job.min_samples}")
    audio = np.ascontiguousarray(audio[:n], dtype=np.float32)
    mel = log_mel(torch.from_numpy(audio), cfg).numpy()
    assert mel.shape == (cfg.n_mels, n // cfg.hop_length), mel.shape  # log_mel's alignment contract
    np.save(job.audio_out, audio)
    np.save(job.mel_out, mel)
    return _Result(job.id, None, n, tuple(conversions), MelStats.moments(mel))


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core already; more threads would oversubscribe


def _run_jobs(jobs: Sequence[_Job], n_workers: int, progress: bool) -> list[_Result]:
    bar = tqdm(total=len(jobs), desc="preprocess", unit="utt", disable=not progress)
    results = []
    with bar:
        if n_workers == 1 or len(jobs) == 1:
            for job in jobs:
                results.append(_process(job))
                bar.update()
        else:
            # spawn, not fork: forking a process that has already run torch's thread pool can deadlock.
            ctx = multiprocessing.get_context("spawn")
            chunksize = max(1, min(32, len(jobs) // (8 * n_workers)))
            try:
                with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker) as pool:
                    for result in pool.map(_process, jobs, chunksize=chunksize):
                        results.append(result)
                        bar.update()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise RuntimeError(
                    "a preprocessing worker process died. Workers are spawned and re-import the main module: call "
                    'preprocess() under `if __name__ == "__main__":` in scripts, or pass n_workers=1'
                ) from e
    return results


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def preprocess(
    data_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    audio_config: AudioConfig | None = None,
    n_workers: int | None = None,
    min_samples: int | None = None,
    progress: bool = True,
    val_fraction: float = 0.02,
    test_fraction: float = 0.02,
    force: bool = False,
) -> Manifest:
    """Turn an LJSpeech-format corpus into a training cache; reuse the cache when nothing changed.

    Per utterance: load (mono mix-down, resampling to ``audio_config.sample_rate``), trim silence, optional peak
    normalisation, cut to a multiple of ``hop_length``, log-mel; saved as ``<cache_dir>/audio/<id>.npy`` (float32
    ``(T,)`` in [−1, 1]) and ``<cache_dir>/mel/<id>.npy`` (float32 ``(n_mels, T // hop_length)``). Then
    ``manifest.json``: ids, lengths, splits (:func:`split_ids`), the AudioConfig and fingerprints, mel statistics
    fitted on the train split only, and the skipped and converted files.

    Skipped, with one :class:`DataWarning` each naming the file and the reason, and counted in the manifest:
    malformed metadata lines, missing, unreadable or empty files, NaN/inf samples, samples outside [−1, 1] (no silent
    clipping), and audio shorter than ``min_samples`` (e.g. one training crop) after trimming.

    Args:
        data_dir: corpus directory with ``metadata.csv`` and ``wavs/``.
        cache_dir: output directory (created). Only ``manifest.json`` and the ``.npy`` files in its ``audio/`` and
            ``mel/`` subdirectories are written or deleted.
        audio_config: the signal representation; ``None`` = ``AudioConfig()``.
        n_workers: processes; ``None`` = ``min(4, os.cpu_count())``; 1 = in this process. Workers are *spawned*
            (forking after torch has run its thread pool can deadlock), so a script that calls this with
            ``n_workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        min_samples: shortest usable utterance in samples after trimming; ``None`` = one hop.
        progress: show a tqdm bar.
        val_fraction, test_fraction: passed to :func:`split_ids`.
        force: rebuild even if the cache is up to date.

    Idempotent: when ``manifest.json`` has the same fingerprint and all its files exist, it is returned without
    touching anything (changes of wav contents are not detected — pass ``force=True``). Any change of the AudioConfig,
    ``min_samples``, the fractions or ``metadata.csv`` rebuilds the cache.

    Raises:
        FileNotFoundError: no ``metadata.csv`` under ``data_dir``.
        ValueError: bad arguments, or no usable utterance at all.
    """
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    audio_config = AudioConfig() if audio_config is None else audio_config
    if not isinstance(audio_config, AudioConfig):
        raise ValueError(f"audio_config must be an AudioConfig, found {type(audio_config).__name__}")
    if n_workers is None:
        n_workers = min(4, os.cpu_count() or 1)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an int >= 1 or None, found {n_workers!r}")
    if min_samples is not None and (isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1):
        raise ValueError(f"min_samples must be a positive int or None, found {min_samples!r}")
    split_ids([], val_fraction, test_fraction)  # validates the fractions before any work

    meta = data_dir / METADATA_FILE
    if not meta.is_file():
        raise FileNotFoundError(f"{METADATA_FILE} not found: expected an LJSpeech-format corpus with {str(meta)!r}")
    config_fp = _fingerprint(audio_config.to_dict())
    fingerprint = _fingerprint(
        {
            "format_version": MANIFEST_VERSION,
            "audio_config": audio_config.to_dict(),
            "min_samples": min_samples,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "metadata_sha256": hashlib.sha256(meta.read_bytes()).hexdigest(),
        }
    )
    manifest_path = cache_dir / MANIFEST_FILE
    if not force and manifest_path.is_file():
        try:
            old = load_manifest(cache_dir)
        except ValueError as e:
            logger.info("rebuilding the cache: %s", e)
        else:
            if old.fingerprint == fingerprint and old.is_complete():
                logger.info("cache %s is up to date (fingerprint %s)", cache_dir, fingerprint)
                return old
            logger.info("rebuilding the cache %s: its inputs changed or files are missing", cache_dir)

    utterances, problems = _parse_metadata(data_dir)
    skipped = [SkippedFile(None, str(meta), line, f"bad metadata line: {why}") for line, why in problems]
    for line, why in problems:
        _warn(f"{meta}:{line}: skipped: {why}")

    # Invalidate first (manifest, then the cache files we own), so an interrupted rebuild is never mistaken for done.
    manifest_path.unlink(missing_ok=True)
    for sub in ("audio", "mel"):
        (cache_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (cache_dir / sub).glob("*.npy"):  # only our own files: never rmtree a user-named directory
            stale.unlink()

    by_id = {u.id: u for u in utterances}
    jobs = [
        _Job(u.id, str(u.wav_path), str(cache_dir / "audio" / f"{u.id}.npy"), str(cache_dir / "mel" / f"{u.id}.npy"),
             audio_config, min_samples)
        for u in utterances
    ]  # fmt: skip
    results = _run_jobs(jobs, n_workers, progress) if jobs else []

    converted: dict[str, tuple[str, ...]] = {}
    good: list[_Result] = []
    for r in results:
        u = by_id[r.id]
        if r.reason is not None:
            skipped.append(SkippedFile(r.id, str(u.wav_path), u.line, r.reason))
            _warn(f"skipping {u.wav_path} ({METADATA_FILE} line {u.line}): {r.reason}")
            continue
        if r.conversions:
            converted[r.id] = r.conversions
        good.append(r)
    if not good:
        reasons = sorted({s.reason.split(":")[0] for s in skipped})
        raise ValueError(
            f"no usable audio in {str(data_dir)!r}: expected at least one valid utterance, found "
            f"{len(utterances)} listed with audio and {len(skipped)} skipped (reasons: {', '.join(reasons) or 'none'})"
        )

    splits = split_ids([r.id for r in good], val_fraction, test_fraction)
    split_of = {uid: name for name, members in splits.items() for uid in members}
    train = [r.moments for r in good if split_of[r.id] == "train" and r.moments is not None]
    stats = MelStats.from_moments(sum(m[0] for m in train), sum(m[1] for m in train), sum(m[2] for m in train))
    hop = audio_config.hop_length
    entries = [
        ManifestEntry(r.id, split_of[r.id], r.n_samples, r.n_samples // hop, by_id[r.id].normalized_text) for r in good
    ]
    manifest = {
        "format_version": MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "audio_config": audio_config.to_dict(),
        "audio_config_fingerprint": config_fp,
        "data_dir": str(data_dir.resolve()),
        "min_samples": min_samples,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "n_utterances": {name: len(members) for name, members in splits.items()},
        "n_skipped": len(skipped),
        "n_converted": len(converted),
        "mel_stats": stats.to_dict(),
        "utterances": [dataclasses.asdict(e) for e in entries],
        "skipped": [dataclasses.asdict(s) for s in skipped],
        "converted": {k: list(v) for k, v in converted.items()},
    }
    _write_json_atomic(manifest_path, manifest)
    hours = sum(e.n_samples for e in entries) / audio_config.sample_rate / 3600
    logger.log(
        logging.WARNING if skipped else logging.INFO,  # a skip summary is seen even with logging unconfigured
        "cached %d utterances (%.2f h; train/val/test %d/%d/%d) in %s; skipped %d (listed in manifest.json), converted %d",
        len(entries), hours, *(len(splits[s]) for s in SPLITS), cache_dir, len(skipped), len(converted),
    )  # fmt: skip
    return load_manifest(cache_dir)


# --- dataset --------------------------------------------------------------------------------------------------------


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several ints (the splitmix64 finaliser after each value), so that the streams of
    ``(seed, epoch, index)`` (crops) or ``(seed, epoch)`` (batch order) or ``(seed, rank)`` (dropout) are independent.
    The one seed mixer of the package: the dataset's crops and the trainer's batch order and dropout all use it."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class AudioDataset(Dataset):
    """Cached utterances as ``{"audio": (T,), "mel": (n_mels, T // hop_length)}`` items.

    With ``max_time_steps`` each item is a random crop of that many samples starting on a hop boundary (start frame
    uniform over all valid positions) and its ``max_time_steps // hop_length`` mel frames; utterances shorter than the
    crop are excluded at construction and counted in ``n_excluded``. With ``max_time_steps=None`` an item is the whole
    utterance (for validation; batch with :func:`collate`, which pads).

    Crops are reproducible: item ``i`` in epoch ``e`` uses a ``torch.Generator`` seeded from ``(seed, e, i)``, so the
    crop does not depend on DataLoader workers, their number or the order items are fetched in. Call
    :meth:`set_epoch` before each epoch for fresh crops (with ``persistent_workers=True`` the workers keep the epoch
    they started with). ``seed=None`` draws from torch's global RNG instead (DataLoader seeds it per worker).

    Args:
        cache_dir: a cache made by :func:`preprocess`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_time_steps: crop length in samples, a multiple of the hop length; ``None`` = whole utterances.
        hop_length: expected hop length (checked against the cache); ``None`` = take the cache's.
        n_classes: μ-law classes: audio becomes int64 class indices (:func:`wavenet_dilated.mulaw.mu_law_encode`);
            ``None`` keeps float32 in [−1, 1].
        mel_normalize: normalise mels with the cache's train-split :class:`~wavenet_dilated.audio.MelStats`.
        seed: crop seed, or ``None``.

    Examples:
        >>> ds = AudioDataset(cache, "train", max_time_steps=8 * 256)  # doctest: +SKIP
        >>> item = ds[0]  # doctest: +SKIP
        >>> item["audio"].shape, item["mel"].shape  # doctest: +SKIP
        (torch.Size([2048]), torch.Size([80, 8]))
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        split: str = "train",
        max_time_steps: int | None = None,
        hop_length: int | None = None,
        n_classes: int | None = 256,
        mel_normalize: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.manifest = load_manifest(cache_dir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
        hop = self.manifest.audio_config.hop_length
        if hop_length is not None and hop_length != hop:
            raise ValueError(f"hop_length {hop_length} does not match the cache's AudioConfig: expected {hop}")
        if max_time_steps is not None:
            if isinstance(max_time_steps, bool) or not isinstance(max_time_steps, int) or max_time_steps < 1:
                raise ValueError(f"max_time_steps must be a positive int or None, found {max_time_steps!r}")
            if max_time_steps % hop:
                raise ValueError(
                    f"max_time_steps must be a multiple of hop_length={hop}, found {max_time_steps} "
                    f"(nearest: {max(hop, max_time_steps // hop * hop)} or {math.ceil(max_time_steps / hop) * hop})"
                )
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2):
            raise ValueError(f"n_classes must be an int >= 2 or None, found {n_classes!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, found {seed!r}")
        entries = self.manifest.entries(split)
        if max_time_steps is not None:
            kept = [e for e in entries if e.n_samples >= max_time_steps]
        else:
            kept = entries
        self.n_excluded = len(entries) - len(kept)
        if not kept:
            raise ValueError(
                f"split {split!r} of {str(self.manifest.cache_dir)!r} has no usable utterances: found {len(entries)}, "
                f"{self.n_excluded} of them shorter than max_time_steps={max_time_steps}"
            )
        if self.n_excluded:
            logger.info("%s: excluded %d utterances shorter than %s samples", split, self.n_excluded, max_time_steps)
        self.entries = kept
        self.split = split
        self.hop_length = hop
        self.max_time_steps = max_time_steps
        self.n_classes = n_classes
        self.mel_stats = self.manifest.mel_stats if mel_normalize else None
        self.seed = seed
        self.epoch = 0

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def audio_pad_value(self) -> int | float:
        """Padding value for audio that means silence: the μ-law class of 0.0, or 0.0."""
        if self.n_classes is None:
            return 0.0
        return int(mu_law_encode(torch.zeros(1), self.n_classes)[0])

    @property
    def collate_fn(self) -> functools.partial:
        """:func:`collate` that pads audio with :attr:`audio_pad_value`."""
        return functools.partial(collate, audio_pad_value=self.audio_pad_value)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (deterministic given the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def crop_start(self, index: int) -> int:
        """Start frame of item ``index``'s crop in the current epoch (0 without cropping)."""
        e = self.entries[index]
        if self.max_time_steps is None:
            return 0
        n_starts = e.n_frames - self.max_time_steps // self.hop_length + 1
        if self.seed is None:
            return int(torch.randint(n_starts, ()).item())
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        return int(torch.randint(n_starts, (), generator=g).item())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        e = self.entries[index]
        audio = np.load(self.manifest.audio_path(e.id), mmap_mode="r")
        mel = np.load(self.manifest.mel_path(e.id), mmap_mode="r")
        if self.max_time_steps is not None:
            start = self.crop_start(index)
            n_frames = self.max_time_steps // self.hop_length
            audio = audio[start * self.hop_length : (start + n_frames) * self.hop_length]
            mel = mel[:, start : start + n_frames]
        audio_t = torch.from_numpy(np.array(audio, dtype=np.float32))
        mel_t = torch.from_numpy(np.array(mel, dtype=np.float32))
        if self.mel_stats is not None:
            mel_t = self.mel_stats.normalize(mel_t)
        if self.n_classes is not None:
            audio_t = mu_law_encode(audio_t, self.n_classes)
        return {"audio": audio_t, "mel": mel_t}


def collate(
    batch: Sequence[Mapping[str, torch.Tensor]], audio_pad_value: int | float = 0, mel_pad_value: float = 0.0
) -> dict[str, torch.Tensor]:
    """Stack dataset items into ``{"audio": (B, T), "mel": (B, n_mels, F), "lengths": (B,), "mel_lengths": (B,)}``.

    Items of different lengths (whole utterances) are right-padded to the longest: audio with ``audio_pad_value``
    (use :attr:`AudioDataset.collate_fn` for the value that means silence), mel with ``mel_pad_value`` (0 = the mean
    of a normalised mel). ``lengths`` (samples) and ``mel_lengths`` (frames) give the valid part of each row.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    audios = [b["audio"] for b in batch]
    mels = [b["mel"] for b in batch]
    if any(a.ndim != 1 for a in audios) or any(m.ndim != 2 for m in mels):
        raise ValueError("expected items with audio (T,) and mel (n_mels, F)")
    n_mels = {m.shape[0] for m in mels}
    if len(n_mels) != 1:
        raise ValueError(f"all items must have the same n_mels, found {sorted(n_mels)}")
    lengths = torch.tensor([a.shape[0] for a in audios], dtype=torch.int64)
    mel_lengths = torch.tensor([m.shape[1] for m in mels], dtype=torch.int64)
    audio = audios[0].new_full((len(batch), int(lengths.max())), audio_pad_value)
    mel = mels[0].new_full((len(batch), mels[0].shape[0], int(mel_lengths.max())), mel_pad_value)
    for i, (a, m) in enumerate(zip(audios, mels, strict=True)):
        audio[i, : a.shape[0]] = a
        mel[i, :, : m.shape[1]] = m
    return {"audio": audio, "mel": mel, "lengths": lengths, "mel_lengths": mel_lengths}
