"""The preprocessing cache: a corpus turned into aligned audio and log-mel arrays plus a manifest.

The one contract it keeps: cached audio has a length that is a multiple of ``hop_length`` and its log-mel has exactly
``len(audio) // hop_length`` frames (see :func:`wavenet_dilated.mel.log_mel`), so a crop of ``max_time_steps``
samples starting on a hop boundary pairs with ``max_time_steps // hop_length`` mel frames.

    corpus dir (metadata.csv + wavs/, or wavs/<speaker>/…) → preprocess(corpus, cache, AudioConfig())
      → cache dir: manifest.json + audio/<id>.npy + mel/<id>.npy

A corpus is in either layout of :mod:`~wavenet_dilated.data.corpus`: LJSpeech format (one speaker) or one folder per
speaker (VCTK's layout); a multi-speaker cache records each utterance's speaker and the sorted speaker names (a
speaker's id is its index), and splits each speaker's utterances on their own (every speaker is validated).

Bad inputs never stop a run silently and never stop it loudly for one file: malformed metadata lines and unusable
audio (unreadable, empty, too short, NaN/inf, out of range, no signal: hiss-only or a constant DC level, see
:data:`~wavenet_dilated.audio.MIN_SIGNAL_DBFS`) are skipped with one :class:`DataWarning` each, counted and listed in
the manifest. Convertible inputs (stereo, another sample rate) are converted and counted.

A write that fails (a full disk) stops preprocessing with one :class:`CacheWriteError` and removes the cache files
written so far, so a failed run leaves no partial cache filling the disk; the same call, once there is room, builds it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..audio import AudioConfig, prepare_audio, read_audio
from ..config import check_int
from ..lock import DirectoryLock, Holder
from ..mel import MelStats, log_mel
from .corpus import Corpus, corpus_layout, expected_layouts, scan_corpus
from .ljspeech import METADATA_FILE, SPLITS, Utterance, split_ids, warn_skipped
from .manifest import (
    MANIFEST_FILE,
    MANIFEST_VERSION,
    Manifest,
    ManifestEntry,
    SkippedFile,
    load_manifest,
)
from .manifest import (
    fingerprint as _fingerprint,
)
from .speakers import split_by_speaker

__all__ = ["CACHE_LOCK_FILE", "CacheWriteError", "check_output_dir", "preprocess"]

logger = logging.getLogger(__name__)

#: the lock file held while a cache is checked or built (see :mod:`wavenet_dilated.lock`)
CACHE_LOCK_FILE = ".cache.lock"


class CacheWriteError(OSError):
    """A cache file could not be written (e.g. the disk is full); the cache files written so far have been removed."""


def check_output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a directory that can be written in, or made: checked before any work, so that a file in the way is
    one clear error. ``what`` names the path in the message (``"cache"``, ``"run directory"`` …), in the words of
    :class:`~wavenet_dilated.lock.DirectoryLock`'s own check, so that both say the same.

    Raises:
        NotADirectoryError: ``path``, or the nearest of its parents that exists, is not a directory.
        PermissionError: that directory is not writable.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise NotADirectoryError(f"{what} {str(path)!r} is a file; expected a directory")
        raise NotADirectoryError(f"{what} {str(path)!r} cannot be made: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {str(path)!r} cannot be written: no write permission in {str(existing)!r}")
    return path


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
    """Read → :func:`~wavenet_dilated.audio.prepare_audio` → log-mel → save. Runs in workers."""
    cfg = job.config
    path = Path(job.wav_path)
    try:
        if path.stat().st_size == 0:
            return _Result(job.id, "empty file (0 bytes)")
        audio, rate = read_audio(path)
    except (OSError, ValueError) as e:  # missing, unreadable (permissions …) or not decodable
        return _Result(job.id, f"unreadable: {e}")
    try:
        prepared = prepare_audio(audio, rate, cfg, min_samples=job.min_samples, check_signal=True)
    except ValueError as e:
        return _Result(job.id, str(e))
    n = prepared.audio.size
    mel = log_mel(torch.from_numpy(prepared.audio), cfg).numpy()
    assert mel.shape == (cfg.n_mels, n // cfg.hop_length), mel.shape  # log_mel's alignment contract
    _save(job, prepared.audio, mel)
    return _Result(job.id, None, n, prepared.conversions, MelStats.moments(mel))


def _save(job: _Job, audio: np.ndarray, mel: np.ndarray) -> None:
    """Write one utterance's two cache files; a failed write removes both and raises :class:`CacheWriteError`."""
    for out, array in ((job.audio_out, audio), (job.mel_out, mel)):
        try:
            np.save(out, array)
        except OSError as err:
            _remove_files((job.audio_out, job.mel_out))
            raise CacheWriteError(f"cannot write {out!r}: {_write_failure(err, out)}") from err


def _write_failure(err: OSError, path: str | Path) -> str:
    """Why a write failed, with the free space left: numpy reports a full disk as a short write, without ENOSPC."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    return f"{err.strerror or err} ({free})"


def _remove_files(paths: Sequence[str | Path]) -> int:
    """Delete ``paths`` where they exist (best effort: this runs after a failure); how many were removed."""
    removed = 0
    for path in paths:
        with contextlib.suppress(OSError):
            Path(path).unlink()
            removed += 1
    return removed


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core already; more threads would oversubscribe


def _run_jobs(jobs: Sequence[_Job], n_workers: int, progress: bool) -> list[_Result]:
    """Every job's result, in order. A failed write stops all of them and removes every cache file they wrote."""
    if not jobs:
        return []
    bar = tqdm(total=len(jobs), desc="preprocess", unit="utt", disable=not progress)
    results: list[_Result] = []
    try:
        with bar:
            if n_workers == 1 or len(jobs) == 1:
                for job in jobs:
                    results.append(_process(job))
                    bar.update()
            else:
                _run_pool(jobs, n_workers, results, bar)
    except CacheWriteError as err:
        n = _remove_files([out for job in jobs for out in (job.audio_out, job.mel_out)])
        cache_dir = Path(jobs[0].audio_out).parent.parent
        raise CacheWriteError(
            f"preprocessing stopped: {err}. Removed the {n} cache files written so far; free space in "
            f"{str(cache_dir)!r} (or choose another cache directory) and run the same command again"
        ) from err
    return results


def _run_pool(jobs: Sequence[_Job], n_workers: int, results: list[_Result], bar: tqdm) -> None:
    """:func:`_run_jobs` in ``n_workers`` spawned processes, appending to ``results``."""
    # spawn, not fork: forking a process that has already run torch's thread pool can deadlock.
    ctx = multiprocessing.get_context("spawn")
    chunksize = max(1, min(32, len(jobs) // (8 * n_workers)))
    try:
        with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker) as pool:
            try:
                for result in pool.map(_process, jobs, chunksize=chunksize):
                    results.append(result)
                    bar.update()
            except CacheWriteError:
                pool.shutdown(wait=True, cancel_futures=True)  # no worker writes after the cleanup
                raise
    except concurrent.futures.process.BrokenProcessPool as e:
        raise RuntimeError(
            "a preprocessing worker process died. Workers are spawned and re-import the main module: call "
            'preprocess() under `if __name__ == "__main__":` in scripts, or pass n_workers=1'
        ) from e


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write the manifest (the cache's last file). When that fails, the cache files go too: without a manifest they
    would never be used, only fill the disk."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        n = _remove_files([tmp, *_cache_files(path.parent)])
        raise CacheWriteError(
            f"preprocessing stopped: cannot write {str(path)!r}: {_write_failure(err, path)}. Removed the {n} cache files "
            f"written; free space in {str(path.parent)!r} (or choose another cache directory) and run the same "
            "command again"
        ) from err


def _check_arguments(
    audio_config: AudioConfig | None, n_workers: int | None, min_samples: int | None, val_fraction: float,
    test_fraction: float,
) -> tuple[AudioConfig, int]:
    """:func:`preprocess`'s arguments checked before any work: ``(audio_config, n_workers)`` with defaults filled in."""
    audio_config = AudioConfig() if audio_config is None else audio_config
    if not isinstance(audio_config, AudioConfig):
        raise ValueError(f"audio_config must be an AudioConfig, found {type(audio_config).__name__}")
    if n_workers is None:
        n_workers = min(4, os.cpu_count() or 1)
    check_int("n_workers", n_workers, 1, optional=True)
    check_int("min_samples", min_samples, 1, optional=True)
    split_ids([], val_fraction, test_fraction)  # validates the fractions
    return audio_config, n_workers


def _reusable(cache_dir: Path, fingerprint: str) -> Manifest | None:
    """The cache's manifest when it was made from the same inputs and all its files exist, else ``None``."""
    if not (cache_dir / MANIFEST_FILE).is_file():
        return None
    try:
        old = load_manifest(cache_dir)
    except ValueError as e:
        logger.info("rebuilding the cache: %s", e)
        return None
    if old.fingerprint == fingerprint and old.is_complete():
        logger.info("cache %s is up to date (fingerprint %s)", cache_dir, fingerprint)
        return old
    logger.info("rebuilding the cache %s: its inputs changed or files are missing", cache_dir)
    return None


def _invalidate(cache_dir: Path) -> None:
    """Remove the manifest, then the cache files we own, so an interrupted rebuild is never mistaken for done."""
    (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)
    for sub in ("audio", "mel"):
        (cache_dir / sub).mkdir(parents=True, exist_ok=True)
    for stale in _cache_files(cache_dir):
        stale.unlink()


def _cache_files(cache_dir: Path) -> list[Path]:
    """The ``.npy`` files in the cache's ``audio/`` and ``mel/``: only our own files, never a user's directory tree."""
    return [p for sub in ("audio", "mel") for p in (cache_dir / sub).glob("*.npy")]


def _sort_results(
    results: Sequence[_Result], by_id: Mapping[str, Utterance], skipped: list[SkippedFile]
) -> tuple[list[_Result], dict[str, tuple[str, ...]]]:
    """The cached results and the conversions made; each skip is appended to ``skipped`` and warned about."""
    converted: dict[str, tuple[str, ...]] = {}
    good: list[_Result] = []
    for r in results:
        u = by_id[r.id]
        if r.reason is not None:
            skipped.append(SkippedFile(r.id, str(u.wav_path), u.line, r.reason))
            where = "" if u.line is None else f" ({METADATA_FILE} line {u.line})"
            warn_skipped(f"skipping {u.wav_path}{where}: {r.reason}", stacklevel=5)
            continue
        if r.conversions:
            converted[r.id] = r.conversions
        good.append(r)
    return good, converted


def _manifest(
    inputs: Mapping[str, Any], good: Sequence[_Result], by_id: Mapping[str, Utterance], skipped: Sequence[SkippedFile],
    converted: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    """``manifest.json``'s contents: ``inputs`` (what the cache was made from), then the speakers, splits (per
    speaker), mel statistics fitted on the train split only, and the cached, skipped and converted utterances."""
    speaker_of = {r.id: by_id[r.id].speaker for r in good}
    has_speakers = any(name is not None for name in speaker_of.values())
    splits = split_by_speaker(speaker_of, inputs["val_fraction"], inputs["test_fraction"])
    split_of = {uid: name for name, members in splits.items() for uid in members}
    train = [r.moments for r in good if split_of[r.id] == "train" and r.moments is not None]
    stats = MelStats.from_moments(sum(m[0] for m in train), sum(m[1] for m in train), sum(m[2] for m in train))
    hop = inputs["audio_config"]["hop_length"]
    entries = [
        ManifestEntry(r.id, split_of[r.id], r.n_samples, r.n_samples // hop, by_id[r.id].normalized_text,
                      speaker_of[r.id])
        for r in good
    ]  # fmt: skip
    return {
        **inputs,
        "speakers": sorted({name for name in speaker_of.values() if name is not None}) if has_speakers else None,
        "n_utterances": {name: len(members) for name, members in splits.items()},
        "n_skipped": len(skipped),
        "n_converted": len(converted),
        "mel_stats": stats.to_dict(),
        "utterances": [dataclasses.asdict(e) for e in entries],
        "skipped": [dataclasses.asdict(s) for s in skipped],
        "converted": {k: list(v) for k, v in converted.items()},
    }


def _log_summary(manifest: Mapping[str, Any], cache_dir: Path, sample_rate: int) -> None:
    hours = sum(e["n_samples"] for e in manifest["utterances"]) / sample_rate / 3600
    speakers = "" if manifest["speakers"] is None else f"{len(manifest['speakers'])} speakers, "
    logger.log(
        logging.WARNING if manifest["n_skipped"] else logging.INFO,  # a skip summary is seen even with logging unconfigured
        "cached %d utterances (%s%.2f h; train/val/test %d/%d/%d) in %s; skipped %d (listed in manifest.json), "
        "converted %d",
        len(manifest["utterances"]), speakers, hours, *(manifest["n_utterances"][s] for s in SPLITS), cache_dir,
        manifest["n_skipped"], manifest["n_converted"],
    )  # fmt: skip


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
    """Turn a corpus (LJSpeech format, or one folder per speaker as VCTK) into a training cache; reuse the cache when
    nothing changed.

    Per utterance: :func:`~wavenet_dilated.audio.prepare_audio` (mono mix-down, resampling to
    ``audio_config.sample_rate``, silence trimming, optional peak normalisation, cut to a multiple of ``hop_length``),
    then log-mel; saved as ``<cache_dir>/audio/<id>.npy`` (float32 ``(T,)`` in [−1, 1]) and ``<cache_dir>/mel/<id>.npy``
    (float32 ``(n_mels, T // hop_length)``). Then ``manifest.json``: ids, lengths, splits (:func:`split_ids`), the
    AudioConfig and fingerprints, mel statistics fitted on the train split only, and the skipped and converted files;
    for a multi-speaker corpus also each utterance's speaker and the sorted speaker names (``speakers``; a speaker's id
    is its index), with each speaker's utterances split on their own
    (:func:`~wavenet_dilated.data.speakers.split_by_speaker`).

    Skipped, with one :class:`DataWarning` each naming the file and the reason, and counted in the manifest:
    malformed metadata lines, missing, unreadable or empty files, NaN/inf samples, samples outside [−1, 1] (no silent
    clipping), recordings without signal (a peak, or a variation around a DC level, below
    :data:`~wavenet_dilated.audio.MIN_SIGNAL_DBFS`), and audio shorter than ``min_samples`` (e.g. one training crop)
    after trimming.

    Args:
        data_dir: corpus directory: ``metadata.csv`` and ``wavs/``, or speaker folders in ``wavs/`` (or VCTK's
            ``wav48_silence_trimmed/``, ``wav48/``); see :mod:`~wavenet_dilated.data.corpus`.
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

    One process at a time: the check and the build hold an advisory lock, ``<cache_dir>/.cache.lock``
    (:mod:`wavenet_dilated.lock`). A second call on the same cache (another torchrun node sharing it, a second run)
    *waits*, logging a warning that names the holder's PID and host, and then reuses the cache the first one built.
    A lock left by a killed process does not block.

    Idempotent: when ``manifest.json`` has the same fingerprint and all its files exist, it is returned without
    touching anything but the lock file (changes of wav contents are not detected — pass ``force=True``). Any change
    of the AudioConfig, ``min_samples``, the fractions or ``metadata.csv`` (in a multi-speaker corpus: of its file
    list, file sizes or transcripts) rebuilds the cache.

    Raises:
        FileNotFoundError: ``data_dir`` holds neither layout, or an LJSpeech-format one has no ``wavs/`` folder.
        NotADirectoryError, PermissionError: ``cache_dir`` is (under) a file, or not writable (before any work).
        CacheWriteError: a cache file could not be written (e.g. a full disk); the files written so far are removed.
        ValueError: bad arguments, or no usable utterance at all.
    """
    data_dir, cache_dir = Path(data_dir), check_output_dir(cache_dir, "cache")
    audio_config, n_workers = _check_arguments(audio_config, n_workers, min_samples, val_fraction, test_fraction)
    if corpus_layout(data_dir) is None:
        raise FileNotFoundError(f"no corpus in {str(data_dir)!r}: expected {expected_layouts()}")
    # one builder at a time (torchrun nodes may share a cache): a second waits, then finds the cache up to date
    with DirectoryLock(cache_dir, name=CACHE_LOCK_FILE, what="cache", wait=True, on_wait=_say_waiting(cache_dir)):
        return _build_cache(data_dir, cache_dir, audio_config, n_workers, min_samples, progress, val_fraction,
                            test_fraction, force)


def _say_waiting(cache_dir: Path) -> Callable[[Holder | None], None]:
    def say(holder: Holder | None) -> None:
        logger.warning("waiting for %s, which is building the cache %s (lock file %s)",
                       holder.describe() if holder else "another process", cache_dir, cache_dir / CACHE_LOCK_FILE)

    return say


def _build_cache(
    data_dir: Path, cache_dir: Path, audio_config: AudioConfig, n_workers: int, min_samples: int | None,
    progress: bool, val_fraction: float, test_fraction: float, force: bool,
) -> Manifest:
    """:func:`preprocess` once its arguments are checked, holding the cache's lock."""
    settings = {"audio_config": audio_config.to_dict(), "min_samples": min_samples, "val_fraction": val_fraction,
                "test_fraction": test_fraction}  # fmt: skip
    corpus: Corpus = scan_corpus(data_dir)
    fingerprint = _fingerprint({"format_version": MANIFEST_VERSION, **settings, "corpus_sha256": corpus.fingerprint})
    if not force and (old := _reusable(cache_dir, fingerprint)) is not None:
        return old

    utterances = corpus.utterances
    skipped = [problem.skipped() for problem in corpus.problems]
    for problem in corpus.problems:
        warn_skipped(problem.message, stacklevel=4)  # the caller of preprocess()
    _invalidate(cache_dir)
    jobs = [
        _Job(u.id, str(u.wav_path), str(cache_dir / "audio" / f"{u.id}.npy"), str(cache_dir / "mel" / f"{u.id}.npy"),
             audio_config, min_samples)
        for u in utterances
    ]  # fmt: skip
    by_id = {u.id: u for u in utterances}
    good, converted = _sort_results(_run_jobs(jobs, n_workers, progress), by_id, skipped)
    if not good:
        reasons = sorted({s.reason.split(":")[0] for s in skipped})
        raise ValueError(
            f"no usable audio in {str(data_dir)!r}: expected at least one valid utterance, found "
            f"{len(utterances)} listed with audio and {len(skipped)} skipped (reasons: {', '.join(reasons) or 'none'})"
        )
    inputs = {"format_version": MANIFEST_VERSION, "fingerprint": fingerprint, "audio_config": settings["audio_config"],
              "audio_config_fingerprint": _fingerprint(settings["audio_config"]), "data_dir": str(data_dir.resolve()),
              **settings}  # fmt: skip
    manifest = _manifest(inputs, good, by_id, skipped, converted)
    _write_json_atomic(cache_dir / MANIFEST_FILE, manifest)
    _log_summary(manifest, cache_dir, audio_config.sample_rate)
    return load_manifest(cache_dir)
