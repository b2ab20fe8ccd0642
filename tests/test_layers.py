import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests._tolerance import assert_close_derived, reduction_bound
from wavenet_dilated.nn import dilation as dil
from wavenet_dilated.nn.analysis import input_gradient, measured_extent, zero_fraction
from wavenet_dilated.nn.layers import CausalConv1d, DilatedConv


def conv_magnitude(conv: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
    """``Σ|terms|`` of every output of ``conv(x)``: the same causal convolution of ``|x|`` with ``|weight|``, ``|bias|``."""
    with torch.no_grad():
        bias = None if conv.conv.bias is None else conv.conv.bias.abs()
        return F.conv1d(F.pad(x.abs(), (conv.padding, 0)), conv.conv.weight.abs(), bias, dilation=conv.dilation)


def random_stack(rng: random.Random, n_max: int = 5):
    n = rng.randint(1, n_max)
    kernels = [rng.randint(1, 4) for _ in range(n)]
    rates = [rng.choice([1, 2, 3, 4, 5, 8]) for _ in range(n)]
    return kernels, rates


@pytest.mark.parametrize("seed", range(12))
def test_causal_stack_gradient_rf_equals_formula(seed):
    rng = random.Random(seed)
    kernels, rates = random_stack(rng)
    torch.manual_seed(seed)
    stack = nn.Sequential(*[CausalConv1d(3, 3, k, d) for k, d in zip(kernels, rates)]).double()
    rf = dil.receptive_field(kernels, rates)
    T = rf + 40
    g = input_gradient(stack, (3, T), position=(T - 10,))
    nz = torch.nonzero(g).flatten()
    assert measured_extent(g) == (rf,)
    assert int(nz.max()) == T - 10  # reaches the present ...
    assert int(nz.min()) == T - 10 - (rf - 1)  # ... and exactly rf − 1 samples into the past, never the future


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dims", [1, 2])
def test_same_padded_stack_gradient_rf_equals_formula(seed, dims):
    rng = random.Random(100 + seed)
    kernels, rates = random_stack(rng, 4)
    kernels = [k | 1 for k in kernels]  # odd kernels centre the field
    torch.manual_seed(seed)
    stack = nn.Sequential(*[DilatedConv(2, 2, k, d, dims=dims) for k, d in zip(kernels, rates)]).double()
    rf = dil.receptive_field(kernels, rates)
    size = rf + 6
    g = input_gradient(stack, (2,) + (size,) * dims)
    assert measured_extent(g) == (rf,) * dims


@pytest.mark.parametrize("rates,dims", [([2, 2, 2], 1), ([2, 2, 2], 2), ([2, 4, 8], 1), ([1, 2, 9], 1),
                                        ([1, 2, 9], 2), ([3, 3], 2), ([1, 1, 2, 4, 8, 16, 1], 1)])
def test_zero_gradient_fraction_is_one_minus_coverage(rates, dims):
    torch.manual_seed(0)
    layers = []
    for d in rates:
        conv = DilatedConv(2, 2, 3, d, dims=dims)
        with torch.no_grad():
            conv.weight.abs_()  # positive weights and inputs keep every ReLU active, so zeros come from gridding only
            conv.bias.abs_()
        layers += [conv, nn.ReLU()]
    stack = nn.Sequential(*layers).double()
    rf = dil.receptive_field(3, rates)
    size = rf + 4
    g = input_gradient(stack, (2,) + (size,) * dims, inputs=torch.rand((2,) + (size,) * dims))
    cov = dil.coverage(3, rates, dims=dims)
    assert measured_extent(g) == (rf,) * dims
    assert Fraction(zero_fraction(g)).limit_denominator(10**6) == 1 - cov.fraction


def test_changing_future_leaves_past_bit_identical():
    torch.manual_seed(0)
    stack = nn.Sequential(CausalConv1d(2, 4, 3, 1), nn.Tanh(), CausalConv1d(4, 4, 2, 8), CausalConv1d(4, 1, 3, 5))
    x = torch.randn(2, 2, 300)
    y = stack(x)
    for t in (0, 17, 150, 299):
        x2 = x.clone()
        x2[:, :, t] += 1.0
        y2 = stack(x2)
        assert torch.equal(y2[:, :, :t], y[:, :, :t])
        assert not torch.equal(y2[:, :, t], y[:, :, t])


@pytest.mark.parametrize("k,d", [(1, 1), (2, 1), (2, 16), (3, 7), (4, 3)])
@pytest.mark.parametrize("weight_norm", [False, True])
def test_step_reproduces_forward(k, d, weight_norm):
    torch.manual_seed(k * 10 + d)
    conv = CausalConv1d(5, 6, k, d, weight_norm=weight_norm)
    x = torch.randn(3, 5, 1000)
    full = conv(x)
    state = conv.init_state(3)
    steps = torch.cat([conv.step(x[:, :, t : t + 1], state) for t in range(x.shape[2])], dim=2)
    # both sum the same C_in·k products and the bias, each within eps·√(C_in·k + 1) of their magnitude
    bound = 2 * reduction_bound(conv_magnitude(conv, x), 5 * k + 1, torch.float32)
    assert_close_derived(steps, full, bound, f"step vs forward, k={k} d={d}")


def test_remove_weight_norm_keeps_output():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 3, 3, 2, weight_norm=True)
    x = torch.randn(1, 3, 50)
    before = conv(x)
    conv.remove_weight_norm()
    assert not any("parametrizations" in n for n, _ in conv.named_parameters())
    # the folded weight is the one the parametrisation computed, so only the convolution's C_in·k + 1 sums may round
    # differently (a kernel may block them by memory alignment)
    assert_close_derived(conv(x), before, 2 * reduction_bound(conv_magnitude(conv, x), 3 * 3 + 1, torch.float32))


@pytest.mark.parametrize("call,needle", [
    (lambda: CausalConv1d(2, 2, 0), "kernel_size"),
    (lambda: CausalConv1d(2, 2, 3, dilation=0), "dilation"),
    (lambda: CausalConv1d(2, 2, 3)(torch.randn(2, 10)), r"\(batch, channels, time\)"),
    (lambda: CausalConv1d(2, 2, 3)(torch.randn(1, 3, 10)), "2 channels, found 3"),
    (lambda: CausalConv1d(2, 2, 3)(torch.ones(1, 2, 10, dtype=torch.long)), "floating"),
    (lambda: DilatedConv(2, 2, 3, dims=2)(torch.randn(1, 2, 10)), r"\(batch, channels, height, width\)"),
    (lambda: DilatedConv(2, 2, 3, dims=3), "dims"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
