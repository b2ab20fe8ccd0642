"""Generation on CUDA: the step as a fixed sequence of PyTorch ops on static buffers, captured once in a CUDA graph and
replayed per sample (no host round trip, no per-op launch cost)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config import check_eval_mode, check_temperature
from ..wavenet import WaveNet
from . import reference as gen_mod
from .cpu import FastPathUnavailable
from .folding import RES_SCALE, fold, speaker_terms
from .reference import UniformStream

__all__ = ["CudaGraphGenerator"]


class CudaGraphGenerator:
    """The step as a fixed sequence of PyTorch ops on static buffers, captured once in a CUDA graph and replayed per
    sample.

    Same folded weights (:func:`~.folding.fold`) and sampling as :class:`~.cpu.FastGenerator`. Positions in the ring
    buffers, the step counter and the row of the per-chunk conditioning / uniforms are device tensors updated inside
    the graph, so one graph serves every step. ``capture=False`` runs the same step eagerly (any device): that is how it
    is tested on a machine without a GPU.

    Args:
        model: a :class:`~wavenet_dilated.wavenet.WaveNet` in eval mode (any dtype; on CUDA to capture).
        batch_size: rows generated together.
        chunk: steps whose conditioning and uniforms are staged at once (default
            :data:`~.reference.COND_CHUNK`).
        temperature: > 0, as in :func:`~.reference.generate`.
        capture: capture a CUDA graph (default: when the model is on CUDA).
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
        w = fold(model)  # the step's matrices, transposed for ``addmm(bias, rows, Wᵀ)``
        self.w_conv = [m.T.contiguous() for m in w.conv]
        self.w_skip = [m.T.contiguous() for m in w.skip]
        self.w_res = [None if m is None else m.T.contiguous() for m in w.res]
        self.b_res = list(w.res_bias)
        self.b_skip = w.skip_bias
        self.w_out1, self.b_out1 = w.out1.T.contiguous(), w.out1_bias
        self.w_out2, self.b_out2 = w.out2.T.contiguous(), w.out2_bias
        self.conv_bias, self.cond_weight = w.conv_bias, w.cond_weight
        dev, dt = self.device, self.dtype
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
                x = torch.addmm(torch.add(self.b_res[i], x, alpha=RES_SCALE), z, self.w_res[i])
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
            constant = constant + speaker_terms(self.model.blocks, speaker_vec)
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
