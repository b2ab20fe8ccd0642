"""LJSpeech-format corpora: the published archive's constants, ``metadata.csv`` parsing, and the train/val/test split.

A corpus directory holds ``metadata.csv`` (``id|transcription|normalized transcription`` per line) and ``wavs/<id>.wav``.
Malformed lines never stop a run: each is skipped with one :class:`DataWarning` naming its line number and the reason.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import check_int

__all__ = [
    "LJSPEECH_URL",
    "LJSPEECH_SIZE",
    "LJSPEECH_SHA256",
    "LJSPEECH_DIRNAME",
    "METADATA_FILE",
    "SPLITS",
    "DataWarning",
    "Utterance",
    "read_metadata",
    "split_ids",
]

# --- LJSpeech 1.1 as published by Keith Ito (public domain) ----------------------------------------------------------
LJSPEECH_URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
LJSPEECH_SIZE = 2_748_572_632  # bytes of the official archive
# sha256 of the official archive; the same value is pinned by torchaudio.datasets.LJSPEECH and Homebrew's lj-speech.
LJSPEECH_SHA256 = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
LJSPEECH_DIRNAME = "LJSpeech-1.1"  # the archive's single top-level directory

METADATA_FILE = "metadata.csv"  # id|transcription|normalized transcription, UTF-8, no header, no quoting
WAVS_DIR = "wavs"
SPLITS = ("train", "val", "test")


class DataWarning(UserWarning):
    """A metadata line or an audio file was skipped (the message names it and says why)."""


def warn_skipped(message: str, stacklevel: int = 3) -> None:
    """Issue a :class:`DataWarning`; the default ``stacklevel`` names the caller of the function that calls this."""
    warnings.warn(message, DataWarning, stacklevel=stacklevel)


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus: a line of an LJSpeech-format ``metadata.csv``, or an audio file of a multi-speaker
    corpus (:mod:`~wavenet_dilated.data.speakers`).

    Args:
        id: utterance id, e.g. ``"LJ001-0001"`` or ``"p225_001"``: unique in the corpus, a plain file name.
        text: the transcription as read (``""`` when a multi-speaker corpus has none for it).
        normalized_text: numbers, abbreviations … spelled out (equals ``text`` for two-column files and for
            multi-speaker corpora).
        wav_path: path of the audio file.
        line: 1-based line number in ``metadata.csv``; ``None`` for a multi-speaker corpus (no metadata file).
        speaker: the speaker's name (its folder) in a multi-speaker corpus; ``None`` in an LJSpeech-format one.
    """

    id: str
    text: str
    normalized_text: str
    wav_path: Path
    line: int | None
    speaker: str | None = None


def _parse_line(root: Path, line: str, line_no: int, seen: dict[str, int]) -> Utterance | str:
    """The utterance on one decoded, non-blank line, or why the line is skipped."""
    fields = line.split("|")
    if len(fields) not in (2, 3):
        return f"expected 3 '|'-separated fields (id|text|normalized text), found {len(fields)}"
    uid, text = fields[0].strip(), fields[1].strip()
    normalized = fields[2].strip() if len(fields) == 3 else text
    if not uid or not text or not normalized:
        return "empty id or transcription"
    if "/" in uid or "\\" in uid or uid.startswith(".") or uid != os.path.basename(uid):
        return f"id {uid!r} is not a plain file name"
    if uid in seen:
        return f"duplicate id {uid!r} (first on line {seen[uid]})"
    wav = root / WAVS_DIR / f"{uid}.wav"
    if not wav.is_file():
        return f"audio file {str(wav)!r} is missing"
    return Utterance(uid, text, normalized, wav, line_no)


def parse_metadata(root: Path) -> tuple[list[Utterance], list[tuple[int, str]]]:
    """Utterances and ``(line number, problem)`` for every skipped line, without warning (see :func:`read_metadata`)."""
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory not found: expected a directory at {str(root)!r}")
    meta = root / METADATA_FILE
    if not meta.is_file():
        raise FileNotFoundError(
            f"{METADATA_FILE} not found: expected an LJSpeech-format corpus with {str(meta)!r} (and {WAVS_DIR}/)"
        )
    if not (root / WAVS_DIR).is_dir():  # one line, rather than a "missing" warning for every line of metadata.csv
        raise FileNotFoundError(
            f"no {WAVS_DIR}/ folder in {str(root)!r}: expected the audio files as {WAVS_DIR}/<id>.wav beside {METADATA_FILE}"
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
            parsed = _parse_line(root, line, line_no, seen)
            if isinstance(parsed, str):
                problems.append((line_no, parsed))
                continue
            seen[parsed.id] = line_no
            utterances.append(parsed)
    return utterances, problems


def read_metadata(root: str | os.PathLike[str]) -> list[Utterance]:
    """Parse ``<root>/metadata.csv`` of an LJSpeech-format corpus, in file order.

    Format: ``id|transcription|normalized transcription`` per line, UTF-8, no header, ``|``-separated with no quoting
    (LJSpeech's texts contain ``"``). Two-column lines (``id|text``) are accepted. Malformed lines (wrong field count,
    empty fields, invalid UTF-8, duplicate ids, ids that are not plain file names) and lines whose
    ``<root>/wavs/<id>.wav`` is missing are skipped with one :class:`DataWarning` each, naming the line number.

    Raises:
        FileNotFoundError: ``root``, ``root/metadata.csv`` or the ``root/wavs/`` folder does not exist.
    """
    root = Path(root)
    utterances, problems = parse_metadata(root)
    for line_no, why in problems:
        warn_skipped(f"{root / METADATA_FILE}:{line_no}: skipped: {why}")
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
        if not 0.0 <= frac < 1.0:  # half-open, which check_number does not express
            raise ValueError(f"{name} must be in [0, 1), found {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, found {val_fraction + test_fraction}")
    check_int("min_val", min_val, 0)

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
