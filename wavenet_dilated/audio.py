"""Audio I/O and features: load/save with soundfile, resampling, silence trimming, log-mel, mel normalisation, and
:func:`prepare_audio`, the one preparation of a recording that the training cache and vocoding share.

Everything about the signal representation lives here, so the data pipeline, the trainer and the sampler agree on it.
Audio is float32 in [−1, 1], shape ``(T,)`` (numpy) or ``(..., T)`` (torch). A log-mel spectrogram has shape
``(..., n_mels, T // hop_length)``: exactly one frame per ``hop_length`` samples, so a WaveNet vocoder can upsample
frames to samples by repeating/transposing each frame ``hop_length`` times with no off-by-one (see :func:`log_mel`).

The defaults are the LJSpeech vocoder settings used by most WaveNet/Tacotron 2 vocoders (22.05 kHz, 1024-point FFT,
256-sample hop ≈ 11.6 ms, 80 mel bins between 125 Hz and 7.6 kHz).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
import torch

from .config import check_int, check_number, config_from_dict

__all__ = [
    "SAMPLE_RATE",
    "N_FFT",
    "HOP_LENGTH",
    "WIN_LENGTH",
    "N_MELS",
    "FMIN",
    "FMAX",
    "TRIM_TOP_DB",
    "PEAK",
    "MEL_FLOOR",
    "AudioConfig",
    "read_audio",
    "to_mono",
    "resample_audio",
    "load_audio",
    "save_audio",
    "trim_silence",
    "peak_normalize",
    "PreparedAudio",
    "prepare_audio",
    "log_mel",
    "mel_filterbank",
    "MelStats",
]

# --- hard-coded audio hyperparameters (the defaults of AudioConfig) -----------------------------------------------
SAMPLE_RATE = 22050  # Hz (LJSpeech's native rate)
N_FFT = 1024  # samples per FFT (46.4 ms at 22.05 kHz)
HOP_LENGTH = 256  # samples between successive frames (11.6 ms); also the vocoder's upsampling factor
WIN_LENGTH = 1024  # samples in the Hann window (≤ N_FFT; the window is zero-padded to N_FFT)
N_MELS = 80  # mel bins
FMIN = 125.0  # Hz, lowest mel filter edge (below it is mostly room rumble in LJSpeech)
FMAX = 7600.0  # Hz, highest mel filter edge (must be ≤ SAMPLE_RATE / 2)
TRIM_TOP_DB = 60.0  # dB below the utterance's peak frame that count as silence when trimming the ends
PEAK = 0.999  # peak amplitude after peak normalisation (a hair under full scale: μ-law needs |x| ≤ 1)
MEL_FLOOR = 1e-5  # magnitude floor before the log: log(1e-5) ≈ −11.5 is the value of digital silence

Array = TypeVar("Array", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class AudioConfig:
    """Signal representation: sample rate, STFT/mel parameters, trimming and normalisation.

    Hashable and frozen, so it keys caches (:func:`log_mel`'s transform) and is stored in manifests and checkpoints as
    ``dataclasses.asdict(config)``, rebuilt with ``AudioConfig(**d)``.

    Args:
        sample_rate: Hz; audio at any other rate is resampled on loading.
        n_fft: FFT size in samples.
        hop_length: samples between frames; one mel frame per ``hop_length`` samples.
        win_length: Hann window length in samples, ``≤ n_fft``.
        n_mels: number of mel bins.
        fmin, fmax: Hz, edges of the mel filterbank, ``0 ≤ fmin < fmax ≤ sample_rate / 2``.
        trim_top_db: trim leading/trailing audio quieter than this many dB below the peak; ``None`` = no trimming.
        peak_normalize: scale each utterance so its peak is :data:`PEAK` (0.999).
        mel_floor: magnitude floor before the natural log.

    Examples:
        >>> AudioConfig().hop_length
        256
        >>> AudioConfig(fmax=12000.0)
        Traceback (most recent call last):
        ...
        ValueError: fmax must be > fmin and <= sample_rate / 2 = 11025.0 Hz, found fmax=12000.0
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    win_length: int = WIN_LENGTH
    n_mels: int = N_MELS
    fmin: float = FMIN
    fmax: float = FMAX
    trim_top_db: float | None = TRIM_TOP_DB
    peak_normalize: bool = False
    mel_floor: float = MEL_FLOOR

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            check_int(name, getattr(self, name), 1)
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length must be <= n_fft = {self.n_fft}, found win_length={self.win_length}")
        check_number("fmin", self.fmin, 0.0)
        check_number("fmax", self.fmax)
        check_number("mel_floor", self.mel_floor, 0.0, low_open=True)
        nyquist = self.sample_rate / 2
        if not self.fmin < self.fmax <= nyquist:
            raise ValueError(f"fmax must be > fmin and <= sample_rate / 2 = {nyquist} Hz, found fmax={self.fmax}")
        top_db = self.trim_top_db  # not check_number: inf is valid (it trims digital silence only)
        if top_db is not None and (isinstance(top_db, bool) or not isinstance(top_db, (int, float)) or not top_db > 0):
            raise ValueError(f"trim_top_db must be a positive number of dB or None, found {top_db!r}")
        if not isinstance(self.peak_normalize, bool):
            raise ValueError(f"peak_normalize must be a bool, found {self.peak_normalize!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and ``torch.load(weights_only=True)``-safe); inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are a ValueError naming them."""
        return config_from_dict(cls, d)


# --- reading and writing --------------------------------------------------------------------------------------------


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a sound file as it is stored: float32 ``(channels, T)`` and its sample rate in Hz.

    Any format libsndfile reads (wav, flac, ogg …). Integer PCM is scaled to [−1, 1); float files are returned as
    stored (they may exceed [−1, 1] or hold NaN — callers that need clean audio check).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file exists but cannot be decoded (names the path and libsndfile's reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: expected a file at {str(path)!r}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"could not read audio file {str(path)!r}: {e}") from e
    return np.ascontiguousarray(data.T), int(rate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mix ``(channels, T)`` down to ``(T,)`` by averaging channels (a ``(T,)`` input is returned unchanged)."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"audio must have shape (T,) or (channels, T), found shape {tuple(audio.shape)}")
    if audio.shape[0] == 1:
        return audio[0]
    return audio.mean(axis=0, dtype=np.float64).astype(np.float32)


def resample_audio(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample float32 ``(..., T)`` from ``orig_rate`` to ``new_rate`` Hz (``torchaudio.functional.resample``).

    Band-limited sinc interpolation; the result may overshoot [−1, 1] slightly for full-scale input.
    """
    if orig_rate == new_rate:
        return audio
    import torchaudio.functional as AF  # deferred: torchaudio import is slow and only needed here and in log_mel

    check_int("orig_rate", orig_rate, 1)
    check_int("new_rate", new_rate, 1)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_rate, new_rate)
    return out.numpy()


def load_audio(path: str | os.PathLike[str], sample_rate: int | None = SAMPLE_RATE) -> np.ndarray:
    """Load a sound file as mono float32 ``(T,)`` at ``sample_rate`` Hz.

    Multi-channel audio is averaged to mono; a file at another rate is resampled with
    ``torchaudio.functional.resample``. ``sample_rate=None`` keeps the file's own rate.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded.

    Examples:
        >>> x = load_audio("wavenet_dilated/data/demo_corpus/wavs/LJ-DEMO-0001.wav")  # doctest: +SKIP
        >>> x.dtype, x.ndim  # doctest: +SKIP
        (dtype('float32'), 1)
    """
    audio, rate = read_audio(path)
    audio = to_mono(audio)
    if sample_rate is not None:
        audio = resample_audio(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def save_audio(
    path: str | os.PathLike[str], audio: np.ndarray | torch.Tensor, sample_rate: int, subtype: str = "PCM_16"
) -> Path:
    """Write ``audio`` — ``(T,)`` mono or ``(channels, T)`` — to ``path``; parent directories are created.

    The format follows the extension (``.wav``, ``.flac`` …); ``subtype`` defaults to 16-bit PCM. Integer subtypes
    clip samples outside [−1, 1] (libsndfile's behaviour) — normalise first if that matters.

    Raises:
        ValueError: bad shape, or the file or its directory cannot be written (names the path and the reason).
    """
    path = Path(path)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must have shape (T,) or (channels, T), found shape {tuple(audio.shape)}")
    check_int("sample_rate", sample_rate, 1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio.T if audio.ndim == 2 else audio, sample_rate, subtype=subtype)
    except (OSError, sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"could not write audio file {str(path)!r}: {e}") from e
    return path


# --- signal conditioning --------------------------------------------------------------------------------------------


def trim_silence(
    audio: np.ndarray, top_db: float | None = TRIM_TOP_DB, frame_length: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``top_db`` dB below the loudest frame (``librosa.effects.trim``).

    ``audio`` is ``(T,)``; returns a ``(T',)`` view with ``T' ≤ T`` (empty for all-zero input). ``top_db=None``
    returns ``audio`` unchanged.
    """
    if top_db is None or audio.size == 0:
        return audio
    if not np.any(audio):
        return audio[:0]
    import librosa  # deferred: librosa's import is slow and only needed here

    trimmed, _ = librosa.effects.trim(audio, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    return trimmed


def peak_normalize(audio: Array, peak: float = PEAK) -> Array:
    """Scale so that ``max |audio| = peak``; all-zero (or empty) audio is returned unchanged. Same shape and type."""
    check_number("peak", peak, 0.0, 1.0, low_open=True)
    if isinstance(audio, torch.Tensor):
        m = audio.abs().max() if audio.numel() else torch.tensor(0.0)
        return audio if m == 0 else audio * (peak / m)
    m = float(np.abs(audio).max()) if audio.size else 0.0
    return audio if m == 0 else (audio * (peak / m)).astype(audio.dtype, copy=False)


@dataclass(frozen=True)
class PreparedAudio:
    """A recording made ready for features by :func:`prepare_audio`.

    Args:
        audio: float32 ``(T,)`` at the config's sample rate, ``T`` a positive multiple of its ``hop_length``.
        conversions: what was converted on the way, in order (e.g. ``"resampled 16000 Hz -> 22050 Hz"``); empty when
            the input was already mono at the config's rate.
    """

    audio: np.ndarray
    conversions: tuple[str, ...] = ()


def prepare_audio(
    audio: np.ndarray,
    rate: int,
    config: AudioConfig,
    *,
    trim: bool = True,
    min_samples: int | None = None,
    check_range: bool = True,
) -> PreparedAudio:
    """The one preparation of a recording before :func:`log_mel`, shared by the training cache and vocoding.

    Finite check → mono (channel mean) → resample to ``config.sample_rate`` → trim silent ends (``trim``; with
    ``config.trim_top_db``, frames of ``n_fft`` every ``hop_length``) → peak normalisation (``config.peak_normalize``)
    → range check (``check_range``) → cut to whole hops, so the result has exactly ``len // hop_length`` mel frames.

    Args:
        audio: float ``(channels, T)`` as :func:`read_audio` returns it, or mono ``(T,)``.
        rate: its sample rate in Hz.
        config: the signal representation.
        trim: cut leading and trailing silence (the cache does; vocoding a given recording does not).
        min_samples: shortest usable result in samples; ``None`` = one hop.
        check_range: refuse samples outside [−1, 1] after normalisation. Audio that becomes μ-law targets needs
            them, and clipping would hide a level problem upstream; a mel alone does not.

    Raises:
        ValueError: the recording is unusable. The message is the reason alone, without a path: ``empty: …``,
            ``contains N NaN or infinite samples``, ``silent: …``, ``samples outside [-1, 1] …`` or ``too short: …``.
    """
    check_int("rate", rate, 1)
    check_int("min_samples", min_samples, 1, optional=True)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise ValueError("empty: the file holds no samples")
    if not np.isfinite(audio).all():
        raise ValueError(f"contains {int((~np.isfinite(audio)).sum())} NaN or infinite samples")
    conversions = []
    if audio.ndim == 2 and audio.shape[0] > 1:
        conversions.append(f"mixed {audio.shape[0]} channels down to mono")
    audio = to_mono(audio)
    if rate != config.sample_rate:
        conversions.append(f"resampled {rate} Hz -> {config.sample_rate} Hz")
        audio = resample_audio(audio, rate, config.sample_rate)
    if trim:
        audio = trim_silence(audio, config.trim_top_db, frame_length=config.n_fft, hop_length=config.hop_length)
        if audio.size == 0:
            raise ValueError("silent: nothing left after trimming")
    if config.peak_normalize:
        audio = peak_normalize(audio)
    if check_range and (peak := float(np.abs(audio).max())) > 1.0:  # never clip silently
        raise ValueError(f"samples outside [-1, 1] (peak {peak:.4g}); use peak_normalize=True or fix the file")
    after = " after trimming" if trim else ""
    n = audio.size - audio.size % config.hop_length
    if n == 0:
        raise ValueError(f"too short: {audio.size} samples{after} < one hop ({config.hop_length})")
    if min_samples is not None and n < min_samples:
        raise ValueError(f"too short: {n} samples{after} < min_samples={min_samples}")
    return PreparedAudio(np.ascontiguousarray(audio[:n], dtype=np.float32), tuple(conversions))


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
        pad_mode="constant",  # zero padding: works for any length, and is librosa's default since 0.10
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
    centred frames (zero padding of ``n_fft // 2`` on both sides), Slaney mel filterbank (:func:`mel_filterbank`),
    natural log. Magnitude rather than power halves the dynamic range the conditioning network sees, as in Tacotron 2.

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
    mel = _mel_transform(config, audio.device)(audio.to(torch.float32))
    return torch.log(torch.clamp(mel[..., :n_frames], min=config.mel_floor))


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
