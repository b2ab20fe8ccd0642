"""Run the generation/training benchmark and print its table (or JSON); see benchmarks/README.md.

    python benchmarks/run.py                      # ljspeech and small, batches 1 and 8, a couple of minutes
    python benchmarks/run.py --quick              # a rough answer in well under a minute
    python benchmarks/run.py --preset small --json results.json

The runtime settings of :mod:`wavenet_dilated.runtime` (OpenMP wait policy, malloc thresholds) are applied before
torch is imported; they only take effect then. Importing the package loads no torch, so that is a plain import.
"""

from __future__ import annotations

import wavenet_dilated.runtime as RUNTIME  # imports no torch (the package's __init__ is lazy)

RUNTIME.apply_runtime_env()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark WaveNet generation and training on this machine.")
    parser.add_argument("--preset", action="append", help="preset to measure (repeatable; default ljspeech and small)")
    parser.add_argument("--batch", action="append", type=int, help="generation batch size (repeatable; default 1, 8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per generation measurement")
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip naive generation")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON ('-' for stdout only)")
    args = parser.parse_args(argv)

    # the package is importable from a checkout without installing it
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    from wavenet_dilated.bench import format_table, run_bench

    result = run_bench(presets=tuple(args.preset or ("ljspeech", "small")), batches=tuple(args.batch or (1, 8)),
                       seconds=args.seconds, quick=args.quick, naive=args.naive, train=args.train)
    result["runtime_env"] = {k: os.environ.get(k) for k in RUNTIME.RUNTIME_ENV}
    if args.json == "-":
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
