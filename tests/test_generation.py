import pytest
import torch

from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._oracle import assert_same_samples, folded_logits
from tests._tolerance import assert_close_derived
from wavenet_dilated.generation import reference as G
from wavenet_dilated.mulaw import mu_law_decode

SHAPES = [
    dict(kernel_size=2, n_layers=6, n_stacks=2),
    dict(kernel_size=3, n_layers=6, n_stacks=2),
    dict(kernel_size=3, n_layers=5, n_stacks=1),
    dict(kernel_size=2, n_layers=8, n_stacks=4, dilation_base=3),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"k{s['kernel_size']}L{s['n_layers']}S{s['n_stacks']}")
@pytest.mark.parametrize("cond", ["plain", "mel", "speaker", "mel+speaker"])
def test_cached_step_reproduces_forward(shape, cond):
    extra = {}
    if "mel" in cond:
        extra.update(MEL)
    if "speaker" in cond:
        extra.update(SPEAKER)
    model = tiny_model(seed=1, **shape, **extra)
    B, T = 3, 200
    x = random_inputs(model, B, T)
    mel = torch.randn(B, 5, T // 8) if "mel" in cond else None
    spk = torch.tensor([0, 2, 1]) if "speaker" in cond else None
    with torch.no_grad():
        full = model(x, mel, spk)
    steps = G.cached_logits(model, x, mel, spk)
    assert steps.shape == full.shape
    assert_close_derived(steps, full, 2 * folded_logits(model, x, mel, spk)[1], "logits")


@pytest.mark.parametrize("context", ["1d", "2d"])
def test_mel_context_model_is_exact_and_streams(context):
    model = tiny_model(seed=5, **MEL, mel_context=context, mel_context_channels=4)
    for p in model.mel_context.parameters():  # move the residual branch off its identity init
        torch.nn.init.normal_(p, std=0.3)
    x = random_inputs(model, 2, 160)
    mel = torch.randn(2, 5, 20)
    with torch.no_grad():
        full = model(x, mel)
    assert_close_derived(G.cached_logits(model, x, mel), full, 2 * folded_logits(model, x, mel)[1], "logits")
    one_shot = G.generate(model, mel=mel, seed=3)
    assert torch.equal(one_shot, G.naive_generate(model, mel=mel, seed=3))
    streamed = list(G.stream_generate(model, [mel[:, :, i : i + 4] for i in range(0, 20, 4)], seed=3))
    assert torch.equal(torch.cat(streamed, dim=1), one_shot)


@pytest.mark.parametrize("output", ["mol", "gaussian"])
def test_cached_exact_for_continuous_heads(output):
    model = tiny_model(output=output, **MEL)
    x = random_inputs(model, 2, 96)
    mel = torch.randn(2, 5, 12)
    with torch.no_grad():
        full = model(x, mel)
    assert_close_derived(G.cached_logits(model, x, mel), full, 2 * folded_logits(model, x, mel)[1], "logits")


def test_exact_across_conditioning_chunks(monkeypatch):
    # a sequence longer than one conditioning chunk crosses the chunk boundary
    monkeypatch.setattr(G, "COND_CHUNK", 64)
    model = tiny_model(**MEL)
    x = random_inputs(model, 2, 200)
    mel = torch.randn(2, 5, 25)
    with torch.no_grad():
        full = model(x, mel)
    assert_close_derived(G.cached_logits(model, x, mel), full, 2 * folded_logits(model, x, mel)[1], "logits")


@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}], ids=["plain", "mel", "mel+speaker"])
@pytest.mark.parametrize("output", ["categorical", "mol"])
def test_naive_and_cached_give_identical_samples(extra, output):
    model = tiny_model(seed=2, output=output, **extra)
    kwargs = dict(seed=11, temperature=0.9)
    if "cond_channels" in extra:
        kwargs["mel"] = torch.randn(2, 5, 10)
    else:
        kwargs.update(n_samples=80, batch_size=2)
    if "n_speakers" in extra:
        kwargs["speaker"] = torch.tensor([2, 0])
    a = G.generate(model, **kwargs)
    b = G.naive_generate(model, **kwargs)
    assert a.shape == (2, 80)
    assert_same_samples(model, b, a, 11, kwargs.get("mel"), kwargs.get("speaker"), kwargs["temperature"])
    assert not torch.equal(a[0], a[1])  # rows are independent draws
    c = G.generate(model, **{**kwargs, "seed": 12})
    assert not torch.equal(a, c)


def test_generated_samples_match_teacher_forced_sampling():
    # feed the generated sequence back through forward and re-sample with the same uniforms: same sequence
    model = tiny_model(seed=3)
    out = G.generate(model, n_samples=50, batch_size=2, seed=5)
    logits = model(model.shift_right(out))
    u = G.UniformStream(2, 1, torch.Generator().manual_seed(5)).take(50)
    resampled = torch.stack([model.head.sample(logits[:, :, t], u[t]) for t in range(50)], dim=1)
    assert torch.equal(resampled, out)


@pytest.mark.parametrize("chunks", [[3, 3, 3, 3, 3], [1] * 15, [15], [7, 1, 6, 1]])
def test_streaming_equals_one_shot(chunks):
    model = tiny_model(seed=4, **MEL, **SPEAKER)
    mel = torch.randn(2, 5, 15)
    spk = torch.tensor([1, 2])
    one_shot = G.generate(model, mel=mel, speaker=spk, seed=9)
    parts, start = [], 0
    for n in chunks:
        parts.append(mel[:, :, start : start + n])
        start += n
    streamed = list(G.stream_generate(model, parts, speaker=spk, seed=9))
    assert torch.equal(torch.cat(streamed, dim=1), one_shot)
    if len(chunks) > 2:
        assert len(streamed) > 1  # audio starts before the mel is complete


def test_uniform_stream_independent_of_chunking():
    a = G.UniformStream(2, 1, torch.Generator().manual_seed(0)).take(10000)
    s = G.UniformStream(2, 1, torch.Generator().manual_seed(0))
    b = torch.cat([s.take(n) for n in (1, 4095, 1, 5000, 903)])
    assert torch.equal(a, b)


def test_temperature_and_length_controls():
    model = tiny_model(**MEL)
    mel = torch.randn(1, 5, 6)
    assert G.generate(model, mel=mel, n_samples=20, seed=0).shape == (1, 20)
    with pytest.raises(ValueError, match="exceeds"):
        G.generate(model, mel=mel, n_samples=49)
    with pytest.raises(ValueError, match="temperature"):
        G.generate(model, mel=mel, temperature=0)
    with pytest.raises(ValueError, match="eval mode"):
        G.generate(model.train(), mel=mel)
    model.eval()
    # a very low temperature is (nearly) greedy: samples equal the argmax of the teacher-forced logits
    out = G.generate(model, mel=mel, seed=0, temperature=1e-4)
    logits = model(model.shift_right(out), mel)
    assert torch.equal(logits.argmax(1), out)


def test_waveform_and_progress(capsys):
    model = tiny_model()
    out = G.generate(model, n_samples=30, seed=0, progress=True)
    wav = G.to_waveform(out, model)
    assert torch.equal(wav, mu_law_decode(out))
    assert wav.abs().max() <= 1
    assert "generating" in capsys.readouterr().err
