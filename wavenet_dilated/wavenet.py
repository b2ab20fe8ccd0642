"""The WaveNet: gated residual blocks on causal dilated convolutions, with local (mel) and global (speaker) conditioning.

Teacher forcing: ``forward(inputs)`` with ``inputs[t] = x[t − 1]`` (``shift_right``) returns logits at every ``t`` that
predict ``x[t]``; the conditioning at ``t`` is the mel upsampled to sample ``t``. Generation
(:mod:`wavenet_dilated.generation`) feeds the same network one sample at a time through each layer's ring buffer.

The checkpoint format is :mod:`wavenet_dilated.checkpoint`'s; :meth:`WaveNet.save` and :meth:`WaveNet.from_checkpoint`
go through it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint, read_config, save_checkpoint
from .config import check_int, config_from_dict
from .nn import dilation as dil
from .nn.context import MelContext
from .nn.heads import Head, make_head
from .nn.layers import CausalConv1d, ConvState, fold_weight_norm

__all__ = [
    "WaveNetConfig",
    "ResidualBlock",
    "ConditionUpsampler",
    "WaveNet",
]


def _conv1x1(cin: int, cout: int, weight_norm: bool, bias: bool = True) -> nn.Conv1d:
    """A 1×1 ``nn.Conv1d``, weight-normalised when asked (the projections, skips and output layers)."""
    conv = nn.Conv1d(cin, cout, 1, bias=bias)
    if weight_norm:
        nn.utils.parametrizations.weight_norm(conv)
    return conv


@dataclass(frozen=True)
class WaveNetConfig:
    """Sizes and options of a :class:`WaveNet`; stored in every checkpoint as ``asdict(config)``.

    Dilations are ``dilation_base ** (i % layers_per_stack)`` with ``layers_per_stack = n_layers // n_stacks``
    (10 layers per stack → 1, 2, …, 512).

    Attributes:
        n_layers: residual blocks in all.
        n_stacks: how many times the dilation cycle repeats.
        kernel_size: taps of every dilated causal convolution.
        residual_channels / gate_channels / skip_channels: widths R, G (split in two halves for tanh and sigmoid), S.
        output: ``"categorical"`` (μ-law classes, quantized input), ``"mol"`` or ``"gaussian"`` (float input).
        n_classes: μ-law classes for categorical; discretization levels for ``"mol"``.
        n_mixtures: logistic components for ``"mol"``.
        log_scale_min: floor of the log scale for ``"mol"`` and ``"gaussian"``.
        cond_channels: mel bins of the local conditioning, ``None`` for an unconditioned model.
        upsample_scales: per-stage time stretch of the mel (nearest stretch + smoothing conv); product = ``hop_length``.
        hop_length: audio samples per mel frame.
        mel_context: ``None``, ``"1d"`` or ``"2d"``: a residual context module over the mel before upsampling.
        mel_context_channels: hidden maps of the mel context (``None``: ``n_mels`` for ``"1d"``, 16 for ``"2d"``).
        n_speakers / speaker_channels: global conditioning by speaker id (``None`` = off).
        dropout: dropout on each block's input during training.
        use_weight_norm: weight normalisation on every convolution.
        dilation_base: base of the exponential schedule.
    """

    n_layers: int = 30
    n_stacks: int = 3
    kernel_size: int = 3
    residual_channels: int = 128
    gate_channels: int = 256
    skip_channels: int = 128
    output: str = "categorical"
    n_classes: int = 256
    n_mixtures: int = 10
    log_scale_min: float = -7.0
    cond_channels: int | None = None
    upsample_scales: tuple[int, ...] | None = None
    hop_length: int | None = None
    mel_context: str | None = None
    mel_context_channels: int | None = None
    n_speakers: int | None = None
    speaker_channels: int | None = None
    dropout: float = 0.0
    use_weight_norm: bool = False
    dilation_base: int = 2

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            check_int(f"WaveNetConfig.{name}", getattr(self, name), minimum=1)

        for name in ("n_layers", "n_stacks", "kernel_size", "residual_channels", "gate_channels", "skip_channels",
                     "n_classes", "n_mixtures", "dilation_base"):
            positive(name)
        if self.n_layers % self.n_stacks:
            raise ValueError(f"n_layers ({self.n_layers}) must be a multiple of n_stacks ({self.n_stacks})")
        if self.gate_channels % 2:
            raise ValueError(f"gate_channels must be even (tanh and sigmoid halves), found {self.gate_channels}")
        make_head(self.output, self.n_classes, self.n_mixtures, self.log_scale_min)  # validates output
        if self.upsample_scales is not None and not isinstance(self.upsample_scales, tuple):
            object.__setattr__(self, "upsample_scales", tuple(self.upsample_scales))
        if self.cond_channels is not None:
            positive("cond_channels")
            if not self.upsample_scales:
                raise ValueError("a mel-conditioned WaveNet needs upsample_scales (their product = hop_length)")
            if self.hop_length is None:
                raise ValueError("a mel-conditioned WaveNet needs hop_length")
            if math.prod(self.upsample_scales) != self.hop_length:
                raise ValueError(
                    f"the product of upsample_scales {self.upsample_scales} is {math.prod(self.upsample_scales)}, "
                    f"expected hop_length = {self.hop_length}"
                )
            if any(s < 1 for s in self.upsample_scales):
                raise ValueError(f"upsample_scales must all be >= 1, found {self.upsample_scales}")
        if self.mel_context not in (None, "1d", "2d"):
            raise ValueError(f"mel_context must be None, '1d' or '2d', found {self.mel_context!r}")
        if self.mel_context is not None and self.cond_channels is None:
            raise ValueError("mel_context needs a mel-conditioned model (cond_channels)")
        if (self.n_speakers is None) != (self.speaker_channels is None):
            raise ValueError("n_speakers and speaker_channels must both be set or both be None")
        if self.n_speakers is not None:
            positive("n_speakers")
            positive("speaker_channels")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), found {self.dropout}")

    @property
    def layers_per_stack(self) -> int:
        return self.n_layers // self.n_stacks

    @property
    def dilations(self) -> list[int]:
        return dil.exponential_dilations(self.layers_per_stack, self.n_stacks, self.dilation_base)

    @property
    def receptive_field(self) -> int:
        """Samples of past input (including the current one) that one output sees."""
        return dil.receptive_field(self.kernel_size, self.dilations)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WaveNetConfig:
        """Rebuild from ``asdict(config)``; unknown keys are an error (a checkpoint from a different model)."""
        return config_from_dict(cls, d)


class ResidualBlock(nn.Module):
    """Gated residual block: dilated causal conv → ``tanh(a + c_a) · σ(b + c_b)`` → skip 1×1 and residual 1×1.

    The residual output is ``(x + W_res z)·√0.5``, which keeps the variance of the residual stream constant; the last
    block of a network has no residual 1×1 (``last=True``), since nothing reads it.

    Shapes:
        ``x``: ``(B, R, T)``; ``cond``: ``(B, C_mel, T)`` or ``None``; ``speaker``: ``(B, C_spk, 1)`` or ``None``.
        Returns ``(residual (B, R, T) or None, skip (B, S, T))``.
    """

    def __init__(
        self,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        cond_channels: int | None = None,
        speaker_channels: int | None = None,
        dropout: float = 0.0,
        weight_norm: bool = False,
        last: bool = False,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.conv = CausalConv1d(residual_channels, gate_channels, kernel_size, dilation, weight_norm=weight_norm)
        self.cond_proj = _conv1x1(cond_channels, gate_channels, weight_norm, bias=False) if cond_channels else None
        self.speaker_proj = _conv1x1(speaker_channels, gate_channels, weight_norm, bias=False) if speaker_channels \
            else None
        half = gate_channels // 2
        self.skip = _conv1x1(half, skip_channels, weight_norm)
        self.residual = None if last else _conv1x1(half, residual_channels, weight_norm)

    def gate(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """From the pre-activation ``h (B, G, T)`` (conv + conditioning) and block input ``x`` to (residual, skip)."""
        a, b = h.chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        skip = self.skip(z)
        if self.residual is None:
            return None, skip
        return (x + self.residual(z)) * math.sqrt(0.5), skip

    def conditioning(self, cond: torch.Tensor | None, speaker: torch.Tensor | None) -> torch.Tensor | None:
        """Sum of the conditioning projections ``(B, G, T or 1)``, or ``None`` when unconditioned."""
        out = None
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this block is mel-conditioned: pass cond")
            out = self.cond_proj(cond)
        if self.speaker_proj is not None:
            if speaker is None:
                raise ValueError("this block is speaker-conditioned: pass speaker")
            g = self.speaker_proj(speaker)
            out = g if out is None else out + g
        return out

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        h = self.conv(F.dropout(x, self.dropout, self.training))
        c = self.conditioning(cond, speaker)
        if c is not None:
            h = h + c
        return self.gate(h, x)

    def step(
        self, x: torch.Tensor, state: ConvState, cond_proj: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One time step: ``x (B, R, 1)``, ``cond_proj`` the already projected conditioning ``(B, G, 1)`` or None."""
        h = self.conv.step(x, state)
        if cond_proj is not None:
            h = h + cond_proj
        return self.gate(h, x)


class ConditionUpsampler(nn.Module):
    """Mel frames → one conditioning vector per audio sample: per scale, a nearest-neighbour stretch in time followed
    by a ``(1, 2s+1)`` smoothing convolution shared across mel bins (initialised to a moving average).

    Non-causal over the mel (the mel is known before generation); it never sees audio. Each output sample depends on
    mel frames within ``context_frames`` on either side, which is what streaming generation needs to know.

    Each stage is computed at its input rate as the equivalent polyphase filter (:meth:`polyphase_taps`): the stretch
    repeats every frame ``s`` times, so output ``f·s + p`` of the smoothing sees only frames ``f − 1``, ``f`` and
    ``f + 1``. That is the same function, with gradients reaching the same ``nn.Conv2d`` weights, at a fraction of the
    cost: three taps per output at the frame rate instead of ``2s + 1`` at the sample rate.

    Shapes: ``(B, C_mel, F) → (B, C_mel, F · Π scales)``.
    """

    def __init__(self, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.scales = tuple(scales)
        # the smoothing convs stay nn.Conv2d modules: checkpoints store their weights under these names, and the fast
        # generator (generation.folding.polyphase_plan) reads them; forward uses only their weights
        self.smoothers = nn.ModuleList()
        for s in self.scales:
            conv = nn.Conv2d(1, 1, (1, 2 * s + 1), padding=(0, s), bias=False)
            nn.init.constant_(conv.weight, 1.0 / (2 * s + 1))
            self.smoothers.append(conv)

    @property
    def context_frames(self) -> int:
        """Mel frames on each side of a sample's own frame that can influence it (an upper bound, in whole frames)."""
        reach, per_frame = 0.0, 1
        for s in self.scales:
            per_frame *= s
            reach += s / per_frame  # s samples at this resolution, in frames
        return math.ceil(reach) + 1

    @staticmethod
    def polyphase_taps(weight: torch.Tensor, scale: int) -> torch.Tensor:
        """The ``(s, 3)`` polyphase form of one stage: ``y[f·s + p] = a[p, 0]·x[f−1] + a[p, 1]·x[f] + a[p, 2]·x[f+1]``.

        Tap ``k`` of the ``2s+1``-tap smoothing ``weight`` (any shape holding ``2s+1`` numbers) reads stretched
        position ``f·s + p + k − s``, i.e. frame ``f + (p + k − s) // s``, so ``a[p, (p + k − s) // s + 1] += w[k]``
        (as in :func:`wavenet_dilated.generation.folding.polyphase_plan`). A fixed linear map of ``weight``: gradients flow
        back to it.
        """
        s = scale
        k = torch.arange(2 * s + 1, device=weight.device)
        p = torch.arange(s, device=weight.device)
        frame = torch.div(p[:, None] + k - s, s, rounding_mode="floor") + 1  # (s, 2s+1): 0, 1 or 2
        select = frame[:, None, :] == torch.arange(3, device=weight.device)[:, None]  # (s, 3, 2s+1)
        return select.to(weight.dtype) @ weight.reshape(2 * s + 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        B, C, _ = mel.shape
        x = mel.reshape(B * C, -1)  # the smoothing acts on time only, the same for every bin
        for s, conv in zip(self.scales, self.smoothers):
            a = self.polyphase_taps(conv.weight, s)
            frames = F.pad(x, (1, 1)).unfold(1, 3, 1)  # (B·C, F, 3): x[f − 1], x[f], x[f + 1] (zero outside)
            x = (frames @ a.T).flatten(1)  # (B·C, F, s) → (B·C, F·s): phase p of frame f is sample f·s + p
        return x.reshape(B, C, -1)


class WaveNet(nn.Module):
    """WaveNet with optional mel (local) and speaker (global) conditioning.

    Args:
        config: a :class:`WaveNetConfig`.

    Shapes:
        ``inputs``: ``(B, T)`` int64 classes (categorical) or float in [−1, 1] (mol/gaussian), already shifted right.
        ``mel``: ``(B, C_mel, F)`` with ``F · hop_length == T``; or pass ``cond (B, C_mel, T)`` from :meth:`upsample`.
        ``speaker``: ``(B,)`` int64 ids.
        Returns logits ``(B, head.out_channels, T)``.

    Examples:
        >>> model = WaveNet(WaveNetConfig(n_layers=4, n_stacks=2, residual_channels=8, gate_channels=16,
        ...                               skip_channels=8))
        >>> x = torch.randint(0, 256, (2, 100))
        >>> model(model.shift_right(x)).shape
        torch.Size([2, 256, 100])
    """

    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.head: Head = make_head(c.output, c.n_classes, c.n_mixtures, c.log_scale_min)
        if self.head.quantized:
            self.embed = nn.Embedding(c.n_classes, c.residual_channels)
        else:
            self.embed = nn.Conv1d(1, c.residual_channels, 1)
        self.mel_context: nn.Module | None = None
        if c.mel_context is not None:
            self.mel_context = MelContext(c.cond_channels, dims=1 if c.mel_context == "1d" else 2,
                                          hidden_channels=c.mel_context_channels)
        self.upsampler = ConditionUpsampler(c.upsample_scales) if c.cond_channels is not None else None
        self.speaker_embed = nn.Embedding(c.n_speakers, c.speaker_channels) if c.n_speakers is not None else None
        dilations = c.dilations
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c.residual_channels, c.gate_channels, c.skip_channels, c.kernel_size, d,
                cond_channels=c.cond_channels, speaker_channels=c.speaker_channels, dropout=c.dropout,
                weight_norm=c.use_weight_norm, last=(i == len(dilations) - 1),
            )
            for i, d in enumerate(dilations)
        )
        self.out1 = _conv1x1(c.skip_channels, c.skip_channels, c.use_weight_norm)
        self.out2 = _conv1x1(c.skip_channels, self.head.out_channels, c.use_weight_norm)
        self.skip_scale = math.sqrt(1.0 / len(dilations))

    # ------------------------------------------------------------------ properties
    @property
    def receptive_field(self) -> int:
        """Samples of past audio (including the newest input) that one output sees, from :mod:`dilation`."""
        return self.config.receptive_field

    @property
    def mel_context_frames(self) -> int:
        """Mel frames past a sample's own frame that can change its conditioning (0 for an unconditioned model)."""
        if self.upsampler is None:
            return 0
        frames = self.upsampler.context_frames
        if self.mel_context is not None:
            frames += (self.mel_context.receptive_field - 1) // 2
        return frames

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ inputs
    def shift_right(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs from targets: ``inputs[t] = x[t − 1]``, ``inputs[0]`` = silence."""
        first = torch.full_like(x[:, :1], self.head.silence())
        return torch.cat([first, x[:, :-1]], dim=1)

    def check_inputs(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"inputs must be a (batch, time) tensor, found {found}")
        if self.head.quantized:
            if x.dtype != torch.int64:
                raise ValueError(f"inputs must be int64 μ-law class indices, found dtype {x.dtype}")
            if x.numel() and (x.min() < 0 or x.max() >= self.config.n_classes):
                raise ValueError(f"class indices must lie in [0, {self.config.n_classes - 1}], "
                                 f"found [{int(x.min())}, {int(x.max())}]")
        elif not torch.is_floating_point(x):
            raise ValueError(f"inputs must be float audio in [-1, 1] for output={self.config.output!r}, "
                             f"found dtype {x.dtype}")

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` inputs → ``(B, R, T)``: an embedding lookup for classes, a 1×1 conv for floats."""
        if self.head.quantized:
            return self.embed(x).transpose(1, 2)
        return self.embed(x.unsqueeze(1).to(self.embed.weight.dtype))

    def check_mel(self, mel: torch.Tensor) -> None:
        c = self.config
        if c.cond_channels is None:
            raise ValueError("this model is unconditioned: it takes no mel")
        if not isinstance(mel, torch.Tensor) or mel.dim() != 3:
            found = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"mel must have shape (batch, {c.cond_channels}, frames), found {found}")
        if mel.shape[1] != c.cond_channels:
            raise ValueError(f"mel must have {c.cond_channels} bins, found {mel.shape[1]} (shape {tuple(mel.shape)})")
        if not torch.is_floating_point(mel):
            raise ValueError(f"mel must be floating point, found dtype {mel.dtype}")

    def upsample(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, C_mel, F)`` mel → ``(B, C_mel, F · hop_length)`` conditioning at the sample rate."""
        self.check_mel(mel)
        if self.mel_context is not None:
            mel = self.mel_context(mel)
        return self.upsampler(mel)

    def speaker_vector(self, speaker: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """``(B,)`` ids → ``(B, C_spk, 1)``; checks presence and range."""
        c = self.config
        if c.n_speakers is None:
            if speaker is not None:
                raise ValueError("this model has no speaker conditioning: pass speaker=None")
            return None
        if speaker is None:
            raise ValueError(f"this model is speaker-conditioned ({c.n_speakers} speakers): pass speaker ids")
        speaker = torch.as_tensor(speaker, device=self.speaker_embed.weight.device)
        if speaker.dtype != torch.int64 or speaker.dim() != 1 or speaker.shape[0] != batch_size:
            raise ValueError(f"speaker must be int64 ids of shape ({batch_size},), found dtype {speaker.dtype} "
                             f"shape {tuple(speaker.shape)}")
        if speaker.min() < 0 or speaker.max() >= c.n_speakers:
            raise ValueError(f"speaker ids must lie in [0, {c.n_speakers - 1}], found {speaker.tolist()}")
        return self.speaker_embed(speaker).unsqueeze(2)

    # ------------------------------------------------------------------ forward
    def output_logits(self, skip: torch.Tensor) -> torch.Tensor:
        """Summed skips ``(B, S, T)`` → logits: ReLU → 1×1 → ReLU → 1×1."""
        return self.out2(F.relu(self.out1(F.relu(skip * self.skip_scale))))

    def forward(
        self,
        inputs: torch.Tensor,
        mel: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_inputs(inputs)
        T = inputs.shape[1]
        if self.config.cond_channels is not None:
            if cond is None:
                if mel is None:
                    raise ValueError("this model is mel-conditioned: pass mel (batch, bins, frames)")
                self.check_mel(mel)
                if mel.shape[2] * self.config.hop_length != T:
                    raise ValueError(
                        f"mel has {mel.shape[2]} frames × hop {self.config.hop_length} = "
                        f"{mel.shape[2] * self.config.hop_length} samples, expected {T} (the input length)"
                    )
                cond = self.upsample(mel)
            elif cond.shape[0] != inputs.shape[0] or cond.shape[2] != T:
                raise ValueError(f"cond must have shape ({inputs.shape[0]}, {self.config.cond_channels}, {T}), "
                                 f"found {tuple(cond.shape)}")
        elif mel is not None or cond is not None:
            raise ValueError("this model is unconditioned: it takes no mel")
        g = self.speaker_vector(speaker, inputs.shape[0])
        x = self.embed_inputs(inputs)
        skips = None
        for block in self.blocks:
            x_next, s = block(x, cond, g)
            skips = s if skips is None else skips + s
            x = x_next
        return self.output_logits(skips)

    def loss(
        self, audio: torch.Tensor, mel: torch.Tensor | None = None, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced mean NLL (nats) of ``audio (B, T)`` (classes or floats)."""
        return self.head.loss(self(self.shift_right(audio), mel, speaker), audio)

    # ------------------------------------------------------------------ checkpoints
    def remove_weight_norm(self) -> None:
        """Fold weight-norm parametrisations into plain weights (faster inference; outputs unchanged)."""
        fold_weight_norm(self)

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write a checkpoint holding the config and weights (atomically) plus ``extra`` entries."""
        save_checkpoint(path, {"config": asdict(self.config), "model": self.state_dict(), **extra})

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
    ) -> WaveNet:
        """Rebuild a model from a checkpoint written by :meth:`save` or the trainer; EMA weights when present."""
        ckpt = load_checkpoint(path, map_location)
        model = cls(read_config(ckpt, path))
        state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"{path}: the weights do not match the stored config ({first})") from err
        model.eval()
        return model
