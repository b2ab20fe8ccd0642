"""Generating audio: the reference generators and the fast paths.

Modules (import the one you need; this ``__init__`` imports none of them, so importing
:mod:`wavenet_dilated.generation.reference` never builds or loads the compiled kernel):

* :mod:`.reference` — the plain-PyTorch generators: naive (O(RF) per sample), the cached queue
  (:class:`~.reference.CachedGenerator`), streaming, :class:`~.reference.UniformStream` (the sampling's randomness);
  the oracle every fast path is tested against.
* :mod:`.folding` — the one weight folding: a WaveNet's layers as plain matrices (weight norm evaluated, biases, the
  √½ residual scale, ``skip_scale``, the first layer's per-class tables), for every fast path and the fused loss.
* :mod:`.fast` — backend choice and the entry points :func:`~.fast.fast_generate`, :func:`~.fast.fast_logits`.
* :mod:`.cpu` — the compiled CPU loop: :class:`~.cpu.FastState`, :class:`~.cpu.FastGenerator`.
* :mod:`.packing` — the folded weights as fp32 host arrays and packed into the kernel's aligned weight stream.
* :mod:`.threads` — tuning that loop to the machine: past-tap blocks, thread counts, the per-model prepared weights.
* :mod:`.cuda_graph` — :class:`~.cuda_graph.CudaGraphGenerator`, the step captured in a CUDA graph.
* :mod:`.torch_fast` — :class:`~.torch_fast.TorchGenerator`, the fallback where the kernel cannot run: plain PyTorch,
  preallocated buffers, blocked past taps.
* :mod:`.kernel`, :mod:`.abi`, ``csrc/`` — building and loading the C++ kernel; its structs' ctypes mirror.
"""
