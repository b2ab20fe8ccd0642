"""Synthesise the bundled demo corpus (wavenet_dilated/data/demo_corpus) with espeak-ng, in LJSpeech format.

    apt-get install espeak-ng      # eSpeak NG 1.51 made the committed corpus
    python -m recipes.make_demo_corpus [--out wavenet_dilated/data/demo_corpus]
    python -m recipes.make_demo_corpus --out /tmp/demo_big --extra 60   # + 60 sentences in 15 voices (~13 MB)

Writes ``<out>/wavs/LJ-DEMO-NNNN.wav`` (22050 Hz, mono, 16-bit PCM) and ``<out>/metadata.csv``
(``id|text|normalized text``). The voice, speed and pitch cycle through a few en-us variants so the corpus is not one
monotone. The corpus is tiny (~2.8 MB, ~1 min of audio) on purpose: it is shipped with the package for smoke tests and for
trying the pipeline end to end without downloading LJSpeech; it is far too small to train a useful model.

``--extra N`` appends N more utterances (ids after the committed ones, which stay the same): sentences drawn from
templates (:func:`extra_sentences`, seeded) in :data:`EXTRA_VOICES`, fifteen voices and accents. The README's quality
section measured such a corpus (``--extra 60``: 90 utterances, 13 MB, 4.6 minutes of speech) against the committed one;
it did not train a better vocoder in ten minutes, so it is not the bundled corpus.
"""

from __future__ import annotations

import argparse
import random
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


# Template parts of the extra sentences: subject, verb, object and an ending, or a question before the clause.
_SUBJECTS = ("The old clerk", "A quiet neighbour", "My younger sister", "The tired pilot", "Every morning the baker",
             "The small dog", "Our teacher", "A stranger from the north", "The busy doctor", "Her cousin",
             "The village choir", "A patient fisherman", "The new manager", "His grandfather", "The tall gardener")
_VERBS = ("carried", "painted", "found", "bought", "repaired", "noticed", "measured", "followed", "described",
          "washed", "opened", "borrowed", "mentioned", "counted", "delivered")
_OBJECTS = ("a heavy wooden box", "the broken window", "seven yellow lamps", "a map of the river", "the morning paper",
            "two silver keys", "the kitchen table", "a basket of ripe plums", "the narrow bridge", "an empty bottle",
            "the loud engine", "a jar of honey", "the wet umbrella", "three green apples", "the distant tower")
_ENDINGS = ("before the rain began.", "near the crowded station.", "with great care.", "after a long supper.",
            "while the bells were ringing.", "on a cold Tuesday.", "beside the quiet lake.", "without a single word.",
            "just after midnight.", "during the summer fair.", "at the edge of town.", "as the sun went down.",
            "in a hurry.", "for the third time.", "under the old oak tree.")
_QUESTIONS = ("Did you hear that?", "Where did they go?", "How much does it cost?", "Is the water warm enough?",
              "Why was the door open?", "Who left the light on?", "What time is the next train?")

# the voices of the extra utterances: the five above, more of espeak-ng's variants, and four accents
EXTRA_VOICES = VOICES + (
    ("en-gb", 160, 50), ("en-us+m1", 150, 35), ("en-us+f1", 175, 65), ("en-gb-x-rp", 165, 45),
    ("en-us+m5", 170, 40), ("en-us+f3", 155, 70), ("en-gb-scotland", 160, 50), ("en-029", 165, 55),
    ("en-us+m7", 145, 30), ("en-us+f5", 185, 60),
)


def extra_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct template sentences (the same ones for a seed), one in about seven with a question first."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        if rng.random() < 0.15:
            question = rng.choice(_QUESTIONS)
            text = f"{question} {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        else:
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ENDINGS)}"
        if text not in out:
            out.append(text)
    return out


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


def make_corpus(out: Path, espeak: str = "espeak-ng", extra: int = 0) -> Path:
    """Write the demo corpus under ``out`` (replacing its ``wavs/`` and ``metadata.csv``); returns ``out``."""
    if shutil.which(espeak) is None:
        raise FileNotFoundError(f"expected the espeak-ng executable {espeak!r} on PATH, found none (apt install espeak-ng)")
    wavs = out / "wavs"
    if wavs.is_dir():
        for old in wavs.glob("*.wav"):
            old.unlink()
    lines = []
    voiced = [(text, VOICES[i % len(VOICES)]) for i, text in enumerate(SENTENCES)]
    voiced += [(text, EXTRA_VOICES[j % len(EXTRA_VOICES)]) for j, text in enumerate(extra_sentences(extra))]
    for i, (text, (voice, speed, pitch)) in enumerate(voiced, start=1):
        uid = f"LJ-DEMO-{i:04d}"
        audio = synthesise(text, voice, speed, pitch, espeak)
        save_audio(wavs / f"{uid}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{uid}|{text}|{text}\n")
    (out / "metadata.csv").write_text("".join(lines), encoding="utf-8", newline="\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_CORPUS, help="output directory")
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    parser.add_argument("--extra", type=int, default=0, help="template sentences to add (default: 0, the bundled corpus)")
    args = parser.parse_args()
    if args.extra < 0:
        parser.error(f"--extra must be >= 0, found {args.extra}")
    out = make_corpus(args.out, args.espeak, args.extra)
    n_bytes = sum(p.stat().st_size for p in (out / "wavs").glob("*.wav"))
    print(f"wrote {len(SENTENCES) + args.extra} utterances ({n_bytes / 1e6:.2f} MB) to {out}")


if __name__ == "__main__":
    main()
