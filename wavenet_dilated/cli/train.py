"""``wavenet-dilated train``: train a WaveNet vocoder on LJSpeech or the bundled demo corpus (rerun to resume).

    wavenet-dilated train --preset demo                             # the bundled corpus, a few minutes on 2 CPU cores
    wavenet-dilated train --download                                # fetch LJSpeech (2.6 GB) into data/, then train
    wavenet-dilated train --preset demo --set lr=3e-3 --set residual_channels=48

The run directory (``--out-dir``, default ``runs/<preset>``) holds the preprocessed cache, checkpoints, TensorBoard
events and samples; running the same command again resumes from its newest checkpoint. One run at a time: the run
holds an advisory lock on its run directory (``<out-dir>/.lock``, rank 0 only under torchrun), and a second run on the
same directory is refused with one line naming the holder's PID (exit 2) before it writes anything; the lock of a
killed run does not block (see :mod:`wavenet_dilated.lock`). The repository's
``python -m recipes.train_ljspeech`` is the same program (:func:`main`, with its own name in the messages), and
``torchrun … -m recipes.train_ljspeech`` runs it with DDP.

Started as a program (``wavenet-dilated train``, ``python -m wavenet_dilated train`` or the recipe), the process first
applies :data:`wavenet_dilated.runtime.RUNTIME_ENV` before torch is imported (see :func:`wavenet_dilated.cli.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ..audio import AudioConfig
from ..data.cache import check_output_dir, preprocess
from ..data.corpus import corpus_layout
from ..data.dataset import check_crop_length
from ..data.download import download_ljspeech
from ..data.ljspeech import LJSPEECH_DIRNAME, LJSPEECH_URL, METADATA_FILE
from ..lock import DirectoryLock
from ..presets import MODEL_PRESETS
from ..train import distributed as dist
from ..train.config import TrainConfig
from ..train.monitor import require_tensorboard
from ..train.trainer import DivergedError, Trainer
from ..wavenet import WaveNetConfig
from .common import EXIT_USAGE, PROG, UsageError, fail

__all__ = ["DEMO_CORPUS", "LJSPEECH_DIR", "PRESETS", "add_arguments", "add_parser", "apply_overrides", "build_parser",
           "main", "run"]

#: the demo corpus shipped inside the package (30 synthetic LJSpeech-format utterances)
DEMO_CORPUS = Path(__file__).resolve().parents[1] / "data" / "demo_corpus"
#: where ``--download`` puts LJSpeech and the ljspeech preset looks for it (relative to the working directory)
LJSPEECH_DIR = Path("data") / LJSPEECH_DIRNAME

#: preset → model, audio and training configs plus data options (everything else is a dataclass default)
PRESETS: dict[str, dict[str, Any]] = {
    "ljspeech": dict(
        model=MODEL_PRESETS["ljspeech"],
        audio=AudioConfig(),  # 22.05 kHz, 80 mel bins, hop 256
        train=TrainConfig(
            lr=1e-3, batch_size=8, max_time_steps=10240, max_steps=500_000, warmup_steps=4000, lr_decay="cosine",
            grad_clip=1.0, ema_decay=0.9999, log_every=100, val_every=10_000, val_max_utterances=64,
            val_max_time_steps=65536, checkpoint_every=10_000, keep_last=3, sample_every=50_000, sample_seconds=2.0,
            num_workers=4, quality_utterances=3,  # copy-synthesis STOI, PESQ, … with every validation
        ),
        data_dir=LJSPEECH_DIR,
        val_fraction=0.02,
        preprocess_workers=None,  # min(4, cores)
        threads=None,  # torch's default (torchrun sets OMP_NUM_THREADS=1 per process)
    ),
    "demo": dict(
        model=MODEL_PRESETS["demo"],
        audio=AudioConfig(),
        train=TrainConfig(
            # a high learning rate (with clipping) gets a small model past the bigram statistics in ~100 steps
            lr=3e-2, batch_size=4, max_time_steps=4096, max_steps=120, warmup_steps=10, lr_decay="cosine",
            min_lr_ratio=0.1, grad_clip=1.0, ema_decay=0.99, log_every=10, val_every=20, val_max_utterances=None,
            val_max_time_steps=None, checkpoint_every=40, keep_last=2, sample_every=None, sample_seconds=1.0,
            num_workers=0,
        ),
        data_dir=DEMO_CORPUS,
        val_fraction=0.1,  # by id hash: 2 of the 30 utterances (27 train, 1 test)
        preprocess_workers=1,  # 30 files: spawning workers costs more than it saves
        # one intra-op thread: on cores shared with other work a second thread slows a demo step down more than it
        # can gain on idle ones
        threads=1,
    ),
}

_SECTIONS = (("model", WaveNetConfig), ("train", TrainConfig), ("audio", AudioConfig))


# --------------------------------------------------------------------------------------------------- --set key=value


def _convert(text: str, annotation: Any, key: str) -> Any:
    """``text`` as a value of the type ``annotation`` (int, float, bool, str, ``X | None``, ``tuple[X, ...]``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", "off"):
            return None
        rest = [a for a in args if a is not type(None)]
        return _convert(text, rest[0] if len(rest) == 1 else str, key)
    if origin is tuple:
        parts = [p.strip() for p in text.strip().strip("()[]").split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(p, args[0], key) for p in parts)
        if len(parts) != len(args):
            raise UsageError(f"--set {key}: expected {len(args)} comma-separated values, found {text!r}")
        return tuple(_convert(p, a, key) for p, a in zip(parts, args))
    if annotation is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"--set {key}: expected true or false, found {text!r}")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise UsageError(f"--set {key}: expected {annotation.__name__}, found {text!r}") from None
    return text


def apply_overrides(configs: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` (or ``section.key=value``, section ∈ model/train/audio) to the preset's dataclasses.

    An unqualified key is set in every config that has it (``hop_length`` is in both the model and the audio
    config). Values are converted from the field's annotated type; ``None`` turns an optional field off.

    Raises:
        UsageError: malformed assignment or unknown key (the message lists the valid keys).
    """
    changes: dict[str, dict[str, Any]] = {name: {} for name, _ in _SECTIONS}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, found {item!r}")
        section, dot, field = key.rpartition(".")
        targets = [(name, cls) for name, cls in _SECTIONS if (not dot or name == section)]
        if dot and not targets:
            raise UsageError(f"--set {key}: unknown section {section!r}; expected one of model, train, audio")
        matched = False
        for name, cls in targets:
            hints = typing.get_type_hints(cls)
            if field in {f.name for f in dataclasses.fields(cls)}:
                changes[name][field] = _convert(text, hints[field], key)
                matched = True
        if not matched:
            valid = "; ".join(f"{name}: {', '.join(f.name for f in dataclasses.fields(cls))}" for name, cls in _SECTIONS)
            raise UsageError(f"--set: unknown key {key!r}. Valid keys — {valid}")
    if changes["audio"]:  # AudioConfig.replace: a new mel_format brings its convention's filterbank (unless set too)
        configs = {**configs, "audio": configs["audio"].replace(**changes.pop("audio"))}
    return {name: dataclasses.replace(configs[name], **changes[name]) if changes.get(name) else configs[name]
            for name, _ in _SECTIONS}


# --------------------------------------------------------------------------------------------------- command line

_DESCRIPTION = "Train a WaveNet vocoder on LJSpeech or the bundled demo corpus (rerun to resume)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags, shared by ``wavenet-dilated train`` and the repository's recipe."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="ljspeech", help="model/training preset")
    p.add_argument("--data-dir", type=Path, help="LJSpeech-format corpus (metadata.csv, wavs/) or multi-speaker "
                   "corpus (wavs/<speaker>/*.wav, or VCTK as extracted); default: "
                   f"{LJSPEECH_DIR} for ljspeech, the bundled corpus for demo")
    p.add_argument("--out-dir", type=Path, help="run directory (default runs/<preset>)")
    p.add_argument("--cache-dir", type=Path, help="preprocessed features (default <out-dir>/cache)")
    p.add_argument("--max-steps", type=int, help="override the preset's number of optimiser steps")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", nargs="?", const=True, default=True, metavar="PATH",
                        help="resume from PATH, or (default, also without PATH) the newest checkpoint in --out-dir")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start fresh (refused if --out-dir already holds checkpoints)")
    p.add_argument("--download", action="store_true", help="download LJSpeech 1.1 (2.6 GB) first if missing")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a WaveNetConfig, TrainConfig or AudioConfig field (repeatable), e.g. lr=3e-4, "
                        "train.amp=bf16, ema_decay=None")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="intra-op CPU threads for training (default: 1 for demo, torch's default for ljspeech)")
    p.add_argument("--preprocess-only", action="store_true", help="build the feature cache and exit")
    p.add_argument("--no-speakers", dest="use_speakers", action="store_false",
                   help="on a multi-speaker corpus, train one speaker-independent model (default: condition on the "
                        "speaker ids when the corpus has 2 speakers or more)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")


def add_parser(commands: Any) -> None:
    p = commands.add_parser("train", help="train a WaveNet vocoder on LJSpeech or the bundled demo corpus",
                            description=_DESCRIPTION)
    add_arguments(p)
    p.set_defaults(run=_run_command)


def build_parser(prog: str) -> argparse.ArgumentParser:
    """A stand-alone parser of the training flags (argparse's own usage errors), for :func:`main`."""
    p = argparse.ArgumentParser(prog=prog, description=_DESCRIPTION)
    add_arguments(p)
    return p


# --------------------------------------------------------------------------------------------------- running


def _missing_corpus_message(data_dir: Path, command: str) -> str:
    return (
        f"no LJSpeech-format corpus at {str(data_dir)!r} (expected {METADATA_FILE} and wavs/ there), nor a "
        "multi-speaker one (wavs/<speaker>/<utterance>.wav, or VCTK's wav48_silence_trimmed/<speaker>/).\n"
        f"  To get LJSpeech (2.6 GB): {command} --download"
        f"{'' if data_dir == LJSPEECH_DIR else f' --data-dir {data_dir}'}\n"
        f"    or download {LJSPEECH_URL} and extract it so that {data_dir / METADATA_FILE} exists.\n"
        f"  To try the bundled demo instead: {command} --preset demo"
    )


def _missing_requirement(args: argparse.Namespace, data_dir: Path, command: str) -> Exception | None:
    """What a run cannot start without, checked before anything is written: the corpus (unless ``--download``) and,
    when it will train, the tensorboard package (the ``train`` extra)."""
    if corpus_layout(data_dir) is None and not args.download:
        return FileNotFoundError(_missing_corpus_message(data_dir, command))
    if not args.preprocess_only:
        try:
            require_tensorboard()
        except ModuleNotFoundError as err:
            return err
    return None


def _locate_corpus(data_dir: Path) -> Path:
    """The corpus directory after downloading LJSpeech into ``data_dir`` (if it is not there yet)."""
    if (data_dir / METADATA_FILE).is_file():
        return data_dir
    # data/LJSpeech-1.1 → extract into data/; any other directory → extract into it (→ <dir>/LJSpeech-1.1)
    dest = data_dir.parent if data_dir.name == LJSPEECH_DIRNAME else data_dir
    return download_ljspeech(dest)


def _setup_logging(out_dir: Path) -> None:
    level = logging.INFO if dist.is_main() else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "train.log"))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if dist.is_main() else f"[rank {dist.rank()}] %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)


def _launch_rank() -> int:
    """This process's global rank as torchrun gives it (``RANK``; 0 for a plain run), readable before the process group
    exists, so that rank 0 can refuse a busy run directory before the other ranks wait for it in the rendezvous."""
    value = os.environ.get("RANK", "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable RANK must be an integer, found {value!r}") from None


def _lock_run_dir(out_dir: Path) -> contextlib.AbstractContextManager[object]:
    """The run directory's lock (``<out-dir>/.lock``), held for the whole run: only rank 0 takes it, as only rank 0
    writes there; a held lock is a :class:`~wavenet_dilated.lock.LockHeldError` naming the holder's PID."""
    if _launch_rank() != 0:
        return contextlib.nullcontext()
    return DirectoryLock(out_dir, what="run directory")


def _preprocess(args: argparse.Namespace, preset: dict[str, Any], data_dir: Path, cache_dir: Path,
                audio: AudioConfig, log: logging.Logger) -> None:
    """Build the feature cache: once per node (the cache may be node-local); the other ranks wait at the barrier."""
    if dist.local_rank() == 0:
        corpus = _locate_corpus(data_dir) if args.download else data_dir
        manifest = preprocess(corpus, cache_dir, audio, n_workers=preset["preprocess_workers"],
                              progress=args.progress and dist.is_main(), val_fraction=preset["val_fraction"])
        counts = {s: len(manifest.entries(s)) for s in ("train", "val", "test")}
        log.info("corpus %s → cache %s (utterances %s)", corpus, cache_dir, counts)
    dist.barrier()


def _fit(args: argparse.Namespace, trainer: Trainer, log: logging.Logger) -> int:
    """Train to the end (or until stopped); the main process then writes a sample and prints the summary."""
    with logging_redirect_tqdm():
        summary = trainer.fit(progress=args.progress)
    if summary.stopped_early:
        log.warning("stopped at step %d; the same command resumes from %s", summary.step, summary.checkpoint)
        return 130
    if dist.is_main():
        with logging_redirect_tqdm():
            sample = trainer.log_sample()
        val, best = summary.val_nll_bits, summary.best_val_nll_bits
        nll = "no validation split" if val is None else f"validation NLL {val:.3f} bits/sample (best {best:.3f})"
        print(f"done: step {summary.step}, {nll}; checkpoint {summary.checkpoint}")
        print(f"wrote sample {sample}")
    dist.barrier()
    return 0


def run(args: argparse.Namespace, command: str) -> int:
    """Train as the flags say; ``command`` is how the user started it (for the hints in messages).

    Returns 0 when done, 130 when stopped early (the same command resumes), and 2 without a word on a torchrun rank
    other than 0 when the corpus or the tensorboard package is missing (rank 0 raises the error). Raises
    :class:`~wavenet_dilated.lock.LockHeldError` (an ``OSError``) when another run holds ``--out-dir``,
    ``FileNotFoundError`` for a missing corpus, ``ModuleNotFoundError`` (``name="tensorboard"``) without the
    ``train`` extra, :class:`UsageError` / ``ValueError`` for bad flags and settings, and
    :class:`~wavenet_dilated.train.trainer.DivergedError` when training diverges (NaN, or far above a uniform guess).
    """
    preset = PRESETS[args.preset]
    configs = apply_overrides({"model": preset["model"], "train": preset["train"], "audio": preset["audio"]},
                              args.overrides)
    train_config: TrainConfig = configs["train"]
    if args.max_steps is not None:
        train_config = dataclasses.replace(train_config, max_steps=args.max_steps)
    if args.device is not None:
        train_config = dataclasses.replace(train_config, device=args.device)
    out_dir = args.out_dir or Path("runs") / args.preset
    cache_dir = args.cache_dir or out_dir / "cache"
    data_dir = args.data_dir or preset["data_dir"]
    # settings that would otherwise fail only after preprocessing (or half-way into the run directory): checked first
    check_output_dir(out_dir, "run directory")
    check_output_dir(cache_dir, "cache")
    dist.resolve_device(train_config.device)
    for name in ("max_time_steps", "val_max_time_steps"):
        check_crop_length(name, getattr(train_config, name), configs["audio"].hop_length)
    missing = _missing_requirement(args, data_dir, command)
    if missing is not None:
        # every rank stops here, before any of them waits at a barrier; rank 0 alone says why (once, not per rank)
        if _launch_rank() != 0:
            return EXIT_USAGE
        raise missing

    threads = preset["threads"] if args.threads is None else args.threads
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, found {threads}")
        torch.set_num_threads(threads)
    # one run per run directory, from before anything is written there (preprocessing included) to the end
    with _lock_run_dir(out_dir):
        device = dist.setup(train_config.device)
        try:
            _setup_logging(out_dir)
            log = logging.getLogger(__name__)
            _preprocess(args, preset, data_dir, cache_dir, configs["audio"], log)
            if args.preprocess_only:
                return 0
            trainer = Trainer(configs["model"], train_config, cache_dir, out_dir, resume=args.resume,
                              use_speakers=args.use_speakers)
            log.info("preset %s on %s; run directory %s", args.preset, device, out_dir)
            return _fit(args, trainer, log)
        finally:
            dist.teardown()


_INTERRUPTED = "interrupted; rerun the same command to resume from the last checkpoint"


def _run_command(args: argparse.Namespace) -> int:
    """``wavenet-dilated train``: :func:`run`, with a diverged run's status 1 and the resume hint on Ctrl-C (the other
    errors become one line in :func:`wavenet_dilated.cli.cli`)."""
    try:
        return run(args, f"{PROG} train")
    except DivergedError as err:
        return fail(str(err), status=1)
    except ModuleNotFoundError as err:
        if err.name != "tensorboard":  # a missing optional package says how to install it; anything else is a bug
            raise
        return fail(str(err))
    except KeyboardInterrupt:
        print(f"{PROG}: {_INTERRUPTED}", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None, prog: str = f"{PROG} train") -> int:
    """The training program on its own (the recipe's entry point): ``error: …`` messages and the exit status (0 done,
    1 diverged, 2 bad input, 130 interrupted); ``prog`` names it in usage and hints."""
    args = build_parser(prog).parse_args(argv)
    try:
        with warnings.catch_warnings():  # a skipped file is one "warning: …" line, not a line of the library's source
            warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
            return run(args, prog)
    except DivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # OSError: a busy or unusable run directory (FileNotFoundError included)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if err.name != "tensorboard":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
