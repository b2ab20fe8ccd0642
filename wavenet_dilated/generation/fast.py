"""Generation at the hardware limit: choosing a fast backend, and the public entry points.

:class:`~.reference.CachedGenerator` is the plain-PyTorch reference: per sample and layer it makes about a dozen PyTorch
calls, each a few microseconds of dispatch, so at batch 1 it is bound by Python, not arithmetic. The fast paths compute
the same function (same weights, same uniforms, same inverse-CDF sampling) from the weights folded once by
:mod:`.folding`:

* ``"cpp"``: the compiled CPU loop, :class:`~.cpu.FastGenerator` (packing and state in :mod:`.cpu`, block and thread
  tuning in :mod:`.threads`, the kernel in :mod:`.kernel`);
* ``"cuda_graph"``: the step captured once in a CUDA graph and replayed per sample, :class:`~.cuda_graph.CudaGraphGenerator`;
* ``"torch"``: plain PyTorch on any device, a few preallocated products per layer with blocked past taps,
  :class:`~.torch_fast.TorchGenerator`.

When the compiled path cannot be used (no C++ compiler, channel counts that are not multiples of 8,
a non-fp32 model …) :func:`fast_generate` warns once with the reason and falls back to ``"torch"``.
"""

from __future__ import annotations

import warnings

import torch
from tqdm.auto import tqdm

from ..config import check_temperature
from ..wavenet import WaveNet
from . import kernel
from . import reference as gen_mod
from .cpu import FastGenerator, FastPathUnavailable, FastState, unsupported_reason
from .cuda_graph import CudaGraphGenerator
from .precision import check_precision, quantize_model
from .reference import UniformStream, _make_generator, _prepare
from .threads import PAST_BLOCK, PAST_COLUMNS, auto_block, last_level_cache, past_blocks
from .torch_fast import TorchGenerator

__all__ = [
    "FastPathUnavailable",
    "FastGenerator",
    "FastState",
    "CudaGraphGenerator",
    "fast_generate",
    "fast_logits",
    "generate",
    "available",
    "unsupported_reason",
    "auto_block",
    "past_blocks",
    "last_level_cache",
    "PAST_BLOCK",
    "PAST_COLUMNS",
    "BACKENDS",
]


#: ``backend`` values of :func:`fast_generate`: ``"auto"`` picks ``"cuda_graph"`` for a CUDA model, ``"cpp"`` on CPU,
#: and falls back to ``"torch"`` (the plain-PyTorch :class:`~.torch_fast.TorchGenerator`: preallocated buffers, blocked
#: past taps) with a warning when the pick cannot run here; ``"reference"`` is the
#: :class:`~.reference.CachedGenerator` every path is tested against.
BACKENDS = ("auto", "cpp", "cuda_graph", "torch", "reference")


def available() -> tuple[bool, str]:
    """Whether the compiled CPU kernel can be built and loaded here, and if not, why (builds it on first call)."""
    try:
        kernel.load_kernel()
    except kernel.KernelUnavailable as err:
        return False, str(err)
    return True, "ok"


# --------------------------------------------------------------------------------------------------- public API


def _notice(reason: str) -> None:
    warnings.warn(f"fast generation unavailable ({reason}); using the plain-PyTorch generator", RuntimeWarning,
                  stacklevel=3)


def _resolve(model: WaveNet, backend: str, threads: int | None = None,
             precision: str = "fp32") -> tuple[str, object | None]:
    """The backend to run and, for "cpp", its generator; "torch" with a warning when "auto" cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
    if precision == "w8a8" and backend not in ("auto", "cpp"):
        raise ValueError(f"precision 'w8a8' runs in the compiled CPU loop only (backend 'cpp' or 'auto'), not "
                         f"{backend!r}; 'int8' is the nearest precision every backend has")
    if backend in ("reference", "torch"):
        return backend, None
    on_cuda = next(model.parameters()).device.type == "cuda"
    if backend == "cuda_graph" or (backend == "auto" and on_cuda):
        if not on_cuda or not torch.cuda.is_available():
            reason = "the cuda_graph backend needs a CUDA model"
            if backend == "auto":
                _notice(reason)
                return "torch", None
            raise FastPathUnavailable(reason)
        return "cuda_graph", None
    try:
        return "cpp", FastGenerator(model, threads=threads, precision=precision)
    except FastPathUnavailable as err:
        if backend == "auto" and precision != "w8a8":
            _notice(str(err))
            return "torch", None
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
    precision: str = "fp32",
) -> torch.Tensor:
    """:func:`~wavenet_dilated.generation.generate` through the fast path: same arguments, same samples for a seed.

    Args:
        backend: ``"auto"`` (the compiled CPU loop, or a CUDA graph for a CUDA model; the plain-PyTorch ``"torch"``
            generator with a warning when neither can run), ``"cpp"``, ``"cuda_graph"`` (raise
            :class:`FastPathUnavailable` when they cannot run), ``"torch"`` or ``"reference"``.
        threads: threads of the compiled CPU loop (default: chosen as it runs, see :class:`FastGenerator`).
        precision: weights of the step matrices: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` (per-row scales; sums
            stay fp32). The reduced ones generate from :func:`~.precision.quantize_model` — on every backend, so the
            reference and CUDA-graph paths run that model in fp32. ``"w8a8"`` (int8 weights and activations) runs in
            the compiled CPU loop only: :class:`FastPathUnavailable` where it cannot run, ``ValueError`` for another
            backend.

    Returns:
        ``(B, n_samples)``: int64 μ-law classes (categorical) or floats in [−1, 1].
    """
    check_temperature(temperature)
    check_precision(precision)
    kind, fast = _resolve(model, backend, threads, precision)
    if precision != "fp32" and kind != "cpp":
        model = quantize_model(model, precision)
    if kind == "reference":
        return gen_mod.generate(model, n_samples, mel, speaker, batch_size, temperature, seed, generator, progress)
    # the compiled loop conditions at frame rate (FastGenerator.project_frames): no upsampled copy of the mel
    batch, n_samples, cond, speaker = _prepare(model, n_samples, mel, speaker, batch_size, kind != "cpp")
    uniforms = UniformStream(batch, model.head.n_uniforms, _make_generator(seed, generator))
    spk = model.speaker_vector(speaker, batch)
    cond = None if cond is None else cond[:, :, :n_samples]
    bar = tqdm(total=n_samples, unit="sample", unit_scale=True, desc="generating") if progress else None
    try:
        if kind == "cuda_graph":
            return CudaGraphGenerator(model, batch, temperature=temperature).run(n_samples, uniforms, cond, spk, bar)
        if kind == "torch":
            gen = TorchGenerator(model)
            return gen.run(gen.init_state(batch), n_samples, uniforms, cond, spk, temperature, bar)
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
    precision: str = "fp32",
) -> torch.Tensor:
    """Teacher-forced logits ``(B, out, T)`` computed one step at a time through the compiled loop.

    Equals ``model(inputs, mel, speaker)`` up to float rounding: the exactness check of the fast path (the analogue of
    :func:`~wavenet_dilated.generation.cached_logits`). ``backend="reference"`` runs the cached reference instead.
    ``precision`` as in :func:`fast_generate`: the reduced ones equal ``quantize_model(model, precision)``'s logits.
    """
    model.check_inputs(inputs)
    check_precision(precision)
    if backend == "reference":
        if precision == "w8a8":  # its activations are rounded in the forward only
            return quantize_model(model, precision)(inputs, mel=mel, speaker=speaker)
        if precision != "fp32":
            model = quantize_model(model, precision)
        return gen_mod.cached_logits(model, inputs, mel, speaker)
    if backend != "cpp":
        raise ValueError(f"fast_logits backend must be 'cpp' or 'reference', found {backend!r}")
    fast = FastGenerator(model, precision=precision)
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


#: the package's generator, ``wavenet_dilated.generate``: :func:`fast_generate`, i.e. the fastest exact backend here
#: (the same samples for a seed as the reference :func:`~wavenet_dilated.generation.reference.generate`, which stays
#: available as ``wavenet_dilated.reference_generate`` or ``backend="reference"``)
generate = fast_generate
