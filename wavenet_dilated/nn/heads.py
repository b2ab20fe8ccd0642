"""Output heads: how the WaveNet's last layer becomes a distribution over the next sample.

Each head knows how many output channels it needs, its loss (mean negative log-likelihood in nats) and how to sample.
Sampling takes uniform random numbers drawn by the caller instead of a generator: the generators draw all of them up
front from one seeded ``torch.Generator``, so naive, cached and compiled generation produce the same samples for the same
seed, and the per-sample loop makes no random-number calls.

Heads:
    :class:`Categorical` — softmax over μ-law classes (default, 256 classes); targets are int64 class indices.
    :class:`DiscretizedMixtureLogistics` — PixelCNN++ / Parallel WaveNet mixture of logistics over ``n_classes``
        evenly spaced levels in [−1, 1] (65536 for 16-bit audio); targets are floats in [−1, 1].
    :class:`Gaussian` — a single Gaussian density (ClariNet style); targets are floats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import check_int, check_temperature

__all__ = ["Head", "Categorical", "DiscretizedMixtureLogistics", "Gaussian", "make_head", "nats_to_bits"]

LN2 = math.log(2.0)


def nats_to_bits(nats: float | torch.Tensor) -> float | torch.Tensor:
    """Convert a negative log-likelihood from nats to bits."""
    return nats / LN2


class Head:
    """Interface of an output head. Logits are ``(B, out_channels, T)`` for losses and ``(B, out_channels)`` for sampling."""

    #: whether the model's input and targets are integer classes (True) or floats in [−1, 1] (False)
    quantized: bool = False
    #: uniform numbers one sample consumes
    n_uniforms: int = 1

    @property
    def out_channels(self) -> int:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats over all samples; ``target`` is ``(B, T)``."""
        raise NotImplementedError

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """One sample per batch row from ``logits (B, out_channels)`` using ``uniforms (B, n_uniforms)`` in [0, 1)."""
        raise NotImplementedError

    def silence(self) -> float | int:
        """The input value that means "zero signal" (fed at the first step)."""
        raise NotImplementedError


class Categorical(Head):
    """Softmax over ``n_classes`` μ-law classes.

    Examples:
        >>> head = Categorical(256)
        >>> head.loss(torch.zeros(2, 256, 10), torch.zeros(2, 10, dtype=torch.long)).item()  # ln 256
        5.545177...
    """

    quantized = True
    n_uniforms = 1

    def __init__(self, n_classes: int = 256) -> None:
        self.n_classes = check_int("n_classes", n_classes, minimum=2)

    @property
    def out_channels(self) -> int:
        return self.n_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dtype != torch.int64:
            raise ValueError(f"categorical targets must be int64 class indices, found dtype {target.dtype}")
        return F.cross_entropy(logits.float(), target)

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        check_temperature(temperature)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        cdf = probs.cumsum(-1)
        # inverse-CDF sampling: the first class whose cumulative probability exceeds u
        idx = (cdf < uniforms[:, :1] * cdf[:, -1:]).sum(-1)
        return idx.clamp_(max=self.n_classes - 1)

    def silence(self) -> int:
        # μ-law code of 0.0: ((0 + 1) / 2 · μ + 0.5) truncated
        return int((self.n_classes - 1) / 2 + 0.5)


class DiscretizedMixtureLogistics(Head):
    """Mixture of ``n_mixtures`` logistics, discretized to ``n_classes`` levels in [−1, 1].

    Channels are ``[mixture logits | means | log scales]``, ``n_mixtures`` each. The likelihood of a level ``x`` is
    ``Σ_k π_k [σ((x + Δ − μ_k)/s_k) − σ((x − Δ − μ_k)/s_k)]`` with ``Δ = 1/(n_classes − 1)`` (half a level), the
    lowest and highest levels taking the whole tail.
    """

    quantized = False
    n_uniforms = 2

    def __init__(self, n_mixtures: int = 10, n_classes: int = 65536, log_scale_min: float = -7.0) -> None:
        self.n_mixtures = check_int("n_mixtures", n_mixtures, minimum=1)
        self.n_classes = check_int("n_classes", n_classes, minimum=2)
        self.log_scale_min = log_scale_min

    @property
    def out_channels(self) -> int:
        return 3 * self.n_mixtures

    def _split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.n_mixtures
        logit_probs, means, log_scales = logits[:, :k], logits[:, k : 2 * k], logits[:, 2 * k : 3 * k]
        return logit_probs, means, log_scales.clamp(min=self.log_scale_min)

    def log_prob(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Log-probability ``(B, T)`` of each target level (nats)."""
        if not torch.is_floating_point(target):
            raise ValueError(f"mixture-of-logistics targets must be floats in [-1, 1], found dtype {target.dtype}")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logit_probs, means, log_scales = self._split(logits.to(dtype))
        x = target.to(dtype).unsqueeze(1)  # (B, 1, T)
        half = 1.0 / (self.n_classes - 1)
        centred = x - means
        inv_s = torch.exp(-log_scales)
        plus, minus = inv_s * (centred + half), inv_s * (centred - half)
        cdf_plus, cdf_minus = torch.sigmoid(plus), torch.sigmoid(minus)
        log_cdf_plus = plus - F.softplus(plus)  # log σ(plus), for the lowest level
        log_one_minus_cdf_min = -F.softplus(minus)  # log(1 − σ(minus)), for the highest level
        mid = inv_s * centred
        # when the bin is too narrow for the CDF difference to be resolved, use the density at the centre × bin width
        log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid) + math.log(2 * half)
        diff = cdf_plus - cdf_minus
        resolvable = 1e-5 if dtype == torch.float32 else 1e-12
        log_mid = torch.where(diff > resolvable, torch.log(diff.clamp(min=1e-30)), log_pdf_mid)
        log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))
        return torch.logsumexp(log_probs + torch.log_softmax(logit_probs, dim=1), dim=1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(logits, target).mean()

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        check_temperature(temperature)
        logit_probs, means, log_scales = self._split(logits.float().unsqueeze(-1))
        logit_probs, means, log_scales = logit_probs[..., 0], means[..., 0], log_scales[..., 0]
        cdf = torch.softmax(logit_probs, dim=-1).cumsum(-1)
        k = (cdf < uniforms[:, :1] * cdf[:, -1:]).sum(-1).clamp_(max=self.n_mixtures - 1)
        mean = means.gather(1, k[:, None])[:, 0]
        scale = torch.exp(log_scales.gather(1, k[:, None])[:, 0]) * temperature
        u = uniforms[:, 1].clamp(1e-5, 1.0 - 1e-5)
        x = mean + scale * (torch.log(u) - torch.log1p(-u))
        return x.clamp(-1.0, 1.0)

    def silence(self) -> float:
        return 0.0


class Gaussian(Head):
    """A single Gaussian ``N(μ, σ²)`` per sample; channels ``[μ | log σ]``. The loss is a density, in nats."""

    quantized = False
    n_uniforms = 1

    def __init__(self, log_scale_min: float = -9.0) -> None:
        self.log_scale_min = log_scale_min

    @property
    def out_channels(self) -> int:
        return 2

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(target):
            raise ValueError(f"Gaussian targets must be floats, found dtype {target.dtype}")
        mean, log_std = logits[:, 0].float(), logits[:, 1].float().clamp(min=self.log_scale_min)
        z = (target.float() - mean) * torch.exp(-log_std)
        return (0.5 * z * z + log_std + 0.5 * math.log(2 * math.pi)).mean()

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        check_temperature(temperature)
        mean, log_std = logits[:, 0].float(), logits[:, 1].float().clamp(min=self.log_scale_min)
        u = uniforms[:, 0].clamp(1e-7, 1.0 - 1e-7)
        z = math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)
        return (mean + torch.exp(log_std) * temperature * z).clamp(-1.0, 1.0)

    def silence(self) -> float:
        return 0.0


def make_head(output: str, n_classes: int, n_mixtures: int = 10, log_scale_min: float = -7.0) -> Head:
    """Build the head named in a :class:`~wavenet_dilated.wavenet.WaveNetConfig`."""
    if output == "categorical":
        return Categorical(n_classes)
    if output == "mol":
        return DiscretizedMixtureLogistics(n_mixtures, n_classes, log_scale_min)
    if output == "gaussian":
        return Gaussian(log_scale_min)
    raise ValueError(f"output must be 'categorical', 'mol' or 'gaussian', found {output!r}")
