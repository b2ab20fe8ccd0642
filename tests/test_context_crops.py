"""Crops with a receptive field of real history: the data, the loss on the targets only, and the trainer's option."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tests import test_train
from tests._models import MEL, SPEAKER, tiny_model
from tests._oracle import loss_bound
from tests._tolerance import assert_close_derived, stack_bound
from tests.test_fused_loss import grads
from tests.test_train import AUDIO, MODEL
from wavenet_dilated.data.dataset import AudioDataset, history_length
from wavenet_dilated.mulaw import mu_law_encode
from wavenet_dilated.train import TrainConfig, Trainer
from wavenet_dilated.train.fused_loss import fused_forward, fused_loss, training_loss

HOP = AUDIO.hop_length
cache = test_train.cache  # the trainer tests' fixture: six tones at 8 kHz, preprocessed
TRAIN = TrainConfig(lr=1e-2, warmup_steps=2, max_steps=4, batch_size=2, max_time_steps=4 * HOP, ema_decay=0.9,
                    log_every=1, val_every=2, checkpoint_every=2, sample_every=None, num_workers=0, device="cpu",
                    crop_history="receptive_field")  # fmt: skip


def test_history_length_is_the_receptive_field_in_whole_hops():
    assert history_length(2047, 256) == 2048  # 2046 past samples → 8 hops
    assert history_length(257, 256) == 256  # exactly one hop
    assert history_length(258, 256) == 512
    assert history_length(1, 256) == 0  # a model that sees only its own input needs no history
    with pytest.raises(ValueError, match="receptive_field"):
        history_length(0, 256)


# --- the loss --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_history", [0, 5, 28, 40, 72], ids=lambda h: f"history{h}")
@pytest.mark.parametrize("extra", [{}, {**MEL, **SPEAKER}, {"output": "mol", **MEL}, {"output": "gaussian"},
                                   {"kernel_size": 2, **MEL}], ids=["plain", "mel+speaker", "mol", "gaussian", "k2"])
def test_fused_loss_with_history_is_the_mean_over_the_targets_only(extra, n_history):
    """28 = the receptive field less one (every layer a valid convolution), 5 and 40 short and past it."""
    model = tiny_model(seed=3, **extra).train()
    assert model.receptive_field - 1 == 28 or extra.get("kernel_size") == 2
    B, T = 3, 96
    audio = torch.randint(0, 256, (B, T)) if model.head.quantized else torch.rand(B, T) * 2 - 1
    mel = torch.randn(B, 5, T // 8) if "cond_channels" in extra else None
    spk = torch.tensor([0, 2, 1]) if "n_speakers" in extra else None
    # the reference: WaveNet.forward over the whole crop, the head's loss over the targets' logits only
    model.zero_grad()
    logits = model(model.shift_right(audio), mel, spk)
    ref = model.head.loss(logits[:, :, n_history:], audio[:, n_history:])
    ref.backward()
    g_ref = grads(model)
    model.zero_grad()
    loss = fused_loss(model, audio, mel, spk, n_history)
    loss.backward()
    g = grads(model)
    assert_close_derived(loss, ref, loss_bound(model, audio, mel, spk, n_history), "loss")
    assert g.keys() == g_ref.keys()
    c = model.config  # as in test_fused_loss: L + 3 layers of at most K·R + C_mel terms, over B·T positions
    n = c.kernel_size * c.residual_channels + (c.cond_channels or 0)
    for name in g:
        bound = 2 * stack_bound(g_ref[name].abs().max(), [B * T * n] * (c.n_layers + 3), torch.float32)
        assert_close_derived(g[name], g_ref[name], bound, name)
    assert torch.equal(training_loss(model, audio, mel, False, n_history, spk), ref.detach())  # the same operations


def test_first_target_sees_the_whole_receptive_field_of_history():
    """The first target's logits change with every history input inside its receptive field, the oldest included,
    and not with the one before it."""
    model = tiny_model(seed=4, **MEL)
    H, T, rf = 32, 96, model.receptive_field  # history ≥ receptive field − 1 = 28
    audio = torch.randint(0, 256, (2, T))
    mel = torch.randn(2, 5, T // 8)
    first = fused_forward(model, model.shift_right(audio), mel)[:, :, H]

    def first_logits_with_sample_changed(index):
        moved = audio.clone()
        moved[:, index] = (moved[:, index] + 128) % 256
        return fused_forward(model, model.shift_right(moved), mel)[:, :, H], moved

    # the first target's input is the last history sample (teacher forcing), its oldest input rf − 1 before that
    for index in (H - 1, H - rf):
        logits, moved = first_logits_with_sample_changed(index)
        assert not torch.equal(logits, first), index  # rows of the products do not depend on other rows
        if index == H - 1:  # the oldest input's effect on a random model is too small to move a mean of 128 NLLs
            assert fused_loss(model, moved, mel, n_history=H) != fused_loss(model, audio, mel, n_history=H)
    logits, _ = first_logits_with_sample_changed(H - rf - 1)  # out of its reach
    assert torch.equal(logits, first)


# --- the data ----------------------------------------------------------------------------------------------------------


def test_history_crops_carry_the_utterance_before_the_same_targets(cache):
    crop, history = 4 * HOP, 2 * HOP
    plain = AudioDataset(cache, "train", crop, n_classes=None, mel_normalize=False, seed=5)
    hist = AudioDataset(cache, "train", crop, n_classes=None, mel_normalize=False, seed=5, history=history)
    manifest = plain.manifest
    silent = math.log(AUDIO.mel_floor)
    seen_start = seen_inside = False
    for epoch in range(4):
        plain.set_epoch(epoch)
        hist.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], hist[i]
            assert b["audio"].shape == (history + crop,) and b["mel"].shape == (16, (history + crop) // HOP)
            assert torch.equal(b["audio"][history:], a["audio"]) and torch.equal(b["mel"][:, history // HOP :], a["mel"])
            start = plain.crop_start(i)
            wav = np.load(manifest.audio_path(plain.entries[i].id))
            mel = np.load(manifest.mel_path(plain.entries[i].id))
            real = min(start, history // HOP)  # frames of real history
            lead = history // HOP - real
            assert np.array_equal(b["audio"][lead * HOP : history].numpy(), wav[(start - real) * HOP : start * HOP])
            assert np.array_equal(b["mel"][:, lead : history // HOP].numpy(), mel[:, start - real : start])
            assert torch.all(b["audio"][: lead * HOP] == 0.0)  # silence before the utterance's start
            assert torch.all(b["mel"][:, :lead] == np.float32(silent))
            seen_start |= lead > 0
            seen_inside |= lead == 0
    assert seen_start and seen_inside  # both cases were exercised
    # classes: the silence before the start is the μ-law class of 0.0; normalised mels are normalised the same way
    coded = AudioDataset(cache, "train", crop, seed=5, history=history)
    raw = AudioDataset(cache, "train", crop, n_classes=None, mel_normalize=False, seed=5, history=history)
    item, r = coded[0], raw[0]
    assert torch.equal(item["audio"], mu_law_encode(r["audio"]))
    assert torch.equal(item["mel"], manifest.mel_stats.normalize(r["mel"]))


def test_history_is_checked(cache):
    with pytest.raises(ValueError, match="multiple of hop_length"):
        AudioDataset(cache, "train", 4 * HOP, history=HOP + 1)
    with pytest.raises(ValueError, match="needs crops"):
        AudioDataset(cache, "train", None, history=HOP)
    with pytest.raises(ValueError, match="history"):
        AudioDataset(cache, "train", 4 * HOP, history=-HOP)


# --- the trainer -------------------------------------------------------------------------------------------------------


def test_train_config_checks_crop_history():
    with pytest.raises(ValueError, match="crop_history"):
        TrainConfig(crop_history="rf")
    assert TrainConfig.from_dict({"crop_history": "none"}).crop_history == "none"


def test_trainer_first_target_sees_real_history_and_old_crops_do_not(cache, tmp_path):
    hist = Trainer(MODEL, TRAIN, cache, tmp_path / "hist")
    old = Trainer(MODEL, dataclasses.replace(TRAIN, crop_history="none"), cache, tmp_path / "old")
    H = history_length(MODEL.receptive_field, HOP)
    assert hist.n_history == H == HOP and old.n_history == 0
    b_hist, b_old = next(iter(hist.train_loader(0, 1))), next(iter(old.train_loader(0, 1)))
    # the same crops of targets; the old batch has nothing of what comes before them
    assert torch.equal(b_hist["audio"][:, H:], b_old["audio"])
    assert b_old["audio"].shape[1] == TRAIN.max_time_steps and b_hist["audio"].shape[1] == TRAIN.max_time_steps + H
    model = hist.model
    x_hist, x_old = model.shift_right(b_hist["audio"]), model.shift_right(b_old["audio"])
    first_hist = fused_forward(model, x_hist, b_hist["mel"])[:, :, H]
    first_old = fused_forward(model, x_old, b_old["mel"])[:, :, 0]
    assert not torch.equal(first_hist, first_old)  # old crops: the first target sees only padding
    # the trainer's loss is the mean over the targets only
    per_position = torch.nn.functional.cross_entropy(model(x_hist, b_hist["mel"]), b_hist["audio"], reduction="none")
    want = per_position[:, H:].mean()
    assert_close_derived(hist.net(b_hist["audio"], b_hist["mel"]), want,
                         loss_bound(model, b_hist["audio"], b_hist["mel"], n_history=H), "trainer loss")


def test_history_crops_train_and_are_recorded_in_checkpoints(cache, tmp_path):
    trainer = Trainer(MODEL, TRAIN, cache, tmp_path)
    summary = trainer.fit(progress=False)
    assert summary.step == TRAIN.max_steps and math.isfinite(summary.val_nll_bits)
    ckpt = torch.load(summary.checkpoint, weights_only=True)
    assert TrainConfig.from_dict(ckpt["train_config"]).crop_history == "receptive_field"
