"""Tiny LJSpeech-format corpora written with soundfile, for the audio and data tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050


def tone(seconds: float, sr: int = SR, freq: float = 440.0, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """A sine with a little noise (so every mel bin has energy), float32 (T,)."""
    t = np.arange(int(round(seconds * sr))) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    """``audio`` is (T,) or (T, channels), as soundfile takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype=subtype)
    return path


def write_corpus(root: Path, n: int = 6, seconds: float = 0.4, sr: int = SR, prefix: str = "UT") -> list[str]:
    """``n`` good utterances (tones of different pitch and length) in ``root``; returns their ids."""
    ids, lines = [], []
    for i in range(n):
        uid = f"{prefix}-{i:04d}"
        write_wav(root / "wavs" / f"{uid}.wav", tone(seconds + 0.05 * i, sr, freq=220.0 * (1 + i % 4), seed=i), sr)
        ids.append(uid)
        lines.append(f'{uid}|Sentence "{i}" here.|Sentence "{i}" here.\n')
    (root / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    return ids


def add_line(root: Path, line: str) -> None:
    with open(root / "metadata.csv", "a", encoding="utf-8") as f:
        f.write(line if line.endswith("\n") else line + "\n")


def make_tar_bz2(path: Path, files: dict[str, bytes]) -> bytes:
    """A tar.bz2 holding ``files`` (member name → contents); returns the archive's bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def tiny_ljspeech_files(n: int = 3) -> dict[str, bytes]:
    """Member name → bytes for a miniature ``LJSpeech-1.1/`` tree."""
    files = {}
    lines = []
    for i in range(n):
        buf = io.BytesIO()
        sf.write(buf, tone(0.3, seed=i), SR, format="WAV", subtype="PCM_16")
        files[f"LJSpeech-1.1/wavs/LJ001-{i:04d}.wav"] = buf.getvalue()
        lines.append(f"LJ001-{i:04d}|Text {i}.|Text {i}.\n")
    files["LJSpeech-1.1/metadata.csv"] = "".join(lines).encode("utf-8")
    return files
