"""wavenet_dilated: WaveNet-style audio generation on an exact dilated-convolution core.

Importing the package does nothing but define names: no argv, no environment, no files.
"""

from .dilation import coverage, exponential_dilations, hdc_check, receptive_field, receptive_fields
from .layers import CausalConv1d, ConvState, DilatedConv
from .mulaw import mu_law_decode, mu_law_encode

__version__ = "0.1.0"

__all__ = [
    "CausalConv1d",
    "ConvState",
    "DilatedConv",
    "coverage",
    "exponential_dilations",
    "hdc_check",
    "mu_law_decode",
    "mu_law_encode",
    "receptive_field",
    "receptive_fields",
]
