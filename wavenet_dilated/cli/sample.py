"""``wavenet-dilated sample``: generate audio from a checkpoint, unconditionally or by vocoding a mel.

Everything a user can get wrong (flags, checkpoint, mel, output path) is checked before the model is built and the
(long) generation starts. The fast generator (:func:`~wavenet_dilated.generation.fast.fast_generate`) runs; when its
compiled path cannot run here it falls back to the reference generator itself, with a warning shown as one line.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import DEFAULT_SAMPLE_RATE, PROG, device, int_at_least, note, positive_float, wrap

if TYPE_CHECKING:
    import torch

    from ..wavenet import WaveNetConfig

__all__ = ["add_parser", "run"]

#: every output file is written as 16-bit PCM
OUTPUT_SUBTYPE = "PCM_16"


def add_parser(commands: Any) -> None:
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
                      "length = frames x hop")
    p.add_argument("--normalize-mel", action="store_true",
                   help="--mel holds a raw log-mel (e.g. from the preprocessing cache): normalise it with the "
                   "checkpoint's MelStats first")
    p.add_argument("--seconds", metavar="S", type=positive_float,
                   help="seconds of audio; required for an unconditioned model (exactly round(S x rate) samples); "
                   "with a mel, vocode only its first S seconds")
    p.add_argument("--batch", metavar="N", type=int_at_least(1), default=1,
                   help="generate N different samples at once (for a vocoder: N renditions of the same mel); "
                   "writes OUT_0.wav ... OUT_{N-1}.wav, or OUT.wav when N = 1 (default: 1)")
    p.add_argument("--temperature", metavar="T", type=positive_float, default=1.0,
                   help="sampling temperature > 0: below 1 is more conservative, above 1 noisier (default: 1.0)")
    p.add_argument("--seed", metavar="SEED", type=int_at_least(0),
                   help="random seed; the same seed, checkpoint and flags give the same files (default: a fresh seed, "
                   "printed so the run can be repeated)")
    p.add_argument("--speaker", metavar="ID", type=int_at_least(0),
                   help="speaker id in [0, n_speakers - 1]; required by a speaker-conditioned model, refused otherwise")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw trained weights even when the checkpoint holds EMA weights (default: EMA when "
                   "present)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(run=run)


# --------------------------------------------------------------------------------------------------- checks


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


def _check_speaker(args: argparse.Namespace, config: WaveNetConfig) -> None:
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


# --------------------------------------------------------------------------------------------------- mel input


def _mel_from_wav(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig) -> torch.Tensor:
    """``--mel-from``: recording → normalised log-mel ``(n_mels, frames)`` exactly as training computed it."""
    import torch

    from ..audio import prepare_audio, read_audio
    from ..checkpoint import read_audio_config, read_mel_stats
    from ..mel import log_mel

    audio_config = read_audio_config(ckpt, args.checkpoint)
    if audio_config is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint stores no audio_config, so --mel-from cannot compute the "
                         "mel the model expects; pass a normalised --mel FILE.npy instead")
    if audio_config.n_mels != config.cond_channels or audio_config.hop_length != config.hop_length:
        raise ValueError(f"{args.checkpoint}: audio_config (n_mels={audio_config.n_mels}, hop_length="
                         f"{audio_config.hop_length}) disagrees with the model (cond_channels={config.cond_channels}, "
                         f"hop_length={config.hop_length})")
    stats = read_mel_stats(ckpt, args.checkpoint, config.cond_channels, "--mel-from")
    audio, rate = read_audio(args.mel_from)  # FileNotFoundError / ValueError
    try:  # the training cache's preparation (data.cache uses the same function), without trimming the ends
        prepared = prepare_audio(audio, rate, audio_config, trim=False, check_range=False)
    except ValueError as err:
        raise ValueError(f"{args.mel_from}: cannot vocode: {err}") from err
    return stats.normalize(log_mel(torch.from_numpy(prepared.audio), audio_config))


def _mel_from_npy(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig) -> torch.Tensor:
    """``--mel``: a saved ``(n_mels, frames)`` array, checked (and normalised with ``--normalize-mel``)."""
    import numpy as np
    import torch

    from ..checkpoint import read_mel_stats

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


def _what_to_generate(args: argparse.Namespace, ckpt: dict[str, Any], config: WaveNetConfig,
                      rate: int) -> tuple[torch.Tensor | None, int | None]:
    """``(mel (batch, n_mels, frames) or None, n_samples or None)`` from the flags, checked against the model."""
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
        return None, n_samples
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
    return mel.unsqueeze(0).expand(args.batch, -1, -1).contiguous(), n_samples


# --------------------------------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audio import save_audio
    from ..checkpoint import load_checkpoint, read_config, sample_rate
    from ..generation.fast import fast_generate
    from ..generation.reference import to_waveform
    from ..wavenet import WaveNet

    if args.normalize_mel and args.mel is None:
        raise ValueError("--normalize-mel applies to --mel FILE.npy only")
    ckpt = load_checkpoint(args.checkpoint)
    config = read_config(ckpt, args.checkpoint)
    where = device(args.device)
    rate = sample_rate(ckpt)
    if rate is None:
        rate = DEFAULT_SAMPLE_RATE
        note(f"{args.checkpoint} stores no audio_config: writing at {DEFAULT_SAMPLE_RATE} Hz")
    outputs = _output_paths(args.output, args.batch)
    for path in outputs:
        _check_writable(path)
    _check_speaker(args, config)
    mel, n_samples = _what_to_generate(args, ckpt, config, rate)

    model = WaveNet.from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    model.remove_weight_norm()  # folds weight norm: same outputs, fewer ops per step
    model.to(where)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    start = time.perf_counter()
    samples = fast_generate(model, n_samples=n_samples, mel=mel, speaker=args.speaker, batch_size=args.batch,
                            temperature=args.temperature, seed=seed, progress=not args.no_progress)
    if where == "cuda":
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
    print(f"generated {B * T} samples in {elapsed:.2f} s with the fast generator on {where} (seed {seed}): "
          f"{speed:,.0f} samples/s, real-time factor {rtf:.3g} (compute time / audio time; < 1 is faster than real "
          "time)")
    return 0
