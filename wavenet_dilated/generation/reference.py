"""Autoregressive generation: the naive reference and the cached Fast WaveNet queue.

* :func:`naive_generate` re-runs the teacher-forced network over the last receptive-field window for every sample:
  O(RF) work per sample, obviously right, the reference.
* :class:`CachedGenerator` keeps one ring buffer per layer holding exactly the past inputs its dilation needs
  (Paine et al., 2016): O(layers) work per sample. Its state (:class:`GenerationState`) belongs to the caller.
* :func:`generate` runs either for a fixed length or the length of a mel; :func:`stream_generate` takes mel frames chunk
  by chunk and yields audio as soon as it is final.

Randomness: all uniforms come from one :class:`UniformStream` over a seeded ``torch.Generator``, drawn in fixed blocks,
so naive, cached and streamed generation with the same seed produce the same samples whatever the chunking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..config import check_eval_mode, check_int, check_temperature
from ..mulaw import mu_law_decode
from ..nn.layers import ConvState
from ..wavenet import WaveNet
from .folding import cond_matrix, speaker_terms

__all__ = [
    "UniformStream",
    "GenerationState",
    "CachedGenerator",
    "naive_generate",
    "generate",
    "reference_generate",
    "stream_generate",
    "cached_logits",
    "to_waveform",
]

#: steps of uniforms drawn at once; part of the sampling definition (changing it changes samples for a seed)
UNIFORM_BLOCK = 4096
#: steps whose conditioning projections are computed in one matrix product
COND_CHUNK = 1024


class UniformStream:
    """Uniform random numbers for successive generation steps, ``(B, n_uniforms)`` per step.

    Drawn from ``generator`` in blocks of :data:`UNIFORM_BLOCK` steps, so the numbers for step ``t`` do not depend on how
    the caller splits the steps.
    """

    def __init__(self, batch_size: int, n_uniforms: int, generator: torch.Generator) -> None:
        self.batch_size, self.n_uniforms, self.generator = batch_size, n_uniforms, generator
        self._block = torch.empty(0, batch_size, n_uniforms)
        self._offset = 0

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` steps' uniforms, ``(n, B, n_uniforms)``."""
        parts, need = [], n
        while need > 0:
            if self._offset == self._block.shape[0]:
                self._block = self._draw()
                self._offset = 0
            k = min(need, self._block.shape[0] - self._offset)
            parts.append(self._block[self._offset : self._offset + k])
            self._offset += k
            need -= k
        return torch.cat(parts) if parts else self._block[:0]

    def _draw(self) -> torch.Tensor:
        """The next block, ``(UNIFORM_BLOCK, B, n_uniforms)``."""
        return torch.rand(UNIFORM_BLOCK, self.batch_size, self.n_uniforms, generator=self.generator)


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


@dataclass
class GenerationState:
    """Everything a generation carries from one sample to the next; owned by the caller.

    Attributes:
        layers: one ring buffer per residual block.
        previous: ``(B,)`` the last generated sample, the next step's input (silence before the first step).
        step: samples generated so far.
    """

    layers: list[ConvState]
    previous: torch.Tensor
    step: int = 0


class CachedGenerator:
    """Fast WaveNet generation for a trained :class:`WaveNet` (plain PyTorch; the reference fast path).

    Conditioning is projected for many steps at once: for each chunk of steps one matrix product computes every
    layer's mel projection (plus the constant speaker projection), and the per-sample loop only adds a column.

    Examples:
        >>> gen = CachedGenerator(model)
        >>> state = gen.init_state(batch_size=2)
        >>> logits = gen.step(state.previous, None, state)   # (2, n_classes)
    """

    def __init__(self, model: WaveNet) -> None:
        check_eval_mode(model)
        self.model = model
        blocks = model.blocks
        self.conditioned = model.config.cond_channels is not None or model.config.n_speakers is not None
        if model.config.cond_channels is not None:
            # (L·G, C_mel): all layers' 1×1 mel projections stacked, applied in one product per chunk
            self.cond_weight = cond_matrix(blocks)
        self.n_layers, self.gate_channels = len(blocks), model.config.gate_channels

    def init_state(self, batch_size: int) -> GenerationState:
        p = next(self.model.parameters())
        layers = [b.conv.init_state(batch_size, p.device, p.dtype) for b in self.model.blocks]
        head = self.model.head
        dtype = torch.int64 if head.quantized else p.dtype
        previous = torch.full((batch_size,), head.silence(), dtype=dtype, device=p.device)
        return GenerationState(layers, previous)

    def project(self, cond: torch.Tensor | None, speaker_vec: torch.Tensor | None, n_steps: int) -> torch.Tensor | None:
        """Per-layer conditioning ``(B, L, G, n)`` for a chunk: ``cond (B, C_mel, n)`` and/or ``speaker (B, C_spk, 1)``."""
        if not self.conditioned:
            return None
        out = None
        if cond is not None:
            out = torch.einsum("oc,bct->bot", self.cond_weight, cond)
        if speaker_vec is not None:
            g = speaker_terms(self.model.blocks, speaker_vec)[:, :, None]  # (B, L·G, 1)
            out = g.expand(-1, -1, n_steps) if out is None else out + g
        B = out.shape[0]
        return out.view(B, self.n_layers, self.gate_channels, n_steps)

    def step(self, inputs: torch.Tensor, cond_t: torch.Tensor | None, state: GenerationState) -> torch.Tensor:
        """Logits ``(B, out_channels)`` for the next sample, given the last sample ``inputs (B,)`` and this step's
        projected conditioning ``cond_t (B, L, G)`` (or None). Advances ``state.layers`` but not ``state.previous``."""
        model = self.model
        x = model.embed_inputs(inputs[:, None])  # (B, R, 1)
        skips = None
        for i, block in enumerate(model.blocks):
            c = None if cond_t is None else cond_t[:, i, :, None]
            x, s = block.step(x, state.layers[i], c)
            skips = s if skips is None else skips + s
        return model.output_logits(skips)[:, :, 0]

    def run(
        self,
        state: GenerationState,
        n_steps: int,
        uniforms: UniformStream,
        cond: torch.Tensor | None = None,
        speaker_vec: torch.Tensor | None = None,
        temperature: float = 1.0,
        progress: tqdm | None = None,
    ) -> torch.Tensor:
        """Generate ``n_steps`` samples ``(B, n_steps)``; ``cond`` is the upsampled mel for exactly these steps."""
        head = self.model.head
        out = []
        for start in range(0, n_steps, COND_CHUNK):
            n = min(COND_CHUNK, n_steps - start)
            proj = self.project(None if cond is None else cond[:, :, start : start + n], speaker_vec, n)
            u = uniforms.take(n)
            for t in range(n):
                logits = self.step(state.previous, None if proj is None else proj[:, :, :, t], state)
                state.previous = head.sample(logits, u[t], temperature).to(state.previous.dtype)
                state.step += 1
                out.append(state.previous)
            if progress is not None:
                progress.update(n)
        if not out:
            return state.previous.new_empty(state.previous.shape[0], 0)
        return torch.stack(out, dim=1)


def _prepare(
    model: WaveNet,
    n_samples: int | None,
    mel: torch.Tensor | None,
    speaker: torch.Tensor | int | None,
    batch_size: int | None,
    upsample: bool = True,
) -> tuple[int, int, torch.Tensor | None, torch.Tensor | None]:
    """Validate the request; return (batch, n_samples, upsampled cond or None, speaker ids or None).

    ``upsample=False`` skips the upsampling (cond is then None) for callers that condition at frame rate."""
    check_eval_mode(model)
    c = model.config
    cond = None
    if c.cond_channels is not None:
        if mel is None:
            raise ValueError("this model is mel-conditioned: pass mel (batch, bins, frames)")
        model.check_mel(mel)
        batch = mel.shape[0]
        total = mel.shape[2] * c.hop_length
        if n_samples is None:
            n_samples = total
        elif n_samples > total:
            raise ValueError(f"n_samples ({n_samples}) exceeds what the mel covers ({total})")
        if upsample:
            cond = model.upsample(mel.to(next(model.parameters()).device))
    else:
        if mel is not None:
            raise ValueError("this model is unconditioned: it takes no mel")
        if n_samples is None:
            raise ValueError("pass n_samples for an unconditioned model")
        batch = batch_size or 1
    if batch_size is not None and batch_size != batch:
        raise ValueError(f"batch_size {batch_size} disagrees with the mel's batch {batch}")
    check_int("n_samples", n_samples, minimum=0)
    if speaker is not None:
        speaker = torch.as_tensor(speaker, dtype=torch.int64)
        if speaker.dim() == 0:
            speaker = speaker.expand(batch)
    return batch, n_samples, cond, speaker


@torch.no_grad()
def generate(
    model: WaveNet,
    n_samples: int | None = None,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | int | None = None,
    batch_size: int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Generate with the cached queue.

    Args:
        model: a WaveNet in eval mode.
        n_samples: samples to generate; default (and maximum) for a conditioned model is ``frames · hop_length``.
        mel: ``(B, C_mel, F)`` normalised log-mel for a conditioned model.
        speaker: ``(B,)`` ids or one int for all rows.
        batch_size: rows for an unconditioned model (default 1).
        temperature: > 0; divides logits (categorical) or scales the spread (mol, gaussian).
        seed / generator: randomness; the same seed gives the same samples.
        progress: show a tqdm bar.

    Returns:
        ``(B, n_samples)``: int64 μ-law classes (categorical) or floats in [−1, 1]; see :func:`to_waveform`.
    """
    check_temperature(temperature)
    batch, n_samples, cond, speaker = _prepare(model, n_samples, mel, speaker, batch_size)
    gen = CachedGenerator(model)
    state = gen.init_state(batch)
    uniforms = UniformStream(batch, model.head.n_uniforms, _make_generator(seed, generator))
    spk = model.speaker_vector(speaker, batch)
    bar = tqdm(total=n_samples, unit="sample", unit_scale=True, desc="generating") if progress else None
    try:
        cond = None if cond is None else cond[:, :, :n_samples]
        return gen.run(state, n_samples, uniforms, cond, spk, temperature, bar)
    finally:
        if bar is not None:
            bar.close()


#: the reference generator under its public name (``wavenet_dilated.generate`` is the fast one)
reference_generate = generate


@torch.no_grad()
def naive_generate(
    model: WaveNet,
    n_samples: int | None = None,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | int | None = None,
    batch_size: int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Reference generation: for every sample, run the whole network over the last ``receptive_field`` inputs.

    Same arguments and same samples for the same seed as :func:`generate`, at O(RF) cost per sample.
    """
    check_temperature(temperature)
    batch, n_samples, cond, speaker = _prepare(model, n_samples, mel, speaker, batch_size)
    head = model.head
    uniforms = UniformStream(batch, head.n_uniforms, _make_generator(seed, generator))
    p = next(model.parameters())
    dtype = torch.int64 if head.quantized else p.dtype
    inputs = torch.full((batch, n_samples + 1), head.silence(), dtype=dtype, device=p.device)
    rf = model.receptive_field
    steps = tqdm(range(n_samples), unit="sample", desc="naive generation") if progress else range(n_samples)
    for t in steps:
        lo = max(0, t - rf + 1)
        window_cond = None if cond is None else cond[:, :, lo : t + 1]
        logits = model(inputs[:, lo : t + 1], speaker=speaker, cond=window_cond)[:, :, -1]
        inputs[:, t + 1] = head.sample(logits, uniforms.take(1)[0], temperature).to(dtype)
    return inputs[:, 1:]


@torch.no_grad()
def stream_generate(
    model: WaveNet,
    mel_chunks: Iterable[torch.Tensor],
    speaker: torch.Tensor | int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Vocode a mel that arrives chunk by chunk; yield ``(B, n)`` sample chunks as soon as they are final.

    A sample is final once every mel frame that can influence its conditioning has arrived
    (:attr:`WaveNet.mel_context_frames` frames past its own). Concatenating the yielded chunks gives the same samples
    as :func:`generate` on the whole mel with the same seed.
    """
    check_temperature(temperature)
    if model.config.cond_channels is None:
        raise ValueError("stream_generate vocodes a mel: this model is unconditioned (use generate)")
    hop, margin = model.config.hop_length, model.mel_context_frames
    gen, state, uniforms, spk, mel = CachedGenerator(model), None, None, None, None
    for chunk in mel_chunks:
        model.check_mel(chunk)
        mel = chunk if mel is None else torch.cat([mel, chunk], dim=2)
        if state is None:
            batch, _, _, speaker = _prepare(model, 0, mel, speaker, None)
            state = gen.init_state(batch)
            uniforms = UniformStream(batch, model.head.n_uniforms, _make_generator(seed, generator))
            spk = model.speaker_vector(speaker, batch)
        ready = max(0, mel.shape[2] - margin) * hop
        if ready > state.step:
            yield _stream_chunk(model, gen, state, uniforms, spk, mel, ready, temperature)
    if mel is not None and mel.shape[2] * hop > state.step:
        yield _stream_chunk(model, gen, state, uniforms, spk, mel, mel.shape[2] * hop, temperature)


def _stream_chunk(model, gen, state, uniforms, spk, mel, until, temperature) -> torch.Tensor:
    hop, margin = model.config.hop_length, model.mel_context_frames
    first = max(0, state.step // hop - margin)  # enough left context that the window's edge cannot reach our samples
    cond = model.upsample(mel[:, :, first:])
    offset = first * hop
    return gen.run(state, until - state.step, uniforms, cond[:, :, state.step - offset : until - offset], spk,
                   temperature)


@torch.no_grad()
def cached_logits(
    model: WaveNet,
    inputs: torch.Tensor,
    mel: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced logits ``(B, out, T)`` computed one step at a time through the cached queue.

    Equals ``model(inputs, mel, speaker)`` up to float rounding; this is the exactness check of the generator.
    """
    model.check_inputs(inputs)
    B, T = inputs.shape
    cond = model.upsample(mel) if mel is not None else None
    gen = CachedGenerator(model)
    state = gen.init_state(B)
    spk = model.speaker_vector(speaker, B)
    out = []
    for start in range(0, T, COND_CHUNK):
        n = min(COND_CHUNK, T - start)
        proj = gen.project(None if cond is None else cond[:, :, start : start + n], spk, n)
        for t in range(n):
            out.append(gen.step(inputs[:, start + t], None if proj is None else proj[:, :, :, t], state))
    return torch.stack(out, dim=2)


def to_waveform(samples: torch.Tensor, model: WaveNet) -> torch.Tensor:
    """Generated samples → float waveform in [−1, 1] (μ-law decoding for a categorical model)."""
    if model.head.quantized:
        return mu_law_decode(samples, model.config.n_classes)
    return samples.float()
