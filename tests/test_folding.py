"""One weight folding (generation/folding.py) serves every path: the folded matrices applied in plain torch reproduce
model.forward, and the compiled CPU loop, the CUDA-graph step, the fused training loss and the reference generator all
read their weights from it. The float64 oracle the generation tests compare against is in ``tests/_oracle.py``."""

import pytest
import torch

from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._oracle import folded_logits, loss_bound
from tests._tolerance import assert_close_derived
from wavenet_dilated.generation import folding
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation.cuda_graph import CudaGraphGenerator
from wavenet_dilated.generation.packing import host_weights
from wavenet_dilated.train.fused_loss import fused_forward, fused_loss


def without_biases(model):
    """``model`` with every bias the folding reads removed (the config has no switch for it)."""
    for b in model.blocks:
        for conv in (b.conv.conv, b.skip) + ((b.residual,) if b.residual is not None else ()):
            conv.bias = None
    model.out1.bias = model.out2.bias = None
    return model


CASES = {
    "plain": dict(),
    "mel+speaker": dict(**MEL, **SPEAKER),
    "k2-mol": dict(kernel_size=2, output="mol", **MEL),
    "gaussian": dict(output="gaussian"),
    "weight-norm": dict(use_weight_norm=True, **MEL),
    "mel-context": dict(mel_context="1d", **MEL),
}


def case(name, seed=1):
    extra = CASES[name]
    model = tiny_model(seed=seed, **extra)
    if extra.get("use_weight_norm"):
        with torch.no_grad():  # gains away from 1, so that evaluating the weight norm matters
            for p in model.parameters():
                p.mul_(1.1)
    B, T = 3, 96
    x = random_inputs(model, B, T)
    mel = torch.randn(B, 5, T // 8) if "cond_channels" in extra else None
    spk = torch.tensor([0, 2, 1]) if "n_speakers" in extra else None
    return model, x, mel, spk


@pytest.mark.parametrize("name", list(CASES))
def test_folded_matrices_reproduce_forward(name):
    model, x, mel, spk = case(name)
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        full = model(x, mel, spk)
    assert bound.max() < 1e-3 * ref.abs().max()  # the bound is a rounding bound, not a blanket
    assert_close_derived(full, ref, bound, "logits")
    # and a real error is far outside it: one layer's residual scale forgotten
    with torch.no_grad():
        for p in model.blocks[2].residual.parameters():  # (weight norm: its gain, so the weight scales too)
            p.mul_(1 / folding.RES_SCALE)
        broken = model(x, mel, spk)
    with pytest.raises(AssertionError, match="exceeds the derived bound"):
        assert_close_derived(broken, ref, bound, "logits")


def test_missing_biases_fold_to_zeros():
    model = without_biases(tiny_model(seed=4, **MEL, **SPEAKER))
    B, T = 2, 80
    x, mel, spk = random_inputs(model, B, T), torch.randn(B, 5, T // 8), torch.tensor([1, 2])
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        assert_close_derived(model(x, mel, spk), ref, bound, "logits")
    w = folding.fold(model)
    assert not w.conv_bias.any() and not w.skip_bias.any() and not w.res_bias.any() and not w.out2_bias.any()
    # the CUDA-graph step runs such a model (eagerly here) and samples what the reference samples
    uniforms = G.UniformStream(B, 1, torch.Generator().manual_seed(3))
    out = CudaGraphGenerator(model, B, capture=False).run(T, uniforms, model.upsample(mel), model.speaker_vector(spk, B))
    assert torch.equal(out, G.generate(model, mel=mel, speaker=spk, seed=3))


@pytest.mark.parametrize("name", ["plain", "mel+speaker", "gaussian"])
def test_cuda_graph_and_cpu_paths_read_the_same_folded_weights(name):
    model, *_ = case(name)
    host, cuda = host_weights(model), CudaGraphGenerator(model, 2, capture=False)
    for i in range(model.config.n_layers):
        assert torch.equal(cuda.w_conv[i].T, torch.from_numpy(host.conv[i]))
        assert torch.equal(cuda.w_skip[i].T, torch.from_numpy(host.skip[i]))
        if cuda.w_res[i] is None:
            assert i == model.config.n_layers - 1 and host.res[i].shape[0] == 0  # the last layer's residual dropped
        else:
            assert torch.equal(cuda.w_res[i].T, torch.from_numpy(host.res[i]))
            assert torch.equal(cuda.b_res[i], torch.from_numpy(host.res_bias[i]))
    for a, b in ((cuda.b_skip, host.skip_bias), (cuda.w_out1.T, host.out1), (cuda.b_out1, host.out1_bias),
                 (cuda.w_out2.T, host.out2), (cuda.b_out2, host.out2_bias)):
        assert torch.equal(a, torch.from_numpy(b))
    assert torch.equal(cuda.conv_bias, host.conv_bias)
    assert (cuda.cond_weight is None) == (host.cond_weight is None)
    if cuda.cond_weight is not None:
        assert torch.equal(cuda.cond_weight, host.cond_weight)
        assert torch.equal(G.CachedGenerator(model).cond_weight, host.cond_weight)  # the reference's stacked projection


@pytest.mark.parametrize("name", list(CASES))
def test_fused_training_forward_and_loss_are_the_folded_function(name):
    model, x, mel, spk = case(name)
    ref, bound = folded_logits(model, x, mel, spk)
    with torch.no_grad():
        fused = fused_forward(model, x, mel, spk)
    assert_close_derived(fused, ref, bound, "logits")
    model.train()
    audio = torch.cat([x[:, 1:], x[:, :1]], dim=1)
    loss, want = fused_loss(model, audio, mel, spk), model.loss(audio, mel, spk)
    assert loss.requires_grad  # it trains
    assert_close_derived(loss, want, loss_bound(model, audio, mel, spk), "loss")
