"""The benchmark (:mod:`wavenet_dilated.bench`, ``wavenet-dilated bench``, ``benchmarks/run.py``): its JSON fields, one
real-time convention, the loaded-machine test, the same method in quick and full runs, the targets and their ceilings.
Speeds are not asserted (they belong in the benchmark's own runs), only what the numbers are made of."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._cli import RATE, make_checkpoints, run
from tests._models import MEL, TINY
from wavenet_dilated import bench
from wavenet_dilated.bench import machine as M
from wavenet_dilated.bench import measure as measure_module
from wavenet_dilated.bench import report as R
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.presets import MODEL_PRESETS
from wavenet_dilated.wavenet import WaveNetConfig

HAVE_KERNEL = FG.available()[0]
ROOT = Path(__file__).resolve().parents[1]
#: a tiny vocoder whose channel counts the compiled loop takes (multiples of 8)
WIDE = WaveNetConfig(**{**TINY, "residual_channels": 16, "gate_channels": 32, "skip_channels": 16}, **MEL)
#: the fewest, shortest measurements: what the tests need is the numbers' make-up, not their precision
TRIM = dict(seconds=0.02, threads=(1,), naive=False, train=False, progress=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"))


# ------------------------------------------------------------------------------------------------ JSON fields


def test_bench_json_reports_machine_isa_precision_rows_and_targets(monkeypatch, ckpts, capsys):
    """The acceptance fields of ``bench --json``: CPU model, ISA, threads, precision; per measurement samples/s, RTF,
    ceiling, loaded flag; each target met or not with its ceiling (a tiny model stands in for the ``small`` preset)."""
    monkeypatch.setitem(MODEL_PRESETS, "small", WIDE)
    code, stdout, _ = run(["bench", "--quick", "--json", "--preset", "small", "--checkpoint", str(ckpts["vocoder"]),
                           "--seconds", "0.02", "--threads", "1", "--no-train", "--no-naive"], capsys)
    assert code == 0
    result = json.loads(stdout)
    machine, settings = result["machine"], result["settings"]
    assert machine["cpu"] and machine["cores"] >= 1 and isinstance(machine["isa"], str) and machine["isa"]
    assert settings["precision"] == "fp32" and settings["threads"] == [1] and settings["quick"] is True
    assert settings["convention"] == bench.RTF_CONVENTION
    assert list(result["presets"]) == ["small", f"checkpoint {ckpts['vocoder']}"]
    rows = 0
    for entry in result["presets"].values():
        for g in entry["generation"].values():
            for key, row in g.items():
                if key.startswith(("cached", "fallback", "fast_")) and isinstance(row, dict) and "samples_per_s" in row:
                    rows += 1
                    assert row["samples_per_s"] > 0 and row["loaded"] in (True, False, None)
                    # one convention: compute seconds per second of audio at the model's own rate
                    assert row["rtf"] == pytest.approx(entry["sample_rate"] / row["samples_per_s"], rel=1e-12)
                    assert "ceiling" in row and "of_ceiling" in row
                    if HAVE_KERNEL:
                        assert row["ceiling"] > 0
    assert rows >= 2 + 2 * HAVE_KERNEL
    assert result["presets"][f"checkpoint {ckpts['vocoder']}"]["sample_rate"] == RATE
    assert result["presets"][f"checkpoint {ckpts['vocoder']}"]["sample_rate_assumed"] is False
    (small_b1,) = [r for r in result["targets"] if r["measure"] == "small generation, batch 1"]
    assert small_b1["target"] == 44100 and small_b1["unit"] == "samples/s"
    if HAVE_KERNEL:
        assert small_b1["met"] == (small_b1["measured"] >= 44100) and small_b1["ceiling"] > 0
        assert small_b1["loaded"] in (True, False, None)
    assert "x realtime" not in json.dumps(result) and "x_realtime" not in json.dumps(result)


def test_table_states_one_convention_and_marks_loaded_measurements(monkeypatch):
    monkeypatch.setattr(M, "_busy_ticks", _ticks_with_others(per_call=50))  # every measurement loaded
    long_enough = {**TRIM, "seconds": 0.1}  # to tell the load: at least MIN_TICKS clock ticks per measurement
    result = bench.run_bench(presets=(WIDE,), quick=True, limits=False, **long_enough)
    assert result["loaded_measurements"] == result["measurements"] >= 1
    table = bench.format_table(result)
    assert bench.RTF_CONVENTION in table and "x realtime" not in table
    assert "warning: other processes used the CPU during" in table and "*" in table
    monkeypatch.setattr(M, "_busy_ticks", _ticks_with_others(per_call=0))  # an idle machine
    result = bench.run_bench(presets=(WIDE,), quick=True, limits=False, **long_enough)
    assert result["loaded_measurements"] == 0 and "warning" not in bench.format_table(result)


# ------------------------------------------------------------------------------------------------ the loaded machine


def _ticks_with_others(per_call: int):
    """A ``_busy_ticks`` stand-in: other processes add ``per_call`` ticks between two readings, this one none."""
    state = {"busy": 0}

    def ticks() -> tuple[int, int]:
        state["busy"] += per_call
        return state["busy"], 0

    return ticks


def test_load_meter_counts_only_other_processes(monkeypatch):
    readings = iter([(1000, 100), (1000 + 80, 100 + 60)])  # 80 busy ticks, 60 of them this process's
    monkeypatch.setattr(M, "_busy_ticks", lambda: next(readings))
    clock = iter([10.0, 11.0])  # one second
    monkeypatch.setattr(M.time, "perf_counter", lambda: next(clock))
    with M.LoadMeter() as meter:
        pass
    hz = M.os.sysconf("SC_CLK_TCK")
    assert meter.load.others_cores == pytest.approx(20 / hz)
    # loaded above LOADED_CORES, allowing one tick per CPU per reading
    assert meter.load.loaded == (20 > M.LOADED_CORES * hz + 2 * (M.os.cpu_count() or 1))
    readings = iter([(0, 0), (10 * hz, 0)])  # others kept 10 cores busy
    clock = iter([0.0, 1.0])
    with M.LoadMeter() as meter:
        pass
    assert meter.load.loaded is True and meter.load.others_cores == pytest.approx(10.0)
    readings = iter([(0, 0), (10 * hz, 0)])
    clock = iter([0.0, (M.MIN_TICKS - 1) / hz])  # too short to tell
    with M.LoadMeter() as meter:
        pass
    assert meter.load.loaded is None


def test_load_meter_sees_a_busy_process(tmp_path):
    if M._busy_ticks() is None:
        pytest.skip("no /proc/stat here: the load is unknown")
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)  # the interpreter starts
        with M.LoadMeter() as meter:
            time.sleep(1.0)  # this process idles; the other spins on a core
    finally:
        burner.kill()
        burner.wait()
    assert meter.load.loaded is True and meter.load.others_cores > 0.5


def test_unknown_load_without_proc(monkeypatch):
    monkeypatch.setattr(M, "_busy_ticks", lambda: None)
    with M.LoadMeter() as meter:
        pass
    assert meter.load.loaded is None and meter.load.others_cores is None
    assert M.merge_loads(meter.load.as_dict(), None) == {"others_cores": None, "loaded": None}
    assert M.merge_loads({"others_cores": 0.0, "loaded": False}, {"others_cores": 0.4, "loaded": True}) == \
        {"others_cores": 0.4, "loaded": True}


# ------------------------------------------------------------------------------------------------ method


@pytest.mark.parametrize("quick", [True, False])
def test_quick_and_full_runs_time_every_number_the_same_way(monkeypatch, quick):
    """Quick runs measure less with fewer repeats; every number still has one warm-up call and the median of the same
    number of timed calls, and the generation calls are sized alike."""
    calls = []
    real = M.time_calls

    def spy(fn, repeats, warmup=1):
        calls.append((repeats, warmup))
        return real(fn, repeats, warmup)

    monkeypatch.setattr(measure_module, "time_calls", spy)
    monkeypatch.setattr(M, "time_calls", spy)
    result = bench.run_bench(presets=(WIDE,), quick=quick, limits=False, growth_stacks=(1,),
                             train_shape=(2, 64), **{**TRIM, "naive": True, "train": True})
    expected = (measure_module.REPEATS[quick], measure_module.WARMUP)
    assert calls and set(calls) == {expected}
    assert result["settings"]["repeats"] == expected[0] and result["settings"]["warmup"] == expected[1]
    assert result["settings"]["seconds"] == TRIM["seconds"]  # not shortened by quick
    assert result["presets"]["custom-0"]["training"]["length"] == 64  # same shape in both
    assert list(result["presets"]["custom-0"]["generation"]) == (["b1"] if quick else ["b1", "b8"])


def test_bench_quick_returns_every_number():
    config = WaveNetConfig(**{**TINY, "residual_channels": 16, "gate_channels": 64, "skip_channels": 24},
                           cond_channels=8, upsample_scales=(2, 2), hop_length=4)
    flops = bench.flops_per_sample(config)
    R_, G_, S, k = 16, 64, 24, 3
    assert flops["per_layer"] == 2 * (k * R_ * G_ + (G_ // 2) * (R_ + S))
    assert flops["total"] == 6 * flops["per_layer"] + 6 * 2 * 8 * G_ + 2 * (S * S + S * 256)
    result = bench.run_bench(presets=(config,), batches=(1, 2), seconds=0.1, quick=True, progress=False,
                             threads=(1,), growth_stacks=(1, 2), train_shape=(2, 64))
    json.dumps(result)  # JSON-serialisable
    assert {"machine", "settings", "presets", "targets", "measurements", "loaded_measurements"} == set(result)
    if HAVE_KERNEL:
        lim = result["machine"]["limits"]
        assert all(lim[k][1] > 0 for k in ("fma_gflops", "dram_gbps", "cache_gbps")) and "loaded" in lim
    assert result["targets"] == []  # a custom config matches no target preset
    entry = result["presets"]["custom-0"]
    assert {"mv_gflops", "mm_gflops", "loaded"} <= set(entry["machine"])
    b1, b2 = entry["generation"]["b1"], entry["generation"]["b2"]
    methods = {"cached", "fast"} | ({"fast_auto", "fast_1t", "ceiling"} if HAVE_KERNEL else set())
    assert methods | {"naive"} <= set(b1) and methods <= set(b2)
    for r in (b1["naive"], b1["cached"], b2["cached"]):
        assert r["samples_per_s"] > 0 and r["gflops"] > 0 and r["rtf"] == pytest.approx(22050 / r["samples_per_s"])
    if HAVE_KERNEL:
        assert b1["fast"]["samples_per_s"] > 0 and "fast_vs_cached" in b1 and "cached_vs_naive" in b1
        assert b1["ceiling"]["best"]["samples_per_s"] > 0 and b1["ceiling"]["weight_bytes_per_step"] > 0
    assert [r["n_stacks"] for r in entry["naive_growth"]] == [1, 2]
    assert entry["naive_growth"][1]["receptive_field"] > entry["naive_growth"][0]["receptive_field"]
    t = entry["training"]
    assert t["model_loss"]["samples_per_s"] > 0 and t["fused_loss"]["samples_per_s"] > 0 and t["length"] == 64
    table = bench.format_table(result)
    assert "samples/s" in table and "receptive field grows" in table and "training" in table


def test_bad_settings_are_refused_before_measuring():
    for kwargs, message in (({"seconds": 0}, "seconds must be"), ({"threads": (0,)}, "threads must be an int >= 1"),
                            ({"batches": (1, 2.5)}, "batch must be an int"), ({"device": "cuda"}, "device must be")):
        with pytest.raises(ValueError, match=message):
            bench.run_bench(presets=(WIDE,), progress=False, **kwargs)


def test_precision_other_than_fp32_needs_a_fast_path_that_has_it(monkeypatch):
    def fp32_only(model, n_samples=None, mel=None, backend="auto", threads=None, seed=None):
        raise AssertionError("not called")

    monkeypatch.setattr(FG, "fast_generate", fp32_only)
    assert measure_module._precision_options("fp32") == {}
    with pytest.raises(ValueError, match="fp32 only"):
        measure_module._precision_options("int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        measure_module._precision_options("fp16")

    def with_precision(model, n_samples=None, precision="fp32"):
        raise AssertionError("not called")

    monkeypatch.setattr(FG, "fast_generate", with_precision)
    assert measure_module._precision_options("bf16") == {"precision": "bf16"}


def test_weight_bytes_per_step_and_ceilings(monkeypatch):
    from wavenet_dilated.presets import model_preset

    c = model_preset("small")
    L, K, R_, G_, S = 20, 3, 64, 128, 128
    floats = K * G_ * 8 + (L - 1) * K * R_ * G_ + L * (G_ // 2) * S + (L - 1) * (G_ // 2) * R_ + S * S + S * 256
    monkeypatch.setattr(FG, "auto_block", lambda config, batch: 1)  # blocking off
    assert bench.weight_bytes_per_step(c, 8) == 4 * floats
    assert bench.weight_bytes_per_step(c, 8, "bf16") == 2 * floats
    monkeypatch.undo()
    big = model_preset("ljspeech")  # blocked at batch 1: the past taps count once per block
    unblocked = 4 * (K * 256 + 29 * K * 128 * 256 + 30 * 128 * 128 + 29 * 128 * 128 + 128 * 128 + 128 * 256)
    blocked = bench.weight_bytes_per_step(big, 1)
    assert blocked < 0.7 * unblocked
    blocks = FG.past_blocks(big.dilations, K, True, FG.PAST_BLOCK)
    saved = sum(4 * (K - 1) * 128 * 256 * (1 - 1 / n) for n in blocks[1:] if n > 1)
    assert blocked == pytest.approx(unblocked - saved, abs=64)
    fma, gbps = {1: 40.0, 2: 80.0}, {1: 10.0, 2: 16.0}
    b = bench._bound(1, 8e6, 8e6, fma, gbps, "reading")  # 0.2 ms of FMAs, 0.8 / 0.5 ms of reads: two threads, memory
    assert b["threads"] == 2 and b["samples_per_s"] == pytest.approx(2000) and b["bound_by"] == "reading, 2 thread(s)"
    b = bench._bound(8, 64e6, 1e6, fma, gbps, "reading")  # compute-bound: 0.8 ms at 80 GFLOP/s
    assert b["samples_per_s"] == pytest.approx(10000) and "FMA" in b["bound_by"]
    if HAVE_KERNEL:
        gb, load = bench.stream_gbps(1 << 20, 1, quick=True)
        assert gb > 0 and "loaded" in load


# ------------------------------------------------------------------------------------------------ targets


def _result(fast: float, cached: float, loaded: bool, precision: str = "fp32") -> dict:
    """A run_bench result with the ljspeech measurements the targets read (values set here, not measured)."""
    row = {"samples_per_s": fast, "threads": 2, "others_cores": 0.9 if loaded else 0.0, "loaded": loaded}
    ceiling = {"2": {"samples_per_s": 10_000.0, "bound_by": "memory"}, "best": {"samples_per_s": 10_000.0,
               "bound_by": "memory"}, "others_cores": 0.0, "loaded": False}
    gen = {"fast": dict(row, best_of="fast_2t"), "cached": dict(row, samples_per_s=cached, threads=None),
           "ceiling": ceiling}
    training = {"batch": 2, "length": 8192, "ceiling": {},
                "model_loss": {"samples_per_s": 900.0, "loaded": False, "others_cores": 0.0},
                "fused_loss": {"samples_per_s": 1000.0, "loaded": False, "others_cores": 0.0}}
    return {"settings": {"precision": precision},
            "presets": {"ljspeech": {"generation": {"b1": gen}, "training": training}}}


def test_targets_met_relative_and_loaded():
    rows = {r["measure"]: r for r in R.target_rows(_result(fast=5000.0, cached=300.0, loaded=False))}
    b1 = [r for r in R.target_rows(_result(5000.0, 300.0, False)) if r["measure"] == "ljspeech generation, batch 1"]
    absolute = next(r for r in b1 if r["unit"] == "samples/s")
    assert absolute["met"] is False and absolute["ceiling"] == 10_000.0 and absolute["of_ceiling"] == 0.5
    relative = next(r for r in b1 if r["unit"] == "x baseline")
    assert relative["met"] is None and "--baseline FILE" in relative["why"]  # no reference: cannot tell
    assert rows["ljspeech generation, batch 8"]["met"] is None and "not measured" in rows[
        "ljspeech generation, batch 8"]["why"]
    # relative targets against reference numbers
    baseline, peer = {"ljspeech generation, batch 1": 3000.0}, {"ljspeech generation, batch 1": 100.0,
                                                                 "ljspeech training, 2 x 8192": 800.0}
    rows = R.target_rows(_result(fast=5000.0, cached=300.0, loaded=False), baseline, peer)
    relative = next(r for r in rows if r["unit"] == "x baseline")
    assert relative["ratio"] == pytest.approx(5000 / 3000) and relative["met"] is True
    fallback = next(r for r in rows if r["measure"] == "ljspeech fallback generation, batch 1")
    assert fallback["ratio"] == pytest.approx(3.0) and fallback["met"] is True
    training = next(r for r in rows if r["measure"] == "ljspeech training, 2 x 8192")
    assert training["measured"] == 1000.0 and training["method"] == "fused_loss"
    assert training["ratio"] == pytest.approx(1.25) and training["met"] is False
    # where fast_generate has a fallback backend of its own, the fallback target reads that row, not the reference's
    with_fallback = _result(fast=5000.0, cached=300.0, loaded=False)
    with_fallback["presets"]["ljspeech"]["generation"]["b1"]["fallback"] = {"samples_per_s": 700.0, "loaded": False}
    fallback = next(r for r in R.target_rows(with_fallback, baseline, peer) if "fallback" in r["measure"])
    assert fallback["measured"] == 700.0 and fallback["ratio"] == pytest.approx(7.0)
    # a loaded measurement: still judged against its target, never against its ceiling, and the row says why
    loaded = next(r for r in R.target_rows(_result(30_000.0, 300.0, loaded=True)) if r["unit"] == "samples/s")
    assert loaded["met"] is True and loaded["of_ceiling"] is None and "ceiling is not compared" in loaded["why"]
    # above the ceiling on an idle machine: the ceiling's assumptions are wrong here, and the row says so
    above = next(r for r in R.target_rows(_result(30_000.0, 300.0, loaded=False)) if r["unit"] == "samples/s")
    assert above["of_ceiling"] == 3.0 and "above the ceiling" in above["why"]
    # the fp32-vs-main row at another precision: not judged
    bf16 = next(r for r in R.target_rows(_result(5000.0, 300.0, False, "bf16"), baseline) if r["unit"] == "x baseline")
    assert bf16["met"] is None and "--precision fp32" in bf16["why"]
    assert "targets:" in "\n".join(R._target_lines(rows))


def test_read_reference(tmp_path):
    good = tmp_path / "main.json"
    good.write_text(json.dumps({"targets": [
        {"measure": "ljspeech generation, batch 1", "target": 4000, "measured": 4373.0},
        {"measure": "ljspeech cached vs naive, batch 1", "target": None, "measured": 77.0},  # a ratio: left out
        {"measure": "small generation, batch 1", "target": 44100, "measured": 9.0, "precision": "int8"},  # not fp32
    ]}))
    assert bench.read_reference(good) == {"ljspeech generation, batch 1": 4373.0}
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        bench.read_reference(bad)
    bad.write_text("[]")
    with pytest.raises(ValueError, match="no 'targets' rows"):
        bench.read_reference(bad)
    with pytest.raises(FileNotFoundError):
        bench.read_reference(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------ command line


def test_bench_errors_are_one_line_before_measuring(ckpts, tmp_path, capsys):
    code, _, err = run(["bench", "--checkpoint", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and err.count("\n") == 1 and "missing.pt" in err and "limits" not in err
    code, _, err = run(["bench", "--preset", "demo", "--baseline", str(ckpts["vocoder"])], capsys)
    assert code == 2 and err.startswith("wavenet-dilated: error:") and err.count("\n") == 1


def test_benchmarks_run_takes_the_same_flags_as_bench(monkeypatch, capsys):
    import wavenet_dilated.runtime as runtime

    monkeypatch.setattr(runtime, "apply_runtime_env", lambda: None)  # not in the test process
    spec = importlib.util.spec_from_file_location("bench_run_script", ROOT / "benchmarks" / "run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    calls = []
    monkeypatch.setattr(bench, "run_bench", lambda **kwargs: calls.append(kwargs) or {"targets": []})
    monkeypatch.setattr(bench, "format_table", lambda result: "TABLE")
    argv = ["--quick", "--preset", "small", "--checkpoint", "x.pt", "--batch", "1", "--threads", "2", "--seconds",
            "0.5", "--no-train", "--precision", "fp32"]
    assert script.main(argv) == 0
    assert run(["bench", *argv], capsys)[0] == 0
    assert calls[0] == calls[1] and calls[0]["checkpoints"] == [Path("x.pt")] and calls[0]["train"] is False
