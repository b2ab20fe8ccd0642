"""Log-mel features and their normalisation: :func:`log_mel` (torchaudio), :func:`mel_filterbank`, and
:class:`MelStats` (per-bin mean and standard deviation of a corpus's log-mels).

A log-mel spectrogram has shape ``(..., n_mels, T // hop_length)``: exactly one frame per ``hop_length`` samples, so a
vocoder upsamples frames to samples with no off-by-one. The parameters come from :class:`~wavenet_dilated.audio.AudioConfig`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from .audio import AudioConfig

__all__ = ["log_mel", "mel_filterbank", "MelStats"]

Array = TypeVar("Array", torch.Tensor, np.ndarray)

# --- log-mel ------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _mel_transform(config: AudioConfig, device: torch.device) -> torch.nn.Module:
    import torchaudio  # deferred, see resample_audio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        win_length=config.win_length,
        hop_length=config.hop_length,
        f_min=config.fmin,
        f_max=config.fmax,
        n_mels=config.n_mels,
        window_fn=torch.hann_window,  # periodic Hann, as librosa's get_window("hann", fftbins=True)
        power=1.0,
        center=True,
        # the package's own: zero padding (works for any length, and is librosa's default since 0.10); the other
        # conventions reflect, as their definitions do (see MelFormat.pad_mode)
        pad_mode=config.format.pad_mode,
        norm="slaney",
        mel_scale="slaney",
    ).to(device)


def mel_filterbank(config: AudioConfig = AudioConfig()) -> torch.Tensor:
    """The mel filterbank :func:`log_mel` uses, ``(n_mels, n_fft // 2 + 1)``.

    Slaney mel scale with Slaney (area) normalisation — the same matrix as
    ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)`` (librosa's defaults).
    """
    return _mel_transform(config, torch.device("cpu")).mel_scale.fb.T.clone()


def log_mel(audio: torch.Tensor, config: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Log-mel spectrogram of float audio ``(..., T)`` → float32 ``(..., n_mels, T // hop_length)``.

    ``log(max(mel_floor, M · |STFT(x)|))``: magnitude (power 1) STFT with a periodic Hann window of ``win_length``,
    centred frames (padding of ``n_fft // 2`` on both sides), Slaney mel filterbank (:func:`mel_filterbank`), then
    the log. Magnitude rather than power halves the dynamic range the conditioning network sees, as in Tacotron 2.
    The log's base and the padding follow ``config.mel_format`` (:class:`~wavenet_dilated.audio.MelFormat`): the
    package's own convention takes the natural log and pads with zeros; ``tacotron2`` takes the natural log and
    reflects; ``espnet`` takes ``log10`` and reflects (reflection needs ``T > n_fft // 2``, else a ``ValueError``).

    **Alignment contract**: frame ``i`` is centred on sample ``i · hop_length`` and the result has exactly
    ``T // hop_length`` frames. ``center=True`` yields ``1 + T // hop_length`` frames; the last one (centred past the
    last whole hop) is dropped, so when ``T`` is a multiple of ``hop_length``, ``frames · hop_length == T`` and frame
    ``i`` conditions samples ``[i · hop_length, (i + 1) · hop_length)``.

    The transform is built once per ``(config, device)`` and cached. Runs on ``audio``'s device, in float32.

    Examples:
        >>> log_mel(torch.zeros(2, 22050)).shape
        torch.Size([2, 80, 86])
    """
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor (..., T), found {type(audio).__name__}")
    if audio.ndim < 1:
        raise ValueError("audio must have a time axis (..., T), found a 0-d tensor")
    if not torch.is_floating_point(audio):
        raise ValueError(f"audio must be a floating-point tensor, found dtype {audio.dtype}")
    n_frames = audio.shape[-1] // config.hop_length
    lead = tuple(audio.shape[:-1])
    if n_frames == 0 or math.prod(lead) == 0:
        return audio.new_zeros((*lead, config.n_mels, n_frames), dtype=torch.float32)
    if config.format.pad_mode == "reflect" and audio.shape[-1] <= config.n_fft // 2:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short for the {config.mel_format} mel, which "
                         f"reflects n_fft // 2 = {config.n_fft // 2} samples at each end: expected more")
    mel = _mel_transform(config, audio.device)(audio.to(torch.float32))
    clamped = torch.clamp(mel[..., :n_frames], min=config.mel_floor)
    return torch.log10(clamped) if config.format.log_base == 10.0 else torch.log(clamped)


# --- normalisation statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelStats:
    """Per-bin mean and standard deviation of log-mel features, for ``(mel − mean) / std`` normalisation.

    Stored as plain tuples of floats so that :meth:`to_dict` goes into JSON manifests and into checkpoints loaded with
    ``torch.load(weights_only=True)``.

    Examples:
        >>> stats = MelStats.fit([torch.randn(80, 100) * 3 + 1])
        >>> x = torch.randn(4, 80, 50)
        >>> torch.allclose(stats.denormalize(stats.normalize(x)), x, atol=1e-5)
        True
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    #: std values are floored here, so a constant bin (e.g. above fmax of a band-limited corpus) does not divide by 0.
    MIN_STD = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(
                f"mean and std must be non-empty and of equal length, found {len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(v) for v in self.mean + self.std):
            raise ValueError("mean and std must be finite")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0 in every bin, found min {min(self.std)}")

    @property
    def n_mels(self) -> int:
        return len(self.mean)

    @classmethod
    def from_moments(cls, total: np.ndarray, total_sq: np.ndarray, count: int) -> MelStats:
        """Stats from per-bin sums ``Σ x`` and ``Σ x²`` over ``count`` frames (how parallel workers combine)."""
        if count < 1:
            raise ValueError(f"need at least one frame to fit mel statistics, found count={count}")
        total = np.asarray(total, dtype=np.float64)
        mean = total / count
        var = np.maximum(np.asarray(total_sq, dtype=np.float64) / count - mean**2, 0.0)
        return cls(tuple(mean.tolist()), tuple(np.maximum(np.sqrt(var), cls.MIN_STD).tolist()))

    @staticmethod
    def moments(mel: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
        """``(Σ x, Σ x², frames)`` per bin of one ``(n_mels, F)`` log-mel, in float64."""
        m = mel.detach().cpu().numpy() if isinstance(mel, torch.Tensor) else np.asarray(mel)
        if m.ndim != 2:
            raise ValueError(f"mel must have shape (n_mels, frames), found shape {tuple(m.shape)}")
        m = m.astype(np.float64)
        return m.sum(axis=1), (m * m).sum(axis=1), m.shape[1]

    @classmethod
    def fit(cls, mels: Iterable[np.ndarray | torch.Tensor]) -> MelStats:
        """Fit on an iterable of ``(n_mels, F)`` log-mels (frames pooled over all of them)."""
        total = total_sq = None
        count = 0
        for mel in mels:
            s, s2, n = cls.moments(mel)
            if total is None:
                total, total_sq = s, s2
            elif s.shape != total.shape:
                raise ValueError(f"all mels must have the same n_mels, found {total.shape[0]} and {s.shape[0]}")
            else:
                total, total_sq = total + s, total_sq + s2
            count += n
        if total is None or count == 0:
            raise ValueError("need at least one mel frame to fit MelStats, found none")
        return cls.from_moments(total, total_sq, count)

    def _params(self, mel: Array) -> tuple[Array, Array]:
        if mel.ndim < 2 or mel.shape[-2] != self.n_mels:
            raise ValueError(f"mel must have shape (..., {self.n_mels}, frames), found shape {tuple(mel.shape)}")
        if isinstance(mel, torch.Tensor):
            kw = {"dtype": mel.dtype if torch.is_floating_point(mel) else torch.float32, "device": mel.device}
            return torch.tensor(self.mean, **kw)[:, None], torch.tensor(self.std, **kw)[:, None]
        dtype = mel.dtype if np.issubdtype(mel.dtype, np.floating) else np.float32
        return np.asarray(self.mean, dtype=dtype)[:, None], np.asarray(self.std, dtype=dtype)[:, None]

    def normalize(self, mel: Array) -> Array:
        """``(mel − mean) / std`` per bin; ``mel`` is ``(..., n_mels, F)``, torch or numpy; same shape and type."""
        mean, std = self._params(mel)
        return (mel - mean) / std

    def denormalize(self, mel: Array) -> Array:
        """Inverse of :meth:`normalize`."""
        mean, std = self._params(mel)
        return mel * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` of plain floats; inverse of :meth:`from_dict`."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MelStats:
        if set(d) != {"mean", "std"}:
            raise ValueError(f"MelStats dict must have keys ['mean', 'std'], found {sorted(d)}")
        return cls(tuple(d["mean"]), tuple(d["std"]))
