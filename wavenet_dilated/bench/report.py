"""The benchmark's targets and its report: the weight bytes a generation step reads, the ceiling a machine allows
(:func:`_bound`, :func:`generation_ceilings`), one row per target (:data:`TARGETS`, :func:`target_rows`) and the
plain-text table (:func:`format_table`).

One real-time convention throughout, the one ``wavenet-dilated sample`` prints: the **real-time factor** ``RTF =
compute time ÷ duration of the audio generated`` (all batch rows together), so below 1 is faster than real time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from ..wavenet import WaveNetConfig
from .machine import format_limits, merge_loads, stream_gbps

__all__ = ["BYTES_PER_WEIGHT", "RTF_CONVENTION", "TARGETS", "Target", "format_table", "generation_ceilings",
           "read_reference", "row_ceiling", "target_rows", "training_ceiling", "weight_bytes_per_step"]

#: how the report states speed against real time (see the module docstring)
RTF_CONVENTION = "RTF = compute time / duration of the audio generated (all batch rows); below 1 is faster than real time"

#: bytes one weight takes at each precision of the generation kernel (int8: per-row scales not counted, so the
#: ceiling stays an upper bound)
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1, "w8a8": 1}
#: the arithmetic bound of w8a8 where the kernel multiplies with vpdpbusd: 4 products per lane and instruction against
#: one per fp32 FMA, at most (the instruction's throughput is not above the FMA's), so the fp32 FMA peak times 4 is an
#: upper bound of the arithmetic rate
VNNI_PRODUCTS_PER_FMA = 4

# --------------------------------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """One row of the performance issue's target table.

    ``measure`` is ``"generation"`` (the fast path at the run's precision), ``"fallback"`` (the plain-PyTorch
    generator that runs where the kernel cannot be built: the ``fallback`` measurement, or ``cached`` where the
    reference is the fallback) or ``"training"``. Without
    ``relative_to`` the target is ``value`` samples/s; with it, ``value`` times the samples/s of ``reference_measure``
    in a reference JSON (``"baseline"``: a ``bench --json`` of another build, e.g. today's main from a ``git
    worktree``; ``"peer"``: another implementation's numbers in the same shape), measured on the same machine.
    """

    preset: str
    measure: str
    batch: int | None
    value: float
    relative_to: str | None = None
    reference_measure: str | None = None
    precision: str | None = None  # the precision this row is about (None: the run's)
    note: str = ""


#: the performance issue's targets (2 threads; report the CPU and ISA beside them)
TARGETS = (
    Target("ljspeech", "generation", 1, 22050,
           note="best precision that meets the quality bound; on an AVX-512 CPU (elsewhere: the ceiling and how close)"),
    Target("ljspeech", "generation", 1, 1.5, "baseline", "ljspeech generation, batch 1", "fp32",
           note="fp32 against today's main, measured side by side"),
    Target("ljspeech", "generation", 8, 20000, note="aggregate over the batch"),
    Target("small", "generation", 1, 44100),
    Target("ljspeech", "fallback", 1, 2.0, "peer", "ljspeech generation, batch 1",
           note="without the kernel, against the peer's incremental path"),
    Target("ljspeech", "training", None, 1.3, "peer", "ljspeech training, 2 x 8192"),
)


def read_reference(path: str | os.PathLike[str]) -> dict[str, float]:
    """The fp32 samples/s per measure of a reference JSON: a ``bench --json`` result (or any JSON object with a
    ``targets`` list of ``{"measure": …, "target": …, "measured": samples/s}`` rows, e.g. a peer's numbers written by
    hand; rows with another ``precision`` than fp32 are left out).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or no such rows.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{os.fspath(path)!r} is not JSON ({err}); expected a 'bench --json' result") from None
    rows = data.get("targets") if isinstance(data, dict) else None
    rates = {r["measure"]: float(r["measured"]) for r in rows or []
             if isinstance(r, dict) and isinstance(r.get("measure"), str) and isinstance(r.get("measured"), (int, float))
             and r.get("target") is not None and r.get("precision", "fp32") == "fp32"}
    if not rates:
        raise ValueError(f"{os.fspath(path)!r} has no 'targets' rows with a measure and a measured samples/s; "
                         "expected a 'bench --json' result")
    return rates


def weight_bytes_per_step(config: WaveNetConfig, batch: int, precision: str = "fp32") -> int:
    """Weight bytes the fast path reads per generation step at ``batch``: the per-step matrices, plus each blocked
    layer's past-tap matrix divided by its block length (:func:`~wavenet_dilated.generation.fast.auto_block`). At batch 1
    with the weights larger than the last-level cache, every one of these bytes comes from memory each step. ``precision``
    sets the bytes per weight (:data:`BYTES_PER_WEIGHT`)."""
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
    return int(BYTES_PER_WEIGHT[precision] * floats)


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




def generation_ceilings(config: WaveNetConfig, flops: dict[str, int], batch: int, limits: dict[str, Any],
                        precision: str = "fp32", quick: bool = False) -> dict[str, Any]:
    """The samples/s this machine allows for generation at ``batch``: per thread count of ``limits`` (and ``"best"``),
    the step's FLOPs (conditioning excluded: the fast path projects the mel at frame rate) at the fp32 FMA peak
    against its weight bytes (:func:`weight_bytes_per_step`) read at :func:`stream_gbps` (fewer repeats when
    ``quick``), whichever is slower (:func:`_bound`); ``loaded`` when other processes used the CPU while the limits or
    the read rates were measured. ``{}`` without limits."""
    if "fma_gflops" not in limits:
        return {}
    wb = weight_bytes_per_step(config, batch, precision)
    gbps, loads = {}, [limits]
    for t in limits["fma_gflops"]:
        gbps[t], load = stream_gbps(wb, t, quick)
        loads.append(load)
    step_flops = batch * (flops["total"] - flops["conditioning"])
    if precision == "w8a8" and "vnni" in str(limits.get("int8_dot", "")):
        step_flops /= VNNI_PRODUCTS_PER_FMA
    what = f"reading {wb / 1e6:.1f} MB of {precision} weights per step"
    out: dict[str, Any] = {str(t): _bound(batch, step_flops, wb, {t: limits["fma_gflops"][t]}, gbps, what)
                           for t in limits["fma_gflops"]}
    out["best"] = _bound(batch, step_flops, wb, limits["fma_gflops"], gbps, what)
    out["weight_bytes_per_step"] = wb
    out.update(merge_loads(*loads))
    return out


def training_ceiling(flops: dict[str, int], limits: dict[str, Any]) -> dict[str, Any]:
    """Training samples/s at the fp32 FMA peak (best thread count) for 3 × the forward FLOPs; ``{}`` without limits."""
    if "fma_gflops" not in limits:
        return {}
    fma = limits["fma_gflops"]
    best = max(fma, key=fma.get)
    return {"samples_per_s": fma[best] * 1e9 / (3 * flops["total"]), "threads": best,
            "bound_by": f"fp32 FMA peak, {best} thread(s), at 3 x the forward FLOPs", **merge_loads(limits)}


def row_ceiling(ceilings: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The ceiling of one measurement from its batch's :func:`generation_ceilings`: its thread count's bound (the best
    for a thread count chosen as it runs), with the load of the ceiling's measurements."""
    bound = ceilings.get(str(row.get("threads")), ceilings.get("best", {}))
    return {**bound, "others_cores": ceilings.get("others_cores"), "loaded": ceilings.get("loaded")}


def _target_source(target: Target, entry: dict[str, Any]) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """(measure name, the measurement row or None, its ceiling) of a target in a preset's entry."""
    if target.measure == "training":
        t = entry.get("training")
        if t is None:
            return "training", None, {}
        best = max(("model_loss", "fused_loss"), key=lambda k: t[k]["samples_per_s"])
        return f"training, {t['batch']} x {t['length']}", dict(t[best], method=best), t.get("ceiling", {})
    g = entry["generation"].get(f"b{target.batch}", {})
    if target.measure == "fallback":
        row = g.get("fallback", g.get("cached"))  # the reference generator where it is the fallback
        name = f"fallback generation, batch {target.batch}"
        return name, row, row_ceiling(g.get("ceiling_fp32", g.get("ceiling", {})), row or {})
    row = g.get("fast")
    ceiling = row_ceiling(g.get("ceiling", {}), row) if row is not None and "error" not in row else {}
    return f"generation, batch {target.batch}", row, ceiling


def target_rows(result: dict[str, Any], baseline: dict[str, float] | None = None,
                peer: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per target (:data:`TARGETS`) whose preset was measured: the measured samples/s, whether the target is
    met (``None`` when it cannot be told: not measured, another precision, or no reference for a relative target; then
    ``why`` says so), its ceiling here and the share of it reached. A loaded measurement (other processes used the CPU,
    see :class:`~wavenet_dilated.bench.machine.Load`) is not compared with its ceiling, and ``why`` says so."""
    precision = result["settings"].get("precision", "fp32")
    rows = []
    for target in TARGETS:
        entry = result["presets"].get(target.preset)
        if entry is None:
            continue
        name, measured, ceiling = _target_source(target, entry)
        references = {"baseline": baseline, "peer": peer}
        unit = "samples/s" if target.relative_to is None else f"x {target.relative_to}"
        row: dict[str, Any] = {"measure": f"{target.preset} {name}", "target": target.value, "unit": unit,
                               "precision": target.precision or precision, "note": target.note, "measured": None,
                               "met": None, "ceiling": ceiling.get("samples_per_s"), "bound_by": ceiling.get("bound_by"),
                               "of_ceiling": None}
        if measured is None or "error" in measured:
            row["why"] = "not measured" + (f" ({measured['error']})" if measured else " in this run")
        elif target.precision is not None and target.precision != precision:
            row["why"] = f"measured at {precision}; run with --precision {target.precision}"
        else:
            row.update(measured=measured["samples_per_s"], method=measured.get("method"),
                       **merge_loads(measured, ceiling))
            row.update(_judge(target, row, references.get(target.relative_to or "")))
        rows.append(row)
    return rows


def _judge(target: Target, row: dict[str, Any], reference: dict[str, float] | None) -> dict[str, Any]:
    """``met``, ``of_ceiling`` and ``why`` of a measured target row."""
    out: dict[str, Any] = {}
    why = []
    if target.relative_to is None:
        out["met"] = row["measured"] >= target.value
    elif reference is None or target.reference_measure not in reference:
        why.append(f"needs the {target.relative_to}'s {target.reference_measure!r} on this machine "
                   f"(--{target.relative_to} FILE)")
    else:
        out["reference"] = reference[target.reference_measure]
        out["ratio"] = row["measured"] / out["reference"]
        out["met"] = out["ratio"] >= target.value
    if row.get("loaded"):
        why.append(f"loaded: other processes used {row['others_cores']:.2f} cores during the measurement, so the "
                   "ceiling is not compared")
    elif row["ceiling"]:
        out["of_ceiling"] = row["measured"] / row["ceiling"]
        if out["of_ceiling"] > 1:
            why.append("above the ceiling: the ceiling's assumptions do not hold on this machine")
    if why:
        out["why"] = "; ".join(why)
    return out


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def _mark(row: dict[str, Any]) -> str:
    """``*`` after a loaded measurement's numbers."""
    return "*" if row.get("loaded") else ""


def _preset_lines(name: str, e: dict[str, Any]) -> list[str]:
    f, lim = e["flops_per_sample"], e["machine"]
    rate = f"{e['sample_rate']:,} Hz" + (" (assumed: the checkpoint stores none)" if e.get("sample_rate_assumed") else "")
    lines = ["", f"{name}: RF {e['receptive_field']}, {e['parameters']:,} parameters, {rate}, "
                 f"{f['total'] / 1e6:.2f} MFLOP/sample (layers {f['layers'] / 1e6:.2f}, conditioning "
                 f"{f['conditioning'] / 1e6:.2f}, output {f['output'] / 1e6:.2f})",
             f"  machine at these sizes: mv {lim['mv_gflops']:.1f} GFLOP/s (-> {_fmt(lim['mv_bound_samples_per_s'])} "
             f"samples/s), mm {lim['mm_gflops']:.1f} GFLOP/s (-> {_fmt(lim['mm_bound_samples_per_s'])} samples/s)"
             f"{_mark(lim)}",
             f"  {'batch':>5} {'method':<9} {'samples/s':>11} {'GFLOP/s':>8} {'RTF':>9} {'cpu/wall':>8} "
             f"{'others':>6} {'of ceiling':>10}"]
    for bkey, g in e["generation"].items():
        for method, r in g.items():
            if not isinstance(r, dict) or method == "fast" or not ("samples_per_s" in r or "error" in r):
                continue
            if "error" in r:
                lines.append(f"  {bkey[1:]:>5} {method:<9} unavailable: {r['error']}")
                continue
            others = _fmt(r["others_cores"], 2) if r.get("others_cores") is not None else "?"
            lines.append(f"  {bkey[1:]:>5} {method:<9} {_fmt(r['samples_per_s'], 1) + _mark(r):>11} {r['gflops']:>8.2f} "
                         f"{r['rtf']:>9.3g} {r['cpu_per_wall']:>8.2f} {others:>6} {_percent(r.get('of_ceiling')):>10}")
        best = g.get("ceiling", {}).get("best")
        if best:
            lines.append(f"  {'':>5} ceiling {_fmt(best['samples_per_s'])} samples/s{_mark(g['ceiling'])}: "
                         f"{best['bound_by']}")
        ratios = [f"{k} {g[k]:,.1f}x" for k in ("fast_vs_cached", "cached_vs_naive", "fast_vs_naive") if k in g]
        if ratios:
            lines.append(f"  {'':>5} speed-up: " + ", ".join(ratios))
    if e.get("naive_growth"):
        lines.append("  naive vs cached as the receptive field grows (batch 1):")
        lines.append(f"  {'stacks':>6} {'RF':>6} {'naive/s':>9} {'cached/s':>9} {'ratio':>7}")
        for r in e["naive_growth"]:
            lines.append(f"  {r['n_stacks']:>6} {r['receptive_field']:>6} {r['naive_samples_per_s']:>9.2f} "
                         f"{r['cached_samples_per_s']:>9.1f} {r['cached_vs_naive']:>7.1f}{_mark(r)}")
    if "training" in e:
        t = e["training"]
        for key, label in (("model_loss", "model.loss"), ("fused_loss", "fused_loss")):
            r = t[key]
            lines.append(f"  training {t['batch']} x {t['length']} ({label}): {r['samples_per_s']:,.0f} samples/s"
                         f"{_mark(r)} ({r['step_s']:.2f} s/step, {r['gflops']:.1f} GFLOP/s, cpu/wall "
                         f"{r['cpu_per_wall']:.2f})")
    return lines


def _target_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "targets:", f"  {'measure':<38} {'target':>12} {'measured':>9} {'met':>4} {'ceiling':>9} "
                             f"{'of ceiling':>10}  limited by / why"]
    for r in rows:
        target = _fmt(r["target"]) if r["unit"] == "samples/s" else f"{r['target']:g} {r['unit']}"
        measured = _fmt(r["measured"]) + _mark(r)
        if "ratio" in r:
            measured = f"{r['ratio']:.2f}x{_mark(r)}"
        met = "?" if r["met"] is None else ("yes" if r["met"] else "no")
        lines.append(f"  {r['measure']:<38} {target:>12} {measured:>9} {met:>4} {_fmt(r['ceiling']):>9} "
                     f"{_percent(r.get('of_ceiling')):>10}  "
                     f"{'; '.join(x for x in (r.get('bound_by'), r.get('why')) if x) or '-'}")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """A plain-text report of :func:`~wavenet_dilated.bench.run_bench`'s result; measurements taken while other
    processes used the CPU are marked ``*`` and counted in a warning at the end."""
    m, s = result["machine"], result["settings"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, kernel ISA {m.get('isa', 'unknown')}, torch {m['torch']} "
             f"({m['torch_threads']} threads); precision {s.get('precision', 'fp32')}; load avg "
             f"{_fmt(m['load_avg'][0] if m.get('load_avg') else None, 1)} before, "
             f"{_fmt(m['load_avg_after'][0] if m.get('load_avg_after') else None, 1)} after",
             f"method: {'quick' if s['quick'] else 'full'} run; each number is the median of {s['repeats']} timed "
             f"calls after {s['warmup']} warm-up call(s) of about {s['seconds']:g} s; {RTF_CONVENTION}"]
    if m.get("limits"):
        lines.append(format_limits(m["limits"]))
    for name, e in result["presets"].items():
        lines += _preset_lines(name, e)
    if result.get("targets"):
        lines += _target_lines(result["targets"])
    loaded = result.get("loaded_measurements", 0)
    if loaded:
        lines += ["", f"warning: other processes used the CPU during {loaded} of {result['measurements']} measurements "
                      "(marked *): their numbers understate this machine and are not compared with a ceiling; rerun on "
                      "an idle machine"]
    return "\n".join(lines)
