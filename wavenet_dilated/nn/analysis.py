"""Receptive fields measured from gradients: back-propagate from one output position and see which inputs it touches.

This is how the tests check that a model's real receptive field is the one :mod:`wavenet_dilated.dilation` computes,
and how the notebooks and ``wavenet-dilated rf`` show effective receptive fields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["input_gradient", "measured_extent", "zero_fraction"]


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
