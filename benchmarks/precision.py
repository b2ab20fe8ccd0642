"""Generation samples/s of one preset at each weight precision, side by side with other source trees (e.g. a
``git worktree`` of an earlier commit), measured interleaved: round after round, every (tree, precision) once, each
in a fresh process, so that load from other processes falls on all of them alike; medians over the rounds. Beside
samples/s (wall clock) it reports samples per CPU-second of the process times the thread count: on a machine shared
with other work that is the closer estimate of the unloaded rate (one thread: no time spent waiting at barriers).

Examples:
    python benchmarks/precision.py --tree new=. --tree base=/tmp/wt_base --rounds 5
    python benchmarks/precision.py --preset small --precision int8 --samples 20000 --json out.json

A tree whose ``fast_generate`` has no ``precision`` argument is measured at fp32 only, and one that does not know a
precision (``w8a8`` before it existed) skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# What one measurement runs, in a fresh interpreter with the tree first on sys.path: a random model of the preset (the
# weights' values do not change the work), one warm-up generation, then the timed one; prints one JSON line.
WORKER = r"""
import inspect, json, sys, time
import torch
import wavenet_dilated
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.presets import model_preset
from wavenet_dilated.wavenet import WaveNet

preset, precision, n, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
config = model_preset(preset)
model = WaveNet(config).eval()
kw = {"precision": precision} if "precision" in inspect.signature(FG.fast_generate).parameters else {}
if precision != "fp32" and not kw:
    print(json.dumps({"skipped": "no precision argument"}))
    sys.exit(0)
try:
    from wavenet_dilated.generation.precision import check_precision
    check_precision(precision)
except ValueError as err:  # a tree from before this precision
    print(json.dumps({"skipped": str(err)}))
    sys.exit(0)
mel = None
if config.cond_channels is not None:
    mel = torch.randn(batch, config.cond_channels, -(-n // config.hop_length))
def once(samples):
    args = dict(mel=mel[:, :, : -(-samples // config.hop_length)]) if mel is not None else dict(n_samples=samples)
    t0 = time.perf_counter()
    FG.fast_generate(model, batch_size=batch if mel is None else None, seed=0, backend="cpp", threads=threads,
                     **args, **kw)
    return time.perf_counter() - t0
once(min(n, 2048))
cpu0 = time.process_time()
seconds = once(n)
n_done = -(-n // config.hop_length) * config.hop_length if mel is not None else n
cpu = time.process_time() - cpu0
print(json.dumps({"samples_per_s": batch * n_done / seconds, "samples_per_cpu_s": batch * n_done * threads / cpu,
                  "seconds": seconds, "cpu_share": cpu / seconds / threads, "module": wavenet_dilated.__file__}))
"""


def _measure(tree: Path, preset: str, precision: str, samples: int, batch: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", WORKER, preset, precision, str(samples), str(batch), str(threads)],
                          capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"precision.py: error: measuring {tree} ({precision}) failed: {proc.stderr.strip()[-400:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "module" in out and not out["module"].startswith(str(tree.resolve())):
        raise SystemExit(f"precision.py: error: {tree} imported {out['module']}, not its own package")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", metavar="NAME=PATH",
                   help="a source tree to measure (repeatable; default: this checkout as 'new')")
    p.add_argument("--preset", default="ljspeech")
    p.add_argument("--precision", action="append", choices=["fp32", "bf16", "int8", "w8a8"],
                   help="repeatable (default: all four)")
    p.add_argument("--samples", type=int, default=16384, help="samples per row per measurement (default 16384)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", metavar="FILE", type=Path, help="also write every measurement here")
    args = p.parse_args()
    trees = {}
    for item in args.tree or [f"new={Path(__file__).resolve().parents[1]}"]:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            p.error(f"--tree takes NAME=PATH of a directory, found {item!r}")
        trees[name] = Path(path).resolve()
    precisions = args.precision or ["fp32", "bf16", "int8", "w8a8"]
    runs: dict[tuple[str, str], list[dict]] = {(t, q): [] for t in trees for q in precisions}
    for r in range(args.rounds):
        for (tree, precision), got in runs.items():
            out = _measure(trees[tree], args.preset, precision, args.samples, args.batch, args.threads)
            got.append(out)
            if "samples_per_s" in out:
                print(f"round {r + 1}/{args.rounds} {tree:>8} {precision}: {out['samples_per_s']:,.0f} samples/s, "
                      f"{out['samples_per_cpu_s']:,.0f} per CPU-second × threads (CPU share {out['cpu_share']:.2f})",
                      flush=True)
    print(f"\n{args.preset}, batch {args.batch}, {args.threads} threads, {args.samples} samples per row, "
          f"medians of {args.rounds} interleaved rounds")
    for (tree, precision), got in runs.items():
        rates = [g["samples_per_s"] for g in got if "samples_per_s" in g]
        per_cpu = [g["samples_per_cpu_s"] for g in got if "samples_per_s" in g]
        if rates:
            print(f"  {tree:>8} {precision}: {statistics.median(rates):>9,.0f} samples/s  "
                  f"(min {min(rates):,.0f}, max {max(rates):,.0f}); {statistics.median(per_cpu):>9,.0f} per "
                  "CPU-second × threads")
    if args.json:
        args.json.write_text(json.dumps({f"{t}/{q}": v for (t, q), v in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
