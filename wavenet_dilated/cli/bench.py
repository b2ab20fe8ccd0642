"""``wavenet-dilated bench``: generation and training speed against this machine's ceilings and the performance targets
(the benchmark is :mod:`wavenet_dilated.bench`; ``benchmarks/run.py`` is this command).

Started as a command (``wavenet-dilated bench`` or ``python -m wavenet_dilated bench``), :func:`wavenet_dilated.cli.cli`
first restarts the process once with :data:`~wavenet_dilated.runtime.RUNTIME_ENV` in its environment (the values a user
set are kept), so that it measures under the settings the training command uses.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..presets import MODEL_PRESETS
from ..runtime import RUNTIME_ENV
from .common import PROG, device, int_at_least, positive_float, wrap

__all__ = ["add_parser", "run"]

#: the precisions ``--precision`` offers (the benchmark refuses one this build's fast path cannot run)
PRECISIONS = ("fp32", "bf16", "int8", "w8a8")


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="measure generation and training speed against this machine's ceilings",
        description=wrap(
            "Benchmark generation (naive, the plain-PyTorch reference, the compiled fast path) and training of model "
            "presets or your own checkpoints: samples per second, the real-time factor (RTF = compute time / duration "
            "of the audio generated, as 'sample' prints it; below 1 is faster than real time), achieved GFLOP/s, the "
            "ceiling this machine's FMA peak and read bandwidth allow, and the performance targets met or not. Each "
            "number is the median of several timed calls after a warm-up call; a measurement during which other "
            "processes used the CPU is marked loaded and not compared with its ceiling. --quick measures less (batch "
            "1, no fixed thread counts, no naive-growth table, 3 calls instead of 5), the same way."),
        epilog=f"examples:\n  {PROG} bench --quick\n  {PROG} bench --checkpoint runs/demo/checkpoints/best.pt --batch 1\n"
        f"  {PROG} bench --json results.json --baseline main.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", action="append", choices=sorted(MODEL_PRESETS),
                   help="a preset to measure; repeat for several (default: ljspeech and small, or none with "
                        "--checkpoint)")
    p.add_argument("--checkpoint", action="append", type=Path, metavar="PATH",
                   help="a checkpoint to measure (its weights, EMA when present, and sample rate); repeatable")
    p.add_argument("--quick", action="store_true", help="fewer measurements and repeats, the same method")
    p.add_argument("--batch", action="append", type=int_at_least(1), metavar="N",
                   help="a generation batch size; repeatable (default 1 and 8; 1 with --quick)")
    p.add_argument("--threads", action="append", type=int_at_least(1), metavar="N",
                   help="a fixed thread count of the fast path to measure beside the one it chooses; repeatable "
                        "(default 1 and 2; none with --quick)")
    p.add_argument("--seconds", type=positive_float, metavar="S",
                   help="wall seconds of each timed generation call (default 0.6)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="weights of the fast path (default fp32; bf16 and int8 where this build has them)")
    p.add_argument("--no-naive", dest="naive", action="store_false", help="skip naive generation and its growth table")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the training measurement")
    p.add_argument("--baseline", type=Path, metavar="FILE",
                   help="another build's 'bench --json' (e.g. today's main from a git worktree) for the targets "
                        "relative to it")
    p.add_argument("--peer", type=Path, metavar="FILE",
                   help="another implementation's samples/s, as a JSON object with a 'targets' list of "
                        "{measure, target, measured} rows, for the targets relative to it")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to run (the benchmark measures the CPU)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="print the result as JSON instead of the table; with FILE, print the table and write the JSON "
                        "there")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import format_table, run_bench

    # unset flags keep run_bench's own defaults
    kwargs: dict[str, Any] = {"quick": args.quick}
    for flag, key in (("preset", "presets"), ("checkpoint", "checkpoints"), ("batch", "batches"),
                      ("threads", "threads"), ("seconds", "seconds"), ("precision", "precision"),
                      ("baseline", "baseline"), ("peer", "peer")):
        if getattr(args, flag, None) is not None:
            kwargs[key] = getattr(args, flag)
    for flag in ("naive", "train"):
        if getattr(args, flag, True) is False:
            kwargs[flag] = False
    if args.device is not None:
        kwargs["device"] = device(args.device)
    result = run_bench(**kwargs)
    result["runtime_env"] = {k: os.environ.get(k) for k in RUNTIME_ENV}
    if args.json == "-":
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(format_table(result))
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=str)
    return 0
