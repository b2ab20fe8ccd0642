"""Yu & Koltun's context module (1D and 2D), a small dilated VGG-style front-end, and a residual mel-context block.

The context module (Yu & Koltun, *Multi-Scale Context Aggregation by Dilated Convolutions*, 2015) is a stack of 3×3
convolutions with dilations 1, 1, 2, 4, 8, 16, 1, a ReLU after each, then a 1×1 convolution: 8 layers, receptive field
3, 5, 9, 17, 33, 65, 67, 67. It maps C feature maps to C feature maps at the same resolution, so it can be appended to
any dense-prediction network. Because plain random initialisation trains poorly, it starts as the identity
(:func:`identity_init_`): on its first step the network it is appended to is unchanged.

:class:`MelContext` is the same stack in residual form, ``x + f(x)`` with ``f``'s last 1×1 zero-initialised, for a
WaveNet's mel conditioning: log-mels are mostly negative and an identity-initialised stack with ReLUs would zero them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_int
from . import dilation as dil
from .layers import DilatedConv, check_layout

__all__ = [
    "CONTEXT_DILATIONS",
    "ContextModule",
    "DilatedFrontEnd",
    "MelContext",
    "identity_init_",
    "large_width_multipliers",
]

#: Yu & Koltun's dilations for the seven 3×3 layers of the context module (the 8th layer is a 1×1).
CONTEXT_DILATIONS: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1)

_VARIANTS = ("basic", "large")
_INITS = ("identity", "random")


def _check_dims(dims: object) -> int:
    if dims not in (1, 2) or isinstance(dims, bool):
        raise ValueError(f"dims must be 1 or 2, found {dims!r}")
    return int(dims)  # type: ignore[arg-type]


def _check_dilations(dilations: object) -> tuple[int, ...]:
    if isinstance(dilations, (int, str, bytes)) or not isinstance(dilations, Sequence):
        raise ValueError(f"dilations must be a non-empty sequence of ints >= 1, found {dilations!r}")
    if len(dilations) == 0:
        raise ValueError("dilations must name at least one layer, found an empty sequence")
    for d in dilations:
        check_int("each dilation", d, minimum=1)
    return tuple(dilations)


def _check_odd_kernel(kernel_size: object) -> int:
    check_int("kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:  # type: ignore[operator]
        # an even kernel has no centre tap: same padding cannot centre it and eq. 4's t = 0 does not exist
        raise ValueError(f"kernel_size must be odd (so a centre tap exists), found {kernel_size}")
    return kernel_size  # type: ignore[return-value]


def large_width_multipliers(dilations: Sequence[int]) -> tuple[int, ...]:
    """Widths of the Large context module's 3×3 layers, in multiples of ``C``: ``2 · max(r_1, …, r_i)``.

    For Yu & Koltun's rates this is the paper's 2, 2, 4, 8, 16, 32, 32 (the final 1×1 goes back to ``C``): a layer is
    twice as wide as the largest dilation reached so far, so width grows with the scale of context being aggregated
    and stays flat when the rates come back down. Every width is a whole multiple of ``C``, which eq. 5's group
    matching needs to be exact.

    Examples:
        >>> large_width_multipliers((1, 1, 2, 4, 8, 16, 1))
        (2, 2, 4, 8, 16, 32, 32)
    """
    rates = _check_dilations(dilations)
    out, top = [], 0
    for r in rates:
        top = max(top, r)
        out.append(2 * top)
    return tuple(out)


@torch.no_grad()
def identity_init_(conv: nn.Conv1d | nn.Conv2d, channels: int, noise_std: float = 0.0) -> None:
    """Yu & Koltun's identity initialisation of one convolution, in place (eq. 4 and eq. 5).

    With ``c_in`` input and ``c_out`` output maps, ``C = channels`` and ``t = 0`` the centre tap::

        k^b(t, a) = C / c_out   if t = 0 and ⌊a·C / c_in⌋ = ⌊b·C / c_out⌋
                    ε ~ N(0, noise_std²)   otherwise

    and zero biases. When ``c_in = c_out = C`` and ``noise_std = 0`` this is eq. 4, ``1[t=0]·1[a=b]``.

    Why it is the identity: group ``j`` of a layer is the ``c/C`` consecutive maps with ``⌊a·C/c⌋ = j``. If the maps of
    group ``j`` sum to ``v_j`` (the j-th input map, non-negative), every output map of group ``j`` gets
    ``(C/c_out)·v_j`` and the ``c_out/C`` of them again sum to ``v_j``: the stack carries each input map split evenly
    across its group, ReLUs see only non-negative values, and the final ``C``-map layer (group size 1) restores
    ``v_j``. This needs ``c_in`` and ``c_out`` to be whole multiples of ``C``.

    Args:
        conv: a ``Conv1d``/``Conv2d`` with an odd kernel.
        channels: ``C``, the width the stack starts and ends with.
        noise_std: ``σ`` of the noise on the unmatched weights; keep ``σ ≪ C / c_out``.
    """
    c_out, c_in = conv.weight.shape[:2]
    for name, c in (("in_channels", c_in), ("out_channels", c_out)):
        if c % channels:
            raise ValueError(f"identity init needs {name} to be a multiple of channels={channels}, found {c}")
    if noise_std < 0 or not math.isfinite(noise_std):
        raise ValueError(f"noise_std must be finite and >= 0, found {noise_std!r}")
    centre = tuple(k // 2 for k in conv.weight.shape[2:])
    a = torch.arange(c_in) * channels // c_in
    b = torch.arange(c_out) * channels // c_out
    matched = (b[:, None] == a[None, :]).to(conv.weight.dtype)  # (c_out, c_in)
    weight = torch.zeros_like(conv.weight)
    if noise_std > 0:
        weight.normal_(0.0, noise_std)
    at_centre = (slice(None), slice(None), *centre)
    weight[at_centre] = weight[at_centre] * (1 - matched) + matched * (channels / c_out)
    conv.weight.copy_(weight)
    if conv.bias is not None:
        conv.bias.zero_()


class ContextModule(nn.Module):
    """Yu & Koltun's context module: dilated 3×3 convolutions with ReLUs, then a 1×1; ``C`` maps in and out.

    Args:
        channels: ``C``, feature maps in and out (the number of classes when appended to a segmentation front-end).
        dims: 2 for images ``(B, C, H, W)`` (the paper), 1 for sequences ``(B, C, T)``.
        variant: ``"basic"`` (``C`` maps in every layer) or ``"large"`` (widths ``C · large_width_multipliers``, i.e.
            2C, 2C, 4C, 8C, 16C, 32C, 32C for the default rates, then ``C``).
        dilations: rates of the same-padded ``kernel_size`` layers; a 1×1 layer follows them.
        kernel_size: taps per axis of the dilated layers (odd).
        init: ``"identity"`` (eq. 4 for Basic, eq. 5 for Large, see :func:`identity_init_`) or ``"random"`` (PyTorch's
            default initialisation, for comparison).
        noise_std: ``σ`` of eq. 5's noise on the unmatched weights of the Large variant; must stay ``≪ C / c_{i+1}``
            (``1/32`` at the widest layer by default). Ignored for Basic, whose eq. 4 has no noise.
        width_multipliers: Large only: override the widths of the dilated layers, in whole multiples of ``C``.

    Shapes:
        ``(B, C, T) → (B, C, T)`` for ``dims=1``; ``(B, C, H, W) → (B, C, H, W)`` for ``dims=2``.

    With ``init="identity"`` the module maps any non-negative input to itself (exactly for Basic and for Large with
    ``noise_std=0``); a negative input is zeroed by the first ReLU, which is why a front-end's scores are fed through a
    softmax (or ReLU) first, and why :class:`MelContext` uses a residual form instead.

    Examples:
        >>> m = ContextModule(21, dims=2)
        >>> m.receptive_field, len(m.layers)
        (67, 8)
        >>> x = torch.rand(2, 21, 64, 64)
        >>> torch.equal(m(x), x)
        True
        >>> ContextModule(4, dims=1, variant="large").widths
        (8, 8, 16, 32, 64, 128, 128, 4)
    """

    def __init__(
        self,
        channels: int,
        dims: int = 2,
        variant: str = "basic",
        dilations: Sequence[int] = CONTEXT_DILATIONS,
        kernel_size: int = 3,
        init: str = "identity",
        noise_std: float = 1e-3,
        width_multipliers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_int("channels", channels, minimum=1)
        self.dims = _check_dims(dims)
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, found {variant!r}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, found {init!r}")
        self.dilations = _check_dilations(dilations)
        self.kernel_size = _check_odd_kernel(kernel_size)
        if not isinstance(noise_std, (int, float)) or noise_std < 0 or not math.isfinite(noise_std):
            raise ValueError(f"noise_std must be a finite float >= 0, found {noise_std!r}")
        if variant == "basic":
            if width_multipliers is not None:
                raise ValueError("width_multipliers applies to variant='large' only, found it with 'basic'")
            multipliers = (1,) * len(self.dilations)
        elif width_multipliers is None:
            multipliers = large_width_multipliers(self.dilations)
        else:
            multipliers = tuple(width_multipliers)
            if len(multipliers) != len(self.dilations):
                raise ValueError(
                    f"width_multipliers must have one entry per dilation ({len(self.dilations)}), "
                    f"found {len(multipliers)}"
                )
            for m in multipliers:
                check_int("each width multiplier", m, minimum=1)
        self.channels, self.variant, self.init = channels, variant, init
        self.widths: tuple[int, ...] = tuple(m * channels for m in multipliers) + (channels,)
        layers, c_in = [], channels
        for width, rate in zip(self.widths[:-1], self.dilations, strict=True):
            layers.append(DilatedConv(c_in, width, kernel_size, rate, dims=dims))
            c_in = width
        layers.append(DilatedConv(c_in, channels, 1, 1, dims=dims))
        self.layers = nn.ModuleList(layers)
        if init == "identity":
            sigma = float(noise_std) if variant == "large" else 0.0
            for layer in self.layers:
                identity_init_(layer.conv, channels, sigma)

    @property
    def receptive_field(self) -> int:
        """Along each axis: ``1 + (k − 1)·Σ r`` (67 for the default rates); the final 1×1 adds nothing."""
        kernels = [self.kernel_size] * len(self.dilations) + [1]
        return dil.receptive_fields(kernels, [*self.dilations, 1])[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_layout(x, self.dims, self.channels)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MelContext(nn.Module):
    """Residual context over a mel spectrogram, ``x + f(x)``: an exact identity at initialisation on any input.

    ``f`` is shaped like a :class:`ContextModule` (same-padded dilated layers with ReLUs, then a 1×1) whose last 1×1
    is zero-initialised; its other layers keep PyTorch's default initialisation so they offer varied features from the
    first step. Log-mels are mostly negative, so the identity-initialised module itself (which starts with a ReLU)
    would zero most of them; the residual form leaves them untouched until training moves the last layer.

    It is non-causal over frames: frame ``t`` sees ``(RF − 1)/2`` frames on each side. That is fine for a vocoder,
    whose mel is known in advance.

    Two ways to read the mel, chosen by ``dims``:

    - ``dims=1``: mel bins are channels over time; every layer mixes all bins (``n_mels → hidden → … → n_mels``). Cheap
      and what WaveNet vocoders usually do; it has no notion of frequency locality.
    - ``dims=2``: the mel is a 1-channel image over (frequency, time); ``hidden_channels`` maps inside, and the
      receptive field covers ``receptive_field`` bins × ``receptive_field`` frames. It shares weights across
      frequency (patterns like harmonics and formant shifts look alike at every pitch), at more compute per frame.

    Args:
        n_mels: mel bins of the input.
        dims: 1 or 2 (see above).
        dilations: rates of the same-padded layers before the final 1×1.
        hidden_channels: maps inside ``f``; default ``n_mels`` for ``dims=1`` and 16 for ``dims=2``.
        kernel_size: taps per axis (odd).

    Shapes:
        ``(B, n_mels, frames) → (B, n_mels, frames)`` for both ``dims``.

    Examples:
        >>> ctx = MelContext(80, dims=2)
        >>> mel = torch.randn(2, 80, 120) - 4.0
        >>> torch.equal(ctx(mel), mel)
        True
        >>> ctx.receptive_field
        67
    """

    def __init__(
        self,
        n_mels: int,
        dims: int = 1,
        dilations: Sequence[int] = CONTEXT_DILATIONS,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        check_int("n_mels", n_mels, minimum=1)
        self.dims = _check_dims(dims)
        self.dilations = _check_dilations(dilations)
        self.kernel_size = _check_odd_kernel(kernel_size)
        if hidden_channels is None:
            hidden_channels = n_mels if dims == 1 else 16
        check_int("hidden_channels", hidden_channels, minimum=1)
        self.n_mels, self.hidden_channels = n_mels, hidden_channels
        outer = n_mels if dims == 1 else 1
        layers, c_in = [], outer
        for rate in self.dilations:
            layers.append(DilatedConv(c_in, hidden_channels, kernel_size, rate, dims=dims))
            c_in = hidden_channels
        last = DilatedConv(c_in, outer, 1, 1, dims=dims)
        nn.init.zeros_(last.conv.weight)
        nn.init.zeros_(last.conv.bias)
        layers.append(last)
        self.layers = nn.ModuleList(layers)

    @property
    def receptive_field(self) -> int:
        """In frames (and, for ``dims=2``, also in mel bins)."""
        return dil.receptive_field(self.kernel_size, self.dilations)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        check_layout(mel, 1, self.n_mels, name="mel")
        h = mel if self.dims == 1 else mel.unsqueeze(1)  # (B, 1, n_mels, frames): frequency is height
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        h = self.layers[-1](h)
        return mel + (h if self.dims == 1 else h.squeeze(1))


class DilatedFrontEnd(nn.Module):
    """A small VGG-style dense-prediction front-end in the spirit of Yu & Koltun's dilated VGG-16.

    ``log2(output_stride)`` stages of ``convs_per_stage`` 3×3 convolutions + ReLU, each followed by 2×2 pooling; then,
    instead of more pooling, one 3×3 convolution per rate in ``dilated_rates`` (2 then 4, like the paper's conv5 and
    fc6), a 1×1 (fc7) and a 1×1 class-score layer. Stage ``s`` has ``width · 2^s`` maps; the dilated and fc7 layers keep
    the last stage's width. Scores come out at ``1/output_stride`` of the input resolution. Convolutions start from He
    (Kaiming normal) weights and zero biases, which a VGG-style stack without normalisation needs to train from scratch.

    The receptive field (:attr:`receptive_field`) follows ``dilation.receptive_field`` with pooling as a kernel-2,
    stride-2 layer; e.g. 58 input pixels for ``output_stride=4, convs_per_stage=1`` and 64 for ``convs_per_stage=2``.
    With ``pool="max"`` (VGG's) the gradient flows through one input per pooling window, so a gradient-measured field
    depends on the input; ``pool="avg"`` makes every tap count and the measured field equals the computed one.

    Args:
        in_channels: input maps (3 for RGB, 1 for grey).
        n_classes: output score maps.
        width: maps in the first stage.
        output_stride: 1, 2, 4, 8, … (a power of two).
        convs_per_stage: 3×3 convolutions before each pooling.
        dilated_rates: rates of the 3×3 convolutions that replace later pooling.
        pool: ``"max"`` or ``"avg"``.
        dims: 2 for images (what the paper does), 1 for sequences.

    Shapes:
        ``(B, in_channels, H, W) → (B, n_classes, ⌊H/s⌋, ⌊W/s⌋)`` with ``s = output_stride``.

    Examples:
        >>> fe = DilatedFrontEnd(3, n_classes=5, width=8, output_stride=4)
        >>> fe(torch.randn(2, 3, 64, 96)).shape
        torch.Size([2, 5, 16, 24])
        >>> fe.receptive_field
        58
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 16,
        output_stride: int = 4,
        convs_per_stage: int = 1,
        dilated_rates: Sequence[int] = (2, 4),
        pool: str = "max",
        dims: int = 2,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("n_classes", n_classes), ("width", width),
                        ("output_stride", output_stride), ("convs_per_stage", convs_per_stage)):
            check_int(name, v, minimum=1)
        if output_stride & (output_stride - 1):
            raise ValueError(f"output_stride must be a power of two, found {output_stride}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', found {pool!r}")
        self.dims = _check_dims(dims)
        no_rates = isinstance(dilated_rates, (tuple, list)) and not dilated_rates
        self.dilated_rates = () if no_rates else _check_dilations(dilated_rates)
        self.in_channels, self.n_classes, self.output_stride = in_channels, n_classes, output_stride
        self.pool = pool
        n_stages = output_stride.bit_length() - 1
        pool_cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
                    ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}[pool, dims]
        # (kernel, dilation, stride) of every layer, for the receptive field
        self._layer_geometry: list[tuple[int, int, int]] = []
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage in range(n_stages):
            c_out = width * 2**stage
            for _ in range(convs_per_stage):
                layers += [DilatedConv(c_in, c_out, 3, 1, dims=dims), nn.ReLU()]
                self._layer_geometry.append((3, 1, 1))
                c_in = c_out
            layers.append(pool_cls(2, 2))
            self._layer_geometry.append((2, 1, 2))
        for rate in self.dilated_rates:
            layers += [DilatedConv(c_in, c_in, 3, rate, dims=dims), nn.ReLU()]
            self._layer_geometry.append((3, rate, 1))
        layers += [DilatedConv(c_in, c_in, 1, 1, dims=dims), nn.ReLU(), DilatedConv(c_in, n_classes, 1, 1, dims=dims)]
        self._layer_geometry += [(1, 1, 1), (1, 1, 1)]
        self.layers = nn.Sequential(*layers)
        for module in self.layers:
            if isinstance(module, DilatedConv):
                # He initialisation: PyTorch's default shrinks the signal ~2.4× per layer, and a plain VGG-style stack
                # without normalisation then barely trains from scratch
                nn.init.kaiming_normal_(module.conv.weight, nonlinearity="relu")
                nn.init.zeros_(module.conv.bias)

    @property
    def geometry(self) -> list[tuple[int, int, int]]:
        """``(kernel_size, dilation, stride)`` of every layer in order, pooling included (kernel 2, stride 2); append a
        later stack's layers to get the receptive field of the two together with ``dilation.receptive_field``."""
        return list(self._layer_geometry)

    @property
    def receptive_field(self) -> int:
        """In input pixels along each axis, pooling counted as kernel 2, stride 2."""
        ks, ds, ss = zip(*self._layer_geometry, strict=True)
        return dil.receptive_field(list(ks), list(ds), list(ss))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_layout(x, self.dims, self.in_channels)
        return self.layers(x)
