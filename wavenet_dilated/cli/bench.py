"""``wavenet-dilated bench``: generation speed against the FLOP model (the benchmark is :mod:`wavenet_dilated.bench`).

Started as a command (``wavenet-dilated bench`` or ``python -m wavenet_dilated bench``), :func:`wavenet_dilated.cli.cli`
first restarts the process once with :data:`~wavenet_dilated.runtime.RUNTIME_ENV` in its environment (the values a user
set are kept), so that it measures under the settings the training command and ``benchmarks/run.py`` use.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..presets import MODEL_PRESETS
from .common import device

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import format_table, run_bench

    kwargs: dict[str, Any] = {"quick": args.quick}  # unset flags keep run_bench's own defaults
    if args.preset:
        kwargs["presets"] = args.preset
    if args.device is not None:
        kwargs["device"] = device(args.device)
    result = run_bench(**kwargs)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_table(result))
    return 0
