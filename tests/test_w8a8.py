"""The ``"w8a8"`` precision (int8 weights and int8 activations, generation/precision.py and csrc/qmatmul.h): the
activation quantiser and the packed int8 × int8 product held exactly against numpy on every build target this machine
has, then the whole compiled loop against the plain-PyTorch model of ``quantize_model(model, "w8a8")``."""

import numpy as np
import pytest
import torch

from tests._models import MEL, random_inputs, tiny_model
from tests._oracle import folded_logits
from wavenet_dilated.generation import fast as FG
from wavenet_dilated.generation import kernel as K
from wavenet_dilated.generation.packing import TILE, _Stream
from wavenet_dilated.generation.precision import quantize_dynamic, quantize_model, quantize_unit, row_codes
from wavenet_dilated.generation.reference import UniformStream
from wavenet_dilated.wavenet import WaveNet, WaveNetConfig


def _targets() -> list[str]:
    """The build targets that load here: native, and avx2 / generic where the CPU and compiler allow."""
    out = []
    for isa in ("native", "avx2", "generic"):
        try:
            K.load_kernel(isa)
        except K.KernelUnavailable:
            continue
        out.append(isa)
    return out


TARGETS = _targets()
needs_kernel = pytest.mark.skipif(not TARGETS, reason="compiled kernel unavailable")


def _p(a: np.ndarray) -> int:
    return a.ctypes.data


# ------------------------------------------------------------------------------------------------ the quantisers


def test_dynamic_codes_are_the_nearest_of_255_levels():
    torch.manual_seed(0)
    x = torch.randn(3, 40, 7) * torch.logspace(-4, 2, 7)  # vectors along dim 1 of very different sizes
    x[1, :, 2] = 0.0
    q = quantize_dynamic(x, dim=1)
    top = x.abs().amax(dim=1, keepdim=True)
    codes = q / (top / 127)
    nonzero = (top > 0).expand_as(x)
    assert torch.equal(q[~nonzero], torch.zeros_like(q[~nonzero]))  # a zero vector stays zero
    assert (codes[nonzero] - codes[nonzero].round()).abs().max() < 1e-3  # integral codes (to fp32 rounding)
    assert codes[nonzero].abs().max().round() == 127
    # half a level, plus the fp32 rounding of x·127/max and of q·max/127
    assert ((q - x).abs() <= top / 127 * (0.5 + 1e-5)).all()


def test_unit_codes_round_the_gate_output_to_127ths():
    z = torch.tensor([-1.0, -0.999, -0.5, 0.0, 1 / 254, 0.25, 0.9999, 1.0])
    q = quantize_unit(z)
    assert torch.equal(q * 127, torch.round(torch.clamp(z * 127, -127, 127)))
    assert ((q - z).abs() <= 0.5 / 127 + 1e-7).all()


@needs_kernel
@pytest.mark.parametrize("isa", TARGETS)
def test_the_kernel_quantiser_gives_the_same_codes_as_torch(isa):
    lib = K.load_kernel(isa)
    torch.manual_seed(1)
    rows, n = 9, 52  # n not a multiple of any vector width: the scalar tail too
    x = (torch.randn(rows, n) * torch.logspace(-3, 3, rows)[:, None]).contiguous()
    x[4] = 0.0
    x[6, 5] = x[6].abs().max() * 1.0  # ties of |x| at the maximum
    xs = x.numpy()
    q = np.zeros((rows, n), np.int8)
    scale = np.zeros(rows, np.float32)
    total = np.zeros(rows, np.int32)
    lib.wn_quantize(_p(xs), rows, n, 0, _p(q), _p(scale), _p(total))
    top = x.abs().amax(dim=1, keepdim=True)
    ref = quantize_dynamic(x, dim=1)
    want = torch.where(top > 0, ref / torch.where(top > 0, top / 127, torch.ones_like(top)), 0.0).round()
    assert np.array_equal(q.astype(np.int64), want.long().numpy())
    assert np.array_equal(scale, (top[:, 0] / 127).numpy()) and np.array_equal(total, q.sum(axis=1))
    # the gate output's codes
    z = torch.tanh(torch.randn(rows, n) * 2).contiguous()
    lib.wn_quantize(_p(z.numpy()), rows, n, 1, _p(q), _p(scale), _p(total))
    assert np.array_equal(q.astype(np.int64), (quantize_unit(z) * 127).round().long().numpy())
    assert np.array_equal(total, q.sum(axis=1)) and (scale == np.float32(1 / 127)).all()


# ------------------------------------------------------------------------------------------------ the product


def _packed(w: np.ndarray, tiles: int) -> np.ndarray:
    stream = _Stream(np.int8)
    stream.pack_tiles(w, tiles, np.ones(w.shape[0], np.float32))
    return stream.array()


@needs_kernel
@pytest.mark.parametrize("isa", TARGETS)
@pytest.mark.parametrize("tiles", [1, 2, 4])
@pytest.mark.parametrize("B", [1, 3, 9])
def test_packed_int8_products_are_exact(isa, tiles, B):
    # rows that fill no whole block (40 = 2.5 tiles), three parts of 12 inputs, every column its own codes: with unit
    # scales the fp32 results are the int32 sums themselves (|sum| < 2^24), so they must equal numpy's exactly
    lib = K.load_kernel(isa)
    rng = np.random.default_rng(tiles * 10 + B)
    rows, parts, n = 40, 3, 12
    w = rng.integers(-127, 128, (rows, parts * n)).astype(np.int8)
    w[0] = 127  # extremes: the largest products
    codes = rng.integers(-127, 128, (B, parts * n)).astype(np.int8)
    codes[0] = -127
    sums = codes.reshape(B, parts, n).sum(axis=2).astype(np.int32)
    ones = np.ones(max(rows, B * parts), np.float32)
    y = np.full((B, rows), np.nan, np.float32)
    packed = _packed(w, tiles)  # held: the kernel reads it through a raw pointer
    lib.wn_qproduct(_p(packed), rows, parts * n, tiles, _p(ones), _p(codes), _p(ones), _p(sums), parts,
                    B, None, _p(y))
    assert np.array_equal(y, (codes.astype(np.int64) @ w.T.astype(np.int64)).astype(np.float32))


@needs_kernel
@pytest.mark.parametrize("isa", TARGETS)
def test_packed_product_applies_the_scales(isa):
    # one part: y = fl(fl(sum · s_column) · s_row), two fp32 roundings numpy makes alike; with an additive start the
    # last step is one fused multiply-add, within one rounding of fp32
    lib = K.load_kernel(isa)
    rng = np.random.default_rng(5)
    rows, n, B = 24, 20, 4
    w = rng.integers(-127, 128, (rows, n)).astype(np.int8)
    codes = rng.integers(-127, 128, (B, n)).astype(np.int8)
    sums = codes.sum(axis=1).astype(np.int32)
    scale = rng.uniform(1e-3, 2, B).astype(np.float32)
    rowscale = rng.uniform(1e-3, 2, rows).astype(np.float32)
    stream = _Stream(np.int8)
    stream.pack_tiles(w, 2, rowscale)
    packed = stream.array()
    y = np.zeros((B, rows), np.float32)
    lib.wn_qproduct(_p(packed), rows, n, 2, _p(rowscale), _p(codes), _p(scale), _p(sums), 1, B, None, _p(y))
    acc = (codes.astype(np.int64) @ w.T.astype(np.int64)).astype(np.float32)
    assert np.array_equal(y, (acc * scale[:, None]) * rowscale[None, :])
    init = rng.standard_normal((B, rows)).astype(np.float32)
    lib.wn_qproduct(_p(packed), rows, n, 2, _p(rowscale), _p(codes), _p(scale), _p(sums), 1, B, _p(init), _p(y))
    exact = (acc.astype(np.float64) * scale[:, None]) * rowscale[None, :] + init
    # the product rounded once to fp32, then the fused add once: two half-ulps of the magnitude
    bound = np.finfo(np.float32).eps * (np.abs(exact) + np.abs(init))
    assert (np.abs(y - exact) <= bound).all()


def test_tile_packing_layout():
    # byte 4·r + k of tile v of group g is w[16·v + r][4·g + k] + 128; missing rows are 128 (weight 0)
    w = np.arange(-60, 60).reshape(20, 6 * 1)[:, :4].astype(np.int8)
    w = np.concatenate([w, -w], axis=1)  # (20, 8): two groups
    packed = _packed(w, 2).view(np.uint8)
    tiles = packed[: 2 * 2 * 64].reshape(2, 2, TILE, 4).astype(np.int64) - 128  # (group, tile, row, k)
    full = np.zeros((32, 8), np.int64)
    full[:20] = w
    for g in range(2):
        for v in range(2):
            assert np.array_equal(tiles[g, v], full[16 * v : 16 * v + 16, 4 * g : 4 * g + 4])


# ------------------------------------------------------------------------------------------------ the loop


def _check_loop(model, x, mel, **generator):
    """The kernel's teacher-forced w8a8 logits against the quantised model's forward.

    The two compute each activation in fp32 in a different order, so where an activation falls within fp32 rounding
    of a rounding boundary the two can pick neighbouring codes; such a flip moves the logits of the steps it reaches by
    at most what one code of rounding moves them. So: the logits agree to fp32 rounding except at such steps (in this
    short, shallow test most logits are reached by none: the median agrees), and nowhere by more than the rounding of
    the activations moves the model's logits (``w8a8`` against ``int8``, the same weights without it). A wrong scale,
    tap, code or sum moves every logit by far more than either."""
    q8, w8a8 = quantize_model(model, "int8"), quantize_model(model, "w8a8")
    with torch.no_grad():
        weights_only, full = q8(x, mel), w8a8(x, mel)
    bound = 2 * folded_logits(q8, x, mel)[1]
    if generator:
        fast = FG.FastGenerator(model, precision="w8a8", **generator)
        steps = fast.logits(x, None if mel is None else model.upsample(mel))
    else:
        steps = FG.fast_logits(model, x, mel, precision="w8a8")
    err = (steps - full).abs()
    rounding = (full - weights_only).abs()
    assert (rounding > bound).any(), "the activations were not rounded"
    assert (err <= bound).float().mean() >= 0.5, f"only {(err <= bound).float().mean():.2f} of the logits agree"
    assert err.max() <= rounding.max(), (err.max(), rounding.max())


@needs_kernel
@pytest.mark.parametrize("output", ["categorical", "mol"])
def test_kernel_w8a8_matches_the_quantised_model(output):
    model = tiny_model(seed=4, output=output, **MEL)
    B, T = 2, 160
    _check_loop(model, random_inputs(model, B, T), torch.randn(B, 5, T // MEL["hop_length"]))


@needs_kernel
@pytest.mark.parametrize("threads,block,B", [(1, 1, 1), (2, 16, 3), (3, 5, 8)])
def test_kernel_w8a8_across_threads_blocks_and_batches(threads, block, B):
    torch.manual_seed(5)
    model = WaveNet(WaveNetConfig(n_layers=6, n_stacks=1, kernel_size=3, residual_channels=16, gate_channels=48,
                                  skip_channels=24, **MEL)).eval()
    T = 200
    x, mel = random_inputs(model, B, T), torch.randn(B, 5, T // MEL["hop_length"])
    _check_loop(model, x, mel, threads=threads, block=block)


@needs_kernel
def test_w8a8_generation_is_seeded_and_differs_from_fp32_only_slightly():
    model = tiny_model(seed=6, **MEL)
    mel = torch.randn(2, 5, 30)
    a = FG.fast_generate(model, mel=mel, seed=3, backend="cpp", precision="w8a8", threads=1)
    b = FG.fast_generate(model, mel=mel, seed=3, backend="cpp", precision="w8a8", threads=1)
    assert torch.equal(a, b) and a.shape == (2, 30 * MEL["hop_length"])
    assert a.min() >= 0 and a.max() < model.config.n_classes


def test_w8a8_refuses_the_backends_that_cannot_round_activations():
    model = tiny_model(seed=7, **MEL)
    mel = torch.randn(1, 5, 4)
    for backend in ("reference", "torch"):
        with pytest.raises(ValueError, match="w8a8.*compiled CPU loop"):
            FG.fast_generate(model, mel=mel, seed=0, backend=backend, precision="w8a8")


def test_w8a8_does_not_fall_back_silently(monkeypatch):
    def unavailable(isa=None):
        raise K.KernelUnavailable("no compiler here")

    monkeypatch.setattr(K, "load_kernel", unavailable)
    model = tiny_model(seed=7, **MEL)
    with pytest.raises(FG.FastPathUnavailable, match="no compiler here"):
        FG.fast_generate(model, mel=torch.randn(1, 5, 4), seed=0, precision="w8a8")


def test_w8a8_weights_are_the_int8_codes():
    torch.manual_seed(2)
    w = torch.randn(16, 24)
    codes, scale = row_codes(w, "w8a8")
    codes8, scale8 = row_codes(w, "int8")
    assert np.array_equal(codes, codes8) and np.array_equal(scale, scale8)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_w8a8_generation_continues_across_calls_to_the_bit(threads):
    # the state's code rings (mirrored past the end for the blocks' windows) carry every layer's past codes from one
    # call to the next: pieces of any length, starting anywhere in a block, give the samples of one call
    torch.manual_seed(8)
    model = WaveNet(WaveNetConfig(n_layers=6, n_stacks=2, kernel_size=3, residual_channels=16, gate_channels=48,
                                  skip_channels=24, **MEL)).eval()
    B, T = 2, 240
    mel = torch.randn(B, 5, T // MEL["hop_length"])
    fast = FG.FastGenerator(model, precision="w8a8", threads=threads, block=3)
    frames = mel  # no mel context: the frames the generator upsamples

    def pieces(sizes):
        state = fast.init_state(B)
        uniforms = UniformStream(B, model.head.n_uniforms, torch.Generator().manual_seed(4))
        return torch.cat([fast.run(state, n, uniforms, frames=frames) for n in sizes], dim=1)

    whole = pieces([T])
    assert torch.equal(pieces([37, 64, 1, 99, 39]), whole)
    assert len(whole.unique()) > 8  # a real signal, not a constant
