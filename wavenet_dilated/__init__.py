"""wavenet_dilated: WaveNet-style audio generation on an exact dilated-convolution core.

Importing the package does nothing but define names: no argv, no environment, no files.
"""

from .context import ContextModule, DilatedFrontEnd, MelContext
from .dilation import coverage, exponential_dilations, hdc_check, receptive_field, receptive_fields
from .generation import CachedGenerator, generate, naive_generate, stream_generate, to_waveform
from .layers import CausalConv1d, ConvState, DilatedConv
from .mulaw import mu_law_decode, mu_law_encode
from .presets import MODEL_PRESETS, model_preset
from .wavenet import ResidualBlock, WaveNet, WaveNetConfig

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "CachedGenerator",
    "CausalConv1d",
    "ContextModule",
    "ConvState",
    "DilatedFrontEnd",
    "MelContext",
    "DilatedConv",
    "ResidualBlock",
    "WaveNet",
    "WaveNetConfig",
    "coverage",
    "exponential_dilations",
    "generate",
    "hdc_check",
    "model_preset",
    "mu_law_decode",
    "mu_law_encode",
    "naive_generate",
    "receptive_field",
    "receptive_fields",
    "stream_generate",
    "to_waveform",
]
