"""The preprocessing cache's manifest: ``<cache_dir>/manifest.json``, what the cache holds and what it was built from.

Written last (atomically) by :func:`~wavenet_dilated.data.cache.preprocess`; read by the dataset and the trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio import AudioConfig
from ..mel import MelStats
from .ljspeech import SPLITS

__all__ = ["MANIFEST_FILE", "MANIFEST_VERSION", "ManifestEntry", "SkippedFile", "Manifest", "fingerprint",
           "load_manifest"]

MANIFEST_FILE = "manifest.json"
# bump when the cache layout or the preprocessing steps change: old caches then rebuild (2: no-signal recordings
# skipped; 3: speakers)
MANIFEST_VERSION = 3


@dataclass(frozen=True)
class ManifestEntry:
    """One cached utterance: ``n_samples == n_frames * hop_length``; ``speaker`` is its speaker's name in a
    multi-speaker cache (``None`` otherwise)."""

    id: str
    split: str
    n_samples: int
    n_frames: int
    text: str
    speaker: str | None = None


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
    the corpus's fingerprint (:attr:`~wavenet_dilated.data.corpus.Corpus.fingerprint`) and :data:`MANIFEST_VERSION`);
    ``audio_config_fingerprint`` hashes the AudioConfig alone. ``speakers`` are the names of a multi-speaker cache's
    speakers, sorted: a speaker's id is its index (``None`` for a single-speaker, LJSpeech-format cache).
    """

    cache_dir: Path
    audio_config: AudioConfig
    fingerprint: str
    audio_config_fingerprint: str
    utterances: tuple[ManifestEntry, ...]
    mel_stats: MelStats
    skipped: tuple[SkippedFile, ...]
    converted: Mapping[str, tuple[str, ...]]
    speakers: tuple[str, ...] | None = None

    def speaker_id(self, name: str) -> int:
        """The id of the speaker ``name`` (its index in :attr:`speakers`).

        Raises:
            ValueError: the cache has no speakers, or none of that name (the message lists the known ones).
        """
        if self.speakers is None:
            raise ValueError(f"the cache {str(self.cache_dir)!r} has no speakers (an LJSpeech-format corpus)")
        try:
            return self.speakers.index(name)
        except ValueError:
            raise ValueError(f"unknown speaker {name!r}; the cache's speakers: {', '.join(self.speakers)}") from None

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


def fingerprint(obj: Any) -> str:
    """A short, stable hash of a JSON-able ``obj`` (what a cache depends on)."""
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
        utterances = tuple(ManifestEntry(**e) for e in d["utterances"])
        speakers = None if d.get("speakers") is None else tuple(d["speakers"])
        if speakers is not None and (unknown := {e.speaker for e in utterances} - set(speakers)):
            raise ValueError(f"utterances of speakers {sorted(map(str, unknown))} not in the speakers list")
        return Manifest(
            cache_dir=cache_dir,
            audio_config=AudioConfig.from_dict(d["audio_config"]),
            fingerprint=d["fingerprint"],
            audio_config_fingerprint=d["audio_config_fingerprint"],
            utterances=utterances,
            mel_stats=MelStats.from_dict(d["mel_stats"]),
            skipped=tuple(SkippedFile(**s) for s in d["skipped"]),
            converted={k: tuple(v) for k, v in d["converted"].items()},
            speakers=speakers,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read {str(path)!r}: {e}") from e
