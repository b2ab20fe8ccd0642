"""The Griffin-Lim baseline: a waveform from a mel with no training at all, the reference point of every metric.

The mel is undone exactly as it was made (:func:`~wavenet_dilated.mel.log_mel`): denormalised with the
:class:`~wavenet_dilated.mel.MelStats`, exponentiated back to mel magnitudes, mapped to linear STFT magnitudes by
non-negative least squares through the same filterbank (:func:`~wavenet_dilated.mel.mel_filterbank`), and given a
phase by Griffin-Lim (fast variant with momentum, ``librosa.griffinlim``) on the same STFT grid (periodic Hann window
of ``win_length``, ``n_fft``, ``hop_length``, centred frames).
"""

from __future__ import annotations

import numpy as np
import torch

from ..audio import AudioConfig
from ..config import check_int
from ..mel import MelStats, mel_filterbank

__all__ = ["GRIFFIN_LIM_ITERS", "GRIFFIN_LIM_MOMENTUM", "griffin_lim"]

#: Griffin-Lim iterations: with momentum, past about this many the metrics stop improving for speech
GRIFFIN_LIM_ITERS = 64
#: the fast Griffin-Lim momentum (Perraudin et al. 2013; librosa's default)
GRIFFIN_LIM_MOMENTUM = 0.99


def griffin_lim(mel: torch.Tensor | np.ndarray, audio_config: AudioConfig, stats: MelStats | None, *,
                n_iter: int = GRIFFIN_LIM_ITERS, seed: int = 0) -> np.ndarray:
    """Invert a log-mel ``(n_mels, frames)`` to float32 audio ``(frames · hop_length,)`` in [−1, 1].

    Args:
        mel: normalised with ``stats`` (what the vocoder is given, e.g. ``Vocoder.mel(wav)``), or the raw log-mel of
            :func:`~wavenet_dilated.mel.log_mel` when ``stats`` is ``None``.
        audio_config: the representation the mel was computed with (sample rate, STFT and filterbank).
        stats: the normalisation to undo, or ``None``.
        n_iter: Griffin-Lim iterations.
        seed: seed of the random initial phase; the same seed gives the same audio.

    Samples beyond [−1, 1] (rare: an STFT magnitude is not always consistent) are clipped, as writing 16-bit PCM
    would.

    Raises:
        ValueError: ``mel`` is not ``(audio_config.n_mels, frames)`` with at least one frame, or holds non-finite values.

    Examples:
        >>> from wavenet_dilated.mel import log_mel
        >>> x = torch.sin(2 * torch.pi * 220 * torch.arange(22050) / 22050) * 0.5
        >>> griffin_lim(log_mel(x), AudioConfig(), None).shape
        (22016,)
    """
    import librosa

    check_int("n_iter", n_iter, 1)
    check_int("seed", seed, 0)
    m = mel.detach().cpu().numpy() if isinstance(mel, torch.Tensor) else np.asarray(mel)
    if m.ndim != 2 or m.shape[0] != audio_config.n_mels or m.shape[1] == 0:
        raise ValueError(f"mel must have shape ({audio_config.n_mels}, frames) with frames >= 1, found shape "
                         f"{tuple(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError(f"mel holds {int((~np.isfinite(m)).sum())} NaN or infinite values")
    m = m.astype(np.float64)
    if stats is not None:
        m = stats.denormalize(m)
    magnitude = np.exp(np.minimum(m, np.log(np.finfo(np.float32).max)))  # mel magnitudes (power 1)
    fb = mel_filterbank(audio_config).numpy().astype(np.float64)
    linear = librosa.util.nnls(fb, magnitude)  # (n_fft // 2 + 1, frames), non-negative
    # a centred STFT of frames · hop samples has one frame more, centred on the last sample, which log_mel drops:
    # its magnitude is taken as the last frame's
    linear = np.concatenate([linear, linear[:, -1:]], axis=1)
    audio = librosa.griffinlim(
        linear.astype(np.float32), n_iter=n_iter, hop_length=audio_config.hop_length,
        win_length=audio_config.win_length, n_fft=audio_config.n_fft, window="hann", center=True,
        length=m.shape[1] * audio_config.hop_length, pad_mode="constant", momentum=GRIFFIN_LIM_MOMENTUM,
        init="random", random_state=seed,
    )  # fmt: skip
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
