"""Synthesise the bundled demo corpus (wavenet_dilated/data/demo_corpus) with espeak-ng, in LJSpeech format.

    apt-get install espeak-ng      # eSpeak NG 1.51 made the committed corpus
    python -m recipes.make_demo_corpus [--out wavenet_dilated/data/demo_corpus]

Writes ``<out>/wavs/LJ-DEMO-NNNN.wav`` (22050 Hz, mono, 16-bit PCM) and ``<out>/metadata.csv``
(``id|text|normalized text``). The voice, speed and pitch cycle through a few en-us variants so the corpus is not one
monotone. The corpus is tiny (~2.8 MB, ~1 min of audio) on purpose: it is shipped with the package for smoke tests and for
trying the pipeline end to end without downloading LJSpeech; it is far too small to train a useful model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from wavenet_dilated.audio import SAMPLE_RATE, load_audio, save_audio
from wavenet_dilated.cli.train import DEMO_CORPUS

# Short, plain sentences written for this corpus (numbers spelled out, so text == normalized text).
SENTENCES = (
    "The river was calm this morning.",
    "She opened the window and listened.",
    "A small bird sang on the fence.",
    "We walked home before the rain.",
    "The old clock struck seven times.",
    "He painted the door a bright green.",
    "The train left the station on time.",
    "Please close the gate behind you.",
    "The bread is still warm from the oven.",
    "Two boats drifted across the bay.",
    "The library opens at nine.",
    "Snow covered the quiet village.",
    "They counted the stars in silence.",
    "My brother plays the violin.",
    "The letter arrived a week late.",
    "Green leaves turned to gold.",
    "The children laughed in the garden.",
    "A cold wind blew from the north.",
    "The lamp flickered and went out.",
    "She wrote her name in the sand.",
    "The market was busy and loud.",
    "He found the key under the mat.",
    "Thunder rolled over the hills.",
    "The soup needs a little more salt.",
    "We waited for the bus in the rain.",
    "The cat slept on the warm stone.",
    "A single candle lit the room.",
    "The road curved along the coast.",
    "Their voices echoed in the hall.",
    "The story ended with a song.",
)

# (voice, words per minute, pitch 0..99): mostly en-us, with a few of espeak-ng's voice variants for variety.
VOICES = (
    ("en-us", 165, 50),
    ("en-us+m3", 155, 45),
    ("en-us+f2", 170, 55),
    ("en-us", 180, 40),
    ("en-us+f4", 160, 60),
)


def synthesise(text: str, voice: str, speed: int, pitch: int, espeak: str) -> np.ndarray:
    """Speak ``text`` with espeak-ng; mono float32 at SAMPLE_RATE (resampled if espeak's rate differs)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(
            [espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        return load_audio(wav, SAMPLE_RATE)


def make_corpus(out: Path, espeak: str = "espeak-ng") -> Path:
    """Write the demo corpus under ``out`` (replacing its ``wavs/`` and ``metadata.csv``); returns ``out``."""
    if shutil.which(espeak) is None:
        raise FileNotFoundError(f"expected the espeak-ng executable {espeak!r} on PATH, found none (apt install espeak-ng)")
    wavs = out / "wavs"
    if wavs.is_dir():
        for old in wavs.glob("*.wav"):
            old.unlink()
    lines = []
    for i, text in enumerate(SENTENCES, start=1):
        uid = f"LJ-DEMO-{i:04d}"
        voice, speed, pitch = VOICES[(i - 1) % len(VOICES)]
        audio = synthesise(text, voice, speed, pitch, espeak)
        save_audio(wavs / f"{uid}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{uid}|{text}|{text}\n")
    (out / "metadata.csv").write_text("".join(lines), encoding="utf-8", newline="\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_CORPUS, help="output directory")
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    args = parser.parse_args()
    out = make_corpus(args.out, args.espeak)
    n_bytes = sum(p.stat().st_size for p in (out / "wavs").glob("*.wav"))
    print(f"wrote {len(SENTENCES)} utterances ({n_bytes / 1e6:.2f} MB) to {out}")


if __name__ == "__main__":
    main()
