"""Receptive fields measured from gradients: back-propagate from one output position and see which inputs it touches.

This is how the tests check that a model's real receptive field is the one :mod:`wavenet_dilated.nn.dilation`
computes, and how the notebooks and ``wavenet-dilated rf --measure`` show effective receptive fields:
:func:`measure_stack` for a bare stack of dilated convolutions, :func:`measure_model` for a whole WaveNet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._format import format_bytes, format_count
from ..config import check_int
from . import dilation as dil
from .layers import CausalConv1d, DilatedConv

__all__ = ["MAX_MEASURE_BYTES", "MAX_MEASURE_MACS", "Measurement", "input_gradient", "measure_model", "measure_stack",
           "measure_stack_cost", "measured_extent", "zero_fraction"]

#: most memory :func:`measure_stack` and :func:`measure_model` may need (as :func:`measure_stack_cost` estimates it)
MAX_MEASURE_BYTES = 2**32
#: most multiply-adds (forward and backward) :func:`measure_stack` may need, which bounds its time
MAX_MEASURE_MACS = 2**32


def input_gradient(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    position: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``|∂ Σ_c y[0, c, position] / ∂x[0]|`` summed over input channels: one value per input position.

    Args:
        module: maps ``(B, C, *spatial)`` to ``(B, C', *spatial)`` with the same spatial size.
        input_shape: ``(C, *spatial)`` of the single input example.
        position: output position to back-propagate from; default is the centre.
        inputs: the input ``(C, *spatial)`` to use; default is standard normal noise.
        generator: random generator for the default input.

    Returns:
        A float64 tensor of shape ``spatial``.
    """
    spatial = tuple(input_shape[1:])
    if position is None:
        position = tuple(s // 2 for s in spatial)
    if len(position) != len(spatial):
        raise ValueError(f"position must have {len(spatial)} coordinates, found {len(position)}")
    param = next(iter(module.parameters()), None) if isinstance(module, nn.Module) else None
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else None
    if inputs is None:
        x = torch.randn(*input_shape, generator=generator, dtype=dtype).to(device)
    else:
        x = inputs.detach().to(dtype=dtype, device=device).clone()
    x = x.unsqueeze(0).requires_grad_(True)
    y = module(x)
    if tuple(y.shape[2:]) != spatial:
        raise ValueError(f"module must keep the spatial size {spatial}, found output shape {tuple(y.shape)}")
    index = (0, slice(None), *position)
    y[index].sum().backward()
    return x.grad[0].abs().sum(0).to(torch.float64)


def measured_extent(gradient: torch.Tensor) -> tuple[int, ...]:
    """Span (last − first + 1) of the non-zero entries along each axis: the measured receptive field."""
    nz = torch.nonzero(gradient)
    if nz.numel() == 0:
        return tuple(0 for _ in gradient.shape)
    return tuple(int(nz[:, a].max() - nz[:, a].min() + 1) for a in range(gradient.dim()))


def zero_fraction(gradient: torch.Tensor) -> float:
    """Fraction of exactly-zero entries inside the bounding box of the non-zero ones (``1 − coverage``)."""
    nz = torch.nonzero(gradient)
    if nz.numel() == 0:
        raise ValueError("the gradient is zero everywhere: nothing reaches the output")
    box = tuple(slice(int(nz[:, a].min()), int(nz[:, a].max()) + 1) for a in range(gradient.dim()))
    inside = gradient[box]
    return float((inside == 0).sum()) / inside.numel()


@dataclass(frozen=True)
class Measurement:
    """What one output's gradient shows about a stack."""

    #: the measured receptive field along each axis
    extent: tuple[int, ...]
    #: whether no later input reaches the output; ``None`` for a (non-causal) 2D stack
    causal: bool | None
    #: fraction of zero gradients inside the field (``1 − coverage``); ``None`` for a model, whose gradients are not
    #: path counts
    zero_fraction: float | None


def measure_stack_cost(kernel_size: int, receptive_field: int, n_layers: int, dims: int = 1) -> tuple[int, int]:
    """``(bytes, multiply-adds)`` that :func:`measure_stack` needs, from sizes alone (nothing is allocated).

    It runs in float64 on ``P`` input positions (``2·RF + 1``, or ``(RF + 2)²`` in 2D). Each layer keeps its padded
    input and output for the backward pass (about two arrays of ``P``), the convolution unfolds its input into
    ``k^dims`` columns per position, and a few more arrays of ``P`` hold the input and gradients; forward and backward
    take about three passes of ``P · k^dims`` multiply-adds per layer.
    """
    size = 2 * receptive_field + 1 if dims == 1 else receptive_field + 2
    positions = size**dims
    taps = kernel_size**dims
    return 8 * positions * (2 * n_layers + taps + 4), 3 * positions * taps * n_layers


def _check_cost(what: str, n_bytes: int, macs: int) -> None:
    if n_bytes > MAX_MEASURE_BYTES or macs > MAX_MEASURE_MACS:
        raise ValueError(f"{what} is too large to back-propagate through: it would need about "
                         f"{format_bytes(n_bytes)} and {format_count(macs, grouped=True)} multiply-adds; at most "
                         f"{format_bytes(MAX_MEASURE_BYTES)} and {format_count(MAX_MEASURE_MACS, grouped=True)} are allowed")


def measure_stack(kernel_size: int, dilations: Sequence[int], dims: int = 1, n_stacks: int = 1) -> Measurement:
    """Measure a stack of dilated convolutions (``dilations`` repeated ``n_stacks`` times) with one channel and
    all-ones weights.

    With all-ones weights and inputs the gradient at each input is its number of paths to the output, so its zeros
    mark gridding exactly. A 1D stack is causal (:class:`~wavenet_dilated.nn.layers.CausalConv1d`), measured from an
    output with a full receptive field before it and half of one after; a 2D stack is same-padded
    (:class:`~wavenet_dilated.nn.layers.DilatedConv`), measured from the centre.

    Raises:
        ValueError: the measurement would need more than :data:`MAX_MEASURE_BYTES` or :data:`MAX_MEASURE_MACS`
            (:func:`measure_stack_cost`); checked before anything is allocated.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, found {dims!r}")
    check_int("n_stacks", n_stacks, minimum=1)
    rf = 1 + n_stacks * (dil.receptive_field(kernel_size, dilations) - 1)  # stride 1: each stack adds its span
    side = format_count(rf, grouped=True)
    shape_text = side if dims == 1 else f"{side} x {side}"
    n_layers = len(dilations) * n_stacks
    _check_cost(f"a {dims}D receptive field of {shape_text}", *measure_stack_cost(kernel_size, rf, n_layers, dims))
    dilations = list(dilations) * n_stacks
    if dims == 1:
        layers = [CausalConv1d(1, 1, kernel_size, d, bias=False) for d in dilations]
        size, position = 2 * rf + 1, (rf - 1 + rf // 2,)
    else:
        layers = [DilatedConv(1, 1, kernel_size, d, dims=2, bias=False) for d in dilations]
        size, position = rf + 2, None
    net = nn.Sequential(*layers).double()
    for p in net.parameters():
        nn.init.ones_(p)
    shape = (1, size) if dims == 1 else (1, size, size)
    grad = input_gradient(net, shape, position=position, inputs=torch.ones(shape))
    causal = not bool(grad[position[0] + 1 :].any()) if dims == 1 else None
    return Measurement(measured_extent(grad), causal, zero_fraction(grad))


def measure_model(model: nn.Module) -> Measurement:
    """Measure a WaveNet's receptive field through the real network, with random inputs (seed 0).

    Back-propagates from one output ``t`` (with a full receptive field before it and a margin after) to the output of
    ``model.embed``, the audio path's first layer: an embedding ``(B, T, R)`` for a quantised head, a convolution
    ``(B, R, T)`` otherwise. Mel and speaker inputs, when the model takes them, are random and speaker 0.

    Raises:
        ValueError: the gradient is zero everywhere, or the measurement would need more than
            :data:`MAX_MEASURE_BYTES` (checked before anything is allocated).
    """
    config = model.config
    t = config.receptive_field + 16
    T = t + 1 + 16
    if config.hop_length:
        T = math.ceil(T / config.hop_length) * config.hop_length
    # float32, kept for the backward pass and mirrored by gradients: per layer its input unfolded into k taps, the
    # gate's pre-activations, the residual and skip outputs; then the head's logits
    per_step = 2 * config.n_layers * (config.residual_channels * (config.kernel_size + 2) + 2 * config.gate_channels
                                      + config.skip_channels) + 3 * model.head.out_channels
    _check_cost(f"the model's receptive field of {config.receptive_field} samples", 4 * T * per_step, 0)
    gen = torch.Generator().manual_seed(0)
    if model.head.quantized:
        inputs = torch.randint(0, config.n_classes, (1, T), generator=gen)
    else:
        inputs = torch.rand(1, T, generator=gen) * 2 - 1
    mel = None if config.cond_channels is None else torch.randn(1, config.cond_channels, T // config.hop_length,
                                                                 generator=gen)
    speaker = None if config.n_speakers is None else torch.zeros(1, dtype=torch.int64)
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    hook = model.embed.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(inputs, mel, speaker)
            logits[0, :, t].sum().backward()
    finally:
        hook.remove()
    g = captured[0].grad[0]
    per_time = g.abs().sum(-1) if model.head.quantized else g.abs().sum(0)
    nz = torch.nonzero(per_time)[:, 0]
    if nz.numel() == 0:
        raise ValueError("the gradient is zero everywhere (a dead network?)")
    return Measurement((t - int(nz.min()) + 1,), int(nz.max()) <= t, None)
