"""Copy-synthesis evaluation of a vocoder: vocode recordings from their own mels and score them, beside Griffin-Lim.

    utterances (a corpus split, or files) → Vocoder.prepare / Vocoder.mel → Vocoder.vocode_many (fast generator)
                                                                          → griffin_lim (the same mel)
      → copy_synthesis_metrics(reference, each estimate) → Evaluation (per utterance, and the means)

The reference of each utterance is :meth:`~wavenet_dilated.vocoder.Vocoder.prepare` (the recording as the model's
features see it: mono, at the model's rate, peak-normalised when training was, whole hops, ends not trimmed) and its
mel is :meth:`~wavenet_dilated.vocoder.Vocoder.mel`, exactly the training features. ``max_seconds`` keeps the first
whole hops of a long utterance, cutting the reference and the mel alike.
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import save_audio
from ..config import check_int, check_number
from ..data.corpus import scan_corpus
from ..data.ljspeech import SPLITS, DataWarning, Utterance, warn_skipped
from ..data.speakers import split_by_speaker
from .baseline import GRIFFIN_LIM_ITERS, griffin_lim
from .metrics import METRICS, compare_estimates, mean_metrics

if TYPE_CHECKING:
    from ..vocoder import Vocoder

__all__ = ["EVAL_SPLITS", "Evaluation", "UtteranceResult", "corpus_utterances", "evaluate_vocoder", "format_table",
           "write_csv"]

#: what ``split`` may name: one of the corpus splits, or every utterance
EVAL_SPLITS = (*SPLITS, "all")
#: the systems every evaluation scores, in table order
SYSTEMS = ("model", "griffin_lim")
#: how a metric that could not be computed is printed
NOT_AVAILABLE = "n/a"

Source = str | os.PathLike[str] | np.ndarray | torch.Tensor


def corpus_utterances(corpus_dir: str | os.PathLike[str], split: str = "val", val_fraction: float = 0.02,
                      test_fraction: float = 0.02) -> list[Utterance]:
    """The utterances of one split of a corpus directory (either layout of :func:`~wavenet_dilated.data.corpus.scan_corpus`:
    LJSpeech format, or one folder per speaker), in id order; what the corpus leaves out is warned about as the cache
    does (one :class:`~wavenet_dilated.data.ljspeech.DataWarning` each).

    The split is the training cache's (:func:`~wavenet_dilated.data.speakers.split_by_speaker`: by a hash of each id,
    within each speaker, with the same fractions: 0.02 and 0.02 for the ``ljspeech`` preset, ``val_fraction=0.1`` for
    ``demo``), so ``"val"`` and ``"test"`` hold utterances the model never trained on; ``"all"`` is every utterance.
    (The cache splits the utterances it could use: with unusable recordings it can differ in the few ids the split
    moves to fill an empty val split.)

    Raises:
        FileNotFoundError: no corpus at ``corpus_dir``.
        ValueError: an unknown split or bad fractions.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, found {split!r}")
    corpus = scan_corpus(corpus_dir)
    for problem in corpus.problems:
        warn_skipped(problem.message)
    members = split_by_speaker({u.id: u.speaker for u in corpus.utterances}, val_fraction, test_fraction)
    chosen = {u.id for u in corpus.utterances} if split == "all" else set(members[split])
    return sorted((u for u in corpus.utterances if u.id in chosen), key=lambda u: u.id)


@dataclass(frozen=True)
class UtteranceResult:
    """One utterance's scores: ``model`` and ``griffin_lim`` map each metric of :data:`METRICS` to its value (NaN
    where it does not apply); ``seconds`` is the length evaluated."""

    id: str
    seconds: float
    model: dict[str, float]
    griffin_lim: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """A copy-synthesis evaluation: per-utterance results and the mean of each metric per system over the utterances
    where it applies (``model``, ``griffin_lim``).

    ``seconds``: audio evaluated in all; ``vocode_seconds`` / ``score_seconds``: compute time of the vocoder and of
    Griffin-Lim plus the metrics; ``skipped``: ``(id, reason)`` of inputs that could not be evaluated.
    """

    sample_rate: int
    seed: int
    temperature: float
    utterances: tuple[UtteranceResult, ...]
    model: dict[str, float]
    griffin_lim: dict[str, float]
    seconds: float
    vocode_seconds: float
    score_seconds: float
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``None``."""
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (v if math.isfinite(v) else None) for k, v in d.items()}

        return {
            "sample_rate": self.sample_rate, "seed": self.seed, "temperature": self.temperature,
            "n_utterances": len(self.utterances), "seconds": round(self.seconds, 3),
            "vocode_seconds": round(self.vocode_seconds, 3), "score_seconds": round(self.score_seconds, 3),
            "model": clean(self.model), "griffin_lim": clean(self.griffin_lim),
            "utterances": [{"id": u.id, "seconds": round(u.seconds, 3), "model": clean(u.model),
                            "griffin_lim": clean(u.griffin_lim)} for u in self.utterances],
            "skipped": [{"id": uid, "reason": why} for uid, why in self.skipped],
        }  # fmt: skip


def _prepare(vocoder: Vocoder, inputs: Sequence[tuple[str, Source]], max_samples: int | None,
             skip_unusable: bool) -> tuple[list[tuple[str, np.ndarray, torch.Tensor]], list[tuple[str, str]]]:
    """``(id, reference, mel)`` per usable input, each cut to ``max_samples`` (whole hops), and the skipped ones."""
    hop = vocoder.hop_length
    prepared, skipped = [], []
    for uid, source in inputs:
        try:
            reference = vocoder.prepare(source)
            mel = vocoder.mel(source)
        except ValueError as err:
            if not skip_unusable:
                raise
            warnings.warn(f"skipping {uid}: {err}", DataWarning, stacklevel=3)
            skipped.append((uid, str(err)))
            continue
        n_frames = mel.shape[1] if max_samples is None else min(mel.shape[1], max_samples // hop)
        prepared.append((uid, reference[: n_frames * hop], mel[:, :n_frames]))
    return prepared, skipped


def _vocode(vocoder: Vocoder, prepared: Sequence[tuple[str, np.ndarray, torch.Tensor]],
            speaker: int | str | Mapping[str, int | str] | None, **options: Any) -> list[torch.Tensor]:
    """The vocoded waveforms, in ``prepared``'s order: one :meth:`Vocoder.vocode_many` per speaker."""
    if not isinstance(speaker, Mapping):
        return vocoder.vocode_many([mel for _, _, mel in prepared], speaker=speaker, **options)
    missing = [uid for uid, _, _ in prepared if uid not in speaker]
    if missing:
        raise ValueError(f"no speaker given for {len(missing)} utterances (e.g. {missing[0]!r})")
    groups: dict[int | None, list[int]] = {}
    for i, (uid, _, _) in enumerate(prepared):
        groups.setdefault(vocoder.speaker_id(speaker[uid]), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(prepared)
    for sid, rows in groups.items():
        for i, wave in zip(rows, vocoder.vocode_many([prepared[i][2] for i in rows], speaker=sid, **options)):
            out[i] = wave
    return out  # type: ignore[return-value]


def evaluate_vocoder(
    vocoder: Vocoder,
    inputs: Sequence[tuple[str, Source]],
    *,
    seed: int = 0,
    temperature: float = 1.0,
    speaker: int | str | Mapping[str, int | str] | None = None,
    max_seconds: float | None = None,
    batch_size: int = 8,
    griffin_lim_iters: int = GRIFFIN_LIM_ITERS,
    save_audio_dir: str | os.PathLike[str] | None = None,
    baseline: bool = True,
    skip_unusable: bool = False,
    progress: bool = True,
) -> Evaluation:
    """Copy synthesis of each input with ``vocoder`` and with Griffin-Lim from the same mel, scored against the
    reference with :func:`~wavenet_dilated.quality.metrics.copy_synthesis_metrics` (the reference analysed once for both).

    Args:
        vocoder: a :class:`~wavenet_dilated.vocoder.Vocoder` with its audio config and mel statistics.
        inputs: ``(id, source)`` pairs; a source is a sound file or an array at the vocoder's rate.
        seed: the vocoder's sampling seed (every utterance gets the same, as :meth:`Vocoder.vocode_many` does) and
            Griffin-Lim's initial phase: the same seed, vocoder and inputs give the same numbers.
        temperature: passed to the vocoder.
        speaker: for a speaker-conditioned vocoder, one speaker (name or id) for every input, or a mapping from each
            input's id to its speaker.
        max_seconds: evaluate only the first that many seconds of each utterance (whole hops); ``None`` = all.
        batch_size: utterances generated at once (grouped by length).
        griffin_lim_iters: Griffin-Lim iterations.
        save_audio_dir: write ``<id>.reference.wav``, ``<id>.vocoded.wav`` and ``<id>.griffin_lim.wav`` (16-bit PCM)
            there; ``None`` = none.
        baseline: also score Griffin-Lim; ``False`` leaves ``griffin_lim`` all NaN (comparing several checkpoints on
            the same inputs needs it once).
        skip_unusable: an input that cannot be prepared (unreadable, NaN samples …) is skipped with a
            :class:`~wavenet_dilated.data.ljspeech.DataWarning` and listed in ``Evaluation.skipped``; ``False`` raises.
        progress: show tqdm bars (vocoding, then scoring).

    Raises:
        ValueError: bad arguments, no usable input, or (``skip_unusable=False``) an unusable one, naming it.
        MissingEvalDependency: ``pystoi`` or ``pesq`` is not installed.
    """
    check_int("seed", seed, 0)
    check_number("max_seconds", max_seconds, 0.0, low_open=True, optional=True)
    if vocoder.audio_config is None or vocoder.stats is None:
        raise ValueError("evaluation computes mels from recordings: the vocoder needs its audio_config and mel stats "
                         "(a checkpoint written by the trainer stores both)")
    config = vocoder.audio_config
    max_samples = None if max_seconds is None else max(int(max_seconds * config.sample_rate), vocoder.hop_length)
    prepared, skipped = _prepare(vocoder, inputs, max_samples, skip_unusable)
    if not prepared:
        raise ValueError("nothing to evaluate: no usable utterance" + (f" ({len(skipped)} skipped)" if skipped else ""))
    start = time.perf_counter()
    vocoded = _vocode(vocoder, prepared, speaker, seed=seed, batch_size=batch_size, temperature=temperature,
                      progress=progress)
    vocode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = []
    for (uid, reference, mel), wave in zip(tqdm(prepared, desc="scoring", unit="utt", disable=not progress), vocoded):
        estimates = {"model": wave.numpy()}
        if baseline:
            estimates["griffin_lim"] = griffin_lim(mel, config, vocoder.stats, n_iter=griffin_lim_iters, seed=seed)
        rate = config.sample_rate
        scores = compare_estimates(reference, estimates, rate, config)
        not_scored = dict.fromkeys(scores["model"], math.nan)
        results.append(UtteranceResult(uid, reference.size / rate, scores["model"], scores.get("griffin_lim", not_scored)))
        if save_audio_dir is not None:
            for kind, audio in (("reference", reference), ("vocoded", estimates["model"]),
                                ("griffin_lim", estimates.get("griffin_lim"))):
                if audio is not None:
                    save_audio(Path(save_audio_dir) / f"{uid}.{kind}.wav", audio, rate)
    return Evaluation(
        sample_rate=config.sample_rate, seed=seed, temperature=float(temperature), utterances=tuple(results),
        model=mean_metrics(r.model for r in results), griffin_lim=mean_metrics(r.griffin_lim for r in results),
        seconds=sum(r.seconds for r in results), vocode_seconds=vocode_seconds,
        score_seconds=time.perf_counter() - start, skipped=tuple(skipped),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- reports


def format_value(value: float, digits: int) -> str:
    """A metric as the table prints it: ``digits`` decimals, or ``n/a`` when it could not be computed."""
    return f"{value:.{digits}f}" if math.isfinite(value) else NOT_AVAILABLE


def format_table(evaluation: Evaluation) -> str:
    """The mean of every metric for the model and for Griffin-Lim, one row per metric, with which way is better."""
    rows = [("metric", "model", "Griffin-Lim", "better")]
    for m in METRICS:
        label = f"{m.label} ({m.unit})" if m.unit else m.label
        rows.append((label, format_value(evaluation.model[m.name], m.digits),
                     format_value(evaluation.griffin_lim[m.name], m.digits), "higher" if m.higher_is_better else "lower"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_csv(evaluation: Evaluation, path: str | os.PathLike[str]) -> Path:
    """One row per utterance: ``id, seconds``, then ``model_<metric>`` and ``griffin_lim_<metric>`` for every metric
    (empty where it could not be computed). Missing directories are created.

    Raises:
        ValueError: the file cannot be written (names it and the reason).
    """
    path = Path(path)
    header = ["id", "seconds", *(f"{s}_{m.name}" for s in SYSTEMS for m in METRICS)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for u in evaluation.utterances:
                values = [getattr(u, s)[m.name] for s in SYSTEMS for m in METRICS]
                writer.writerow([u.id, f"{u.seconds:.3f}", *("" if not math.isfinite(v) else repr(v) for v in values)])
    except OSError as err:
        raise ValueError(f"could not write {str(path)!r}: {err.strerror or err}") from err
    return path
