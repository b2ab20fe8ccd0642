"""Convolution building blocks shared by the WaveNet stacks and the context module.

Causality lives here and nowhere else: :class:`CausalConv1d` zero-pads ``(k − 1)·d`` samples on the left, so output ``t``
sees inputs ``t − (k−1)d … t`` only. Its single-step form reads those taps from a ring buffer the caller owns
(:class:`ConvState`), which is the Fast WaveNet queue for one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from . import dilation as dil

__all__ = ["ConvState", "CausalConv1d", "DilatedConv", "check_layout", "fold_weight_norm"]


def check_layout(x: torch.Tensor, dims: int, channels: int, name: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(batch, channels, *spatial)`` with ``dims`` spatial axes, floating point."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, found {type(x).__name__}")
    if x.dim() != dims + 2:
        layout = "(batch, channels, time)" if dims == 1 else "(batch, channels, height, width)"
        raise ValueError(f"{name} must have shape {layout} ({dims + 2} dims), found shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, found {x.shape[1]} (shape {tuple(x.shape)})")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be floating point, found dtype {x.dtype}")


def fold_weight_norm(module: nn.Module) -> None:
    """Fold every weight-norm parametrisation under ``module`` into a plain weight, in place (for inference: the
    weights keep the values the parametrisation computed)."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


@dataclass
class ConvState:
    """Ring buffer of the past inputs one causal layer needs: ``buffer`` is ``(batch, channels, (k − 1)·d)``.

    ``position`` is the slot the next input will be written to. The caller creates it with
    :meth:`CausalConv1d.init_state` and passes it to every :meth:`CausalConv1d.step`; ``step`` updates it in place.
    """

    buffer: torch.Tensor
    position: int = 0


class CausalConv1d(nn.Module):
    """Dilated 1D convolution whose output at ``t`` depends only on inputs at ``≤ t``; length-preserving.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: taps ``k`` (≥ 1).
        dilation: spacing ``d`` between taps (≥ 1).
        bias: add a learned bias.
        weight_norm: reparametrise the weight with ``torch.nn.utils.parametrizations.weight_norm``.

    Shapes:
        ``forward``: ``(B, C_in, T) → (B, C_out, T)``; ``step``: ``(B, C_in, 1) → (B, C_out, 1)``.

    Examples:
        >>> conv = CausalConv1d(4, 8, kernel_size=2, dilation=4)
        >>> conv(torch.randn(3, 4, 100)).shape
        torch.Size([3, 8, 100])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        bias: bool = True,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.padding = dil.causal_padding(kernel_size, dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        if weight_norm:
            parametrizations.weight_norm(self.conv)

    @property
    def receptive_field(self) -> int:
        return self.padding + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_layout(x, 1, self.in_channels)
        return self.conv(F.pad(x, (self.padding, 0)))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ConvState:
        """A zeroed ring buffer: generation starts as if the signal were preceded by silence (zeros), exactly as the
        left padding of :meth:`forward` assumes."""
        weight = self.conv.weight
        buffer = torch.zeros(
            batch_size, self.in_channels, self.padding, device=device or weight.device, dtype=dtype or weight.dtype
        )
        return ConvState(buffer)

    def step(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        """One output sample from one new input sample ``x`` ``(B, C_in, 1)``, reading and updating ``state``.

        Equals ``forward`` on the whole sequence at the same time index (to float rounding).
        """
        if x.dim() != 3 or x.shape[2] != 1 or x.shape[1] != self.in_channels:
            raise ValueError(f"step expects (batch, {self.in_channels}, 1), found shape {tuple(x.shape)}")
        taps = self.gather_taps(x, state)
        return F.conv1d(taps, self.conv.weight, self.conv.bias)

    def gather_taps(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        """``(B, C_in, k)`` inputs at ``t − (k−1)d, …, t − d, t`` (oldest first, the weight's order); pushes ``x``."""
        if self.padding == 0:
            return x
        size = self.padding
        pos = state.position
        # slot (pos − j·d) mod size holds x[t − j·d] for j = 1..k−1; slot pos holds the oldest, x[t − (k−1)d].
        idx = [(pos - j * self.dilation) % size for j in range(self.kernel_size - 1, 0, -1)]
        past = state.buffer[:, :, idx]
        state.buffer[:, :, pos] = x[:, :, 0]
        state.position = (pos + 1) % size
        return torch.cat([past, x], dim=2)

    def remove_weight_norm(self) -> None:
        """Fold the weight-norm parametrisation into a plain weight (for inference)."""
        fold_weight_norm(self)


class DilatedConv(nn.Module):
    """Dilated convolution with "same" padding for 1D ``(B, C, T)`` or 2D ``(B, C, H, W)`` input; stride 1.

    Non-causal: every output sees ``(k−1)·d/2`` samples on both sides. Used by the context module and over mel
    spectrograms, which are known in advance.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: taps per spatial axis.
        dilation: spacing between taps.
        dims: 1 or 2.
        bias: add a learned bias.

    Examples:
        >>> DilatedConv(3, 5, 3, dilation=4, dims=2)(torch.randn(1, 3, 32, 40)).shape
        torch.Size([1, 5, 32, 40])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, dims: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, found {dims!r}")
        self.dims, self.in_channels, self.out_channels = dims, in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        left, right = dil.same_padding(kernel_size, dilation)
        self.pad = (left, right) * dims  # F.pad order: last axis first; the same split on every axis
        conv_cls = nn.Conv1d if dims == 1 else nn.Conv2d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_layout(x, self.dims, self.in_channels)
        return self.conv(F.pad(x, self.pad))
