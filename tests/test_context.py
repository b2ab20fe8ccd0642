import doctest
import math
from fractions import Fraction

import pytest
import torch

from tests._tolerance import assert_close_derived, stack_bound
from wavenet_dilated.nn import context
from wavenet_dilated.nn import dilation as dil
from wavenet_dilated.nn.analysis import input_gradient, measured_extent, zero_fraction
from wavenet_dilated.nn.context import ContextModule, DilatedFrontEnd, MelContext, large_width_multipliers

DEFAULT = (1, 1, 2, 4, 8, 16, 1)


def make_positive_(module: torch.nn.Module) -> torch.nn.Module:
    """Positive weights and biases on a positive input keep every ReLU active: zero gradients then mean "no path"."""
    with torch.no_grad():
        for p in module.parameters():
            p.abs_().add_(1e-3)
    return module


def test_docstring_examples():
    result = doctest.testmod(context, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_default_structure():
    m = ContextModule(5)
    assert len(m.layers) == 8
    assert [layer.dilation for layer in m.layers] == [1, 1, 2, 4, 8, 16, 1, 1]
    assert [layer.kernel_size for layer in m.layers] == [3] * 7 + [1]
    assert m.widths == (5,) * 8
    assert m.receptive_field == 67
    assert ContextModule(5, variant="large").widths == (10, 10, 20, 40, 80, 160, 160, 5)
    assert large_width_multipliers(DEFAULT) == (2, 2, 4, 8, 16, 32, 32)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("channels", [1, 3, 21])
def test_basic_identity_init_maps_nonnegative_input_to_itself(dims, channels):
    torch.manual_seed(channels)
    m = ContextModule(channels, dims=dims)
    x = torch.rand(2, channels, *(37,) * dims)
    x[x < 0.2] = 0.0  # exact zeros too
    assert torch.equal(m(x), x)
    # and it is not the identity on negative input: the ReLUs are real
    assert torch.equal(m(-x), torch.zeros_like(x))


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_large_identity_init_without_noise(dims, channels):
    torch.manual_seed(0)
    m = ContextModule(channels, dims=dims, variant="large", noise_std=0.0)
    x = torch.rand(2, channels, *(29,) * dims)
    # float64 sums the split copies exactly; float32 rounds them: an output of layer i sums the m_{i-1} = c_{i-1}/C
    # non-zero parts of its input group (the other weights are exact zeros, whose products add nothing), scaled by
    # the power of two C/c_i, and the stack carries each layer's error to the output unchanged (magnitude = x itself)
    assert torch.equal(m.double()(x.double()), x.double())
    group_sizes = [c // channels for c in (channels, *m.widths[:-1])]
    assert_close_derived(m.float()(x), x, stack_bound(x, group_sizes, torch.float32), "large identity, float32")


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("channels", [2, 8])
def test_large_identity_init_error_scales_with_noise(dims, channels):
    # First-order error: layer i adds noise of std σ·sqrt(c_{i-1}·k^dims)·rms(h_{i-1}) to each of its maps; the rest of
    # the stack sums a group of m_i = c_i / C maps, and rms(h_{i-1}) ≈ rms(x) / m_{i-1}. Summed in quadrature:
    # rms error ≈ σ · rms(x) · sqrt(C · k^dims · Σ_i m_i / m_{i-1}).
    m_all = (1, *large_width_multipliers(DEFAULT))
    ratio_sum = sum(b / a for a, b in zip(m_all[:-1], m_all[1:], strict=True))
    x = torch.rand(2, channels, *(40,) * dims, dtype=torch.float64)
    rms_x = float(x.pow(2).mean().sqrt())
    for sigma in (1e-4, 1e-3):
        torch.manual_seed(1)
        m = ContextModule(channels, dims=dims, variant="large", noise_std=sigma).double()
        with torch.no_grad():
            err = float((m(x) - x).pow(2).mean().sqrt())
        predicted = sigma * rms_x * math.sqrt(channels * 3**dims * ratio_sum)
        assert 0.5 * predicted < err < 2.0 * predicted, (sigma, err, predicted)


@pytest.mark.parametrize("dims", [1, 2])
def test_large_noise_only_off_the_matched_taps(dims):
    torch.manual_seed(0)
    C = 3
    m = ContextModule(C, dims=dims, variant="large", noise_std=1e-3)
    for layer in m.layers:
        w = layer.weight.detach()
        c_out, c_in = w.shape[:2]
        centre = (slice(None), slice(None), *(k // 2 for k in w.shape[2:]))
        matched = (torch.arange(c_out)[:, None] * C // c_out) == (torch.arange(c_in)[None, :] * C // c_in)
        assert torch.equal(w[centre][matched], torch.full((int(matched.sum()),), C / c_out))
        assert layer.bias.abs().max() == 0
        off = w.clone()
        off[centre] = off[centre].masked_fill(matched, 0.0)
        assert 0 < off.abs().max() < 0.01


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("hidden", [None, 4])
def test_mel_context_is_exact_identity_on_any_input(dims, hidden):
    torch.manual_seed(0)
    ctx = MelContext(20, dims=dims, hidden_channels=hidden)
    mel = torch.randn(3, 20, 50) * 3 - 5  # log-mel-like: mostly negative
    assert torch.equal(ctx(mel), mel)
    # it is a real residual branch: once the last layer moves, the output does
    with torch.no_grad():
        ctx.layers[-1].conv.weight.normal_()
    assert not torch.equal(ctx(mel), mel)
    assert ctx.receptive_field == 67


def test_mel_context_trains_away_from_identity():
    torch.manual_seed(0)
    ctx = MelContext(8, dims=2, hidden_channels=4)
    mel = torch.randn(2, 8, 30)
    loss = (ctx(mel) - mel.roll(1, dims=2)).pow(2).mean()
    loss.backward()
    assert ctx.layers[-1].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dims", [1, 2])
def test_mel_context_receptive_field_measured(dims):
    torch.manual_seed(0)
    ctx = make_positive_(MelContext(6, dims=dims, hidden_channels=3)).double()
    frames = 67 + 10
    g = input_gradient(ctx, (6, frames), inputs=torch.rand(6, frames))
    assert measured_extent(g) == (67,)
    if dims == 2:  # over (frequency, time): 67 bins wide too, seen through a taller mel
        ctx2 = make_positive_(MelContext(80, dims=2, hidden_channels=2)).double()
        x = torch.rand(1, 80, frames, dtype=torch.float64, requires_grad=True)
        ctx2(x)[0, 40, frames // 2].backward()
        assert measured_extent(x.grad[0]) == (67, 67)


@pytest.mark.parametrize("dims", [1, 2])
def test_receptive_field_measured_from_gradients_default(dims):
    torch.manual_seed(0)
    m = make_positive_(ContextModule(2, dims=dims, init="random")).double()
    size = 67 + 6
    shape = (2,) + (size,) * dims
    g = input_gradient(m, shape, inputs=torch.rand(shape))
    assert measured_extent(g) == (67,) * dims == (m.receptive_field,) * dims
    assert zero_fraction(g) == 0.0  # the default rates leave no holes
    assert dil.coverage(3, DEFAULT, dims=dims).fraction == 1


@pytest.mark.parametrize("rates", [(1, 2, 5, 9), (1, 2, 3), (2, 2, 2), (1, 3, 9, 27)])
@pytest.mark.parametrize("variant", ["basic", "large"])
def test_receptive_field_measured_custom(rates, variant):
    torch.manual_seed(0)
    m = make_positive_(ContextModule(2, dims=2, variant=variant, dilations=rates, init="random")).double()
    rf = dil.receptive_field(3, rates)
    assert m.receptive_field == rf
    shape = (2, rf + 4, rf + 4)
    g = input_gradient(m, shape, inputs=torch.rand(shape))
    assert measured_extent(g) == (rf, rf)
    assert Fraction(zero_fraction(g)).limit_denominator(10**6) == 1 - dil.coverage(3, rates, dims=2).fraction


def test_identity_init_sees_only_its_own_position():
    m = ContextModule(2, dims=2)
    g = input_gradient(m, (2, 21, 21), inputs=torch.rand(2, 21, 21) + 0.1)
    assert measured_extent(g) == (1, 1)


@pytest.mark.parametrize("C", [1, 2, 5])
def test_parameter_counts(C):
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ContextModule(C, dims=2)) == 64 * C * C + 8 * C == 7 * 9 * C * C + C * C + 8 * C
    assert n(ContextModule(C, dims=1)) == 7 * 3 * C * C + C * C + 8 * C
    c_in = [C, 2 * C, 2 * C, 4 * C, 8 * C, 16 * C, 32 * C, 32 * C]
    c_out = [2 * C, 2 * C, 4 * C, 8 * C, 16 * C, 32 * C, 32 * C, C]
    kernels = [3] * 7 + [1]
    for dims in (1, 2):
        expected = sum(a * b * k**dims + b for a, b, k in zip(c_in, c_out, kernels, strict=True))
        assert n(ContextModule(C, dims=dims, variant="large")) == expected
        assert expected == sum(dil.conv_parameters(a, b, k, dims) for a, b, k in zip(c_in, c_out, kernels, strict=True))


def test_random_init_differs_and_trains():
    torch.manual_seed(0)
    m = ContextModule(3, init="random")
    x = torch.rand(1, 3, 20, 20)
    assert not torch.allclose(m(x), x)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_custom_width_multipliers():
    m = ContextModule(2, dims=1, variant="large", dilations=(1, 2, 5, 9), width_multipliers=(1, 3, 3, 2),
                      noise_std=0.0)
    assert m.widths == (2, 6, 6, 4, 2)
    x = torch.rand(2, 2, 40, dtype=torch.float64)
    # The scales C/c_i were stored in float32 before the cast (1/3 is not exact), and each layer multiplies the whole
    # signal by its scale, so the output is off by Π(1 + δ_i) − 1 relative, δ_i the float32 rounding of C/c_i; on top
    # of that, float64 rounds the sums of each output's m_{i-1} = c_{i-1}/C non-zero parts (magnitude: x itself).
    deltas = [abs(float(torch.tensor(2 / c, dtype=torch.float32)) * c / 2 - 1) for c in m.widths]
    stored = math.prod(1 + d for d in deltas) - 1
    parts = [c // 2 for c in (2, *m.widths[:-1])]
    bound = stored * x + stack_bound(x, parts, torch.float64)
    assert_close_derived(m.double()(x), x, bound, "custom widths")
    assert large_width_multipliers((1, 2, 5, 9)) == (2, 4, 10, 18)


@pytest.mark.parametrize("output_stride,convs,expected_rf", [(4, 1, 58), (4, 2, 64), (8, 1, 118), (8, 2, 132),
                                                             (2, 1, 28)])
def test_front_end_geometry(output_stride, convs, expected_rf):
    torch.manual_seed(0)
    fe = DilatedFrontEnd(1, n_classes=3, width=4, output_stride=output_stride, convs_per_stage=convs, pool="avg")
    assert fe.receptive_field == expected_rf
    size = 16 * output_stride + 2 * expected_rf  # RF of the centre output well inside the image
    y = fe(torch.rand(2, 1, size, size - output_stride))
    assert y.shape == (2, 3, size // output_stride, (size - output_stride) // output_stride)

    make_positive_(fe).double()
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = fe(x)
    centre = out.shape[2] // 2
    out[0, :, centre, centre].sum().backward()
    g = x.grad[0, 0]
    assert measured_extent(g) == (expected_rf, expected_rf)
    # output i sits on input pixels s·i … s·i + s − 1: the field is centred there, up to the pooling's half-pixel
    nz = torch.nonzero(g)
    first = int(nz[:, 0].min())
    assert abs((first + expected_rf / 2) - (output_stride * centre + output_stride / 2)) <= output_stride / 2


def test_front_end_max_pool_field_is_at_most_computed():
    torch.manual_seed(0)
    fe = DilatedFrontEnd(1, n_classes=2, width=4, output_stride=4)
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    out = fe(x)
    out[0, :, 16, 16].sum().backward()
    assert max(measured_extent(x.grad[0, 0])) <= fe.receptive_field


def test_front_end_1d():
    fe = DilatedFrontEnd(2, n_classes=4, width=4, output_stride=8, dims=1)
    assert fe(torch.randn(3, 2, 256)).shape == (3, 4, 32)
    assert fe.receptive_field == 118


@pytest.mark.parametrize("call,needle", [
    (lambda: ContextModule(0), "channels"),
    (lambda: ContextModule(2.5), "channels"),
    (lambda: ContextModule(2, dims=3), "dims must be 1 or 2, found 3"),
    (lambda: ContextModule(2, variant="front-end"), "variant must be one of"),
    (lambda: ContextModule(2, dilations=()), "at least one layer"),
    (lambda: ContextModule(2, dilations=(1, 0, 2)), "dilation"),
    (lambda: ContextModule(2, dilations=4), "sequence"),
    (lambda: ContextModule(2, kernel_size=2), "odd"),
    (lambda: ContextModule(2, init="zeros"), "init must be one of"),
    (lambda: ContextModule(2, variant="large", noise_std=-1.0), "noise_std"),
    (lambda: ContextModule(2, width_multipliers=(1,) * 7), "'large' only"),
    (lambda: ContextModule(2, variant="large", width_multipliers=(2, 2)), "one entry per dilation"),
    (lambda: ContextModule(3, dims=2)(torch.rand(1, 3, 10)), r"\(batch, channels, height, width\)"),
    (lambda: ContextModule(3, dims=1)(torch.rand(1, 4, 10)), "3 channels, found 4"),
    (lambda: MelContext(0), "n_mels"),
    (lambda: MelContext(80, dims=2)(torch.rand(1, 1, 80, 10)), r"\(batch, channels, time\)"),
    (lambda: MelContext(80)(torch.rand(1, 64, 10)), "80 channels, found 64"),
    (lambda: MelContext(80, hidden_channels=0), "hidden_channels"),
    (lambda: DilatedFrontEnd(3, 5, output_stride=6), "power of two"),
    (lambda: DilatedFrontEnd(3, 5, pool="min"), "pool"),
    (lambda: DilatedFrontEnd(3, 5)(torch.rand(1, 1, 32, 32)), "3 channels, found 1"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_front_end_geometry_composes_with_context_module():
    fe = DilatedFrontEnd(1, n_classes=3, width=4, output_stride=2)
    assert fe.geometry == [(3, 1, 1), (2, 1, 2), (3, 2, 1), (3, 4, 1), (1, 1, 1), (1, 1, 1)]
    ks, ds, ss = zip(*fe.geometry, strict=True)
    assert dil.receptive_field(list(ks), list(ds), list(ss)) == fe.receptive_field == 28
    ctx = ContextModule(3)
    layers = fe.geometry + [(3, r, 1) for r in ctx.dilations] + [(1, 1, 1)]
    ks, ds, ss = zip(*layers, strict=True)
    # each context layer's span counts twice in input pixels after the stride-2 front-end
    assert dil.receptive_field(list(ks), list(ds), list(ss)) == 28 + 2 * (ctx.receptive_field - 1) == 160
