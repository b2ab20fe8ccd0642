"""Small model configurations shared by the model, generation and CLI tests."""

from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

TINY = dict(n_layers=6, n_stacks=2, kernel_size=3, residual_channels=8, gate_channels=16, skip_channels=8)
MEL = dict(cond_channels=5, upsample_scales=(2, 4), hop_length=8)
SPEAKER = dict(n_speakers=3, speaker_channels=4)


def tiny_model(seed: int = 0, **overrides) -> WaveNet:
    import torch

    torch.manual_seed(seed)
    return WaveNet(WaveNetConfig(**{**TINY, **overrides})).eval()
