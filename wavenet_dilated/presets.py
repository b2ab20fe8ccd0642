"""Named model sizes: the ones the recipe trains, the CLI reports on and the benchmark measures."""

from __future__ import annotations

from .wavenet import WaveNetConfig

__all__ = ["MODEL_PRESETS", "model_preset"]

_MEL = dict(cond_channels=80, upsample_scales=(4, 4, 4, 4), hop_length=256)

MODEL_PRESETS: dict[str, WaveNetConfig] = {
    # the LJSpeech vocoder: 3 stacks of dilations 1..512, kernel 3, μ-law 256
    "ljspeech": WaveNetConfig(n_layers=30, n_stacks=3, kernel_size=3, residual_channels=128, gate_channels=256,
                              skip_channels=128, **_MEL),
    # a mid-sized vocoder used by the benchmark
    "small": WaveNetConfig(n_layers=20, n_stacks=2, kernel_size=3, residual_channels=64, gate_channels=128,
                           skip_channels=128, **_MEL),
    # the smallest: sized to train on the bundled demo corpus on a CPU
    "demo": WaveNetConfig(n_layers=10, n_stacks=1, kernel_size=3, residual_channels=32, gate_channels=64,
                          skip_channels=64, **_MEL),
}


def model_preset(name: str) -> WaveNetConfig:
    """The :class:`WaveNetConfig` of a named preset; ``ValueError`` listing the known names otherwise."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(MODEL_PRESETS))}") from None
