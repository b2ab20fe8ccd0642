"""A trained vocoder in one object: recordings → the model's features → audio.

    vocoder = load_vocoder("runs/demo/checkpoints/best.pt")
    audio, rate = vocoder.vocode("speech.wav", seed=0)        # copy synthesis of a recording
    mel = vocoder.mel("speech.wav")                           # the normalised log-mel the model expects
    audio = vocoder(mel, seed=0)                              # a mel from elsewhere (an acoustic model)

A :class:`Vocoder` carries what a checkpoint stores beside the weights — the :class:`~wavenet_dilated.audio.AudioConfig`
the training audio was prepared with, the mel normalisation (:class:`~wavenet_dilated.mel.MelStats`) and the speaker
names — so the features it computes are exactly the training cache's (:func:`~wavenet_dilated.audio.prepare_audio`,
:func:`~wavenet_dilated.mel.log_mel`, :meth:`~wavenet_dilated.mel.MelStats.normalize`). Generation runs on the fastest
exact backend (:func:`~wavenet_dilated.generation.fast.fast_generate`); many mels at once go through
:func:`~wavenet_dilated.generation.batch.generate_rows`, batched by length, each row equal to vocoding it alone.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .audio import AudioConfig, prepare_audio, read_audio
from .checkpoint import load_checkpoint, read_audio_config, read_config, read_mel_stats, read_speakers
from .config import check_int, check_temperature
from .mel import MelStats, log_mel
from .wavenet import WaveNet

__all__ = ["Vocoder", "load_vocoder", "resolve_speaker"]

Audio = str | os.PathLike[str] | np.ndarray | torch.Tensor


def resolve_speaker(speaker: int | str | None, n_speakers: int | None, names: Sequence[str] | None) -> int | None:
    """A speaker given by name or id (an int, or a string of digits that is not one of the names) → its id; ``None`` for
    a model without speakers.

    Raises:
        ValueError: one line: a speaker for a model without speakers, none for one with, an unknown name or an id out
            of range, listing the speakers the model knows.
    """
    if n_speakers is None:
        if speaker is not None:
            raise ValueError(f"this model has no speaker conditioning: drop the speaker ({speaker!r})")
        return None
    known = ", ".join(names) if names else f"ids 0 .. {n_speakers - 1}"
    if speaker is None:
        raise ValueError(f"this model is speaker-conditioned: choose a speaker ({known})")
    if isinstance(speaker, str):
        if names and speaker in names:  # a name first: corpora name speakers by numbers too ("19", "26" …)
            return list(names).index(speaker)
        if not speaker.strip().isdigit():
            raise ValueError(f"unknown speaker {speaker!r}; this model knows {known}")
    if isinstance(speaker, bool) or not 0 <= int(speaker) < n_speakers:
        raise ValueError(f"speaker id {speaker!r} is out of range: this model has {n_speakers} speakers ({known})")
    return int(speaker)


class Vocoder:
    """A mel-conditioned :class:`~wavenet_dilated.wavenet.WaveNet` with the features it was trained on.

    Args:
        model: a mel-conditioned WaveNet; it is put in eval mode with weight norm folded (same outputs, faster).
        audio_config: how the training audio was prepared; needed by :meth:`mel` and :meth:`vocode`.
        stats: the training mel normalisation; needed by :meth:`mel` and :meth:`vocode`.
        speakers: speaker names, index = id, for a speaker-conditioned model (``speaker=`` then takes a name).
        backend: generation backend, as :func:`~wavenet_dilated.generation.fast.fast_generate` (``"auto"``: the
            fastest exact one here).
        precision: weights of the generation steps, ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` (as
            :func:`~wavenet_dilated.generation.fast.fast_generate`).

    Attributes:
        sample_rate, hop_length, n_mels: of the model's audio.
    """

    def __init__(self, model: WaveNet, audio_config: AudioConfig | None = None, stats: MelStats | None = None,
                 speakers: Sequence[str] | None = None, backend: str = "auto", precision: str = "fp32") -> None:
        from .generation.precision import check_precision

        check_precision(precision)
        c = model.config
        if c.cond_channels is None:
            raise ValueError("a Vocoder needs a mel-conditioned model; this one is unconditioned (use generate)")
        if audio_config is not None and (audio_config.n_mels, audio_config.hop_length) != (c.cond_channels,
                                                                                           c.hop_length):
            raise ValueError(f"audio_config (n_mels={audio_config.n_mels}, hop_length={audio_config.hop_length}) "
                             f"disagrees with the model (cond_channels={c.cond_channels}, hop_length={c.hop_length})")
        if stats is not None and stats.n_mels != c.cond_channels:
            raise ValueError(f"mel stats have {stats.n_mels} bins but the model takes {c.cond_channels}")
        if speakers is not None and len(speakers) != (c.n_speakers or 0):
            raise ValueError(f"{len(speakers)} speaker names for a model with {c.n_speakers or 'no'} speakers")
        self.model = copy.deepcopy(model).eval()  # the caller's model (e.g. one in training) stays as it is
        self.model.remove_weight_norm()
        self.config, self.audio_config, self.stats = c, audio_config, stats
        self.speakers = list(speakers) if speakers is not None else None
        self.backend, self.precision = backend, precision
        self.hop_length, self.n_mels = c.hop_length, c.cond_channels
        self.sample_rate = audio_config.sample_rate if audio_config is not None else None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu", use_ema: bool = True,
                        backend: str = "auto", precision: str = "fp32") -> Vocoder:
        """See :func:`load_vocoder`."""
        ckpt = load_checkpoint(path)
        config = read_config(ckpt, path)
        if config.cond_channels is None:
            raise ValueError(f"{path} is an unconditioned model, not a vocoder: generate from it with "
                             "`wavenet-dilated sample --seconds S` or wavenet_dilated.generate")
        audio_config = read_audio_config(ckpt, path)
        stats = read_mel_stats(ckpt, path, config.cond_channels, "a vocoder") if ckpt.get("mel_stats") else None
        model = WaveNet.from_checkpoint(path, use_ema=use_ema).to(device)
        return cls(model, audio_config, stats, read_speakers(ckpt, path, config.n_speakers), backend, precision)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ features
    def _features_config(self, why: str) -> tuple[AudioConfig, MelStats]:
        if self.audio_config is None or self.stats is None:
            missing = "audio_config" if self.audio_config is None else "mel statistics"
            raise ValueError(f"{why} needs the training {missing}, which this vocoder lacks (a checkpoint written by "
                             "the trainer stores both); pass a normalised mel instead")
        return self.audio_config, self.stats

    def prepare(self, audio: Audio, sample_rate: int | None = None) -> np.ndarray:
        """The recording as the model's features see it: mono float32 at :attr:`sample_rate`, peak-normalised as in
        training (when the training config did), cut to whole hops. The reference for copy-synthesis metrics.

        ``audio`` is a path (any format libsndfile reads) or an array ``(T,)`` / ``(channels, T)`` at
        ``sample_rate`` Hz (default: the vocoder's rate).
        """
        config, _ = self._features_config("computing a mel from audio")
        if isinstance(audio, (str, os.PathLike)):
            samples, rate = read_audio(audio)
            name = str(audio)
        else:
            samples = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
            rate = config.sample_rate if sample_rate is None else check_int("sample_rate", sample_rate, 1)
            name = "audio"
        try:  # the training cache's preparation, without trimming the ends
            return prepare_audio(samples, rate, config, trim=False, check_range=False).audio
        except ValueError as err:
            raise ValueError(f"{name}: cannot vocode: {err}") from err

    def mel(self, audio: Audio, sample_rate: int | None = None) -> torch.Tensor:
        """The normalised log-mel ``(n_mels, frames)`` of a recording, exactly the training features
        (:meth:`prepare` → :func:`~wavenet_dilated.mel.log_mel` → the training normalisation)."""
        config, stats = self._features_config("computing a mel from audio")
        return stats.normalize(log_mel(torch.from_numpy(self.prepare(audio, sample_rate)), config))

    # ------------------------------------------------------------------ generation
    def speaker_id(self, speaker: int | str | None) -> int | None:
        """A speaker name or id → the id (:func:`resolve_speaker`); ``None`` for a model without speakers."""
        return resolve_speaker(speaker, self.config.n_speakers, self.speakers)

    def _as_mel(self, mel: torch.Tensor | np.ndarray) -> torch.Tensor:
        mel = torch.as_tensor(mel)
        if not torch.is_floating_point(mel):
            raise ValueError(f"a mel must be floating point, found dtype {mel.dtype}")
        if not torch.isfinite(mel).all():
            raise ValueError("the mel holds NaN or infinite values")
        return mel.float()

    def __call__(self, mel: torch.Tensor | np.ndarray, *, seed: int | None = None, temperature: float = 1.0,
                 speaker: int | str | None = None, n_samples: int | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Vocode a normalised mel: ``(n_mels, F) → (F · hop_length,)`` or ``(B, n_mels, F) → (B, F · hop_length)``
        float waveform in [−1, 1] on the CPU (``n_samples``: only the first that many). The same seed gives the same
        samples on the same backend."""
        from .generation.fast import fast_generate
        from .generation.reference import to_waveform

        mel = self._as_mel(mel)
        one = mel.dim() == 2
        batch = mel[None] if one else mel
        sid = self.speaker_id(speaker)
        samples = fast_generate(self.model, n_samples, mel=batch.to(self.device), speaker=sid, temperature=temperature,
                                seed=seed, progress=progress, backend=self.backend, precision=self.precision)
        wave = to_waveform(samples, self.model).float().cpu()
        return wave[0] if one else wave

    def vocode(self, audio: Audio, *, sample_rate: int | None = None, seed: int | None = None,
               temperature: float = 1.0, speaker: int | str | None = None,
               progress: bool = False) -> tuple[torch.Tensor, int]:
        """Copy synthesis: a recording → its mel (:meth:`mel`) → ``(waveform (T,), sample_rate)``."""
        wave = self(self.mel(audio, sample_rate), seed=seed, temperature=temperature, speaker=speaker,
                    progress=progress)
        return wave, self.audio_config.sample_rate

    def vocode_many(self, mels: Sequence[torch.Tensor | np.ndarray], *, seed: int | None = None, batch_size: int = 8,
                    temperature: float = 1.0, speaker: int | str | None = None, progress: bool = False,
                    on_result: Callable[[int, torch.Tensor], object] | None = None) -> list[torch.Tensor]:
        """Vocode many mels ``(n_mels, F_i)``, ``batch_size`` at a time grouped by length (similar lengths share a
        batch, so little is generated past a short row's end). Item ``i`` equals ``self(mels[i], seed=seed)``:
        every row has its own random stream seeded with ``seed``. Returns waveforms ``(F_i · hop_length,)``;
        ``on_result(i, waveform)`` is called as each batch finishes (e.g. to write the files as they are made)."""
        from .generation.batch import generate_rows
        from .generation.reference import to_waveform

        check_int("batch_size", batch_size, 1)
        check_temperature(temperature)
        mels = [self._as_mel(m) for m in mels]
        sid = self.speaker_id(speaker)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        order = sorted(range(len(mels)), key=lambda i: mels[i].shape[-1])
        out: list[torch.Tensor | None] = [None] * len(mels)
        total = sum(m.shape[-1] for m in mels) * self.hop_length
        with tqdm(total=total, unit="sample", unit_scale=True, desc="vocoding", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = [mels[i].to(self.device) for i in rows]
                samples = generate_rows(self.model, batch, [seed] * len(rows), sid, temperature, bar, self.backend,
                                        self.precision)
                for i, s in zip(rows, samples):
                    out[i] = to_waveform(s[None], self.model)[0].float().cpu()
                    if on_result is not None:
                        on_result(i, out[i])
        return out  # type: ignore[return-value]


def load_vocoder(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu", use_ema: bool = True,
                 backend: str = "auto", precision: str = "fp32") -> Vocoder:
    """Load a trained vocoder: the model (EMA weights when stored), its audio config, mel statistics and speaker names.

    Args:
        checkpoint: a checkpoint written by the trainer (e.g. ``runs/demo/checkpoints/best.pt``).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …).
        use_ema: use the EMA weights when the checkpoint has them.
        backend, precision: as :func:`~wavenet_dilated.generation.fast.fast_generate`.

    Raises:
        FileNotFoundError, ValueError: a missing, unreadable or inconsistent checkpoint (one line naming it), or an
            unconditioned model.
    """
    return Vocoder.from_checkpoint(Path(checkpoint), device, use_ema, backend, precision)
