"""Audio I/O and signal conditioning: the audio constants and :class:`AudioConfig`, load/save with soundfile,
resampling, silence trimming, and :func:`prepare_audio`, the one preparation of a recording that the training cache and
vocoding share. The log-mel features and their normalisation statistics are in :mod:`wavenet_dilated.mel`.

Everything about the signal representation lives here, so the data pipeline, the trainer and the sampler agree on it.
Audio is float32 in [−1, 1], shape ``(T,)`` (numpy) or ``(..., T)`` (torch). A log-mel spectrogram has shape
``(..., n_mels, T // hop_length)``: exactly one frame per ``hop_length`` samples, so a WaveNet vocoder can upsample
frames to samples by repeating/transposing each frame ``hop_length`` times with no off-by-one (see
:func:`wavenet_dilated.mel.log_mel`).

The defaults are the LJSpeech vocoder settings used by most WaveNet/Tacotron 2 vocoders (22.05 kHz, 1024-point FFT,
256-sample hop ≈ 11.6 ms, 80 mel bins between 125 Hz and 7.6 kHz).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

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
    "MIN_SIGNAL_DBFS",
    "DEFAULT_MEL_FORMAT",
    "MelFormat",
    "MEL_FORMATS",
    "get_mel_format",
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
# dBFS (0 dBFS = full scale, amplitude 1): a recording whose peak stays below this holds no usable signal — hiss or
# silence only (speech peaks tens of dB above it) — and neither does one whose variation around its mean (the peak of
# x − mean(x)) stays below it, whatever its DC offset. The training cache skips both (prepare_audio's check_signal);
# −60 dBFS is an amplitude of 0.001, about 33 steps of 16-bit PCM.
MIN_SIGNAL_DBFS = -60.0

Array = TypeVar("Array", torch.Tensor, np.ndarray)

# --- mel conventions ------------------------------------------------------------------------------------------------
#: fields of AudioConfig that a mel convention gives published values to (the filterbank and the log floor)
_FORMAT_FIELDS = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "mel_floor")


@dataclass(frozen=True)
class MelFormat:
    """A named log-mel convention: how a mel's values are defined, and the parameters its source publishes.

    Every convention is a magnitude (power 1) STFT with a periodic Hann window, centred frames, a Slaney-scale,
    Slaney-normalised mel filterbank (``librosa.filters.mel``'s defaults) and a log of the filterbank output clamped
    at ``mel_floor``; they differ in the log's base, in how centred frames see past the ends of the audio, in how a
    mel file in the convention is normalised, and in their published filterbank (:attr:`defaults`).

    Args:
        name: what ``AudioConfig.mel_format`` and ``--mel-format`` call it.
        log_base: ``math.e`` (natural log) or ``10.0``.
        pad_mode: ``"constant"`` (zeros) or ``"reflect"``: the padding of ``n_fft // 2`` samples on each side that
            centres frame ``i`` on sample ``i · hop_length``. It changes only the first and last
            ``ceil(n_fft / 2 / hop_length)`` frames, and it is not on a causal path: a centred frame already sees
            ``n_fft // 2`` samples ahead.
        normalization: how a mel file in this convention usually comes: ``"training"`` (normalised with the
            vocoder's own training statistics), ``"none"`` (the raw log-mel) or ``"stats"`` (mean-variance
            normalised with statistics from a file, which the user names).
        frames_first: files of this convention are usually saved ``(frames, n_mels)`` rather than ``(n_mels, frames)``.
        defaults: the published values of the :data:`_FORMAT_FIELDS` of :class:`AudioConfig`.
        source: where the convention is defined.
    """

    name: str
    log_base: float
    pad_mode: Literal["constant", "reflect"]
    normalization: Literal["training", "none", "stats"]
    frames_first: bool
    defaults: tuple[tuple[str, float], ...]
    source: str

    def defaults_dict(self) -> dict[str, Any]:
        """The published values of the filterbank fields and ``mel_floor``, as ``AudioConfig`` keyword arguments."""
        return dict(self.defaults)


DEFAULT_MEL_FORMAT = "wavenet_dilated"


def _published(fmin: float, fmax: float, mel_floor: float) -> tuple[tuple[str, float], ...]:
    """A convention's :attr:`MelFormat.defaults`: all three publish 22050 Hz, n_fft 1024, hop 256, window 1024, 80 bands
    and differ in the band edges and the floor."""
    values = (SAMPLE_RATE, N_FFT, HOP_LENGTH, WIN_LENGTH, N_MELS, fmin, fmax, mel_floor)
    return tuple(zip(_FORMAT_FIELDS, values))


#: the mel conventions, by name (read only)
MEL_FORMATS: types.MappingProxyType[str, MelFormat] = types.MappingProxyType({
    "wavenet_dilated": MelFormat(
        "wavenet_dilated", math.e, "constant", "training", False, _published(FMIN, FMAX, MEL_FLOOR),
        "this package: natural log of the magnitude mel clamped at 1e-5, 80 bands 125-7600 Hz at 22050 Hz (n_fft 1024, "
        "hop 256, window 1024), zero-padded centred frames, normalised with the training corpus's MelStats"),
    "tacotron2": MelFormat(
        "tacotron2", math.e, "reflect", "none", False, _published(0.0, 8000.0, 1e-5),
        "NVIDIA Tacotron 2 (github.com/NVIDIA/tacotron2: hparams.py sampling_rate 22050, filter_length 1024, "
        "hop_length 256, win_length 1024, n_mel_channels 80, mel_fmin 0, mel_fmax 8000; stft.py reflect-pads "
        "filter_length / 2 on each side and windows with scipy's periodic Hann; layers.py TacotronSTFT.mel_spectrogram "
        "applies librosa's mel filters to the magnitude and audio_processing.py dynamic_range_compression takes "
        "log(clamp(x, 1e-5))); no normalisation"),
    "espnet": MelFormat(
        "espnet", 10.0, "reflect", "stats", True, _published(80.0, 7600.0, 1e-10),
        "ESPnet / ParallelWaveGAN (github.com/kan-bayashi/ParallelWaveGAN: parallel_wavegan/bin/preprocess.py "
        "logmelfilterbank takes log10(max(1e-10, mel)) of the magnitude of librosa.stft (pad_mode reflect, "
        "win_length = fft_size) through librosa.filters.mel; egs/ljspeech/voc1/conf/parallel_wavegan.v1.yaml: "
        "sampling_rate 22050, fft_size 1024, hop_size 256, num_mels 80, fmin 80, fmax 7600; ESPnet2's LogMel clamps "
        "at 1e-10 likewise), saved (frames, n_mels) and mean-variance normalised with the statistics of "
        "compute_statistics.py (stats.npy rows mean and scale, or stats.h5)"),
})


def get_mel_format(name: str) -> MelFormat:
    """The :class:`MelFormat` called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return MEL_FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mel format {name!r}; expected one of {', '.join(MEL_FORMATS)}") from None


@dataclass(frozen=True)
class AudioConfig:
    """Signal representation: sample rate, STFT/mel parameters, trimming and normalisation.

    Hashable and frozen, so it keys caches (:func:`~wavenet_dilated.mel.log_mel`'s transform) and is stored in
    manifests and checkpoints as ``dataclasses.asdict(config)``, rebuilt with ``AudioConfig(**d)``.

    Args:
        sample_rate: Hz; audio at any other rate is resampled on loading.
        n_fft: FFT size in samples.
        hop_length: samples between frames; one mel frame per ``hop_length`` samples.
        win_length: Hann window length in samples, ``≤ n_fft``.
        n_mels: number of mel bins.
        fmin, fmax: Hz, edges of the mel filterbank, ``0 ≤ fmin < fmax ≤ sample_rate / 2``.
        trim_top_db: trim leading/trailing audio quieter than this many dB below the peak; ``None`` = no trimming.
        peak_normalize: scale each utterance so its peak is :data:`PEAK` (0.999).
        mel_floor: magnitude floor before the log.
        mel_format: the log-mel convention (:data:`MEL_FORMATS`): its log base and padding. Its published filterbank
            comes with :meth:`for_mel_format` or :meth:`replace`, not with the constructor, so a recipe can vary it.

    Examples:
        >>> AudioConfig().hop_length
        256
        >>> AudioConfig.for_mel_format("tacotron2").fmax
        8000.0
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
    mel_format: str = DEFAULT_MEL_FORMAT

    def __post_init__(self) -> None:
        get_mel_format(self.mel_format)  # a ValueError naming the known conventions
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

    @property
    def format(self) -> MelFormat:
        """The :class:`MelFormat` of :attr:`mel_format`."""
        return MEL_FORMATS[self.mel_format]

    @classmethod
    def for_mel_format(cls, name: str, **changes: Any) -> AudioConfig:
        """The config of the convention ``name`` with its published filterbank and floor, then ``changes``.

        Examples:
            >>> c = AudioConfig.for_mel_format("espnet")
            >>> (c.fmin, c.fmax, c.mel_floor)
            (80.0, 7600.0, 1e-10)
        """
        return cls(**{**get_mel_format(name).defaults_dict(), "mel_format": name, **changes})

    def replace(self, **changes: Any) -> AudioConfig:
        """``dataclasses.replace``, except that a new ``mel_format`` also brings that convention's published
        filterbank and floor, for the fields not in ``changes`` (how ``train --set audio.mel_format=NAME`` works)."""
        name = changes.get("mel_format", self.mel_format)
        if name != self.mel_format:
            changes = {**get_mel_format(name).defaults_dict(), **changes}
        return dataclasses.replace(self, **changes)

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


def _dbfs(amplitude: float) -> float:
    return 20.0 * float(np.log10(amplitude)) if amplitude > 0 else -np.inf


def _check_signal(audio: np.ndarray) -> None:
    """Raise ``ValueError`` when mono ``audio`` holds no usable signal (see :data:`MIN_SIGNAL_DBFS`)."""
    peak = _dbfs(float(np.abs(audio).max()))
    if peak == -np.inf:
        raise ValueError("silent: every sample is zero")
    if peak < MIN_SIGNAL_DBFS:
        raise ValueError(f"silent: peak {peak:.1f} dBFS is below {MIN_SIGNAL_DBFS:g} dBFS (hiss or silence only)")
    mean = float(audio.mean(dtype=np.float64))
    variation = _dbfs(float(np.abs(audio - np.float32(mean)).max()))
    if variation < MIN_SIGNAL_DBFS:
        how = "with no variation" if variation == -np.inf else f"varying by a peak of {variation:.1f} dBFS"
        raise ValueError(f"constant: a DC level of {mean:.4g} {how}, below {MIN_SIGNAL_DBFS:g} dBFS (no signal)")


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
    check_signal: bool = False,
) -> PreparedAudio:
    """The one preparation of a recording before :func:`~wavenet_dilated.mel.log_mel`, shared by the training cache
    and vocoding.

    Finite check → mono (channel mean) → signal check (``check_signal``) → resample to ``config.sample_rate`` → trim
    silent ends (``trim``; with ``config.trim_top_db``, frames of ``n_fft`` every ``hop_length``) → peak normalisation
    (``config.peak_normalize``) → range check (``check_range``) → cut to whole hops, so the result has exactly
    ``len // hop_length`` mel frames.

    Args:
        audio: float ``(channels, T)`` as :func:`read_audio` returns it, or mono ``(T,)``.
        rate: its sample rate in Hz.
        config: the signal representation.
        trim: cut leading and trailing silence (the cache does; vocoding a given recording does not).
        min_samples: shortest usable result in samples; ``None`` = one hop.
        check_range: refuse samples outside [−1, 1] after normalisation. Audio that becomes μ-law targets needs
            them, and clipping would hide a level problem upstream; a mel alone does not.
        check_signal: refuse a recording with no usable signal: a peak below :data:`MIN_SIGNAL_DBFS` (hiss or
            silence only), or a variation around its mean below it (a constant DC level). The training cache does;
            vocoding a given recording, however quiet, does not.

    Raises:
        ValueError: the recording is unusable. The message is the reason alone, without a path: ``empty: …``,
            ``contains N NaN or infinite samples``, ``silent: …``, ``constant: …``, ``samples outside [-1, 1] …`` or
            ``too short: …``.
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
    if check_signal:  # at the file's own rate: resampling a constant would add ringing at its ends
        _check_signal(audio)
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
    if config.format.pad_mode == "reflect" and n <= config.n_fft // 2:  # reflection needs more than the padding
        raise ValueError(f"too short: {n} samples{after}; the {config.mel_format} mel reflects n_fft // 2 = "
                         f"{config.n_fft // 2} samples at each end, so it needs more")
    return PreparedAudio(np.ascontiguousarray(audio[:n], dtype=np.float32), tuple(conversions))
