"""Corpus layouts: which one a directory holds, and its utterances, problems and fingerprint in one scan.

Two layouts are read, told apart by ``metadata.csv``:

* **LJSpeech format**, one speaker (:mod:`~wavenet_dilated.data.ljspeech`): ``metadata.csv`` + ``wavs/<id>.wav``.
* **Multi-speaker**, VCTK's layout (:mod:`~wavenet_dilated.data.speakers`): one folder per speaker in
  ``wav48_silence_trimmed/``, ``wav48/`` or ``wavs/``, transcripts (optional) in ``txt/<speaker>/``.

A directory with a ``metadata.csv`` is read as LJSpeech format, whatever else it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .ljspeech import METADATA_FILE, WAVS_DIR, Utterance, parse_metadata
from .manifest import SkippedFile
from .speakers import AUDIO_DIRS, find_audio_dir, parse_speaker_tree

__all__ = ["CORPUS_LAYOUTS", "Corpus", "Problem", "corpus_layout", "expected_layouts", "scan_corpus"]

#: the layouts :func:`scan_corpus` reads
CORPUS_LAYOUTS = ("ljspeech", "speakers")


def expected_layouts() -> str:
    """What a corpus directory must hold, in words, for error messages."""
    return (f"an LJSpeech-format corpus ({METADATA_FILE} and {WAVS_DIR}/<id>.wav) or a multi-speaker one (speaker "
            f"folders in {' or '.join(f'{d}/' for d in AUDIO_DIRS)}, e.g. wavs/<speaker>/<utterance>.wav)")


@dataclass(frozen=True)
class Problem:
    """Something in the corpus that is left out: ``path`` (the metadata file, or an audio file or folder), the
    metadata ``line`` (``None`` in a multi-speaker corpus) and why."""

    path: str
    line: int | None
    why: str

    @property
    def message(self) -> str:
        """The warning's text: ``<path>:<line>: skipped: <why>``."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: skipped: {self.why}"

    def skipped(self) -> SkippedFile:
        """The manifest's record of it."""
        reason = self.why if self.line is None else f"bad metadata line: {self.why}"
        return SkippedFile(None, self.path, self.line, reason)


@dataclass(frozen=True)
class Corpus:
    """A scanned corpus directory.

    Attributes:
        root: the directory.
        layout: ``"ljspeech"`` or ``"speakers"`` (see :data:`CORPUS_LAYOUTS`).
        utterances: what it lists, with audio present, in a stable order.
        problems: what is left out, and why.
        fingerprint: a hash of what a cache made from it depends on: the bytes of ``metadata.csv``, or, for a
            multi-speaker corpus, every utterance's id, speaker, path, file size and transcript.
    """

    root: Path
    layout: str
    utterances: tuple[Utterance, ...]
    problems: tuple[Problem, ...]
    fingerprint: str

    @property
    def speakers(self) -> tuple[str, ...] | None:
        """The sorted names of the speakers with an utterance; ``None`` for an LJSpeech-format corpus."""
        if self.layout != "speakers":
            return None
        return tuple(sorted({u.speaker for u in self.utterances if u.speaker is not None}))


def corpus_layout(root: str | os.PathLike[str]) -> str | None:
    """``"ljspeech"`` when ``root`` holds ``metadata.csv``, ``"speakers"`` when it holds speaker folders (see
    :func:`~wavenet_dilated.data.speakers.find_audio_dir`), else ``None``."""
    root = Path(root)
    if (root / METADATA_FILE).is_file():
        return "ljspeech"
    if find_audio_dir(root) is not None:
        return "speakers"
    return None


def _tree_fingerprint(root: Path, utterances: list[Utterance], problems: list[Problem]) -> str:
    rows = [(u.id, u.speaker, os.path.relpath(u.wav_path, root), u.wav_path.stat().st_size, u.text)
            for u in utterances]  # fmt: skip
    rows += [("skipped", os.path.relpath(p.path, root), p.why) for p in problems]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def scan_corpus(root: str | os.PathLike[str]) -> Corpus:
    """Read a corpus directory in either layout (:func:`corpus_layout`), without warning about its problems.

    Raises:
        FileNotFoundError: ``root`` is not a directory, or holds neither layout (the message says what is expected),
            or an LJSpeech-format corpus lacks its ``wavs/`` folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory not found: expected a directory at {str(root)!r}")
    layout = corpus_layout(root)
    if layout is None:
        raise FileNotFoundError(f"no corpus in {str(root)!r}: expected {expected_layouts()}")
    if layout == "ljspeech":
        meta = root / METADATA_FILE
        utterances, lines = parse_metadata(root)
        problems = [Problem(str(meta), line, why) for line, why in lines]
        fingerprint = hashlib.sha256(meta.read_bytes()).hexdigest()
    else:
        utterances, found = parse_speaker_tree(root)
        problems = [Problem(path, None, why) for path, why in found]
        fingerprint = _tree_fingerprint(root, utterances, problems)
    return Corpus(root, layout, tuple(utterances), tuple(problems), fingerprint)
