"""This machine's ceilings for the benchmark: its fp32 FMA peak and read bandwidths (measured by the compiled library of
``generation/csrc/bench.cpp``), ``torch.mv``/``torch.mm`` throughput at a model's sizes, and a description of the
machine and its load."""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..wavenet import WaveNetConfig

__all__ = ["machine_throughput", "machine_limits", "stream_gbps", "machine_info", "median_time"]


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds per wall second) of ``repeats`` calls."""
    walls, utils = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        walls.append(wall)
        utils.append((time.process_time() - c0) / wall if wall > 0 else float("nan"))
    return statistics.median(walls), statistics.median(utils)


def _limits_library() -> ctypes.CDLL:
    """The benchmark's own compiled library (``csrc/bench.cpp``); raises ``KernelUnavailable`` when it cannot be built
    here."""
    from ..generation.kernel import load_library

    lib = load_library("bench.cpp", "the benchmark's machine-limits library")
    lib.wn_fma_gflops.restype = ctypes.c_double
    lib.wn_fma_gflops.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.wn_read_gbps.restype = ctypes.c_double
    lib.wn_read_gbps.argtypes = [ctypes.c_int32, ctypes.c_int64, ctypes.c_int32]
    return lib


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
    wall, _ = median_time(mv, repeats)
    mv_gflops = 2 * kR * G_ * c.n_layers / wall / 1e9
    b = torch.randn(kR, columns)
    w = weights[0]
    torch.mm(w, b)
    wall, _ = median_time(lambda: torch.mm(w, b), repeats)
    mm_gflops = 2 * kR * G_ * columns / wall / 1e9
    return {"mv_gflops": mv_gflops, "mm_gflops": mm_gflops}


def machine_limits(quick: bool = False, threads: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """This machine's ceilings, measured by the compiled library of ``csrc/bench.cpp`` for each thread count: fp32 FMA
    GFLOP/s (``fma_gflops``), read GB/s of a buffer far larger than the caches (``dram_gbps``, 256 MiB per thread) and
    of one that fits in the last-level cache (``cache_gbps``, half of it in all). ``{"error": …}`` when the library
    cannot be built here."""
    from ..generation import fast as fastgen
    from ..generation.kernel import KernelUnavailable

    try:
        lib = _limits_library()
    except KernelUnavailable as err:
        return {"error": str(err)}
    llc = fastgen.last_level_cache()
    dram = (64 if quick else 256) << 20
    out: dict[str, Any] = {"last_level_cache_bytes": llc, "fma_gflops": {}, "dram_gbps": {}, "cache_gbps": {}}
    for t in threads:
        out["fma_gflops"][t] = max(lib.wn_fma_gflops(t, 20_000_000 if quick else 100_000_000) for _ in range(2))
        out["dram_gbps"][t] = max(lib.wn_read_gbps(t, dram, 2) for _ in range(2))
        out["cache_gbps"][t] = max(lib.wn_read_gbps(t, llc // (2 * t), 20 if quick else 100) for _ in range(2))
    return out


def stream_gbps(n_bytes: int, threads: int, quick: bool = False) -> float:
    """GB/s at which ``threads`` threads read ``n_bytes`` (split between them) over and over: the rate at which a
    generation step can read its weights, whichever levels of the memory hierarchy they end up in. NaN when the
    library of ``csrc/bench.cpp`` is unavailable."""
    from ..generation.kernel import KernelUnavailable

    try:
        lib = _limits_library()
    except KernelUnavailable:
        return float("nan")
    per_thread = max(4096, n_bytes // threads)
    reps = max(3, int((0.1 if quick else 0.4) * 10e9 / (per_thread * threads)))
    return max(lib.wn_read_gbps(threads, per_thread, reps) for _ in range(2 if quick else 3))


def machine_info() -> dict[str, Any]:
    """The CPU's name, core count, torch version and threads, Python version and the load average now."""
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
