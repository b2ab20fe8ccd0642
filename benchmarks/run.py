"""Run the generation/training benchmark: ``wavenet-dilated bench`` from a checkout, with the same flags (see
benchmarks/README.md and ``python benchmarks/run.py --help``).

    python benchmarks/run.py                          # ljspeech and small, batches 1 and 8, a few minutes
    python benchmarks/run.py --quick                  # fewer measurements, the same method
    python benchmarks/run.py --preset small --json small.json
    python benchmarks/run.py --checkpoint runs/demo/checkpoints/best.pt

The runtime settings of :mod:`wavenet_dilated.runtime` (OpenMP wait policy, malloc thresholds) are applied before
torch is imported, in this process, where the command restarts itself to the same effect. Importing the package loads
no torch, so that is a plain import.
"""

from __future__ import annotations

import os
import sys

# the package is importable from a checkout without installing it
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import wavenet_dilated.runtime as RUNTIME  # noqa: E402  (imports no torch: the package's __init__ is lazy)

RUNTIME.apply_runtime_env()

from wavenet_dilated.cli import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """``wavenet-dilated bench ARGV`` (default ``sys.argv[1:]``); returns its exit status."""
    return cli(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
