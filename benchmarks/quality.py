"""Time to quality: train a recipe for a fixed wall-clock budget, then score its checkpoints at several times.

    python benchmarks/quality.py                                   # demo preset, 20 minutes, 5 points
    python benchmarks/quality.py --budget-minutes 2 --points 3     # a smoke run
    python benchmarks/quality.py --set lr=1e-2 --set batch_size=8 --max-steps 2400 --json curve.json

The run is ``wavenet-dilated train`` in a subprocess (so the budget buys exactly what a user's run gets), stopped with
SIGINT when the budget is spent (it checkpoints first). Every ``--every`` steps it validates (teacher-forced NLL on the
val split) and writes a checkpoint; copy-synthesis quality during training is switched off, so it costs the run
nothing. Afterwards, with the training stopped, the checkpoint written last before each of ``--points`` times
(geometrically spaced up to the budget, the last at the end) is scored on the held-out utterances (the val and test
splits, the first ``--max-seconds`` of each) with :func:`wavenet_dilated.quality.evaluate.evaluate_vocoder`, and
Griffin-Lim from the same mels once. Times are wall-clock from the start of the command, so they include
preprocessing and validation, as a user's run does.

``--max-steps`` sets the length of the learning-rate schedule: by default the preset's, which may end before the budget
(the demo preset's 120 steps take about a minute); pass about the number of steps the budget holds for a schedule that
decays over it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the package is importable from a checkout without installing it
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from wavenet_dilated.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from wavenet_dilated.quality.evaluate import corpus_utterances, evaluate_vocoder  # noqa: E402
from wavenet_dilated.quality.metrics import METRICS, Metric  # noqa: E402
from wavenet_dilated.vocoder import Vocoder  # noqa: E402

#: how long a stopped run may take to write its last checkpoint before it is killed
STOP_GRACE_SECONDS = 120.0
#: the columns of the curve after time, step and NLL: the metrics most telling of a vocoder's progress
CURVE_METRICS = ("stoi", "pesq_wb", "mel_l1", "f0_rmse_cents", "mcd_db", "vuv_error", "dead_silence")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", help="training preset (default: demo)")
    p.add_argument("--data-dir", type=Path, help="corpus (default: the preset's)")
    p.add_argument("--budget-minutes", type=float, default=20.0, help="wall-clock training budget (default: 20)")
    p.add_argument("--points", type=int, default=5, help="checkpoints scored, geometrically spaced (default: 5)")
    p.add_argument("--every", type=int, default=100, help="steps between validations and checkpoints (default: 100)")
    p.add_argument("--max-steps", type=int, help="length of the run's schedule (default: the preset's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to wavenet-dilated train --set (repeatable): the recipe change under test")
    p.add_argument("--threads", type=int, help="training threads (default: the preset's)")
    p.add_argument("--max-utterances", type=int, default=8, help="held-out utterances scored (default: 8)")
    p.add_argument("--max-seconds", type=float, default=3.0, help="seconds scored of each (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="vocoder sampling seed (default: 0)")
    p.add_argument("--out-dir", type=Path, help="keep the run here (default: a temporary directory, removed after)")
    p.add_argument("--json", metavar="FILE", type=Path, help="also write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while scoring")
    args = p.parse_args(argv)
    if not (args.budget_minutes > 0 and args.points >= 1 and args.every >= 1 and args.max_seconds > 0):
        p.error("--budget-minutes, --max-seconds must be > 0 and --points, --every >= 1")
    return args


def train_for(args: argparse.Namespace, run_dir: Path) -> tuple[float, Path]:
    """Run ``wavenet-dilated train`` for the budget, then stop it with SIGINT; ``(start time, log file)``."""
    command = [sys.executable, "-m", "wavenet_dilated", "train", "--preset", args.preset, "--out-dir", str(run_dir),
               "--no-progress", "--set", f"checkpoint_every={args.every}", "--set", f"val_every={args.every}",
               "--set", "keep_last=1000000", "--set", "quality_utterances=None"]  # fmt: skip
    command += ["--data-dir", str(args.data_dir)] if args.data_dir else []
    command += ["--max-steps", str(args.max_steps)] if args.max_steps else []
    command += ["--threads", str(args.threads)] if args.threads else []
    for item in args.overrides:
        command += ["--set", item]
    log = run_dir / "train.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w", encoding="utf-8") as out:
        repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=args.budget_minutes * 60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # the trainer checkpoints, then exits
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.returncode not in (0, 130, -signal.SIGINT):
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"training failed (exit {proc.returncode}); the end of {log}:\n" + "\n".join(tail))
    return start, log


def choose_checkpoints(run_dir: Path, start: float, budget: float, n_points: int) -> list[tuple[float, int, Path]]:
    """``(minutes, step, path)``: for each of ``n_points`` times ``budget · 2^-(k)`` (the last at the budget), the
    checkpoint written last before it; each checkpoint once."""
    written = [((path.stat().st_mtime - start) / 60, step, path) for step, path in list_checkpoints(run_dir / "checkpoints")]
    targets = [budget * 2.0 ** -(n_points - 1 - k) for k in range(n_points)]
    chosen: dict[Path, tuple[float, int, Path]] = {}
    for target in targets:
        before = [w for w in written if w[0] <= target + 1e-9]
        if before:
            pick = max(before, key=lambda w: w[1])
            chosen[pick[2]] = pick
    if written:  # the run's last checkpoint (written just after the stop) closes the curve
        last = max(written, key=lambda w: w[1])
        chosen[last[2]] = last
    return sorted(chosen.values(), key=lambda w: w[1])


def held_out(args: argparse.Namespace, run_dir: Path) -> list[tuple[str, Path]]:
    """The val and test utterances of the run's corpus, with the fractions its cache was split with."""
    manifest = json.loads((run_dir / "cache" / "manifest.json").read_text(encoding="utf-8"))
    corpus = args.data_dir
    if corpus is None:
        from wavenet_dilated.cli.train import PRESETS

        corpus = PRESETS[args.preset]["data_dir"]
    utterances = [u for split in ("val", "test")
                  for u in corpus_utterances(corpus, split, manifest["val_fraction"], manifest["test_fraction"])]
    return [(u.id, u.wav_path) for u in sorted(utterances, key=lambda u: u.id)[: args.max_utterances]]


def score(args: argparse.Namespace, points: list[tuple[float, int, Path]], inputs: list[tuple[str, Path]]) -> dict[str, Any]:
    rows, baseline = [], None
    for minutes, step, path in points:
        ckpt = load_checkpoint(path)
        vocoder = Vocoder.from_checkpoint(path)
        result = evaluate_vocoder(vocoder, inputs, seed=args.seed, max_seconds=args.max_seconds, baseline=baseline is None,
                                  skip_unusable=True, progress=not args.no_progress)  # fmt: skip
        if baseline is None:
            baseline = result.griffin_lim
        rows.append({"minutes": round(minutes, 3), "step": step, "val_nll_bits": ckpt.get("val_nll_bits"),
                     "val_step": ckpt.get("val_step"), **result.model})  # fmt: skip
        print(f"scored step {step} ({minutes:.1f} min): " + ", ".join(
            f"{m.label} {_cell(result.model[m.name], m.digits)}" for m in _curve_metrics()), flush=True)
    return {"points": rows, "griffin_lim": baseline or {}}


def _cell(value: Any, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _curve_metrics() -> list[Metric]:
    by_name = {m.name: m for m in METRICS}
    return [by_name[name] for name in CURVE_METRICS]


def format_curve(result: dict[str, Any]) -> str:
    metrics = _curve_metrics()
    header = ["min", "step", "val NLL", *(m.label for m in metrics)]
    rows = [[_cell(r["minutes"], 1), str(r["step"]), _cell(r["val_nll_bits"], 3),
             *(_cell(r[m.name], m.digits) for m in metrics)] for r in result["points"]]
    rows.append(["Griffin-Lim", "", "", *(_cell(result["griffin_lim"].get(m.name), m.digits) for m in metrics)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        run_dir = args.out_dir or Path(tmp) / "run"
        print(f"training preset {args.preset} for {args.budget_minutes:g} min in {run_dir} "
              f"({os.cpu_count()} CPUs: {cpu_name()})", flush=True)
        start, log = train_for(args, run_dir)
        points = choose_checkpoints(run_dir, start, args.budget_minutes, args.points)
        if not points:
            raise SystemExit(f"no checkpoint was written within the budget (see {log}); raise --budget-minutes or "
                             "lower --every")
        inputs = held_out(args, run_dir)
        result = {"preset": args.preset, "budget_minutes": args.budget_minutes, "overrides": args.overrides,
                  "max_steps": args.max_steps, "every": args.every, "cpu": cpu_name(), "cpus": os.cpu_count(),
                  "utterances": [uid for uid, _ in inputs], "max_seconds": args.max_seconds, "seed": args.seed,
                  **score(args, points, inputs)}  # fmt: skip
    print()
    print(format_curve(result))
    if args.json is not None:
        args.json.write_text(json.dumps(_finite(result), indent=2, allow_nan=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
