"""Copy-synthesis quality during training: a few fixed validation utterances vocoded with the eval weights, their
metrics, audio and spectrograms in TensorBoard, and ``best.pt`` chosen by a metric when asked.

Every ``quality_every`` steps (by default with every validation) the trainer's :class:`QualityLog` vocodes the first
``quality_utterances`` validation utterances (the first ``quality_seconds`` of each; the same ones every time) with a
:class:`~wavenet_dilated.vocoder.Vocoder` built from the eval weights (the EMA's) and the fast generator, and compares
them with the recordings (:func:`~wavenet_dilated.quality.metrics.copy_synthesis_metrics`). TensorBoard tags (rank 0):

    quality/<metric>                      the mean over the utterances: stoi, pesq_wb, mel_l1, mcd_db, f0_rmse_cents, …
    quality_griffin_lim/<metric>          the same for Griffin-Lim from the same mels (once: a reference line)
    quality/seconds                       what the evaluation cost (wall clock)
    quality_audio/<id>/vocoded            at every evaluation
    quality_audio/<id>/original, …/griffin_lim      once
    quality_spectrogram/<id>              the recording's log-mel above the vocoded audio's (colour, low bins at the
                                          bottom; :func:`spectrogram_image`)

Without ``pystoi`` or ``pesq`` (the ``eval`` extra) it warns once and logs the metrics that need neither.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import AudioConfig
from ..data.dataset import AudioDataset
from ..mel import MelStats
from ..wavenet import WaveNet
from . import distributed as dist
from .config import BEST_METRICS, TrainConfig
from .monitor import Monitor, mel_image

__all__ = ["QualityLog", "QualityUtterance", "spectrogram_image"]

logger = logging.getLogger(__name__)

#: colour map anchors (dark blue-black → purple → orange → pale yellow), interpolated linearly in RGB
_COLOURS = torch.tensor([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                        dtype=torch.float32) / 255.0  # fmt: skip


@dataclass(frozen=True)
class QualityUtterance:
    """One fixed utterance: its id, the recording as the cache holds it (``(T,)`` float32, the reference), its
    normalised mel ``(n_mels, T / hop)`` and its speaker id (``None`` in a single-speaker cache)."""

    id: str
    audio: np.ndarray
    mel: torch.Tensor
    speaker: int | None = None


def spectrogram_image(wave: torch.Tensor, target: torch.Tensor, audio_config: AudioConfig,
                      mel_stats: MelStats) -> torch.Tensor:  # fmt: skip
    """``(3, H, F)`` RGB image in [0, 1]: the mel ``target`` (``(n_mels, F)``, normalised) above the mel of ``wave``,
    low bins at the bottom of each (:func:`~wavenet_dilated.train.monitor.mel_image`), through a perceptual colour
    ramp (dark = quiet). Plain torch: no plotting library."""
    grey = mel_image(wave, target, audio_config, mel_stats)[0]  # (H, F) in [0, 1]
    position = grey * (len(_COLOURS) - 1)
    low = position.floor().long().clamp(max=len(_COLOURS) - 2)
    frac = (position - low)[..., None]
    rgb = _COLOURS[low] * (1.0 - frac) + _COLOURS[low + 1] * frac  # (H, F, 3)
    return rgb.permute(2, 0, 1).contiguous()


class QualityLog:
    """The copy-synthesis evaluation a :class:`~wavenet_dilated.train.trainer.Trainer` runs while training.

    Args:
        monitor: the run's TensorBoard writer.
        cache_dir: the training cache; its validation split gives the utterances.
        config: ``quality_utterances`` (``None``: off), ``quality_every``, ``quality_seconds``, ``best_metric``,
            ``seed`` (the sampling seed).
        audio_config, mel_stats: the cache's.

    Attributes:
        utterances: the fixed utterances (empty when off or without a validation split).
        metrics: the latest means ``{metric: value}`` (empty before the first evaluation).
        best: the best value of ``config.best_metric`` so far (``None`` when it is ``"val_nll"`` or never measured).
    """

    def __init__(self, monitor: Monitor, cache_dir: str | Path, config: TrainConfig, audio_config: AudioConfig,
                 mel_stats: MelStats) -> None:  # fmt: skip
        self.monitor, self.config, self.audio_config, self.mel_stats = monitor, config, audio_config, mel_stats
        self.metrics: dict[str, float] = {}
        self.best: float | None = None
        self._baseline_logged = False
        self._warned_missing = False
        self.utterances = self._load(cache_dir) if config.quality_utterances is not None else []

    def _load(self, cache_dir: str | Path) -> list[QualityUtterance]:
        try:
            val = AudioDataset(cache_dir, "val", None, n_classes=None)
        except ValueError:  # no validation utterances
            logger.warning("quality_utterances is set but the cache has no validation utterances: no quality metrics")
            return []
        hop, rate = self.audio_config.hop_length, self.audio_config.sample_rate
        frames = max(1, math.ceil(self.config.quality_seconds * rate / hop))
        out = []
        for i in range(min(self.config.quality_utterances, len(val))):
            item = val[i]
            mel = item["mel"][:, :frames]
            speaker = int(item["speaker"]) if "speaker" in item else None
            out.append(QualityUtterance(val.ids[i], item["audio"][: mel.shape[1] * hop].numpy(), mel, speaker))
        return out

    @property
    def enabled(self) -> bool:
        return bool(self.utterances)

    def due(self, step: int, validated: bool, last: bool) -> bool:
        """Whether step ``step`` evaluates: with every validation (``quality_every=None``) or every
        ``quality_every`` steps and at the end."""
        if not self.enabled:
            return False
        every = self.config.quality_every
        return validated if every is None else step % every == 0 or last

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: WaveNet, step: int) -> dict[str, float]:
        """Vocode the utterances with ``model`` (copied; it is not changed), log everything at ``step`` and return
        the mean metrics. Rank 0 only."""
        from ..quality.metrics import mean_metrics  # deferred: the metrics load librosa
        from ..vocoder import Vocoder

        started = time.perf_counter()
        vocoder = Vocoder(model, self.audio_config, self.mel_stats)
        seed = self.config.seed
        if any(u.speaker is not None for u in self.utterances):
            waves = [vocoder(u.mel, seed=seed, speaker=u.speaker) for u in self.utterances]
        else:
            waves = vocoder.vocode_many([u.mel for u in self.utterances], seed=seed)
        rows = [self._metrics(u.audio, w.numpy()) for u, w in zip(self.utterances, waves, strict=True)]
        self.metrics = mean_metrics(rows)
        seconds = time.perf_counter() - started
        self._write(step, waves, seconds)
        logger.info("step %d: quality %s (%.1f s)", step, _describe(self.metrics), seconds)
        return self.metrics

    def _metrics(self, reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
        from ..quality import metrics as q

        rate, config = self.audio_config.sample_rate, self.audio_config
        if not self._warned_missing:
            try:
                return q.copy_synthesis_metrics(reference, estimate, rate, config)
            except q.MissingEvalDependency as err:
                logger.warning("quality during training without STOI and PESQ: %s", err)
                self._warned_missing = True
        # without the eval extra: every metric that needs neither pystoi nor pesq
        return {"mel_l1": q.mel_l1(reference, estimate, rate, config),
                "mcd_db": q.mel_cepstral_distortion(reference, estimate, rate, config),
                **q.f0_metrics(reference, estimate, rate, config),
                "dead_silence": q.dead_silence(reference, estimate, rate, config)}  # fmt: skip

    def _write(self, step: int, waves: list[torch.Tensor], seconds: float) -> None:
        w = self.monitor.writer(step)
        rate = self.audio_config.sample_rate
        for name, value in self.metrics.items():
            if math.isfinite(value):
                w.add_scalar(f"quality/{name}", value, step)
        w.add_scalar("quality/seconds", seconds, step)
        for u, wave in zip(self.utterances, waves, strict=True):
            w.add_audio(f"quality_audio/{u.id}/vocoded", wave[None], step, sample_rate=rate)
            image = spectrogram_image(wave, u.mel, self.audio_config, self.mel_stats)
            w.add_image(f"quality_spectrogram/{u.id}", image, step, dataformats="CHW")
        if not self._baseline_logged:
            self._write_baseline(step)
        w.flush()

    def _write_baseline(self, step: int) -> None:
        """The recordings and Griffin-Lim from the same mels, with Griffin-Lim's metrics: once per run."""
        from ..quality.baseline import griffin_lim
        from ..quality.metrics import mean_metrics

        w = self.monitor.writer(step)
        rate = self.audio_config.sample_rate
        rows = []
        for u in self.utterances:
            gl = griffin_lim(u.mel, self.audio_config, self.mel_stats)
            rows.append(self._metrics(u.audio, gl))
            w.add_audio(f"quality_audio/{u.id}/original", torch.from_numpy(u.audio)[None], step, sample_rate=rate)
            w.add_audio(f"quality_audio/{u.id}/griffin_lim", torch.from_numpy(gl)[None], step, sample_rate=rate)
        for name, value in mean_metrics(rows).items():
            if math.isfinite(value):
                w.add_scalar(f"quality_griffin_lim/{name}", value, step)
        self._baseline_logged = True

    # ------------------------------------------------------------------ best.pt
    def after_step(self, model: WaveNet, step: int, validated: bool, last: bool, best_by_nll: bool,
                   device: torch.device) -> bool:  # fmt: skip
        """Evaluate when due (:meth:`due`) and say whether this step's weights are the best so far: by
        ``best_metric`` when it is a quality metric (its value now beats :attr:`best`; a step that does not evaluate
        is never the best), else ``best_by_nll``. Collective: every process gets rank 0's answer."""
        metric = self.config.best_metric
        due = self.due(step, validated, last)
        better = False
        if due and dist.is_main():
            value = self.evaluate(model, step).get(metric, math.nan)
            if metric != "val_nll" and math.isfinite(value):
                higher = BEST_METRICS[metric]
                better = self.best is None or (value > self.best if higher else value < self.best)
                self.best = value if better else self.best
                if better:
                    logger.info("step %d: best %s so far (%.4g): best.pt follows it", step, metric, value)
        if metric == "val_nll":
            return best_by_nll
        if not due:
            return False
        return bool(dist.all_reduce_sum(torch.tensor([float(better)], device=device)).item() > 0)

    def state_dict(self) -> dict[str, Any]:
        """``{"metrics": the latest means, "best_metric": the config's, "best": its best value}`` for checkpoints."""
        return {"metrics": dict(self.metrics), "best_metric": self.config.best_metric, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore :attr:`metrics` and :attr:`best` from a checkpoint's ``"quality"`` entry (``None``: a checkpoint
        written without one; the best of another ``best_metric`` is not carried over)."""
        if not state:
            return
        self.metrics = dict(state.get("metrics") or {})
        if state.get("best_metric") == self.config.best_metric:
            self.best = state.get("best")


def _describe(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if math.isfinite(v)) or "(no finite metric)"
