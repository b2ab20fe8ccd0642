"""The plain-PyTorch fast generator (generation/torch_fast.py) passes the reference's exactness tests, and the GPU
check exits cleanly without a GPU."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._oracle import assert_same_samples, folded_logits
from tests._tolerance import assert_close_derived
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation import torch_fast as TF
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

ROOT = Path(__file__).resolve().parents[1]
# dilations 1 … 32 in one stack: blocked layers of every block length up to the limit, the first two not blocked
DEEP = dict(n_layers=7, n_stacks=1, residual_channels=8, gate_channels=16, skip_channels=8)


def conditioning(extra, B, T):
    mel = torch.randn(B, MEL["cond_channels"], T // MEL["hop_length"]) if "cond_channels" in extra else None
    spk = torch.arange(B) % SPEAKER["n_speakers"] if "n_speakers" in extra else None
    return mel, spk


@pytest.fixture
def small_buffers(monkeypatch):
    # chunks and history rows far shorter than the runs below: every chunk edge, block edge and history move happens
    monkeypatch.setattr(TF, "CHUNK_STEPS", 24)
    monkeypatch.setattr(TF, "HISTORY_ROWS", 10)


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}], ids=["plain", "mel", "mel+speaker"])
@pytest.mark.parametrize("B", [1, 3])
def test_logits_reproduce_forward(small_buffers, kernel_size, extra, B):
    model = tiny_model(seed=1, kernel_size=kernel_size, **DEEP, **extra)
    T = 200
    x = random_inputs(model, B, T)
    mel, spk = conditioning(extra, B, T)
    with torch.no_grad():
        full = model(x, mel, spk)
    bound = 2 * folded_logits(model, x, mel, spk)[1]  # two fp32 evaluations of the same folded network
    for block in (None, 1, 3):
        gen = TF.TorchGenerator(model, block=block)
        steps = gen.logits(gen.init_state(B), x, None if mel is None else model.upsample(mel),
                           model.speaker_vector(spk, B))
        assert_close_derived(steps, full, bound, f"logits, block {block}")


@pytest.mark.parametrize("output", ["categorical", "mol", "gaussian"])
@pytest.mark.parametrize("extra", [{}, {**MEL, **SPEAKER}], ids=["plain", "mel+speaker"])
def test_same_samples_as_the_reference(small_buffers, output, extra):
    model = tiny_model(seed=2, output=output, **DEEP, **extra)
    B, T = 2, 160
    mel, spk = conditioning(extra, B, T)
    kwargs = dict(seed=11, temperature=0.9, mel=mel, speaker=spk)
    if mel is None:
        kwargs.update(n_samples=T, batch_size=B)
    ref = G.generate(model, **kwargs)
    out = FG.fast_generate(model, backend="torch", **kwargs)
    assert out.shape == ref.shape == (B, T) and out.dtype == ref.dtype
    assert_same_samples(model, out, ref, 11, mel, spk, 0.9)
    assert not torch.equal(out[0], out[1])
    assert not torch.equal(out, FG.fast_generate(model, backend="torch", **{**kwargs, "seed": 12}))


def test_generation_in_pieces_continues_exactly(small_buffers):
    # uneven calls: blocks, chunks and history moves continue across calls, as one call of the reference
    model = tiny_model(seed=4, **DEEP, **MEL)
    B = 3
    mel = torch.randn(B, 5, 40)
    cond = model.upsample(mel)
    ref = G.generate(model, mel=mel, seed=4)
    gen = TF.TorchGenerator(model)
    state, uniforms = gen.init_state(B), G.UniformStream(B, 1, torch.Generator().manual_seed(4))
    pieces, start = [], 0
    for n in (1, 6, 23, 0, 64, 226):
        pieces.append(gen.run(state, n, uniforms, cond[:, :, start : start + n]))
        start += n
    assert state.step == 320
    assert torch.equal(torch.cat(pieces, dim=1), ref)
    assert torch.equal(state.previous, ref[:, -1])


def test_weight_norm_double_and_mel_context():
    model = tiny_model(seed=5, use_weight_norm=True, mel_context="2d", **MEL, **SPEAKER)
    with torch.no_grad():  # weight-norm gains away from 1, so that evaluating them matters
        for p in model.parameters():
            p.mul_(1.1)
    kwargs = dict(mel=torch.randn(2, 5, 12), speaker=1, seed=3)
    assert torch.equal(FG.fast_generate(model, backend="torch", **kwargs), G.generate(model, **kwargs))
    wide = tiny_model(seed=6, residual_channels=6).double()  # sizes and a dtype the compiled kernel does not take
    assert torch.equal(FG.fast_generate(wide, n_samples=50, seed=1, backend="torch"),
                       G.generate(wide, n_samples=50, seed=1))


def test_auto_falls_back_to_torch_with_one_warning(monkeypatch):
    calls = []
    original = TF.TorchGenerator.run

    def run(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TF.TorchGenerator, "run", run)
    model = tiny_model(residual_channels=6)  # the compiled kernel needs multiples of 8
    with pytest.warns(RuntimeWarning, match="plain-PyTorch") as rec:
        out = FG.fast_generate(model, n_samples=30, seed=0)
    assert len([w for w in rec if "fast generation unavailable" in str(w.message)]) == 1
    assert calls == [1]
    assert torch.equal(out, G.generate(model, n_samples=30, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FG.fast_generate(model, n_samples=30, seed=0, backend="torch")
    assert calls == [1, 1]


def test_bad_arguments():
    model = tiny_model(**MEL)
    with pytest.raises(ValueError, match="eval mode"):
        TF.TorchGenerator(tiny_model().train())
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block"):
            TF.TorchGenerator(model, block=bad)
    gen = TF.TorchGenerator(model)
    state = gen.init_state(2)
    uniforms = G.UniformStream(2, 1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="mel-conditioned"):
        gen.run(state, 5, uniforms)
    with pytest.raises(ValueError, match="cond must have shape"):
        gen.run(state, 5, uniforms, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="TorchState"):
        gen.run(G.CachedGenerator(model).init_state(2), 5, uniforms, torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="temperature"):
        gen.run(state, 5, uniforms, torch.randn(2, 5, 8), temperature=0.0)
    with pytest.raises(ValueError, match="unconditioned"):
        plain = TF.TorchGenerator(tiny_model())
        plain.run(plain.init_state(1), 3, G.UniformStream(1, 1, torch.Generator()), torch.randn(1, 5, 3))


def test_larger_model_blocks_match_reference():
    # wider than the tiny models and deep enough for full 32-step blocks at batch 1
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(n_layers=8, n_stacks=1, residual_channels=16, gate_channels=32, skip_channels=16,
                                  **MEL)).eval()
    mel = torch.randn(1, 5, 80)
    assert torch.equal(FG.fast_generate(model, mel=mel, seed=9, backend="torch"), G.generate(model, mel=mel, seed=9))


def test_gpu_check_without_cuda_exits_cleanly():
    # CUDA hidden, so the no-GPU path runs on every machine, GPU or not
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA" in lines[0]


def test_peer_benchmark_needs_a_clone(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peer.py"), "--peer", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "holds no wavenet_vocoder/wavenet.py" in proc.stderr and "Traceback" not in proc.stderr
