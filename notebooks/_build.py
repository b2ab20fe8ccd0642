"""Write (and optionally execute) the notebooks: 01 and 02 from the cell sources below, 03 from
build_03_wavenet_receptive_field.py.

    python notebooks/_build.py            # write the .ipynb files without outputs
    python notebooks/_build.py --execute  # write them, run them top to bottom in a fresh kernel, save with outputs
    python notebooks/_build.py --execute 03_wavenet_receptive_field.ipynb   # only that one

The notebooks are committed with their outputs; edit the cells here (or in build_03_…py), rebuild with --execute, and
commit both. The test suite (tests/test_notebooks.py) re-executes every notebook, so each `assert` in a cell is a test,
and checks that no committed output shows a local path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------------------------------
# 01: receptive fields
# --------------------------------------------------------------------------------------------------------------------
NB01 = [
    ("md", r"""
# 01 · Receptive fields of dilated stacks

Every number in this notebook comes from `wavenet_dilated.nn.dilation` (pure arithmetic) and is then checked against a
model built from `wavenet_dilated.nn.layers` by back-propagating from one output and looking at which inputs receive a
gradient (`wavenet_dilated.nn.analysis`). Each key number is also an `assert`, so running the notebook is a test.

1. Standard vs dilated 3×3 stacks: parameters and receptive field side by side.
2. Parameters vs receptive field: 7 standard vs 7 dilated layers.
3. The exponential schedule's closed form, and a slip common in write-ups.
4. WaveNet receptive fields in samples and milliseconds.
5. Gridding: coverage heat maps.
6. Hybrid dilated convolution (HDC) vs measured coverage.
7. Gradient-measured (effective) receptive fields, 2D.
"""),
    ("code", r"""
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook probe, irrelevant here
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from wavenet_dilated.nn import dilation as dil
from wavenet_dilated.nn.analysis import input_gradient, measured_extent, zero_fraction
from wavenet_dilated.nn.context import ContextModule
from wavenet_dilated.nn.layers import DilatedConv

torch.set_num_threads(1)  # every model here is tiny: threads would only add overhead
torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
"""),
    ("md", r"""
## 1 · Standard vs dilated: parameters and receptive field

A stack of `L` standard 3×3 convolutions sees `1 + 2L` pixels along each axis. With dilations `1, 2, 4, …, 2^(L−1)`
(each layer's taps spread twice as far apart as the previous layer's) it sees `1 + 2(2^L − 1) = 2^(L+1) − 1`.
"""),
    ("code", r"""
rows = dil.compare_standard_dilated(6, kernel_size=3, channels=1, dims=2)
print(f"{'layers':>6} {'dilation':>8} {'RF standard':>12} {'RF dilated':>11} {'params (C=1)':>13}")
for r in rows:
    print(f"{r['layers']:>6} {2 ** (r['layers'] - 1):>8} {r['rf_standard']:>10}×{r['rf_standard']:<1} "
          f"{r['rf_dilated']:>8}×{r['rf_dilated']:<3} {r['parameters']:>10}")

assert [r["rf_standard"] for r in rows] == [3, 5, 7, 9, 11, 13]
assert [r["rf_dilated"] for r in rows] == [3, 7, 15, 31, 63, 127]
assert all(r["rf_dilated"] == 2 ** (r["layers"] + 1) - 1 for r in rows)

fig, ax = plt.subplots(figsize=(6, 3.5))
layers = [r["layers"] for r in rows]
ax.plot(layers, [r["rf_standard"] for r in rows], "o-", label="standard (dilation 1)")
ax.plot(layers, [r["rf_dilated"] for r in rows], "s-", label="dilated (1, 2, 4, …)")
ax.set(xlabel="3×3 layers", ylabel="receptive field (pixels per axis)", yscale="log",
       title="Linear vs exponential growth at the same parameter count")
ax.legend();
"""),
    ("md", r"""
## 2 · Parameters vs receptive field

Dilation changes where a kernel's taps land, not how many there are: 7 layers of 3×3 convolutions with `C` maps in and
out have `7 · (9C² + C)` parameters whether dilated or not. Below, two real stacks with `C = 16`: rates all 1 (RF 15)
vs rates 1, 2, 4, …, 64 (RF 255). The receptive fields are measured from gradients (a stack without non-linearities
and with random weights reaches every input its taps can reach).
"""),
    ("code", r"""
C = 16
def stack(rates, channels=C, dims=2):
    return nn.Sequential(*[DilatedConv(channels, channels, 3, r, dims=dims) for r in rates])

rates_std, rates_dil = [1] * 7, dil.exponential_dilations(7)
n_params = lambda m: sum(p.numel() for p in m.parameters())
std, dilated = stack(rates_std), stack(rates_dil)
print("rates:", rates_std, "vs", rates_dil)
print(f"parameters: {n_params(std)} vs {n_params(dilated)} (formula 7·(9C²+C) = {7 * (9 * C * C + C)})")

rf_std, rf_dil = dil.receptive_field(3, rates_std), dil.receptive_field(3, rates_dil)
# measure on one input map, 1 channel, in float64: the 255×255 field needs a 261×261 input
g_std = input_gradient(stack(rates_std, 1).double(), (1, rf_std + 6, rf_std + 6))
g_dil = input_gradient(stack(rates_dil, 1).double(), (1, rf_dil + 6, rf_dil + 6))
print(f"receptive field: computed {rf_std} vs {rf_dil}; measured {measured_extent(g_std)} vs {measured_extent(g_dil)}")

assert n_params(std) == n_params(dilated) == dil.stack_parameters(C, 7, 3, dims=2) == 7 * (9 * C * C + C)
assert (rf_std, rf_dil) == (15, 255)
assert measured_extent(g_std) == (15, 15) and measured_extent(g_dil) == (255, 255)
assert zero_fraction(g_dil) == 0.0  # the exponential schedule leaves no holes
"""),
    ("md", r"""
## 3 · The exponential schedule in closed form

For rates `r_i = 2^(i−1)`, `i = 1..L`, and kernel `k`:

$$\mathrm{RF} = 1 + \sum_{i=1}^{L} (k-1)\,2^{i-1} = 1 + (k-1)(2^L - 1).$$

Several textbook summaries and write-ups give `2^L (k−1) + 1`, which over-counts by exactly `k − 1`: it sums the geometric
series to `2^L` instead of `2^L − 1`. For WaveNet's `k = 2` that is one sample (1025 instead of 1024); for `k = 3`,
two pixels (129 instead of 127).
"""),
    ("code", r"""
print(f"{'k':>2} {'L':>3} {'exact (sum)':>12} {'1+(k-1)(2^L-1)':>15} {'2^L(k-1)+1':>11} {'diff':>5}")
for k in (2, 3, 5):
    for L in (1, 2, 4, 6, 10):
        exact = dil.receptive_field(k, dil.exponential_dilations(L))
        closed, slip = 1 + (k - 1) * (2**L - 1), 2**L * (k - 1) + 1
        print(f"{k:>2} {L:>3} {exact:>12} {closed:>15} {slip:>11} {slip - exact:>5}")
        assert exact == closed and slip - exact == k - 1

assert dil.receptive_field(3, dil.exponential_dilations(6)) == 127
assert dil.receptive_field(2, dil.exponential_dilations(10)) == 1024
assert dil.receptive_field(2, dil.exponential_dilations(10, n_stacks=3)) == 3070
"""),
    ("md", r"""
## 4 · WaveNet receptive fields in samples and milliseconds

A WaveNet stacks causal dilated convolutions with rates `1, 2, …, 2^(n−1)` repeated in `S` stacks; with kernel `k` the
receptive field is `1 + S (k − 1)(2^n − 1)` samples. At 22 050 Hz (LJSpeech):

- `ljspeech` preset: 3 stacks of 1..512 (30 layers), kernel 3 → `1 + 3 · 2 · 1023 = 6139` samples ≈ 278.4 ms;
- `demo` preset: 1 stack of 1..512 (10 layers), kernel 3 → `1 + 1 · 2 · 1023 = 2047` samples ≈ 92.8 ms;
- the original WaveNet configuration for comparison: 3 stacks of 1..512, kernel 2 → 3070 samples ≈ 139.2 ms.

The presets' rates and kernel sizes are read from `wavenet_dilated.presets` and their receptive fields recomputed with
`dilation.receptive_field`; the cell checks them against the numbers above, so this text cannot drift from the presets
unnoticed. Notebook 03 looks at what a receptive field means for a trained model.
"""),
    ("code", r"""
from wavenet_dilated.presets import model_preset

SAMPLE_RATE = 22050  # Hz
ljspeech, demo = model_preset("ljspeech"), model_preset("demo")
configs = {
    "ljspeech (3 × 1..512, k=3)": (ljspeech.kernel_size, list(ljspeech.dilations)),
    "demo (1 × 1..512, k=3)": (demo.kernel_size, list(demo.dilations)),
    "WaveNet paper (3 × 1..512, k=2)": (2, dil.exponential_dilations(10, n_stacks=3)),
}
rf_samples = {}
print(f"{'configuration':<34} {'layers':>6} {'RF (samples)':>13} {'RF (ms)':>8}")
for name, (k, rates) in configs.items():
    rf = dil.receptive_field(k, rates)
    rf_samples[name] = rf
    print(f"{name:<34} {len(rates):>6} {rf:>13} {1000 * rf / SAMPLE_RATE:>8.1f}")

# the text above, checked against the presets
assert configs["ljspeech (3 × 1..512, k=3)"] == (3, dil.exponential_dilations(10, n_stacks=3)) and ljspeech.n_layers == 30
assert configs["demo (1 × 1..512, k=3)"] == (3, dil.exponential_dilations(10, n_stacks=1)) and demo.n_layers == 10
assert rf_samples["ljspeech (3 × 1..512, k=3)"] == ljspeech.receptive_field == 1 + 3 * 2 * 1023 == 6139
assert rf_samples["demo (1 × 1..512, k=3)"] == demo.receptive_field == 1 + 1 * 2 * 1023 == 2047
assert rf_samples["WaveNet paper (3 × 1..512, k=2)"] == 3070
assert [round(1000 * rf / SAMPLE_RATE, 1) for rf in (6139, 2047, 3070)] == [278.4, 92.8, 139.2]

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, (k, rates) in configs.items():
    per_layer = dil.receptive_fields(k, rates)
    ax.plot(range(1, len(rates) + 1), 1000 * np.array(per_layer) / SAMPLE_RATE, ".-", label=name)
ax.set(xlabel="layer", ylabel="receptive field (ms at 22.05 kHz)", title="Receptive field after each layer")
ax.legend(fontsize=8);
"""),
    ("md", r"""
## 5 · Gridding: which offsets does a stack actually see?

A dilated layer's taps form an indicator `1 at 0, r, 2r, …`; convolving the indicators of all layers counts the paths
from each input offset to one output (`dilation.coverage`). Offsets with zero paths are holes in the receptive field
(*gridding*, Wang et al. 2018). A 3×3 kernel is separable in its tap positions, so the 2D path count is the outer
product of the 1D counts. Black cells are holes.
"""),
    ("code", r"""
groups = {
    "[2, 2, 2]": [2, 2, 2],
    "[2, 4, 8]": [2, 4, 8],
    "[1, 2, 9]": [1, 2, 9],
    "HDC [1, 2, 5, 9]": [1, 2, 5, 9],
    "context [1, 1, 2, 4, 8, 16, 1]": [1, 1, 2, 4, 8, 16, 1],
}
fig, axes = plt.subplots(1, len(groups), figsize=(18, 4))
cov2d = {}
for ax, (name, rates) in zip(axes, groups.items()):
    cov = dil.coverage(3, rates, dims=2)
    cov2d[name] = cov
    counts = np.outer(cov.path_counts, cov.path_counts).astype(float)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("black")  # masked cells: offsets no path reaches
    ax.imshow(np.ma.masked_where(counts == 0, np.log10(np.maximum(counts, 1))), cmap=cmap, interpolation="nearest")
    ax.set_title(f"{name}\nRF {cov.receptive_field}, coverage {float(cov.fraction):.3f}", fontsize=9)
    ax.grid(False); ax.set_xticks([]); ax.set_yticks([])
fig.suptitle("log10(path count) per input offset (black: unreachable)");

for name, cov in cov2d.items():
    print(f"{name:<32} RF {cov.receptive_field:>3}  coverage 2D = {cov.fraction} = {float(cov.fraction):.3f}  "
          f"paths min/max {cov.min_paths}/{cov.max_paths}")

assert cov2d["[2, 2, 2]"].fraction == Fraction(7, 13) ** 2
assert cov2d["[2, 4, 8]"].fraction == Fraction(15, 29) ** 2      # only even offsets: 15 of 29 per axis
assert cov2d["[1, 2, 9]"].fraction == Fraction(21, 25) ** 2      # offsets 7, 8, 16, 17 are holes
assert cov2d["HDC [1, 2, 5, 9]"].fraction == 1
assert cov2d["context [1, 1, 2, 4, 8, 16, 1]"].fraction == 1
assert cov2d["context [1, 1, 2, 4, 8, 16, 1]"].receptive_field == 67
"""),
    ("md", r"""
## 6 · The HDC rule vs measured coverage

Wang et al.'s condition (`dilation.hdc_check`): with `M_n = r_n` and
`M_i = max(M_{i+1} − 2r_i, M_{i+1} − 2(M_{i+1} − r_i), r_i)`, a group is valid when `M_2 ≤ K` and its rates share no
common factor. Measured coverage: build a ReLU stack with positive weights, feed a positive input (so every ReLU is
active and a zero gradient can only mean "no path"), back-propagate from the centre and count the zero gradients
inside the receptive field, as `tests/test_layers.py` does.

Two rows at the bottom mark the rule's edges. `[1, 4, 2]` is not a sawtooth (the rates are not increasing), the rule
rejects it, yet it covers every offset: the condition is sufficient, not necessary. `[2, 3]` passes the check
(`M_2 = 3 ≤ 3`, no common factor) but misses offsets 1 and 9: the recurrence assumes the group starts at rate 1, and a
common factor of 1 does not imply that. So the claim checked below is "valid and `r_1 = 1` ⇒ no holes".
"""),
    ("code", r"""
def measured_coverage(rates, dims):
    torch.manual_seed(0)
    layers = []
    for r in rates:
        conv = DilatedConv(2, 2, 3, r, dims=dims)
        with torch.no_grad():
            conv.weight.abs_().add_(1e-3)
            conv.bias.abs_()
        layers += [conv, nn.ReLU()]
    model = nn.Sequential(*layers).double()
    size = dil.receptive_field(3, rates) + 4
    shape = (2,) + (size,) * dims
    g = input_gradient(model, shape, inputs=torch.rand(shape))
    return 1 - Fraction(zero_fraction(g)).limit_denominator(10**6), measured_extent(g)

candidates = [[1, 2, 3], [1, 2, 5], [1, 2, 5, 9], [1, 2, 9], [2, 4, 8], [2, 2, 2], [1, 4], [1, 3], [1, 2, 4, 8],
              [1, 3, 9], [3, 3], [1, 1, 2, 4, 8, 16, 1], [1, 4, 2], [2, 3]]
print(f"{'rates':<24} {'M_i':<22} {'HDC':>5} {'coverage 1D':>12} {'measured 1D':>12} {'coverage 2D':>12} "
      f"{'measured 2D':>12}")
hdc_rows = []
for rates in candidates:
    report = dil.hdc_check(rates, kernel_size=3)
    cov1, cov2 = dil.coverage(3, rates, 1).fraction, dil.coverage(3, rates, 2).fraction
    m1, ext1 = measured_coverage(rates, 1)
    m2, ext2 = measured_coverage(rates, 2)
    rf = dil.receptive_field(3, rates)
    hdc_rows.append((rates, report.valid, cov1, m1, cov2, m2))
    print(f"{str(rates):<24} {str(report.max_distances):<22} {str(report.valid):>5} {float(cov1):>12.3f} "
          f"{float(m1):>12.3f} {float(cov2):>12.3f} {float(m2):>12.3f}")
    assert m1 == cov1 and m2 == cov2, rates          # gradients agree with the path-count arithmetic exactly
    assert ext1 == (rf,) and ext2 == (rf, rf), rates  # and the holes are inside a field of the computed size
    if report.valid and rates[0] == 1:
        assert cov1 == 1, rates                       # HDC-valid groups that start at rate 1 leave no holes

valid_holes = [r for r, v, c1, *_ in hdc_rows if v and c1 < 1]
invalid_full = [r for r, v, c1, *_ in hdc_rows if not v and c1 == 1]
print(f"\nvalid by the rule but with holes: {valid_holes}; invalid by the rule yet fully covered: {invalid_full}")
assert valid_holes == [[2, 3]] and invalid_full == [[1, 4, 2]]
"""),
    ("md", r"""
## 7 · Gradient-measured (effective) receptive fields, 2D

The theoretical receptive field says which inputs *can* influence an output; the gradient magnitude says how much they
*do*. Below, `|∂y_centre / ∂x|` averaged over 16 random inputs for ReLU stacks with 8 maps and PyTorch's default
initialisation: 7 standard 3×3 layers (RF 15), the context module's rates (RF 67), and the context module with its
identity initialisation (RF 67 on paper, but at initialisation each output depends only on the input at the same
position: a receptive field of 1). The dashed boxes are the computed receptive fields; measured extents are checked
against them with positive weights (every path active), since with random signs a few edge paths can cancel.
"""),
    ("code", r"""
SIZE = 75
def relu_stack(rates, channels=8):
    layers = []
    for i, r in enumerate(rates):
        layers += [DilatedConv(channels, channels, 3, r, dims=2)] + ([nn.ReLU()] if i < len(rates) - 1 else [])
    return nn.Sequential(*layers)

def mean_gradient(model, n=16):
    g = torch.Generator().manual_seed(0)
    return sum(input_gradient(model, (8, SIZE, SIZE), generator=g) for _ in range(n)) / n

def positive_extent(model):
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(1e-3)
    return measured_extent(input_gradient(model.double(), (8, SIZE, SIZE), inputs=torch.rand(8, SIZE, SIZE)))

torch.manual_seed(0)
ctx_rates = [1, 1, 2, 4, 8, 16, 1]
models = {
    "7 × 3×3, dilation 1": (relu_stack([1] * 7), relu_stack([1] * 7), dil.receptive_field(3, [1] * 7)),
    "context rates, random init": (ContextModule(8, init="random"), ContextModule(8, init="random"), 67),
    "context module, identity init": (ContextModule(8), None, 1),  # 67 on paper; 1 at initialisation
}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
erf = {}
for ax, (name, (model, probe, rf)) in zip(axes, models.items()):
    grad = mean_gradient(model).numpy()
    erf[name] = grad
    extent = measured_extent(torch.from_numpy(grad))
    im = ax.imshow(grad / grad.max(), cmap="magma", vmin=0, vmax=1)
    c, h = SIZE // 2, rf // 2
    ax.add_patch(plt.Rectangle((c - h - 0.5, c - h - 0.5), rf, rf, fill=False, ls="--", color="cyan"))
    label = "RF 67 on paper, 1 at init" if probe is None else f"computed RF {rf}"
    ax.set_title(f"{name}\n{label}, measured extent {extent[0]}×{extent[1]}", fontsize=9)
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="|∂y/∂x| / max")
    if probe is not None:
        assert positive_extent(probe) == (rf, rf), name
    assert extent[0] <= rf and extent[1] <= rf

assert measured_extent(torch.from_numpy(erf["context module, identity init"])) == (1, 1)
assert positive_extent(ContextModule(8, init="random")) == (67, 67)

# how concentrated is the effective field? the smallest share of the computed field's area holding half the mass
for name, (_, _, rf) in models.items():
    mass = np.sort(erf[name].ravel())[::-1].cumsum() / erf[name].sum()
    half, most = (np.searchsorted(mass, 0.5) + 1) / rf**2, (np.searchsorted(mass, 0.9) + 1) / rf**2
    print(f"{name:<32} 50% of the gradient mass in {half:6.1%} of the field, 90% in {most:6.1%}")
    if rf > 1:
        assert half < 0.5, name  # the effective field is more concentrated than the theoretical one
"""),
    ("md", r"""
Gradient mass is not spread evenly over the theoretical field: it piles up towards the centre, where many paths meet
(Luo et al., 2016, *Understanding the Effective Receptive Field*), more so for the standard stack (where the path
counts are binomial) than for the dilated one (whose path counts are nearly flat, section 5). The identity
initialisation starts from the extreme case, a field of one pixel, and lets training open it up where context helps:
notebook 02 shows what that buys on a dense-prediction task.
"""),
]

# --------------------------------------------------------------------------------------------------------------------
# 02: context module on a synthetic segmentation task
# --------------------------------------------------------------------------------------------------------------------
NB02 = [
    ("md", r"""
# 02 · The context module on a dense-prediction task that needs long-range context

Yu & Koltun append a *context module* (3×3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1, ReLUs, then a 1×1) to a
dilated front-end, initialise it to the identity, and train it on the front-end's output. This notebook reproduces the
point on a synthetic task small enough for two CPU cores:

- **Images** (128×128, grey): one rectangle on a noisy background. Every rectangle has the same interior; its class
  (A or B) is marked only by its 3-pixel border, bright for A and dark for B. Labels: background, A, B for every pixel.
- **Why context matters**: a pixel deep inside a rectangle looks exactly the same for A and B; only a receptive field
  that reaches the border can decide. Rectangles are 64–120 pixels wide, far larger than the front-end's field.
- **Models** (one front-end trained per seed, then frozen, as in the paper): the front-end alone; + the basic context
  module with identity initialisation; + the same module with PyTorch's default (random) initialisation; + an
  undilated module of the same depth (all dilations 1) with identity initialisation.
- **Metric**: mean intersection-over-union (mIoU) over the three classes on held-out images, for 3 seeds.
"""),
    ("code", r"""
%matplotlib inline
import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook probe, irrelevant here
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from wavenet_dilated.nn import dilation as dil
from wavenet_dilated.nn.analysis import measured_extent
from wavenet_dilated.nn.context import ContextModule, DilatedFrontEnd

# Two threads on an idle 2-core machine (CI). On a machine that is already busy, two OpenMP threads per process make
# these small convolutions several times slower (we measured 6-10x with a load of 6 on 2 cores), so use one there.
N_THREADS = 2 if os.getloadavg()[0] < (os.cpu_count() or 1) - 0.5 else 1
torch.set_num_threads(N_THREADS)
print(f"torch threads: {N_THREADS} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
plt.rcParams.update({"figure.dpi": 90})
NOTEBOOK_START = time.time()

SIZE = 128                # image side, pixels
SIDES = (64, 120)         # rectangle sides, pixels (inclusive)
BORDER = 3                # border thickness, pixels
NOISE = 0.3               # std of the Gaussian pixel noise
BORDER_VALUE = {1: +1.5, 2: -2.0}   # added on top of the interior's +1: bright border = class A, dark = class B
N_TRAIN, N_TEST = 256, 96
OUTPUT_STRIDE = 2
CLASSES = ("background", "A (bright border)", "B (dark border)")
SEEDS = (0, 1, 2)
"""),
    ("md", r"""
## The task
"""),
    ("code", r"""
def make_images(n, rng):
    x = rng.normal(0.0, NOISE, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    y = np.zeros((n, SIZE, SIZE), dtype=np.int64)
    boxes = []
    for i in range(n):
        h, w = rng.integers(SIDES[0], SIDES[1] + 1, size=2)
        top, left = rng.integers(0, SIZE - h + 1), rng.integers(0, SIZE - w + 1)
        cls = int(rng.integers(1, 3))
        ring = np.ones((h, w), dtype=bool)
        ring[BORDER:-BORDER, BORDER:-BORDER] = False
        x[i, 0, top:top + h, left:left + w] += 1.0
        x[i, 0, top:top + h, left:left + w][ring] += BORDER_VALUE[cls]
        y[i, top:top + h, left:left + w] = cls
        boxes.append((top, left, h, w))
    return torch.from_numpy(x), torch.from_numpy(y), boxes

def distance_to_edge(boxes):
    # per rectangle pixel, the distance (in pixels) to the nearest rectangle edge: how far its border is
    out = []
    for top, left, h, w in boxes:
        i, j = np.arange(h)[:, None], np.arange(w)[None, :]
        out.append(np.minimum(np.minimum(i, h - 1 - i), np.minimum(j, w - 1 - j)).ravel())
    return np.concatenate(out)

x_demo, y_demo, _ = make_images(4, np.random.default_rng(123))
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for i in range(4):
    axes[0, i].imshow(x_demo[i, 0], cmap="gray", vmin=-1, vmax=3)
    axes[1, i].imshow(y_demo[i], cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
    axes[0, i].set_title(CLASSES[int(y_demo[i].max())])
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
axes[0, 0].set_ylabel("image"); axes[1, 0].set_ylabel("labels")
fig.suptitle("Identical interiors; the class is written only on the border");
"""),
    ("md", r"""
## Receptive fields

The front-end is `DilatedFrontEnd` with one 3×3 convolution and a 2×2 max-pool (output stride 2), then 3×3
convolutions dilated 2 and 4 instead of further pooling, a 1×1 and a 1×1 class-score layer. Its receptive field is
28 pixels. The context module works on the front-end's stride-2 score maps, so each of its layers counts twice in input
pixels. Combined fields, with `dilation.receptive_field` over the concatenated layers:
"""),
    ("code", r"""
front_end = DilatedFrontEnd(1, n_classes=3, width=8, output_stride=OUTPUT_STRIDE)
context_rates = (1, 1, 2, 4, 8, 16, 1)
undilated_rates = (1,) * 7

def combined_rf(rates):
    layers = front_end.geometry + [(3, r, 1) for r in rates] + [(1, 1, 1)]
    ks, ds, ss = zip(*layers)
    return dil.receptive_field(list(ks), list(ds), list(ss))

rf = {
    "front-end": front_end.receptive_field,
    "front-end + context (dilated)": combined_rf(context_rates),
    "front-end + undilated module": combined_rf(undilated_rates),
}
for name, v in rf.items():
    print(f"{name:<32} {v:>4} pixels")
assert rf == {"front-end": 28, "front-end + context (dilated)": 28 + 2 * 66, "front-end + undilated module": 28 + 2 * 14}

# check the front-end's field from gradients (average pooling makes every tap count, see DilatedFrontEnd's docstring)
probe = DilatedFrontEnd(1, 3, width=4, output_stride=OUTPUT_STRIDE, pool="avg").double()
with torch.no_grad():
    for p in probe.parameters():
        p.abs_().add_(1e-3)
x_probe = torch.rand(1, 1, 96, 96, dtype=torch.float64, requires_grad=True)
probe(x_probe)[0, :, 24, 24].sum().backward()
assert measured_extent(x_probe.grad[0, 0]) == (28, 28)

# the share of rectangle pixels whose border lies within reach (half the field on each side), on the test images
_, _, boxes_check = make_images(N_TEST, np.random.default_rng(999))
d = distance_to_edge(boxes_check)
reach = {name: float(np.mean(d <= v // 2)) for name, v in rf.items()}
for name, share in reach.items():
    print(f"{name:<32} can see the border from {share:.0%} of rectangle pixels")
assert reach["front-end"] < reach["front-end + undilated module"] < reach["front-end + context (dilated)"] == 1.0
"""),
    ("md", r"""
## Training

Per seed: generate 256 training and 96 test images; train the front-end (Adam, cosine schedule, 200 steps of 8 images,
loss on the stride-2 score map against the label at each cell's centre); freeze it; feed its softmax probabilities
(non-negative, so the identity-initialised module starts by reproducing the front-end's prediction exactly) to each
context variant and train that (Adam, lr 0.01, cosine schedule, 150 steps of 8). Every variant gets the same data, steps,
optimiser and batches. Predictions are upsampled bilinearly to full resolution before scoring, as in the paper.
"""),
    ("code", r"""
def train(model, inputs, targets, steps, lr, seed, batch=8):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch,), generator=gen)
        loss = F.cross_entropy(model(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return float(loss.detach())

def upsample(scores):
    return F.interpolate(scores, size=(SIZE, SIZE), mode="bilinear", align_corners=False)

def confusion(scores, labels, n=3):
    pred = upsample(scores).argmax(1)
    return torch.bincount(labels.flatten() * n + pred.flatten(), minlength=n * n).reshape(n, n).double()

def iou(cm):
    return (cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag())).numpy()

VARIANTS = {
    "context, identity init": dict(dilations=context_rates, init="identity"),
    "context, random init": dict(dilations=context_rates, init="random"),
    "undilated, identity init": dict(dilations=undilated_rates, init="identity"),
}
results, kept = {}, {}
for seed in SEEDS:
    start = time.time()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x_train, y_train, _ = make_images(N_TRAIN, rng)
    x_test, y_test, _ = make_images(N_TEST, rng)
    s = OUTPUT_STRIDE
    y_train_coarse = y_train[:, s // 2::s, s // 2::s]  # the label at the centre of each output cell

    fe = DilatedFrontEnd(1, n_classes=3, width=8, output_stride=s)
    train(fe, x_train, y_train_coarse, steps=200, lr=1e-2, seed=seed)
    fe.eval()
    with torch.no_grad():
        scores_train, scores_test = fe(x_train), fe(x_test)
    probs_train, probs_test = scores_train.softmax(1), scores_test.softmax(1)
    results[seed] = {"front-end alone": iou(confusion(scores_test, y_test))}
    kept[seed] = {"x": x_test[:3], "y": y_test[:3], "front-end alone": scores_test[:3]}

    for name, kwargs in VARIANTS.items():
        torch.manual_seed(seed)
        module = ContextModule(3, dims=2, **kwargs)
        if kwargs["init"] == "identity":  # the module starts as the identity: same prediction as the front-end
            with torch.no_grad():
                assert torch.equal(module(probs_test), probs_test)
        train(module, probs_train, y_train_coarse, steps=150, lr=1e-2, seed=seed)
        with torch.no_grad():
            out = module(probs_test)
        results[seed][name] = iou(confusion(out, y_test))
        kept[seed][name] = out[:3]
    print(f"seed {seed}: " + ", ".join(f"{k} {v.mean():.3f}" for k, v in results[seed].items())
          + f"  ({time.time() - start:.0f} s)")
"""),
    ("md", r"""
## Results
"""),
    ("code", r"""
names = list(results[SEEDS[0]])
miou = {name: np.array([results[s][name].mean() for s in SEEDS]) for name in names}
print(f"{'model':<28}" + "".join(f"{'seed ' + str(s):>9}" for s in SEEDS) + f"{'mean':>8}   per-class IoU (mean)")
for name in names:
    per_class = np.mean([results[s][name] for s in SEEDS], axis=0)
    print(f"{name:<28}" + "".join(f"{v:>9.3f}" for v in miou[name]) + f"{miou[name].mean():>8.3f}   "
          + " ".join(f"{c:.2f}" for c in per_class))

fig, ax = plt.subplots(figsize=(8, 3.8))
for i, name in enumerate(names):
    ax.bar(i, miou[name].mean(), color=f"C{i}", alpha=0.7)
    ax.plot([i] * len(SEEDS), miou[name], "k.", ms=8)
ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names])
ax.set(ylabel="test mIoU", ylim=(0, 1), title="mIoU per seed (dots) and mean (bars)");

gain = miou["context, identity init"] - miou["front-end alone"]
print("\ngain of the identity-initialised context module over the front-end, per seed:", np.round(gain, 3))
assert np.all(gain >= 0.10), gain
assert miou["context, identity init"].mean() > miou["context, random init"].mean()
assert miou["context, identity init"].mean() > miou["undilated, identity init"].mean()
assert np.all(miou["context, random init"] < miou["front-end alone"])  # random init ends below where it started from
"""),
    ("code", r"""
seed = SEEDS[0]
fig, axes = plt.subplots(3, 6, figsize=(16, 8))
for row in range(3):
    axes[row, 0].imshow(kept[seed]["x"][row, 0], cmap="gray", vmin=-1, vmax=3)
    axes[row, 1].imshow(kept[seed]["y"][row], cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
    for col, name in enumerate(names, start=2):
        pred = upsample(kept[seed][name][row:row + 1]).argmax(1)[0]
        axes[row, col].imshow(pred, cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
for col, title in enumerate(["image", "labels"] + names):
    axes[0, col].set_title(title, fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
fig.suptitle(f"Test predictions, seed {seed} (purple background, teal A, yellow B)");
"""),
    ("md", r"""
The front-end labels a rectangle's rim correctly but guesses in its interior, where no border is in view. The
identity-initialised context module starts from exactly the front-end's answer and learns to carry the border's
evidence inward across the whole rectangle (its field is 160 pixels); the undilated module of the same depth and
parameter count only reaches 56 pixels, so large rectangles keep an undecided core; and the same dilated module
with random initialisation, under the same training budget, ends below the front-end it was appended to on every
seed (the narrow 8-layer ReLU stack collapses to the background class, or to a fixed guess that ignores the input): the
failure that led Yu & Koltun to the identity initialisation.
"""),
    ("code", r"""
elapsed = time.time() - NOTEBOOK_START
print(f"notebook ran in {elapsed:.0f} s")
"""),
]


def build(cells: list[tuple[str, str]], slow: bool = False) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    if slow:  # tests/test_notebooks.py marks it @pytest.mark.slow (more than about a minute on 2 CPU cores)
        nb.metadata["wavenet_dilated"] = {"slow": True}
    for kind, source in cells:
        source = source.strip("\n")
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids keep the diffs of rebuilt notebooks small
    return nb


def write_notebook(nb: nbformat.NotebookNode, name: str, execute: bool) -> None:
    """Write ``nb`` as ``notebooks/<name>``, first running it top to bottom in a fresh kernel when ``execute``."""
    if execute:
        from nbclient import NotebookClient

        start = time.time()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        print(f"{name}: executed in {time.time() - start:.0f} s")
    nbformat.write(nb, HERE / name)
    print(f"wrote {HERE / name}")


def notebooks() -> dict[str, tuple[list[tuple[str, str]], bool]]:
    """name: (cells, slow) of every notebook; 03's cells live in their own file."""
    sys.path.insert(0, str(HERE))
    import build_03_wavenet_receptive_field as nb03

    return {"01_receptive_fields.ipynb": (NB01, False), "02_context_module_segmentation.ipynb": (NB02, True),
            nb03.NAME: (nb03.CELLS, False)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run each notebook in a fresh kernel and save outputs")
    parser.add_argument("names", nargs="*", help="only these notebooks (file names); default all")
    args = parser.parse_args(argv)
    for name, (cells, slow) in notebooks().items():
        if args.names and name not in args.names:
            continue
        write_notebook(build(cells, slow), name, args.execute)
    return 0


if __name__ == "__main__":
    sys.exit(main())
