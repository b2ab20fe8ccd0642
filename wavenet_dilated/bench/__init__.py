"""Measure generation and training speed on this machine against its ceilings and the performance targets.

For each model preset (or :class:`~wavenet_dilated.wavenet.WaveNetConfig`), :func:`run_bench` measures

* **FLOPs per generated sample** (the model, not the implementation): per layer ``2·(k·R·G + (G/2)·(R + S))``
  (dilated conv over ``k`` taps, then the skip and residual 1×1s on the gated ``G/2`` channels), plus the conditioning
  projection ``2·C_mel·G`` per layer when mel-conditioned, plus the output layers ``2·(S·S + S·n_out)``. A speaker
  projection is constant over time and costs nothing per sample.
* **this machine's limits** at the model's sizes, fp32: matrix-vector (``torch.mv`` over every layer's weights in turn,
  the working set of one batch-1 step) and matrix-matrix (``torch.mm`` of the conv weight by 4096 columns) GFLOP/s,
  and the samples/s they would allow (``GFLOP/s ÷ FLOPs per sample``);
* **generation** samples/s (all rows together) at each batch size for
  ``naive`` (the receptive-field recompute of :func:`~wavenet_dilated.generation.naive_generate`, measured at its steady
  state: one teacher-forced forward over the last ``RF`` inputs per sample), ``cached`` (the plain-PyTorch reference
  queue, ``fast_generate(backend="reference")``), ``fallback`` (what ``fast_generate`` runs without the kernel,
  ``backend="torch"``) and ``fast`` (:func:`~wavenet_dilated.generation.fast.fast_generate`
  end to end: ``fast_auto`` with the thread count chosen as it runs, ``fast_1t``, ``fast_2t`` fixed; ``fast`` repeats
  the best of them), each with the achieved GFLOP/s, the real-time factor (``RTF`` = compute time ÷ duration of the
  audio generated, as ``wavenet-dilated sample`` prints it: below 1 is faster than real time) at the model's sample
  rate, and the share of its ceiling reached;
* **naive growth**: naive vs cached samples/s as the receptive field grows with the number of stacks (1, 2, 3 …);
* **training** samples/s for batch 2 × 8192 (forward + backward + Adam step, fp32), through ``model.loss`` and through
  :func:`~wavenet_dilated.train.fused_loss.fused_loss`;
* **the machine's ceilings** (:func:`machine_limits`): fp32 FMA GFLOP/s and read GB/s from DRAM and from the last-level
  cache, per thread count, measured by code of the same kind as the compiled generation loop (:func:`stream_gbps`
  measures the read rate of exactly the bytes a step reads);
* **targets** (:data:`TARGETS`, the performance issue's): per target row the measured value, whether it is met (a
  relative target needs a reference JSON: ``baseline``, another build's ``bench --json``; ``peer``, another
  implementation's numbers), and the ceiling the machine allows with what sets it: FLOPs at the FMA peak against
  :func:`weight_bytes_per_step` read at :func:`stream_gbps` (generation), or 3 × the forward FLOPs at the FMA peak
  (training).

Every number is the median of several timed calls after one warm-up call, the same in quick and full runs. Beside each
one the benchmark records the CPU time *other* processes used meanwhile (``others_cores``, from ``/proc/stat``): above
:data:`~.machine.LOADED_CORES` the measurement is ``loaded``, its numbers understate the machine, it is not compared
with its ceiling, and the report says so. Models are presets, configs or checkpoint files (``checkpoints=``).

The package: :mod:`.machine` (this machine's ceilings, through the compiled library of
``generation/csrc/bench.cpp``), :mod:`.measure` (the measurements and :func:`run_bench`), :mod:`.report` (targets
and :func:`format_table`).

Examples:
    >>> result = run_bench(presets=("small",), quick=True)
    >>> print(format_table(result))
"""

from .machine import LOADED_CORES, LoadMeter, machine_limits, machine_throughput, stream_gbps
from .measure import SAMPLE_RATE, flops_per_sample, run_bench
from .report import (  # noqa: F401  (_bound: the tests reach it)
    RTF_CONVENTION,
    TARGETS,
    _bound,
    format_table,
    read_reference,
    weight_bytes_per_step,
)

__all__ = ["LOADED_CORES", "LoadMeter", "RTF_CONVENTION", "SAMPLE_RATE", "TARGETS", "flops_per_sample",
           "format_table", "machine_limits", "machine_throughput", "read_reference", "run_bench", "stream_gbps",
           "weight_bytes_per_step"]
