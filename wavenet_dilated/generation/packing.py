"""The folded weights laid out for the compiled kernel: host copies (:class:`HostWeights`: fp32, or the codes and row
scales of a reduced precision, :mod:`.precision`) and the packed, 64-byte-aligned weight stream with the :mod:`.abi`
structs that point into it (:class:`Packed`)."""

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
from .precision import CODES, PRECISIONS, quantize_model, row_codes

__all__ = ["HEADS", "HostWeights", "Packed", "aligned", "host_weights", "ptr"]

HEADS = {"categorical": 0, "mol": 1, "gaussian": 2}


# --------------------------------------------------------------------------------------------------- host weights


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class HostWeights:
    """:class:`~.folding.StepWeights` as the kernel reads them: numpy, contiguous (the last layer's residual an empty
    ``(0, G/2)`` matrix); the conditioning weight and conv bias stay tensors (they feed ``torch.addmm``).

    The step matrices (``conv``, ``skip``, ``res``, ``out1``, ``out2``) hold the codes of ``precision``
    (:data:`~.precision.CODES`: fp32 weights, bf16 bits, int8) and, for bf16 and int8, ``scales`` holds their per-row
    scales under the same names (lists for the per-layer ones); everything else is fp32.
    """

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
    precision: str = "fp32"
    scales: dict | None = None


def host_weights(model: WaveNet, precision: str = "fp32") -> HostWeights:
    """:func:`~.folding.fold` with the first-layer tables, converted for the kernel; for bf16 and int8, of
    :func:`~.precision.quantize_model` (so the first layer's tables are those of the quantised conv), its step matrices
    as codes and row scales."""
    if precision != "fp32":
        model = quantize_model(model, precision)
    w = fold(model, tables=True)
    half = model.config.gate_channels // 2
    mats = {"conv": w.conv, "skip": w.skip, "res": [torch.zeros(0, half) if m is None else m for m in w.res],
            "out1": [w.out1], "out2": [w.out2]}
    codes = {k: [row_codes(m, precision) for m in v] for k, v in mats.items()}
    scales = None if precision == "fp32" else {k: [c[1] for c in v] for k, v in codes.items()}
    return HostWeights(
        conv=[c[0] for c in codes["conv"]], skip=[c[0] for c in codes["skip"]], res=[c[0] for c in codes["res"]],
        res_bias=_np(w.res_bias), skip_bias=_np(w.skip_bias),
        cond_weight=None if w.cond_weight is None else w.cond_weight.float().contiguous(),
        conv_bias=w.conv_bias.contiguous(), table=None if w.table is None else _np(w.table), embed=_np(w.embed),
        out1=codes["out1"][0][0], out1_bias=_np(w.out1_bias), out2=codes["out2"][0][0], out2_bias=_np(w.out2_bias),
        precision=precision, scales=scales,
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
    """One stream of packed matrices: each in blocks of ``8·ry`` rows stored input-major, 64-byte aligned, elements of
    one precision's codes; with a stream of fp32 row scales beside it (bf16, int8)."""

    def __init__(self, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.pieces: list[np.ndarray] = []
        self.size = 0
        self.scale_pieces: list[np.ndarray] = []
        self.n_scales = 0

    def pack(self, w: np.ndarray, ry: int, scale: np.ndarray | None = None) -> _Matrix:
        """Append ``w (rows, in)`` (codes of the stream's type) and, for a scaled precision, its row scales."""
        rows, n_in = w.shape
        assert rows % 8 == 0 and w.dtype == self.dtype, (rows, w.dtype)
        rb = 8 * ry
        m = _Matrix(self.size, rows, n_in, ry, self.n_scales)
        for r0 in range(0, rows, rb):
            block = np.ascontiguousarray(w[r0 : r0 + rb].T)  # (in, rows in block)
            self.pieces.append(block.reshape(-1))
            self.size += block.size
        pad = (-self.size) % (64 // self.dtype.itemsize)  # keep every matrix 64-byte aligned
        if pad:
            self.pieces.append(np.zeros(pad, self.dtype))
            self.size += pad
        if scale is not None:
            assert scale.shape == (rows,), scale.shape
            self.scale_pieces.append(scale.astype(np.float32))
            self.n_scales += rows
        return m

    def pack_tiles(self, w: np.ndarray, tiles: int, scale: np.ndarray) -> _Matrix:
        """Append ``w (rows, in)`` (int8 codes, ``in`` a multiple of 4) for the int8 × int8 products of ``"w8a8"``
        (``csrc/qmatmul.h``): blocks of ``tiles`` tiles of 16 rows (the last block fewer; rows past the end are zero),
        each block input-group-major, a tile's 64 bytes ``w[16·v + r][4·g + k] + 128`` at byte ``4·r + k``;
        ``ry`` of the matrix is ``tiles``."""
        rows, n_in = w.shape
        assert n_in % 4 == 0 and w.dtype == np.int8 and self.dtype == np.int8, (n_in, w.dtype, self.dtype)
        assert scale.shape == (rows,), scale.shape
        padded = -(-rows // TILE) * TILE
        u = np.full((padded, n_in), 128, np.uint8)
        u[:rows] = (w.astype(np.int16) + 128).astype(np.uint8)
        m = _Matrix(self.size, rows, n_in, tiles, self.n_scales)
        for r0 in range(0, padded, TILE * tiles):
            block = u[r0 : r0 + TILE * tiles]
            t = block.shape[0] // TILE
            groups = block.reshape(t, TILE, n_in // 4, 4).transpose(2, 0, 1, 3)  # (group, tile, row, 4 inputs)
            self.pieces.append(np.ascontiguousarray(groups).reshape(-1).view(np.int8))
            self.size += groups.size
        pad = (-self.size) % 64
        if pad:
            self.pieces.append(np.zeros(pad, np.int8))
            self.size += pad
        self.scale_pieces.append(scale.astype(np.float32))
        self.n_scales += rows
        return m

    def array(self) -> np.ndarray:
        out = aligned(self.size, self.dtype)
        np.concatenate(self.pieces, out=out)
        return out

    def scale_array(self) -> np.ndarray:
        out = aligned(max(self.n_scales, 1))
        if self.scale_pieces:
            np.concatenate(self.scale_pieces, out=out[: self.n_scales])
        return out


#: rows per tile of the int8 × int8 products (csrc/qmatmul.h)
TILE = 16
#: tiles per packed block of the ``"w8a8"`` matrices, for each ``ry`` of the others (64, 32 or 16 rows), and of the
#: past-tap matrices (whose products have ``block × batch`` columns)
W8A8_TILES = {8: 4, 4: 2, 2: 1, 1: 1}
W8A8_PAST_TILES = 2

_NONE = (0, 0, 0, 1, 0)  # an empty matrix (a layer without residual or without blocked past taps)


class Packed:
    """Weights packed for one row-block size, thread count and block limit, and the ctypes model struct pointing into
    them.

    Thread ``t`` owns gate channels ``[col0[t], col0[t+1])``: those rows of both conv halves and those columns of the
    skip and residual 1×1s (with ``exchange``, the whole residual 1×1: :func:`~.threads.exchange_outputs`); and rows
    ``[row0[t], row0[t+1])`` of the first output 1×1 with the matching columns of the second.
    """

    def __init__(self, folded: HostWeights, model: WaveNet, ry: int, n_threads: int, block: int,
                 exchange: bool = False) -> None:
        c = model.config
        self.folded, self.exchange = folded, exchange
        self.block = _threads.past_blocks(c.dilations, c.kernel_size, folded.table is not None, block)
        self.col0, self.row0 = _split8(c.gate_channels // 2, n_threads), _split8(c.skip_channels, n_threads)
        n_out = folded.out2.shape[0]
        self.n_out_pad = -(-n_out // 8) * 8
        self.out2_bias = np.zeros(self.n_out_pad, np.float32)
        self.out2_bias[:n_out] = folded.out2_bias
        stream = _Stream(CODES[folded.precision])
        mats = self._pack_steps(stream, c, ry, n_threads)
        mats.update(self._pack_past(stream, c, n_threads))
        self.weights = stream.array()
        self.scales = stream.scale_array()
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
        out2 = np.zeros((self.n_out_pad, f.out2.shape[1]), f.out2.dtype)
        out2[: f.out2.shape[0]] = f.out2
        sc = self._scale
        out2_scale = None if f.scales is None else np.ones(self.n_out_pad, np.float32)
        if out2_scale is not None:
            out2_scale[: f.out2.shape[0]] = sc("out2", 0, slice(None))
        mats = {}
        pack = stream.pack
        if f.precision == "w8a8":
            def pack(w, ry, scale):  # noqa: E306 - the layers' matrices of w8a8: tiles for int8 × int8 products
                return stream.pack_tiles(w, W8A8_TILES[ry], scale)
        for t in range(n_threads):
            a, b = self.col0[t], self.col0[t + 1]
            for i in range(c.n_layers):
                cur = slice((K - 1) * R, None) if self.block[i] > 1 else slice(None)  # blocked: the current tap only
                mats["a", i, t] = pack(f.conv[i][a:b, cur], ry, sc("conv", i, slice(a, b)))
                mats["b", i, t] = pack(f.conv[i][H + a : H + b, cur], ry, sc("conv", i, slice(H + a, H + b)))
                mats["s", i, t] = pack(f.skip[i][:, a:b], ry, sc("skip", i, slice(None)))
                rs = f.res[i] if self.exchange else f.res[i][:, a:b]  # exchange: every thread the whole matrix
                mats["r", i, t] = pack(rs, ry, sc("res", i, slice(None))) if rs.shape[0] else \
                    _Matrix(0, 0, rs.shape[1], 1, 0)
            rows = slice(self.row0[t], self.row0[t + 1])
            mats["o1", 0, t] = stream.pack(f.out1[rows], ry, sc("out1", 0, rows))
            mats["o2", 0, t] = stream.pack(out2[:, rows], ry, out2_scale)
        return mats

    def _scale(self, name: str, i: int, rows: slice) -> np.ndarray | None:
        """The row scales ``rows`` of matrix ``i`` of ``name`` (bf16, int8), or ``None`` (fp32)."""
        scales = self.folded.scales
        return None if scales is None else scales[name][i][rows]

    def _pack_past(self, stream: _Stream, c, n_threads: int) -> dict:
        """The past taps of blocked layers, read once per block: after the per-step stream, in ``PAST_RY``-row blocks
        (more columns per pass over a block of rows)."""
        H, K, R = c.gate_channels // 2, c.kernel_size, c.residual_channels
        mats = {}
        for t in range(n_threads):
            a, b = self.col0[t], self.col0[t + 1]
            for i in range(c.n_layers):
                past = self.folded.conv[i][:, : (K - 1) * R]
                if self.block[i] > 1 and self.folded.precision == "w8a8":
                    mats["pa", i, t] = stream.pack_tiles(past[a:b], W8A8_PAST_TILES, self._scale("conv", i, slice(a, b)))
                    mats["pb", i, t] = stream.pack_tiles(past[H + a : H + b], W8A8_PAST_TILES,
                                                         self._scale("conv", i, slice(H + a, H + b)))
                elif self.block[i] > 1:
                    mats["pa", i, t] = stream.pack(past[a:b], _threads.PAST_RY, self._scale("conv", i, slice(a, b)))
                    mats["pb", i, t] = stream.pack(past[H + a : H + b], _threads.PAST_RY,
                                                   self._scale("conv", i, slice(H + a, H + b)))
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
            precision=PRECISIONS.index(f.precision), exchange=int(self.exchange), scales=ptr(self.scales),
            dilation=ptr(self.dilation), col0=ptr(self.col0), row0=ptr(self.row0),
            conv_a=conv_a, conv_b=conv_b, skip=skip, res=res, weights=ptr(self.weights),
            res_bias=ptr(f.res_bias), skip_bias=ptr(f.skip_bias), table=ptr(f.table), embed=ptr(f.embed),
            out1=out1, out2=out2, out1_bias=ptr(f.out1_bias), out2_bias=ptr(self.out2_bias), block=ptr(self.block),
            past_a=past_a, past_b=past_b,
        )
