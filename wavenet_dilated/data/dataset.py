"""The training dataset over a preprocessing cache: items with aligned audio and mel crops, and their collation.

    cache dir (made by :func:`~wavenet_dilated.data.preprocess`)
      → AudioDataset(cache, "train", max_time_steps=...) → DataLoader(..., collate_fn=collate)

A crop of ``max_time_steps`` samples starts on a hop boundary and pairs with ``max_time_steps // hop_length`` mel
frames (the cache's alignment contract, see :mod:`wavenet_dilated.data.cache`). Crops are reproducible from
``(seed, epoch, index)`` through :func:`mix_seed`, the package's one seed mixer.

With ``history`` (:func:`history_length`: the receptive field less one, rounded up to whole hops) a crop also carries
that many samples of real audio before its targets, and their mel frames, so that every target is predicted from the
history the model would see inside a whole utterance; the loss is taken on the targets only (the trainer's
``crop_history`` option, :func:`~wavenet_dilated.train.fused_loss.training_loss` with ``n_history``).

With ``noise_db`` (dithering, the trainer's ``dither_db`` option) every item's utterance gets fresh white noise at that
RMS level before it is cropped, and its mel is recomputed from the noisy audio, so that the model learns what a
recording's noise floor sounds like under the mel of that noise floor (digitally silent training audio teaches it that
quiet frames are exact silence).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import check_int, check_number
from ..mel import log_mel
from ..mulaw import mu_law_encode
from .ljspeech import SPLITS
from .manifest import load_manifest

__all__ = ["AudioDataset", "check_crop_length", "collate", "history_length", "mix_seed"]

logger = logging.getLogger(__name__)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several ints (the splitmix64 finaliser after each value), so that the streams of
    ``(seed, epoch, index)`` (crops) or ``(seed, epoch)`` (batch order) or ``(seed, rank)`` (dropout) are independent.
    The one seed mixer of the package: the dataset's crops and the trainer's batch order and dropout all use it."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def check_crop_length(name: str, value: int | None, hop_length: int) -> int | None:
    """``value`` (a crop length in samples, e.g. ``max_time_steps``; ``None`` = no crop) checked to be a whole number
    of hops, at least one: a crop pairs with ``value // hop_length`` mel frames. A caller can check its settings with
    this before preprocessing, rather than meet the error when the dataset is built after it.

    Raises:
        ValueError: not an int, or not a positive multiple of ``hop_length`` (the message names the nearest ones).
    """
    if check_int(name, value, 1, optional=True) is None:
        return None
    if value < hop_length:
        raise ValueError(f"{name} must be at least one hop (hop_length={hop_length}) and a multiple of it, found {value}")
    if value % hop_length:
        lower, upper = value // hop_length * hop_length, math.ceil(value / hop_length) * hop_length
        raise ValueError(
            f"{name} must be a multiple of hop_length={hop_length}, found {value} (nearest: {lower} or {upper})"
        )
    return value


def history_length(receptive_field: int, hop_length: int) -> int:
    """Samples of history a crop needs so that its first target sees a whole receptive field of real audio: the
    ``receptive_field − 1`` past inputs, rounded up to whole hops so that the history's mel frames stay aligned.

    Examples:
        >>> history_length(2047, 256)  # the demo preset: 2046 past samples → 8 hops
        2048
    """
    check_int("receptive_field", receptive_field, 1)
    check_int("hop_length", hop_length, 1)
    return math.ceil((receptive_field - 1) / hop_length) * hop_length


class AudioDataset(Dataset):
    """Cached utterances as ``{"audio": (T,), "mel": (n_mels, T // hop_length)}`` items; in a multi-speaker cache
    also ``"speaker"``: the speaker id, an int64 scalar (the index of the utterance's speaker in
    ``manifest.speakers``).

    With ``max_time_steps`` each item is a random crop of that many samples starting on a hop boundary (start frame
    uniform over all valid positions) and its ``max_time_steps // hop_length`` mel frames; utterances shorter than the
    crop are excluded at construction and counted in ``n_excluded``. With ``max_time_steps=None`` an item is the whole
    utterance (for validation; batch with :func:`collate`, which pads).

    Crops are reproducible: item ``i`` in epoch ``e`` uses a ``torch.Generator`` seeded from ``(seed, e, i)``, so the
    crop does not depend on DataLoader workers, their number or the order items are fetched in. Call
    :meth:`set_epoch` before each epoch for fresh crops (with ``persistent_workers=True`` the workers keep the epoch
    they started with). ``seed=None`` draws from torch's global RNG instead (DataLoader seeds it per worker).

    With ``history`` (and ``max_time_steps``), an item is ``history + max_time_steps`` samples: the crop's targets
    preceded by ``history`` samples of the same utterance (the crop start, and so the targets, are drawn exactly as
    without history). Where the utterance starts less than ``history`` samples before the targets, the missing
    history is silence: the μ-law class of 0.0 (or 0.0) and the mel of digital silence (``log(mel_floor)`` in every
    bin, normalised like the rest), what a recording padded with silence would give.

    With ``noise_db``, white Gaussian noise of RMS ``10^(noise_db / 20)`` (full scale is ±1) is added to the whole
    utterance (and to the silence before it that a crop's history reaches into), drawn from a generator seeded from
    ``(seed, epoch, index, 1)`` (``seed=None``: torch's global RNG), and the item's mel is the :func:`log_mel` of that
    noisy audio instead of the cached one. It costs one log-mel of the utterance per item.

    Args:
        cache_dir: a cache made by :func:`preprocess`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_time_steps: crop length in samples, a multiple of the hop length; ``None`` = whole utterances.
        hop_length: expected hop length (checked against the cache); ``None`` = take the cache's.
        n_classes: μ-law classes: audio becomes int64 class indices (:func:`wavenet_dilated.mulaw.mu_law_encode`);
            ``None`` keeps float32 in [−1, 1].
        mel_normalize: normalise mels with the cache's train-split :class:`~wavenet_dilated.mel.MelStats`.
        seed: crop seed, or ``None``.
        history: samples of real audio before each crop's targets (a multiple of the hop length, see
            :func:`history_length`); 0 = none. Only with ``max_time_steps``.
        noise_db: RMS level of the white noise added to every item, in dB relative to full scale (e.g. −60);
            ``None`` = none.

    Examples:
        >>> ds = AudioDataset(cache, "train", max_time_steps=8 * 256)  # doctest: +SKIP
        >>> item = ds[0]  # doctest: +SKIP
        >>> item["audio"].shape, item["mel"].shape  # doctest: +SKIP
        (torch.Size([2048]), torch.Size([80, 8]))
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        split: str = "train",
        max_time_steps: int | None = None,
        hop_length: int | None = None,
        n_classes: int | None = 256,
        mel_normalize: bool = True,
        seed: int | None = 0,
        history: int = 0,
        noise_db: float | None = None,
    ) -> None:
        self.manifest = load_manifest(cache_dir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
        hop = self.manifest.audio_config.hop_length
        if hop_length is not None and hop_length != hop:
            raise ValueError(f"hop_length {hop_length} does not match the cache's AudioConfig: expected {hop}")
        check_crop_length("max_time_steps", max_time_steps, hop)
        check_int("n_classes", n_classes, 2, optional=True)
        check_int("seed", seed, optional=True)
        check_int("history", history, 0)
        if history % hop:
            raise ValueError(f"history must be a multiple of hop_length={hop}, found {history}")
        if history and max_time_steps is None:
            raise ValueError("history needs crops: set max_time_steps, or history=0 for whole utterances")
        check_number("noise_db", noise_db, -math.inf, 0.0, optional=True)
        entries = self.manifest.entries(split)
        if max_time_steps is not None:
            kept = [e for e in entries if e.n_samples >= max_time_steps]
        else:
            kept = entries
        self.n_excluded = len(entries) - len(kept)
        if not kept:
            raise ValueError(
                f"split {split!r} of {str(self.manifest.cache_dir)!r} has no usable utterances: found {len(entries)}, "
                f"{self.n_excluded} of them shorter than max_time_steps={max_time_steps}"
            )
        if self.n_excluded:
            logger.info("%s: excluded %d utterances shorter than %s samples", split, self.n_excluded, max_time_steps)
        self.entries = kept
        self.split = split
        self.hop_length = hop
        self.max_time_steps = max_time_steps
        self.n_classes = n_classes
        self.mel_stats = self.manifest.mel_stats if mel_normalize else None
        self.seed = seed
        self.history = history
        self.noise_rms = None if noise_db is None else 10.0 ** (noise_db / 20.0)
        self.epoch = 0
        self.speaker_ids = {e.id: self.manifest.speaker_id(e.speaker) for e in kept} if self.manifest.speakers else None

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def audio_pad_value(self) -> int | float:
        """Padding value for audio that means silence: the μ-law class of 0.0, or 0.0."""
        if self.n_classes is None:
            return 0.0
        return int(mu_law_encode(torch.zeros(1), self.n_classes)[0])

    @property
    def collate_fn(self) -> functools.partial:
        """:func:`collate` that pads audio with :attr:`audio_pad_value`."""
        return functools.partial(collate, audio_pad_value=self.audio_pad_value)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (deterministic given the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def crop_start(self, index: int) -> int:
        """Start frame of item ``index``'s crop in the current epoch (0 without cropping)."""
        e = self.entries[index]
        if self.max_time_steps is None:
            return 0
        n_starts = e.n_frames - self.max_time_steps // self.hop_length + 1
        if self.seed is None:
            return int(torch.randint(n_starts, ()).item())
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        return int(torch.randint(n_starts, (), generator=g).item())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        e = self.entries[index]
        audio = np.load(self.manifest.audio_path(e.id), mmap_mode="r")
        mel = np.load(self.manifest.mel_path(e.id), mmap_mode="r")
        lead = 0  # frames of silence already in front of the audio
        if self.noise_rms is not None:
            lead = self.history // self.hop_length if self.max_time_steps is not None else 0
            audio, mel = self._with_noise(audio, index, lead)
        if self.max_time_steps is not None:
            hop, n_history = self.hop_length, self.history // self.hop_length
            start = self.crop_start(index) - n_history + lead
            n_frames = self.max_time_steps // hop + n_history
            audio, mel = self._window(audio, mel, start, n_frames)
        audio_t = torch.from_numpy(np.array(audio, dtype=np.float32))
        mel_t = torch.from_numpy(np.array(mel, dtype=np.float32))
        if self.mel_stats is not None:
            mel_t = self.mel_stats.normalize(mel_t)
        if self.n_classes is not None:
            audio_t = mu_law_encode(audio_t, self.n_classes)
        item = {"audio": audio_t, "mel": mel_t}
        if self.speaker_ids is not None:
            item["speaker"] = torch.tensor(self.speaker_ids[e.id], dtype=torch.int64)
        return item

    def _with_noise(self, audio: np.ndarray, index: int, lead: int) -> tuple[np.ndarray, np.ndarray]:
        """The utterance ``audio`` ``(T,)`` after ``lead`` frames of silence, plus white noise at ``noise_rms``, and
        its raw log-mel ``(n_mels, lead + T // hop_length)``."""
        padded = torch.from_numpy(np.concatenate([np.zeros(lead * self.hop_length, dtype=np.float32),
                                                  np.asarray(audio, dtype=np.float32)]))  # fmt: skip
        g = None if self.seed is None else torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index, 1))
        noisy = padded + self.noise_rms * torch.randn(padded.shape, generator=g)
        return noisy.numpy(), log_mel(noisy, self.manifest.audio_config).numpy()

    def _window(self, audio: np.ndarray, mel: np.ndarray, start: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``start … start + n_frames − 1`` of an utterance (audio ``(T,)``, raw mel ``(n_mels, F)``), the
        frames before its start (``start < 0``) filled with silence."""
        hop = self.hop_length
        if start >= 0:
            return audio[start * hop : (start + n_frames) * hop], mel[:, start : start + n_frames]
        lead = -start
        silent_mel = np.full((mel.shape[0], lead), math.log(self.manifest.audio_config.mel_floor), dtype=np.float32)
        audio = np.concatenate([np.zeros(lead * hop, dtype=np.float32), audio[: (n_frames - lead) * hop]])
        return audio, np.concatenate([silent_mel, mel[:, : n_frames - lead]], axis=1)


def collate(
    batch: Sequence[Mapping[str, torch.Tensor]], audio_pad_value: int | float = 0, mel_pad_value: float = 0.0
) -> dict[str, torch.Tensor]:
    """Stack dataset items into ``{"audio": (B, T), "mel": (B, n_mels, F), "lengths": (B,), "mel_lengths": (B,)}``.

    Items of different lengths (whole utterances) are right-padded to the longest: audio with ``audio_pad_value``
    (use :attr:`AudioDataset.collate_fn` for the value that means silence), mel with ``mel_pad_value`` (0 = the mean
    of a normalised mel). ``lengths`` (samples) and ``mel_lengths`` (frames) give the valid part of each row. Items
    with a ``"speaker"`` id (a multi-speaker cache) give ``"speaker": (B,)`` int64 too.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    audios = [b["audio"] for b in batch]
    mels = [b["mel"] for b in batch]
    if any(a.ndim != 1 for a in audios) or any(m.ndim != 2 for m in mels):
        raise ValueError("expected items with audio (T,) and mel (n_mels, F)")
    n_mels = {m.shape[0] for m in mels}
    if len(n_mels) != 1:
        raise ValueError(f"all items must have the same n_mels, found {sorted(n_mels)}")
    lengths = torch.tensor([a.shape[0] for a in audios], dtype=torch.int64)
    mel_lengths = torch.tensor([m.shape[1] for m in mels], dtype=torch.int64)
    audio = audios[0].new_full((len(batch), int(lengths.max())), audio_pad_value)
    mel = mels[0].new_full((len(batch), mels[0].shape[0], int(mel_lengths.max())), mel_pad_value)
    for i, (a, m) in enumerate(zip(audios, mels, strict=True)):
        audio[i, : a.shape[0]] = a
        mel[i, :, : m.shape[1]] = m
    out = {"audio": audio, "mel": mel, "lengths": lengths, "mel_lengths": mel_lengths}
    with_speaker = sum("speaker" in b for b in batch)
    if with_speaker:
        if with_speaker != len(batch):
            raise ValueError(f"expected a speaker id in every item or in none, found {with_speaker} of {len(batch)}")
        out["speaker"] = torch.stack([torch.as_tensor(b["speaker"], dtype=torch.int64).reshape(()) for b in batch])
    return out
