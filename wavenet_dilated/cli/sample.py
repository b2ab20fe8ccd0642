"""``wavenet-dilated sample``: generate audio from a checkpoint, unconditionally or by vocoding a mel.

Everything a user can get wrong (flags, checkpoint, mel, output path, sizes) is checked before the model is built and
the (long) generation starts. The fast generator (:func:`~wavenet_dilated.generation.fast.fast_generate`) runs; when its
compiled path cannot run here it falls back to the reference generator itself, with a warning shown as one line.

Sizes: before anything is allocated, the memory a request needs is estimated from its sizes,
``batch × (samples × (32 + 8·n_mels) + 4·(receptive field + layers)·(residual + gate channels) + 8·UNIFORM_BLOCK)``
bytes: per generated sample the int64 classes, their transposed copy, the float waveform and the file's buffer (plus,
for a vocoder, its upsampled mel); per batch row the generator's queues and its block of random numbers (up to two
float32 per step). A ``--mel`` file larger than that share of memory is refused before it is read. A request is refused
when that exceeds :data:`~wavenet_dilated.cli.common.MEMORY_FRACTION` of the memory the system reports available
(``MemAvailable``; the physical memory where that is unknown), and on a GPU also that share of the GPU's free memory.
A ``--mel`` file is refused when a value is not finite or beyond ±:data:`MAX_ABS_MEL`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._format import format_bytes
from .common import (
    DEFAULT_SAMPLE_RATE,
    MAX_SEED,
    MEMORY_FRACTION,
    PROG,
    add_generation_arguments,
    available_memory,
    device,
    int_at_least,
    note,
    positive_float,
    wrap,
)

if TYPE_CHECKING:
    import torch

    from ..vocoder import Vocoder
    from ..wavenet import WaveNetConfig

__all__ = ["MAX_ABS_MEL", "MAX_SEED", "add_parser", "run"]

#: every output file is written as 16-bit PCM
OUTPUT_SUBTYPE = "PCM_16"
#: largest magnitude a ``--mel`` value may have: a natural-log mel of audio in [-1, 1] lies between log(mel_floor)
#: (about -11.5) and about +10, and a normalised one (zero mean, unit variance per bin) within tens of standard
#: deviations of 0; a value of 1000 is neither, whatever the file was meant to be
MAX_ABS_MEL = 1000.0
#: a ``--mel`` whose mean lies further than this from 0, or whose standard deviation exceeds
#: :data:`NORMALIZED_STD_LIMIT`, is not a normalised mel: normalised features have mean 0 and standard deviation 1 per
#: bin over the training set, and one utterance's silences and loud vowels move its mean by well under this margin,
#: while a raw natural-log mel sits near its training mean (about -5 for speech at the default settings). A small
#: spread is not refused: a steady sound, or the all-zero mean frame, is a valid normalised input.
NORMALIZED_MEAN_LIMIT = 2.5
NORMALIZED_STD_LIMIT = 4.0
#: bytes per generated sample and batch row (see the module docstring), and per mel bin of a vocoder's upsampled mel
_BYTES_PER_SAMPLE, _BYTES_PER_MEL_SAMPLE = 32, 8


def add_parser(commands: Any) -> None:
    from ..audio import MEL_FORMATS

    p = commands.add_parser(
        "sample",
        help="generate audio from a checkpoint (unconditional, or vocode a mel)",
        description=wrap("Generate audio with the cached fast generator. An unconditioned model generates --seconds of "
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
                      f"length = frames x hop; values must be finite and within +-{MAX_ABS_MEL:g}")
    p.add_argument("--normalize-mel", action="store_true",
                   help="--mel holds a raw log-mel (e.g. from the preprocessing cache): normalise it with the "
                   "checkpoint's MelStats first")
    p.add_argument("--force-mel", action="store_true",
                   help="vocode --mel as it is even when it does not look normalised (mean far from 0 or spread far "
                   "from 1); without it such a mel is refused")
    p.add_argument("--mel-format", metavar="NAME", choices=tuple(MEL_FORMATS),
                   help="--mel is in this convention (e.g. a text-to-speech model's output): converted exactly to the "
                   "checkpoint's features when only the log base, normalisation or floor differ, refused when the "
                   "filterbank differs; (frames, n_mels) is read too (see 'vocode --help')")
    p.add_argument("--stats", metavar="PATH|none",
                   help="statistics --mel is normalised with (.npy rows mean and scale, .npz, .json, .pt), or 'none' "
                   "for a raw log-mel; with --mel-format, default: that convention's custom")
    p.add_argument("--seconds", metavar="S", type=positive_float,
                   help="seconds of audio; required for an unconditioned model (exactly round(S x rate) samples); "
                   "with a mel, vocode only its first S seconds; a length (times --batch) that would not fit in "
                   f"{MEMORY_FRACTION * 100:.0f}%% of the available memory is refused before anything is allocated")
    p.add_argument("--batch", metavar="N", type=int_at_least(1), default=1,
                   help="generate N different samples at once (for a vocoder: N renditions of the same mel); "
                   "writes OUT_0.wav ... OUT_{N-1}.wav, or OUT.wav when N = 1 (default: 1)")
    add_generation_arguments(p, "the same seed, checkpoint and flags give the same files (default: a fresh seed, "
                             "printed so the run can be repeated)")
    p.set_defaults(run=run)


# --------------------------------------------------------------------------------------------------- checks


def _output_paths(output: Path, n: int) -> list[Path]:
    """``OUT.wav`` for one file; ``OUT_0.wav … OUT_{n-1}.wav`` for a batch."""
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(n)]


def _check_not_an_input(path: Path, inputs: list[tuple[str, Path | None]]) -> None:
    """``path`` must not be one of the files the command reads (the same file, by any name: a link, ``./``…)."""
    if not path.exists():
        return
    for flag, source in inputs:
        if source is not None and source.exists() and os.path.samefile(path, source):
            raise ValueError(f"output {str(path)!r} is the input {flag} {str(source)!r} (the same file): writing it "
                             "would destroy the input; choose another output name")


def _check_outputs(outputs: list[Path], args: argparse.Namespace) -> None:
    """Every output can be written and none is an input; the directory test runs once per directory."""
    inputs = [("CHECKPOINT", args.checkpoint), ("--mel-from", args.mel_from), ("--mel", args.mel)]
    tried: set[Path] = set()
    for path in outputs:
        _check_not_an_input(path, inputs)
        _check_writable(path, tried)


def _check_writable(path: Path, tried: set[Path]) -> None:
    """Fail before generating if ``path`` cannot be written: unknown format, a directory, or an unwritable place
    (``tried``: the directories already found writable)."""
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
    if ancestor not in tried:
        try:  # the only reliable test (permissions, read-only file systems, root): try it
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as err:
            raise ValueError(f"cannot write {str(path)!r}: directory {str(ancestor)!r} is not writable "
                             f"({err.strerror or err})") from err
        tried.add(ancestor)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {str(path)!r}: the existing file is read-only")


def _check_speaker(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig) -> int | None:
    """``--speaker NAME|ID`` → the id, checked against the model and its stored speaker names."""
    from ..checkpoint import read_speakers
    from ..vocoder import resolve_speaker

    names = read_speakers(ckpt, args.checkpoint, config.n_speakers)
    try:
        return resolve_speaker(args.speaker, config.n_speakers, names)
    except ValueError as err:
        raise ValueError(f"{args.checkpoint}: --speaker: {err}") from err


def _memory_needed(config: WaveNetConfig, batch: int, n_samples: float) -> float:
    """Bytes a generation of ``batch`` rows of ``n_samples`` needs (the module docstring's estimate); a float, so
    that an absurd request (``--seconds 1e300``) is still a number to compare."""
    from ..generation.reference import UNIFORM_BLOCK

    per_sample = _BYTES_PER_SAMPLE + _BYTES_PER_MEL_SAMPLE * (config.cond_channels or 0)
    state = 4 * (config.receptive_field + config.n_layers) * (config.residual_channels + config.gate_channels)
    return float(batch) * (n_samples * per_sample + state + 8 * UNIFORM_BLOCK)


def _check_memory(what: str, config: WaveNetConfig, batch: int, n_samples: float, where: str) -> None:
    """Refuse, before anything is allocated, a request that needs more than :data:`MEMORY_FRACTION` of the memory
    available here (and of the GPU's free memory on ``cuda``)."""
    need = _memory_needed(config, batch, n_samples)
    limits = []
    host = available_memory()
    if host is not None:
        limits.append((host, "available"))
    if where == "cuda":
        import torch

        limits.append((torch.cuda.mem_get_info()[0], "free on the GPU"))
    need_text = f"about {format_bytes(need)}" if math.isfinite(need) else "more than 10^308 bytes"
    for have, kind in limits:
        if need > MEMORY_FRACTION * have:
            raise ValueError(f"{what}: that needs {need_text} of memory, more than the "
                             f"{format_bytes(MEMORY_FRACTION * have)} this command may use ({MEMORY_FRACTION:.0%} of "
                             f"the {format_bytes(have)} {kind}); ask for fewer seconds or a smaller --batch")


# --------------------------------------------------------------------------------------------------- mel input


def _vocoder(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig, need_features: bool) -> Vocoder:
    """The checkpoint as a :class:`~wavenet_dilated.vocoder.Vocoder` (the model, its audio config, mel statistics and
    speaker names); ``need_features``: ``--mel-from`` will compute a mel, so both must be stored."""
    from ..checkpoint import read_audio_config, read_mel_stats
    from ..vocoder import Vocoder, read_speakers
    from ..wavenet import WaveNet

    audio_config = read_audio_config(ckpt, args.checkpoint)
    if need_features and audio_config is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint stores no audio_config, so --mel-from cannot compute the "
                         "mel the model expects; pass a normalised --mel FILE.npy instead")
    if audio_config is not None and (audio_config.n_mels, audio_config.hop_length) != (config.cond_channels,
                                                                                        config.hop_length):
        raise ValueError(f"{args.checkpoint}: audio_config (n_mels={audio_config.n_mels}, hop_length="
                         f"{audio_config.hop_length}) disagrees with the model (cond_channels={config.cond_channels}, "
                         f"hop_length={config.hop_length})")
    stats = None
    if need_features or ckpt.get("mel_stats") is not None:
        stats = read_mel_stats(ckpt, args.checkpoint, config.cond_channels, "--mel-from")
    speakers = read_speakers(ckpt, args.checkpoint, config.n_speakers)
    model = WaveNet.from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    return Vocoder(model, audio_config, stats, speakers, precision=args.precision)


#: what a file that is not a .npy array starts with, for the message
_MAGIC = ((b"RIFF", "a WAV file: vocode a recording with --mel-from"),
          (b"fLaC", "a FLAC file: vocode a recording with --mel-from"), (b"OggS", "an Ogg file"))


def _check_npy_header(path: Path) -> None:
    """A ``.npy`` file starts with ``\\x93NUMPY``; anything else gets a line that says what it looks like (NumPy itself
    would try to unpickle it and talk of "pickled data")."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x93NUMPY"):
        return
    if head.startswith(b"PK"):  # np.load reads an .npz archive: the caller says it holds several arrays
        return
    looks = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if looks is None:
        printable = all(32 <= b < 127 or b >= 128 or b in b"\t\r\n" for b in head)
        looks = "an empty file" if not head else "text" if printable else "some other binary file"
    raise ValueError(f"{path}: not a .npy array (no .npy header; it looks like {looks}); expected a float array of "
                     "shape (n_mels, frames) saved with numpy.save")


def _mel_from_npy(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig) -> torch.Tensor:
    """``--mel``: a saved ``(n_mels, frames)`` array, checked (and normalised with ``--normalize-mel``)."""
    import numpy as np
    import torch

    from ..checkpoint import read_mel_stats

    path = args.mel
    if path.is_dir():
        raise IsADirectoryError(f"--mel {str(path)!r} is a directory: expected a .npy file of shape (n_mels, frames)")
    if not path.is_file():
        raise FileNotFoundError(f"mel file not found: {path}")
    _check_npy_header(path)
    size, have = path.stat().st_size, available_memory()
    if have is not None and size > MEMORY_FRACTION * have:
        raise ValueError(f"{path}: reading this {format_bytes(size)} mel needs more than the "
                         f"{format_bytes(MEMORY_FRACTION * have)} this command may use ({MEMORY_FRACTION:.0%} of the "
                         f"{format_bytes(have)} available)")
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
    largest = float(np.abs(mel).max())
    if largest > MAX_ABS_MEL:
        raise ValueError(f"{path}: the mel holds values up to {largest:.3g} in magnitude; a log-mel, raw or "
                         f"normalised, lies well within +-{MAX_ABS_MEL:g} (is it a power or linear spectrogram, or "
                         "not a mel at all?)")
    mel = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))
    if args.normalize_mel:
        return read_mel_stats(ckpt, args.checkpoint, config.cond_channels, "--normalize-mel").normalize(mel)
    if not args.force_mel:
        _check_normalized(path, mel, ckpt)
    return mel


def _check_normalized(path: Path, mel: torch.Tensor, ckpt: dict[str, Any]) -> None:
    """Refuse a ``--mel`` that is clearly not normalised: its mean or spread is far from the 0 and 1 the model's
    features have (:data:`NORMALIZED_MEAN_LIMIT`, :data:`NORMALIZED_STD_LIMIT`)."""
    mean, std = float(mel.mean()), float(mel.std()) if mel.numel() > 1 else 0.0
    if abs(mean) <= NORMALIZED_MEAN_LIMIT and std <= NORMALIZED_STD_LIMIT:
        return
    stats = ckpt.get("mel_stats")
    raw = ""
    if stats is not None:
        raw = f"; a raw log-mel of this model's training data has mean {sum(stats['mean']) / len(stats['mean']):.3g}"
    raise ValueError(f"{path}: this mel does not look normalised (mean {mean:.3g}, standard deviation {std:.3g}; the "
                     f"model's features have mean 0 and standard deviation 1{raw}): pass --normalize-mel to normalise "
                     "a raw log-mel with the checkpoint's statistics, or --force-mel to vocode it as it is")


def _samples_text(n: float) -> str:
    return f"{n:,.0f}" if n < 1e15 else f"{n:.3g}" if math.isfinite(n) else "more than 10^308"


def _what_to_generate(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig, rate: int, where: str,
                      vocoder: Vocoder | None) -> tuple[torch.Tensor | None, int | None]:
    """``(mel (batch, n_mels, frames) or None, n_samples or None)`` from the flags, checked against the model and
    against the memory here (:func:`_check_memory`) before the batch is expanded."""
    batch = f" x --batch {args.batch}" if args.batch > 1 else ""
    if config.cond_channels is None:
        if args.mel_from is not None or args.mel is not None:
            flag = "--mel-from" if args.mel_from is not None else "--mel"
            raise ValueError(f"{args.checkpoint} is an unconditioned model: it takes no mel ({flag}); "
                             "pass --seconds instead")
        if args.seconds is None:
            raise ValueError(f"{args.checkpoint} is an unconditioned model: pass --seconds S for the length")
        wanted = args.seconds * rate  # a float: may be huge, even infinite, so it is checked before it is an int
        _check_memory(f"--seconds {args.seconds:g}{batch} at {rate} Hz is {_samples_text(wanted * args.batch)} "
                      "samples", config, args.batch, wanted, where)
        n_samples = round(wanted)
        if n_samples < 1:
            raise ValueError(f"--seconds {args.seconds} is less than one sample at {rate} Hz")
        return None, n_samples
    if args.mel_from is None and args.mel is None:
        raise ValueError(f"{args.checkpoint} is a mel-conditioned vocoder: pass --mel-from INPUT.wav or "
                         "--mel FILE.npy")
    if args.mel_from is not None:
        mel = vocoder.mel(args.mel_from)
    elif args.mel_format is not None or args.stats is not None:  # another convention: read and convert exactly
        from ..mel_formats import MelReader

        mel = MelReader.create(vocoder.audio_config, vocoder.stats, args.mel_format, args.stats).read(args.mel)
    else:
        mel = _mel_from_npy(args, ckpt, config)
    total = mel.shape[1] * config.hop_length
    n_samples = None
    if args.seconds is not None:
        wanted = args.seconds * rate  # may be infinite: compared as a float first
        if wanted > total + 1 or not 1 <= round(wanted) <= total:
            raise ValueError(f"--seconds {args.seconds:g} asks for {_samples_text(wanted)} samples but the mel "
                             f"covers {total} samples ({total / rate:.3f} s); use at most that")
        n_samples = round(wanted)
    source = "--mel-from" if args.mel_from is not None else "--mel"
    length = total if n_samples is None else n_samples
    _check_memory(f"{source}{batch} is {_samples_text(length * args.batch)} samples", config, args.batch, length,
                  where)
    return mel.unsqueeze(0).expand(args.batch, -1, -1).contiguous(), n_samples


# --------------------------------------------------------------------------------------------------- the command


def _generate(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig, speaker: int | None,
              where: str, rate: int) -> tuple[torch.Tensor, int, float]:
    """Check the request, then generate: a vocoder through :class:`~wavenet_dilated.vocoder.Vocoder`, an
    unconditioned model through :func:`~wavenet_dilated.generation.fast.fast_generate`. Returns
    ``(waveforms (B, T), seed, seconds of compute)``."""
    import torch

    from ..generation.fast import fast_generate
    from ..generation.reference import to_waveform
    from ..wavenet import WaveNet

    vocoder = _vocoder(args, ckpt, config, args.mel_from is not None) if config.cond_channels is not None else None
    mel, n_samples = _what_to_generate(args, ckpt, config, rate, where, vocoder)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    start = time.perf_counter()
    if vocoder is not None:
        vocoder.model.to(where)
        waves = vocoder(mel, seed=seed, temperature=args.temperature, speaker=speaker, n_samples=n_samples,
                        progress=not args.no_progress)
    else:
        model = WaveNet.from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
        model.remove_weight_norm()  # folds weight norm: same outputs, fewer ops per step
        model.to(where)
        samples = fast_generate(model, n_samples=n_samples, speaker=speaker, batch_size=args.batch,
                                temperature=args.temperature, seed=seed, progress=not args.no_progress,
                                precision=args.precision)
        waves = to_waveform(samples, model).float().cpu()
    if where == "cuda":
        torch.cuda.synchronize()
    return waves, seed, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from ..audio import save_audio
    from ..checkpoint import load_checkpoint, read_audio_config, read_config

    if args.normalize_mel and args.mel is None:
        raise ValueError("--normalize-mel applies to --mel FILE.npy only")
    if args.force_mel and args.mel is None:
        raise ValueError("--force-mel applies to --mel FILE.npy only")
    if (args.mel_format is not None or args.stats is not None) and (args.mel is None or args.normalize_mel):
        raise ValueError("--mel-format and --stats apply to --mel FILE only" if args.mel is None else
                         "--normalize-mel is --stats none for the checkpoint's own convention: pass one of them")
    ckpt = load_checkpoint(args.checkpoint)
    config = read_config(ckpt, args.checkpoint)
    where = device(args.device)
    audio_config = read_audio_config(ckpt, args.checkpoint)  # validated: a stored rate of -5 is refused here
    if audio_config is None:
        rate = DEFAULT_SAMPLE_RATE
        note(f"{args.checkpoint} stores no audio_config: writing at {DEFAULT_SAMPLE_RATE} Hz")
    else:
        rate = audio_config.sample_rate
    # the batch's own share first (its generator state), before one output name per row is made
    _check_memory(f"--batch {args.batch} keeps a generator state per row", config, args.batch, 0, where)
    outputs = _output_paths(args.output, args.batch)
    _check_outputs(outputs, args)
    speaker = _check_speaker(args, ckpt, config)
    waves, seed, elapsed = _generate(args, ckpt, config, speaker, where, rate)
    waves = waves.numpy()
    for path, wave in zip(outputs, waves):
        save_audio(path, wave, rate, subtype=OUTPUT_SUBTYPE)

    B, T = waves.shape
    seconds = T / rate
    names = str(outputs[0]) if B == 1 else f"{B} files {outputs[0]} ... {outputs[-1]}"
    print(f"wrote {names}: {seconds:.3f} s ({T} samples at {rate} Hz){' each' if B > 1 else ''}")
    speed = B * T / elapsed if elapsed > 0 else math.inf
    rtf = elapsed / (B * seconds) if seconds > 0 else math.inf
    print(f"generated {B * T} samples in {elapsed:.2f} s with the fast generator on {where} (seed {seed}): "
          f"{speed:,.0f} samples/s, real-time factor {rtf:.3g} (compute time / audio time; < 1 is faster than real "
          "time)")
    return 0
