"""The compiled CPU loop: the folded weights packed for the kernel, the caller-owned :class:`FastState`, and
:class:`FastGenerator`, which computes the same function as :class:`~.reference.CachedGenerator`.

Per sample (compiled C++, :mod:`.kernel`, the CPU's widest vectors, fp32 sums of fp32/bf16/int8 weights
(:mod:`.precision`), one call per slice of steps, no Python in the loop): per layer
one pass over ``[W_a; W_b]`` (initialised with the additive term), the gate ``tanh(a)·σ(b)``, one pass over
``[W_skip; W_res]``; then the two output 1×1s and inverse-CDF sampling with the pre-drawn uniforms of
:class:`~.reference.UniformStream` (same block order, so the same seed gives the same samples as
:func:`~.reference.generate`). With two threads each owns half the gate channels (those rows of the conv, those columns
of the 1×1s); their partial residuals are summed after one spin barrier per layer (in thread order, so both get the same
bits), the skip sums and logits after one more per sample. With ``"w8a8"`` they instead exchange their gate outputs'
int8 codes, in cache lines that carry their own exchange number, and each makes the whole residual product
(:func:`~.threads.exchange_outputs`). Each thread keeps its own copy of a layer's input and stores only its channels in
the shared ring, so no cache line is written by two cores. A second thread is used only while a core is idle
(:class:`~.threads.ThreadChooser`).

Per chunk of steps, the additive term of every layer's pre-activation, ``W_mel c_t + W_spk g + b_conv``: from the mel
at frame rate, the projection of the few frames the chunk needs and every upsampling stage but the last
(:meth:`FastGenerator.project_frames`); the last stage (3 multiply-adds per value) is made per step by the kernel's
threads, each for the channels it reads, so no ``(steps, B, L·G)`` copy passes through memory. From an upsampled
``cond`` it is that copy (one matrix product); for a model without mel one ``(B, L·G)`` term for all steps.

Per block of steps (:func:`~.threads.auto_block`): a layer of dilation ``d`` reads its past taps at least ``d`` steps
after they were made, so their products for the next ``n ≤ d`` steps are one matrix product when the block starts; the
step then multiplies only the newest tap (same sums, another order).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_eval_mode, check_int, check_temperature
from ..wavenet import WaveNet
from . import kernel
from . import reference as gen_mod
from . import threads as _threads
from .abi import State as _State
from .abi import Term as _TermStruct
from .folding import polyphase_plan, speaker_terms
from .packing import HEADS, Packed, aligned, host_weights, ptr
from .precision import check_precision
from .reference import UniformStream

__all__ = ["FastPathUnavailable", "FastState", "FastGenerator", "unsupported_reason"]

@dataclass
class _Term:
    """A chunk's additive term as the kernel reads it (``WNTerm``, ``csrc/wavenet_kernel.h``): ``rows`` (``stride``
    floats per step, 0: one row for every step), or (``s > 0``) the input ``x`` of the upsampler's last stage (rows
    ``lo … lo + n_rows`` of ``length``), its taps ``a``, the ``constant`` added, and the position of the chunk's
    first step; the kernel's threads make that stage's outputs per step."""

    rows: torch.Tensor | None
    stride: int
    x: torch.Tensor | None = None
    a: np.ndarray | None = None
    constant: torch.Tensor | None = None
    lo: int = 0
    n_rows: int = 0
    length: int = 0
    first: int = 0
    s: int = 0

    def struct(self, offset: int) -> _TermStruct:
        """The ``WNTerm`` of the steps from ``offset`` on (the arrays stay owned by this object)."""
        if self.s == 0:
            assert self.rows is not None
            return _TermStruct(rows=self.rows.data_ptr() + offset * self.stride * self.rows.element_size(),
                               stride=self.stride)
        assert self.x is not None and self.a is not None and self.constant is not None
        return _TermStruct(x=self.x.data_ptr(), a=self.a.ctypes.data, add=self.constant.data_ptr(), lo=self.lo,
                           n_rows=self.n_rows, len=self.length, first=self.first + offset, s=self.s)


class FastPathUnavailable(RuntimeError):
    """The fast path cannot run this model here; the message says why."""


def unsupported_reason(model: WaveNet) -> str | None:
    """Why the compiled CPU kernel cannot run ``model`` (``None`` when it can)."""
    c = model.config
    p = next(model.parameters())
    if p.device.type != "cpu":
        return f"the compiled kernel runs on CPU; the model is on {p.device}"
    if p.dtype != torch.float32:
        return f"the compiled kernel computes in float32; the model is {p.dtype}"
    if c.output not in HEADS:
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


# --------------------------------------------------------------------------------------------------- state


@dataclass
class FastState:
    """Everything a fast generation carries from one sample to the next; owned by the caller.

    Attributes:
        rings: all layers' ring buffers ``(slots_l, B, R)`` flattened (fp32, zero = silence before the start; empty
            for ``"w8a8"``, which keeps codes instead).
        ring_offset: ``(L,)`` where each layer's ring starts in ``rings``.
        class_ring: the first layer's past input classes ``((K−1)·d_0 + 1, B)`` (categorical), −1 before the start.
        prev_class / prev_value: ``(B,)`` the last sample (the next step's input), for a categorical / continuous head.
        pre / pre_offset: blocked layers' past-tap products for the current block, ``(block_l, B, G)`` each, and where
            each starts in ``pre`` (see :func:`~.threads.past_blocks`).
        codes / code_scale / code_sum / code_offset: ``"w8a8"`` only, the int8 codes of every layer's inputs with their
            scales and code sums, ``(slots_l + block_l − 1, B, R)`` / ``(…, B)`` each (the first ``block_l − 1`` slots
            again after the last, so that a block's past columns are contiguous), and where each layer's starts (in
            columns); ``None`` otherwise.
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
    codes: np.ndarray | None = None
    code_scale: np.ndarray | None = None
    code_sum: np.ndarray | None = None
    code_offset: np.ndarray | None = None
    step: int = 0

    @property
    def previous(self) -> torch.Tensor:
        """``(B,)`` the last sample: int64 classes (categorical) or float32 values."""
        return torch.from_numpy((self.prev_class if self.quantized else self.prev_value).copy())

    def _struct(self) -> _State:
        return _State(rings=ptr(self.rings), ring_offset=ptr(self.ring_offset), class_ring=ptr(self.class_ring),
                      prev_class=ptr(self.prev_class), prev_value=ptr(self.prev_value), pre=ptr(self.pre),
                      pre_offset=ptr(self.pre_offset), step=self.step, batch=self.batch, codes=ptr(self.codes),
                      code_scale=ptr(self.code_scale), code_sum=ptr(self.code_sum), code_offset=ptr(self.code_offset))


def _offsets(sizes: list[int]) -> np.ndarray:
    """Where each of consecutive pieces of ``sizes`` starts."""
    out = np.zeros(len(sizes), np.int64)
    out[1:] = np.cumsum(sizes)[:-1]
    return out


# --------------------------------------------------------------------------------------------------- generator


class FastGenerator:
    """Compiled-loop WaveNet generation on CPU; same samples as :class:`~.reference.CachedGenerator`.

    Args:
        model: a :class:`~wavenet_dilated.wavenet.WaveNet` in eval mode, fp32, on CPU. The weights are folded and
            copied at construction (shared with other generators of the same model while its weights are unchanged):
            build a new generator after changing the model.
        threads: threads of the compiled loop; they split the gate channels and meet once per layer (a barrier, or
            the exchange of gate outputs).
            ``None`` (default) chooses between 1 and ``min(2, torch.get_num_threads())`` as it runs: two only
            while a core is idle and two measure faster (see :class:`~.threads.ThreadChooser`).
        block: at most this many steps' products of the past taps (all but the newest) are made at once, one matrix
            product per layer and block instead of one pass over those weights per step (``1``: off). ``None``
            (default): :func:`~.threads.auto_block`.
        precision: the step matrices' weights, ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` with a scale per row
            (:mod:`.precision`), sums and activations fp32; or ``"w8a8"``, int8 weights and int8 activations with
            exact int32 sums. The reduced ones compute the model of :func:`~.precision.quantize_model`.

    One generator serves one call at a time (it keeps scratch buffers between chunks); give each thread its own.

    Raises:
        FastPathUnavailable: the kernel cannot be built or loaded here, or the model is not supported (see
            :func:`unsupported_reason`).

    Examples:
        >>> gen = FastGenerator(model)
        >>> state = gen.init_state(batch_size=2)
        >>> samples = gen.run(state, 100, UniformStream(2, 1, torch.Generator().manual_seed(0)))   # (2, 100)
    """

    #: steps per kernel call when the thread count is chosen as it runs (each call starts the kernel's threads and
    #: warms their caches: 256 measured 2.5 % slower than 1024 for ljspeech w8a8 at batch 1, 1024 as fast as a fixed
    #: thread count)
    SLICE = 1024
    #: steps of a call that measures a thread count (:meth:`~.threads.ThreadChooser.measuring`); short, so that a
    #: measurement at the slower choice costs little
    PROBE_SLICE = 64

    def __init__(self, model: WaveNet, threads: int | None = None, block: int | None = None,
                 precision: str = "fp32") -> None:
        check_eval_mode(model)
        check_precision(precision)
        reason = unsupported_reason(model)
        if reason is not None:
            raise FastPathUnavailable(reason)
        try:
            self._lib = kernel.load_kernel()
        except kernel.KernelUnavailable as err:
            raise FastPathUnavailable(str(err)) from None
        check_int("threads", threads, 1, 64, optional=True)
        check_int("block", block, 1, optional=True)
        self.model, self.threads, self.block, self.precision = model, threads, block, precision
        self._max_threads = _threads.max_threads() if threads is None else threads
        self.config = model.config
        self._prepared = _threads.prepared(model, host_weights, precision)
        self.folded = self._prepared.folded
        self._packed = self._prepared.packed
        self._polyphase = polyphase_plan(model)
        self._stage_buffers: dict[int, torch.Tensor] = {}  # _upsample's, kept between chunks
        if self.folded.cond_weight is not None:
            self._cond_weight_t = self.folded.cond_weight.T.contiguous()  # (C_mel, L·G)

    def _chooser(self, batch: int) -> _threads.ThreadChooser:
        return self._prepared.chooser(batch, self._max_threads)

    def block_for(self, batch: int) -> int:
        """The past-tap block limit used for a batch size (the ``block`` argument, or :func:`~.threads.auto_block`)."""
        return self.block if self.block is not None else _threads.auto_block(self.config, batch)

    def _pack(self, batch: int, n_threads: int) -> Packed:
        key = (_threads.rows_per_block(batch), n_threads, self.block_for(batch),
               _threads.exchange_outputs(self.precision, batch, n_threads))
        if key not in self._packed:
            self._packed[key] = Packed(self.folded, self.model, key[0], n_threads, key[2], key[3])
        return self._packed[key]

    # ------------------------------------------------------------------ state and conditioning
    def init_state(self, batch_size: int) -> FastState:
        """A zeroed state for ``batch_size`` rows: as if the signal were preceded by silence."""
        c = self.config
        slots = [(c.kernel_size - 1) * d + 1 for d in c.dilations]
        sizes = [s * batch_size * c.residual_channels for s in slots]
        head = self.model.head
        first_table = self.folded.table is not None
        blocks = _threads.past_blocks(c.dilations, c.kernel_size, first_table, self.block_for(batch_size))
        pre_sizes = [int(n) * batch_size * c.gate_channels if n > 1 else 0 for n in blocks]
        codes = {}
        if self.precision == "w8a8":  # its products read the code rings only
            sizes = [0] * len(sizes)
            columns = [(s + int(n) - 1) * batch_size for s, n in zip(slots, blocks)]
            n = int(sum(columns))
            codes = dict(codes=aligned(n * c.residual_channels, np.int8), code_scale=aligned(n),
                         code_sum=aligned(n, np.int32), code_offset=_offsets(columns))
        return FastState(**codes,
            rings=aligned(int(sum(sizes))), ring_offset=_offsets(sizes),
            pre=aligned(max(1, int(sum(pre_sizes)))), pre_offset=_offsets(pre_sizes),
            class_ring=np.full((slots[0], batch_size), -1, np.int32),
            prev_class=np.full(batch_size, head.silence() if head.quantized else 0, np.int64),
            prev_value=np.full(batch_size, 0.0 if head.quantized else head.silence(), np.float32),
            batch=batch_size, quantized=head.quantized,
        )

    def constant_term(self, speaker_vec: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``(B, L·G)``: conv biases plus the speaker projections (the part of the additive term that is constant)."""
        term = self.folded.conv_bias.expand(batch, -1)
        if speaker_vec is not None:
            term = term + speaker_terms(self.model.blocks, speaker_vec).float()
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
        the kernel's ``wn_polyphase`` (3 multiply-adds per output value per stage). Exact up to float rounding.
        """
        return self._upsample(frames, first, n_steps, constant, fuse_last=False).rows

    def _upsample(self, frames: torch.Tensor, first: int, n_steps: int, constant: torch.Tensor,
                  fuse_last: bool) -> _Term:
        """:meth:`project_frames` as a kernel term: the whole term (``fuse_last`` false or no stage), or everything but
        the last upsampling stage, which the kernel's threads then make per step (``WNTerm.s``). With ``fuse_last``
        the stages write into buffers kept from one chunk to the next (fresh pages for every chunk cost more than
        the stages' arithmetic), so the term is valid until the next call."""

        def rows(i: int, n: int, width: int) -> torch.Tensor:  # stage i's output, n rows
            if not fuse_last:
                return torch.empty(n, width)
            kept = self._stage_buffers.get(i)
            if kept is None or kept.numel() < n * width:
                kept = self._stage_buffers[i] = torch.empty(n * width)
            return kept[: n * width].view(n, width)

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
        x = rows(0, hi0 - lo0, width)  # rows (frame, batch) → (n_frames, B·L·G)
        self._lib.wn_project(x_in.data_ptr(), x_in.shape[0], C, self._cond_weight_t.data_ptr(), lg, x.data_ptr())
        fused = len(plan) if fuse_last and plan else None
        for i, (s, a) in enumerate(plan):
            (lo_in, hi_in), (lo_out, hi_out) = ranges[i], ranges[i + 1]
            if i + 1 == fused:  # the kernel makes this stage's outputs as it reads them
                return _Term(None, 0, x, a, constant, lo_in, hi_in - lo_in, lens[i], first, s)
            y = rows(i + 1, hi_out - lo_out, width)
            last = i == len(plan) - 1
            self._lib.wn_polyphase(x.data_ptr(), lo_in, hi_in - lo_in, lens[i], width, s, a.ctypes.data, lo_out,
                                   hi_out - lo_out, constant.data_ptr() if last else None, y.data_ptr())
            x = y
        return _Term(x, width)

    def _project_rows(self, frames: list[torch.Tensor], first: int, n_steps: int,
                      constant: torch.Tensor) -> torch.Tensor:
        """:meth:`project_frames` row by row for rows of different lengths (``frames[i]``: ``(1, C_mel, F_i)``),
        each from its own frames alone; steps past a row's end get its constant term (they are generated, then cut)."""
        hop, rows = self.config.hop_length, []
        for i, f in enumerate(frames):
            row = constant[i : i + 1].expand(n_steps, -1).clone()
            k = min(n_steps, f.shape[2] * hop - first)
            if k > 0:
                row[:k] = self.project_frames(f, first, k, constant[i : i + 1])
            rows.append(row)
        return torch.cat(rows, dim=1)

    def _terms(self, first: int, n_steps: int, constant: torch.Tensor, cond: torch.Tensor | None,
               frames: torch.Tensor | None):
        """Yield ``(start, n, term)`` chunk by chunk; a chunk's term is at most 2^24 floats."""
        width = constant.numel()
        chunk = max(16, min(gen_mod.COND_CHUNK, (1 << 24) // max(width, 1)))
        if self.folded.cond_weight is None:
            cond = frames = None
            chunk = gen_mod.COND_CHUNK
        for start in range(0, n_steps, chunk):
            n = min(chunk, n_steps - start)
            if isinstance(frames, list):
                yield start, n, _Term(self._project_rows(frames, first + start, n, constant), width)
            elif frames is not None:
                yield start, n, self._upsample(frames, first + start, n, constant, fuse_last=True)
            elif cond is not None:
                yield start, n, _Term(*self.project(cond[:, :, start : start + n], constant, n))
            else:
                yield start, n, _Term(constant, 0)

    def _conditioning(self, cond: torch.Tensor | None, frames: torch.Tensor | None) -> tuple:
        if isinstance(frames, list) and self._polyphase is None:  # rows of different lengths, padded after upsampling
            n = max(f.shape[2] for f in frames) * self.config.hop_length
            cond = torch.zeros(len(frames), frames[0].shape[1], n)
            for i, f in enumerate(frames):
                cond[i, :, : f.shape[2] * self.config.hop_length] = self.model.upsampler(f)[0]
            return cond, None
        if frames is not None and self._polyphase is None:
            cond, frames = self.model.upsampler(frames), None  # a non-standard upsampler: project every sample
        return cond, frames

    # ------------------------------------------------------------------ the loop
    def _call(self, state: FastState, n: int, term: _Term, uniforms: torch.Tensor | None, temperature: float,
              forced: torch.Tensor | None, samples: torch.Tensor | None, logits: torch.Tensor | None) -> None:
        """Run ``n`` steps; ``term`` covers ``n`` steps, the other arrays hold ``n`` rows."""
        head = self.model.head
        B = state.batch
        start = 0
        while start < n:
            chooser = None if self.threads is not None else self._chooser(B)
            n_threads = self.threads if chooser is None else chooser.pick()
            # a slice that measures a thread count for the first time or re-measures the slower one is short: at the
            # slower choice it costs little
            size = n if chooser is None else min(self.SLICE, self.PROBE_SLICE) if chooser.measuring(n_threads) else \
                self.SLICE
            k = min(size, n - start)
            packed = self._pack(B, n_threads)
            st = state._struct()

            def at(a: torch.Tensor | None, per_step: int, start: int = start) -> int | None:
                return None if a is None else a.data_ptr() + start * per_step * a.element_size()

            t0 = time.perf_counter()
            rc = self._lib.wn_run(
                ctypes.byref(packed.struct), ctypes.byref(st), k, ctypes.byref(term.struct(start)),
                at(uniforms, B * head.n_uniforms), head.n_uniforms, float(temperature), at(forced, B), at(samples, B),
                at(logits, B * head.out_channels),
            )
            if rc != 0:
                raise MemoryError("the fast-generation kernel could not allocate its scratch memory or threads")
            if chooser is not None:
                chooser.record(n_threads, (time.perf_counter() - t0) / k)
            state.step = st.step
            start += k

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
        ``state.step + i`` then reads upsampled position ``state.step + i``. ``frames`` may also be a list of ``B``
        rows ``(1, C_mel, F_i)`` of different lengths (:func:`~.batch.generate_rows`).
        """
        check_temperature(temperature)
        head = self.model.head
        B = state.batch
        constant = self.constant_term(speaker_vec, B)
        cond, frames = self._conditioning(cond, frames)
        covered = None if frames is None else max(f.shape[2] for f in frames) if isinstance(frames, list) else \
            frames.shape[2]
        if covered is not None and state.step + n_steps > covered * self.config.hop_length:
            raise ValueError(f"steps up to {state.step + n_steps} exceed what the mel covers "
                             f"({covered * self.config.hop_length})")
        dtype = torch.int64 if head.quantized else torch.float32
        out = torch.empty(n_steps, B, dtype=dtype)
        for start, n, term in self._terms(state.step, n_steps, constant, cond, frames):
            u = uniforms.take(n).float().contiguous()
            self._call(state, n, term, u, temperature, None, out[start:], None)
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
        for start, n, term in self._terms(0, T, constant, cond, frames):
            self._call(state, n, term, None, 1.0, forced_all[start : start + n], None, out[start:])
        return out.permute(1, 2, 0).contiguous()
