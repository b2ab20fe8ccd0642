"""Training a WaveNet: the trainer, its config and state, monitoring, the fused loss and the distributed helpers.

- :mod:`~wavenet_dilated.train.trainer`: :class:`Trainer` (setup, fit, step, validate, checkpoints, stop on signal),
  :class:`TrainSummary`, :class:`DivergedError` and its :class:`NonFiniteLossError`;
- :mod:`~wavenet_dilated.train.config`: :class:`TrainConfig` and the learning-rate schedule :func:`lr_factor`;
- :mod:`~wavenet_dilated.train.sampler`: :class:`StepBatchSampler`, the batches of each step as a function of
  ``(seed, step, rank)``;
- :mod:`~wavenet_dilated.train.state`: :class:`ModelEMA`, the RNG states, seeding and resuming;
- :mod:`~wavenet_dilated.train.monitor`: TensorBoard, the log lines and vocoded samples;
- :mod:`~wavenet_dilated.train.quality_log`: copy-synthesis metrics, audio and spectrograms while training;
- :mod:`~wavenet_dilated.train.fused_loss`: ``WaveNet.loss`` as plain matrix products for the CPU (import
  ``fused_loss`` from that module: the package attribute of that name is the module itself);
- :mod:`~wavenet_dilated.train.distributed`: ``torch.distributed`` helpers that are no-ops on one process.

The names below are loaded on first use (PEP 562): importing this package, or one of its light modules such as
``distributed``, does not import the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Trainer": "trainer",
    "TrainSummary": "trainer",
    "DivergedError": "trainer",
    "NonFiniteLossError": "trainer",
    "TrainConfig": "config",
    "lr_factor": "config",
    "ModelEMA": "state",
    "StepBatchSampler": "sampler",
}

__all__ = [
    "DivergedError",
    "ModelEMA",
    "NonFiniteLossError",
    "StepBatchSampler",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "lr_factor",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # what static checkers and IDEs see
    from .config import TrainConfig, lr_factor
    from .sampler import StepBatchSampler
    from .state import ModelEMA
    from .trainer import DivergedError, NonFiniteLossError, Trainer, TrainSummary
