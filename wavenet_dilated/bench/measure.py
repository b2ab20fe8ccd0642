"""The benchmark's measurements: FLOPs per sample, generation (naive, cached, fast) and training samples/s, and
:func:`run_bench`, which measures everything the package docstring lists."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..generation import reference as G
from ..presets import model_preset
from ..wavenet import WaveNet, WaveNetConfig
from .machine import machine_info, machine_limits, machine_throughput, median_time
from .report import target_rows

__all__ = ["SAMPLE_RATE", "flops_per_sample", "run_bench"]

#: Hz, for the real-time factor
SAMPLE_RATE = 22050


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
    return median_time(step, repeats)


def _generation(model: WaveNet, batch: int, seconds: float, repeats: int, threads: Sequence[int], flops: int,
                naive: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from ..generation import fast as fastgen

    out: dict[str, Any] = {}
    if naive:
        wall, util = _naive_step_time(model, batch, max(1, repeats // 2))
        out["naive"] = _rate(batch, wall, flops, util, note="steady state: one forward over the receptive field per "
                             "sample")
        log(f"  b{batch} naive   {out['naive']['samples_per_s']:10.1f} samples/s")

    def cached(n: int) -> None:
        G.generate(model, seed=0, **_inputs(model, batch, n))

    n = _calibrated(cached, seconds / repeats, 8, 100_000)
    wall, util = median_time(lambda: cached(n), repeats)
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
        wall, util = median_time(lambda n=n, fast=fast: fast(n), repeats)
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
        cwall, _ = median_time(lambda n=n, cached=cached: cached(n), repeats)
        rows.append({"n_stacks": s, "n_layers": cfg.n_layers, "receptive_field": cfg.receptive_field,
                     "naive_samples_per_s": 1 / wall, "naive_flops_per_sample": flops * cfg.receptive_field,
                     "cached_samples_per_s": n / cwall, "cached_flops_per_sample": flops,
                     "cached_vs_naive": (n / cwall) * wall})
    return rows


# --------------------------------------------------------------------------------------------------- training


def _training(config: WaveNetConfig, batch: int, length: int, steps: int) -> dict[str, Any]:
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
    out: dict[str, Any] = {"batch": batch, "length": length, "steps": steps}
    for key, loss_fn in (("", model.loss), ("fused_", lambda a, m, s: fused_loss(model, a, m, s))):
        def step(loss_fn=loss_fn) -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(audio, mel, speaker).backward()
            opt.step()

        step()  # warm-up: allocator, oneDNN primitives, Adam state
        wall, util = median_time(step, steps)
        sps = batch * length / wall
        out.update({f"{key}step_s": wall, f"{key}samples_per_s": sps, f"{key}gflops": sps * flops / 1e9,
                    f"{key}cpu_per_wall": util})
    return out

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
                         f"{str(device)!r} (the CUDA-graph generator is generation.cuda_graph.CudaGraphGenerator)")
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

    machine = machine_info()
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
        result["presets"][name] = _measure_preset(config, name, batches, seconds, repeats, threads, naive, train,
                                                    growth_stacks, train_shape, log)
    result["machine"]["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = target_rows(result, configs, quick)
    return result


def _measure_preset(config: WaveNetConfig, name: str, batches: Sequence[int], seconds: float, repeats: int,
                    threads: Sequence[int], naive: bool, train: bool, growth_stacks: Sequence[int] | None,
                    train_shape: tuple[int, int], log: Callable[[str], None]) -> dict[str, Any]:
    """One preset's entry of :func:`run_bench`: its cost model, torch's throughput at its sizes, generation at each
    batch, naive growth with the stacks, and training."""
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
    return entry
