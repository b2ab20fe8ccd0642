"""Copy-synthesis quality: objective metrics, the Griffin-Lim baseline, and the evaluation of a vocoder on a corpus.

    reference wav → Vocoder.mel → Vocoder (or griffin_lim) → estimate
      → copy_synthesis_metrics(Vocoder.prepare(wav), estimate, rate) → {mel_l1, mcd_db, stoi, pesq_wb, ...}

:mod:`~wavenet_dilated.quality.metrics` (the metrics, :data:`METRICS`), :mod:`~wavenet_dilated.quality.baseline`
(:func:`griffin_lim`) and :mod:`~wavenet_dilated.quality.evaluate` (:func:`evaluate_vocoder`, the corpus splits the
``evaluate`` command reads). ``pystoi`` and ``pesq`` come with the ``eval`` extra (``pip install -e ".[eval]"``). The
names below load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "EVAL_INSTALL_HINT": "metrics",
    "METRICS": "metrics",
    "Metric": "metrics",
    "MissingEvalDependency": "metrics",
    "copy_synthesis_metrics": "metrics",
    "mean_metrics": "metrics",
    "griffin_lim": "baseline",
    "Evaluation": "evaluate",
    "UtteranceResult": "evaluate",
    "corpus_utterances": "evaluate",
    "evaluate_vocoder": "evaluate",
}

__all__ = [
    "EVAL_INSTALL_HINT",
    "METRICS",
    "Evaluation",
    "Metric",
    "MissingEvalDependency",
    "UtteranceResult",
    "copy_synthesis_metrics",
    "corpus_utterances",
    "evaluate_vocoder",
    "griffin_lim",
    "mean_metrics",
]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # what static checkers and IDEs see
    from .baseline import griffin_lim
    from .evaluate import Evaluation, UtteranceResult, corpus_utterances, evaluate_vocoder
    from .metrics import (
        EVAL_INSTALL_HINT,
        METRICS,
        Metric,
        MissingEvalDependency,
        copy_synthesis_metrics,
        mean_metrics,
    )
