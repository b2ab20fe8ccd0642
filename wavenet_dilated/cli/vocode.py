"""``wavenet-dilated vocode``: many mels or recordings → one wav each, batched by length.

    wavenet-dilated vocode run/checkpoints/best.pt tts_mels/ -o vocoded/ --mel-format tacotron2 --seed 0

Inputs are mel files (``.npy``, ``.pt``: read and converted to the checkpoint's features by
:class:`~wavenet_dilated.mel_formats.MelReader`), recordings (``.wav``, ``.flac``, ``.ogg``: their mel computed as in
training, :meth:`~wavenet_dilated.vocoder.Vocoder.mel`) or directories of them (their files of those types, sorted).
An input that cannot be read is skipped with one line saying why and counted; the others are still vocoded, together,
by :meth:`~wavenet_dilated.vocoder.Vocoder.vocode_many` (each output equals vocoding its input alone with the same
seed). The command fails (status 2) only when nothing could be vocoded, or before any work for a bad command line,
checkpoint, statistics file or output directory. No output ever replaces an input.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import DEFAULT_SAMPLE_RATE, PROG, add_generation_arguments, device, int_at_least, note, wrap

__all__ = ["AUDIO_SUFFIXES", "add_parser", "check_outputs", "expand_inputs", "output_names", "run"]

#: recordings the command computes a mel from (any format libsndfile reads could be added here)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def add_parser(commands: Any) -> None:
    from ..audio import MEL_FORMATS
    from ..mel_formats import MEL_SUFFIXES

    kinds = ", ".join((*MEL_SUFFIXES, *AUDIO_SUFFIXES))
    p = commands.add_parser(
        "vocode",
        help="vocode many mels (.npy, .pt) or recordings into one wav each",
        description=wrap("Vocode mels from a text-to-speech model, or recordings (copy synthesis), with a trained "
        f"vocoder: one 16-bit wav per input in OUT_DIR, named after it ({kinds} files, or directories of them). "
        "Inputs are batched by length; each output equals vocoding its input alone with the same --seed. A mel in "
        "another convention (--mel-format) is converted exactly when only its log base, normalisation or floor "
        "differ, and refused when its filterbank differs. Unreadable inputs are skipped with one line each; the "
        "command fails only when nothing could be vocoded. At the end it prints the files, seconds of audio, "
        "samples per second and the real-time factor (compute time / audio time)."),
        epilog=f"examples:\n  {PROG} vocode run/best.pt tts_out/ -o vocoded/ --mel-format tacotron2\n"
        f"  {PROG} vocode run/best.pt feats/ -o vocoded/ --mel-format espnet --stats dump/stats.npy\n"
        f"  {PROG} vocode run/best.pt LJ001-0001.wav LJ001-0002.wav -o copy_synthesis/ --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a vocoder checkpoint written by the trainer")
    p.add_argument("inputs", metavar="INPUT", type=Path, nargs="+",
                   help=f"mel files, recordings or directories of them ({kinds})")
    p.add_argument("-o", "--out-dir", metavar="OUT_DIR", type=Path, required=True,
                   help="directory for the wavs (created if missing); INPUT.npy becomes OUT_DIR/INPUT.wav, and inputs "
                   "with the same name get their type (a_npy.wav, a_wav.wav) and then a number")
    p.add_argument("--mel-format", choices=tuple(MEL_FORMATS), metavar="NAME",
                   help=f"convention of the mel files: {', '.join(MEL_FORMATS)} (default: the checkpoint's own, "
                   "normalised with its training statistics); recordings always get the checkpoint's own mel")
    p.add_argument("--stats", metavar="PATH|none",
                   help="statistics the mel files are normalised with (.npy rows mean and scale, .npz, .json or a "
                   ".pt checkpoint; stats.h5 needs converting, the error says how), or 'none' for raw log-mels "
                   "(default: the convention's custom: the checkpoint's statistics for its own convention, raw for "
                   "tacotron2; espnet needs one or the other)")
    p.add_argument("--batch-size", metavar="N", type=int_at_least(1), default=8,
                   help="inputs generated at once, grouped by length (default: 8)")
    add_generation_arguments(p, "each input is vocoded with it, so the same seed gives the same files however they "
                             "are batched (default: a fresh seed, printed)")
    p.set_defaults(run=run)


# --------------------------------------------------------------------------------------------------- inputs/outputs


def _supported(path: Path) -> bool:
    from ..mel_formats import MEL_SUFFIXES

    return path.suffix.lower() in (*MEL_SUFFIXES, *AUDIO_SUFFIXES)


def expand_inputs(inputs: list[Path], supported: Callable[[Path], bool] = _supported,
                  kind: str = "mel or audio") -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(files to read, (path, reason) of the inputs skipped)``: directories give their ``supported`` files, sorted;
    a file named twice is read once."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and supported(p))
            if not found:
                skipped.append((path, f"a directory with no {kind} files in it"))
            files.extend(found)
        elif not path.exists():
            skipped.append((path, "no such file or directory"))
        elif not supported(path):
            skipped.append((path, f"unsupported file type {path.suffix or '(none)'!r}"))
        else:
            files.append(path)
    unique = list(dict.fromkeys(files))  # a file named twice is vocoded once
    return unique, skipped


def output_names(files: list[Path], suffix: str = ".wav") -> list[str]:
    """One distinct name per input, ending in ``suffix``: its stem; inputs sharing a stem add their type
    (``a_npy.wav``), and any still alike a number (``a_npy_2.wav``)."""
    stems = Counter(f.stem for f in files)
    names = [f"{f.stem}_{f.suffix[1:].lower()}" if stems[f.stem] > 1 else f.stem for f in files]
    seen: Counter[str] = Counter()
    totals = Counter(names)
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name}_{seen[name]}{suffix}" if totals[name] > 1 and seen[name] > 1 else f"{name}{suffix}")
    return out


def check_outputs(out_dir: Path, files: list[Path], names: list[str], checkpoint: Path) -> list[Path]:
    """The output paths; a ``ValueError`` when ``out_dir`` cannot be a directory or an output is an input."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {str(out_dir)!r} is a file: expected a directory for the wavs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output directory {str(out_dir)!r}: {err.strerror or err}") from err
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"cannot write to the output directory {str(out_dir)!r}")
    outputs = [out_dir / name for name in names]
    for path in outputs:
        for source in (*files, checkpoint):
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise ValueError(f"the output {str(path)!r} would replace the input {str(source)!r}: choose another "
                                 "output directory (-o)")
    return outputs


# --------------------------------------------------------------------------------------------------- reading


def _mel_reader(args: argparse.Namespace, vocoder: Any) -> Any:
    """The :class:`~wavenet_dilated.mel_formats.MelReader` of the mel files, or ``None`` when the checkpoint has no
    audio_config or statistics (then mel files must already be its normalised features)."""
    from ..mel_formats import MelReader

    if (vocoder.audio_config is None or vocoder.stats is None) and args.mel_format is None and args.stats is None:
        return None
    return MelReader.create(vocoder.audio_config, vocoder.stats, args.mel_format, args.stats)


def _read(path: Path, vocoder: Any, reader: Any) -> Any:
    """The normalised mel ``(n_mels, frames)`` of one input."""
    from ..mel_formats import read_mel_file

    if path.suffix.lower() in AUDIO_SUFFIXES:
        return vocoder.mel(path)
    if reader is None:
        return read_mel_file(path, vocoder.n_mels)
    return reader.read(path)


def _read_all(files: list[Path], vocoder: Any, reader: Any) -> tuple[list[int], list[Any], list[tuple[Path, str]]]:
    """``(indices of the files read, their mels, (path, reason) of the others)``."""
    kept, mels, skipped = [], [], []
    for i, path in enumerate(files):
        try:
            mels.append(_read(path, vocoder, reader))
            kept.append(i)
        except (ValueError, OSError) as err:
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
    return kept, mels, skipped


# --------------------------------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    import sys

    from ..audio import save_audio
    from ..vocoder import load_vocoder

    files, skipped = expand_inputs(args.inputs)
    outputs = check_outputs(args.out_dir, files, output_names(files), args.checkpoint)
    where = device(args.device)
    vocoder = load_vocoder(args.checkpoint, device=where, use_ema=not args.no_ema, precision=args.precision)
    vocoder.speaker_id(args.speaker)  # a bad --speaker fails now, before any input is read
    reader = _mel_reader(args, vocoder) if any(f.suffix.lower() not in AUDIO_SUFFIXES for f in files) else None
    rate = vocoder.sample_rate
    if rate is None:
        rate = DEFAULT_SAMPLE_RATE
        note(f"{args.checkpoint} stores no audio_config: writing at {DEFAULT_SAMPLE_RATE} Hz")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1

    start = time.perf_counter()
    kept, mels, unreadable = _read_all(files, vocoder, reader)
    skipped += unreadable
    for path, reason in skipped:
        print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr)
    if not mels:
        raise ValueError(f"nothing to vocode: all {len(skipped)} inputs were skipped (see above)")
    # each output is written as soon as its batch is done: an interrupted job keeps what it finished
    waves = vocoder.vocode_many(mels, seed=seed, batch_size=args.batch_size, temperature=args.temperature,
                                speaker=args.speaker, progress=not args.no_progress,
                                on_result=lambda j, wave: save_audio(outputs[kept[j]], wave, rate))
    elapsed = time.perf_counter() - start

    n_samples = sum(int(w.shape[-1]) for w in waves)
    seconds = n_samples / rate
    speed = n_samples / elapsed if elapsed > 0 else float("inf")
    rtf = elapsed / seconds if seconds > 0 else float("inf")
    bad = f"; skipped {len(skipped)} bad input{'s' if len(skipped) != 1 else ''}" if skipped else ""
    print(f"vocoded {len(waves)} file{'s' if len(waves) != 1 else ''} into {args.out_dir}: {seconds:.2f} s of audio "
          f"at {rate} Hz in {elapsed:.2f} s on {where} (seed {seed}): {speed:,.0f} samples/s, real-time factor "
          f"{rtf:.3g} (compute time / audio time){bad}")
    return 0
