"""What the command-line tests share: tiny checkpoints trained in the test, and running :func:`cli` in-process."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.cli import cli
from wavenet_dilated.mel import MelStats, log_mel
from wavenet_dilated.mulaw import mu_law_encode
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

RATE = 8000
HOP = 32
N_MELS = 10
AUDIO = AudioConfig(sample_rate=RATE, n_fft=256, hop_length=HOP, win_length=256, n_mels=N_MELS, fmin=0.0, fmax=4000.0,
                    trim_top_db=None)
NET = dict(n_layers=4, n_stacks=2, kernel_size=2, residual_channels=8, gate_channels=16, skip_channels=8)
VOCODER = dict(cond_channels=N_MELS, upsample_scales=(4, 8), hop_length=HOP)


def tone(freq: float, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def train(config: WaveNetConfig, steps: int = 4) -> tuple[WaveNet, MelStats | None, float]:
    """A few Adam steps on generated tones; returns the model, the mel stats (vocoder) and the last loss in bits."""
    torch.manual_seed(0)
    model = WaveNet(config)
    audio = torch.from_numpy(np.stack([tone(f, 20 * HOP) for f in (220.0, 330.0, 440.0, 660.0)]))
    stats = mel = None
    if config.cond_channels is not None:
        raw = log_mel(audio, AUDIO)  # (4, n_mels, 20)
        stats = MelStats.fit(list(raw))
        mel = stats.normalize(raw)
    speaker = torch.arange(4) % config.n_speakers if config.n_speakers else None
    target = mu_law_encode(audio, config.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model.loss(target, mel, speaker)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, stats, float(loss.detach()) / math.log(2)


def make_checkpoints(root: Path) -> dict[str, Path]:
    """Tiny checkpoints in ``root``: a trained vocoder (with EMA), an unconditioned model, one with speakers, one
    without audio_config."""
    out = {}
    vocoder, stats, bits = train(WaveNetConfig(**NET, **VOCODER))
    ema = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in vocoder.state_dict().items()}
    out["vocoder"] = root / "vocoder.pt"
    vocoder.save(out["vocoder"], ema=ema, audio_config=AUDIO.to_dict(), mel_stats=stats.to_dict(), step=4,
                 val_nll_bits=bits, best_val_nll_bits=bits - 0.25, train_config={"lr": 3e-3, "batch_size": 4})
    plain, _, bits = train(WaveNetConfig(**NET))
    out["plain"] = root / "plain.pt"
    plain.save(out["plain"], audio_config=AUDIO.to_dict(), step=4, val_nll_bits=bits)
    out["bare"] = root / "bare.pt"
    plain.save(out["bare"])  # no audio_config, no step
    speakers, _, _ = train(WaveNetConfig(**NET, n_speakers=3, speaker_channels=4), steps=2)
    out["speakers"] = root / "speakers.pt"
    speakers.save(out["speakers"], audio_config=AUDIO.to_dict())
    return out


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="int16")
    return data, rate



def script() -> str:
    path = Path(sys.executable).parent / "wavenet-dilated"
    if not path.exists():
        pytest.fail(f"the console script is not installed next to {sys.executable}: pip install -e .")
    return str(path)



def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)
