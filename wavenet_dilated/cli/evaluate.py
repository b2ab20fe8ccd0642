"""``wavenet-dilated evaluate``: copy-synthesis quality of a vocoder checkpoint, beside a Griffin-Lim baseline.

Each utterance (a split of a corpus, or the files given) is vocoded from its own mel with the fast generator and
scored against the recording with the metrics of :mod:`wavenet_dilated.quality.metrics`; Griffin-Lim from the same mel
gets the same metrics, so every number has a reference point. Everything a user can get wrong (flags, checkpoint,
corpus, output paths, missing metric libraries) is checked before the (long) vocoding starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .common import PROG, add_generation_arguments, device, int_at_least, note, positive_float, print_fields, wrap

__all__ = ["add_parser", "run"]

#: the split fractions assumed when the checkpoint's run directory holds no cache manifest (the ljspeech preset's)
DEFAULT_VAL_FRACTION = DEFAULT_TEST_FRACTION = 0.02


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), found {text}")
    return value


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "evaluate",
        help="copy-synthesis quality of a vocoder (STOI, PESQ, MCD, F0 ...) against Griffin-Lim",
        description=wrap("Vocode held-out recordings from their own mels (the training features) with the fast "
        "generator and score the result against the recording: log-mel L1, mel-cepstral distortion, STOI, wideband "
        "PESQ, F0 RMSE (cents) and voiced/unvoiced error (pyin), and the share of sounding frames vocoded as dead "
        "digital silence. Griffin-Lim from the same mel is scored the same way. Prints the mean of each metric over "
        "the utterances (n/a where a metric does not apply, e.g. STOI on a clip under 0.4 s). Needs the eval extra: "
        "pip install -e \".[eval]\"."),
        epilog=f"examples:\n  {PROG} evaluate runs/demo/checkpoints/best.pt --data wavenet_dilated/data/demo_corpus\n"
        f"  {PROG} evaluate runs/ljspeech/checkpoints/best.pt --data data/LJSpeech-1.1 --split test "
        "--max-utterances 20 --max-seconds 4 --csv eval.csv\n"
        f"  {PROG} evaluate best.pt my_recording.wav --save-audio eval_audio/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a vocoder checkpoint written by the trainer")
    p.add_argument("wavs", metavar="WAV", type=Path, nargs="*",
                   help="recordings to evaluate (instead of --data), right after CHECKPOINT")
    p.add_argument("--data", metavar="CORPUS_DIR", type=Path,
                   help="evaluate a split of this corpus (LJSpeech format, or one folder per speaker)")
    p.add_argument("--split", choices=("val", "test", "all"), default="val",
                   help="which utterances of --data: the held-out val or test split of training (by a hash of each "
                   "id, as the training cache splits) or all (default: val)")
    p.add_argument("--val-fraction", metavar="F", type=_fraction,
                   help="the split fractions the model was trained with (default: read from the cache manifest in the "
                   f"checkpoint's run directory, else {DEFAULT_VAL_FRACTION}, the ljspeech preset's; the demo preset "
                   "uses 0.1)")
    p.add_argument("--test-fraction", metavar="F", type=_fraction, help="see --val-fraction")
    p.add_argument("--max-utterances", metavar="N", type=int_at_least(1),
                   help="evaluate only the first N utterances (in id order)")
    p.add_argument("--max-seconds", metavar="S", type=positive_float,
                   help="evaluate only the first S seconds of each utterance (for speed; default: all of it)")
    p.add_argument("--batch", metavar="N", type=int_at_least(1), default=8,
                   help="utterances vocoded at once, grouped by length (default: 8)")
    p.add_argument("--json", action="store_true", help="print the results (means and per utterance) as one JSON object")
    p.add_argument("--csv", metavar="PATH", type=Path, help="write one row per utterance with every metric")
    p.add_argument("--save-audio", metavar="DIR", type=Path,
                   help="write <id>.reference.wav, <id>.vocoded.wav and <id>.griffin_lim.wav into DIR")
    add_generation_arguments(p, "the vocoder's sampling and Griffin-Lim's initial phase: the same seed gives the "
                             "same numbers (default: 0); with --data each utterance's own speaker is used", 0)
    p.set_defaults(run=run)


# --------------------------------------------------------------------------------------------------- checks


def _check_writable_dir(directory: Path, flag: str) -> None:
    """``directory`` exists or can be made, and a file can be written in it (tried: permissions, read-only disks)."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{flag} {str(directory)!r} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f"{flag}: cannot write in {str(directory)!r} ({err.strerror or err})") from err


def _check_outputs(args: argparse.Namespace) -> None:
    if args.csv is not None:
        if args.csv.is_dir():
            raise ValueError(f"--csv {str(args.csv)!r} is a directory: expected a file name such as "
                             f"{str(args.csv / 'eval.csv')!r}")
        _check_writable_dir(args.csv.absolute().parent, "--csv")
    if args.save_audio is not None:
        _check_writable_dir(args.save_audio, "--save-audio")


def _run_fractions(checkpoint: Path) -> tuple[float, float, Path] | None:
    """The split fractions of the cache in the checkpoint's run directory (``<run>/checkpoints/X.pt`` beside
    ``<run>/cache/manifest.json``, the layout ``train`` writes), or ``None``."""
    from ..data.manifest import MANIFEST_FILE

    for run_dir in (checkpoint.absolute().parent.parent, checkpoint.absolute().parent):
        manifest = run_dir / "cache" / MANIFEST_FILE
        try:
            d = json.loads(manifest.read_text(encoding="utf-8"))
            return float(d["val_fraction"]), float(d["test_fraction"]), manifest
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _inputs(args: argparse.Namespace) -> tuple[list[tuple[str, Path]], dict[str, str] | None, str]:
    """``(id, path)`` per utterance, each corpus utterance's speaker (``None`` without speakers), and a description."""
    from ..quality.evaluate import corpus_utterances

    if args.data is None:
        if not args.wavs:
            raise ValueError("nothing to evaluate: give WAV files or --data CORPUS_DIR (see 'wavenet-dilated evaluate "
                             "--help')")
        for flag in ("val_fraction", "test_fraction"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} applies to --data only")
        for path in args.wavs:
            if not path.is_file():
                raise FileNotFoundError(f"audio file not found: {path}")
        ids, seen = [], {}
        for path in args.wavs:  # the file's stem, made unique
            seen[path.stem] = seen.get(path.stem, 0) + 1
            ids.append(path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}")
        pairs = list(zip(ids, args.wavs))
        return pairs[: args.max_utterances], None, f"{len(args.wavs)} file(s)"
    if args.wavs:
        raise ValueError("give WAV files or --data, not both")
    val, test = args.val_fraction, args.test_fraction
    found = _run_fractions(args.checkpoint) if val is None or test is None else None
    if found is not None:
        val, test = val if val is not None else found[0], test if test is not None else found[1]
    else:
        if val is None or test is None:
            note(f"no cache manifest beside {args.checkpoint} to read the training split from: assuming val fraction "
                 f"{DEFAULT_VAL_FRACTION if val is None else val}, test fraction "
                 f"{DEFAULT_TEST_FRACTION if test is None else test} (pass --val-fraction/--test-fraction as trained; "
                 "the demo preset uses --val-fraction 0.1)")
        val = DEFAULT_VAL_FRACTION if val is None else val
        test = DEFAULT_TEST_FRACTION if test is None else test
    utterances = corpus_utterances(args.data, args.split, val, test)[: args.max_utterances]
    if not utterances:
        raise ValueError(f"the {args.split} split of {args.data} is empty (val fraction {val}, test fraction {test}); "
                         "try --split all or other fractions")
    speakers = {u.id: u.speaker for u in utterances} if any(u.speaker for u in utterances) else None
    where = f"manifest {found[2]}" if found is not None else "flags/defaults"
    return [(u.id, u.wav_path) for u in utterances], speakers, \
        f"{args.split} split of {args.data} (fractions val {val:g}, test {test:g} from {where})"


# --------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..quality.evaluate import evaluate_vocoder, format_table, write_csv
    from ..quality.metrics import MissingEvalDependency, require_metric_libraries
    from ..vocoder import Vocoder

    try:
        require_metric_libraries()
    except MissingEvalDependency as err:
        raise ValueError(str(err)) from err
    inputs, speakers, described = _inputs(args)
    _check_outputs(args)
    where = device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    vocoder = Vocoder.from_checkpoint(args.checkpoint, device=where, use_ema=not args.no_ema,
                                      precision=args.precision)
    if vocoder.audio_config is None or vocoder.stats is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint stores no audio_config or mel_stats, so the mels the model "
                         "expects cannot be computed from recordings (a checkpoint written by the trainer stores both)")
    speaker = args.speaker
    if speaker is None and speakers is not None and vocoder.config.n_speakers is not None:
        speaker = speakers  # each corpus utterance as its own speaker
    evaluation = evaluate_vocoder(
        vocoder, inputs, seed=args.seed, temperature=args.temperature, speaker=speaker, max_seconds=args.max_seconds,
        batch_size=args.batch, save_audio_dir=args.save_audio, skip_unusable=args.data is not None,
        progress=not args.no_progress,
    )  # fmt: skip
    if args.csv is not None:
        write_csv(evaluation, args.csv)
    if args.json:
        facts = {"checkpoint": str(args.checkpoint), "step": ckpt.get("step"), "val_nll_bits": ckpt.get("val_nll_bits"),
                 "inputs": described, **evaluation.to_dict()}  # fmt: skip
        print(json.dumps(facts, indent=2))
        return 0
    nll = ckpt.get("val_nll_bits")
    rows = [
        ("checkpoint", f"{args.checkpoint} (step {'not recorded' if ckpt.get('step') is None else ckpt['step']}"
         + (f", validation NLL {nll:.4f} bits/sample)" if isinstance(nll, float) and math.isfinite(nll) else ")")),
        ("utterances", f"{len(evaluation.utterances)} ({evaluation.seconds:.1f} s of audio): {described}"
         + (f"; {len(evaluation.skipped)} skipped" if evaluation.skipped else "")),
        ("vocoding", f"{evaluation.vocode_seconds:.1f} s (real-time factor "
         f"{evaluation.vocode_seconds / max(evaluation.seconds, 1e-9):.2f}), seed {evaluation.seed}, temperature "
         f"{evaluation.temperature:g}"),
    ]
    print_fields(rows)
    print()
    print(format_table(evaluation))
    if args.csv is not None:
        note(f"per-utterance results written to {args.csv}")
    if args.save_audio is not None:
        note(f"audio written to {os.fspath(args.save_audio)}/<id>.{{reference,vocoded,griffin_lim}}.wav")
    return 0
