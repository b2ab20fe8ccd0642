"""Building blocks of the models, one job per module; the WaveNet itself is composed from them in ``wavenet.py``.

- :mod:`~wavenet_dilated.nn.dilation`: the pure arithmetic of dilated stacks (padding, receptive fields with strides,
  exponential and HDC schedules, HDC validity, gridding coverage, parameter counts); imports no torch.
- :mod:`~wavenet_dilated.nn.layers`: ``CausalConv1d`` (the one place causality lives, with its single-step ring
  buffer ``ConvState``), the same-padded ``DilatedConv`` (1D and 2D), input layout checks and weight-norm folding.
- :mod:`~wavenet_dilated.nn.context`: Yu & Koltun's ``ContextModule`` (1D and 2D, Basic and Large, identity init),
  the residual ``MelContext`` over a mel spectrogram, and the dilated VGG-style ``DilatedFrontEnd``.
- :mod:`~wavenet_dilated.nn.heads`: output heads (categorical, mixture of logistics, Gaussian): loss and sampling.
- :mod:`~wavenet_dilated.nn.analysis`: receptive fields measured from gradients (which inputs one output touches),
  the check that a model's real field is the one ``dilation`` computes.

This file imports nothing, so ``import wavenet_dilated.nn.dilation`` stays free of torch.
"""
