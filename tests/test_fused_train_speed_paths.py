"""The fused loss's hand-written residual stack (``_ResidualStack``) computes the same function and the same gradients
as the plain autograd expression of the blocks it replaces, and is used only where it applies."""

import pytest
import torch

import wavenet_dilated.train.fused_loss as fused
from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._tolerance import assert_close_derived, stack_bound
from tests.test_fused_loss import grads

# dilations up to 2**7 = 128 (padding 256) against crops of 48 samples: taps that read only causal zeros
LONG = dict(n_layers=8, n_stacks=1)


def loss_and_grads(model, audio, mel, spk, n_history, stack: bool, monkeypatch):
    """The fused loss and the gradients of every parameter and of ``mel``, through the stack or the plain blocks."""
    with monkeypatch.context() as m:
        m.setattr(fused, "_stack_applies", lambda model, x: stack)
        model.zero_grad()
        mel = mel.clone().requires_grad_() if mel is not None else None
        loss = fused.fused_loss(model, audio, mel, spk, n_history)
        loss.backward()
    g = grads(model)
    if mel is not None:
        g["mel"] = mel.grad
    return loss.detach(), g


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("n_history", [0, 21])
@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}, {"kernel_size": 2, **MEL}, {"output": "gaussian"},
                                   {**LONG, **MEL}, {"use_weight_norm": True, **MEL, **SPEAKER}],
                         ids=["plain", "mel", "mel+speaker", "k2", "gaussian", "long-dilations", "weight-norm"])
def test_stack_gives_the_gradients_of_the_plain_blocks(monkeypatch, extra, n_history, B):
    model = tiny_model(seed=3, **extra).train()
    T = 48
    audio = random_inputs(model, B, T)
    mel = torch.randn(B, 5, T // 8) if "cond_channels" in extra else None
    spk = torch.arange(B) % 3 if "n_speakers" in extra else None
    loss, g = loss_and_grads(model, audio, mel, spk, n_history, True, monkeypatch)
    ref, g_ref = loss_and_grads(model, audio, mel, spk, n_history, False, monkeypatch)
    c = model.config
    # both evaluate the same sums in other orders: per layer at most n = K·R + C_mel + 1 terms (the bias rides in a
    # product), a gradient entry sums B·T samples' products, through at most L + 3 layers; both evaluations round
    n = c.kernel_size * c.residual_channels + (c.cond_channels or 0) + 1
    ns = [B * T * n] * (c.n_layers + 3)
    assert_close_derived(loss, ref, 2 * stack_bound(ref.abs(), ns, torch.float32), "loss")
    assert g.keys() == g_ref.keys()
    for name in g:
        bound = 2 * stack_bound(g_ref[name].abs().max(), ns, torch.float32)
        assert_close_derived(g[name], g_ref[name], bound, name)


def test_stack_is_used_where_it_applies_only():
    x = torch.zeros(1, 4, 8)
    model = tiny_model(dropout=0.5, **MEL)
    assert fused._stack_applies(model.eval(), x)
    assert not fused._stack_applies(model.train(), x)  # dropout masks are drawn by the plain blocks
    assert fused._stack_applies(tiny_model(**MEL).train(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused._stack_applies(tiny_model(**MEL).train(), x)


def test_stack_frees_its_buffers_after_one_backward():
    model = tiny_model(seed=4, **MEL).train()
    audio, mel = torch.randint(0, 256, (2, 32)), torch.randn(2, 5, 4)
    loss = fused.fused_loss(model, audio, mel)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="back-propagate once"):
        loss.backward()


def test_stack_without_grad_computes_the_same_skips():
    model = tiny_model(seed=5, **MEL, **SPEAKER).train()
    c = model.config
    x, cond = torch.randn(2, 40, c.residual_channels), torch.randn(2, 40, c.cond_channels)
    g = model.speaker_vector(torch.tensor([2, 0]), 2)
    starts = fused._layer_starts(list(model.blocks), 7)
    with torch.no_grad():  # nothing saved for a backward
        off = fused._stack_skips(model, x, cond, g, starts, 7)
    on = fused._stack_skips(model, x, cond, g, starts, 7)
    assert on.requires_grad and torch.equal(off, on.detach())  # the same operations in the same order
