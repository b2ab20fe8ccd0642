"""The benchmark's measurements: FLOPs per sample, generation (naive, cached, fast) and training samples/s, and
:func:`run_bench`, which measures everything the package docstring lists.

Every number is measured the same way, in quick and full runs alike (:func:`~.machine.time_calls`): calls sized to
take about ``seconds`` each, one untimed warm-up call, then the median of ``repeats`` timed calls, with the CPU time
other processes used meanwhile (:class:`~.machine.LoadMeter`). A quick run only measures fewer things (batch 1, the
thread count chosen as it runs, no naive-growth table) with fewer repeats.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..config import check_int, check_number
from ..presets import model_preset
from ..wavenet import WaveNet, WaveNetConfig
from .machine import Timing, format_limits, machine_info, machine_limits, machine_throughput, merge_loads, time_calls
from .report import (
    BYTES_PER_WEIGHT,
    RTF_CONVENTION,
    generation_ceilings,
    read_reference,
    row_ceiling,
    target_rows,
    training_ceiling,
)

__all__ = ["DEFAULT_SECONDS", "SAMPLE_RATE", "fallback_backend", "flops_per_sample", "run_bench"]

#: Hz: the presets' sample rate, for their real-time factor (a checkpoint's own rate is used for a checkpoint)
SAMPLE_RATE = 22050
#: wall seconds of each timed generation call
DEFAULT_SECONDS = 0.6
#: timed calls per measurement (quick, full) after one warm-up call
REPEATS = {True: 3, False: 5}
WARMUP = 1


# --------------------------------------------------------------------------------------------------- the model


def flops_per_sample(config: WaveNetConfig) -> dict[str, int]:
    """FLOPs (multiply and add counted separately) to generate one sample at batch 1 with cached generation.

    ``per_layer = 2·(k·R·G + (G/2)·(R + S))``; ``conditioning = L·2·C_mel·G`` (0 without mel); ``output =
    2·(S·S + S·n_out)``; ``total = L·per_layer + conditioning + output``. Biases, the gate's nonlinearities and the
    sampling are O(G) and O(n_out) and not counted.
    """
    from ..nn.heads import make_head

    c = config
    k, R, G_, S, L = c.kernel_size, c.residual_channels, c.gate_channels, c.skip_channels, c.n_layers
    per_layer = 2 * (k * R * G_ + (G_ // 2) * (R + S))
    conditioning = L * 2 * c.cond_channels * G_ if c.cond_channels is not None else 0
    n_out = make_head(c.output, c.n_classes, c.n_mixtures, c.log_scale_min).out_channels
    output = 2 * (S * S + S * n_out)
    return {"per_layer": per_layer, "layers": L * per_layer, "conditioning": conditioning, "output": output,
            "total": L * per_layer + conditioning + output}


# --------------------------------------------------------------------------------------------------- timing


class _Log:
    """Progress lines on stderr (one per measurement), and the count of measurements and of loaded ones."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.measurements, self.loaded = enabled, 0, 0

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def count(self, row: dict[str, Any]) -> str:
        """Count a measurement; the note that goes after its progress line when it was loaded."""
        self.measurements += 1
        if not row.get("loaded"):
            return ""
        self.loaded += 1
        return f"  [loaded: other processes used {row['others_cores']:.2f} cores]"


def _calibrated(fn: Callable[[int], Any], seconds: float, start: int, cap: int) -> int:
    """How many units ``fn(n)`` can do in about ``seconds`` (at least 1, at most ``cap``).

    A first, untimed call takes the one-time costs (weight packing, the thread probe, allocations) out of the estimate;
    then ``n`` grows from ``start`` until a call lasts at least a quarter of ``seconds``, and is scaled from that call.
    """
    fn(start)
    n = start
    for _ in range(8):
        t0 = time.perf_counter()
        fn(n)
        dt = max(time.perf_counter() - t0, 1e-6)
        if dt >= seconds / 4 or n >= cap:
            break
        n = min(cap, int(n * min(16.0, seconds / dt)) + 1)
    return max(1, min(cap, int(n * seconds / dt)))


def _rate(samples: int, timing: Timing, flops: int, sample_rate: int, **extra: Any) -> dict[str, Any]:
    """A measurement's row: samples/s, GFLOP/s, the real-time factor (compute seconds per audio second), the raw
    timing and the load."""
    sps = samples / timing.wall_s
    return {"samples_per_s": sps, "gflops": sps * flops / 1e9, "rtf": sample_rate / sps, "n_samples": samples,
            "wall_s": timing.wall_s, "cpu_per_wall": timing.cpu_per_wall, **timing.load.as_dict(), **extra}

# --------------------------------------------------------------------------------------------------- generation


def _inputs(model: WaveNet, batch: int, n: int) -> dict[str, Any]:
    c = model.config
    kwargs: dict[str, Any] = {}
    if c.cond_channels is not None:
        frames = -(-n // c.hop_length)
        kwargs["mel"] = torch.randn(batch, c.cond_channels, frames)
        kwargs["n_samples"] = n
    else:
        kwargs.update(n_samples=n, batch_size=batch)
    if c.n_speakers is not None:
        kwargs["speaker"] = torch.zeros(batch, dtype=torch.int64)
    return kwargs


def _kernel_words(machine: dict[str, Any]) -> str:
    """The log's words on the kernel: its vector ISA and how its w8a8 products multiply."""
    return f"kernel ISA {machine['isa']} (w8a8 products: {machine.get('int8_dot', 'unknown')})"


def _precision_options(precision: str) -> dict[str, Any]:
    """``fast_generate``'s keyword for ``precision``: none for fp32 when it takes no ``precision`` (fp32 is all it
    runs then); a ValueError for another precision it cannot run."""
    from ..generation import fast as fastgen

    if precision not in BYTES_PER_WEIGHT:
        raise ValueError(f"precision must be one of {', '.join(BYTES_PER_WEIGHT)}, found {precision!r}")
    if "precision" in inspect.signature(fastgen.fast_generate).parameters:
        return {"precision": precision}
    if precision != "fp32":
        raise ValueError(f"precision {precision!r}: this build's fast_generate runs fp32 only")
    return {}


@torch.no_grad()
def _naive_step(model: WaveNet, batch: int, repeats: int) -> Timing:
    """One naive-generation sample at steady state: a forward over the last RF inputs + sampling."""
    c = model.config
    rf = model.receptive_field
    x = torch.randint(0, c.n_classes, (batch, rf)) if model.head.quantized else torch.rand(batch, rf) * 2 - 1
    cond = torch.randn(batch, c.cond_channels, rf) if c.cond_channels is not None else None
    speaker = torch.zeros(batch, dtype=torch.int64) if c.n_speakers is not None else None
    u = torch.rand(batch, model.head.n_uniforms)

    def step() -> None:
        logits = model(x, speaker=speaker, cond=cond)[:, :, -1]
        model.head.sample(logits, u)

    return time_calls(step, repeats, WARMUP)


def fallback_backend() -> str | None:
    """The ``fast_generate`` backend that runs where the compiled kernel cannot be built, when it is not the reference
    generator itself (``"torch"``); ``None`` where the reference is the fallback."""
    from ..generation import fast as fastgen

    return "torch" if "torch" in fastgen.BACKENDS else None


def _plain(model: WaveNet, batch: int, seconds: float, repeats: int, backend: str = "reference") -> tuple[int, Timing]:
    """(samples per call, timing) of a plain-PyTorch generator: ``fast_generate``'s ``"reference"`` (the cached
    queue every path is tested against) or its fallback backend."""
    from ..generation import fast as fastgen

    def generate(n: int) -> None:
        fastgen.fast_generate(model, seed=0, backend=backend, **_inputs(model, batch, n))

    n = _calibrated(generate, seconds, 8, 100_000)
    return n, time_calls(lambda: generate(n), repeats, WARMUP)


def _generation(model: WaveNet, batch: int, run: dict[str, Any], flops: int, naive: bool, log: _Log) -> dict[str, Any]:
    """Naive (when asked), cached and fast generation at ``batch``; ``run`` holds the run's settings."""
    from ..generation import fast as fastgen

    rate, seconds, repeats = run["sample_rate"], run["seconds"], run["repeats"]
    out: dict[str, Any] = {}

    def report(key: str, row: dict[str, Any]) -> None:
        out[key] = row
        log(f"  b{batch} {key:<9} {row['samples_per_s']:>12,.1f} samples/s  RTF {row['rtf']:.3g}{log.count(row)}")

    if naive:
        report("naive", _rate(batch, _naive_step(model, batch, repeats), flops, rate,
                              note="steady state: one forward over the receptive field per sample"))
    n, timing = _plain(model, batch, seconds, repeats)
    report("cached", _rate(batch * n, timing, flops, rate, backend="reference"))
    fallback = fallback_backend()
    if fallback is not None:
        n, timing = _plain(model, batch, seconds, repeats, fallback)
        report("fallback", _rate(batch * n, timing, flops, rate, backend=fallback))
    ok, why = fastgen.available()
    reason = why if not ok else fastgen.unsupported_reason(model)
    if reason is not None:
        out["fast"] = {"error": reason}
        return out
    best = None
    for t in run["fast_threads"]:
        def fast(n: int, t: int | None = t) -> None:
            fastgen.fast_generate(model, seed=0, backend="cpp", threads=t, **run["precision_options"],
                                  **_inputs(model, batch, n))

        n = _calibrated(fast, seconds, 64, 10_000_000)
        key = "fast_auto" if t is None else f"fast_{t}t"
        report(key, _rate(batch * n, time_calls(lambda n=n, fast=fast: fast(n), repeats, WARMUP), flops, rate,
                          threads=t))
        if best is None or out[key]["samples_per_s"] > out[best]["samples_per_s"]:
            best = key
    out["fast"] = dict(out[best], best_of=best)
    out["fast_vs_cached"] = out["fast"]["samples_per_s"] / out["cached"]["samples_per_s"]
    if "naive" in out:
        out["cached_vs_naive"] = out["cached"]["samples_per_s"] / out["naive"]["samples_per_s"]
        out["fast_vs_naive"] = out["fast"]["samples_per_s"] / out["naive"]["samples_per_s"]
    return out


def _attach_ceilings(g: dict[str, Any], ceiling: dict[str, Any], fp32: dict[str, Any] | None) -> None:
    """Give each cached, fallback and fast row of a batch its ceiling (:func:`~.report.row_ceiling`; the plain-PyTorch
    generators' is the fp32 one, ``fp32``, when the fast path runs another precision) and the share of it measured;
    ``None`` for a loaded row or ceiling, which is not compared."""
    g["ceiling"] = ceiling
    if fp32 is not None:
        g["ceiling_fp32"] = fp32
    for key, row in g.items():
        if not key.startswith(("cached", "fallback", "fast_")) or not isinstance(row, dict) or "samples_per_s" not in row:
            continue
        bound = row_ceiling(fp32 if fp32 is not None and key in ("cached", "fallback") else ceiling, row)
        row["ceiling"] = bound.get("samples_per_s")
        compared = row["ceiling"] and not merge_loads(row, bound)["loaded"]
        row["of_ceiling"] = row["samples_per_s"] / row["ceiling"] if compared else None
    if "fast" in g and "best_of" in g["fast"]:
        g["fast"].update({k: g[g["fast"]["best_of"]][k] for k in ("ceiling", "of_ceiling")})


def _naive_growth(config: WaveNetConfig, stacks: Sequence[int], run: dict[str, Any], log: _Log,
                  known: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Naive and cached samples/s at batch 1 for each stack count; ``known`` maps stack counts to naive measurements
    already made (the full model's row: ``wall_s`` per sample and its load), which are reused."""
    rows = []
    per_stack = config.n_layers // config.n_stacks
    for s in stacks:
        cfg = dataclasses.replace(config, n_layers=per_stack * s, n_stacks=s)
        torch.manual_seed(0)
        model = WaveNet(cfg).eval()
        flops = flops_per_sample(cfg)["total"]
        naive = (known or {}).get(s)
        if naive is None:
            timing = _naive_step(model, 1, run["repeats"])
            naive = {"wall_s": timing.wall_s, **timing.load.as_dict()}
        naive_wall = naive["wall_s"]
        n, cached = _plain(model, 1, run["seconds"], run["repeats"])
        row = {"n_stacks": s, "n_layers": cfg.n_layers, "receptive_field": cfg.receptive_field,
               "naive_samples_per_s": 1 / naive_wall, "naive_flops_per_sample": flops * cfg.receptive_field,
               "cached_samples_per_s": n / cached.wall_s, "cached_flops_per_sample": flops,
               "cached_vs_naive": (n / cached.wall_s) * naive_wall,
               **merge_loads(cached.load.as_dict(), naive)}
        rows.append(row)
        log(f"  naive growth: {s} stack(s), RF {cfg.receptive_field}: naive {row['naive_samples_per_s']:,.2f}, "
            f"cached {row['cached_samples_per_s']:,.1f} samples/s{log.count(row)}")
    return rows


# --------------------------------------------------------------------------------------------------- training


def _training(config: WaveNetConfig, batch: int, length: int, repeats: int, log: _Log) -> dict[str, Any]:
    """Samples/s of forward + backward + Adam steps through ``model.loss`` and through
    :func:`~wavenet_dilated.train.fused_loss.fused_loss` (the same function as matrix products)."""
    from ..train.fused_loss import fused_loss

    torch.manual_seed(0)
    model = WaveNet(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    c = config
    audio = torch.randint(0, c.n_classes, (batch, length)) if model.head.quantized else torch.rand(batch, length) * 2 - 1
    mel = torch.randn(batch, c.cond_channels, length // c.hop_length) if c.cond_channels is not None else None
    speaker = torch.zeros(batch, dtype=torch.int64) if c.n_speakers is not None else None
    flops = 3 * flops_per_sample(config)["total"]  # forward + backward ≈ 3 × forward
    out: dict[str, Any] = {"batch": batch, "length": length}
    for key, loss_fn in (("model_loss", model.loss), ("fused_loss", lambda a, m, s: fused_loss(model, a, m, s))):
        def step(loss_fn=loss_fn) -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(audio, mel, speaker).backward()
            opt.step()

        timing = time_calls(step, repeats, WARMUP)  # the warm-up also creates the allocator's blocks and Adam's state
        sps = batch * length / timing.wall_s
        out[key] = {"step_s": timing.wall_s, "samples_per_s": sps, "gflops": sps * flops / 1e9,
                    "cpu_per_wall": timing.cpu_per_wall, **timing.load.as_dict()}
        log(f"  training {batch} x {length} ({key}) {sps:,.0f} samples/s{log.count(out[key])}")
    return out

# --------------------------------------------------------------------------------------------------- entry points


def _models(presets: Sequence[str | WaveNetConfig], checkpoints: Sequence[str | os.PathLike[str]]
            ) -> list[tuple[str, WaveNetConfig, WaveNet | None, int | None]]:
    """(name, config, model or None to build with seed 0, sample rate or None when a checkpoint stores none) of each
    preset, config and checkpoint."""
    from ..checkpoint import load_checkpoint, sample_rate

    out: list[tuple[str, WaveNetConfig, WaveNet | None, int | None]] = []
    for i, preset in enumerate(presets):
        config = model_preset(preset) if isinstance(preset, str) else preset
        out.append((preset if isinstance(preset, str) else f"custom-{i}", config, None, SAMPLE_RATE))
    for path in checkpoints:
        model = WaveNet.from_checkpoint(path)  # the EMA weights when present, as sample uses
        out.append((f"checkpoint {os.fspath(path)}", model.config, model, sample_rate(load_checkpoint(path))))
    return out


def run_bench(
    presets: Sequence[str | WaveNetConfig] | None = None,
    checkpoints: Sequence[str | os.PathLike[str]] = (),
    batches: Sequence[int] | None = None,
    seconds: float = DEFAULT_SECONDS,
    quick: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    threads: Sequence[int] | None = None,
    naive: bool = True,
    train: bool = True,
    growth_stacks: Sequence[int] | None = None,
    train_shape: tuple[int, int] = (2, 8192),
    limits: bool = True,
    precision: str = "fp32",
    baseline: str | os.PathLike[str] | None = None,
    peer: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Measure everything listed in the package docstring; return a JSON-serialisable dict (see :func:`format_table`).

    Args:
        presets: preset names (``wavenet_dilated.presets``) or configs (default ``ljspeech`` and ``small``, or none
            when ``checkpoints`` are given).
        checkpoints: checkpoint files to measure as they are (their weights, config and sample rate).
        batches: generation batch sizes (default 1 and 8; 1 when ``quick``).
        seconds: target wall time of each timed generation call.
        quick: fewer measurements, same method: batch 1, the fast path only with the thread count chosen as it runs,
            no naive-growth table, 3 timed calls per number instead of 5.
        device: ``"cpu"`` (the fast path measured here is the compiled CPU loop).
        progress: print one line per measurement to stderr.
        threads: fixed thread counts of the fast path to measure beside the chosen one (default 1 and 2 where there
            are 2 cores or more; none when ``quick``).
        naive / train: measure naive generation (and its growth) / training.
        growth_stacks: stack counts for the naive-growth table (default ``1 … n_stacks``; none when ``quick``).
        train_shape: ``(batch, samples)`` of a training step.
        limits: measure this machine's FMA peak and read bandwidths and give each measurement its ceiling.
        precision: weights of the fast path: ``"fp32"``, ``"bf16"`` or ``"int8"`` (where ``fast_generate`` has them).
        baseline / peer: reference JSON files for the relative targets (:func:`~.report.read_reference`).

    Raises:
        ValueError: a bad setting, a precision this build cannot run, an unreadable reference file.
        FileNotFoundError: a checkpoint or reference file that does not exist.
    """
    if torch.device(device).type != "cpu":
        raise ValueError(f"run_bench measures generation and training on the CPU; device must be 'cpu', found "
                         f"{str(device)!r}")
    check_number("seconds", seconds, 0.0, low_open=True)
    for name, values in (("batch", batches or ()), ("threads", threads or ())):
        for value in values:
            check_int(name, value, minimum=1)
    references = {k: read_reference(v) if v is not None else None for k, v in (("baseline", baseline), ("peer", peer))}
    all_threads = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)
    if threads is None:
        threads = () if quick else all_threads
    run = {"quick": quick, "repeats": REPEATS[bool(quick)], "warmup": WARMUP, "seconds": seconds,
           "batches": list(batches or ((1,) if quick else (1, 8))), "threads": list(threads),
           "fast_threads": [None, *threads], "precision": precision, "precision_options": _precision_options(precision),
           "train_shape": list(train_shape), "convention": RTF_CONVENTION}
    models = _models(presets if presets is not None else (() if checkpoints else ("ljspeech", "small")), checkpoints)
    log = _Log(progress)
    machine = machine_info()
    log(f"machine: {machine['cpu']}, {machine['cores']} cores, {_kernel_words(machine)}, precision {precision}")
    if limits:
        machine["limits"] = machine_limits(quick, sorted({*all_threads, *threads}))
        log(format_limits(machine["limits"]))
    settings = {k: v for k, v in run.items() if k not in ("fast_threads", "precision_options")}
    run["limits"] = machine.get("limits", {})
    result: dict[str, Any] = {"machine": machine, "settings": settings, "presets": {}}
    for name, config, model, rate in models:
        if rate is None:
            log(f"{name}: no audio_config stored; its RTF assumes {SAMPLE_RATE:,} Hz")
        result["presets"][name] = _measure_preset(config, model, name, dict(run, sample_rate=rate or SAMPLE_RATE),
                                                  naive, train, () if growth_stacks is None and quick else growth_stacks,
                                                  log)
        result["presets"][name]["sample_rate_assumed"] = rate is None
    result["machine"]["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = target_rows(result, references["baseline"], references["peer"])
    result["measurements"], result["loaded_measurements"] = log.measurements, log.loaded
    if log.loaded:
        log(f"warning: other processes used the CPU during {log.loaded} of {log.measurements} measurements: their "
            "numbers understate this machine and are not compared with a ceiling")
    return result


def _measure_preset(config: WaveNetConfig, model: WaveNet | None, name: str, run: dict[str, Any], naive: bool,
                    train: bool, growth_stacks: Sequence[int] | None, log: _Log) -> dict[str, Any]:
    """One model's entry of :func:`run_bench`: its cost model, torch's throughput at its sizes, generation at each
    batch with its ceiling, naive growth with the stacks, and training."""
    log(f"{name}: RF {config.receptive_field}, {config.n_layers} layers")
    if model is None:
        torch.manual_seed(0)
        model = WaveNet(config).eval()
    flops = flops_per_sample(config)
    throughput = machine_throughput(config, run["repeats"])
    throughput["mv_bound_samples_per_s"] = throughput["mv_gflops"] * 1e9 / flops["total"]
    throughput["mm_bound_samples_per_s"] = throughput["mm_gflops"] * 1e9 / flops["total"]
    entry: dict[str, Any] = {
        "config": dataclasses.asdict(config), "receptive_field": config.receptive_field, "sample_rate":
        run["sample_rate"], "parameters": model.n_parameters, "flops_per_sample": flops, "machine": throughput,
        "generation": {},
    }
    for b in run["batches"]:
        g = _generation(model, b, run, flops["total"], naive and b == 1, log)
        ceilings = [generation_ceilings(config, flops, b, run["limits"], p, run["quick"])
                    for p in dict.fromkeys((run["precision"], "fp32"))]  # the plain-PyTorch generators run fp32
        _attach_ceilings(g, ceilings[0], ceilings[1] if len(ceilings) > 1 else None)
        entry["generation"][f"b{b}"] = g
    stacks = list(growth_stacks if growth_stacks is not None else range(1, config.n_stacks + 1))
    if naive and stacks:
        naive_b1 = entry["generation"].get("b1", {}).get("naive")
        known = {config.n_stacks: naive_b1} if naive_b1 else None
        entry["naive_growth"] = _naive_growth(config, stacks, run, log, known)
    if train:
        entry["training"] = _training(config, run["train_shape"][0], run["train_shape"][1], run["repeats"], log)
        entry["training"]["ceiling"] = training_ceiling(flops, run["limits"])
    return entry
