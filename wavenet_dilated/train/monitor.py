"""Watching a run: the TensorBoard writer, the training and validation log lines, vocoded samples, and the stop
on divergence (:class:`DivergedError`, :class:`NonFiniteLossError`, :func:`divergence`).

Only rank 0 writes (:class:`Monitor` does nothing on the other processes). TensorBoard tags: ``train/nll_bits``,
``train/lr``, ``train/grad_norm``, ``train/samples_per_s``, ``val/nll_bits``, ``sample/audio`` and ``sample/mel``;
samples also go to ``out_dir/samples/step_<step>.wav``. The copy-synthesis quality tags (``quality/…``) are written
by :mod:`~wavenet_dilated.train.quality_log`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..audio import AudioConfig, save_audio
from ..generation.fast import fast_generate
from ..generation.reference import to_waveform
from ..mel import MelStats, log_mel
from ..nn.heads import make_head, nats_to_bits
from ..wavenet import WaveNet, WaveNetConfig
from . import distributed as dist
from .config import TrainConfig

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["DivergedError", "Monitor", "NonFiniteLossError", "TrainMeter", "divergence", "divergence_baseline_bits",
           "generate_sample", "mel_image", "require_tensorboard", "sample_source", "uniform_nll_bits"]

logger = logging.getLogger(__name__)


def require_tensorboard() -> None:
    """Training writes TensorBoard events: raise ``ModuleNotFoundError`` (``name="tensorboard"``) with the install hint
    when the package is missing (it is the ``train`` extra, not a core dependency: inference does not need it)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError("training writes TensorBoard events and the tensorboard package is not installed: "
                                  "pip install 'wavenet_dilated[train]' (or pip install tensorboard)", name="tensorboard")

_HINT = "Try a lower lr, a grad_clip, more warmup_steps or amp=None."


class DivergedError(RuntimeError):
    """Training diverged and was stopped; the diverged weights were saved neither as a checkpoint nor as best.pt.

    Attributes:
        step: the step at which it was detected.
        reason: what was found (one phrase).
        checkpoint: the last good checkpoint, or ``None`` when none was written.
    """

    def __init__(self, step: int, reason: str, checkpoint: Path | None, kept: str = "the diverged weights were not "
                 "saved") -> None:  # fmt: skip
        self.step, self.reason, self.checkpoint = step, reason, checkpoint
        last = f"the last good checkpoint is {str(checkpoint)!r}" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"training stopped at step {step}: {reason}; {kept} and {last}. {_HINT}")


class NonFiniteLossError(DivergedError):
    """The loss or the gradient norm became NaN or infinite; the weights were not updated by that step.

    Attributes (besides :class:`DivergedError`'s):
        loss: the loss in nats (mean over processes).
        grad_norm: the global gradient norm.
    """

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint: Path | None) -> None:
        self.loss, self.grad_norm = loss, grad_norm
        super().__init__(step, f"non-finite loss {loss} (grad norm {grad_norm})", checkpoint,
                         kept="the weights were not updated")


def uniform_nll_bits(config: WaveNetConfig) -> float:
    """The NLL (bits/sample) of a model that knows nothing: uniform over the classes (categorical, mixture of
    logistics: ``log2(n_classes)``), or the uniform density on [−1, 1] (gaussian: 1 bit)."""
    return 1.0 if config.output == "gaussian" else math.log2(config.n_classes)


@functools.cache
def _worst_in_range_nll_bits(output: str, n_classes: int, n_mixtures: int, log_scale_min: float) -> float:
    head = make_head(output, n_classes, n_mixtures, log_scale_min)
    logits = torch.zeros(1, head.out_channels, 1, dtype=torch.float64)
    if output == "gaussian":
        logits[0, 0], logits[0, 1] = 1.0, log_scale_min
        targets = [-1.0]
    else:
        k = n_mixtures
        logits[0, k : 2 * k], logits[0, 2 * k :] = 1.0, log_scale_min
        # the lowest level takes the whole tail (a CDF), the next one is a bin: the two worst cases of the two formulas
        targets = [-1.0, min(1.0, -1.0 + 2.0 / (n_classes - 1))]
    losses = [head.loss(logits, torch.full((1, 1), t, dtype=torch.float64)).item() for t in targets]
    return float(nats_to_bits(max(losses)))


def divergence_baseline_bits(config: WaveNetConfig) -> float:
    """The NLL (bits/sample) above which, by more than ``diverge_margin_bits``, :func:`divergence` stops a run.

    Categorical head: the uniform guess over the classes, ``log2(n_classes)`` (:func:`uniform_nll_bits`); a softmax
    whose loss is far above it has weights that blew up.

    Continuous heads (``"mol"``, ``"gaussian"``): the NLL the head itself gives the worst prediction that still lies
    inside the signal's range — every location at +1, every scale at its floor ``exp(log_scale_min)``, the target at
    −1 (for the mixture, also the lowest bin that is not a tail). A density's NLL is unbounded above: a scale that has
    narrowed on quiet audio meets a loud onset, and a healthy run's loss jumps for a few steps to tens or hundreds of
    bits above a uniform guess (measured on the demo corpus at lr 3e-2: 66 bits for the mixture, 317 for the
    Gaussian) before it comes back down, so a uniform baseline stopped such runs as diverged within their first 25
    steps. No prediction with its locations in [−1, 1] and its scales between the floor and the width of the range
    (2) scores worse than this baseline (the NLL falls as the target nears the location and, for scales up to 2, as
    the scale grows), so a loss beyond it means the predictions have left the signal's range: weights that blew up.
    It is a check for that, not for a run that worsens slowly (for Gaussian heads the baseline is about
    ``2 · exp(−2 · log_scale_min)`` nats); ``diverge_val_rise_bits`` covers the latter on every head.
    """
    if config.output == "categorical":
        return uniform_nll_bits(config)
    return _worst_in_range_nll_bits(config.output, config.n_classes, config.n_mixtures, float(config.log_scale_min))


def divergence(what: str, bits: float, model_config: WaveNetConfig, config: TrainConfig,
               best_val_bits: float | None = None) -> str | None:  # fmt: skip
    """Why ``bits`` (a training loss or, with ``best_val_bits``, a validation NLL, in bits/sample) means the run
    diverged, or ``None`` when it does not: above :func:`divergence_baseline_bits` (a uniform guess for categorical
    heads, the worst prediction inside the signal's range for continuous ones) by more than
    ``config.diverge_margin_bits``, or a validation NLL above the best so far by more than
    ``config.diverge_val_rise_bits``."""
    baseline = divergence_baseline_bits(model_config)
    margin, rise = config.diverge_margin_bits, config.diverge_val_rise_bits
    if margin is not None and bits > baseline + margin:
        name = ("the uniform baseline" if model_config.output == "categorical" else
                "the baseline (the NLL of the worst prediction inside the signal's range)")  # fmt: skip
        return f"{what} {bits:.4g} bits/sample is more than diverge_margin_bits={margin:g} above {name} {baseline:.4g}"
    if rise is not None and best_val_bits is not None and bits > best_val_bits + rise:
        return (f"{what} {bits:.4g} bits/sample is more than diverge_val_rise_bits={rise:g} above the best "
                f"{best_val_bits:.4g}")
    return None


class TrainMeter:
    """The mean loss and the throughput over the steps since the last :meth:`reset`."""

    def __init__(self, samples_per_step: int) -> None:
        self.samples_per_step = samples_per_step
        self.reset()

    def reset(self) -> None:
        """Start a new interval now."""
        self.loss, self.steps, self.started = 0.0, 0, time.perf_counter()

    def add(self, loss: float) -> None:
        """Count one step with ``loss`` (nats)."""
        self.loss += loss
        self.steps += 1

    def mean(self) -> tuple[float, float]:
        """``(mean loss in bits/sample, audio samples per second)`` over the interval so far."""
        dt = time.perf_counter() - self.started
        return nats_to_bits(self.loss / self.steps), self.steps * self.samples_per_step / max(dt, 1e-9)


class Monitor:
    """The rank-0 TensorBoard writer of a run directory and the log lines that go with it.

    Args:
        out_dir: the run directory (``tensorboard/`` and ``samples/`` go inside).
        audio_config: sample rate and mel settings of the samples.
        mel_stats: the mel normalisation, for the mel images.
    """

    def __init__(self, out_dir: Path, audio_config: AudioConfig, mel_stats: MelStats) -> None:
        self.out_dir, self.audio_config, self.mel_stats = out_dir, audio_config, mel_stats
        self._writer: SummaryWriter | None = None

    def writer(self, step: int) -> SummaryWriter | None:
        """The ``SummaryWriter`` on rank 0 (``None`` elsewhere); created on first use, discarding the events a
        previous run wrote at ``step`` and after (a resumed run rewrites them)."""
        if self._writer is None and dist.is_main():
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter  # deferred: importing tensorboard takes a second

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step or None)
        return self._writer

    def flush(self) -> None:
        """Write pending events (if the writer exists)."""
        if self._writer is not None:
            self._writer.flush()

    def log_train(self, step: int, loss_bits: float, lr: float, grad_norm: float, samples_per_s: float) -> None:
        """The training scalars of the interval that ends at ``step``."""
        if not dist.is_main():
            return
        w = self.writer(step)
        w.add_scalar("train/nll_bits", loss_bits, step)
        w.add_scalar("train/lr", lr, step)
        w.add_scalar("train/grad_norm", grad_norm, step)
        w.add_scalar("train/samples_per_s", samples_per_s, step)
        logger.debug("step %d: loss %.4f bits/sample, grad norm %.3g, %.0f samples/s", step, loss_bits, grad_norm,
                     samples_per_s)

    def log_validation(self, step: int, val_nll_bits: float, best: bool, started: float) -> None:
        """The validation NLL at ``step``; ``started`` is ``time.perf_counter()`` when validation began."""
        if not dist.is_main():
            return
        w = self.writer(step)
        w.add_scalar("val/nll_bits", val_nll_bits, step)
        w.flush()
        logger.info("step %d: validation NLL %.4f bits/sample%s (%.1f s)", step, val_nll_bits,
                    " (best)" if best else "", time.perf_counter() - started)

    def log_sample(self, step: int, wave: torch.Tensor, mel: torch.Tensor | None, started: float) -> Path:
        """Write ``wave`` (``(T,)`` in [−1, 1]) to ``samples/step_<step>.wav`` and to TensorBoard with the image of
        :func:`mel_image`; ``started`` is ``time.perf_counter()`` when generation began. Rank 0 only."""
        rate = self.audio_config.sample_rate
        path = save_audio(self.out_dir / "samples" / f"step_{step:08d}.wav", wave.numpy(), rate)
        w = self.writer(step)
        w.add_audio("sample/audio", wave[None], step, sample_rate=rate)
        w.add_image("sample/mel", mel_image(wave, mel, self.audio_config, self.mel_stats), step, dataformats="CHW")
        w.flush()
        logger.info("step %d: wrote sample %s (%.2f s of audio in %.1f s)", step, path, wave.shape[0] / rate,
                    time.perf_counter() - started)
        return path


def sample_source(mel: torch.Tensor | None, seconds: float, audio_config: AudioConfig) -> tuple[torch.Tensor | None, int]:
    """The start of ``mel`` (``(n_mels, F)``; ``None`` for an unconditioned model) that covers ``seconds`` (at most
    all of it), and the number of samples to generate: whole hops of that mel, or ``seconds`` without one."""
    n = max(1, round(seconds * audio_config.sample_rate))
    if mel is None:
        return None, n
    frames = min(mel.shape[1], math.ceil(n / audio_config.hop_length))
    return mel[:, :frames], frames * audio_config.hop_length


@torch.no_grad()
def generate_sample(model: WaveNet, mel: torch.Tensor | None, n_samples: int, device: torch.device,
                    seed: int, speaker: int | None = None) -> torch.Tensor:  # fmt: skip
    """Vocode ``mel`` (``(n_mels, F)``, normalised; ``None`` for an unconditioned model: ``n_samples`` samples), as
    speaker id ``speaker`` for a speaker-conditioned model, with
    :func:`~wavenet_dilated.generation.fast.fast_generate` (the cached generator in compiled code: the same samples as
    :func:`~wavenet_dilated.generation.reference.generate` for a seed; it falls back to that with a warning).

    Returns the waveform ``(T,)`` in [−1, 1] on the CPU; ``model`` is back in its training mode afterwards.
    """
    was_training = model.training
    model.eval()
    threads = torch.get_num_threads()
    # one sample at a time is latency-bound: extra torch threads only add synchronisation; fast_generate picks its
    # own threads
    torch.set_num_threads(1)
    try:
        if mel is None:
            samples = fast_generate(model, n_samples=n_samples, batch_size=1, seed=seed, speaker=speaker)
        else:
            samples = fast_generate(model, mel=mel[None].to(device), seed=seed, speaker=speaker)
        return to_waveform(samples, model)[0].float().cpu()
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def mel_image(wave: torch.Tensor, target: torch.Tensor | None, audio_config: AudioConfig,
              mel_stats: MelStats) -> torch.Tensor:  # fmt: skip
    """``(1, H, F)`` grey image in [0, 1]: the conditioning mel ``target`` (``(n_mels, F)``, normalised) above the mel
    of the generated ``wave``, low bins at the bottom of each."""
    n = wave.shape[0] - wave.shape[0] % audio_config.hop_length
    generated = mel_stats.normalize(log_mel(wave[:n], audio_config))
    rows = [generated]
    if target is not None:
        frames = min(target.shape[1], generated.shape[1])
        rows = [target[:, :frames].cpu(), torch.full((2, frames), 3.0), generated[:, :frames]]
    image = torch.cat([r.flip(0) for r in rows], dim=0)  # flip: low frequencies at the bottom
    return ((image + 3.0) / 6.0).clamp(0.0, 1.0)[None]
