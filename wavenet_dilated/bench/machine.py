"""This machine's ceilings for the benchmark: its fp32 FMA peak and read bandwidths (measured by the compiled library of
``generation/csrc/bench.cpp``), ``torch.mv``/``torch.mm`` throughput at a model's sizes, and a description of the
machine and its load."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..wavenet import WaveNetConfig

__all__ = ["LOADED_CORES", "MIN_TICKS", "Load", "LoadMeter", "Timing", "time_calls", "machine_throughput", "machine_limits",
           "stream_gbps", "machine_info", "kernel_isa", "format_limits", "merge_loads"]

#: a measurement is *loaded* when other processes (or the hypervisor, as steal time) used more than this many cores on
#: average while it ran: then its numbers understate this machine and it is not compared with a ceiling
LOADED_CORES = 0.1
#: clock ticks a measurement must last for its load to be told (shorter ones are dominated by the ticks' rounding)
MIN_TICKS = 10


# --------------------------------------------------------------------------------------------------- load


@dataclasses.dataclass(frozen=True)
class Load:
    """The CPU time other processes used during a measurement.

    ``others_cores`` is the average number of cores they kept busy (``/proc/stat`` busy time of all CPUs, steal
    included, minus this process's own CPU time, per wall second); ``None`` where ``/proc`` is missing (then
    ``loaded`` is ``None``: unknown).
    """

    wall_s: float
    others_cores: float | None
    loaded: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {"others_cores": self.others_cores, "loaded": self.loaded}


def _busy_ticks() -> tuple[int, int] | None:
    """(clock ticks all CPUs spent busy — user, nice, system, irq, softirq, steal —, ticks of this process) or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        with open("/proc/self/stat", encoding="ascii", errors="replace") as f:
            own = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9 or len(own) < 13:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])  # utime, stime


class LoadMeter:
    """A ``with`` block that measures the CPU time other processes used while it ran (:class:`Load`, in ``.load``).

    Clock ticks (``SC_CLK_TCK``, usually 10 ms) are counted per CPU, so the test allows one tick per CPU for each of
    the two readings on top of :data:`LOADED_CORES`; a block shorter than :data:`MIN_TICKS` ticks is too short to
    tell (``loaded`` is ``None``).
    """

    def __enter__(self) -> LoadMeter:
        self._t0, self._ticks0 = time.perf_counter(), _busy_ticks()
        self.load = Load(0.0, None, None)
        return self

    def __exit__(self, *exc: object) -> None:
        wall, ticks = time.perf_counter() - self._t0, _busy_ticks()
        if ticks is None or self._ticks0 is None or wall <= 0:
            self.load = Load(wall, None, None)
            return
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = max(0, (ticks[0] - self._ticks0[0]) - (ticks[1] - self._ticks0[1]))
        slack = 2 * (os.cpu_count() or 1)
        loaded = others > LOADED_CORES * wall * hz + slack if wall * hz >= MIN_TICKS else None
        self.load = Load(wall, others / hz / wall, loaded)


def merge_loads(*loads: dict[str, Any] | None) -> dict[str, Any]:
    """The load of a number computed from several measurements (``Load.as_dict()`` each): the most others used, and
    loaded when any was (unknown only when all are)."""
    known = [x for x in loads if x and x.get("loaded") is not None]
    if not known:
        return {"others_cores": None, "loaded": None}
    return {"others_cores": max(x.get("others_cores") or 0.0 for x in known), "loaded": any(x["loaded"] for x in known)}


@dataclasses.dataclass(frozen=True)
class Timing:
    """:func:`time_calls`: the median wall seconds and CPU seconds per wall second of the timed calls, and the load
    while they ran."""

    wall_s: float
    cpu_per_wall: float
    load: Load


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed: the medians and the load over the timed
    calls. Every number of the benchmark is measured this way (only ``repeats`` differs between ``quick`` and full
    runs)."""
    for _ in range(warmup):
        fn()
    walls, utils = [], []
    with LoadMeter() as meter:
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            walls.append(wall)
            utils.append((time.process_time() - c0) / wall if wall > 0 else float("nan"))
    return Timing(statistics.median(walls), statistics.median(utils), meter.load)


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


def machine_throughput(config: WaveNetConfig, repeats: int = 5, columns: int = 4096) -> dict[str, Any]:
    """fp32 GFLOP/s of ``torch.mv`` over all layers' conv weights (``G × k·R`` each, in turn: the working set of a
    batch-1 step) and of ``torch.mm`` (``G × k·R`` by ``k·R × columns``), with the current torch thread count, and
    whether other processes loaded the machine meanwhile (:func:`merge_loads`)."""
    c = config
    kR, G_ = c.kernel_size * c.residual_channels, c.gate_channels
    weights = [torch.randn(G_, kR) for _ in range(c.n_layers)]
    x = torch.randn(kR)

    def mv() -> None:
        for w in weights:
            torch.mv(w, x)

    mv_time = time_calls(mv, repeats)
    b = torch.randn(kR, columns)
    w = weights[0]
    mm_time = time_calls(lambda: torch.mm(w, b), repeats)
    return {"mv_gflops": 2 * kR * G_ * c.n_layers / mv_time.wall_s / 1e9,
            "mm_gflops": 2 * kR * G_ * columns / mm_time.wall_s / 1e9,
            **merge_loads(mv_time.load.as_dict(), mm_time.load.as_dict())}


def machine_limits(quick: bool = False, threads: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """This machine's ceilings, measured by the compiled library of ``csrc/bench.cpp`` for each thread count: fp32 FMA
    GFLOP/s (``fma_gflops``), read GB/s of a buffer far larger than the caches (``dram_gbps``, 256 MiB per thread)
    and of one that fits in the last-level cache (``cache_gbps``, half of it in all), each the best of two runs (of
    fewer FMAs and cache passes when ``quick``: the same buffers); ``others_cores`` / ``loaded`` say whether other
    processes used the CPU meanwhile (a loaded measurement understates the ceilings). ``{"error": …}`` when the
    library cannot be built here."""
    from ..generation import fast as fastgen
    from ..generation.kernel import KernelUnavailable

    try:
        lib = _limits_library()
    except KernelUnavailable as err:
        return {"error": str(err)}
    llc = fastgen.last_level_cache()
    dram = 256 << 20
    out: dict[str, Any] = {"last_level_cache_bytes": llc, "fma_gflops": {}, "dram_gbps": {}, "cache_gbps": {},
                           "int8_dot": _int8_dot()}
    with LoadMeter() as meter:
        for t in threads:
            out["fma_gflops"][t] = max(lib.wn_fma_gflops(t, 20_000_000 if quick else 100_000_000) for _ in range(2))
            out["dram_gbps"][t] = max(lib.wn_read_gbps(t, dram, 2) for _ in range(2))
            out["cache_gbps"][t] = max(lib.wn_read_gbps(t, llc // (2 * t), 20 if quick else 100) for _ in range(2))
    out.update(meter.load.as_dict())
    return out


def stream_gbps(n_bytes: int, threads: int, quick: bool = False) -> tuple[float, dict[str, Any]]:
    """GB/s at which ``threads`` threads read ``n_bytes`` (split between them) over and over: the rate at which a
    generation step can read its weights, whichever levels of the memory hierarchy they end up in; and the load
    meanwhile (:meth:`Load.as_dict`). NaN when the library of ``csrc/bench.cpp`` is unavailable."""
    from ..generation.kernel import KernelUnavailable

    try:
        lib = _limits_library()
    except KernelUnavailable:
        return float("nan"), {"others_cores": None, "loaded": None}
    per_thread = max(4096, n_bytes // threads)
    reps = max(3, int((0.1 if quick else 0.4) * 10e9 / (per_thread * threads)))
    with LoadMeter() as meter:
        gbps = max(lib.wn_read_gbps(threads, per_thread, reps) for _ in range(2 if quick else 3))
    return gbps, meter.load.as_dict()


def kernel_isa() -> str:
    """The instruction set the compiled generation kernel was built for (``"avx512"``, ``"avx2"``, ``"neon"`` …), as
    :func:`wavenet_dilated.generation.kernel.kernel_isa` reports it; ``"unknown"`` where that is not available (a
    kernel that does not report it, or none built here)."""
    from ..generation import kernel

    report = getattr(kernel, "kernel_isa", None)
    if report is None:
        return "unknown"
    try:
        return str(report())
    except (kernel.KernelUnavailable, OSError, ValueError) as err:
        return f"none ({' '.join(str(err).split())})"


def _int8_dot() -> str:
    """How the kernel's w8a8 products run here (:func:`wavenet_dilated.generation.kernel.kernel_int8_dot`), or
    ``"unknown"`` for a kernel that does not say."""
    from ..generation import kernel

    report = getattr(kernel, "kernel_int8_dot", None)
    try:
        return "unknown" if report is None else str(report())
    except (AttributeError, OSError, ValueError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """The CPU's name, core count, the kernel's ISA (:func:`kernel_isa`), torch version and threads, Python version and
    the load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": kernel_isa(), "int8_dot": _int8_dot(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def format_limits(limits: dict[str, Any]) -> str:
    """One line for :func:`machine_limits`' result: each ceiling per thread count (for progress and the table)."""
    if "error" in limits:
        return f"limits: unavailable ({limits['error']})"

    def per(key: str, unit: str) -> str:
        return ", ".join(f"{v:,.1f} {unit} ({t} thr)" for t, v in limits[key].items())

    text = (f"limits: fp32 FMA {per('fma_gflops', 'GFLOP/s')}; read from DRAM {per('dram_gbps', 'GB/s')}; from cache "
            f"{per('cache_gbps', 'GB/s')}; last-level cache {limits['last_level_cache_bytes'] >> 20} MiB")
    if limits.get("loaded"):
        text += f" [loaded: other processes used {limits['others_cores']:.2f} cores; these understate the machine]"
    return text
