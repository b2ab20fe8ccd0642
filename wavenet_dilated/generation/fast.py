"""Generation at the hardware limit: the WaveNet step folded into a few matrix products, run by compiled code.

:class:`~wavenet_dilated.generation.CachedGenerator` is the plain-PyTorch reference: per sample and layer it makes about
a dozen PyTorch calls, each a few microseconds of dispatch, so at batch 1 it is bound by Python, not arithmetic. The fast
path here computes the same function (same weights, same uniforms, same inverse-CDF sampling) as follows.

Precomputed once per model (fp32, weight norm folded in):
    * per layer, the dilated conv as two matrices ``W_a, W_b (G/2 × K·R)`` over the concatenated taps (oldest first);
    * the skip and residual 1×1s, the residual one pre-multiplied by √½ (its bias too), so
      ``x_{l+1} = √½·x_l + (√½·W_res) z + √½·b_res``; the last layer's residual is never computed;
    * the skip sum starts from ``Σ_l b_skip_l`` and every layer accumulates ``W_skip z`` into it in place;
    * ``skip_scale`` folded into the first output 1×1 (``relu(s·x) = s·relu(x)`` for ``s > 0``);
    * for a categorical model, the first layer's taps of the embedding become per-class tables
      ``T_j = E W_j^T (n_classes × G)``: that layer's conv is ``K`` row look-ups instead of a ``G × K·R`` product.

Precomputed per chunk of steps (one matrix product, :data:`~wavenet_dilated.generation.COND_CHUNK` steps):
    the additive term of every layer's pre-activation, ``W_mel c_t + W_spk g + b_conv`` ``(steps, B, L, G)``; for a
    model without mel it is one ``(B, L, G)`` term for all steps.

Per block of steps (:func:`auto_block`): a layer of dilation ``d`` reads its past taps ``x(t − d) … x(t − (K−1)d)``
at least ``d`` steps after they were made, so their products for the next ``n ≤ d`` steps are one ``G × (K−1)·R`` by
``(K−1)·R × n·B`` matrix product when the block starts; the step then multiplies only the newest tap. Same sums,
another order; two thirds of the conv weights (``K = 3``) are read once per block instead of once per step.

Per sample (compiled C++, :mod:`._fastgen_kernel`, AVX2/FMA fp32, one call per chunk, no Python in the loop):
    per layer one pass over ``[W_a; W_b]`` (initialised with the additive term), the gate ``tanh(a)·σ(b)``, one pass
    over ``[W_skip; W_res]``; then the two output 1×1s and inverse-CDF sampling with the pre-drawn uniforms of
    :class:`~wavenet_dilated.generation.UniformStream` (same block order, so the same seed gives the same samples as
    :func:`~wavenet_dilated.generation.generate`). With two threads each owns half the gate channels (those rows of
    the conv, those columns of the 1×1s); their partial residuals are summed after one spin barrier per layer (in thread
    order, so both get the same bits), the skip sums and logits after one more per sample. A second thread is used only
    while a core is idle.

On CUDA the step (same folded weights, plain PyTorch ops on static buffers, sampling included) is captured once in a
CUDA graph and replayed per sample (:class:`CudaGraphGenerator`).

When the compiled path cannot be used (no compiler, a CPU without AVX2/FMA, channel counts that are not multiples of 8,
a non-fp32 model …) :func:`fast_generate` warns once with the reason and falls back to the reference generator.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_eval_mode, check_temperature
from ..wavenet import WaveNet
from . import reference as gen_mod
from .abi import Matrix as _Matrix
from .abi import Model as _Model
from .abi import State as _State
from .reference import UniformStream, _make_generator, _prepare

__all__ = [
    "FastPathUnavailable",
    "FastGenerator",
    "FastState",
    "CudaGraphGenerator",
    "fast_generate",
    "fast_logits",
    "available",
    "BACKENDS",
]

#: ``backend`` values of :func:`fast_generate`: ``"auto"`` picks ``"cuda_graph"`` for a CUDA model, ``"cpp"`` on CPU,
#: and falls back to ``"reference"`` (the plain-PyTorch :class:`~wavenet_dilated.generation.CachedGenerator`) with a
#: warning when the pick cannot run here.
BACKENDS = ("auto", "cpp", "cuda_graph", "reference")

_HEADS = {"categorical": 0, "mol": 1, "gaussian": 2}


class FastPathUnavailable(RuntimeError):
    """The fast path cannot run this model here; the message says why."""


def available() -> tuple[bool, str]:
    """Whether the compiled CPU kernel can be built and loaded here, and if not, why (builds it on first call)."""
    from .kernel import KernelUnavailable, load_kernel

    try:
        load_kernel()
    except KernelUnavailable as err:
        return False, str(err)
    return True, "ok"


# --------------------------------------------------------------------------------------------------- folded weights


@dataclass(frozen=True)
class _Folded:
    """The model's weights folded for a step (float32 numpy, contiguous); see the module docstring."""

    conv: list[np.ndarray]  # per layer (G, K·R), taps oldest first
    skip: list[np.ndarray]  # (S, G/2)
    res: list[np.ndarray]  # (R, G/2) × √½ (last layer: empty)
    res_bias: np.ndarray  # (L, R) × √½
    skip_bias: np.ndarray  # (S,) Σ over layers
    cond_weight: torch.Tensor | None  # (L·G, C_mel)
    conv_bias: torch.Tensor  # (L·G,)
    table: np.ndarray | None  # (K, n_classes, G)
    embed: np.ndarray  # (n_classes, R) or (2, R): weight, bias of the 1×1
    out1: np.ndarray  # (S, S) × skip_scale
    out1_bias: np.ndarray
    out2: np.ndarray  # (n_out, S)
    out2_bias: np.ndarray


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


@torch.no_grad()
def _fold(model: WaveNet) -> _Folded:
    c = model.config
    blocks = list(model.blocks)
    L, R, G, K = len(blocks), c.residual_channels, c.gate_channels, c.kernel_size
    res_scale = math.sqrt(0.5)
    conv, skip, res = [], [], []
    res_bias = np.zeros((L, R), np.float32)
    skip_bias = torch.zeros(c.skip_channels, dtype=torch.float64)
    conv_bias = torch.zeros(L, G)
    for i, b in enumerate(blocks):
        w = b.conv.conv.weight  # (G, R, K); weight norm (if any) is evaluated here
        conv.append(_np(w.permute(0, 2, 1).reshape(G, K * R)))
        if b.conv.conv.bias is not None:
            conv_bias[i] = b.conv.conv.bias
        skip.append(_np(b.skip.weight[:, :, 0]))
        if b.skip.bias is not None:
            skip_bias += b.skip.bias.double()
        if b.residual is not None:
            res.append(_np(b.residual.weight[:, :, 0] * res_scale))
            if b.residual.bias is not None:
                res_bias[i] = _np(b.residual.bias * res_scale)
        else:
            res.append(np.zeros((0, G // 2), np.float32))
    cond_weight = None
    if c.cond_channels is not None:
        cond_weight = torch.cat([b.cond_proj.weight[:, :, 0] for b in blocks]).detach().float().contiguous()
    table = None
    if model.head.quantized:
        e = model.embed.weight.double()  # (n_classes, R)
        w0 = blocks[0].conv.conv.weight.double()  # (G, R, K)
        table = _np(torch.stack([e @ w0[:, :, j].T for j in range(K)]))
        embed = _np(model.embed.weight)
    else:
        bias = model.embed.bias if model.embed.bias is not None else torch.zeros(R)
        embed = _np(torch.stack([model.embed.weight[:, 0, 0], bias]))
    out1_bias = model.out1.bias if model.out1.bias is not None else torch.zeros(c.skip_channels)
    out2_bias = model.out2.bias if model.out2.bias is not None else torch.zeros(model.head.out_channels)
    return _Folded(
        conv=conv, skip=skip, res=res, res_bias=res_bias, skip_bias=_np(skip_bias), cond_weight=cond_weight,
        conv_bias=conv_bias.reshape(-1).contiguous(), table=table, embed=embed,
        out1=_np(model.out1.weight[:, :, 0] * model.skip_scale), out1_bias=_np(out1_bias),
        out2=_np(model.out2.weight[:, :, 0]), out2_bias=_np(out2_bias),
    )


def _polyphase_plan(model: WaveNet) -> list[tuple[int, np.ndarray]] | None:
    """Per upsampling stage ``(s, a (s × 3))``: a nearest stretch by ``s`` then the zero-padded ``2s+1``-tap smoothing
    conv of :class:`~wavenet_dilated.wavenet.ConditionUpsampler`, as a 3-tap filter per output phase ``p``:
    ``y[f·s + p] = a[p, 0]·x[f−1] + a[p, 1]·x[f] + a[p, 2]·x[f+1]``. ``None`` when the upsampler is not that module
    (the generator then projects the upsampled mel instead)."""
    from torch import nn

    from ..wavenet import ConditionUpsampler

    up = model.upsampler
    if type(up) is not ConditionUpsampler:
        return None
    plan = []
    for s, conv in zip(up.scales, up.smoothers):
        if not (type(conv) is nn.Conv2d and conv.bias is None and conv.in_channels == conv.out_channels == 1
                and conv.kernel_size == (1, 2 * s + 1) and conv.padding == (0, s) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"):
            return None
        a = ConditionUpsampler.polyphase_taps(conv.weight.detach().double().cpu(), s)  # the model's own map
        plan.append((s, np.ascontiguousarray(a.numpy(), np.float32)))
    return plan


def unsupported_reason(model: WaveNet) -> str | None:
    """Why the compiled CPU kernel cannot run ``model`` (``None`` when it can)."""
    c = model.config
    p = next(model.parameters())
    if p.device.type != "cpu":
        return f"the compiled kernel runs on CPU; the model is on {p.device}"
    if p.dtype != torch.float32:
        return f"the compiled kernel computes in float32; the model is {p.dtype}"
    if c.output not in _HEADS:
        return f"output {c.output!r} is not supported by the compiled kernel"
    for name, value in (("residual_channels", c.residual_channels), ("skip_channels", c.skip_channels),
                        ("gate_channels / 2", c.gate_channels // 2)):
        if value % 8:
            return f"the compiled kernel needs {name} to be a multiple of 8, found {value}"
    if c.kernel_size > 8:
        return f"the compiled kernel takes kernel_size <= 8, found {c.kernel_size}"
    if model.training:
        return "the model is in training mode"
    return None


def _ptr(a: np.ndarray | torch.Tensor | None) -> int | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.data_ptr()
    return a.ctypes.data


def _aligned(n: int, dtype=np.float32) -> np.ndarray:
    """A zeroed 1-D array of ``n`` elements starting on a 64-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n * item + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + n * item].view(dtype)


def _split8(n: int, parts: int) -> np.ndarray:
    """``parts + 1`` boundaries splitting ``range(n)`` (a multiple of 8) into near-equal multiples of 8."""
    units = n // 8
    return np.array([8 * (units * t // parts) for t in range(parts + 1)], np.int32)


class _Packed:
    """Weights packed for one row-block size and thread count, and the ctypes model struct pointing into them.

    Thread ``t`` owns gate channels ``[col0[t], col0[t+1])``: those rows of both conv halves and those columns of the
    skip and residual 1×1s; and rows ``[row0[t], row0[t+1])`` of the first output 1×1 with the matching columns of the
    second.
    """

    def __init__(self, folded: _Folded, model: WaveNet, ry_max: int, threads: int, block: int) -> None:
        c = model.config
        L, G, S, R, K = c.n_layers, c.gate_channels, c.skip_channels, c.residual_channels, c.kernel_size
        H = G // 2
        blocks = past_blocks(c.dilations, K, folded.table is not None, block)
        pieces: list[np.ndarray] = []
        size = 0

        def pack(w: np.ndarray, ry: int = ry_max) -> _Matrix:
            nonlocal size
            rows, n_in = w.shape
            assert rows % 8 == 0, rows
            rb = 8 * ry
            m = _Matrix(size, rows, n_in, ry, 0)
            for r0 in range(0, rows, rb):
                block = np.ascontiguousarray(w[r0 : r0 + rb].T)  # (in, rows in block)
                pieces.append(block.reshape(-1))
                size += block.size
            pad = (-size) % 16  # keep every matrix 64-byte aligned
            if pad:
                pieces.append(np.zeros(pad, np.float32))
                size += pad
            return m

        col0, row0 = _split8(H, threads), _split8(S, threads)
        n_out = folded.out2.shape[0]
        n_out_pad = -(-n_out // 8) * 8
        out2 = np.zeros((n_out_pad, folded.out2.shape[1]), np.float32)
        out2[:n_out] = folded.out2
        out2_bias = np.zeros(n_out_pad, np.float32)
        out2_bias[:n_out] = folded.out2_bias
        # each thread's weights are one contiguous stream in the order it reads them (the prefetcher's best case)
        mats: dict[tuple[str, int, int], _Matrix] = {}
        for t in range(threads):
            a, b = col0[t], col0[t + 1]
            for i in range(L):
                conv, rs = folded.conv[i], folded.res[i]
                cur = slice((K - 1) * R, None) if blocks[i] > 1 else slice(None)  # blocked: the current tap only
                mats["a", i, t] = pack(conv[a:b, cur])
                mats["b", i, t] = pack(conv[H + a : H + b, cur])
                mats["s", i, t] = pack(folded.skip[i][:, a:b])
                mats["r", i, t] = pack(rs[:, a:b]) if rs.shape[0] else _Matrix(0, 0, b - a, 1, 0)
            mats["o1", 0, t] = pack(folded.out1[row0[t] : row0[t + 1]])
            mats["o2", 0, t] = pack(out2[:, row0[t] : row0[t + 1]])
        # the past taps of blocked layers are read once per block: after the per-step stream, in ``PAST_RY``-row blocks
        # (more columns per pass over a block of rows; see _ry_for_batch)
        for t in range(threads):
            a, b = col0[t], col0[t + 1]
            for i in range(L):
                past = folded.conv[i][:, : (K - 1) * R]
                if blocks[i] > 1:
                    mats["pa", i, t] = pack(past[a:b], _PAST_RY)
                    mats["pb", i, t] = pack(past[H + a : H + b], _PAST_RY)
                else:
                    mats["pa", i, t] = mats["pb", i, t] = _Matrix(0, 0, 0, 1, 0)
        conv_a, conv_b, skip, res, past_a, past_b = (
            [mats[k, i, t] for i in range(L) for t in range(threads)] for k in ("a", "b", "s", "r", "pa", "pb"))
        out1_m = [mats["o1", 0, t] for t in range(threads)]
        out2_m = [mats["o2", 0, t] for t in range(threads)]
        self.weights = _aligned(size)
        np.concatenate(pieces, out=self.weights)
        self.dilation = np.asarray(c.dilations, np.int32)
        self.col0, self.row0 = col0, row0
        self.out2_bias = out2_bias
        self.folded = folded
        self.block = blocks
        arrays = [(_Matrix * len(x))(*x) for x in (conv_a, conv_b, skip, res, out1_m, out2_m, past_a, past_b)]
        self._structs = arrays
        head = model.head
        self.struct = _Model(
            n_layers=L, R=c.residual_channels, G=G, S=S, K=c.kernel_size, n_out=n_out,
            n_out_pad=n_out_pad, head=_HEADS[c.output], n_classes=c.n_classes, n_mix=c.n_mixtures,
            first_table=int(folded.table is not None), n_threads=threads,
            res_scale=math.sqrt(0.5), log_scale_min=float(getattr(head, "log_scale_min", 0.0)),
            dilation=_ptr(self.dilation), col0=_ptr(col0), row0=_ptr(row0),
            conv_a=ctypes.addressof(arrays[0]), conv_b=ctypes.addressof(arrays[1]),
            skip=ctypes.addressof(arrays[2]), res=ctypes.addressof(arrays[3]), weights=_ptr(self.weights),
            res_bias=_ptr(folded.res_bias), skip_bias=_ptr(folded.skip_bias), table=_ptr(folded.table),
            embed=_ptr(folded.embed), out1=ctypes.addressof(arrays[4]), out2=ctypes.addressof(arrays[5]),
            out1_bias=_ptr(folded.out1_bias), out2_bias=_ptr(self.out2_bias), block=_ptr(blocks),
            past_a=ctypes.addressof(arrays[6]), past_b=ctypes.addressof(arrays[7]),
        )


#: the most steps whose past-tap products are made in one matrix product when blocking is on (a layer of dilation
#: ``d`` can look ``d`` steps ahead). ljspeech, batch 1, 2 threads, idle machine (samples/s, medians of 3): 16: 4,253,
#: 32: 4,427, 64: 4,455, 128: 4,377.
PAST_BLOCK = 32
#: the most columns (block × batch) of one past-tap product
PAST_COLUMNS = 256
#: 8-row vectors per packed block of the past-tap matrices (their products have ``block × batch`` columns)
_PAST_RY = 2


def past_blocks(dilations, kernel_size: int, first_table: bool, limit: int) -> np.ndarray:
    """Per layer, the steps per block of precomputed past-tap products: ``min(d, limit)``, and 1 (not blocked) for a
    kernel of size 1 and for a first layer read from per-class tables (dilation 1 gives 1 by itself)."""
    blocks = np.array([min(d, limit) if kernel_size > 1 else 1 for d in dilations], np.int32)
    if first_table:
        blocks[0] = 1
    return blocks


def _last_level_cache() -> int:
    """Bytes of the CPU's largest cache (sysfs), or 8 MiB where it cannot be read."""
    sizes = []
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(root):
            if entry.startswith("index"):
                with open(os.path.join(root, entry, "size")) as f:
                    text = f.read().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                sizes.append(int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return max(sizes, default=8 << 20)


def auto_block(config, batch: int) -> int:
    """The past-tap block limit for a batch: :data:`PAST_BLOCK`, fewer for large batches (at most
    :data:`PAST_COLUMNS` columns per block product, which bounds the ``block × B × G`` buffers), at least 2.

    Measured with the final kernel on an idle machine (samples/s, medians of 3, ``block`` 1 (off) / 2 / this rule):
    ``ljspeech`` batch 1, 2 threads: 2,545 / 3,303 / 4,410; ``small`` batch 1, 1 thread: 14,406 / 14,479 / 15,917;
    ``ljspeech`` batch 8, 2 threads: 5,720 / 5,760 / 5,736.
    """
    del config  # the same rule has measured best for every preset so far
    return max(2, min(PAST_BLOCK, PAST_COLUMNS // max(batch, 1)))


def layer_weight_bytes(config) -> int:
    """fp32 bytes of all layers' conv, skip and residual weights: what one unblocked step reads."""
    c = config
    per_layer = c.kernel_size * c.residual_channels * c.gate_channels + c.gate_channels // 2 * (
        c.residual_channels + c.skip_channels)
    return 4 * c.n_layers * per_layer


def _ry_for_batch(batch: int) -> int:
    """8-row vectors per packed block for a batch: the micro-kernel keeps ``ry × columns`` accumulators in registers."""
    # measured in the generation loop, batch 8, ry 1 / 2 / 4 (8 × 8, 16 × 4, 32 × 2 blocks), samples/s: ljspeech one
    # thread 3,684 / 3,933 / 3,387, two 4,748 / 5,296; small one 14,661 / 15,792 / 15,069, two 19,013 / 21,285.
    # Batch 1: ry 8 (64 rows); small 2 / 4 / 8: 11,741 / 14,465 / 14,711.
    if batch == 1:
        return 8
    if batch == 2:
        return 4
    return 2


# --------------------------------------------------------------------------------------------------- state


@dataclass
class FastState:
    """Everything a fast generation carries from one sample to the next; owned by the caller.

    Attributes:
        rings: all layers' ring buffers ``(slots_l, B, R)`` flattened (fp32, zero = silence before the start).
        ring_offset: ``(L,)`` where each layer's ring starts in ``rings``.
        class_ring: the first layer's past input classes ``((K−1)·d_0 + 1, B)`` (categorical), −1 before the start.
        prev_class / prev_value: ``(B,)`` the last sample (the next step's input), for a categorical / continuous head.
        pre / pre_offset: blocked layers' past-tap products for the current block, ``(block_l, B, G)`` each, and where
            each starts in ``pre`` (see :func:`past_blocks`).
        step: samples generated so far.
    """

    rings: np.ndarray
    ring_offset: np.ndarray
    class_ring: np.ndarray
    prev_class: np.ndarray
    prev_value: np.ndarray
    pre: np.ndarray
    pre_offset: np.ndarray
    batch: int
    quantized: bool
    step: int = 0

    @property
    def previous(self) -> torch.Tensor:
        """``(B,)`` the last sample: int64 classes (categorical) or float32 values."""
        return torch.from_numpy((self.prev_class if self.quantized else self.prev_value).copy())

    def _struct(self) -> _State:
        return _State(rings=_ptr(self.rings), ring_offset=_ptr(self.ring_offset), class_ring=_ptr(self.class_ring),
                      prev_class=_ptr(self.prev_class), prev_value=_ptr(self.prev_value), pre=_ptr(self.pre),
                      pre_offset=_ptr(self.pre_offset), step=self.step, batch=self.batch)


# --------------------------------------------------------------------------------------------------- generator


def _max_threads() -> int:
    return max(1, min(2, torch.get_num_threads(), os.cpu_count() or 1))


def _others_running() -> int | None:
    """Runnable threads on this machine besides the caller, from ``/proc/stat`` (``None`` where unavailable)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return max(0, int(line.split()[1]) - 1)
    except (OSError, ValueError):
        pass
    return None


class _ThreadChooser:
    """Picks the kernel's thread count slice by slice from measured seconds per step.

    The threads meet at a barrier ~L times per sample. If the helper shares a core with someone else's work it is
    descheduled for whole time slices and every barrier waits for it (measured here: 3–40× slower than one thread).
    So two threads are *tried* (first, and as a probe) only while ``/proc/stat`` shows an idle core for the helper;
    once measured faster they are kept unless every core has other work. The slower choice is re-measured after
    :attr:`PROBE_EVERY` slices, the interval doubling (up to :attr:`PROBE_MAX`) each time the probe loses.
    """

    PROBE_EVERY = 16
    PROBE_MAX = 1024

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.cost: dict[int, float] = {}  # seconds per step, running average
        self.calls = 0
        self.interval = self.PROBE_EVERY
        self.next_probe = self.PROBE_EVERY
        self._probing: int | None = None

    def _best(self) -> int:
        return self.max_threads if self.cost[self.max_threads] < self.cost[1] else 1

    def pick(self) -> int:
        m = self.max_threads
        if m == 1:
            return 1
        self.calls += 1
        others = _others_running()
        cores = os.cpu_count() or 1
        if others is not None and others >= cores:
            return 1
        idle = others is None or others + m <= cores
        if m not in self.cost:
            return m if idle else 1
        if 1 not in self.cost:
            return 1
        best = self._best()
        if self.calls >= self.next_probe and (best == m or idle):
            self._probing = 1 if best == m else m
            return self._probing
        return best

    def measuring(self, threads: int) -> bool:
        """Whether the slice just picked measures ``threads`` (never measured yet, or a probe)."""
        return threads not in self.cost or self._probing == threads

    def record(self, threads: int, seconds_per_step: float) -> None:
        old = self.cost.get(threads)
        probe = self._probing == threads  # a probe re-measures: its value replaces the stale one
        self.cost[threads] = seconds_per_step if old is None or probe else 0.5 * (old + seconds_per_step)
        if probe:
            won = self._best() == threads
            self.interval = self.PROBE_EVERY if won else min(2 * self.interval, self.PROBE_MAX)
            self.next_probe = self.calls + self.interval
            self._probing = None


@dataclass
class _Prepared:
    """What generators of one model share while its weights stay the same: the folded weights, their packings and
    the thread choosers' measurements (per batch size and thread limit)."""

    key: tuple
    folded: _Folded
    packed: dict
    choosers: dict


#: per model (weakly held): its :class:`_Prepared`, so that repeated :func:`fast_generate` calls (a CLI batch, a
#: notebook loop) fold and pack the weights once (~40–75 ms for ``ljspeech``) and keep the thread measurements
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(model: WaveNet) -> tuple:
    """Changes whenever any parameter or buffer is replaced or modified in place (``Tensor._version`` counts in-place
    writes: optimiser steps, ``load_state_dict``, ``torch.no_grad()`` edits)."""
    return tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape))
                 for t in itertools.chain(model.parameters(), model.buffers()))


def _prepared(model: WaveNet) -> _Prepared:
    key = _weights_key(model)
    entry = _PREPARED.get(model)
    if entry is None or entry.key != key:
        entry = _Prepared(key, _fold(model), {}, {})
        _PREPARED[model] = entry
    return entry


class FastGenerator:
    """Compiled-loop WaveNet generation on CPU; same samples as :class:`~wavenet_dilated.generation.CachedGenerator`.

    Args:
        model: a :class:`~wavenet_dilated.wavenet.WaveNet` in eval mode, fp32, on CPU. The weights are folded and
            copied at construction (shared with other generators of the same model while its weights are unchanged):
            build a new generator after changing the model.
        threads: threads of the compiled loop; they split the gate channels and meet at a barrier once per layer.
            ``None`` (default) chooses between 1 and ``min(2, torch.get_num_threads())`` as it runs: two only
            while a core is idle and two measure faster (see :class:`_ThreadChooser`).
        block: at most this many steps' products of the past taps (all but the newest) are made at once, one matrix
            product per layer and block instead of one pass over those weights per step (``1``: off). ``None``
            (default): :func:`auto_block`.

    Raises:
        FastPathUnavailable: the kernel cannot be built or loaded here, or the model is not supported (see
            :func:`unsupported_reason`).

    Examples:
        >>> gen = FastGenerator(model)
        >>> state = gen.init_state(batch_size=2)
        >>> samples = gen.run(state, 100, UniformStream(2, 1, torch.Generator().manual_seed(0)))   # (2, 100)
    """

    def __init__(self, model: WaveNet, threads: int | None = None, block: int | None = None) -> None:
        check_eval_mode(model)
        reason = unsupported_reason(model)
        if reason is not None:
            raise FastPathUnavailable(reason)
        from .kernel import KernelUnavailable, load_kernel

        try:
            self._lib = load_kernel()
        except KernelUnavailable as err:
            raise FastPathUnavailable(str(err)) from None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64):
            raise ValueError(f"threads must be None or an int in [1, 64], found {threads!r}")
        if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise ValueError(f"block must be None or a positive int, found {block!r}")
        self.model, self.threads, self.block = model, threads, block
        self._max_threads = _max_threads() if threads is None else threads
        self.config = model.config
        prepared = _prepared(model)
        self.folded = prepared.folded
        self._packed = prepared.packed
        self._choosers = prepared.choosers
        self._polyphase = _polyphase_plan(model)
        if self.folded.cond_weight is not None:
            self._cond_weight_t = self.folded.cond_weight.T.contiguous()  # (C_mel, L·G)

    def _chooser(self, batch: int) -> _ThreadChooser:
        key = (batch, self._max_threads)
        if key not in self._choosers:
            self._choosers[key] = _ThreadChooser(self._max_threads)
        return self._choosers[key]

    def block_for(self, batch: int) -> int:
        """The past-tap block limit used for a batch size (the ``block`` argument, or :func:`auto_block`)."""
        return self.block if self.block is not None else auto_block(self.config, batch)

    def _pack(self, batch: int, threads: int) -> _Packed:
        key = (_ry_for_batch(batch), threads, self.block_for(batch))
        if key not in self._packed:
            self._packed[key] = _Packed(self.folded, self.model, key[0], threads, key[2])
        return self._packed[key]

    # ------------------------------------------------------------------ state and conditioning
    def init_state(self, batch_size: int) -> FastState:
        """A zeroed state for ``batch_size`` rows: as if the signal were preceded by silence."""
        c = self.config
        slots = [(c.kernel_size - 1) * d + 1 for d in c.dilations]
        sizes = [s * batch_size * c.residual_channels for s in slots]
        ring_offset = np.zeros(len(slots), np.int64)
        ring_offset[1:] = np.cumsum(sizes)[:-1]
        head = self.model.head
        blocks = past_blocks(c.dilations, c.kernel_size, self.folded.table is not None, self.block_for(batch_size))
        pre_sizes = [int(n) * batch_size * c.gate_channels if n > 1 else 0 for n in blocks]
        pre_offset = np.zeros(len(blocks), np.int64)
        pre_offset[1:] = np.cumsum(pre_sizes)[:-1]
        return FastState(
            rings=_aligned(int(sum(sizes))), ring_offset=ring_offset,
            pre=_aligned(max(1, int(sum(pre_sizes)))), pre_offset=pre_offset,
            class_ring=np.full((slots[0], batch_size), -1, np.int32),
            prev_class=np.full(batch_size, head.silence() if head.quantized else 0, np.int64),
            prev_value=np.full(batch_size, 0.0 if head.quantized else head.silence(), np.float32),
            batch=batch_size, quantized=head.quantized,
        )

    def constant_term(self, speaker_vec: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``(B, L·G)``: conv biases plus the speaker projections (the part of the additive term that is constant)."""
        term = self.folded.conv_bias.expand(batch, -1)
        if speaker_vec is not None:
            spk = torch.cat([b.speaker_proj(speaker_vec) for b in self.model.blocks], dim=1)  # (B, L·G, 1)
            term = term + spk[:, :, 0].float()
        return term.contiguous()

    def project(self, cond: torch.Tensor | None, constant: torch.Tensor, n_steps: int) -> tuple[torch.Tensor, int]:
        """The additive term for ``n_steps`` steps: ``(n, B, L·G)`` from ``cond (B, C_mel, n)``, or the constant
        ``(B, L·G)`` with stride 0 when the model has no mel. Returns (term, floats per step)."""
        if cond is None or self.folded.cond_weight is None:
            return constant, 0
        B = cond.shape[0]
        x = cond.permute(2, 0, 1).reshape(n_steps * B, -1).float()  # (n·B, C_mel)
        out = torch.addmm(constant.repeat(n_steps, 1), x, self.folded.cond_weight.T)  # (n·B, L·G)
        return out, B * constant.shape[1]

    def project_frames(self, frames: torch.Tensor, first: int, n_steps: int, constant: torch.Tensor) -> torch.Tensor:
        """The additive term ``(n, B·L·G)`` of steps ``[first, first + n)`` from the conditioning at frame rate.

        ``frames (B, C_mel, F)`` is the mel after the model's mel context (before upsampling). The projection is linear
        and acts per time step while the upsampler is linear and acts per channel along time, so they commute: project
        the few frames that matter (``L·G × C_mel`` per frame instead of per sample), then upsample the projection with
        :func:`wn_polyphase` (3 multiply-adds per output value per stage). Exact up to float rounding.
        """
        plan = self._polyphase
        assert plan is not None and self.folded.cond_weight is not None
        B, C, F_ = frames.shape
        width = B * constant.shape[1]
        lens = [F_]
        for s, _ in plan:
            lens.append(lens[-1] * s)
        ranges = [(0, 0)] * len(lens)
        ranges[-1] = (first, first + n_steps)
        for i in range(len(plan), 0, -1):  # the inputs each stage needs: n // s − 1 … n // s + 1, within the sequence
            s, (lo, hi) = plan[i - 1][0], ranges[i]
            ranges[i - 1] = (max(0, lo // s - 1), min(lens[i - 1], (hi - 1) // s + 2))
        lo0, hi0 = ranges[0]
        x_in = frames[:, :, lo0:hi0].permute(2, 0, 1).reshape((hi0 - lo0) * B, C).float().contiguous()
        lg = self.folded.cond_weight.shape[0]
        x = torch.empty(hi0 - lo0, width)  # rows (frame, batch) → (n_frames, B·L·G)
        self._lib.wn_project(x_in.data_ptr(), x_in.shape[0], C, self._cond_weight_t.data_ptr(), lg, x.data_ptr())
        for i, (s, a) in enumerate(plan):
            (lo_in, hi_in), (lo_out, hi_out) = ranges[i], ranges[i + 1]
            y = torch.empty(hi_out - lo_out, width)
            last = i == len(plan) - 1
            self._lib.wn_polyphase(x.data_ptr(), lo_in, hi_in - lo_in, lens[i], width, s, a.ctypes.data, lo_out,
                                   hi_out - lo_out, constant.data_ptr() if last else None, y.data_ptr())
            x = y
        return x

    def _terms(self, first: int, n_steps: int, constant: torch.Tensor, cond: torch.Tensor | None,
               frames: torch.Tensor | None):
        """Yield ``(start, n, term, floats per step)`` chunk by chunk; a chunk's term is at most 2^24 floats."""
        width = constant.numel()
        chunk = max(16, min(gen_mod.COND_CHUNK, (1 << 24) // max(width, 1)))
        if self.folded.cond_weight is None:
            cond = frames = None
            chunk = gen_mod.COND_CHUNK
        for start in range(0, n_steps, chunk):
            n = min(chunk, n_steps - start)
            if frames is not None:
                yield start, n, self.project_frames(frames, first + start, n, constant), width
            elif cond is not None:
                term, stride = self.project(cond[:, :, start : start + n], constant, n)
                yield start, n, term, stride
            else:
                yield start, n, constant, 0

    # ------------------------------------------------------------------ the loop
    #: steps per kernel call when the thread count is chosen as it runs
    SLICE = 256
    #: steps of a call that measures a thread count (:meth:`_ThreadChooser.measuring`)
    PROBE_SLICE = 64

    def _call(self, state: FastState, n: int, term: torch.Tensor, stride: int, uniforms: torch.Tensor | None,
              temperature: float, forced: torch.Tensor | None, samples: torch.Tensor | None,
              logits: torch.Tensor | None) -> None:
        """Run ``n`` steps; ``term`` holds ``n`` steps (or one, ``stride`` 0), the other arrays ``n`` rows."""
        head = self.model.head
        B = state.batch
        start = 0
        while start < n:
            chooser = None if self.threads is not None else self._chooser(B)
            threads = self.threads if chooser is None else chooser.pick()
            # a slice that measures a thread count for the first time or re-measures the slower one is short: at the
            # slower choice it costs little (full-length probes cost ~10 % at ljspeech batch 1)
            size = n if chooser is None else min(self.SLICE, self.PROBE_SLICE) if chooser.measuring(threads) else \
                self.SLICE
            k = min(size, n - start)
            packed = self._pack(B, threads)
            st = state._struct()

            def at(a: torch.Tensor | None, per_step: int, start: int = start) -> int | None:
                return None if a is None else a.data_ptr() + start * per_step * a.element_size()

            t0 = time.perf_counter()
            rc = self._lib.wn_run(
                ctypes.byref(packed.struct), ctypes.byref(st), k, at(term, stride), stride,
                at(uniforms, B * head.n_uniforms), head.n_uniforms, float(temperature), at(forced, B), at(samples, B),
                at(logits, B * head.out_channels),
            )
            if rc != 0:
                raise MemoryError("the fast-generation kernel could not allocate its scratch memory or threads")
            if chooser is not None:
                chooser.record(threads, (time.perf_counter() - t0) / k)
            state.step = st.step
            start += k

    def _conditioning(self, cond: torch.Tensor | None, frames: torch.Tensor | None) -> tuple:
        if frames is not None and self._polyphase is None:
            cond, frames = self.model.upsampler(frames), None  # a non-standard upsampler: project every sample
        return cond, frames

    def run(
        self,
        state: FastState,
        n_steps: int,
        uniforms: UniformStream,
        cond: torch.Tensor | None = None,
        speaker_vec: torch.Tensor | None = None,
        temperature: float = 1.0,
        progress: tqdm | None = None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``n_steps`` samples ``(B, n_steps)``, continuing ``state``.

        Conditioning (mel models), one of: ``cond (B, C_mel, n_steps)`` the upsampled mel for exactly these steps, or
        (faster) ``frames (B, C_mel, F)`` the whole utterance's mel after the model's mel context, at frame rate; step
        ``state.step + i`` then reads upsampled position ``state.step + i``.
        """
        check_temperature(temperature)
        head = self.model.head
        B = state.batch
        constant = self.constant_term(speaker_vec, B)
        cond, frames = self._conditioning(cond, frames)
        if frames is not None and state.step + n_steps > frames.shape[2] * self.config.hop_length:
            raise ValueError(f"steps up to {state.step + n_steps} exceed what the mel covers "
                             f"({frames.shape[2] * self.config.hop_length})")
        dtype = torch.int64 if head.quantized else torch.float32
        out = torch.empty(n_steps, B, dtype=dtype)
        for start, n, term, stride in self._terms(state.step, n_steps, constant, cond, frames):
            u = uniforms.take(n).float().contiguous()
            self._call(state, n, term, stride, u, temperature, None, out[start:], None)
            if progress is not None:
                progress.update(n)
        return out.T.contiguous()

    def logits(self, inputs: torch.Tensor, cond: torch.Tensor | None = None,
               speaker_vec: torch.Tensor | None = None, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``(B, out, T)`` of ``inputs (B, T)``, one compiled step at a time from a fresh state
        (conditioning as in :meth:`run`)."""
        B, T = inputs.shape
        state = self.init_state(B)
        constant = self.constant_term(speaker_vec, B)
        cond, frames = self._conditioning(cond, frames)
        n_out = self.model.head.out_channels
        out = torch.empty(T, B, n_out)
        forced_all = inputs.T.contiguous()
        if not self.model.head.quantized:
            forced_all = forced_all.float()
        for start, n, term, stride in self._terms(0, T, constant, cond, frames):
            self._call(state, n, term, stride, None, 1.0, forced_all[start : start + n], None, out[start:])
        return out.permute(1, 2, 0).contiguous()


# --------------------------------------------------------------------------------------------------- CUDA graphs


class CudaGraphGenerator:
    """The step as a fixed sequence of PyTorch ops on static buffers, captured once in a CUDA graph and replayed per
    sample (no host round trip, no per-op launch cost).

    Same folded weights and sampling as :class:`FastGenerator`. Positions in the ring buffers, the step counter and the
    row of the per-chunk conditioning / uniforms are device tensors updated inside the graph, so one graph serves
    every step. ``capture=False`` runs the same step eagerly (any device): that is how it is tested on a machine
    without a GPU.

    Not exercised on a GPU in this repository's test suite (no GPU in CI); the eager step is.
    """

    def __init__(self, model: WaveNet, batch_size: int, chunk: int | None = None, temperature: float = 1.0,
                 capture: bool | None = None) -> None:
        check_eval_mode(model)
        check_temperature(temperature)
        c = model.config
        p = next(model.parameters())
        self.model, self.device, self.dtype = model, p.device, p.dtype
        self.capture = (p.device.type == "cuda") if capture is None else capture
        if self.capture and p.device.type != "cuda":
            raise FastPathUnavailable(f"CUDA graph capture needs a CUDA model; the model is on {p.device}")
        self.B, self.chunk = batch_size, chunk or gen_mod.COND_CHUNK
        self.temperature = temperature
        L, R, G, K = c.n_layers, c.residual_channels, c.gate_channels, c.kernel_size
        self.L, self.R, self.G, self.K, self.H = L, R, G, K, G // 2
        dev, dt = self.device, self.dtype
        res_scale = math.sqrt(0.5)
        with torch.no_grad():
            blocks = list(model.blocks)
            self.w_conv = [b.conv.conv.weight.permute(0, 2, 1).reshape(G, K * R).T.contiguous() for b in blocks]
            self.w_skip = [b.skip.weight[:, :, 0].T.contiguous() for b in blocks]
            self.w_res = [None if b.residual is None else (b.residual.weight[:, :, 0] * res_scale).T.contiguous()
                          for b in blocks]
            self.b_res = [None if b.residual is None else b.residual.bias * res_scale for b in blocks]
            self.b_skip = sum(b.skip.bias for b in blocks)
            self.w_out1 = (model.out1.weight[:, :, 0] * model.skip_scale).T.contiguous()
            self.b_out1 = model.out1.bias
            self.w_out2 = model.out2.weight[:, :, 0].T.contiguous()
            self.b_out2 = model.out2.bias
            conv_bias = torch.stack([b.conv.conv.bias if b.conv.conv.bias is not None else torch.zeros(G, device=dev)
                                     for b in blocks]).reshape(-1)
            self.conv_bias = conv_bias
            self.cond_weight = (torch.cat([b.cond_proj.weight[:, :, 0] for b in blocks])
                                if c.cond_channels is not None else None)
        self.slots = [(K - 1) * d + 1 for d in c.dilations]
        self.backs = [torch.tensor([(K - 1 - j) * d for j in range(K)], device=dev) for d in c.dilations]
        head = model.head
        self.head = head
        in_dtype = torch.int64 if head.quantized else dt
        # static buffers
        self.rings = [torch.zeros(s, batch_size, R, device=dev, dtype=dt) for s in self.slots]
        self.prev = torch.full((batch_size,), head.silence(), dtype=in_dtype, device=dev)
        self.step_t = torch.zeros((), dtype=torch.int64, device=dev)  # global step
        self.row_t = torch.zeros((), dtype=torch.int64, device=dev)  # row in the chunk buffers
        self.term = torch.zeros(self.chunk, batch_size, L * G, device=dev, dtype=dt)
        self.unif = torch.zeros(self.chunk, batch_size, head.n_uniforms, device=dev, dtype=torch.float32)
        self.out = torch.zeros(self.chunk, batch_size, dtype=in_dtype, device=dev)
        self.graph = None

    @torch.no_grad()
    def _step(self) -> None:
        """One sample: reads ``prev``, ``term[row]``, ``unif[row]``; writes ``out[row]``, ``prev``; advances counters."""
        model, B, G, H = self.model, self.B, self.G, self.H
        term = self.term.index_select(0, self.row_t.view(1))[0]  # (B, L·G)
        x = model.embed_inputs(self.prev[:, None])[:, :, 0]  # (B, R)
        skips = self.b_skip.expand(B, -1).clone()
        for i in range(self.L):
            ring, P = self.rings[i], self.slots[i]
            ring.index_copy_(0, torch.remainder(self.step_t, P).view(1), x[None])
            idx = torch.remainder(self.step_t - self.backs[i], P)
            taps = ring.index_select(0, idx).permute(1, 0, 2).reshape(B, -1)  # (B, K·R), oldest first
            h = torch.addmm(term[:, i * G : (i + 1) * G], taps, self.w_conv[i])
            z = torch.tanh(h[:, :H]) * torch.sigmoid(h[:, H:])
            skips = torch.addmm(skips, z, self.w_skip[i])
            if self.w_res[i] is not None:
                x = torch.addmm(torch.add(self.b_res[i], x, alpha=math.sqrt(0.5)), z, self.w_res[i])
        hidden = torch.relu(torch.addmm(self.b_out1, torch.relu(skips), self.w_out1))
        logits = torch.addmm(self.b_out2, hidden, self.w_out2)
        u = self.unif.index_select(0, self.row_t.view(1))[0]
        sample = self.head.sample(logits, u, self.temperature).to(self.prev.dtype)
        self.prev.copy_(sample)
        self.out.index_copy_(0, self.row_t.view(1), sample[None])
        self.step_t.add_(1)
        self.row_t.add_(1)

    def _ensure_graph(self) -> None:
        if not self.capture or self.graph is not None:
            return
        # warm up on a side stream (allocations, cuBLAS handles), then capture one step; undo the warm-up's effects
        saved = ([r.clone() for r in self.rings], self.prev.clone(), self.step_t.clone(), self.row_t.clone())
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()
        for r, s in zip(self.rings, saved[0]):
            r.copy_(s)
        self.prev.copy_(saved[1])
        self.step_t.copy_(saved[2])
        self.row_t.copy_(saved[3])

    @torch.no_grad()
    def run(self, n_steps: int, uniforms: UniformStream, cond: torch.Tensor | None = None,
            speaker_vec: torch.Tensor | None = None, progress: tqdm | None = None) -> torch.Tensor:
        """Generate ``n_steps`` samples ``(B, n_steps)`` (continuing from the buffers' current state)."""
        self._ensure_graph()
        B = self.B
        constant = self.conv_bias.expand(B, -1)
        if speaker_vec is not None:
            constant = constant + torch.cat([b.speaker_proj(speaker_vec) for b in self.model.blocks], dim=1)[:, :, 0]
        outs = []
        for start in range(0, n_steps, self.chunk):
            n = min(self.chunk, n_steps - start)
            if cond is not None:
                chunk = cond[:, :, start : start + n].to(self.device, self.dtype)
                proj = torch.einsum("oc,bct->tbo", self.cond_weight, chunk)
                self.term[:n].copy_(proj + constant)
            else:
                self.term[:n].copy_(constant.expand(n, -1, -1))
            self.unif[:n].copy_(uniforms.take(n).to(self.device))
            self.row_t.zero_()
            for _ in range(n):
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self._step()
            outs.append(self.out[:n].T.to("cpu", copy=True))
            if progress is not None:
                progress.update(n)
        if not outs:
            return self.prev.new_empty(B, 0).cpu()
        return torch.cat(outs, dim=1)


# --------------------------------------------------------------------------------------------------- public API


def _notice(reason: str) -> None:
    warnings.warn(f"fast generation unavailable ({reason}); using the reference cached generator", RuntimeWarning,
                  stacklevel=3)


def _resolve(model: WaveNet, backend: str, threads: int | None = None) -> tuple[str, object | None]:
    """The backend to run and, for "cpp", its generator; "reference" with a warning when "auto" cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
    if backend == "reference":
        return "reference", None
    on_cuda = next(model.parameters()).device.type == "cuda"
    if backend == "cuda_graph" or (backend == "auto" and on_cuda):
        if not on_cuda or not torch.cuda.is_available():
            reason = "the cuda_graph backend needs a CUDA model"
            if backend == "auto":
                _notice(reason)
                return "reference", None
            raise FastPathUnavailable(reason)
        return "cuda_graph", None
    try:
        return "cpp", FastGenerator(model, threads=threads)
    except FastPathUnavailable as err:
        if backend == "auto":
            _notice(str(err))
            return "reference", None
        raise


def _frames(model: WaveNet, mel: torch.Tensor) -> torch.Tensor:
    """The mel after the model's mel context, at frame rate: what the upsampler would stretch."""
    mel = mel.to(next(model.parameters()).device)
    return model.mel_context(mel) if model.mel_context is not None else mel


@torch.no_grad()
def fast_generate(
    model: WaveNet,
    n_samples: int | None = None,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | int | None = None,
    batch_size: int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    backend: str = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """:func:`~wavenet_dilated.generation.generate` through the fast path: same arguments, same samples for a seed.

    Args:
        backend: ``"auto"`` (the compiled CPU loop, or a CUDA graph for a CUDA model; the reference generator with a
            warning when neither can run), ``"cpp"``, ``"cuda_graph"`` (raise :class:`FastPathUnavailable` when they
            cannot run) or ``"reference"``.
        threads: threads of the compiled CPU loop (default: chosen as it runs, see :class:`FastGenerator`).

    Returns:
        ``(B, n_samples)``: int64 μ-law classes (categorical) or floats in [−1, 1].
    """
    check_temperature(temperature)
    kind, fast = _resolve(model, backend, threads)
    if kind == "reference":
        return gen_mod.generate(model, n_samples, mel, speaker, batch_size, temperature, seed, generator, progress)
    # the compiled loop conditions at frame rate (FastGenerator.project_frames): no upsampled copy of the mel
    batch, n_samples, cond, speaker = _prepare(model, n_samples, mel, speaker, batch_size, kind == "cuda_graph")
    uniforms = UniformStream(batch, model.head.n_uniforms, _make_generator(seed, generator))
    spk = model.speaker_vector(speaker, batch)
    cond = None if cond is None else cond[:, :, :n_samples]
    bar = tqdm(total=n_samples, unit="sample", unit_scale=True, desc="generating") if progress else None
    try:
        if kind == "cuda_graph":
            return CudaGraphGenerator(model, batch, temperature=temperature).run(n_samples, uniforms, cond, spk, bar)
        assert isinstance(fast, FastGenerator)
        state = fast.init_state(batch)
        if mel is not None:
            return fast.run(state, n_samples, uniforms, None, spk, temperature, bar, frames=_frames(model, mel))
        return fast.run(state, n_samples, uniforms, cond, spk, temperature, bar)
    finally:
        if bar is not None:
            bar.close()


@torch.no_grad()
def fast_logits(
    model: WaveNet,
    inputs: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    backend: str = "cpp",
) -> torch.Tensor:
    """Teacher-forced logits ``(B, out, T)`` computed one step at a time through the compiled loop.

    Equals ``model(inputs, mel, speaker)`` up to float rounding: the exactness check of the fast path (the analogue of
    :func:`~wavenet_dilated.generation.cached_logits`). ``backend="reference"`` runs the cached reference instead.
    """
    model.check_inputs(inputs)
    if backend == "reference":
        return gen_mod.cached_logits(model, inputs, mel, speaker)
    if backend != "cpp":
        raise ValueError(f"fast_logits backend must be 'cpp' or 'reference', found {backend!r}")
    fast = FastGenerator(model)
    B, T = inputs.shape
    frames = None
    if model.config.cond_channels is not None:
        if mel is None:
            raise ValueError("this model is mel-conditioned: pass mel (batch, bins, frames)")
        model.check_mel(mel)
        if mel.shape[2] * model.config.hop_length != T:
            raise ValueError(f"the mel covers {mel.shape[2] * model.config.hop_length} samples, expected {T} "
                             "(the input length)")
        frames = _frames(model, mel)
    elif mel is not None:
        raise ValueError("this model is unconditioned: it takes no mel")
    spk = model.speaker_vector(speaker, B)
    return fast.logits(inputs, None, spk, frames=frames)
