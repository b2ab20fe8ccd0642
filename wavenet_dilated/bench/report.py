"""The benchmark's targets and its report: the weight bytes a generation step reads, the ceiling a machine allows
(:func:`_bound`), one row per target (:data:`TARGETS`) and the plain-text table (:func:`format_table`)."""

from __future__ import annotations

import math
from typing import Any

from ..wavenet import WaveNetConfig
from .machine import stream_gbps

__all__ = ["TARGETS", "weight_bytes_per_step", "target_rows", "format_table"]

# --------------------------------------------------------------------------------------------------- targets

#: the performance targets this benchmark reports against: (preset, measure, batch, samples/s)
TARGETS = (
    ("ljspeech", "generation", 1, 4000),
    ("ljspeech", "generation", 8, 15000),
    ("small", "generation", 1, 22050),
    ("ljspeech", "training", None, 11000),
)


def target_rows(result: dict[str, Any], configs: dict[str, WaveNetConfig], quick: bool = False) -> list[dict[str, Any]]:
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


def weight_bytes_per_step(config: WaveNetConfig, batch: int) -> int:
    """Weight bytes the fast path reads per generation step at ``batch``: the per-step matrices, plus each blocked
    layer's past-tap matrix divided by its block length (:func:`~wavenet_dilated.generation.fast.auto_block`). At batch 1
    with the weights larger than the last-level cache, every one of these bytes comes from memory each step."""
    from ..generation import fast as fastgen
    from ..nn.heads import make_head

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
