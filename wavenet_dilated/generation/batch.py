"""Generating many utterances of different lengths at once, each exactly as if it were generated alone.

A batch of ``B`` rows normally shares one random stream (:class:`~.reference.UniformStream`) and one mel length, so a
row's samples depend on its neighbours. Here every row has its own stream, seeded like a one-row generation
(:class:`RowUniforms`), and its own conditioning, computed from its own mel alone; rows shorter than the longest are
generated past their end and cut. Row ``i`` therefore equals ``generate(model, mel=mels[i][None], seed=seeds[i])``
for the same backend, which is what lets a vocoding job batch by length for throughput without changing a sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..config import check_temperature
from ..wavenet import WaveNet
from .reference import UNIFORM_BLOCK, CachedGenerator, UniformStream, _make_generator

__all__ = ["RowUniforms", "generate_rows"]


class RowUniforms(UniformStream):
    """Per-row uniform streams: :class:`~.reference.UniformStream` whose block for row ``i`` is drawn from
    ``generators[i]`` with the shape a one-row stream uses, so each row's numbers are those of a one-row generation
    with that generator's seed."""

    def __init__(self, n_uniforms: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__(len(generators), n_uniforms, generators[0])
        self.generators = list(generators)

    def _draw(self) -> torch.Tensor:
        return torch.cat([torch.rand(UNIFORM_BLOCK, 1, self.n_uniforms, generator=g) for g in self.generators], dim=1)


def _check_mels(model: WaveNet, mels: Sequence[torch.Tensor]) -> None:
    if model.config.cond_channels is None:
        raise ValueError("generate_rows vocodes mels: this model is unconditioned")
    if not mels:
        raise ValueError("generate_rows needs at least one mel")
    for i, mel in enumerate(mels):
        if not isinstance(mel, torch.Tensor) or mel.dim() != 2:
            shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"mel {i}: expected a tensor of shape (n_mels, frames), found {shape}")
        model.check_mel(mel[None])


def _speakers(model: WaveNet, speaker: torch.Tensor | int | None, batch: int) -> torch.Tensor | None:
    if speaker is None:
        return model.speaker_vector(None, batch)
    ids = torch.as_tensor(speaker, dtype=torch.int64)
    return model.speaker_vector(ids.expand(batch) if ids.dim() == 0 else ids, batch)


@torch.no_grad()
def generate_rows(
    model: WaveNet,
    mels: Sequence[torch.Tensor],
    seeds: Sequence[int | None],
    speaker: torch.Tensor | int | None = None,
    temperature: float = 1.0,
    progress: tqdm | None = None,
    backend: str = "auto",
    precision: str = "fp32",
) -> list[torch.Tensor]:
    """Generate one row per mel in a single batch; row ``i`` equals a one-row generation of ``mels[i]`` with
    ``seeds[i]`` on the same backend.

    Args:
        model: a mel-conditioned WaveNet in eval mode.
        mels: normalised log-mels ``(n_mels, F_i)``, any lengths.
        seeds: one per mel (``None`` = fresh randomness for that row).
        speaker: one id for every row or ``(B,)`` ids.
        progress: an open tqdm bar, advanced by the samples generated for real rows (not the padding past an end).
        backend, precision: as :func:`~.fast.fast_generate`.

    Returns:
        ``[(F_i · hop_length,)]``: int64 μ-law classes (categorical) or floats in [−1, 1].
    """
    from . import fast  # deferred: fast imports the compiled path's modules
    from .precision import check_precision, quantize_model

    check_temperature(temperature)
    check_precision(precision)
    _check_mels(model, mels)
    if len(seeds) != len(mels):
        raise ValueError(f"generate_rows needs one seed per mel: {len(mels)} mels, {len(seeds)} seeds")
    hop = model.config.hop_length
    lengths = [m.shape[1] * hop for m in mels]
    batch, n = len(mels), max(lengths)
    uniforms = RowUniforms(model.head.n_uniforms, [_make_generator(s, None) for s in seeds])
    spk = _speakers(model, speaker, batch)
    device = next(model.parameters()).device
    kind, gen = fast._resolve(model, backend, precision=precision)
    if precision != "fp32" and kind != "cpp":  # as fast_generate: the other backends run the quantised model
        model = quantize_model(model, precision)
    bar = _RealSamples(progress, lengths)
    if kind == "cpp":
        frames = [fast._frames(model, m[None]) for m in mels]
        out = gen.run(gen.init_state(batch), n, uniforms, None, spk, temperature, bar, frames=frames)
    else:  # upsampled per row, then padded: the padding is only read past a row's end
        cond = torch.zeros(batch, model.config.cond_channels, n, device=device)
        for i, m in enumerate(mels):
            cond[i, :, : lengths[i]] = model.upsample(m[None].to(device))[0]
        if kind == "cuda_graph":
            out = fast.CudaGraphGenerator(model, batch, temperature=temperature).run(n, uniforms, cond, spk, bar)
        else:
            ref = fast.TorchGenerator(model) if kind == "torch" else CachedGenerator(model)
            out = ref.run(ref.init_state(batch), n, uniforms, cond, spk, temperature, bar)
    return [out[i, : lengths[i]].cpu() for i in range(batch)]


class _RealSamples:
    """Advances a bar by the samples of rows still within their length (padding past a row's end is not work done)."""

    def __init__(self, bar: tqdm | None, lengths: list[int]) -> None:
        self.bar, self.lengths, self.step = bar, sorted(lengths), 0

    def update(self, n: int) -> None:
        start, self.step = self.step, self.step + n
        if self.bar is not None:
            self.bar.update(sum(max(0, min(self.step, t) - start) for t in self.lengths))
