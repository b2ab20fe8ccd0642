import math

import pytest
import torch
from torch import nn

from tests._models import MEL, SPEAKER, TINY, tiny_model
from tests._tolerance import assert_close_derived, stack_bound
from wavenet_dilated.checkpoint import load_checkpoint
from wavenet_dilated.nn import dilation as dil
from wavenet_dilated.wavenet import ConditionUpsampler, WaveNet, WaveNetConfig


def embedding_jacobian(model, x, mel=None, t_out=None):
    """|∂ logits[:, :, t_out] / ∂ embedded input| summed over channels: one value per input time step."""
    captured = {}

    def hook(_module, _inp, out):
        out.retain_grad()
        captured["emb"] = out

    handle = model.embed.register_forward_hook(hook)
    try:
        y = model(x, mel)
    finally:
        handle.remove()
    y[:, :, t_out].sum().backward()
    g = captured["emb"].grad  # (B, T, R) for an Embedding
    return g.abs().sum(dim=(0, 2))


@pytest.mark.parametrize(
    "extra",
    [{}, MEL, {**MEL, **SPEAKER}, {**MEL, "mel_context": "1d"}, {**MEL, "mel_context": "2d", "mel_context_channels": 4}],
    ids=["plain", "mel", "mel+speaker", "mel-context-1d", "mel-context-2d"],
)
def test_causal_and_receptive_field_from_gradients(extra):
    model = tiny_model(**extra).double()
    if model.mel_context is not None:
        for p in model.mel_context.parameters():
            torch.nn.init.normal_(p, std=0.3)
    rf = model.receptive_field
    assert rf == dil.receptive_field(3, [1, 2, 4, 1, 2, 4]) == 29
    T = 80
    x = torch.randint(0, 256, (1, T))
    mel = torch.randn(1, 5, T // 8, dtype=torch.float64) if "cond_channels" in extra else None
    for t_out in (5, 40, 79):
        if "n_speakers" in extra:
            continue  # speaker ids are not differentiable inputs; covered by the exactness tests
        g = embedding_jacobian(model, x, mel, t_out)
        nz = torch.nonzero(g).flatten()
        assert int(nz.max()) == t_out, "an output must not depend on inputs after it"
        assert torch.all(g[t_out + 1 :] == 0)
        assert int(nz.min()) == max(0, t_out - rf + 1)


def test_continuous_input_causality_and_rf():
    model = tiny_model(output="gaussian", kernel_size=2).double()
    T = 60
    x = torch.rand(1, T, dtype=torch.float64, requires_grad=True)
    y = model(x)
    y[:, :, 50].sum().backward()
    nz = torch.nonzero(x.grad[0]).flatten()
    assert int(nz.max()) == 50 and int(nz.min()) == 50 - model.receptive_field + 1
    assert model.receptive_field == 1 + (1 + 2 + 4) * 2


def test_mel_future_within_frame_only():
    # the mel path may look ahead (the mel is known), but the audio path may not; changing the mel changes
    # outputs only near the changed frame
    model = tiny_model(**MEL)
    x = torch.randint(0, 256, (1, 64))
    mel = torch.randn(1, 5, 8)
    y = model(x, mel)
    mel2 = mel.clone()
    mel2[:, :, 6] += 1
    diff = (model(x, mel2) - y).abs().sum(dim=(0, 1))
    reach = model.mel_context_frames * 8
    assert torch.all(diff[: max(0, 6 * 8 - reach)] == 0)


def test_dilations_and_preset_rf():
    c = WaveNetConfig()  # ljspeech sizes: 30 layers in 3 stacks, kernel 3
    assert c.dilations[:10] == [2**i for i in range(10)] and len(c.dilations) == 30
    assert c.receptive_field == 1 + 2 * 3 * 1023


def test_last_block_has_no_residual():
    model = tiny_model()
    assert model.blocks[-1].residual is None
    assert all(b.residual is not None for b in model.blocks[:-1])


@pytest.mark.parametrize("output", ["categorical", "mol", "gaussian"])
def test_save_load_round_trip(tmp_path, output):
    model = tiny_model(output=output, **MEL, use_weight_norm=True)
    path = tmp_path / "m.pt"
    model.save(path, step=7)
    loaded = WaveNet.from_checkpoint(path)
    assert loaded.config == model.config
    x = torch.randint(0, 256, (2, 32)) if output == "categorical" else torch.rand(2, 32) * 2 - 1
    mel = torch.randn(2, 5, 4)
    assert torch.equal(loaded(x, mel), model(x, mel))
    assert load_checkpoint(path)["step"] == 7


def test_checkpoint_errors(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.pt"
    model.save(path)
    with pytest.raises(FileNotFoundError):
        WaveNet.from_checkpoint(tmp_path / "missing.pt")
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        WaveNet.from_checkpoint(tmp_path / "trunc.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a wavenet_dilated checkpoint"):
        WaveNet.from_checkpoint(tmp_path / "foreign.pt")
    ckpt = load_checkpoint(path)
    ckpt["config"]["residual_channels"] = 16  # config no longer matches the weights
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match"):
        WaveNet.from_checkpoint(tmp_path / "mismatch.pt")
    ckpt["config"]["colour"] = "blue"
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown WaveNetConfig fields"):
        WaveNet.from_checkpoint(tmp_path / "unknown.pt")


@pytest.mark.parametrize("kwargs,needle", [
    (dict(cond_channels=5, upsample_scales=(2, 4), hop_length=16), "product of upsample_scales"),
    (dict(cond_channels=5, hop_length=8), "upsample_scales"),
    (dict(n_layers=7, n_stacks=2), "multiple of n_stacks"),
    (dict(gate_channels=15), "even"),
    (dict(output="laplace"), "output must be"),
    (dict(n_speakers=3), "both be set"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(mel_context="3d", **MEL), "mel_context"),
])
def test_bad_config(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        WaveNetConfig(**{**TINY, **kwargs})


def test_bad_inputs():
    model = tiny_model(**MEL)
    x = torch.randint(0, 256, (2, 32))
    with pytest.raises(ValueError, match="5 bins, found 7"):
        model(x, torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="expected 32"):
        model(x, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="int64"):
        model(x.float(), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        model(x + 300, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(x[0], torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="mel-conditioned"):
        model(x)
    with pytest.raises(ValueError, match="floating point"):
        model(x, torch.ones(2, 5, 4, dtype=torch.int64))
    plain = tiny_model()
    with pytest.raises(ValueError, match="unconditioned"):
        plain(x, torch.randn(2, 5, 4))
    spk = tiny_model(**SPEAKER)
    with pytest.raises(ValueError, match="speaker-conditioned"):
        spk(x)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        spk(x, speaker=torch.tensor([0, 5]))


def test_skip_scale_and_parameter_count():
    model = tiny_model()
    assert model.skip_scale == math.sqrt(1 / 6)  # the same one division and square root: exact
    assert model.n_parameters == sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("output", ["categorical", "mol"])
def test_tiny_model_learns_a_periodic_signal(output):
    from wavenet_dilated.mulaw import mu_law_encode
    from wavenet_dilated.nn.heads import nats_to_bits

    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**{**TINY, "output": output, "n_mixtures": 3, "n_classes": 256}))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    period = 16
    t = torch.arange(256)

    def batch():
        phase = torch.randint(0, period, (8, 1))
        wave = 0.6 * torch.sin(2 * math.pi * (t + phase) / period)
        return mu_law_encode(wave) if output == "categorical" else wave

    first = None
    for _ in range(300):
        loss = model.loss(batch())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = nats_to_bits(model.loss(batch()).item())
    if output == "categorical":
        assert nats_to_bits(first) > 7.5  # starts near the uniform baseline of 8 bits/sample
        assert final < 2.0, f"{final:.2f} bits/sample after 300 steps"
    else:
        # 256 evenly spaced levels: the uniform baseline is again 8 bits/sample
        assert final < 6.0, f"{final:.2f} bits/sample after 300 steps (started at {nats_to_bits(first):.2f})"


# --- the conditioning upsampler ---------------------------------------------------------------------------------------


def stretched_upsample(up: ConditionUpsampler, mel: torch.Tensor) -> torch.Tensor:
    """The upsampler's definition, at the sample rate: nearest stretch by ``s``, then the ``(1, 2s+1)`` conv."""
    x = mel.unsqueeze(1)
    for s, conv in zip(up.scales, up.smoothers):
        x = conv(x.repeat_interleave(s, dim=3))
    return x.squeeze(1)


@pytest.mark.parametrize("scales", [(2,), (5,), (4, 4, 16), (16, 16), (1, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_upsampler_polyphase_equals_stretch_then_conv(scales, dtype):
    torch.manual_seed(sum(scales))
    up = ConditionUpsampler(scales).to(dtype)
    with torch.no_grad():
        for conv in up.smoothers:  # not a moving average any more, as after training
            conv.weight.add_(0.3 * torch.randn_like(conv.weight))
    mel = torch.randn(2, 3, 7, dtype=dtype, requires_grad=True)
    y, ref = up(mel), stretched_upsample(up, mel)
    assert y.shape == ref.shape == (2, 3, 7 * math.prod(scales))
    # Both evaluate the same 2s+1 products per stage (polyphase pre-adds the taps that read one frame), each within
    # eps·√(2s+1) of its magnitude; a stage's error reaches the output through the later stages, i.e. scaled like the
    # magnitude pipeline: the definition run on |mel| with |weights|.
    abs_up = ConditionUpsampler(scales).to(dtype)
    with torch.no_grad():
        for conv, abs_conv in zip(up.smoothers, abs_up.smoothers, strict=True):
            abs_conv.weight.copy_(conv.weight.abs())
    abs_mel = mel.detach().abs().requires_grad_()
    magnitude = stretched_upsample(abs_up, abs_mel)
    taps = [2 * s + 1 for s in scales]
    assert_close_derived(y, ref, 2 * stack_bound(magnitude.detach(), taps, dtype), "polyphase output")
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, [mel, *up.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [mel, *up.parameters()], g)
    # backward runs the same stages transposed: its magnitude is the magnitude pipeline's gradient fed |g|
    abs_grads = torch.autograd.grad(magnitude, [abs_mel, *abs_up.parameters()], g.abs())
    names = ["mel", *(f"smoother {i}" for i in range(len(scales)))]
    for name, a, b, m in zip(names, grads, ref_grads, abs_grads, strict=True):
        ns = taps if name == "mel" else [*taps, ref.numel()]  # a weight's gradient also sums over the outputs
        assert_close_derived(a, b, 2 * stack_bound(m, ns, dtype), f"gradient of {name}")


def test_upsampler_keeps_its_conv2d_parameters():
    # checkpoints store the smoothing weights under these names, and fastgen reads the nn.Conv2d modules
    up = ConditionUpsampler((4, 2))
    assert [type(c) for c in up.smoothers] == [nn.Conv2d, nn.Conv2d]
    assert {k: tuple(v.shape) for k, v in up.state_dict().items()} == {
        "smoothers.0.weight": (1, 1, 1, 9), "smoothers.1.weight": (1, 1, 1, 5)}
    inner = up(torch.ones(1, 2, 6))[..., 10:-10]  # away from the zero padding: a moving average of ones
    # each stage sums 2s+1 positive products (magnitude 1), and each weight 1/(2s+1) is itself rounded once
    assert_close_derived(inner, torch.ones_like(inner), stack_bound(1.0, [2 * 4 + 2, 2 * 2 + 2], torch.float32))
