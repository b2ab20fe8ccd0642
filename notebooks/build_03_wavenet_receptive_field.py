"""The cells of notebooks/03_wavenet_receptive_field.ipynb; writes (and with --execute, runs) it like _build.py does.

    python notebooks/build_03_wavenet_receptive_field.py --execute   # or: python notebooks/_build.py --execute

``--execute`` runs it top to bottom in a fresh kernel and saves it with its outputs, which is how it is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "03_wavenet_receptive_field.ipynb"
#: (kind, source) per cell, kind "md" or "code", as _build.build takes them
CELLS: list[tuple[str, str]] = []


def md(text: str) -> None:
    CELLS.append(("md", text.strip()))


def code(text: str) -> None:
    CELLS.append(("code", text.strip()))


md(r"""
# What the receptive field means for audio

A WaveNet predicts sample $x_t$ from the samples it can see: its **receptive field** (RF). Structure that spans more
samples than the RF is invisible to it, however long it trains. This notebook shows that on a synthetic signal, then
looks at the price of that context at generation time: the naive generator pays O(RF) per sample, the cached
(Fast WaveNet) queue O(layers).
""")

code(r"""
import math, time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook probe, irrelevant here
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

from wavenet_dilated import WaveNet, WaveNetConfig, generate, naive_generate
from wavenet_dilated.nn import dilation
from wavenet_dilated.nn.heads import nats_to_bits
from wavenet_dilated.mulaw import mu_law_encode

torch.set_num_threads(1)
%matplotlib inline
""")

md(r"""
## A signal whose structure is one period long

Each sequence repeats its own random pattern of $P = 33$ samples, each sample $\pm 0.5$. A sample is a fair coin flip
unless the model can see the same position one period earlier: then it is certain. So the best possible NLL is
**1 bit/sample** for a model whose RF is shorter than a period, and **0 bits** for one that reaches back a period.

Inputs are the μ-law classes of the signal shifted by one (`inputs[t] = x[t−1]`), so "one period back" is 32 steps
back in the input: exactly one tap of a layer with dilation 32.
""")

code(r"""
PERIOD, LENGTH, WARMUP = 33, 256, 70   # the loss ignores the first WARMUP samples (no full period seen yet)

def periodic_batch(gen, batch=8, length=LENGTH):
    pattern = (torch.randint(0, 2, (batch, PERIOD), generator=gen) - 0.5).float()
    return mu_law_encode(pattern.repeat(1, length // PERIOD + 1)[:, :length])

x = periodic_batch(torch.Generator().manual_seed(0), batch=1)
fig, ax = plt.subplots(figsize=(9, 2))
ax.step(range(LENGTH), x[0], where="post")
for k in range(0, LENGTH, PERIOD):
    ax.axvline(k, color="grey", lw=0.5)
ax.set(xlabel="sample", ylabel="μ-law class", title=f"one training sequence (period {PERIOD})")
plt.show()
""")

md(r"""
## Two WaveNets, identical but for their reach

Both use kernel 2 with dilations $1, 2, 4, \dots$; one stops at 16 (RF $= 1 + (2^5 - 1) = 32$ samples, less than a
period), the other at 32 (RF $= 64$).
""")

code(r"""
def train(n_layers, steps=300, seed=0):
    torch.manual_seed(seed)
    config = WaveNetConfig(n_layers=n_layers, n_stacks=1, kernel_size=2,
                           residual_channels=16, gate_channels=32, skip_channels=32)
    model = WaveNet(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    curve = []
    for step in range(steps):
        x = periodic_batch(gen)
        logits = model(model.shift_right(x))
        loss = F.cross_entropy(logits[:, :, WARMUP:], x[:, WARMUP:])
        opt.zero_grad(); loss.backward(); opt.step()
        curve.append(nats_to_bits(loss.item()))
    model.eval()
    with torch.no_grad():
        x = periodic_batch(torch.Generator().manual_seed(1234), batch=32)
        test = nats_to_bits(F.cross_entropy(model(model.shift_right(x))[:, :, WARMUP:], x[:, WARMUP:]).item())
    return model, curve, test

results = {}
for n_layers in (5, 6):
    model, curve, test = train(n_layers)
    results[model.receptive_field] = (curve, test)
    print(f"{n_layers} layers, dilations {model.config.dilations}: RF {model.receptive_field:3d} samples -> "
          f"test NLL {test:.3f} bits/sample")
""")

code(r"""
fig, ax = plt.subplots(figsize=(7, 3.5))
for rf, (curve, test) in results.items():
    ax.plot(curve, label=f"RF {rf} ({'<' if rf < PERIOD else '≥'} period {PERIOD}): test {test:.2f} bits")
ax.axhline(1.0, color="grey", ls="--", lw=0.8)
ax.set(yscale="symlog", xlabel="step", ylabel="train NLL (bits/sample)", title="a period out of reach stays random")
ax.legend()
plt.show()

short, long = results[32][1], results[64][1]
assert short > 0.9, short      # cannot beat a coin flip: the evidence lies outside its receptive field
assert long < 0.2, long        # sees one period back and copies it
assert short - long > 0.7
""")

md(r"""
## What the context costs at generation time

The naive generator re-runs the network over the last RF inputs for every new sample: its cost grows with the
receptive field, i.e. **exponentially in the number of layers per stack** and linearly in stacks. The cached queue
keeps one ring buffer per layer and touches each layer once per sample: its cost grows with the number of layers only.

Per layer and sample the gated block costs $2\,(k R G + \tfrac{G}{2}(R + S))$ FLOPs (the per-layer count of the
benchmark's cost model, `wavenet_dilated.bench.flops_per_sample`, described in `benchmarks/README.md`). The naive
generator pays it for every position of the window (a convolution over the RF-long window at
every layer), the cached one once.
""")

code(r"""
from wavenet_dilated.bench import flops_per_sample

def layer_flops(k, R, G, S):
    return 2 * (k * R * G + G // 2 * (R + S))

rows = []
for stacks in (1, 2, 3):
    cfg = WaveNetConfig(n_layers=10 * stacks, n_stacks=stacks, kernel_size=3,
                        residual_channels=128, gate_channels=256, skip_channels=128)
    cached = cfg.n_layers * layer_flops(3, 128, 256, 128)
    naive = cfg.receptive_field * cached
    rows.append((stacks, cfg.n_layers, cfg.receptive_field, cached / 1e6, naive / 1e9, naive / cached))
print(f"{'stacks':>6} {'layers':>6} {'RF':>6} {'cached MFLOP/sample':>20} {'naive GFLOP/sample':>19} {'ratio':>7}")
for r in rows:
    print(f"{r[0]:>6} {r[1]:>6} {r[2]:>6} {r[3]:>20.2f} {r[4]:>19.2f} {r[5]:>7.0f}")
assert [r[2] for r in rows] == [2047, 4093, 6139]        # 1 + 2·1023·stacks for kernel 3
assert layer_flops(3, 128, 256, 128) == flops_per_sample(cfg)["per_layer"]  # the benchmark counts the same
assert all(r[5] == r[2] for r in rows)
""")

md(r"""
Measured on this machine for a small model (kernel 2, eight layers per stack, so RF 256 per stack; R 64, G 128): time
per generated sample once the naive window is full, for both generators, which produce **the same samples** for the
same seed. Absolute numbers depend
on the machine and its load; the trend is the point.
""")

code(r"""
def median_seconds(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]

timings = []
for stacks in (1, 2, 3):
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(n_layers=8 * stacks, n_stacks=stacks, kernel_size=2, residual_channels=64,
                                  gate_channels=128, skip_channels=64)).eval()
    rf = model.receptive_field
    # same samples from both generators for the same seed
    assert torch.equal(generate(model, n_samples=40, seed=1), naive_generate(model, n_samples=40, seed=1))
    # one naive step once the window is full = one forward pass over the last RF inputs
    window = torch.randint(0, 256, (1, rf))
    with torch.no_grad():
        t_naive = median_seconds(lambda: model(window))
    n = 200
    t_cached = median_seconds(lambda: generate(model, n_samples=n, seed=1), repeats=3) / n
    timings.append((rf, model.config.n_layers, t_naive, t_cached))
    print(f"RF {rf:4d}, {model.config.n_layers:2d} layers: naive {1e3 * t_naive:6.2f} ms/sample, "
          f"cached {1e3 * t_cached:5.2f} ms/sample, ratio {t_naive / t_cached:5.1f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([t[0] for t in timings], [1e3 * t[2] for t in timings], "o-", label="naive (window of RF)")
ax.plot([t[0] for t in timings], [1e3 * t[3] for t in timings], "s-", label="cached queue")
ax.set(xlabel="receptive field (samples)", ylabel="ms per sample", title="generation cost, full window")
ax.legend()
plt.show()
""")

md(r"""
The naive cost per sample grows with the receptive field while the cached queue grows only with the layer count.
`wavenet-dilated bench` measures both at the preset sizes.
""")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run it in a fresh kernel and save it with outputs")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _build

    _build.write_notebook(_build.build(CELLS), NAME, args.execute)
    return 0


if __name__ == "__main__":
    sys.exit(main())
