"""Multi-speaker corpora: one folder of recordings per speaker, the layout of VCTK; per-speaker splits; what the
speakers of a cache make of a model's speaker conditioning.

A multi-speaker corpus directory holds one of the audio folders :data:`AUDIO_DIRS`, with one subfolder per speaker::

    <root>/wav48_silence_trimmed/p225/p225_001_mic1.flac   VCTK 0.92, as published (…_mic1 kept; …_mic2 only where
                                                           an utterance has no mic1 recording)
    <root>/wav48/p225/p225_001.wav                         VCTK 0.80
    <root>/wavs/<speaker>/<utterance>.wav (or .flac)       your own recordings
    <root>/txt/<speaker>/<utterance>.txt                   transcripts (optional; also <utterance>.txt beside the audio)

A speaker is the name of its folder; the recordings may sit at any depth below it. An utterance's id is the file
name without its extension (and without VCTK's ``_micN``), prefixed with ``<speaker>_`` unless it starts so already
(VCTK's ``p225_001`` stays, your ``wavs/anna/001.wav`` becomes ``anna_001``), so ids are unique across speakers.

Speaker ids are positions in the sorted list of the names of the speakers that keep at least one utterance in the
cache (``manifest.json``'s ``"speakers"``); a checkpoint stores the same list (``"speakers"``, index = id).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..wavenet import WaveNetConfig
from .ljspeech import SPLITS, Utterance, split_ids

__all__ = [
    "AUDIO_DIRS",
    "AUDIO_SUFFIXES",
    "MAX_SPEAKER_CHANNELS",
    "TRANSCRIPT_DIR",
    "find_audio_dir",
    "parse_speaker_tree",
    "speaker_conditioning",
    "split_by_speaker",
]

logger = logging.getLogger(__name__)

#: the audio folders of a multi-speaker corpus, looked for in this order: VCTK 0.92, VCTK 0.80, the generic name
AUDIO_DIRS = ("wav48_silence_trimmed", "wav48", "wavs")
#: the transcripts' folder: ``txt/<speaker>/<utterance>.txt``
TRANSCRIPT_DIR = "txt"
#: the audio files read (any other file in a speaker's folder is ignored)
AUDIO_SUFFIXES = (".wav", ".flac")
#: the widest speaker embedding chosen automatically (see :func:`speaker_conditioning`)
MAX_SPEAKER_CHANNELS = 32

_MIC = re.compile(r"^(?P<base>.+)_mic(?P<mic>\d+)$")  # VCTK 0.92: p225_001_mic1


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def find_audio_dir(root: str | os.PathLike[str]) -> Path | None:
    """The first of :data:`AUDIO_DIRS` under ``root`` that holds a speaker folder (a subfolder not starting with
    ``.``), or ``None``: an LJSpeech-format ``wavs/`` of plain files is not one."""
    for name in AUDIO_DIRS:
        folder = Path(root) / name
        if folder.is_dir() and any(p.is_dir() and _visible(p) for p in folder.iterdir()):
            return folder
    return None


def _utterance_id(speaker: str, stem: str) -> str:
    return stem if stem.startswith(f"{speaker}_") else f"{speaker}_{stem}"


def _transcript(root: Path, speaker: str, audio: Path, base: str) -> str:
    """``txt/<speaker>/<base>.txt``, else ``<base>.txt`` beside the audio; ``""`` when neither is readable."""
    for path in (root / TRANSCRIPT_DIR / speaker / f"{base}.txt", audio.with_name(f"{base}.txt")):
        if path.is_file():
            try:
                return " ".join(path.read_text(encoding="utf-8-sig").split())
            except (OSError, UnicodeDecodeError):
                return ""
    return ""


def _speaker_files(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """One speaker's recordings, ``{base name: path}`` (lowest ``_micN`` kept), and the problems found."""
    chosen: dict[str, tuple[int, Path]] = {}
    problems: list[tuple[str, str]] = []
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # fmt: skip
    for path in files:
        m = _MIC.match(path.stem)
        base, mic = (m["base"], int(m["mic"])) if m else (path.stem, 0)
        if base in chosen and chosen[base][0] == mic:
            uid = _utterance_id(folder.name, base)
            problems.append((str(path), f"duplicate utterance id {uid!r} (also {str(chosen[base][1])!r})"))
        elif base not in chosen or mic < chosen[base][0]:
            chosen[base] = (mic, path)
    return {base: path for base, (_, path) in chosen.items()}, problems


def parse_speaker_tree(root: str | os.PathLike[str]) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """The utterances of a multi-speaker corpus (sorted by speaker, then path) and ``(path, problem)`` for what is left
    out: audio files outside a speaker folder, speaker folders without audio, duplicate utterance ids. No warnings
    (the caller reports the problems).

    Raises:
        FileNotFoundError: ``root`` holds none of :data:`AUDIO_DIRS` with a speaker folder in it.
    """
    root = Path(root)
    audio_dir = find_audio_dir(root)
    if audio_dir is None:
        raise FileNotFoundError(f"no multi-speaker corpus in {str(root)!r}: expected speaker folders in one of "
                                f"{', '.join(f'{d}/' for d in AUDIO_DIRS)} (e.g. wavs/<speaker>/<utterance>.wav)")
    utterances: list[Utterance] = []
    problems: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for entry in sorted(filter(_visible, audio_dir.iterdir())):
        if not entry.is_dir():
            if entry.suffix.lower() in AUDIO_SUFFIXES:
                problems.append((str(entry), f"not in a speaker folder: expected {audio_dir.name}/<speaker>/"
                                             f"{entry.name}"))  # fmt: skip
            continue
        files, found = _speaker_files(entry)
        problems += found
        if not files:
            problems.append((str(entry), f"speaker folder without audio files ({', '.join(AUDIO_SUFFIXES)})"))
        for base, path in sorted(files.items(), key=lambda item: item[1]):
            uid = _utterance_id(entry.name, base)
            if uid in seen:
                problems.append((str(path), f"duplicate utterance id {uid!r} (also {str(seen[uid])!r})"))
                continue
            seen[uid] = path
            text = _transcript(root, entry.name, path, base)
            utterances.append(Utterance(uid, text, text, path, None, entry.name))
    return utterances, problems


def split_by_speaker(
    speaker_of: Mapping[str, str | None], val_fraction: float = 0.02, test_fraction: float = 0.02, min_val: int = 1
) -> dict[str, list[str]]:
    """:func:`~wavenet_dilated.data.ljspeech.split_ids` within each speaker's utterances (``speaker_of``: id → speaker
    name, ``None`` for a single-speaker corpus), joined: every speaker with at least 3 utterances has ``min_val`` in
    val, and an utterance's split depends only on its id and its speaker's other ids.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    """
    groups: dict[str | None, list[str]] = {}
    for uid, speaker in speaker_of.items():
        groups.setdefault(speaker, []).append(uid)
    split_ids([], val_fraction, test_fraction, min_val)  # checks the arguments, also without any id
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for ids in groups.values():
        for name, members in split_ids(ids, val_fraction, test_fraction, min_val).items():
            out[name] += members
    return {name: sorted(members) for name, members in out.items()}


def speaker_conditioning(
    config: WaveNetConfig, speakers: Sequence[str] | None, where: str = "the cache", use_speakers: bool = True
) -> WaveNetConfig:
    """``config`` with the speaker conditioning that training on a cache with ``speakers`` needs.

    * ``speakers`` is ``None`` (an LJSpeech-format corpus) or ``use_speakers`` is false (one speaker-independent
      model for all the voices of a multi-speaker corpus): ``config`` unchanged; a speaker-conditioned ``config`` is
      an error (there are no ids to train it with).
    * ``config.n_speakers`` is ``None`` and there are 2 speakers or more: conditioning switched on, ``n_speakers =
      len(speakers)`` and ``speaker_channels = min(n_speakers, MAX_SPEAKER_CHANNELS)`` (as wide as a one-hot code up
      to 32 speakers: a wider embedding adds nothing the per-layer projections cannot learn).
    * ``config.n_speakers`` is set: it must equal ``len(speakers)``.
    * one speaker and ``n_speakers`` unset: ``config`` unchanged (nothing to tell apart).

    Raises:
        ValueError: the model's ``n_speakers`` does not match ``speakers`` (one line naming both; ``where`` names the
            cache).
    """
    n = config.n_speakers
    if not use_speakers:
        if n is not None:
            raise ValueError(f"the model is speaker-conditioned (n_speakers={n}) but speaker ids are switched off: "
                             "set n_speakers=None for a speaker-independent model")
        return config
    if speakers is None:
        if n is not None:
            raise ValueError(f"the model is speaker-conditioned (n_speakers={n}) but {where} has no speaker ids (an "
                             "LJSpeech-format corpus): train on a multi-speaker corpus (wavs/<speaker>/… or VCTK) or "
                             "set n_speakers=None")  # fmt: skip
        return config
    names = list(speakers)
    if n is None:
        if len(names) < 2:
            return config
        channels = min(len(names), MAX_SPEAKER_CHANNELS)
        logger.info("%s has %d speakers: training a speaker-conditioned model (n_speakers=%d, speaker_channels=%d)",
                    where, len(names), len(names), channels)
        return dataclasses.replace(config, n_speakers=len(names), speaker_channels=channels)
    if n != len(names):
        shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
        raise ValueError(f"the model has n_speakers={n} but {where} has {len(names)} speakers ({shown}): set "
                         f"n_speakers={len(names)}, or n_speakers=None and speaker_channels=None to take the cache's")
    return config

