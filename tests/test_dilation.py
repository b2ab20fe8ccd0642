import subprocess
import sys
from fractions import Fraction

import pytest

from wavenet_dilated.nn import dilation as dil


def test_import_needs_no_torch():
    # the arithmetic is for the CLI and notebooks without building a model: importing it (and the package and nn/
    # __init__ it goes through) must not import torch; a fresh interpreter, since this one has torch loaded already
    code = "import sys, wavenet_dilated.nn.dilation as d; assert d.receptive_field(3, [1, 2]) == 7; " \
           "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wavenet_receptive_fields():
    assert dil.receptive_field(2, dil.exponential_dilations(10)) == 1024
    assert dil.receptive_field(2, dil.exponential_dilations(10, n_stacks=3)) == 3070
    assert dil.receptive_field(3, dil.exponential_dilations(6)) == 127  # rates 1..32


@pytest.mark.parametrize("k,L", [(2, 10), (3, 6), (3, 10), (5, 4), (2, 1)])
def test_exponential_formula(k, L):
    # the 2^L(k-1)+1 found in some textbook summaries is off by k-1; the exact form is 1 + (k-1)(2^L - 1)
    assert dil.receptive_field(k, dil.exponential_dilations(L)) == 1 + (k - 1) * (2**L - 1)


def test_context_module_layer_by_layer():
    rates = [1, 1, 2, 4, 8, 16, 1, 1]
    kernels = [3] * 7 + [1]
    assert dil.receptive_fields(kernels, rates) == [3, 5, 9, 17, 33, 65, 67, 67]


@pytest.mark.parametrize("L", range(1, 9))
def test_standard_stack(L):
    assert dil.receptive_field(3, [1] * L) == 2 * L + 1


def test_strided_by_hand():
    # k=3 s=2, then k=3 d=2 s=1, then k=2 d=1:
    # 1 + 2*1*1 = 3; + 2*2*2 = 11; + 1*1*(2*1) = 13
    assert dil.receptive_fields([3, 3, 2], [1, 2, 1], [2, 1, 1]) == [3, 11, 13]
    # two stride-2 k=2 layers then a k=3: 1 + 1 + 1*2 + 2*4 = 12
    assert dil.receptive_field([2, 2, 3], [1, 1, 1], [2, 2, 1]) == 12


def test_padding():
    assert dil.causal_padding(3, 4) == 8
    assert dil.causal_padding(1, 7) == 0
    assert dil.same_padding(3, 4) == (4, 4)
    assert dil.same_padding(2, 3) == (1, 2)


@pytest.mark.parametrize("rates,valid", [([1, 2, 3], True), ([1, 2, 5], True), ([1, 2, 5, 9], True),
                                         ([1, 2, 9], False), ([2, 4, 8], False)])
def test_hdc(rates, valid):
    report = dil.hdc_check(rates, kernel_size=3)
    assert report.valid is valid
    assert dil.is_hdc_valid(rates) is valid


def test_hdc_recurrence_values():
    # M_3 = 9; M_2 = max(9-4, 9-14, 2) = 5 > 3; M_1 = max(5-2, 5-8, 1) = 3
    assert dil.hdc_check([1, 2, 9]).max_distances == (3, 5, 9)
    assert dil.hdc_check([2, 4, 8]).common_factor == 2


def test_coverage_values():
    c = dil.coverage(3, [2, 2, 2])
    assert c.fraction == Fraction(7, 13) and c.receptive_field == 13 and c.min_paths == 0
    assert dil.coverage(3, [2, 2, 2], dims=2).fraction == Fraction(7, 13) ** 2
    assert dil.coverage(3, [2, 4, 8]).fraction == Fraction(15, 29)
    assert dil.coverage(3, [1, 1, 2, 4, 8, 16, 1]).fraction == 1
    doubling = dil.coverage(2, dil.exponential_dilations(10))
    assert doubling.fraction == 1 and doubling.min_paths == doubling.max_paths == 1
    assert len(doubling.path_counts) == 1024


def test_hdc_groups_have_full_coverage():
    for group in ([1, 2, 3], [1, 2, 5], [1, 2, 5, 9]):
        assert dil.coverage(3, dil.hdc_dilations(group, 2)).fraction == 1


def _reached_by_brute_force(kernel: int, dilations: list[int]) -> Fraction:
    offsets = {0}
    for d in dilations:
        offsets = {o + j * d for o in offsets for j in range(kernel)}
    return Fraction(len(offsets), 1 + sum((kernel - 1) * d for d in dilations))


@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
@pytest.mark.parametrize("group", [[1], [2], [1, 2, 4], [2, 2, 2], [2, 4, 8], [1, 2, 9], [1, 5], [3, 1, 4], [4, 6],
                                   [1, 3, 8, 8], [6, 9, 12]])
@pytest.mark.parametrize("n_stacks", [1, 2, 3])
def test_coverage_fraction_is_coverage_without_the_counts(kernel, group, n_stacks):
    expected = _reached_by_brute_force(kernel, group * n_stacks)
    assert dil.coverage(kernel, group * n_stacks).fraction == expected
    assert dil.coverage_fraction(kernel, group, n_stacks=n_stacks) == expected
    assert dil.coverage_fraction(kernel, group, dims=2, n_stacks=n_stacks) == expected**2


def test_coverage_fraction_is_instant_for_any_size():
    # an interval of reached offsets, or one of the multiples of the rates' common factor: no count at all
    assert dil.coverage_fraction(10**6, [1, 2, 4], n_stacks=10**9) == 1
    assert dil.coverage_fraction(3, dil.exponential_dilations(4096), n_stacks=10**15) == 1
    rf = 1 + 10**12 * 12
    assert dil.coverage_fraction(3, [2, 2, 2], n_stacks=10**12) == Fraction((rf - 1) // 2 + 1, rf)
    # gridded with a hole: counted one bit per offset, exactly, within the bound ...
    assert dil.coverage_fraction(2, [1, 10**6]) == Fraction(4, 10**6 + 2)
    # ... and refused beyond it, saying how much it would take
    with pytest.raises(ValueError, match=r"2,000,000,000,003 offsets, 232\.8 GiB"):
        dil.coverage_fraction(3, [1, 10**12])


def test_coverage_path_counts_refuse_what_they_cannot_hold():
    assert len(dil.coverage(10**5, [1]).path_counts) == 10**5  # one layer of any kernel: linear time
    with pytest.raises(ValueError, match="coverage_fraction"):
        dil.coverage(3, [1, 10**12])


def test_parameters_same_for_standard_and_dilated():
    rows = dil.compare_standard_dilated(6, kernel_size=3)
    assert [r["rf_standard"] for r in rows] == [3, 5, 7, 9, 11, 13]
    assert [r["rf_dilated"] for r in rows] == [3, 7, 15, 31, 63, 127]
    assert dil.conv_parameters(64, 64, 3, dims=2) == 64 * 64 * 9 + 64
    assert dil.stack_parameters(64, 7, 3, dims=2) == 7 * (64 * 64 * 9 + 64)


def test_schedules():
    assert dil.exponential_dilations(10, 3)[:11] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1]
    assert dil.exponential_dilations(3, base=3) == [1, 3, 9]
    assert dil.hdc_dilations((1, 2, 5), 2) == [1, 2, 5, 1, 2, 5]


@pytest.mark.parametrize("call,needle", [
    (lambda: dil.receptive_field(0, [1]), "kernel_size"),
    (lambda: dil.receptive_field(3, [1, 0]), "dilation"),
    (lambda: dil.receptive_field(3, []), "empty"),
    (lambda: dil.receptive_field([3, 3], [1, 2, 4]), "one entry per layer"),
    (lambda: dil.receptive_field(3, [1.5]), "int"),
    (lambda: dil.coverage(3, [1], dims=3), "dims"),
    (lambda: dil.causal_padding(3, -1), "dilation"),
])
def test_bad_input(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
