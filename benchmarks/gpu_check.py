"""The one-GPU check, prepared to run in under 5 minutes: exactness and speed of CUDA generation, a bf16 training step,
and a one-GPU DDP run.

    python benchmarks/gpu_check.py                 # a table on stdout; exit status 1 when a check fails
    python benchmarks/gpu_check.py --json gpu.json

1. **Exactness**: a small model in float64 (where rounding cannot flip a sample) generates on the GPU through the
   CUDA graph (``backend="cuda_graph"``) and through the plain-PyTorch ``backend="torch"``, and on the CPU through the
   reference :class:`~wavenet_dilated.generation.reference.CachedGenerator`: the same classes for the same seed. In
   fp32 the graph replay must equal the same step run eagerly on the GPU, bit for bit.
2. **Generation speed**: the ``ljspeech`` model (fp32, random weights) through the CUDA graph at batch 1, 8 and 64,
   samples/s of all rows together (median of 3 calls after a warm-up); the ``torch`` backend at batch 1 beside it.
3. **Training speed**: forward + backward + Adam steps of ``ljspeech`` at 8 × 8192 samples in fp32 and under bf16
   autocast (median of 5 steps after 2 warm-ups).
4. **DDP**: ``torchrun --standalone --nproc_per_node=1 -m recipes.train_ljspeech`` for a few steps of a tiny model on
   the bundled demo corpus, on ``cuda``; it must exit 0 and save a checkpoint. A world of one creates no process
   group there, so a second check joins an NCCL group of one in this process and trains a small model a few steps
   wrapped in ``DistributedDataParallel``: its weights must equal those of the same steps without it (the all-reduce
   of one rank's gradients is the identity).

Without CUDA it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package is importable from a checkout without installing it

#: generation batches measured through the CUDA graph
BATCHES = (1, 8, 64)
#: samples per timed generation call (a whole number of ``ljspeech`` mel frames)
GEN_SAMPLES = 4096
#: the training step's batch and crop length on the GPU
TRAIN_SHAPE = (8, 8192)
#: the DDP run: a tiny model on 8 kHz audio, so that preprocessing and the steps take seconds
DDP_SETTINGS = [
    "audio.sample_rate=8000", "n_fft=256", "win_length=256", "hop_length=64", "n_mels=16", "fmin=0", "fmax=4000",
    "trim_top_db=None", "cond_channels=16", "upsample_scales=8,8", "n_layers=4", "n_stacks=2",
    "residual_channels=8", "gate_channels=16", "skip_channels=8", "batch_size=2", "max_time_steps=512",
    "warmup_steps=2", "val_every=None", "sample_seconds=0.02", "log_every=5", "checkpoint_every=5",
]  # fmt: skip
DDP_STEPS = 10
#: the checks, in the order they run
CHECKS = ("exactness", "generation", "training", "ddp", "nccl_ddp")


def _sync_time(fn) -> float:
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def check_exactness() -> dict:
    """Float64 samples: CUDA graph and ``torch`` backend on the GPU against the CPU reference; fp32 graph against the
    eager GPU step."""
    import torch

    from wavenet_dilated.generation import fast as FG
    from wavenet_dilated.generation import reference as G
    from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

    torch.manual_seed(0)
    config = WaveNetConfig(n_layers=10, n_stacks=2, residual_channels=32, gate_channels=64, skip_channels=32,
                           cond_channels=16, upsample_scales=(4, 4), hop_length=16, n_speakers=3, speaker_channels=8)
    cpu = WaveNet(config).double().eval()
    gpu = WaveNet(config).double().eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    mel = torch.randn(2, 16, 64, dtype=torch.float64)
    kwargs = dict(speaker=torch.tensor([0, 2]), seed=5, temperature=0.9)
    ref = G.generate(cpu, mel=mel, **kwargs)
    out = {"samples": ref.numel()}
    for backend in ("cuda_graph", "torch"):
        got = FG.fast_generate(gpu, mel=mel.cuda(), backend=backend, **kwargs).cpu()
        same = int((got == ref).all(0).long().cumprod(0).sum())  # leading steps where every row agrees
        out[backend] = {"equal": bool(torch.equal(got, ref)), "identical_leading_steps": same}
    # fp32: the captured graph replays exactly the eager step
    model32 = WaveNet(config).eval().cuda()
    cond = model32.upsample(mel.float().cuda())
    spk = model32.speaker_vector(kwargs["speaker"].cuda(), 2)
    runs = []
    for capture in (True, False):
        gen = FG.CudaGraphGenerator(model32, 2, chunk=256, capture=capture)
        runs.append(gen.run(cond.shape[2], G.UniformStream(2, 1, torch.Generator().manual_seed(5)), cond, spk))
    out["fp32_graph_equals_eager"] = bool(torch.equal(runs[0], runs[1]))
    out["ok"] = out["cuda_graph"]["equal"] and out["torch"]["equal"] and out["fp32_graph_equals_eager"]
    return out


def check_generation_speed(repeats: int = 3) -> dict:
    """``ljspeech`` samples/s through the CUDA graph per batch, and through the ``torch`` backend at batch 1."""
    import torch

    from wavenet_dilated.generation import fast as FG
    from wavenet_dilated.presets import model_preset
    from wavenet_dilated.wavenet import WaveNet

    config = model_preset("ljspeech")
    torch.manual_seed(0)
    model = WaveNet(config).eval().cuda()
    frames = GEN_SAMPLES // config.hop_length
    out = {}
    plan = [("cuda_graph", b) for b in BATCHES] + [("torch", 1)]
    for backend, batch in plan:
        mel = torch.randn(batch, config.cond_channels, frames, device="cuda")
        n = frames * config.hop_length

        def call(mel=mel, backend=backend) -> None:
            FG.fast_generate(model, mel=mel, seed=0, backend=backend)

        short = mel[:, :, : max(1, frames // 8)]
        FG.fast_generate(model, mel=short, seed=0, backend=backend)  # warm-up: capture, cuBLAS handles
        times = [_sync_time(call) for _ in range(repeats if backend == "cuda_graph" else 1)]
        rate = batch * n / statistics.median(times)
        out[f"{backend} b{batch}"] = {"samples_per_s": rate, "x_realtime": rate / 22050, "seconds": times}
    return out


def check_training_speed(steps: int = 5, warmup: int = 2) -> dict:
    """``ljspeech`` training steps (forward + backward + Adam) per second on the GPU, fp32 and bf16 autocast."""
    import torch

    from wavenet_dilated.presets import model_preset
    from wavenet_dilated.wavenet import WaveNet

    config = model_preset("ljspeech")
    B, T = TRAIN_SHAPE
    torch.manual_seed(0)
    model = WaveNet(config).cuda().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    audio = torch.randint(0, config.n_classes, (B, T), device="cuda")
    mel = torch.randn(B, config.cond_channels, T // config.hop_length, device="cuda")
    out = {"batch": B, "length": T}
    for mode in ("fp32", "bf16"):
        def step(mode=mode) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
                loss = model.loss(audio, mel)
            loss.backward()
            opt.step()

        for _ in range(warmup):
            step()
        times = [_sync_time(step) for _ in range(steps)]
        out[mode] = {"samples_per_s": B * T / statistics.median(times), "step_s": statistics.median(times)}
    return out


def check_ddp(timeout: float = 150.0) -> dict:
    """A one-GPU ``torchrun`` of the training recipe: exit status and the checkpoint it saved."""
    corpus = ROOT / "wavenet_dilated" / "data" / "demo_corpus"
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "recipes.train_ljspeech", "--preset", "demo", "--data-dir", str(corpus), "--out-dir", str(out_dir),
               "--device", "cuda", "--max-steps", str(DDP_STEPS), "--no-progress"]
        for item in DDP_SETTINGS:
            cmd += ["--set", item]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
        checkpoints = sorted(p.name for p in (out_dir / "checkpoints").glob("*.pt")) if out_dir.exists() else []
        out = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "checkpoints": checkpoints,
               "ok": proc.returncode == 0 and bool(checkpoints)}
        if not out["ok"]:
            out["tail"] = (proc.stdout[-2000:] + proc.stderr[-2000:]).strip()
        return out


def check_nccl_ddp(steps: int = 3) -> dict:
    """A few Adam steps of a small model under ``DistributedDataParallel`` in an NCCL group of one, against the same
    steps without it: equal weights."""
    import socket

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        config = WaveNetConfig(n_layers=6, n_stacks=2, residual_channels=16, gate_channels=32, skip_channels=16)
        torch.manual_seed(0)
        plain = WaveNet(config).cuda()
        wrapped = WaveNet(config).cuda()
        wrapped.load_state_dict(plain.state_dict())
        ddp = DistributedDataParallel(wrapped, device_ids=[0])
        audio = torch.randint(0, config.n_classes, (2, 1024), device="cuda")
        for net, model in ((plain, plain), (ddp, wrapped)):
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model.head.loss(net(model.shift_right(audio)), audio).backward()
                opt.step()
        same = all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), wrapped.state_dict().values()))
        return {"ok": same, "steps": steps, "weights_equal": same}
    finally:
        dist.destroy_process_group()


def _run(name: str, fn) -> dict:
    """``fn()``'s result, or ``{"ok": False, "error": …}`` when it raises (the other checks still run)."""
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # a check that crashes is a failed check, reported with the others
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    result.setdefault("ok", "error" not in result)
    result["wall_s"] = time.perf_counter() - t0
    print(f"[{name}] {'ok' if result['ok'] else 'FAILED'} in {result['wall_s']:.1f} s", flush=True)
    return result


def format_report(result: dict) -> str:
    """The results as plain-text lines."""
    lines = [f"GPU: {result['gpu']}; torch {result['torch']}"]
    ex = result["exactness"]
    if "error" not in ex:
        lines.append(f"exactness (float64, {ex['samples']} samples vs the CPU reference): cuda_graph "
                     f"{'equal' if ex['cuda_graph']['equal'] else 'DIFFERENT'}, torch "
                     f"{'equal' if ex['torch']['equal'] else 'DIFFERENT'}; fp32 graph == eager step: "
                     f"{ex['fp32_graph_equals_eager']}")
    for key, row in result["generation"].items():
        if isinstance(row, dict) and "samples_per_s" in row:
            lines.append(f"ljspeech generation {key:<15} {row['samples_per_s']:>12,.0f} samples/s "
                         f"({row['x_realtime']:.2f}x real time)")
    tr = result["training"]
    for mode in ("fp32", "bf16"):
        if mode in tr:
            lines.append(f"ljspeech training {tr['batch']} x {tr['length']} {mode:<5} "
                         f"{tr[mode]['samples_per_s']:>12,.0f} samples/s")
    ddp = result["ddp"]
    lines.append(f"DDP (torchrun, 1 GPU, {DDP_STEPS} steps): {'ok' if ddp['ok'] else 'FAILED'}"
                 + (f", {len(ddp.get('checkpoints', []))} checkpoint(s)" if ddp["ok"] else ""))
    nccl = result["nccl_ddp"]
    lines.append(f"DDP (NCCL group of one, DistributedDataParallel): {'ok' if nccl['ok'] else 'FAILED'}"
                 + (", weights equal to the same steps without DDP" if nccl.get("weights_equal") else ""))
    for name in CHECKS:
        if "error" in result[name]:
            lines.append(f"{name}: {result[name]['error']}")
        if "tail" in result[name]:
            lines.append(f"{name} output:\n{result[name]['tail']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (run it where a GPU is present)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the exactness check and the speeds
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    t0 = time.perf_counter()
    result["exactness"] = _run("exactness", check_exactness)
    result["generation"] = _run("generation", check_generation_speed)
    result["training"] = _run("training", check_training_speed)
    result["ddp"] = _run("ddp", check_ddp)
    result["nccl_ddp"] = _run("nccl_ddp", check_nccl_ddp)
    result["wall_s"] = time.perf_counter() - t0
    print(format_report(result))
    print(f"total {result['wall_s']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0 if all(result[k]["ok"] for k in CHECKS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
