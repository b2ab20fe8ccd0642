"""The folded weights laid out for the compiled kernel: fp32 host copies (:class:`HostWeights`) and the packed,
64-byte-aligned weight stream with the :mod:`.abi` structs that point into it (:class:`Packed`)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from ..wavenet import WaveNet
from . import threads as _threads
from .abi import Matrix as _Matrix
from .abi import Model as _Model
from .folding import RES_SCALE, fold

__all__ = ["HEADS", "HostWeights", "Packed", "aligned", "host_weights", "ptr"]

HEADS = {"categorical": 0, "mol": 1, "gaussian": 2}


# --------------------------------------------------------------------------------------------------- host weights


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class HostWeights:
    """:class:`~.folding.StepWeights` as the kernel reads them: float32 numpy, contiguous (the last layer's residual
    an empty ``(0, G/2)`` matrix); the conditioning weight and conv bias stay tensors (they feed ``torch.addmm``)."""

    conv: list[np.ndarray]
    skip: list[np.ndarray]
    res: list[np.ndarray]
    res_bias: np.ndarray
    skip_bias: np.ndarray
    cond_weight: torch.Tensor | None
    conv_bias: torch.Tensor
    table: np.ndarray | None
    embed: np.ndarray
    out1: np.ndarray
    out1_bias: np.ndarray
    out2: np.ndarray
    out2_bias: np.ndarray


def host_weights(model: WaveNet) -> HostWeights:
    """:func:`~.folding.fold` with the first-layer tables, converted for the kernel."""
    w = fold(model, tables=True)
    half = model.config.gate_channels // 2
    return HostWeights(
        conv=[_np(m) for m in w.conv], skip=[_np(m) for m in w.skip],
        res=[np.zeros((0, half), np.float32) if m is None else _np(m) for m in w.res],
        res_bias=_np(w.res_bias), skip_bias=_np(w.skip_bias),
        cond_weight=None if w.cond_weight is None else w.cond_weight.float().contiguous(),
        conv_bias=w.conv_bias.contiguous(), table=None if w.table is None else _np(w.table), embed=_np(w.embed),
        out1=_np(w.out1), out1_bias=_np(w.out1_bias), out2=_np(w.out2), out2_bias=_np(w.out2_bias),
    )


# --------------------------------------------------------------------------------------------------- packing


def ptr(a: np.ndarray | torch.Tensor | None) -> int | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.data_ptr()
    return a.ctypes.data


def aligned(n: int, dtype=np.float32) -> np.ndarray:
    """A zeroed 1-D array of ``n`` elements starting on a 64-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n * item + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + n * item].view(dtype)


def _split8(n: int, parts: int) -> np.ndarray:
    """``parts + 1`` boundaries splitting ``range(n)`` (a multiple of 8) into near-equal multiples of 8."""
    units = n // 8
    return np.array([8 * (units * t // parts) for t in range(parts + 1)], np.int32)


class _Stream:
    """One float32 stream of packed matrices: each in blocks of ``8·ry`` rows stored input-major, 64-byte aligned."""

    def __init__(self) -> None:
        self.pieces: list[np.ndarray] = []
        self.size = 0

    def pack(self, w: np.ndarray, ry: int) -> _Matrix:
        rows, n_in = w.shape
        assert rows % 8 == 0, rows
        rb = 8 * ry
        m = _Matrix(self.size, rows, n_in, ry, 0)
        for r0 in range(0, rows, rb):
            block = np.ascontiguousarray(w[r0 : r0 + rb].T)  # (in, rows in block)
            self.pieces.append(block.reshape(-1))
            self.size += block.size
        pad = (-self.size) % 16  # keep every matrix 64-byte aligned
        if pad:
            self.pieces.append(np.zeros(pad, np.float32))
            self.size += pad
        return m

    def array(self) -> np.ndarray:
        out = aligned(self.size)
        np.concatenate(self.pieces, out=out)
        return out


_NONE = (0, 0, 0, 1, 0)  # an empty matrix (a layer without residual or without blocked past taps)


class Packed:
    """Weights packed for one row-block size, thread count and block limit, and the ctypes model struct pointing into
    them.

    Thread ``t`` owns gate channels ``[col0[t], col0[t+1])``: those rows of both conv halves and those columns of the
    skip and residual 1×1s; and rows ``[row0[t], row0[t+1])`` of the first output 1×1 with the matching columns of the
    second.
    """

    def __init__(self, folded: HostWeights, model: WaveNet, ry: int, n_threads: int, block: int) -> None:
        c = model.config
        self.folded = folded
        self.block = _threads.past_blocks(c.dilations, c.kernel_size, folded.table is not None, block)
        self.col0, self.row0 = _split8(c.gate_channels // 2, n_threads), _split8(c.skip_channels, n_threads)
        n_out = folded.out2.shape[0]
        self.n_out_pad = -(-n_out // 8) * 8
        self.out2_bias = np.zeros(self.n_out_pad, np.float32)
        self.out2_bias[:n_out] = folded.out2_bias
        stream = _Stream()
        mats = self._pack_steps(stream, c, ry, n_threads)
        mats.update(self._pack_past(stream, c, n_threads))
        self.weights = stream.array()
        self.dilation = np.asarray(c.dilations, np.int32)
        L = c.n_layers
        order = [("a", L), ("b", L), ("s", L), ("r", L), ("o1", 1), ("o2", 1), ("pa", L), ("pb", L)]
        self._structs = [(_Matrix * (n * n_threads))(*[mats[k, i, t] for i in range(n) for t in range(n_threads)])
                         for k, n in order]
        self.struct = self._model_struct(model, n_threads)

    def _pack_steps(self, stream: _Stream, c, ry: int, n_threads: int) -> dict:
        """The per-step matrices, each thread's in one contiguous stream in the order it reads them (the prefetcher's
        best case)."""
        f, H, K, R = self.folded, c.gate_channels // 2, c.kernel_size, c.residual_channels
        out2 = np.zeros((self.n_out_pad, f.out2.shape[1]), np.float32)
        out2[: f.out2.shape[0]] = f.out2
        mats = {}
        for t in range(n_threads):
            a, b = self.col0[t], self.col0[t + 1]
            for i in range(c.n_layers):
                cur = slice((K - 1) * R, None) if self.block[i] > 1 else slice(None)  # blocked: the current tap only
                mats["a", i, t] = stream.pack(f.conv[i][a:b, cur], ry)
                mats["b", i, t] = stream.pack(f.conv[i][H + a : H + b, cur], ry)
                mats["s", i, t] = stream.pack(f.skip[i][:, a:b], ry)
                rs = f.res[i]
                mats["r", i, t] = stream.pack(rs[:, a:b], ry) if rs.shape[0] else _Matrix(0, 0, b - a, 1, 0)
            mats["o1", 0, t] = stream.pack(f.out1[self.row0[t] : self.row0[t + 1]], ry)
            mats["o2", 0, t] = stream.pack(out2[:, self.row0[t] : self.row0[t + 1]], ry)
        return mats

    def _pack_past(self, stream: _Stream, c, n_threads: int) -> dict:
        """The past taps of blocked layers, read once per block: after the per-step stream, in ``PAST_RY``-row blocks
        (more columns per pass over a block of rows)."""
        H, K, R = c.gate_channels // 2, c.kernel_size, c.residual_channels
        mats = {}
        for t in range(n_threads):
            a, b = self.col0[t], self.col0[t + 1]
            for i in range(c.n_layers):
                past = self.folded.conv[i][:, : (K - 1) * R]
                if self.block[i] > 1:
                    mats["pa", i, t] = stream.pack(past[a:b], _threads.PAST_RY)
                    mats["pb", i, t] = stream.pack(past[H + a : H + b], _threads.PAST_RY)
                else:
                    mats["pa", i, t] = mats["pb", i, t] = _Matrix(*_NONE)
        return mats

    def _model_struct(self, model: WaveNet, n_threads: int) -> _Model:
        c, f, head = model.config, self.folded, model.head
        conv_a, conv_b, skip, res, out1, out2, past_a, past_b = (ctypes.addressof(a) for a in self._structs)
        return _Model(
            n_layers=c.n_layers, R=c.residual_channels, G=c.gate_channels, S=c.skip_channels, K=c.kernel_size,
            n_out=f.out2.shape[0], n_out_pad=self.n_out_pad, head=HEADS[c.output], n_classes=c.n_classes,
            n_mix=c.n_mixtures, first_table=int(f.table is not None), n_threads=n_threads,
            res_scale=RES_SCALE, log_scale_min=float(getattr(head, "log_scale_min", 0.0)),
            dilation=ptr(self.dilation), col0=ptr(self.col0), row0=ptr(self.row0),
            conv_a=conv_a, conv_b=conv_b, skip=skip, res=res, weights=ptr(self.weights),
            res_bias=ptr(f.res_bias), skip_bias=ptr(f.skip_bias), table=ptr(f.table), embed=ptr(f.embed),
            out1=out1, out2=out2, out1_bias=ptr(f.out1_bias), out2_bias=ptr(self.out2_bias), block=ptr(self.block),
            past_a=past_a, past_b=past_b,
        )
