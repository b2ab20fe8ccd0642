"""Small model configurations shared by the model, generation and CLI tests."""

from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

TINY = dict(n_layers=6, n_stacks=2, kernel_size=3, residual_channels=8, gate_channels=16, skip_channels=8)
MEL = dict(cond_channels=5, upsample_scales=(2, 4), hop_length=8)
SPEAKER = dict(n_speakers=3, speaker_channels=4)


def tiny_model(seed: int = 0, **overrides) -> WaveNet:
    import torch

    torch.manual_seed(seed)
    return WaveNet(WaveNetConfig(**{**TINY, **overrides})).eval()


def random_inputs(model: WaveNet, B: int, T: int):
    """``(B, T)`` random inputs for ``model``: μ-law classes, or floats in [−1, 1) for a continuous head."""
    import torch

    if model.head.quantized:
        return torch.randint(0, model.config.n_classes, (B, T))
    return torch.rand(B, T) * 2 - 1
