"""The ``wavenet-dilated`` command: ``sample``, ``rf``, ``bench`` and ``info``.

One entry point, :func:`cli`, behind the ``[project.scripts]`` entry (and ``python -m wavenet_dilated``). It returns an
exit status instead of exiting, so tests can run it in-process::

    >>> cli(["rf", "--layers", "6", "--compare"])  # doctest: +SKIP
    0

Errors a user can cause (a missing or foreign checkpoint, a mel with the wrong number of bins, an unwritable output
directory, a bad flag value …) print one line, ``wavenet-dilated: error: …``, on stderr and return 2. The library
raises ``ValueError`` / ``FileNotFoundError`` / ``OSError`` for those; only :func:`cli` turns them into that line, so a
genuine bug still shows its traceback.

argparse lives here and nowhere else in the package (``recipes/`` has its own).

Runtime settings: started as a command (``wavenet-dilated bench`` or ``python -m wavenet_dilated bench``), ``bench``
restarts itself once with :data:`~wavenet_dilated.runtime.RUNTIME_ENV` in its environment (the values a user set are
kept), so that it measures under the settings the training recipe and ``benchmarks/run.py`` use. It has to restart:
libgomp reads its wait policy when torch is imported, before any of this code runs. Measured, ``bench --quick
--preset demo``, 3 runs each on the shared 2-core machine, without → with: the reference generator's CPU time per
second 1.99 → 0.97 (idle OpenMP workers no longer spin); 2-thread fast generation at batch 1 32–35k → 37–63k
samples/s (noisy); 2-thread ``model.loss`` training 27.2k → 25.1k samples/s (waking sleeping workers costs when
the cores are idle), ``fused_loss`` 31.4k → 31.2k. The restart costs one more ``import torch`` (~3 s).
``sample`` does not restart: vocoding 1 s of audio took the same time with the settings exported (``demo``
0.35 vs 0.34 s, ``ljspeech`` 7.05 vs 6.85 s, medians of 5, within the noise), less than the restart would add.
``rf`` and ``info`` hardly compute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..checkpoint import describe, load_checkpoint, read_audio_config, read_config, read_mel_stats, sample_rate
from ..nn import dilation as dil
from ..presets import MODEL_PRESETS, model_preset
from ..runtime import reexec_with_runtime_env
from ..wavenet import WaveNet, WaveNetConfig

__all__ = ["cli", "build_parser"]

PROG = "wavenet-dilated"
#: the rate assumed for a checkpoint that stores no audio_config (LJSpeech's)
DEFAULT_SAMPLE_RATE = 22050
#: every output file is written as 16-bit PCM
OUTPUT_SUBTYPE = "PCM_16"
#: largest receptive field (per axis) that ``rf --measure`` back-propagates through a 2D stack
MAX_MEASURE_RF_2D = 1025
#: exit status for every user error (argparse's convention)
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line, raised by the parser instead of argparse's print-usage-and-exit."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors become one line (see :func:`cli`) instead of usage + ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------------- argument types


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, found {text}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, found {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def _dilation_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, found {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or more dilations >= 1 such as 1,2,4, found {text!r}")
    return values


# --------------------------------------------------------------------------------------------------- parser


def _wrap(text: str) -> str:
    """A description paragraph wrapped for the raw formatters (which keep the examples' line breaks)."""
    return textwrap.fill(text, width=79)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one parser with a subparser per command; each sets ``run`` to its function."""
    parser = _Parser(
        prog=PROG,
        description="WaveNet with dilated convolutions: sample audio from a checkpoint, study receptive fields, "
        "benchmark generation, inspect checkpoints.",
        epilog=f"Run '{PROG} COMMAND --help' for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the package version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_sample(commands)
    _add_rf(commands)
    _add_bench(commands)
    _add_info(commands)
    return parser


def _add_sample(commands: Any) -> None:
    p = commands.add_parser(
        "sample",
        help="generate audio from a checkpoint (unconditional, or vocode a mel)",
        description=_wrap("Generate audio with the cached fast generator. An unconditioned model generates --seconds of "
        "audio; a mel-conditioned model (a vocoder) vocodes --mel-from INPUT.wav or --mel FILE.npy, giving "
        "frames x hop_length samples. Files are written as 16-bit PCM at the checkpoint's sample rate "
        f"({DEFAULT_SAMPLE_RATE} Hz, with a note, for a checkpoint that stores no audio_config). At the end it "
        "prints the duration, samples per second and the real-time factor (compute time / duration of the audio "
        "generated; below 1 is faster than real time)."),
        epilog=f"examples:\n  {PROG} sample run/best.pt --mel-from LJ001-0001.wav -o vocoded.wav\n"
        f"  {PROG} sample run/uncond.pt --seconds 2 --batch 4 --seed 7 -o samples/noise.wav",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a checkpoint written by the trainer or WaveNet.save")
    p.add_argument("-o", "--output", metavar="OUT.wav", type=Path, required=True,
                   help="file to write (the extension picks the format: .wav, .flac, ...); with --batch N > 1 the "
                   "files are OUT_0.wav ... OUT_{N-1}.wav; missing directories are created")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--mel-from", metavar="INPUT.wav", type=Path,
                      help="vocode this recording: it is loaded as mono at the checkpoint's sample rate (resampled if "
                      "needed, not trimmed), its log-mel computed with the checkpoint's AudioConfig and normalised "
                      "with its MelStats; output length = frames x hop (the input length rounded down to whole hops)")
    cond.add_argument("--mel", metavar="FILE.npy", type=Path,
                      help="vocode this mel: a float .npy array of shape (n_mels, frames), ALREADY NORMALISED with the "
                      "checkpoint's MelStats (as the model saw in training) unless --normalize-mel is given; output "
                      "length = frames x hop")
    p.add_argument("--normalize-mel", action="store_true",
                   help="--mel holds a raw log-mel (e.g. from the preprocessing cache): normalise it with the "
                   "checkpoint's MelStats first")
    p.add_argument("--seconds", metavar="S", type=_positive_float,
                   help="seconds of audio; required for an unconditioned model (exactly round(S x rate) samples); "
                   "with a mel, vocode only its first S seconds")
    p.add_argument("--batch", metavar="N", type=_int_at_least(1), default=1,
                   help="generate N different samples at once (for a vocoder: N renditions of the same mel); "
                   "writes OUT_0.wav ... OUT_{N-1}.wav, or OUT.wav when N = 1 (default: 1)")
    p.add_argument("--temperature", metavar="T", type=_positive_float, default=1.0,
                   help="sampling temperature > 0: below 1 is more conservative, above 1 noisier (default: 1.0)")
    p.add_argument("--seed", metavar="SEED", type=_int_at_least(0),
                   help="random seed; the same seed, checkpoint and flags give the same files (default: a fresh seed, "
                   "printed so the run can be repeated)")
    p.add_argument("--speaker", metavar="ID", type=_int_at_least(0),
                   help="speaker id in [0, n_speakers - 1]; required by a speaker-conditioned model, refused otherwise")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw trained weights even when the checkpoint holds EMA weights (default: EMA when "
                   "present)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(run=_run_sample)


def _add_rf(commands: Any) -> None:
    p = commands.add_parser(
        "rf",
        help="receptive field, parameters, gridding coverage and HDC validity of a stack",
        description=_wrap("Receptive field (samples and milliseconds), parameter count, gridding coverage (the fraction of "
        "offsets inside the receptive field that some input-to-output path reaches) and HDC validity (Wang et al. "
        "2018, checked on one group of rates: one stack) of a dilated stack, given as a model preset, a "
        "checkpoint, or explicitly with --dilations or --layers."),
        epilog=f"examples:\n  {PROG} rf --preset ljspeech\n  {PROG} rf --compare --layers 6\n"
        f"  {PROG} rf --compare --layers 6 --dims 2        # the 3x3 table of the chapter\n"
        f"  {PROG} rf --dilations 1,2,5 --stacks 3 --kernel 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="a named model size")
    source.add_argument("--checkpoint", metavar="PATH", type=Path, help="the model stored in a checkpoint")
    source.add_argument("--dilations", metavar="R1,R2,...", type=_dilation_list,
                        help="explicit rates of one stack, e.g. 1,2,5 (repeated --stacks times)")
    source.add_argument("--layers", metavar="L", type=_int_at_least(1),
                        help="explicit stack of L layers with exponential rates 1, 2, 4, ..., 2^(L-1) (repeated --stacks "
                        "times)")
    p.add_argument("--kernel", metavar="K", type=_int_at_least(1),
                   help="kernel size of every layer of an explicit stack (default: 3)")
    p.add_argument("--stacks", metavar="N", type=_int_at_least(1),
                   help="how many times an explicit stack's rates repeat (default: 1)")
    p.add_argument("--channels", metavar="C", type=_int_at_least(1),
                   help="channels in and out of every layer of an explicit stack, for its parameter count "
                   "(default: 64)")
    p.add_argument("--dims", type=int, choices=(1, 2),
                   help="1 for audio (k taps), 2 for images (k x k kernels) in an explicit stack's parameter count and "
                   "coverage (default: 1); the receptive field is per axis")
    p.add_argument("--sample-rate", metavar="HZ", type=_int_at_least(1),
                   help=f"rate for the milliseconds (default: the checkpoint's, else {DEFAULT_SAMPLE_RATE})")
    p.add_argument("--compare", action="store_true",
                   help="also print a table, layer by layer, of the receptive field of a standard stack (every "
                   "dilation 1) beside the dilated one, with their (equal) parameter counts")
    p.add_argument("--measure", action="store_true",
                   help="also measure the receptive field from gradients: back-propagate from one output and count "
                   "the inputs it reaches (through the real network for a preset, with random weights, or a "
                   "checkpoint; through an all-ones stack for an explicit one), and check causality")
    p.set_defaults(run=_run_rf)


def _add_bench(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="measure generation speed against the FLOP model",
        description="Benchmark generation (naive vs cached vs fast, samples per second, achieved GFLOP/s beside the "
        "performance model and this machine's matrix throughput) for model presets.",
    )
    p.add_argument("--preset", action="append", choices=sorted(MODEL_PRESETS),
                   help="a preset to measure; repeat for several (default: the benchmark's own choice)")
    p.add_argument("--quick", action="store_true", help="short runs: a rough answer in seconds")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to run (default: the benchmark's, the CPU)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(run=_run_bench)


def _add_info(commands: Any) -> None:
    p = commands.add_parser(
        "info",
        help="what a checkpoint holds",
        description="Print a checkpoint's model config, training step, sample rate, receptive field (samples and "
        "ms), parameter count, validation NLL (bits per sample) and which weights it holds (EMA or not).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a checkpoint written by the trainer or WaveNet.save")
    p.add_argument("--json", action="store_true", help="print the same facts as one JSON object")
    p.set_defaults(run=_run_info)


# --------------------------------------------------------------------------------------------------- entry point


def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success, 2 for a user error (one line on stderr), 130 when interrupted. ``--help`` and ``--version`` print and
    return 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except UsageError as err:
        return _fail(str(err))
    except SystemExit as done:  # --help, --version: argparse printed and "exited"
        return done.code if isinstance(done.code, int) else 0
    if args.command is None:
        return _fail(f"choose a command: sample, rf, bench or info (see '{PROG} --help')")
    if argv is None and args.command == "bench" and _started_as_the_command():
        reexec_with_runtime_env()  # returns when the settings are already there (or this is the restarted process)
    try:
        with warnings.catch_warnings():  # restores the default display afterwards
            warnings.showwarning = _show_warning
            return args.run(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        return _fail(str(err) or type(err).__name__)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _started_as_the_command() -> bool:
    """Whether this process is ``wavenet-dilated …`` or ``python -m wavenet_dilated …``: then running its command line
    again runs this command again (not so when :func:`cli` is called from another program)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == f"{__package__}.__main__":
        return True
    return Path(getattr(main, "__file__", None) or "").stem == PROG


def _fail(message: str) -> int:
    one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return EXIT_USAGE


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Library warnings (e.g. the fast generator falling back) as one line, without a source excerpt."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- shared helpers


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (no GPU, or torch was built without CUDA); "
                         "use --device cpu")
    return name


def _ms(samples: int, rate: int) -> str:
    return f"{samples / rate * 1000:.2f} ms"


def _format_rates(group: Sequence[int], n_stacks: int) -> str:
    rates = list(group)
    text = ", ".join(map(str, rates)) if len(rates) <= 8 else ", ".join(map(str, rates[:3])) + f", ..., {rates[-1]}"
    return text + (f" (x {n_stacks} stacks)" if n_stacks > 1 else "")


def _print_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} : {value}")


# --------------------------------------------------------------------------------------------------- sample


def _output_paths(output: Path, n: int) -> list[Path]:
    """``OUT.wav`` for one file; ``OUT_0.wav … OUT_{n-1}.wav`` for a batch."""
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(n)]


def _check_writable(path: Path) -> None:
    """Fail before generating if ``path`` cannot be written: unknown format, a directory, or an unwritable place."""
    import tempfile

    import soundfile as sf

    fmt = path.suffix[1:].upper()
    if fmt not in sf.available_formats():
        raise ValueError(f"cannot tell the audio format of {str(path)!r} from its extension: end it in .wav or .flac")
    if not sf.check_format(fmt, OUTPUT_SUBTYPE):
        raise ValueError(f"{str(path)!r}: the {fmt} format cannot hold 16-bit PCM; use .wav or .flac")
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a directory: expected a file name such as {str(path / 'out.wav')!r}")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(ancestor)!r} is a file, not a directory")
    try:  # the only reliable test (permissions, read-only file systems, root): try it
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {str(path)!r}: directory {str(ancestor)!r} is not writable "
                         f"({err.strerror or err})") from err
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {str(path)!r}: the existing file is read-only")


def _mel_from_wav(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig):  # -> torch.Tensor
    """``--mel-from``: recording → normalised log-mel ``(n_mels, frames)`` exactly as training computed it."""
    import numpy as np
    import torch

    from ..audio import load_audio, log_mel, peak_normalize

    audio_config = read_audio_config(ckpt, args.checkpoint)
    if audio_config is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint stores no audio_config, so --mel-from cannot compute the "
                         "mel the model expects; pass a normalised --mel FILE.npy instead")
    if audio_config.n_mels != config.cond_channels or audio_config.hop_length != config.hop_length:
        raise ValueError(f"{args.checkpoint}: audio_config (n_mels={audio_config.n_mels}, hop_length="
                         f"{audio_config.hop_length}) disagrees with the model (cond_channels={config.cond_channels}, "
                         f"hop_length={config.hop_length})")
    stats = read_mel_stats(ckpt, args.checkpoint, config.cond_channels, "--mel-from")
    audio = load_audio(args.mel_from, sample_rate=audio_config.sample_rate)  # FileNotFoundError / ValueError
    if not np.isfinite(audio).all():
        raise ValueError(f"{args.mel_from}: the recording holds NaN or infinite samples")
    if audio.size < audio_config.hop_length:
        raise ValueError(f"{args.mel_from}: too short to vocode: {audio.size} samples at {audio_config.sample_rate} Hz "
                         f"is less than one hop ({audio_config.hop_length} samples)")
    if audio_config.peak_normalize:  # as preprocessing did for the training data
        audio = peak_normalize(audio)
    mel = log_mel(torch.from_numpy(audio), audio_config)
    return stats.normalize(mel)


def _mel_from_npy(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig):  # -> torch.Tensor
    """``--mel``: a saved ``(n_mels, frames)`` array, checked (and normalised with ``--normalize-mel``)."""
    import numpy as np
    import torch

    path = args.mel
    if not path.is_file():
        raise FileNotFoundError(f"mel file not found: {path}")
    try:
        mel = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    if not isinstance(mel, np.ndarray):
        raise ValueError(f"{path}: expected one .npy array of shape (n_mels, frames), found a {type(mel).__name__} "
                         "(an .npz archive?)")
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2:
        raise ValueError(f"{path}: expected a mel of shape ({config.cond_channels}, frames), found shape {mel.shape}")
    if mel.shape[0] != config.cond_channels:
        raise ValueError(f"{path}: the mel has {mel.shape[0]} bins but the model expects {config.cond_channels} "
                         f"(shape {mel.shape}; expected ({config.cond_channels}, frames))")
    if mel.shape[1] == 0:
        raise ValueError(f"{path}: the mel has no frames")
    if not np.issubdtype(mel.dtype, np.floating) or not np.isfinite(mel).all():
        raise ValueError(f"{path}: the mel must hold finite floats, found dtype {mel.dtype}"
                         + ("" if not np.issubdtype(mel.dtype, np.floating) else " with NaN or infinite values"))
    mel = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))
    if args.normalize_mel:
        mel = read_mel_stats(ckpt, args.checkpoint, config.cond_channels, "--normalize-mel").normalize(mel)
    return mel


def _generator() -> tuple[Callable[..., Any], str]:
    """The fastest generator available: ``fastgen.fast_generate`` when installed, else the reference cached one."""
    try:
        from ..generation.fast import fast_generate

        return fast_generate, "fast"
    except ImportError:
        from ..generation.reference import generate

        return generate, "cached"


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from ..audio import save_audio
    from ..generation.reference import to_waveform

    if args.normalize_mel and args.mel is None:
        raise ValueError("--normalize-mel applies to --mel FILE.npy only")
    ckpt = load_checkpoint(args.checkpoint)
    config = read_config(ckpt, args.checkpoint)
    device = _device(args.device)
    rate = sample_rate(ckpt)
    if rate is None:
        rate = DEFAULT_SAMPLE_RATE
        _note(f"{args.checkpoint} stores no audio_config: writing at {DEFAULT_SAMPLE_RATE} Hz")
    outputs = _output_paths(args.output, args.batch)
    for path in outputs:
        _check_writable(path)

    # what to generate: everything is checked before the model is built and the (long) generation starts
    speaker = args.speaker
    if config.n_speakers is None:
        if speaker is not None:
            raise ValueError(f"{args.checkpoint} has no speaker conditioning: drop --speaker")
    elif speaker is None:
        raise ValueError(f"{args.checkpoint} is speaker-conditioned: pass --speaker ID, "
                         f"0 <= ID <= {config.n_speakers - 1}")
    elif speaker >= config.n_speakers:
        raise ValueError(f"--speaker {speaker} is out of range: this model has {config.n_speakers} speakers "
                         f"(0 .. {config.n_speakers - 1})")
    mel = None
    if config.cond_channels is None:
        if args.mel_from is not None or args.mel is not None:
            flag = "--mel-from" if args.mel_from is not None else "--mel"
            raise ValueError(f"{args.checkpoint} is an unconditioned model: it takes no mel ({flag}); "
                             "pass --seconds instead")
        if args.seconds is None:
            raise ValueError(f"{args.checkpoint} is an unconditioned model: pass --seconds S for the length")
        n_samples = round(args.seconds * rate)
        if n_samples < 1:
            raise ValueError(f"--seconds {args.seconds} is less than one sample at {rate} Hz")
    else:
        if args.mel_from is None and args.mel is None:
            raise ValueError(f"{args.checkpoint} is a mel-conditioned vocoder: pass --mel-from INPUT.wav or "
                             "--mel FILE.npy")
        mel = _mel_from_wav(args, ckpt, config) if args.mel_from is not None else _mel_from_npy(args, ckpt, config)
        total = mel.shape[1] * config.hop_length
        n_samples = None
        if args.seconds is not None:
            n_samples = round(args.seconds * rate)
            if not 1 <= n_samples <= total:
                raise ValueError(f"--seconds {args.seconds} asks for {n_samples} samples but the mel covers "
                                 f"{total} samples ({total / rate:.3f} s); use at most that")
        mel = mel.unsqueeze(0).expand(args.batch, -1, -1).contiguous()

    model = WaveNet.from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    model.remove_weight_norm()  # folds weight norm: same outputs, fewer ops per step
    model.to(device)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    generate, kind = _generator()
    start = time.perf_counter()
    samples = generate(model, n_samples=n_samples, mel=mel, speaker=speaker, batch_size=args.batch,
                       temperature=args.temperature, seed=seed, progress=not args.no_progress)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    waves = to_waveform(samples, model).float().cpu().numpy()
    for path, wave in zip(outputs, waves):
        save_audio(path, wave, rate, subtype=OUTPUT_SUBTYPE)

    B, T = waves.shape
    seconds = T / rate
    names = str(outputs[0]) if B == 1 else f"{B} files {outputs[0]} ... {outputs[-1]}"
    print(f"wrote {names}: {seconds:.3f} s ({T} samples at {rate} Hz){' each' if B > 1 else ''}")
    speed = B * T / elapsed if elapsed > 0 else math.inf
    rtf = elapsed / (B * seconds) if seconds > 0 else math.inf
    print(f"generated {B * T} samples in {elapsed:.2f} s with the {kind} generator on {device} (seed {seed}): "
          f"{speed:,.0f} samples/s, real-time factor {rtf:.3g} (compute time / audio time; < 1 is faster than real "
          "time)")
    return 0


# --------------------------------------------------------------------------------------------------- rf


@dataclass
class _Stack:
    """One dilated stack as ``rf`` reports it."""

    label: str
    kernel: int
    group: list[int]
    n_stacks: int
    dims: int
    sample_rate: int
    parameters: int
    parameters_note: str
    #: parameters of the first i layers (i = 1..n), for the comparison table
    cumulative_parameters: list[int] = field(default_factory=list)
    model: WaveNet | None = None

    @property
    def dilations(self) -> list[int]:
        return self.group * self.n_stacks


def _explicit_only(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--kernel", args.kernel), ("--stacks", args.stacks),
                                      ("--channels", args.channels), ("--dims", args.dims)) if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: only for an explicit stack (--dilations or --layers); a preset or "
                         "checkpoint has its own")


def _model_stack(label: str, config: WaveNetConfig, rate: int, model: WaveNet) -> _Stack:
    block_params = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    cumulative = [sum(block_params[: i + 1]) for i in range(len(block_params))]
    return _Stack(
        label=label,
        kernel=config.kernel_size,
        group=config.dilations[: config.layers_per_stack],
        n_stacks=config.n_stacks,
        dims=1,
        sample_rate=rate,
        parameters=model.n_parameters,
        parameters_note=f"the whole model; {cumulative[-1]:,} in its {len(block_params)} residual blocks",
        cumulative_parameters=cumulative,
        model=model,
    )


def _rf_stack(args: argparse.Namespace) -> _Stack:
    if args.preset is not None:
        _explicit_only(args)
        import torch

        config = model_preset(args.preset)
        torch.manual_seed(0)  # --measure on a preset uses these random weights; fixed, so runs agree
        model = WaveNet(config).eval()
        return _model_stack(f"preset {args.preset}", config, args.sample_rate or DEFAULT_SAMPLE_RATE, model)
    if args.checkpoint is not None:
        _explicit_only(args)
        ckpt = load_checkpoint(args.checkpoint)
        config = read_config(ckpt, args.checkpoint)
        rate = args.sample_rate or sample_rate(ckpt) or DEFAULT_SAMPLE_RATE
        model = WaveNet.from_checkpoint(args.checkpoint)
        return _model_stack(f"checkpoint {args.checkpoint}", config, rate, model)
    if args.dilations is None and args.layers is None:
        raise ValueError("say which stack: --preset NAME, --checkpoint PATH, --dilations 1,2,4 or --layers L "
                         f"(see '{PROG} rf --help')")
    kernel = args.kernel or 3
    n_stacks = args.stacks or 1
    channels = args.channels or 64
    dims = args.dims or 1
    group = args.dilations if args.dilations is not None else dil.exponential_dilations(args.layers)
    n = len(group) * n_stacks
    per_layer = dil.conv_parameters(channels, channels, kernel, dims)
    return _Stack(
        label=f"explicit: {n} layers, {dims}D",
        kernel=kernel,
        group=list(group),
        n_stacks=n_stacks,
        dims=dims,
        sample_rate=args.sample_rate or DEFAULT_SAMPLE_RATE,
        parameters=dil.stack_parameters(channels, n, kernel, dims),
        parameters_note=f"{n} convolutions of {channels} -> {channels} channels with bias, {per_layer:,} each; "
        "dilation does not change it",
        cumulative_parameters=[per_layer * (i + 1) for i in range(n)],
    )


def _coverage_fraction(stack: _Stack) -> float:
    """Gridding coverage of the whole stack, computed on one group when that is exact.

    When one group reaches every offset of its receptive field, its reachable offsets are an interval, and a sum of
    intervals is an interval: the repeated stack is fully covered too. Only a gridded group needs the (slow, pure
    Python) whole-stack count.
    """
    group = dil.coverage(stack.kernel, stack.group, stack.dims)
    if stack.n_stacks == 1 or group.fraction == 1:
        return float(group.fraction)
    return float(dil.coverage(stack.kernel, stack.dilations, stack.dims).fraction)


def _measure(stack: _Stack) -> tuple[tuple[int, ...], bool | None, float | None]:
    """From one output's gradient: (measured receptive field along each axis, causal? (None for a non-causal 2D
    stack), fraction of zero gradients inside the field (None for a model, whose gradients are not path counts))."""
    import torch

    from ..nn.analysis import input_gradient, measured_extent, zero_fraction
    from ..nn.layers import CausalConv1d, DilatedConv

    rf = dil.receptive_field(stack.kernel, stack.dilations)
    if stack.model is None:
        if stack.dims == 2 and rf > MAX_MEASURE_RF_2D:
            raise ValueError(f"--measure: a 2D receptive field of {rf} x {rf} is too large to back-propagate through "
                             f"(at most {MAX_MEASURE_RF_2D} per axis)")
        # one channel, all-ones weights: the gradient at each input is its number of paths, so zeros mark gridding
        if stack.dims == 1:
            layers = [CausalConv1d(1, 1, stack.kernel, d, bias=False) for d in stack.dilations]
            size, position = 2 * rf + 1, (rf - 1 + rf // 2,)
        else:
            layers = [DilatedConv(1, 1, stack.kernel, d, dims=2, bias=False) for d in stack.dilations]
            size, position = rf + 2, None
        net = torch.nn.Sequential(*layers).double()
        for p in net.parameters():
            torch.nn.init.ones_(p)
        shape = (1, size) if stack.dims == 1 else (1, size, size)
        grad = input_gradient(net, shape, position=position, inputs=torch.ones(shape))
        causal = not bool(grad[position[0] + 1 :].any()) if stack.dims == 1 else None
        return measured_extent(grad), causal, zero_fraction(grad)
    # the real network: back-propagate from output t to the embedded inputs (the audio path)
    model, config = stack.model, stack.model.config
    t = rf + 16
    T = t + 1 + 16
    if config.hop_length:
        T = math.ceil(T / config.hop_length) * config.hop_length
    gen = torch.Generator().manual_seed(0)
    if model.head.quantized:
        inputs = torch.randint(0, config.n_classes, (1, T), generator=gen)
    else:
        inputs = torch.rand(1, T, generator=gen) * 2 - 1
    mel = None if config.cond_channels is None else torch.randn(1, config.cond_channels, T // config.hop_length,
                                                                 generator=gen)
    speaker = None if config.n_speakers is None else torch.zeros(1, dtype=torch.int64)
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    hook = model.embed.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(inputs, mel, speaker)
            logits[0, :, t].sum().backward()
    finally:
        hook.remove()
    g = captured[0].grad[0]
    per_time = g.abs().sum(-1) if model.head.quantized else g.abs().sum(0)  # embedding output is (T, R), conv (R, T)
    nz = torch.nonzero(per_time)[:, 0]
    if nz.numel() == 0:
        raise ValueError("--measure: the gradient is zero everywhere (a dead network?)")
    return (t - int(nz.min()) + 1,), int(nz.max()) <= t, None


def _run_rf(args: argparse.Namespace) -> int:
    stack = _rf_stack(args)
    measured = _measure(stack) if args.measure else None  # first: it can refuse, and coverage may take a while
    dilations = stack.dilations
    rfs = dil.receptive_fields(stack.kernel, dilations)
    rf = rfs[-1]
    hdc = dil.hdc_check(stack.group, stack.kernel)
    m2 = hdc.max_distances[1] if len(hdc.max_distances) > 1 else hdc.max_distances[0]
    if hdc.valid:
        hdc_text = f"valid (M_2 = {m2} <= K = {stack.kernel}, rates share no factor > 1)"
    else:
        why = []
        if m2 > stack.kernel:
            why.append(f"M_2 = {m2} > K = {stack.kernel}")
        if hdc.common_factor > 1:
            why.append(f"the rates share the factor {hdc.common_factor}")
        hdc_text = "NOT valid: " + " and ".join(why)
    scope = "one stack: " if stack.n_stacks > 1 else ""
    cover = _coverage_fraction(stack)
    cover_text = (f"{cover:.1%} of the offsets inside the receptive field are reached"
                  + (" (no gridding)" if cover == 1 else " (gridding: the rest are never seen)"))
    if stack.dims == 1:
        rf_text = f"{rf} samples = {_ms(rf, stack.sample_rate)} at {stack.sample_rate} Hz"
    else:
        rf_text = f"{rf} x {rf} (per axis {rf})"
    rows = [
        ("stack", stack.label),
        ("kernel", f"{stack.kernel}" if stack.dims == 1 else f"{stack.kernel}x{stack.kernel}"),
        ("dilations", _format_rates(stack.group, stack.n_stacks)),
        ("receptive field", rf_text),
        ("parameters", f"{stack.parameters:,} ({stack.parameters_note})"),
        ("gridding coverage", cover_text),
        ("HDC (Wang et al.)", f"{hdc_text} [{scope}{_format_rates(stack.group, 1)}]"),
    ]
    if measured is not None:
        extent, causal, zeros = measured
        verdict = "matches" if set(extent) == {rf} else f"DIFFERS from the computed {rf}"
        text = " x ".join(map(str, extent)) + f" {'samples' if stack.dims == 1 else 'positions'}, {verdict}"
        if causal is not None:
            text += "; causal" if causal else "; NOT causal: later inputs reach it"
        if zeros is not None:
            text += f"; {zeros:.1%} zero gradients inside it"
        rows.append(("measured RF", text))
    _print_fields(rows)
    if args.compare:
        std = dil.receptive_fields(stack.kernel, [1] * len(dilations))
        print()
        header = ("layers", "dilation", "RF standard", "RF dilated", "parameters")
        table = [(str(i + 1), str(d), str(std[i]), str(rfs[i]), f"{stack.cumulative_parameters[i]:,}")
                 for i, d in enumerate(dilations)]
        widths = [max(len(h), *(len(r[c]) for r in table)) for c, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for row in table:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    return 0


# --------------------------------------------------------------------------------------------------- bench


def _run_bench(args: argparse.Namespace) -> int:
    try:
        from ..bench import format_table, run_bench
    except ImportError as err:
        raise ValueError(f"the benchmark (wavenet_dilated.bench) is not available in this installation: {err}") from err
    kwargs: dict[str, Any] = {"quick": args.quick}  # unset flags keep run_bench's own defaults
    if args.preset:
        kwargs["presets"] = args.preset
    if args.device is not None:
        kwargs["device"] = _device(args.device)
    result = run_bench(**kwargs)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_table(result))
    return 0


# --------------------------------------------------------------------------------------------------- info


def _run_info(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    config = read_config(ckpt, args.checkpoint)
    stored_rate = sample_rate(ckpt)
    rate = stored_rate or DEFAULT_SAMPLE_RATE
    has_ema = ckpt.get("ema") is not None
    facts = describe(ckpt, args.checkpoint, DEFAULT_SAMPLE_RATE)
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0

    def bits(value: Any) -> str:
        return "not recorded" if value is None else f"{float(value):.4f} bits/sample"

    if config.cond_channels is None:
        conditioning = "none (unconditioned)"
    else:
        conditioning = f"mel, {config.cond_channels} bins, hop {config.hop_length}"
        conditioning += "" if ckpt.get("mel_stats") is not None else " (no mel_stats stored)"
    if config.n_speakers is not None:
        conditioning += f"; {config.n_speakers} speakers"
    rows = [
        ("checkpoint", str(args.checkpoint)),
        ("step", "not recorded" if ckpt.get("step") is None else str(ckpt["step"])),
        ("sample rate", f"{stored_rate} Hz" if stored_rate else
         f"not recorded (no audio_config; sample assumes {DEFAULT_SAMPLE_RATE} Hz)"),
        ("receptive field", f"{config.receptive_field} samples = {_ms(config.receptive_field, rate)}"),
        ("parameters", f"{facts['parameters']:,}"),
        ("validation NLL", bits(ckpt.get("val_nll_bits"))),
        ("best validation NLL", bits(ckpt.get("best_val_nll_bits"))),
        ("weights", "model + EMA (sample uses the EMA weights; --no-ema for the raw ones)" if has_ema
         else "model only (no EMA weights)"),
        ("conditioning", conditioning),
        ("layers", f"{config.n_layers}, kernel {config.kernel_size}, dilations "
         f"{_format_rates(config.dilations[: config.layers_per_stack], config.n_stacks)}"),
        ("output", f"{config.output} ({config.n_classes} classes)" if config.output == "categorical" else config.output),
    ]
    _print_fields(rows)
    print("config:")
    width = max(len(str(k)) for k in ckpt["config"])
    for key, value in ckpt["config"].items():
        print(f"  {key!s:<{width}}  {value}")
    for title, section in (("audio config", ckpt.get("audio_config")), ("train config", ckpt.get("train_config"))):
        if isinstance(section, dict) and section:
            print(f"{title}:")
            width = max(len(str(k)) for k in section)
            for key, value in section.items():
                print(f"  {key!s:<{width}}  {value}")
    return 0
