"""``wavenet-dilated mel``: recordings → the normalised log-mels a vocoder expects, one ``.npy`` each.

    wavenet-dilated mel run/checkpoints/best.pt speech.wav more_speech/ -o mels/

The features are :meth:`~wavenet_dilated.vocoder.Vocoder.mel`'s: exactly the training cache's (the checkpoint's audio
config and mel statistics), so ``sample --mel mels/speech.npy`` vocodes them as ``sample --mel-from speech.wav`` would.
Inputs are handled as ``vocode`` handles them (:func:`~.vocode.expand_inputs`): unreadable ones are skipped with one line
each, the command fails only when nothing was written, and no output replaces an input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import PROG, wrap

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    from .vocode import AUDIO_SUFFIXES

    p = commands.add_parser(
        "mel",
        help="write the normalised log-mels a vocoder expects (.npy), from recordings",
        description=wrap("Compute the log-mel of each recording exactly as the vocoder's training did (its audio "
        "config: resampling, mono, peak normalisation, STFT and mel bands; then its mel statistics), and write it "
        "as a float32 .npy of shape (n_mels, frames) into OUT_DIR, named after the recording. These are the inputs "
        f"of '{PROG} sample --mel' and '{PROG} vocode'. Unreadable inputs are skipped with one line each; the "
        "command fails only when nothing could be written."),
        epilog=f"example:\n  {PROG} mel run/best.pt LJ001-0001.wav recordings/ -o mels/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path,
                   help="the vocoder checkpoint whose features to compute (it stores the audio config and statistics)")
    p.add_argument("inputs", metavar="WAV", type=Path, nargs="+",
                   help=f"recordings ({', '.join(AUDIO_SUFFIXES)}) or directories of them")
    p.add_argument("-o", "--out-dir", metavar="OUT_DIR", type=Path, required=True,
                   help="directory for the .npy files (created if missing); INPUT.wav becomes OUT_DIR/INPUT.npy")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..vocoder import load_vocoder
    from .vocode import AUDIO_SUFFIXES, check_outputs, expand_inputs, output_names

    files, skipped = expand_inputs(args.inputs, lambda p: p.suffix.lower() in AUDIO_SUFFIXES, "audio")
    outputs = check_outputs(args.out_dir, files, output_names(files, ".npy"), args.checkpoint)
    vocoder = load_vocoder(args.checkpoint)
    if vocoder.audio_config is None or vocoder.stats is None:  # fail before reading any input
        missing = "audio_config" if vocoder.audio_config is None else "mel_stats"
        raise ValueError(f"{args.checkpoint}: the checkpoint stores no {missing}, so the features it was trained on "
                         "are unknown")
    frames = 0
    written = []
    for path, out in tqdm(list(zip(files, outputs)), desc="mel", unit="file", disable=args.no_progress):
        try:
            mel = vocoder.mel(path)
        except (ValueError, OSError) as err:
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
            continue
        np.save(out, mel.numpy().astype(np.float32, copy=False))
        frames += mel.shape[1]
        written.append(out)
    for path, reason in skipped:
        print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr)
    if not written:
        raise ValueError(f"nothing written: all {len(skipped)} inputs were skipped (see above)")
    seconds = frames * vocoder.hop_length / vocoder.sample_rate
    bad = f"; skipped {len(skipped)} bad input{'s' if len(skipped) != 1 else ''}" if skipped else ""
    print(f"wrote {len(written)} mel{'s' if len(written) != 1 else ''} ({vocoder.n_mels} bins, {frames} frames, "
          f"{seconds:.2f} s of audio) into {args.out_dir}{bad}")
    return 0
