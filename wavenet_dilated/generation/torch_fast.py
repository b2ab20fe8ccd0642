"""Generation without the compiled kernel: the cached queue as a few preallocated PyTorch products per layer.

:class:`~.reference.CachedGenerator` is the oracle: about a dozen PyTorch calls per layer and sample, each allocating
its result, and the whole ``K``-tap conv per step. :class:`TorchGenerator` computes the same function from the weights
folded once by :mod:`.folding`, with every buffer allocated up front and every product written with ``out=``:

* each layer's inputs live in a time-major history ``(P + S, B, R)`` (``P = (K − 1)·d`` past rows, ``S`` new rows
  before the tail is moved to the front), written directly by the previous layer's residual product;
* a layer of dilation ``d > 1`` reads its past taps at least ``d`` steps after they were written, so for a block of
  ``n ≤ d`` steps (:func:`~.threads.past_blocks`) their products (``K − 1`` matrix products of ``n·B`` rows) plus
  the conditioning (mel, speaker, conv bias) are made at the block's first step; each step then adds only the newest
  tap, one ``addmm``;
* the gate writes ``z`` into one ``(B, L, G/2 + 1)`` row whose last column is 1, so the residual product carries its
  bias, and all layers' skips are one product at the end of the step;
* sampling is the head's own :meth:`~wavenet_dilated.nn.heads.Head.sample` on the step's logits and uniforms, so the
  uniforms are consumed exactly as by the reference.

Per layer and sample that is an ``addmm``, tanh, sigmoid, a product and the residual ``addmm``. Same samples for a seed
as the reference (categorical: identical classes; continuous heads: within rounding).

Examples:
    >>> gen = TorchGenerator(model)
    >>> state = gen.init_state(batch_size=1)
    >>> audio = gen.run(state, 8000, UniformStream(1, model.head.n_uniforms, torch.Generator().manual_seed(0)),
    ...                 cond=model.upsample(mel)[:, :, :8000])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import check_eval_mode, check_int, check_temperature
from ..wavenet import WaveNet
from .folding import RES_SCALE, fold, speaker_terms
from .reference import UniformStream
from .threads import auto_block, past_blocks

__all__ = ["TorchGenerator", "TorchState"]

#: steps whose conditioning is projected in one product, at batch 1 (fewer for larger batches: the buffer holds
#: ``chunk × B × L·G`` values)
CHUNK_STEPS = 256
#: the least new rows a layer's history holds before its tail is moved to the front (rounded up to its block)
HISTORY_ROWS = 256


@dataclass
class TorchState:
    """Everything a :class:`TorchGenerator` carries from one sample to the next; owned by the caller.

    Attributes:
        history: per layer ``(P + S, B, R)`` its inputs, time-major; step ``g`` is row ``P + g mod S``.
        past: per layer ``(n, B, G)`` the current block's pre-activations less the newest tap, or ``None`` for a layer
            that is not blocked (dilation 1, or a kernel of size 1).
        previous: ``(B,)`` the last generated sample, the next step's input.
        step: samples generated so far.
        rows / past_rows / tap_rows: views of ``history`` and ``past`` made once, so that a step indexes Python lists,
            not tensors: per layer each history row ``(B, R)``, each block row ``(B, G)`` (or ``None``), and for a
            layer that is not blocked the ``K`` taps ending at each row (``(1, K·R)`` at batch 1, else ``(B, K, R)``).
    """

    history: list[torch.Tensor]
    past: list[torch.Tensor | None]
    previous: torch.Tensor
    step: int = 0
    rows: list[list[torch.Tensor]] = field(default_factory=list, repr=False)
    past_rows: list[list[torch.Tensor] | None] = field(default_factory=list, repr=False)
    tap_rows: list[list[torch.Tensor | None] | None] = field(default_factory=list, repr=False)


class TorchGenerator:
    """The cached WaveNet queue in plain PyTorch with preallocated buffers and blocked past taps (module docstring).

    Args:
        model: a :class:`~wavenet_dilated.wavenet.WaveNet` in eval mode, any dtype and device.
        block: the most steps of one past-tap block (default: :func:`~.threads.auto_block` for the batch); 1 turns
            blocking off.

    Examples:
        >>> gen = TorchGenerator(model)
        >>> state = gen.init_state(2)
        >>> logits = gen.logits(state, inputs)       # teacher-forced, (2, out, T)
    """

    def __init__(self, model: WaveNet, block: int | None = None) -> None:
        check_eval_mode(model)
        if block is not None:
            check_int("block", block, minimum=1)
        self.model, self.block = model, block
        c = model.config
        self.L, self.R, self.G, self.K, self.H = (c.n_layers, c.residual_channels, c.gate_channels, c.kernel_size,
                                                  c.gate_channels // 2)
        self.dilations = list(c.dilations)
        w = fold(model)
        L, R, H, K = self.L, self.R, self.H, self.K
        # the dilated conv split into its newest tap (per step) and the older ones (per block), all transposed for
        # ``addmm(bias, rows, Wᵀ)``; taps are oldest first in the folded matrix
        self.w_conv = [m.T.contiguous() for m in w.conv]  # (K·R, G)
        self.w_new = [m[(K - 1) * R :] for m in self.w_conv]  # (R, G)
        self.w_old = [[m[(K - 1 - j) * R : (K - j) * R] for j in range(1, K)] for m in self.w_conv]  # offset j·d
        # residual: [√½·W_resᵀ; √½·b_res] (G/2 + 1, R), the bias read through z's constant last column
        self.w_res = [None if r is None else torch.cat([r.T, w.res_bias[i][None]]).contiguous()
                      for i, r in enumerate(w.res)]
        # every layer's skip 1×1 as one (L·(G/2 + 1), S) matrix, zero rows at the constant columns
        skip = torch.zeros(L, H + 1, c.skip_channels, dtype=w.skip_bias.dtype, device=w.skip_bias.device)
        for i, s in enumerate(w.skip):
            skip[i, :H] = s.T
        self.w_skip = skip.view(L * (H + 1), -1)
        self.skip_bias, self.conv_bias, self.cond_weight = w.skip_bias, w.conv_bias, w.cond_weight
        self.out1, self.out1_bias = w.out1.T.contiguous(), w.out1_bias
        self.out2, self.out2_bias = w.out2.T.contiguous(), w.out2_bias
        self.embed = w.embed  # (n_classes, R) or the input 1×1's (weight; bias)
        self.head = model.head
        self.dtype, self.device = w.skip_bias.dtype, w.skip_bias.device

    # ------------------------------------------------------------------------------------------------ state
    def _blocks(self, batch_size: int) -> list[int]:
        limit = self.block if self.block is not None else auto_block(self.model.config, batch_size)
        return [int(n) for n in past_blocks(self.dilations, self.K, False, limit)]

    def init_state(self, batch_size: int) -> TorchState:
        """Zeroed histories (silence before the first step, as the conv's left padding) for ``batch_size`` rows."""
        check_int("batch_size", batch_size, minimum=1)
        B, dt, dev = batch_size, self.dtype, self.device
        history, past = [], []
        for d, n in zip(self.dilations, self._blocks(B)):
            P = (self.K - 1) * d
            history.append(torch.zeros(P + self._new_rows(n), B, self.R, dtype=dt, device=dev))
            past.append(torch.zeros(n, B, self.G, dtype=dt, device=dev) if self._blocked(d) else None)
        head = self.head
        previous = torch.full((B,), head.silence(), dtype=torch.int64 if head.quantized else dt, device=dev)
        state = TorchState(history, past, previous)
        K, R = self.K, self.R
        for hist, p in zip(history, past):
            state.rows.append(list(hist.unbind(0)))
            state.past_rows.append(None if p is None else list(p.unbind(0)))
            taps = None
            if p is None:
                taps = [None if r < K - 1 else hist[r - K + 1 : r + 1] for r in range(hist.shape[0])]
                taps = [t if t is None else (t.view(1, K * R) if B == 1 else t.transpose(0, 1)) for t in taps]
            state.tap_rows.append(taps)
        return state

    def _blocked(self, dilation: int) -> bool:
        return self.K > 1 and dilation > 1

    @staticmethod
    def _new_rows(n: int) -> int:
        return n * math.ceil(HISTORY_ROWS / n)

    def _check_state(self, state: TorchState) -> int:
        if not isinstance(state, TorchState) or len(state.history) != self.L:
            raise ValueError(f"state must be a TorchState of this generator's model (init_state), found "
                             f"{type(state).__name__}")
        return state.previous.shape[0]

    # ------------------------------------------------------------------------------------------------ conditioning
    def _chunk(self, batch_size: int) -> int:
        return max(16, CHUNK_STEPS // batch_size)

    def constant_term(self, speaker_vec: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``(B, L·G)``: every layer's conv bias plus its speaker projection (when ``speaker_vec (B, C_spk, 1)``)."""
        constant = self.conv_bias.expand(batch_size, -1)
        if speaker_vec is not None:
            constant = constant + speaker_terms(self.model.blocks, speaker_vec.to(self.device, self.dtype))
        return constant

    def _project(self, out: torch.Tensor, cond: torch.Tensor | None, constant: torch.Tensor) -> None:
        """``out (n, B, L·G)`` ← the chunk's mel projection ``cond (B, C_mel, n)`` (or nothing) plus ``constant``."""
        if cond is None:
            out.copy_(constant.expand_as(out))
            return
        torch.matmul(cond.to(self.device, self.dtype).permute(2, 0, 1), self.cond_weight.T, out=out)
        out += constant

    # ------------------------------------------------------------------------------------------------ the step
    def _layout(self, state: TorchState) -> list[tuple[int, int, int]]:
        """Per layer ``(P, S, n)``: past rows, new rows and block steps of ``state``'s buffers."""
        out = []
        for d, hist, past in zip(self.dilations, state.history, state.past):
            P = (self.K - 1) * d
            out.append((P, hist.shape[0] - P, 1 if past is None else past.shape[0]))
        return out

    def _blocks_at(self, state: TorchState, g: int, proj: torch.Tensor, t: int,
                   layout: list[tuple[int, int, int]], layers: list[int]) -> None:
        """Before step ``g`` (row ``t`` of the chunk's conditioning ``proj (n, B, L·G)``): move full histories' tails to
        the front; for each blocked layer whose block starts here, the past-tap products plus the conditioning of the
        block's steps in this chunk; at the chunk's first step, the conditioning of the blocks in progress."""
        B, G = state.previous.shape[0], self.G
        for i in layers:
            P, S, n = layout[i]
            r = g % n
            if r and t:
                continue
            hist, past = state.history[i], state.past[i]
            if not r and g and g % S == 0:  # rows [S, S + P) → [0, P), in pieces that do not overlap
                for lo in range(0, P, S):
                    m = min(S, P - lo)
                    hist[lo : lo + m].copy_(hist[S + lo : S + lo + m])
            if past is None:
                continue
            if not r:
                row, d = P + g % S, self.dilations[i]
                flat = past.view(n * B, G)
                for j, w in enumerate(self.w_old[i], start=1):
                    taps = hist[row - j * d : row - j * d + n].view(n * B, self.R)
                    if j == 1:
                        torch.mm(taps, w, out=flat)
                    else:
                        flat.addmm_(taps, w)
            k = min(n - r, proj.shape[0] - t)
            past[r : r + k] += proj[t : t + k, :, i * G : (i + 1) * G]

    def _step(self, state: TorchState, g: int, proj_rows: list[torch.Tensor | None], v: dict,
              layout: list[tuple[int, int, int]]) -> torch.Tensor:
        """Step ``g``'s logits ``(B, out)`` from ``state.previous`` and, per layer, the step's conditioning row
        ``(B, G)`` (read by the layers that are not blocked); writes every layer's input for step ``g`` into its
        history. ``v`` holds the work buffers and their views (:meth:`_buffers`)."""
        h, ha, hb, ta, sb = v["h"], v["h_a"], v["h_b"], v["tanh"], v["sigmoid"]
        P, S, _ = layout[0]
        x = state.rows[0][P + g % S]
        if self.head.quantized:
            torch.index_select(self.embed, 0, state.previous, out=x)
        else:
            torch.addmm(self.embed[1], v["previous"], self.embed[:1], out=x)
        last = self.L - 1
        for i, (P, S, n) in enumerate(layout):
            row = P + g % S
            x = state.rows[i][row]
            past = state.past_rows[i]
            if past is not None:
                torch.addmm(past[g % n], x, self.w_new[i], out=h)
            else:  # dilation 1 (or a 1-tap kernel): the K newest rows are the taps
                taps = state.tap_rows[i][row]
                if taps.dim() == 3:
                    v["taps"].copy_(taps)
                    taps = v["taps_flat"]
                torch.addmm(proj_rows[i], taps, self.w_conv[i], out=h)
            torch.tanh(ha, out=ta)
            torch.sigmoid(hb, out=sb)
            torch.mul(ta, sb, out=v["z_gate"][i])
            if i < last:
                P1, S1, _ = layout[i + 1]
                torch.addmm(x, v["z_layer"][i], self.w_res[i], beta=RES_SCALE, out=state.rows[i + 1][P1 + g % S1])
        skips = torch.addmm(self.skip_bias, v["z_flat"], self.w_skip, out=v["skips"]).relu_()
        hidden = torch.addmm(self.out1_bias, skips, self.out1, out=v["hidden"]).relu_()
        return torch.addmm(self.out2_bias, hidden, self.out2, out=v["logits"])

    def _buffers(self, B: int) -> dict:
        """The step's work buffers for ``B`` rows and the fixed views of them that every step reads: the gate's
        halves, and per layer its row of ``z`` (``z``'s constant last column set to 1)."""
        dt, dev, H, S = self.dtype, self.device, self.H, self.model.config.skip_channels
        z = torch.zeros(B, self.L, H + 1, dtype=dt, device=dev)
        z[:, :, H] = 1.0
        shapes = {"h": (B, self.G), "tanh": (B, H), "sigmoid": (B, H), "taps": (B, self.K, self.R), "skips": (B, S),
                  "hidden": (B, S), "logits": (B, self.head.out_channels)}
        v = {k: torch.empty(s, dtype=dt, device=dev) for k, s in shapes.items()}
        v.update(z_flat=z.view(B, -1), h_a=v["h"][:, :H], h_b=v["h"][:, H:], taps_flat=v["taps"].view(B, -1),
                 z_layer=[z[:, i] for i in range(self.L)], z_gate=[z[:, i, :H] for i in range(self.L)])
        return v

    # ------------------------------------------------------------------------------------------------ loops
    @torch.no_grad()
    def _loop(self, state: TorchState, n_steps: int, cond: torch.Tensor | None, speaker_vec: torch.Tensor | None,
              on_logits, progress: tqdm | None = None) -> None:
        """Run ``n_steps`` steps; ``on_logits(t, logits)`` sets ``state.previous`` (sampling or teacher forcing)."""
        B = self._check_state(state)
        check_int("n_steps", n_steps, minimum=0)
        if cond is not None and (cond.dim() != 3 or cond.shape[0] != B or cond.shape[2] < n_steps):
            raise ValueError(f"cond must have shape ({B}, {self.model.config.cond_channels}, >= {n_steps}), found "
                             f"{tuple(cond.shape)}")
        if (cond is None) != (self.cond_weight is None):
            raise ValueError("this model is mel-conditioned: pass cond" if cond is None
                             else "this model is unconditioned: it takes no cond")
        layout, constant, chunk = self._layout(state), self.constant_term(speaker_vec, B), self._chunk(B)
        proj_buf = torch.empty(chunk, B, self.L * self.G, dtype=self.dtype, device=self.device)
        G, v = self.G, self._buffers(B)
        v["previous"] = state.previous.view(B, 1)  # a continuous model's input column (same dtype as the model)
        # per chunk row, the conditioning of the layers that are not blocked (the blocked ones read it per block)
        proj_rows = [[None if p is not None else proj_buf[t, :, i * G : (i + 1) * G] for i, p in enumerate(state.past)]
                     for t in range(chunk)]
        starts: dict[int, list[int]] = {}  # block length → its layers
        for i, (_, _, nb) in enumerate(layout):
            starts.setdefault(nb, []).append(i)
        for start in range(0, n_steps, chunk):
            n = min(chunk, n_steps - start)
            proj = proj_buf[:n]
            self._project(proj, None if cond is None else cond[:, :, start : start + n], constant)
            for t in range(n):
                g = state.step
                due = [i for nb, layers in starts.items() if t == 0 or g % nb == 0 for i in layers]
                if due:
                    self._blocks_at(state, g, proj, t, layout, due)
                on_logits(start + t, self._step(state, g, proj_rows[t], v, layout))
                state.step += 1
            if progress is not None:
                progress.update(n)

    def run(
        self,
        state: TorchState,
        n_steps: int,
        uniforms: UniformStream,
        cond: torch.Tensor | None = None,
        speaker_vec: torch.Tensor | None = None,
        temperature: float = 1.0,
        progress: tqdm | None = None,
    ) -> torch.Tensor:
        """Generate ``n_steps`` samples ``(B, n_steps)`` continuing ``state``, as
        :meth:`~.reference.CachedGenerator.run` (same arguments; ``cond`` the upsampled mel for exactly these steps)."""
        check_temperature(temperature)
        B = self._check_state(state)
        head = self.head
        out = torch.empty(B, n_steps, dtype=state.previous.dtype, device=self.device)
        u = uniforms.take(n_steps).to(self.device)

        def sample(t: int, logits: torch.Tensor) -> None:
            state.previous.copy_(head.sample(logits, u[t], temperature))
            out[:, t] = state.previous

        self._loop(state, n_steps, cond, speaker_vec, sample, progress)
        return out

    def logits(
        self,
        state: TorchState,
        inputs: torch.Tensor,
        cond: torch.Tensor | None = None,
        speaker_vec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits ``(B, out, T)`` of ``inputs (B, T)`` (already shifted right: ``inputs[:, 0]`` is fed
        at the state's next step), one step at a time; equals ``model(inputs, cond=cond)`` to rounding on a fresh
        state."""
        self.model.check_inputs(inputs)
        B, T = inputs.shape
        if B != self._check_state(state):
            raise ValueError(f"inputs have {B} rows, the state {state.previous.shape[0]}")
        out = torch.empty(B, self.head.out_channels, T, dtype=self.dtype, device=self.device)
        inputs = inputs.to(self.device)

        def force(t: int, logits: torch.Tensor) -> None:
            out[:, :, t] = logits
            if t + 1 < T:
                state.previous.copy_(inputs[:, t + 1])

        if T:
            state.previous.copy_(inputs[:, 0])
        self._loop(state, T, cond, speaker_vec, force)
        return out
