"""Train a WaveNet vocoder on LJSpeech (or the bundled demo corpus): the ``wavenet-dilated train`` command, run from
the repository under the name its README and ``torchrun`` use.

    python -m recipes.train_ljspeech --preset demo                  # a few minutes on 2 CPU cores, bundled corpus
    python -m recipes.train_ljspeech --download                     # fetch LJSpeech (2.6 GB) into data/
    python -m recipes.train_ljspeech                                # the LJSpeech vocoder, one GPU
    torchrun --nproc_per_node=8 -m recipes.train_ljspeech           # DDP on 8 GPUs
    python -m recipes.train_ljspeech --preset demo --set lr=3e-3 --set residual_channels=48

The presets (:data:`PRESETS`), the flags and the training loop are the package's
(:mod:`wavenet_dilated.cli.train`), so an installed package trains the same way with ``wavenet-dilated train``. The
run directory (``--out-dir``, default ``runs/<preset>``) holds the preprocessed cache, checkpoints, TensorBoard events
and samples; running the same command again resumes from its newest checkpoint.

Run as a program, it first applies :data:`wavenet_dilated.runtime.RUNTIME_ENV` (OpenMP threads sleep instead of
spinning while they wait; glibc keeps freed activations for the next step), keeping any of those variables already
set. That has to happen before torch is imported, hence the block above the imports.
"""

# ruff: noqa: E402  (the runtime settings must be applied before the imports below load torch)
from __future__ import annotations

if __name__ == "__main__":

    import wavenet_dilated.runtime  # imports no torch (the package's __init__ is lazy)

    wavenet_dilated.runtime.apply_runtime_env()

import argparse
import sys
from collections.abc import Sequence

from wavenet_dilated.cli import train
from wavenet_dilated.cli.train import DEMO_CORPUS, LJSPEECH_DIR, PRESETS, apply_overrides

__all__ = ["DEMO_CORPUS", "LJSPEECH_DIR", "PRESETS", "PROG", "apply_overrides", "build_parser", "main"]

#: how this recipe is started: its name in usage lines and in the hints of messages
PROG = "python -m recipes.train_ljspeech"


def build_parser() -> argparse.ArgumentParser:
    return train.build_parser(PROG)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 1 diverged, 2 bad input, 130 interrupted)."""
    return train.main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
