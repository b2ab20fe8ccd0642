"""Objective copy-synthesis metrics: how close a vocoded waveform is to the recording its mel was computed from.

:func:`copy_synthesis_metrics` compares a reference ``(T,)`` and an estimate ``(T,)`` of the same length and sample rate
and returns one float per name in :data:`METRICS`:

========================  =======  ==================================================================================
``mel_l1``                lower    mean absolute difference of the package's log-mels (:func:`~wavenet_dilated.mel.log_mel`)
``mcd_db``                lower    mel-cepstral distortion in dB over the reference's speech frames
``stoi``                  higher   short-time objective intelligibility, 0 … 1 (``pystoi``)
``pesq_wb``               higher   wideband PESQ (ITU-T P.862.2) at 16 kHz, MOS-LQO 1.04 … 4.64 (``pesq``)
``f0_rmse_cents``         lower    RMS pitch error in cents on frames voiced in both (``librosa.pyin``)
``vuv_error``             lower    fraction of frames whose voiced/unvoiced decision differs (``librosa.pyin``)
``dead_silence``          lower    fraction of the reference's sounding frames where the estimate is digital silence
========================  =======  ==================================================================================

A metric that cannot be computed for a pair (too short, silent, no voiced frame in common) is ``NaN``, never an
exception; each function's docstring says when. Averages over utterances skip the NaNs (:func:`mean_metrics`).

``pystoi`` and ``pesq`` are the ``eval`` extra (``pip install -e ".[eval]"``); without them the functions that need
them raise :class:`MissingEvalDependency` (an ``ImportError``) with that hint.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from ..audio import FMAX, MIN_SIGNAL_DBFS, AudioConfig, resample_audio
from ..config import check_int
from ..mel import log_mel

__all__ = [
    "DEAD_SILENCE_DBFS", "EVAL_INSTALL_HINT", "F0_MAX_HZ", "F0_MIN_HZ", "F0_RESOLUTION", "MCD_N_COEFFS", "METRICS",
    "PESQ_RATE", "SPEECH_TOP_DB", "STOI_MIN_SAMPLES", "STOI_RATE", "Metric", "MissingEvalDependency",
    "compare_estimates", "copy_synthesis_metrics", "dead_silence", "f0_metrics", "mean_metrics",
    "mel_cepstral_distortion", "mel_l1", "pesq_wb", "pitch_frame_length", "pitch_hop_length",
    "require_metric_libraries", "stoi",
]  # fmt: skip

#: the command that installs the optional metric libraries
EVAL_INSTALL_HINT = 'pip install -e ".[eval]"'
#: PESQ's wideband mode is defined at 16 kHz; both signals are resampled to it
PESQ_RATE = 16000
#: mel-cepstral coefficients compared by MCD: c1 … c24 (c0, the frame's energy, is left out, as is customary)
MCD_N_COEFFS = 24
#: a reference frame is speech (for MCD) when its RMS is within this many dB of the loudest frame
SPEECH_TOP_DB = 40.0
#: an estimate frame is dead digital silence below this RMS (−70 dBFS ≈ 10 steps of 16-bit PCM: quieter than any
#: recording's noise floor, and 10 dB under the package's no-signal level MIN_SIGNAL_DBFS)
DEAD_SILENCE_DBFS = MIN_SIGNAL_DBFS - 10.0
#: the pitch range searched by pyin (C2 … G5): every speaking voice's F0, with room for the highest
F0_MIN_HZ, F0_MAX_HZ = 65.41, 783.99
#: STOI's own rate, and the fewest samples there that hold one of its intermediate windows (30 frames of 256 samples,
#: hop 128, before its silent frames are dropped): about 0.4 s
STOI_RATE, STOI_MIN_SAMPLES = 10000, 29 * 128 + 256
#: the spacing of pitch frames aimed at (see pitch_hop_length)
PITCH_HOP_SECONDS = 0.01
#: pyin's pitch resolution in semitones (its default): estimates lie on a grid of 10 cents
F0_RESOLUTION = 0.1


@dataclass(frozen=True)
class Metric:
    """How to read one metric: its name, whether higher is better, its unit and how the table prints it."""

    name: str
    higher_is_better: bool
    unit: str
    label: str
    digits: int


#: every metric :func:`copy_synthesis_metrics` returns, in table order
METRICS: tuple[Metric, ...] = (
    Metric("mel_l1", False, "", "log-mel L1", 3),
    Metric("mcd_db", False, "dB", "MCD", 2),
    Metric("stoi", True, "", "STOI", 3),
    Metric("pesq_wb", True, "", "PESQ (wb)", 2),
    Metric("f0_rmse_cents", False, "cents", "F0 RMSE", 1),
    Metric("vuv_error", False, "", "V/UV error", 3),
    Metric("dead_silence", False, "", "dead silence", 3),
)


class MissingEvalDependency(ImportError):
    """A metric library of the ``eval`` extra (``pystoi``, ``pesq``) is not installed; the message says how to."""


def require_metric_libraries() -> None:
    """Raise :class:`MissingEvalDependency` now unless ``pystoi`` and ``pesq`` are installed (check before long work)."""
    for name in ("pystoi", "pesq"):
        _require(name)


def _require(name: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingEvalDependency(f"the copy-synthesis metrics need {name!r}, which is not installed: "
                                    f"{EVAL_INSTALL_HINT}") from err


# --------------------------------------------------------------------------------------------------- checks


def _audio_config(sample_rate: int, audio_config: AudioConfig | None) -> AudioConfig:
    """``audio_config``, or the default representation at ``sample_rate`` (fmax lowered to its Nyquist if needed)."""
    check_int("sample_rate", sample_rate, 1)
    if audio_config is None:
        return AudioConfig(sample_rate=sample_rate, fmax=min(FMAX, sample_rate / 2))
    if not isinstance(audio_config, AudioConfig):
        raise ValueError(f"audio_config must be an AudioConfig or None, found {type(audio_config).__name__}")
    if audio_config.sample_rate != sample_rate:
        raise ValueError(f"audio_config.sample_rate is {audio_config.sample_rate} Hz but the signals are at "
                         f"{sample_rate} Hz")
    return audio_config


def _as_signal(name: str, x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a mono signal of shape (T,), found shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating-point audio in [-1, 1], found dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(x)).sum())} NaN or infinite samples")
    return np.ascontiguousarray(x, dtype=np.float32)


def _pair(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    ref, est = _as_signal("reference", reference), _as_signal("estimate", estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate must have the same length, found {ref.size} and {est.size} samples")
    return ref, est


# --------------------------------------------------------------------------------------------------- analyses


def pitch_frame_length(sample_rate: int) -> int:
    """pyin's analysis window at ``sample_rate``: the power of two holding 4 periods of :data:`F0_MIN_HZ` (its YIN
    window, half of it, then holds two; 2048 at 22.05 kHz, librosa's default there)."""
    return 1 << math.ceil(math.log2(4 * sample_rate / F0_MIN_HZ))


def pitch_hop_length(config: AudioConfig) -> int:
    """Samples between pitch frames: the multiple of ``hop_length`` nearest :data:`PITCH_HOP_SECONDS` (at least one
    hop), so pitch frames are centred on mel frames (``hop_length`` itself at 22.05 kHz with hop 256). pyin's cost
    grows with the number of frames, and a pitch track gains nothing from frames much closer than that."""
    return config.hop_length * max(1, round(PITCH_HOP_SECONDS * config.sample_rate / config.hop_length))


class _Signal:
    """One signal and the analyses the metrics share, each computed once, on first use (a reference compared with
    several estimates is analysed once)."""

    def __init__(self, x: np.ndarray, config: AudioConfig) -> None:
        self.x, self.config = x, config
        self.n_frames = x.size // config.hop_length
        self._log_mel: np.ndarray | None = None
        self._pitch: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def log_mel(self) -> np.ndarray:
        """float64 ``(n_mels, n_frames)``: :func:`~wavenet_dilated.mel.log_mel` with the config."""
        if self._log_mel is None:
            self._log_mel = log_mel(torch.from_numpy(self.x), self.config).numpy().astype(np.float64)
        return self._log_mel

    def window_db(self) -> np.ndarray:
        """dBFS RMS of the ``n_fft`` windows centred on the mel frames (zero-padded like them), ``(n_frames,)``."""
        import librosa

        rms = librosa.feature.rms(y=self.x, frame_length=self.config.n_fft, hop_length=self.config.hop_length,
                                  center=True, pad_mode="constant")[0, : self.n_frames]
        return 20.0 * np.log10(np.maximum(rms, 1e-10))

    def hop_db(self) -> np.ndarray:
        """dBFS RMS of each hop ``[i · hop, (i + 1) · hop)``, ``(n_frames,)``."""
        hop = self.config.hop_length
        blocks = self.x[: self.n_frames * hop].astype(np.float64).reshape(self.n_frames, hop)
        return 20.0 * np.log10(np.maximum(np.sqrt((blocks**2).mean(axis=1)), 1e-10))

    @property
    def pitch(self) -> tuple[np.ndarray, np.ndarray]:
        """F0 in Hz (NaN where unvoiced) and the voiced flags of the pitch frames, :func:`pitch_hop_length` apart
        (``librosa.pyin``)."""
        if self._pitch is None:
            import librosa

            c, hop = self.config, pitch_hop_length(self.config)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns about frames too quiet to track: they come back unvoiced
                f0, voiced, _ = librosa.pyin(self.x, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=c.sample_rate,
                                             frame_length=pitch_frame_length(c.sample_rate), hop_length=hop,
                                             center=True, resolution=F0_RESOLUTION)
            n = max(self.x.size // hop, 1)
            self._pitch = f0[:n], voiced[:n].astype(bool)
        return self._pitch


def _signals(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor, sample_rate: int,
             audio_config: AudioConfig | None) -> tuple[_Signal, _Signal]:
    ref, est = _pair(reference, estimate)
    config = _audio_config(sample_rate, audio_config)
    return _Signal(ref, config), _Signal(est, config)


# --------------------------------------------------------------------------------------------------- spectral


def _mel_l1(ref: _Signal, est: _Signal) -> float:
    return float(np.abs(ref.log_mel - est.log_mel).mean()) if ref.n_frames else math.nan


def mel_l1(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
           audio_config: AudioConfig | None = None) -> float:
    """Mean over bins and frames of ``|log_mel(reference) − log_mel(estimate)|`` (natural log of mel magnitudes,
    :func:`~wavenet_dilated.mel.log_mel` with ``audio_config``): the distance the vocoder's conditioning is in.

    A gain ``g`` on the estimate adds ``|ln g|`` wherever neither log-mel sits on the floor. ``NaN`` when the signals
    are shorter than one hop (no frame).
    """
    return _mel_l1(*_signals(reference, estimate, sample_rate, audio_config))


def _mel_cepstra(log_mel_frames: np.ndarray) -> np.ndarray:
    """``(frames, MCD_N_COEFFS)``: c1 … c24 of the orthonormal DCT-II of each frame's log-mel."""
    import scipy.fft

    return scipy.fft.dct(log_mel_frames.T, type=2, norm="ortho", axis=1)[:, 1 : MCD_N_COEFFS + 1]


def _mcd(ref: _Signal, est: _Signal) -> float:
    if ref.n_frames == 0 or not np.any(ref.x):
        return math.nan
    level = ref.window_db()
    speech = level >= level.max() - SPEECH_TOP_DB
    diff = _mel_cepstra(ref.log_mel[:, speech]) - _mel_cepstra(est.log_mel[:, speech])
    return float((10.0 / math.log(10.0) * np.sqrt(2.0 * (diff**2).sum(axis=1))).mean())


def mel_cepstral_distortion(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                            audio_config: AudioConfig | None = None) -> float:
    """Mel-cepstral distortion in dB, averaged over the reference's speech frames.

    Per frame, ``(10 / ln 10) · √(2 · Σ_{d=1..24} (c_d − ĉ_d)²)``, the customary MCD formula, where ``c`` is the
    orthonormal DCT-II over the mel bins of the package's log-mel (natural log of mel magnitudes with ``audio_config``).
    c0, the frame's level, is left out, so a gain changes MCD only where a log-mel reaches its floor. Speech frames
    are those whose reference RMS (the ``n_fft`` window centred on the frame) is within :data:`SPEECH_TOP_DB` dB of the
    loudest frame's. The log-mel's floor is deep (``mel_floor``, about −11.5), so noise where the reference is
    digitally silent in some bands weighs heavily: absolute values are not comparable with papers' (whose cepstra
    differ too); compare numbers made here.

    ``NaN`` when the reference has no frame or is digitally silent throughout.
    """
    return _mcd(*_signals(reference, estimate, sample_rate, audio_config))


# --------------------------------------------------------------------------------------------------- perceptual


def _stoi(ref: _Signal, est: _Signal) -> float:
    pystoi = _require("pystoi")
    rate = ref.config.sample_rate
    if not np.any(est.x) or not np.any(ref.x) or ref.x.size * STOI_RATE < STOI_MIN_SAMPLES * rate:
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref.x.astype(np.float64), est.x.astype(np.float64), rate, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught) or not math.isfinite(value):
        return math.nan
    return value


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) with ``pystoi``; about 1 for identical signals.

    ``NaN`` when the signals are shorter than one of its intermediate windows (:data:`STOI_MIN_SAMPLES` at 10 kHz,
    about 0.4 s) or fewer frames than that remain once pystoi drops the reference's silent frames, or when either
    signal is all zeros (its correlation is undefined).
    """
    return _stoi(*_signals(reference, estimate, sample_rate, None))


def _pesq(ref: _Signal, est: _Signal) -> float:
    pesq = _require("pesq")
    if not np.any(est.x) or not np.any(ref.x):
        return math.nan
    ref16, est16 = resample_audio(np.stack([ref.x, est.x]), ref.config.sample_rate, PESQ_RATE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(pesq.pesq(PESQ_RATE, ref16.astype(np.float64), est16.astype(np.float64), "wb"))
    except pesq.PesqError:  # NoUtterancesError, BufferTooShortError: the pair has nothing PESQ can score
        return math.nan


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (ITU-T P.862.2) with ``pesq``, both signals resampled to 16 kHz: 4.64 for identical signals.

    ``NaN`` when PESQ finds no utterance in the reference (silence), the signals are too short for it (under about
    a quarter of a second), or the estimate is all zeros.
    """
    return _pesq(*_signals(reference, estimate, sample_rate, None))


# --------------------------------------------------------------------------------------------------- pitch


def _f0(ref: _Signal, est: _Signal) -> dict[str, float]:
    if ref.n_frames == 0 or ref.x.size < pitch_frame_length(ref.config.sample_rate) // 2:
        return {"f0_rmse_cents": math.nan, "vuv_error": math.nan}
    (f0_ref, v_ref), (f0_est, v_est) = ref.pitch, est.pitch
    both = v_ref & v_est & np.isfinite(f0_ref) & np.isfinite(f0_est)
    cents = 1200.0 * np.log2(f0_est[both] / f0_ref[both])
    return {
        "f0_rmse_cents": float(np.sqrt(np.mean(cents**2))) if both.any() else math.nan,
        "vuv_error": float(np.mean(v_ref != v_est)),
    }


def f0_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
               audio_config: AudioConfig | None = None) -> dict[str, float]:
    """``{"f0_rmse_cents", "vuv_error"}`` from ``librosa.pyin`` pitch tracks of both signals (frames
    :func:`pitch_hop_length` apart, centred on mel frames).

    ``f0_rmse_cents``: ``√mean((1200 · log2(f̂0 / f0))²)`` over the frames voiced in both; pyin's estimates lie on a
    grid of :data:`F0_RESOLUTION` semitones (10 cents). ``NaN`` when no frame is voiced in both.
    ``vuv_error``: the fraction of all frames where one is voiced and the other not. Both ``NaN`` when the signals
    are shorter than half a pitch window (:func:`pitch_frame_length`). The pitch range searched is
    :data:`F0_MIN_HZ` … :data:`F0_MAX_HZ`.
    """
    return _f0(*_signals(reference, estimate, sample_rate, audio_config))


# --------------------------------------------------------------------------------------------------- noise floor


def _dead_silence(ref: _Signal, est: _Signal) -> float:
    if ref.n_frames == 0:
        return math.nan
    sounding = ref.hop_db() >= MIN_SIGNAL_DBFS
    if not sounding.any():
        return math.nan
    return float(np.mean(est.hop_db()[sounding] < DEAD_SILENCE_DBFS))


def dead_silence(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                 audio_config: AudioConfig | None = None) -> float:
    """The share of the reference's sounding frames in which the estimate is dead digital silence.

    Frames are the mel frames' hops, ``[i · hop, (i + 1) · hop)``. A reference frame *sounds* when its RMS is at
    least :data:`~wavenet_dilated.audio.MIN_SIGNAL_DBFS` (−60 dBFS: speech, or a recording's room-noise floor); the
    estimate is *dead* there when its RMS is below :data:`DEAD_SILENCE_DBFS` (−70 dBFS). A vocoder that falls silent
    inside words or replaces a noise floor by digital zeros scores above 0; 0 is the goal. ``NaN`` when no reference
    frame sounds (nothing to check).
    """
    return _dead_silence(*_signals(reference, estimate, sample_rate, audio_config))


# --------------------------------------------------------------------------------------------------- together


def _all(ref: _Signal, est: _Signal) -> dict[str, float]:
    values = {"mel_l1": _mel_l1(ref, est), "mcd_db": _mcd(ref, est), "stoi": _stoi(ref, est), "pesq_wb": _pesq(ref, est),
              **_f0(ref, est), "dead_silence": _dead_silence(ref, est)}  # fmt: skip
    return {m.name: values[m.name] for m in METRICS}


def copy_synthesis_metrics(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor, sample_rate: int,
                           audio_config: AudioConfig | None = None) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one vocoded ``estimate`` of ``reference`` (both ``(T,)``, same length, float
    audio at ``sample_rate`` Hz), as ``{name: value}`` in table order; ``NaN`` where a metric does not apply (see each
    function: :func:`mel_l1`, :func:`mel_cepstral_distortion`, :func:`stoi`, :func:`pesq_wb`, :func:`f0_metrics`,
    :func:`dead_silence`).

    ``audio_config`` is the representation of the checkpoint (its log-mel for ``mel_l1`` and MCD, its frames for the
    pitch track); ``None`` = the default :class:`~wavenet_dilated.audio.AudioConfig` at ``sample_rate``.

    Raises:
        ValueError: not 1-D float signals of equal length, non-finite samples, or an ``audio_config`` at another rate.
        MissingEvalDependency: ``pystoi`` or ``pesq`` is not installed.

    Examples:
        >>> x = np.sin(2 * np.pi * 150 * np.arange(22050) / 22050).astype(np.float32) * 0.5
        >>> m = copy_synthesis_metrics(x, x, 22050)
        >>> m["mel_l1"], m["mcd_db"], m["f0_rmse_cents"], m["dead_silence"]
        (0.0, 0.0, 0.0, 0.0)
    """
    return _all(*_signals(reference, estimate, sample_rate, audio_config))


def compare_estimates(reference: np.ndarray | torch.Tensor, estimates: Mapping[str, np.ndarray | torch.Tensor],
                      sample_rate: int, audio_config: AudioConfig | None = None) -> dict[str, dict[str, float]]:
    """:func:`copy_synthesis_metrics` of several estimates of one reference (``{system: estimate}`` →
    ``{system: {metric: value}}``), analysing the reference once (its log-mel, levels and pitch track)."""
    ref = _as_signal("reference", reference)
    config = _audio_config(sample_rate, audio_config)
    analysed = _Signal(ref, config)
    out = {}
    for name, estimate in estimates.items():
        est = _as_signal(f"estimate {name!r}", estimate)
        if est.shape != ref.shape:
            raise ValueError(f"reference and estimate {name!r} must have the same length, found {ref.size} and "
                             f"{est.size} samples")
        out[name] = _all(analysed, _Signal(est, config))
    return out


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per metric of :data:`METRICS`, the mean over ``rows`` of the finite values (``NaN`` when none is finite)."""
    rows = list(rows)
    out = {}
    for m in METRICS:
        values = [r[m.name] for r in rows if m.name in r and math.isfinite(r[m.name])]
        out[m.name] = float(np.mean(values)) if values else math.nan
    return out

