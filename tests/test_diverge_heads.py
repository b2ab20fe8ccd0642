"""The divergence stop on every output head: the categorical head keeps the uniform baseline; the continuous heads
(mixture of logistics, gaussian), whose healthy loss jumps far above a uniform guess for a few steps, are judged
against the worst prediction inside the signal's range, so such a run trains on, and weights that blew up still stop
it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._corpus import write_wav
from tests.test_train import AUDIO, MODEL, SR, TRAIN
from wavenet_dilated.data import preprocess
from wavenet_dilated.nn.heads import make_head, nats_to_bits
from wavenet_dilated.train import Trainer
from wavenet_dilated.train.monitor import divergence, divergence_baseline_bits, uniform_nll_bits
from wavenet_dilated.train.trainer import DivergedError

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps
CONTINUOUS = ("mol", "gaussian")


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    """Six utterances of near-silence with a loud click every 1000 samples: a head whose scale narrows on the
    silence meets the clicks, and its loss jumps (the healthy spikes the divergence stop must tolerate)."""
    root = tmp_path_factory.mktemp("clicks")
    lines = []
    for i in range(6):
        rng = np.random.default_rng(i)
        x = rng.standard_normal(SR // 2) * 1e-3
        for start in range(0, x.size, 1000):
            x[start + 500 : start + 520] = rng.choice([-0.9, 0.9])
        write_wav(root / "corpus" / "wavs" / f"UT-{i:04d}.wav", x.astype(np.float32), SR)
        lines.append(f"UT-{i:04d}|clicks|clicks\n")
    (root / "corpus" / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    preprocess(root / "corpus", root / "cache", AUDIO, n_workers=1, progress=False, val_fraction=0.2)
    return root / "cache"


def per_sample_bits(output: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The head's NLL (bits) of each row: ``logits (N, C)``, ``targets (N,)`` (fp64)."""
    head = make_head(output, MODEL.n_classes, MODEL.n_mixtures, MODEL.log_scale_min)
    rows = [head.loss(logits[i, None, :, None], targets[i, None, None]) for i in range(len(targets))]
    return nats_to_bits(torch.stack(rows))


def in_range_predictions(output: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random predictions with every location in [−1, 1] and every scale between the floor and 2 (the
    corners included), and targets on the head's levels (both tails included)."""
    g = torch.Generator().manual_seed(seed)
    k = MODEL.n_mixtures if output == "mol" else 1
    locations = torch.rand(n, k, generator=g, dtype=torch.float64) * 2 - 1
    widest = math.log(2.0)
    log_scales = MODEL.log_scale_min + torch.rand(n, k, generator=g, dtype=torch.float64) * (widest - MODEL.log_scale_min)
    locations[:8], log_scales[:8] = 1.0, MODEL.log_scale_min  # the corner: far location, narrowest scale
    levels = torch.linspace(-1, 1, MODEL.n_classes, dtype=torch.float64)
    targets = levels[torch.randint(0, MODEL.n_classes, (n,), generator=g)]
    targets[:4], targets[4:8] = -1.0, levels[1]
    if output == "gaussian":
        return torch.cat([locations, log_scales], dim=1), targets
    weights = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    return torch.cat([weights, locations, log_scales], dim=1), targets


@pytest.mark.parametrize("output", CONTINUOUS)
def test_no_prediction_inside_the_signal_range_scores_worse_than_the_continuous_baseline(output):
    config = dataclasses.replace(MODEL, output=output)
    baseline = divergence_baseline_bits(config)
    bits = per_sample_bits(output, *in_range_predictions(output, 400, seed=1))
    # a handful of roundings of numbers of the baseline's size, in the head's precision (the gaussian's is fp32)
    tolerance = 8 * (EPS32 if output == "gaussian" else EPS64) * baseline
    assert bits.max().item() <= baseline + tolerance
    assert bits.max().item() >= baseline - tolerance  # the corner rows reach it: it is the worst case, not a bound
    assert baseline > uniform_nll_bits(config) + TRAIN.diverge_margin_bits  # far above the old, uniform baseline


@pytest.mark.parametrize("output", CONTINUOUS)
def test_a_loss_between_the_uniform_and_the_continuous_baseline_is_not_a_divergence(output):
    config = dataclasses.replace(MODEL, output=output)
    # a narrow prediction a hundred scales from its target: a spike the uniform baseline called a divergence
    logits, targets = in_range_predictions(output, 1, seed=2)
    k = MODEL.n_mixtures if output == "mol" else 1
    logits[0, -2 * k : -k], logits[0, -k:], targets[0] = 0.0, math.log(0.5 / 100), 0.5
    bits = per_sample_bits(output, logits, targets).item()
    assert bits > uniform_nll_bits(config) + TRAIN.diverge_margin_bits
    assert divergence("the training loss", bits, config, TRAIN) is None
    # the same prediction a thousand units off: weights that blew up
    logits[0, -2 * k : -k] = 1e3
    bits = per_sample_bits(output, logits, targets).item()
    reason = divergence("the training loss", bits, config, TRAIN)
    assert reason is not None and "the worst prediction inside the signal's range" in reason


def test_the_categorical_head_keeps_the_uniform_baseline():
    limit = math.log2(MODEL.n_classes) + TRAIN.diverge_margin_bits
    assert divergence_baseline_bits(MODEL) == uniform_nll_bits(MODEL) == math.log2(MODEL.n_classes)
    assert divergence("the training loss", limit, MODEL, TRAIN) is None
    reason = divergence("the training loss", math.nextafter(limit, math.inf), MODEL, TRAIN)
    assert reason is not None and f"diverge_margin_bits=8 above the uniform baseline {limit - 8:.4g}" in reason


def recorded_fit(trainer: Trainer) -> list[float]:
    """Run ``trainer.fit`` and return each step's training loss in bits (the steps completed before a stop)."""
    losses: list[float] = []
    step = trainer.train_step

    def record(batch):
        loss, norm = step(batch)
        losses.append(nats_to_bits(loss))
        return loss, norm

    trainer.train_step = record
    try:
        trainer.fit(progress=False)
    finally:
        trainer.train_step = step
    return losses


@pytest.mark.parametrize(("output", "lr"), [("mol", 0.03), ("gaussian", 0.1)])
def test_a_continuous_run_whose_loss_spikes_above_a_uniform_guess_trains_on(clicks, tmp_path, output, lr):
    # a margin of 2 bits: on this tiny model the spikes clear the uniform limit by a wide factor (the demo model's,
    # at the default margin of 8, reach 66 bits for the mixture and 317 for the gaussian)
    model = dataclasses.replace(MODEL, output=output)
    config = dataclasses.replace(TRAIN, lr=lr, max_steps=25, diverge_margin_bits=2.0, val_every=25,
                                 checkpoint_every=25)  # fmt: skip
    losses = recorded_fit(Trainer(model, config, clicks, tmp_path))
    assert len(losses) == config.max_steps  # not stopped
    assert max(losses) > uniform_nll_bits(model) + config.diverge_margin_bits  # the old baseline would have stopped it
    assert (tmp_path / "checkpoints" / "ckpt_00000025.pt").exists()


@pytest.mark.parametrize(("output", "lr"), [("mol", 1e3), ("gaussian", 30.0)])
def test_weights_that_blow_up_still_stop_a_continuous_run(clicks, tmp_path, output, lr):
    model = dataclasses.replace(MODEL, output=output)
    config = dataclasses.replace(TRAIN, lr=lr, grad_clip=None, max_steps=25)
    with pytest.raises(DivergedError, match=r"step 2: the training loss [0-9.e+]+ bits/sample is more than "
                                            r"diverge_margin_bits=8 above the baseline \(the NLL of the worst "
                                            r"prediction inside the signal's range\)"):  # fmt: skip
        Trainer(model, config, clicks, tmp_path).fit(progress=False)
    assert not list((tmp_path / "checkpoints").glob("ckpt_*.pt"))
