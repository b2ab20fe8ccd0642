"""wavenet_dilated: WaveNet-style audio generation on an exact dilated-convolution core.

Importing the package does nothing but define names: no argv, no environment, no files, and no torch. The public names
below are loaded on first use (PEP 562), so ``import wavenet_dilated.runtime`` can set up the process before torch is
imported, and ``wavenet-dilated --help`` starts in milliseconds.

Where things live (one concern per place; see the README's "Architecture" section):

- ``nn/``: the dilation arithmetic (:mod:`wavenet_dilated.nn.dilation`), causal and dilated convolutions, the context
  module, output heads;
- ``wavenet.py``, ``config.py``, ``checkpoint.py``, ``presets.py``: the model, its config and its checkpoint format;
- ``generation/``: the reference generators and the fast paths (``generate`` is the fastest exact one);
- ``vocoder.py``: :func:`load_vocoder`, a trained vocoder with its features (recording → mel → audio);
- ``data/``, ``train/``, ``cli/``: corpora and caches, the trainer, the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "MODEL_PRESETS": "presets",
    "model_preset": "presets",
    "WaveNet": "wavenet",
    "WaveNetConfig": "wavenet",
    "ResidualBlock": "wavenet",
    "CausalConv1d": "nn.layers",
    "ConvState": "nn.layers",
    "DilatedConv": "nn.layers",
    "ContextModule": "nn.context",
    "DilatedFrontEnd": "nn.context",
    "MelContext": "nn.context",
    "coverage": "nn.dilation",
    "exponential_dilations": "nn.dilation",
    "hdc_check": "nn.dilation",
    "receptive_field": "nn.dilation",
    "receptive_fields": "nn.dilation",
    "mu_law_decode": "mulaw",
    "mu_law_encode": "mulaw",
    "CachedGenerator": "generation.reference",
    "generate": "generation.fast",
    "reference_generate": "generation.reference",
    "naive_generate": "generation.reference",
    "stream_generate": "generation.reference",
    "to_waveform": "generation.reference",
    "fast_generate": "generation.fast",
    "Vocoder": "vocoder",
    "load_vocoder": "vocoder",
}
# public submodule aliases kept at the top level (``from wavenet_dilated import dilation``)
_MODULES: dict[str, str] = {"dilation": "nn.dilation"}

__all__ = [
    "CachedGenerator",
    "CausalConv1d",
    "ContextModule",
    "ConvState",
    "DilatedConv",
    "DilatedFrontEnd",
    "MODEL_PRESETS",
    "MelContext",
    "ResidualBlock",
    "WaveNet",
    "Vocoder",
    "WaveNetConfig",
    "coverage",
    "dilation",
    "exponential_dilations",
    "fast_generate",
    "generate",
    "hdc_check",
    "load_vocoder",
    "model_preset",
    "mu_law_decode",
    "mu_law_encode",
    "naive_generate",
    "receptive_field",
    "receptive_fields",
    "reference_generate",
    "stream_generate",
    "to_waveform",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _MODULES)


if TYPE_CHECKING:  # what static checkers and IDEs see
    from .generation.fast import fast_generate, generate
    from .generation.reference import CachedGenerator, naive_generate, reference_generate, stream_generate, to_waveform
    from .mulaw import mu_law_decode, mu_law_encode
    from .nn import dilation
    from .nn.context import ContextModule, DilatedFrontEnd, MelContext
    from .nn.dilation import coverage, exponential_dilations, hdc_check, receptive_field, receptive_fields
    from .nn.layers import CausalConv1d, ConvState, DilatedConv
    from .presets import MODEL_PRESETS, model_preset
    from .vocoder import Vocoder, load_vocoder
    from .wavenet import ResidualBlock, WaveNet, WaveNetConfig
