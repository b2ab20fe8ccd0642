"""The fast path (compiled loop) passes every exactness test of the reference cached generator."""

import os
import warnings

import pytest
import torch

from tests._models import MEL, SPEAKER, random_inputs, tiny_model
from tests._oracle import assert_same_samples, conditioning_bound, folded_logits
from tests._tolerance import assert_close_derived
from wavenet_dilated.generation import cpu as CPU
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.generation import reference as G
from wavenet_dilated.generation import threads as TH
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig

HAVE_KERNEL, WHY_NOT = FG.available()
needs_kernel = pytest.mark.skipif(not HAVE_KERNEL, reason=f"compiled kernel unavailable: {WHY_NOT}")

# wider than the tiny models so that the packed row blocks, thread splits and batch column chunks all come into play
WIDE = dict(n_layers=6, n_stacks=2, residual_channels=16, gate_channels=64, skip_channels=24)


def conditioning(cond, B, T):
    mel = torch.randn(B, MEL["cond_channels"], T // MEL["hop_length"]) if "mel" in cond else None
    spk = torch.arange(B) % SPEAKER["n_speakers"] if "speaker" in cond else None
    return mel, spk


def extra_for(cond):
    extra = {}
    if "mel" in cond:
        extra.update(MEL)
    if "speaker" in cond:
        extra.update(SPEAKER)
    return extra


@needs_kernel
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("cond", ["plain", "mel", "mel+speaker"])
@pytest.mark.parametrize("B", [1, 8])
def test_fast_logits_reproduce_forward(kernel_size, cond, B):
    model = tiny_model(seed=1, kernel_size=kernel_size, **extra_for(cond))
    T = 160
    x = random_inputs(model, B, T)
    mel, spk = conditioning(cond, B, T)
    with torch.no_grad():
        full = model(x, mel, spk)
    steps = FG.fast_logits(model, x, mel, spk)
    assert steps.shape == full.shape
    assert_close_derived(steps, full, 2 * folded_logits(model, x, mel, spk)[1], "logits")


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 2, 3, 5, 8, 11])
def test_fast_logits_any_batch_and_threads(threads, B):
    # every micro-kernel shape (rows per block × columns) and every split of the row blocks between threads
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**WIDE, **MEL, **SPEAKER)).eval()
    T = 96
    x = random_inputs(model, B, T)
    mel, spk = conditioning("mel+speaker", B, T)
    with torch.no_grad():
        full = model(x, mel, spk)
    fast = FG.FastGenerator(model, threads=threads)
    steps = fast.logits(x, model.upsample(mel), model.speaker_vector(spk, B))
    assert_close_derived(steps, full, 2 * folded_logits(model, x, mel, spk)[1], "logits")


@needs_kernel
@pytest.mark.parametrize("threads,B", [(2, 1), (3, 5), (2, 11)])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_gate_output_exchange_is_exact(monkeypatch, threads, B, precision):
    # the threads exchange their gate outputs and each makes the whole residual product (WNModel.exchange, w8a8's
    # choice) instead of summing partial products: forced on for the precisions that keep the partial sums
    torch.manual_seed(2)
    model = WaveNet(WaveNetConfig(**WIDE, **MEL, **SPEAKER)).eval()
    T = 96
    x = random_inputs(model, B, T)
    mel, spk = conditioning("mel+speaker", B, T)
    g = model.speaker_vector(spk, B)
    partial = FG.FastGenerator(model, threads=threads, precision=precision)
    assert not partial._pack(B, threads).exchange
    want = partial.logits(x, model.upsample(mel), g)
    monkeypatch.setattr(TH, "exchange_outputs", lambda precision, batch, n_threads: n_threads > 1)
    fast = FG.FastGenerator(model, threads=threads, precision=precision)
    assert fast._pack(B, threads).exchange
    got = fast.logits(x, model.upsample(mel), g)
    if precision == "fp32":
        with torch.no_grad():
            full = model(x, mel, spk)
        assert_close_derived(got, full, 2 * folded_logits(model, x, mel, spk)[1], "logits")
    # the same quantised model either way: only the order of the residual sums differs (fp32 rounding)
    assert_close_derived(got, want, 2 * folded_logits(model, x, mel, spk)[1], "logits")


@needs_kernel
def test_projecting_frames_then_upsampling_equals_projecting_the_upsampled_mel(monkeypatch):
    # the projection commutes with the (linear, per-channel) upsampler: windows anywhere, edges included
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**WIDE, cond_channels=5, upsample_scales=(3, 1, 5), hop_length=15,
                                  **SPEAKER)).eval()
    with torch.no_grad():
        for conv in model.upsampler.smoothers:  # not a moving average any more, as after training
            conv.weight.add_(0.1 * torch.randn_like(conv.weight))
    fast = FG.FastGenerator(model, threads=1)
    B, F = 2, 9
    mel = torch.randn(B, 5, F)
    constant = fast.constant_term(model.speaker_vector(torch.tensor([2, 1]), B), B)
    cond = model.upsample(mel)
    bound = conditioning_bound(model, mel, torch.tensor([2, 1])).transpose(0, 1)  # (T, B, L·G)
    for first, n in [(0, 135), (0, 1), (134, 1), (7, 40), (44, 46), (100, 35)]:
        direct = fast.project(cond[:, :, first : first + n], constant, n)[0].reshape(n, -1)
        poly = fast.project_frames(mel, first, n, constant)
        assert poly.shape == direct.shape
        assert_close_derived(poly, direct, 2 * bound[first : first + n].reshape(n, -1), "conditioning")
    # and with a non-standard upsampler the generator projects the upsampled mel instead, with the same result
    x = random_inputs(model, B, 135)
    spk = torch.tensor([2, 1])
    with torch.no_grad():
        full = model(x, mel, spk)
    bound = folded_logits(model, x, mel, spk)[1]
    assert_close_derived(FG.fast_logits(model, x, mel, spk), full, 2 * bound, "logits")
    monkeypatch.setattr(CPU, "polyphase_plan", lambda model: None)
    assert_close_derived(FG.fast_logits(model, x, mel, spk), full, 2 * bound, "logits")


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_kernel_makes_the_last_upsampling_stage_to_the_bit(monkeypatch, threads):
    # the threads make the upsampler's last stage per step, each its own channels (WNTerm.s > 0): the same bits as the
    # whole term made by wn_polyphase first, in chunks that start anywhere (frame edges, a chunk of 16 steps)
    torch.manual_seed(1)
    model = WaveNet(WaveNetConfig(**WIDE, cond_channels=5, upsample_scales=(3, 1, 5), hop_length=15,
                                  **SPEAKER)).eval()
    with torch.no_grad():
        for conv in model.upsampler.smoothers:
            conv.weight.add_(0.1 * torch.randn_like(conv.weight))
    B, F = 2, 9
    mel, spk = torch.randn(B, 5, F), torch.tensor([2, 1])
    x = random_inputs(model, B, F * 15)
    fast = FG.FastGenerator(model, threads=threads)
    g = model.speaker_vector(spk, B)
    monkeypatch.setattr(G, "COND_CHUNK", 16)
    fused = fast.logits(x, speaker_vec=g, frames=mel)
    real = CPU.FastGenerator._upsample
    calls = []

    def whole(self, *args, fuse_last):
        calls.append(fuse_last)
        return real(self, *args, fuse_last=False)

    monkeypatch.setattr(CPU.FastGenerator, "_upsample", whole)
    made_first = fast.logits(x, speaker_vec=g, frames=mel)
    assert calls and all(calls)  # the generator did ask the kernel to make the last stage
    assert torch.equal(fused, made_first)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("output", ["mol", "gaussian"])
def test_fast_logits_continuous_heads(output, threads):
    model = tiny_model(output=output, **MEL)
    x = random_inputs(model, 2, 96)
    mel = torch.randn(2, 5, 12)
    with torch.no_grad():
        full = model(x, mel)
    bound = folded_logits(model, x, mel)[1]
    assert_close_derived(FG.fast_logits(model, x, mel), full, 2 * bound, "logits")
    fast = FG.FastGenerator(model, threads=threads)
    assert_close_derived(fast.logits(x, frames=mel), full, 2 * bound, "logits")


@needs_kernel
def test_fast_logits_across_chunks_and_weight_norm(monkeypatch):
    monkeypatch.setattr(G, "COND_CHUNK", 64)
    model = tiny_model(use_weight_norm=True, **MEL)
    with torch.no_grad():  # make the weight-norm gains differ from 1 so that folding them matters
        for p in model.parameters():
            p.mul_(1.1)
    x = random_inputs(model, 2, 200)
    mel = torch.randn(2, 5, 25)
    with torch.no_grad():
        full = model(x, mel)
    assert_close_derived(FG.fast_logits(model, x, mel), full, 2 * folded_logits(model, x, mel)[1], "logits")


@needs_kernel
@pytest.mark.parametrize("kernel_size", [2, 3, 4])
@pytest.mark.parametrize("block", [2, 5, 16])
@pytest.mark.parametrize("output", ["categorical", "gaussian"])
def test_blocked_past_taps_are_exact(monkeypatch, kernel_size, block, output):
    # dilations 1 … 64: layers blocked by min(d, block), block boundaries not aligned with the kernel calls' slices
    monkeypatch.setattr(FG.FastGenerator, "SLICE", 37)
    torch.manual_seed(3)
    model = WaveNet(WaveNetConfig(n_layers=7, n_stacks=1, kernel_size=kernel_size, residual_channels=16,
                                  gate_channels=32, skip_channels=16, output=output, **MEL)).eval()
    blocks = FG.past_blocks(model.config.dilations, kernel_size, model.head.quantized, block)
    assert max(blocks) == min(block, 64) and (blocks > 1).sum() >= 5
    B, T = 3, 296
    x = random_inputs(model, B, T)
    mel = torch.randn(B, MEL["cond_channels"], T // MEL["hop_length"])
    with torch.no_grad():
        full = model(x, mel)
    bound = folded_logits(model, x, mel)[1]
    for threads in (1, 2):
        steps = FG.FastGenerator(model, threads=threads, block=block).logits(x, model.upsample(mel))
        assert_close_derived(steps, full, 2 * bound, "logits")
    # generating in uneven pieces continues the blocks across calls: the same samples as the reference in one go
    fast = FG.FastGenerator(model, block=block)
    state, uniforms = fast.init_state(B), G.UniformStream(B, model.head.n_uniforms, torch.Generator().manual_seed(4))
    cond, pieces, start = model.upsample(mel), [], 0
    for n in (1, 6, 23, 64, 202):
        pieces.append(fast.run(state, n, uniforms, cond[:, :, start : start + n]))
        start += n
    assert_same_samples(model, torch.cat(pieces, dim=1), G.generate(model, mel=mel, seed=4), 4, mel)


def test_block_limit_shrinks_with_the_batch():
    from wavenet_dilated.presets import model_preset

    c = model_preset("ljspeech")
    assert FG.auto_block(c, 1) == FG.PAST_BLOCK
    assert FG.auto_block(c, 64) == FG.PAST_COLUMNS // 64
    assert FG.auto_block(c, 100_000) == 2
    assert FG.auto_block(c, 8) * 8 <= FG.PAST_COLUMNS


@needs_kernel
def test_bad_block_argument():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="block"):
            FG.FastGenerator(tiny_model(), block=bad)


@needs_kernel
@pytest.mark.parametrize("extra", [{}, MEL, {**MEL, **SPEAKER}], ids=["plain", "mel", "mel+speaker"])
@pytest.mark.parametrize("output", ["categorical", "mol", "gaussian"])
def test_fast_and_reference_give_identical_samples(extra, output):
    model = tiny_model(seed=2, output=output, **extra)
    kwargs = dict(seed=11, temperature=0.9)
    if "cond_channels" in extra:
        kwargs["mel"] = torch.randn(2, 5, 10)
    else:
        kwargs.update(n_samples=80, batch_size=2)
    if "n_speakers" in extra:
        kwargs["speaker"] = torch.tensor([2, 0])
    ref = G.generate(model, **kwargs)
    fast = FG.fast_generate(model, backend="cpp", **kwargs)
    assert fast.shape == ref.shape == (2, 80)
    assert fast.dtype == ref.dtype
    assert_same_samples(model, fast, ref, 11, kwargs.get("mel"), kwargs.get("speaker"), kwargs["temperature"])
    assert not torch.equal(fast[0], fast[1])
    other = FG.fast_generate(model, backend="cpp", **{**kwargs, "seed": 12})
    assert not torch.equal(fast, other)


@needs_kernel
@pytest.mark.parametrize("B", [1, 8])
def test_fast_generate_batches_and_threads_match_reference(B):
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**WIDE, **MEL)).eval()
    mel = torch.randn(B, 5, 30)
    ref = G.generate(model, mel=mel, seed=4)
    for threads in (1, 2):
        fast = FG.FastGenerator(model, threads=threads)
        state = fast.init_state(B)
        uniforms = G.UniformStream(B, 1, torch.Generator().manual_seed(4))
        cond = model.upsample(mel)
        # two calls continue one generation exactly like one call
        a = fast.run(state, 100, uniforms, cond[:, :, :100])
        b = fast.run(state, 140, uniforms, cond[:, :, 100:])
        assert state.step == 240
        assert torch.equal(torch.cat([a, b], dim=1), ref)
        assert torch.equal(state.previous, ref[:, -1])


@needs_kernel
@pytest.mark.parametrize("others", [0, 5], ids=["idle", "busy"])
def test_adaptive_threads_slices_give_the_same_samples(monkeypatch, others):
    # threads=None runs in slices and picks 1 or 2 threads per slice (2 only while a core looks idle)
    monkeypatch.setattr(TH, "others_running", lambda: others)
    monkeypatch.setattr(TH, "max_threads", lambda: 2)
    monkeypatch.setattr(FG.FastGenerator, "SLICE", 17)
    monkeypatch.setattr(TH.ThreadChooser, "PROBE_EVERY", 3)
    model = tiny_model(seed=3, **MEL)
    mel = torch.randn(2, 5, 40)
    fast = FG.FastGenerator(model)
    out = fast.run(fast.init_state(2), 320, G.UniformStream(2, 1, torch.Generator().manual_seed(8)), model.upsample(mel))
    assert torch.equal(out, G.generate(model, mel=mel, seed=8))
    tried = set(fast._chooser(2).cost)
    assert tried == ({1, 2} if others == 0 else {1})


@needs_kernel
def test_generators_share_the_folded_weights_until_the_model_changes():
    model = tiny_model(seed=5, **MEL)
    a, b = FG.FastGenerator(model), FG.FastGenerator(model)
    assert a.folded is b.folded and a._packed is b._packed
    x, mel = random_inputs(model, 2, 64), torch.randn(2, 5, 8)
    with torch.no_grad():
        model.blocks[1].skip.weight.mul_(3.0)  # in place: the next generator folds again
        full = model(x, mel)
    c = FG.FastGenerator(model)
    assert c.folded is not a.folded
    assert_close_derived(FG.fast_logits(model, x, mel), full, 2 * folded_logits(model, x, mel)[1], "logits")
    model.load_state_dict(tiny_model(seed=6, **MEL).state_dict())
    assert FG.FastGenerator(model).folded is not c.folded
    # the cache holds the model weakly: nothing it keeps refers back to it
    import gc
    import weakref

    ref = weakref.ref(model)
    del model, a, b, c
    gc.collect()
    assert ref() is None


def test_thread_chooser_trusts_measurements(monkeypatch):
    others = {"n": 0}
    monkeypatch.setattr(TH, "others_running", lambda: others["n"])
    monkeypatch.setattr(TH.os, "cpu_count", lambda: 2)
    chooser = TH.ThreadChooser(2)

    measured = []

    def run(n, cost):
        picks = []
        for _ in range(n):
            t = chooser.pick()
            measured.append(chooser.measuring(t))
            chooser.record(t, cost[t])
            picks.append(t)
        return picks

    others["n"] = 1  # another process running: two threads are not tried ...
    assert run(4, {1: 2.0, 2: 1.0}) == [1] * 4
    others["n"] = 0  # ... until a core is idle
    picks = run(64, {1: 2.0, 2: 1.0})  # two threads faster: kept, with an occasional probe of one
    assert picks[0] == 2 and picks.count(2) >= 58 and picks.count(1) >= 2
    # every slice on one thread after the first measurement of two is a measurement (a short slice), none on two
    assert all(m for t, m in zip(picks[1:], measured[5:]) if t == 1)
    assert not any(m for t, m in zip(picks[1:], measured[5:]) if t == 2)
    others["n"] = 1  # once measured faster, another process does not stop them ...
    assert run(8, {1: 2.0, 2: 1.0}).count(2) >= 7
    others["n"] = 2  # every core busy: one thread, whatever was measured
    assert set(run(8, {1: 2.0, 2: 1.0})) == {1}
    others["n"] = 0
    picks = run(400, {1: 2.0, 2: 50.0})  # two threads became slow: one thread, probes of two back off
    assert picks.count(2) <= 8
    assert chooser.interval > TH.ThreadChooser.PROBE_EVERY
    others["n"] = 1
    assert set(run(TH.ThreadChooser.PROBE_MAX + 20, {1: 2.0, 2: 1.0})) == {1}  # probes only while a core is idle
    others["n"] = 0
    picks = run(TH.ThreadChooser.PROBE_MAX + 20, {1: 2.0, 2: 1.0})  # fast again: found at the next probe
    assert picks[-20:].count(2) >= 18  # (one probe of a single thread may fall in the window)


@needs_kernel
def test_fast_generate_mel_context_and_chunks(monkeypatch):
    monkeypatch.setattr(G, "COND_CHUNK", 50)
    model = tiny_model(seed=5, mel_context="2d", **MEL, **SPEAKER)
    kwargs = dict(mel=torch.randn(3, 5, 20), speaker=1, seed=3, temperature=0.8)
    assert torch.equal(FG.fast_generate(model, **kwargs), G.generate(model, **kwargs))
    # n_samples shorter than the mel, and the naive reference agrees too
    short = FG.fast_generate(model, n_samples=37, **kwargs)
    assert torch.equal(short, G.naive_generate(model, n_samples=37, **kwargs))


@needs_kernel
def test_low_temperature_is_greedy():
    model = tiny_model(**MEL)
    mel = torch.randn(1, 5, 6)
    out = FG.fast_generate(model, mel=mel, seed=0, temperature=1e-4)
    logits = model(model.shift_right(out), mel)
    assert torch.equal(logits.argmax(1), out)


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    from wavenet_dilated.generation import kernel as K
    def broken():
        raise K.KernelUnavailable("no C++ compiler found (test)")

    monkeypatch.setattr(K, "load_kernel", broken)
    model = tiny_model(seed=2)
    kwargs = dict(n_samples=40, batch_size=2, seed=1)
    with pytest.warns(RuntimeWarning, match=r"fast generation unavailable \(no C\+\+ compiler found \(test\)\)") as rec:
        out = FG.fast_generate(model, **kwargs)
    notices = [w for w in rec if "fast generation unavailable" in str(w.message)]
    assert len(notices) == 1 and "\n" not in str(notices[0].message)
    assert torch.equal(out, G.generate(model, **kwargs))
    with pytest.raises(FG.FastPathUnavailable, match="no C\\+\\+ compiler"):
        FG.fast_generate(model, backend="cpp", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(FG.fast_generate(model, backend="reference", **kwargs), out)


def test_unsupported_models_fall_back():
    model = tiny_model(residual_channels=6)  # not a multiple of 8
    assert "multiple of 8" in FG.unsupported_reason(model)
    with pytest.warns(RuntimeWarning, match="multiple of 8"):
        out = FG.fast_generate(model, n_samples=20, seed=0)
    assert torch.equal(out, G.generate(model, n_samples=20, seed=0))
    assert "float32" in FG.unsupported_reason(tiny_model().double())


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="backend"):
        FG.fast_generate(model, n_samples=5, backend="fortran")
    with pytest.raises(ValueError, match="temperature"):
        FG.fast_generate(model, n_samples=5, temperature=0)
    with pytest.raises(ValueError, match="eval mode"):
        FG.fast_generate(tiny_model().train(), n_samples=5, backend="cpp")
    with pytest.raises(FG.FastPathUnavailable, match="CUDA"):
        FG.fast_generate(model, n_samples=5, backend="cuda_graph")


@pytest.mark.parametrize("extra", [{}, {**MEL, **SPEAKER}], ids=["plain", "mel+speaker"])
def test_cuda_graph_step_eagerly_matches_reference(extra):
    # the step that the CUDA backend captures, run eagerly on CPU (the capture itself needs a GPU: see below)
    model = tiny_model(seed=6, **extra)
    B = 2
    mel = torch.randn(B, 5, 10) if extra else None
    spk = torch.tensor([1, 0]) if extra else None
    n = 80
    ref = G.generate(model, n_samples=n, mel=mel, speaker=spk, batch_size=None if extra else B, seed=7)
    gen = FG.CudaGraphGenerator(model, B, chunk=32, capture=False)
    uniforms = G.UniformStream(B, 1, torch.Generator().manual_seed(7))
    cond = None if mel is None else model.upsample(mel)
    out = gen.run(n, uniforms, cond, model.speaker_vector(spk, B))
    assert torch.equal(out, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (not present on the CI machines)")
def test_cuda_graph_replay_equals_eager_step_on_gpu():
    model = tiny_model(seed=6, **MEL, **SPEAKER).cuda()
    B, n = 2, 100
    cond = model.upsample(torch.randn(B, 5, 13).cuda())
    spk = model.speaker_vector(torch.tensor([1, 0]).cuda(), B)
    outs = []
    for capture in (True, False):
        gen = FG.CudaGraphGenerator(model, B, chunk=64, capture=capture)
        outs.append(gen.run(n, G.UniformStream(B, 1, torch.Generator().manual_seed(7)), cond, spk))
    assert torch.equal(outs[0], outs[1])
    # and through the public API (the reference runs on CPU: GPU kernels round differently, so compare loosely)
    graph = FG.fast_generate(model, mel=torch.randn(B, 5, 10).cuda(), speaker=1, seed=7, backend="cuda_graph")
    assert graph.shape == (B, 80) and graph.device.type == "cpu"


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux call")
def test_pinned_threads_give_back_the_callers_cpus():
    # the kernel pins its threads for a call (when the caller may run on enough CPUs) and restores the caller's mask;
    # on one allowed CPU it does not pin, and two threads still give the samples of one thread's run with two
    model = tiny_model(seed=3, **MEL)
    mel = torch.randn(1, 5, 12)
    before = os.sched_getaffinity(0)
    two = FG.fast_generate(model, mel=mel, seed=1, backend="cpp", threads=2)
    assert os.sched_getaffinity(0) == before
    one_cpu = {min(before)}
    os.sched_setaffinity(0, one_cpu)
    try:
        again = FG.fast_generate(model, mel=mel, seed=1, backend="cpp", threads=2)
        assert os.sched_getaffinity(0) == one_cpu
    finally:
        os.sched_setaffinity(0, before)
    assert torch.equal(two, again)
