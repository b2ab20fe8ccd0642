"""Measure generation and training speed on this machine against the performance model (``DESIGN.md``).

For each model preset (or :class:`~wavenet_dilated.wavenet.WaveNetConfig`), :func:`run_bench` measures

* **FLOPs per generated sample** (the model, not the implementation): per layer ``2·(k·R·G + (G/2)·(R + S))``
  (dilated conv over ``k`` taps, then the skip and residual 1×1s on the gated ``G/2`` channels), plus the conditioning
  projection ``2·C_mel·G`` per layer when mel-conditioned, plus the output layers ``2·(S·S + S·n_out)``. A speaker
  projection is constant over time and costs nothing per sample.
* **this machine's limits** at the model's sizes, fp32: matrix-vector (``torch.mv`` over every layer's weights in turn,
  the working set of one batch-1 step) and matrix-matrix (``torch.mm`` of the conv weight by 4096 columns) GFLOP/s,
  and the samples/s they would allow (``GFLOP/s ÷ FLOPs per sample``);
* **generation** samples/s (all rows together) at each batch size for
  ``naive`` (the receptive-field recompute of :func:`~wavenet_dilated.generation.naive_generate`, measured at its steady
  state: one teacher-forced forward over the last ``RF`` inputs per sample), ``cached`` (the plain-PyTorch reference
  queue, :func:`~wavenet_dilated.generation.generate`) and ``fast`` (:func:`~wavenet_dilated.fastgen.fast_generate`
  end to end: ``fast_auto`` with the thread count chosen as it runs, ``fast_1t``, ``fast_2t`` fixed; ``fast`` repeats
  the best of them), each with the achieved GFLOP/s and the real-time factor at 22 050 Hz;
* **naive growth**: naive vs cached samples/s as the receptive field grows with the number of stacks (1, 2, 3 …);
* **training** samples/s for batch 2 × 8192 (forward + backward + Adam step, fp32), through ``model.loss`` and through
  :func:`~wavenet_dilated.fasttrain.fused_loss`;
* **the machine's ceilings** (:func:`machine_limits`): fp32 FMA GFLOP/s and read GB/s from DRAM and from the last-level
  cache, per thread count, measured by code of the same kind as the compiled generation loop (:func:`stream_gbps`
  measures the read rate of exactly the bytes a step reads);
* **targets** (:data:`TARGETS`): per target row the measured value, whether it is met, and the ceiling the machine
  allows with what sets it: FLOPs at the FMA peak against :func:`weight_bytes_per_step` read at :func:`stream_gbps`
  (generation), or 3 × the forward FLOPs at the FMA peak (training).

Times are wall-clock medians of several repeats; the load average before and after and the CPU time used per wall
second are recorded beside them, because a busy machine shows up in both.

Examples:
    >>> result = run_bench(presets=("small",), quick=True)
    >>> print(format_table(result))
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .generation import reference as G
from .presets import model_preset
from .wavenet import WaveNet, WaveNetConfig

__all__ = ["SAMPLE_RATE", "flops_per_sample", "machine_throughput", "run_bench", "format_table"]

#: Hz, for the real-time factor
SAMPLE_RATE = 22050


# --------------------------------------------------------------------------------------------------- the model


def flops_per_sample(config: WaveNetConfig) -> dict[str, int]:
    """FLOPs (multiply and add counted separately) to generate one sample at batch 1 with cached generation.

    ``per_layer = 2·(k·R·G + (G/2)·(R + S))``; ``conditioning = L·2·C_mel·G`` (0 without mel); ``output =
    2·(S·S + S·n_out)``; ``total = L·per_layer + conditioning + output``. Biases, the gate's nonlinearities and the
    sampling are O(G) and O(n_out) and not counted.
    """
    from .nn.heads import make_head

    c = config
    k, R, G_, S, L = c.kernel_size, c.residual_channels, c.gate_channels, c.skip_channels, c.n_layers
    per_layer = 2 * (k * R * G_ + (G_ // 2) * (R + S))
    conditioning = L * 2 * c.cond_channels * G_ if c.cond_channels is not None else 0
    n_out = make_head(c.output, c.n_classes, c.n_mixtures, c.log_scale_min).out_channels
    output = 2 * (S * S + S * n_out)
    return {"per_layer": per_layer, "layers": L * per_layer, "conditioning": conditioning, "output": output,
            "total": L * per_layer + conditioning + output}


# --------------------------------------------------------------------------------------------------- timing


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds per wall second) of ``repeats`` calls."""
    walls, utils = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        walls.append(wall)
        utils.append((time.process_time() - c0) / wall if wall > 0 else float("nan"))
    return statistics.median(walls), statistics.median(utils)


def _calibrated(fn: Callable[[int], Any], seconds: float, start: int, cap: int) -> int:
    """How many units ``fn(n)`` can do in about ``seconds`` (at least 1, at most ``cap``)."""
    t0 = time.perf_counter()
    fn(start)
    dt = max(time.perf_counter() - t0, 1e-6)
    return max(1, min(cap, int(start * seconds / dt)))


def _rate(samples: int, wall: float, flops: int, util: float, **extra: Any) -> dict[str, Any]:
    sps = samples / wall
    return {"samples_per_s": sps, "gflops": sps * flops / 1e9, "x_realtime": sps / SAMPLE_RATE,
            "seconds_per_audio_second": SAMPLE_RATE / sps, "n_samples": samples, "wall_s": wall,
            "cpu_per_wall": util, **extra}


# --------------------------------------------------------------------------------------------------- machine


def machine_throughput(config: WaveNetConfig, repeats: int = 5, columns: int = 4096) -> dict[str, float]:
    """fp32 GFLOP/s of ``torch.mv`` over all layers' conv weights (``G × k·R`` each, in turn: the working set of a
    batch-1 step) and of ``torch.mm`` (``G × k·R`` by ``k·R × columns``), with the current torch thread count."""
    c = config
    kR, G_ = c.kernel_size * c.residual_channels, c.gate_channels
    weights = [torch.randn(G_, kR) for _ in range(c.n_layers)]
    x = torch.randn(kR)

    def mv() -> None:
        for w in weights:
            torch.mv(w, x)

    mv()
    wall, _ = _median_time(mv, repeats)
    mv_gflops = 2 * kR * G_ * c.n_layers / wall / 1e9
    b = torch.randn(kR, columns)
    w = weights[0]
    torch.mm(w, b)
    wall, _ = _median_time(lambda: torch.mm(w, b), repeats)
    mm_gflops = 2 * kR * G_ * columns / wall / 1e9
    return {"mv_gflops": mv_gflops, "mm_gflops": mm_gflops}


def machine_limits(quick: bool = False, threads: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """This machine's ceilings, measured by the compiled kernel library for each thread count: fp32 FMA GFLOP/s
    (``fma_gflops``), read GB/s of a buffer far larger than the caches (``dram_gbps``, 256 MiB per thread) and of one
    that fits in the last-level cache (``cache_gbps``, half of it in all). ``{"error": …}`` when the library cannot be
    built here."""
    from .generation import fast as fastgen
    from .generation.kernel import KernelUnavailable, load_kernel

    try:
        lib = load_kernel()
    except KernelUnavailable as err:
        return {"error": str(err)}
    llc = fastgen._last_level_cache()
    dram = (64 if quick else 256) << 20
    out: dict[str, Any] = {"last_level_cache_bytes": llc, "fma_gflops": {}, "dram_gbps": {}, "cache_gbps": {}}
    for t in threads:
        out["fma_gflops"][t] = max(lib.wn_fma_gflops(t, 20_000_000 if quick else 100_000_000) for _ in range(2))
        out["dram_gbps"][t] = max(lib.wn_read_gbps(t, dram, 2) for _ in range(2))
        out["cache_gbps"][t] = max(lib.wn_read_gbps(t, llc // (2 * t), 20 if quick else 100) for _ in range(2))
    return out


def weight_bytes_per_step(config: WaveNetConfig, batch: int) -> int:
    """Weight bytes the fast path reads per generation step at ``batch``: the per-step matrices, plus each blocked
    layer's past-tap matrix divided by its block length (:func:`~wavenet_dilated.fastgen.auto_block`). At batch 1
    with the weights larger than the last-level cache, every one of these bytes comes from memory each step."""
    from .generation import fast as fastgen
    from .nn.heads import make_head

    c = config
    K, R, G_, S = c.kernel_size, c.residual_channels, c.gate_channels, c.skip_channels
    head = make_head(c.output, c.n_classes, c.n_mixtures, c.log_scale_min)
    blocks = fastgen.past_blocks(c.dilations, K, head.quantized, fastgen.auto_block(c, batch))
    floats = 0.0
    for i, n in enumerate(blocks):
        if i == 0 and head.quantized:
            floats += K * G_ * batch  # per-class table rows
        elif n > 1:
            floats += R * G_ + (K - 1) * R * G_ / n
        else:
            floats += K * R * G_
        floats += G_ // 2 * (S + (R if i < c.n_layers - 1 else 0))
    floats += S * S + S * head.out_channels
    return int(4 * floats)


def stream_gbps(n_bytes: int, threads: int, quick: bool = False) -> float:
    """GB/s at which ``threads`` threads read ``n_bytes`` (split between them) over and over: the rate at which a
    generation step can read its weights, whichever levels of the memory hierarchy they end up in. NaN when the
    kernel library is unavailable."""
    from .generation.kernel import KernelUnavailable, load_kernel

    try:
        lib = load_kernel()
    except KernelUnavailable:
        return float("nan")
    per_thread = max(4096, n_bytes // threads)
    reps = max(3, int((0.1 if quick else 0.4) * 10e9 / (per_thread * threads)))
    return max(lib.wn_read_gbps(threads, per_thread, reps) for _ in range(2 if quick else 3))


def _bound(samples_per_step: int, flops_per_step: float, bytes_per_step: float, fma_gflops: dict[int, float],
           read_gbps: dict[int, float], what: str) -> dict[str, Any]:
    """The best samples/s any thread count allows: each step takes at least its FLOPs at the FMA peak and its weight
    bytes at ``read_gbps`` (per thread count)."""
    best: dict[str, Any] = {"samples_per_s": 0.0}
    for t, peak in fma_gflops.items():
        compute = flops_per_step / (peak * 1e9)
        memory = bytes_per_step / (read_gbps[t] * 1e9)
        sps = samples_per_step / max(compute, memory)
        if sps > best["samples_per_s"]:
            by = f"fp32 FMA peak, {t} thread(s)" if compute >= memory else f"{what}, {t} thread(s)"
            best = {"samples_per_s": sps, "bound_by": by, "threads": t, "compute_s": compute, "memory_s": memory,
                    "read_gbps": read_gbps[t]}
    return best


def _machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


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


@torch.no_grad()
def _naive_step_time(model: WaveNet, batch: int, repeats: int) -> tuple[float, float]:
    """Seconds for one naive-generation sample at steady state: a forward over the last RF inputs + sampling."""
    c = model.config
    rf = model.receptive_field
    x = torch.randint(0, c.n_classes, (batch, rf)) if model.head.quantized else torch.rand(batch, rf) * 2 - 1
    cond = torch.randn(batch, c.cond_channels, rf) if c.cond_channels is not None else None
    speaker = torch.zeros(batch, dtype=torch.int64) if c.n_speakers is not None else None
    u = torch.rand(batch, model.head.n_uniforms)

    def step() -> None:
        logits = model(x, speaker=speaker, cond=cond)[:, :, -1]
        model.head.sample(logits, u)

    step()
    return _median_time(step, repeats)


def _generation(model: WaveNet, batch: int, seconds: float, repeats: int, threads: Sequence[int], flops: int,
                naive: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from .generation import fast as fastgen

    out: dict[str, Any] = {}
    if naive:
        wall, util = _naive_step_time(model, batch, max(1, repeats // 2))
        out["naive"] = _rate(batch, wall, flops, util, note="steady state: one forward over the receptive field per "
                             "sample")
        log(f"  b{batch} naive   {out['naive']['samples_per_s']:10.1f} samples/s")

    def cached(n: int) -> None:
        G.generate(model, seed=0, **_inputs(model, batch, n))

    n = _calibrated(cached, seconds / repeats, 8, 100_000)
    wall, util = _median_time(lambda: cached(n), repeats)
    out["cached"] = _rate(batch * n, wall, flops, util)
    log(f"  b{batch} cached  {out['cached']['samples_per_s']:10.1f} samples/s")

    ok, why = fastgen.available()
    if not ok or fastgen.unsupported_reason(model) is not None:
        out["fast"] = {"error": why if not ok else fastgen.unsupported_reason(model)}
        return out
    best = None
    for t in [None, *threads]:
        def fast(n: int, t: int | None = t) -> None:
            fastgen.fast_generate(model, seed=0, backend="cpp", threads=t, **_inputs(model, batch, n))

        n = _calibrated(fast, seconds / repeats, 64, 10_000_000)
        wall, util = _median_time(lambda n=n, fast=fast: fast(n), repeats)
        key = "fast_auto" if t is None else f"fast_{t}t"
        out[key] = _rate(batch * n, wall, flops, util, threads=t)
        log(f"  b{batch} {key:9s} {out[key]['samples_per_s']:10.1f} samples/s")
        if best is None or out[key]["samples_per_s"] > out[best]["samples_per_s"]:
            best = key
    out["fast"] = dict(out[best], best_of=best)
    if "cached" in out:
        out["fast_vs_cached"] = out["fast"]["samples_per_s"] / out["cached"]["samples_per_s"]
    if "naive" in out:
        out["cached_vs_naive"] = out["cached"]["samples_per_s"] / out["naive"]["samples_per_s"]
        out["fast_vs_naive"] = out["fast"]["samples_per_s"] / out["naive"]["samples_per_s"]
    return out


def _naive_growth(config: WaveNetConfig, stacks: Sequence[int], seconds: float, repeats: int,
                  known: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Naive and cached samples/s at batch 1 for each stack count; ``known`` maps stack counts to naive seconds per
    sample already measured (the full model's), which are reused."""
    rows = []
    per_stack = config.n_layers // config.n_stacks
    for s in stacks:
        cfg = dataclasses.replace(config, n_layers=per_stack * s, n_stacks=s)
        torch.manual_seed(0)
        model = WaveNet(cfg).eval()
        flops = flops_per_sample(cfg)["total"]
        wall = (known or {}).get(s) or _naive_step_time(model, 1, repeats)[0]

        def cached(n: int, model: WaveNet = model) -> None:
            G.generate(model, seed=0, **_inputs(model, 1, n))

        n = _calibrated(cached, seconds / repeats, 8, 100_000)
        cwall, _ = _median_time(lambda n=n, cached=cached: cached(n), repeats)
        rows.append({"n_stacks": s, "n_layers": cfg.n_layers, "receptive_field": cfg.receptive_field,
                     "naive_samples_per_s": 1 / wall, "naive_flops_per_sample": flops * cfg.receptive_field,
                     "cached_samples_per_s": n / cwall, "cached_flops_per_sample": flops,
                     "cached_vs_naive": (n / cwall) * wall})
    return rows


# --------------------------------------------------------------------------------------------------- training


def _training(config: WaveNetConfig, batch: int, length: int, steps: int) -> dict[str, Any]:
    """Samples/s of forward + backward + Adam steps through ``model.loss`` and through
    :func:`~wavenet_dilated.fasttrain.fused_loss` (the same function as matrix products)."""
    from .train.fused_loss import fused_loss

    torch.manual_seed(0)
    model = WaveNet(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    c = config
    audio = torch.randint(0, c.n_classes, (batch, length)) if model.head.quantized else torch.rand(batch, length) * 2 - 1
    mel = torch.randn(batch, c.cond_channels, length // c.hop_length) if c.cond_channels is not None else None
    speaker = torch.zeros(batch, dtype=torch.int64) if c.n_speakers is not None else None
    flops = 3 * flops_per_sample(config)["total"]  # forward + backward ≈ 3 × forward
    out: dict[str, Any] = {"batch": batch, "length": length, "steps": steps}
    for key, loss_fn in (("", model.loss), ("fused_", lambda a, m, s: fused_loss(model, a, m, s))):
        def step(loss_fn=loss_fn) -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(audio, mel, speaker).backward()
            opt.step()

        step()  # warm-up: allocator, oneDNN primitives, Adam state
        wall, util = _median_time(step, steps)
        sps = batch * length / wall
        out.update({f"{key}step_s": wall, f"{key}samples_per_s": sps, f"{key}gflops": sps * flops / 1e9,
                    f"{key}cpu_per_wall": util})
    return out


# --------------------------------------------------------------------------------------------------- targets

#: the performance targets this benchmark reports against: (preset, measure, batch, samples/s)
TARGETS = (
    ("ljspeech", "generation", 1, 4000),
    ("ljspeech", "generation", 8, 15000),
    ("small", "generation", 1, 22050),
    ("ljspeech", "training", None, 11000),
)


def _targets(result: dict[str, Any], configs: dict[str, WaveNetConfig], quick: bool = False) -> list[dict[str, Any]]:
    """One row per target whose preset was measured: the measured value, whether it is met, and the ceiling this
    machine allows (:func:`_bound`); plus the cached-vs-naive speed-up rows (reported, no target)."""
    limits = result["machine"].get("limits", {})
    rows = []
    for preset, measure, batch, target in TARGETS:
        entry = result["presets"].get(preset)
        if entry is None:
            continue
        config = configs[preset]
        flops = entry["flops_per_sample"]
        if measure == "generation":
            g = entry["generation"].get(f"b{batch}", {}).get("fast")
            if g is None or "error" in g:
                continue
            row = {"measure": f"{preset} generation, batch {batch}", "target": target, "measured": g["samples_per_s"],
                   "method": g.get("best_of")}
            if "fma_gflops" in limits:
                wb = weight_bytes_per_step(config, batch)
                gbps = {t: stream_gbps(wb, t, quick) for t in limits["fma_gflops"]}
                row["weight_bytes_per_step"] = wb
                row["bound"] = _bound(batch, batch * (flops["total"] - flops["conditioning"]), wb,
                                      limits["fma_gflops"], gbps, f"reading {wb / 1e6:.1f} MB of weights per step")
        else:
            t = entry.get("training")
            if t is None:
                continue
            measured = max(t["samples_per_s"], t["fused_samples_per_s"])
            row = {"measure": f"{preset} training, {t['batch']} x {t['length']}", "target": target,
                   "measured": measured, "method": "fused_loss" if measured == t["fused_samples_per_s"] else
                   "model.loss"}
            if "fma_gflops" in limits:
                peak = max(limits["fma_gflops"].values())
                row["bound"] = {"samples_per_s": peak * 1e9 / (3 * flops["total"]),
                                "bound_by": f"fp32 FMA peak, {max(limits['fma_gflops'], key=limits['fma_gflops'].get)}"
                                            " thread(s), at 3 x the forward FLOPs"}
        row["met"] = row["measured"] >= target
        rows.append(row)
    for name, entry in result["presets"].items():
        b1 = entry["generation"].get("b1", {})
        if "cached_vs_naive" in b1:
            rows.append({"measure": f"{name} cached vs naive, batch 1", "target": None,
                         "measured": b1["cached_vs_naive"], "met": None,
                         "growth": [(r["receptive_field"], r["cached_vs_naive"]) for r in entry.get("naive_growth", [])]})
    return rows


# --------------------------------------------------------------------------------------------------- entry points


def run_bench(
    presets: Sequence[str | WaveNetConfig] = ("ljspeech", "small"),
    batches: Sequence[int] = (1, 8),
    seconds: float = 3.0,
    quick: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    threads: Sequence[int] | None = None,
    naive: bool = True,
    train: bool = True,
    growth_stacks: Sequence[int] | None = None,
    train_shape: tuple[int, int] = (2, 8192),
    limits: bool = True,
) -> dict[str, Any]:
    """Measure everything listed in the module docstring; return a JSON-serialisable dict (see :func:`format_table`).

    Args:
        presets: preset names (``wavenet_dilated.presets``) or configs.
        batches: generation batch sizes.
        seconds: target wall time of each generation measurement (split over its repeats).
        quick: short runs (about a quarter of ``seconds``, 3 repeats, training on a quarter of the length): a rough
            answer fast.
        device: ``"cpu"`` (the fast path here is the compiled CPU loop; ``"cuda"`` is not measured by this function).
        progress: print one line per measurement to stderr.
        threads: thread counts of the fast path to measure (default 1 and 2 where there are 2 cores or more).
        naive / train: measure naive generation (and its growth) / training.
        growth_stacks: stack counts for the naive-growth table (default ``1 … n_stacks`` of each preset).
        train_shape: ``(batch, samples)`` of a training step.
        limits: measure this machine's FMA peak and read bandwidths (:func:`machine_limits`) and give each target
            row (:data:`TARGETS`) the ceiling they imply.
    """
    if torch.device(device).type != "cpu":
        raise ValueError(f"run_bench measures generation and training on the CPU; device must be 'cpu', found "
                         f"{str(device)!r} (the CUDA-graph generator is fastgen.CudaGraphGenerator)")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, found {seconds!r}")
    repeats = 3 if quick else 5
    if quick:
        seconds = seconds / 4
        train_shape = (train_shape[0], max(train_shape[1] // 4, 1))
    if threads is None:
        threads = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)

    def log(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    machine = _machine_info()
    if limits:
        machine["limits"] = machine_limits(quick, threads)
        log("machine: " + ", ".join(f"{k} {v}" for k, v in machine["limits"].items() if k != "last_level_cache_bytes"))
    result: dict[str, Any] = {
        "machine": machine,
        "settings": {"batches": list(batches), "seconds": seconds, "quick": quick, "repeats": repeats,
                     "threads": list(threads), "sample_rate": SAMPLE_RATE, "train_shape": list(train_shape)},
        "presets": {},
    }
    configs: dict[str, WaveNetConfig] = {}
    for preset in presets:
        config = model_preset(preset) if isinstance(preset, str) else preset
        name = preset if isinstance(preset, str) else f"custom-{len(result['presets'])}"
        configs[name] = config
        log(f"{name}: RF {config.receptive_field}, {config.n_layers} layers")
        torch.manual_seed(0)
        model = WaveNet(config).eval()
        flops = flops_per_sample(config)
        throughput = machine_throughput(config, repeats)
        throughput["mv_bound_samples_per_s"] = throughput["mv_gflops"] * 1e9 / flops["total"]
        throughput["mm_bound_samples_per_s"] = throughput["mm_gflops"] * 1e9 / flops["total"]
        entry: dict[str, Any] = {
            "config": dataclasses.asdict(config), "receptive_field": config.receptive_field,
            "parameters": model.n_parameters, "flops_per_sample": flops, "machine": throughput, "generation": {},
        }
        for b in batches:
            entry["generation"][f"b{b}"] = _generation(model, b, seconds, repeats, threads, flops["total"],
                                                       naive and b == 1, log)
        if naive:
            stacks = growth_stacks if growth_stacks is not None else range(1, config.n_stacks + 1)
            naive_b1 = entry["generation"].get("b1", {}).get("naive")
            known = {config.n_stacks: naive_b1["wall_s"]} if naive_b1 else None
            entry["naive_growth"] = _naive_growth(config, list(stacks), seconds / 2, max(1, repeats // 2), known)
            log("  naive growth: " + ", ".join(f"RF {r['receptive_field']}: {r['naive_samples_per_s']:.2f}/s"
                                               for r in entry["naive_growth"]))
        if train:
            entry["training"] = _training(config, train_shape[0], train_shape[1], 2)
            log(f"  training {entry['training']['samples_per_s']:.0f} samples/s")
        result["presets"][name] = entry
    result["machine"]["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = _targets(result, configs, quick)
    return result


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text report of :func:`run_bench`'s result."""
    m = result["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
             f"load avg {_fmt(m['load_avg'][0] if m.get('load_avg') else None, 1)} before, "
             f"{_fmt(m['load_avg_after'][0] if m.get('load_avg_after') else None, 1)} after"]
    lim = m.get("limits", {})
    if "fma_gflops" in lim:
        per = lambda key, unit: ", ".join(f"{_fmt(v, 1)} {unit} ({t} thr)" for t, v in lim[key].items())  # noqa: E731
        lines += [f"limits: fp32 FMA {per('fma_gflops', 'GFLOP/s')}; read from DRAM {per('dram_gbps', 'GB/s')}; "
                  f"from cache {per('cache_gbps', 'GB/s')}; last-level cache {lim['last_level_cache_bytes'] >> 20} MiB"]
    elif "error" in lim:
        lines.append(f"limits: unavailable ({lim['error']})")
    for name, e in result["presets"].items():
        f, lim = e["flops_per_sample"], e["machine"]
        lines += ["", f"{name}: RF {e['receptive_field']}, {e['parameters']:,} parameters, "
                      f"{f['total'] / 1e6:.2f} MFLOP/sample (layers {f['layers'] / 1e6:.2f}, conditioning "
                      f"{f['conditioning'] / 1e6:.2f}, output {f['output'] / 1e6:.2f})",
                  f"  machine at these sizes: mv {lim['mv_gflops']:.1f} GFLOP/s (-> {_fmt(lim['mv_bound_samples_per_s'])} "
                  f"samples/s), mm {lim['mm_gflops']:.1f} GFLOP/s (-> {_fmt(lim['mm_bound_samples_per_s'])} samples/s)",
                  f"  {'batch':>5} {'method':<9} {'samples/s':>11} {'GFLOP/s':>8} {'x realtime':>10} {'cpu/wall':>8}"]
        for bkey, g in e["generation"].items():
            for method, r in g.items():
                if not isinstance(r, dict) or method == "fast":
                    continue
                if "error" in r:
                    lines.append(f"  {bkey[1:]:>5} {method:<9} unavailable: {r['error']}")
                    continue
                lines.append(f"  {bkey[1:]:>5} {method:<9} {_fmt(r['samples_per_s'], 1):>11} {r['gflops']:>8.2f} "
                             f"{r['x_realtime']:>10.3f} {r['cpu_per_wall']:>8.2f}")
            ratios = [f"{k} {g[k]:,.1f}x" for k in ("fast_vs_cached", "cached_vs_naive", "fast_vs_naive") if k in g]
            if ratios:
                lines.append(f"  {'':>5} speed-up: " + ", ".join(ratios))
        if "naive_growth" in e:
            lines.append("  naive vs cached as the receptive field grows (batch 1):")
            lines.append(f"  {'stacks':>6} {'RF':>6} {'naive/s':>9} {'cached/s':>9} {'ratio':>7}")
            for r in e["naive_growth"]:
                lines.append(f"  {r['n_stacks']:>6} {r['receptive_field']:>6} {r['naive_samples_per_s']:>9.2f} "
                             f"{r['cached_samples_per_s']:>9.1f} {r['cached_vs_naive']:>7.1f}")
        if "training" in e:
            t = e["training"]
            for key, label in (("", "model.loss"), ("fused_", "fused_loss")):
                lines.append(f"  training {t['batch']} x {t['length']} ({label}): {t[key + 'samples_per_s']:,.0f} "
                             f"samples/s ({t[key + 'step_s']:.2f} s/step, {t[key + 'gflops']:.1f} GFLOP/s, "
                             f"cpu/wall {t[key + 'cpu_per_wall']:.2f})")
    if result.get("targets"):
        lines += ["", "targets:", f"  {'measure':<38} {'target':>8} {'measured':>9} {'met':>4} {'ceiling':>9}  limited by"]
        for r in result["targets"]:
            if r["target"] is None:
                growth = ", ".join(f"RF {rf}: {x:,.0f}x" for rf, x in r.get("growth", []))
                lines.append(f"  {r['measure']:<38} {'':>8} {_fmt(r['measured'], 1) + 'x':>9} {'':>4} {'':>9}  "
                             f"{growth}")
                continue
            b = r.get("bound", {})
            lines.append(f"  {r['measure']:<38} {_fmt(r['target']):>8} {_fmt(r['measured']):>9} "
                         f"{'yes' if r['met'] else 'no':>4} {_fmt(b.get('samples_per_s')):>9}  {b.get('bound_by', '-')}")
    return "\n".join(lines)
