"""The matrix-product training forward computes the same function as WaveNet.forward (logits and gradients)."""

import pytest
import torch

from tests._models import MEL, SPEAKER, tiny_model
from tests._oracle import folded_logits, loss_bound
from tests._tolerance import assert_close_derived, stack_bound
from wavenet_dilated.train.fused_loss import fused_forward, fused_loss


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}, {**MEL, "mel_context": "1d"}, {"kernel_size": 2},
                                   {"use_weight_norm": True, **MEL}, {"output": "mol", **MEL}, {"output": "gaussian"}],
                         ids=["plain", "mel", "mel+speaker", "mel-context", "k2", "weight-norm", "mol", "gaussian"])
def test_fused_forward_and_gradients_equal_forward(extra):
    model = tiny_model(seed=1, **extra).train()
    B, T = 3, 96
    audio = torch.randint(0, 256, (B, T)) if model.head.quantized else torch.rand(B, T) * 2 - 1
    mel = torch.randn(B, 5, T // 8) if "cond_channels" in extra else None
    spk = torch.tensor([0, 2, 1]) if "n_speakers" in extra else None
    x = model.shift_right(audio)
    bound = folded_logits(model, x, mel, spk)[1]
    assert_close_derived(fused_forward(model, x, mel, spk), model(x, mel, spk), 2 * bound, "logits")
    model.zero_grad()
    ref = model.loss(audio, mel, spk)
    ref.backward()
    g_ref = grads(model)
    model.zero_grad()
    loss = fused_loss(model, audio, mel, spk)
    loss.backward()
    g = grads(model)
    assert_close_derived(loss, ref, loss_bound(model, audio, mel, spk), "loss")
    assert g.keys() == g_ref.keys()
    # a gradient entry sums B·T samples' products through at most L + 3 layers (embedding, L blocks, two outputs) of
    # at most n = K·R + C_mel terms each: each layer rounds by eps·√(B·T·n) of the largest gradient, in both evaluations
    c = model.config
    n = c.kernel_size * c.residual_channels + (c.cond_channels or 0)
    for name in g:
        bound = 2 * stack_bound(g_ref[name].abs().max(), [B * T * n] * (c.n_layers + 3), torch.float32)
        assert_close_derived(g[name], g_ref[name], bound, name)


def test_fused_forward_checks_like_forward():
    model = tiny_model(**MEL)
    x = torch.randint(0, 256, (2, 40))
    with pytest.raises(ValueError, match="pass mel"):
        fused_forward(model, x)
    with pytest.raises(ValueError, match="expected 40"):
        fused_forward(model, x, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="unconditioned"):
        fused_forward(tiny_model(), x, torch.randn(2, 5, 5))


def test_dropout_is_applied_in_training_only():
    model = tiny_model(dropout=0.5, **MEL)
    x = torch.randint(0, 256, (2, 48))
    mel = torch.randn(2, 5, 6)
    assert torch.equal(fused_forward(model.eval(), x, mel), fused_forward(model, x, mel))
    model.train()
    assert not torch.equal(fused_forward(model, x, mel), fused_forward(model, x, mel))


@pytest.mark.parametrize("group_bytes", [1, 1 << 40], ids=["one-layer-per-product", "all-layers-in-one-product"])
def test_mel_projections_grouped_or_not_give_the_same_loss(monkeypatch, group_bytes):
    import wavenet_dilated.train.fused_loss as fasttrain

    monkeypatch.setattr(fasttrain, "_MEL_PROJECTION_BYTES", group_bytes)
    monkeypatch.setattr(fasttrain, "_stack_applies", lambda model, x: False)  # the plain blocks group the projections
    model = tiny_model(seed=2, **MEL, **SPEAKER).train()
    audio, mel, spk = torch.randint(0, 256, (2, 64)), torch.randn(2, 5, 8), torch.tensor([1, 0])
    loss, want = fused_loss(model, audio, mel, spk), model.loss(audio, mel, spk)
    assert_close_derived(loss, want, loss_bound(model, audio, mel, spk), "loss")
