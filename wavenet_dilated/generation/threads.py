"""Tuning the compiled CPU loop to this machine: past-tap blocks, thread counts, and what generators of a model share.

* :func:`past_blocks` / :func:`auto_block`: how many steps' products of a layer's past taps are made at once (a layer
  of dilation ``d`` reads its past taps at least ``d`` steps after they were made); :func:`rows_per_block`: the
  packed matrices' row blocks for a batch size;
* :func:`last_level_cache`, :func:`others_running`, :func:`max_threads`: what ``/sys`` and ``/proc`` say about the CPU;
* :class:`ThreadChooser`: one or two threads, slice by slice, from measured seconds per step;
* :func:`prepared`: per model, the folded and packed weights and the choosers' measurements, shared by its generators
  while its weights stay the same.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..wavenet import WaveNet

__all__ = [
    "PAST_BLOCK",
    "PAST_COLUMNS",
    "PAST_RY",
    "rows_per_block",
    "past_blocks",
    "auto_block",
    "last_level_cache",
    "max_threads",
    "others_running",
    "ThreadChooser",
    "Prepared",
    "prepared",
]

#: the most steps whose past-tap products are made in one matrix product when blocking is on (a layer of dilation
#: ``d`` can look ``d`` steps ahead); the best of 16, 32, 64 and 128 for ``ljspeech`` at batch 1 (benchmarks/README.md)
PAST_BLOCK = 32
#: the most columns (block × batch) of one past-tap product
PAST_COLUMNS = 256
#: 8-row vectors per packed block of the past-tap matrices (their products have ``block × batch`` columns)
PAST_RY = 2


def past_blocks(dilations, kernel_size: int, first_table: bool, limit: int) -> np.ndarray:
    """Per layer, the steps per block of precomputed past-tap products: ``min(d, limit)``, and 1 (not blocked) for a
    kernel of size 1 and for a first layer read from per-class tables (dilation 1 gives 1 by itself)."""
    blocks = np.array([min(d, limit) if kernel_size > 1 else 1 for d in dilations], np.int32)
    if first_table:
        blocks[0] = 1
    return blocks


def auto_block(config, batch: int) -> int:
    """The past-tap block limit for a batch: :data:`PAST_BLOCK`, fewer for large batches (at most
    :data:`PAST_COLUMNS` columns per block product, which bounds the ``block × B × G`` buffers), at least 2.

    The same rule has measured best for every preset so far (benchmarks/README.md), so ``config`` is not read.
    """
    del config
    return max(2, min(PAST_BLOCK, PAST_COLUMNS // max(batch, 1)))


def exchange_outputs(precision: str, batch: int, n_threads: int) -> bool:
    """Whether the threads exchange gate outputs (each then computes the whole residual product) rather than sum
    partial residual products after a barrier per layer (``WNModel.exchange``, ``csrc/worker.h``, ``csrc/sync.h``):
    with ``"w8a8"``, whose products are cheap next to the cores' round trips (a cache line per 60 int8 codes instead of
    a flag and then the partial sums); the weight-streaming precisions would read the rest of every residual matrix
    per step (measured with the exchange, 2 threads, ljspeech: fp32 batch 1 4,767 → 4,201 samples/s, batch 8
    11,231 → 10,446; int8 batch 8 10,770 → 9,912)."""
    del batch
    return precision == "w8a8" and n_threads > 1


def rows_per_block(batch: int) -> int:
    """8-row vectors per packed block for a batch: the micro-kernel keeps ``ry × columns`` accumulators in registers
    (the best of 1, 2, 4 and 8 measured per batch size in the generation loop)."""
    if batch == 1:
        return 8
    if batch == 2:
        return 4
    return 2


def last_level_cache() -> int:
    """Bytes of the CPU's largest cache (sysfs), or 8 MiB where it cannot be read."""
    sizes = []
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(root):
            if entry.startswith("index"):
                with open(os.path.join(root, entry, "size")) as f:
                    text = f.read().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                sizes.append(int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return max(sizes, default=8 << 20)


def max_threads() -> int:
    """The most threads the compiled loop uses by default: 2, fewer when torch or the machine allow fewer."""
    return max(1, min(2, torch.get_num_threads(), os.cpu_count() or 1))


def others_running() -> int | None:
    """Runnable threads on this machine besides the caller, from ``/proc/stat`` (``None`` where unavailable)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return max(0, int(line.split()[1]) - 1)
    except (OSError, ValueError):
        pass
    return None


class ThreadChooser:
    """Picks the kernel's thread count slice by slice from measured seconds per step.

    The threads meet at a barrier ~L times per sample. If the helper shares a core with someone else's work it is
    descheduled for whole time slices and every barrier waits for it (many times slower than one thread). So two
    threads are *tried* (first, and as a probe) only while ``/proc/stat`` shows an idle core for the helper; once
    measured faster they are kept unless every core has other work. The slower choice is re-measured after
    :attr:`PROBE_EVERY` slices, the interval doubling (up to :attr:`PROBE_MAX`) each time the probe loses.
    """

    PROBE_EVERY = 16
    PROBE_MAX = 1024

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.cost: dict[int, float] = {}  # seconds per step, running average
        self.calls = 0
        self.interval = self.PROBE_EVERY
        self.next_probe = self.PROBE_EVERY
        self._probing: int | None = None

    def _best(self) -> int:
        return self.max_threads if self.cost[self.max_threads] < self.cost[1] else 1

    def pick(self) -> int:
        m = self.max_threads
        if m == 1:
            return 1
        self.calls += 1
        others = others_running()
        cores = os.cpu_count() or 1
        if others is not None and others >= cores:
            return 1
        idle = others is None or others + m <= cores
        if m not in self.cost:
            return m if idle else 1
        if 1 not in self.cost:
            return 1
        best = self._best()
        if self.calls >= self.next_probe and (best == m or idle):
            self._probing = 1 if best == m else m
            return self._probing
        return best

    def measuring(self, threads: int) -> bool:
        """Whether the slice just picked measures ``threads`` (never measured yet, or a probe)."""
        return threads not in self.cost or self._probing == threads

    def record(self, threads: int, seconds_per_step: float) -> None:
        old = self.cost.get(threads)
        probe = self._probing == threads  # a probe re-measures: its value replaces the stale one
        self.cost[threads] = seconds_per_step if old is None or probe else 0.5 * (old + seconds_per_step)
        if probe:
            won = self._best() == threads
            self.interval = self.PROBE_EVERY if won else min(2 * self.interval, self.PROBE_MAX)
            self.next_probe = self.calls + self.interval
            self._probing = None


@dataclass
class Prepared:
    """What generators of one model share while its weights stay the same: the folded weights, their packings (per
    row-block size, thread count and block limit) and the thread choosers (per batch size and thread limit)."""

    key: tuple
    folded: Any
    packed: dict = field(default_factory=dict)
    choosers: dict = field(default_factory=dict)

    def chooser(self, batch: int, limit: int) -> ThreadChooser:
        """The thread chooser for ``batch`` rows and at most ``limit`` threads (created on first use)."""
        if (batch, limit) not in self.choosers:
            self.choosers[batch, limit] = ThreadChooser(limit)
        return self.choosers[batch, limit]


# Per model: its Prepared per weight precision, so that repeated generations (a CLI batch, a notebook loop) fold and
# pack the weights once and keep the thread measurements. Not functools.lru_cache (STYLE rule 10): that would hold the
# model strongly and never let it be collected, and the entry must be rebuilt when the same model's weights change
# (checked against _weights_key on every look-up). A WeakKeyDictionary keyed on the model does both; nothing in an entry
# refers back to the model.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(model: WaveNet) -> tuple:
    """Changes whenever any parameter or buffer is replaced or modified in place (``Tensor._version`` counts in-place
    writes: optimiser steps, ``load_state_dict``, ``torch.no_grad()`` edits)."""
    return tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape))
                 for t in itertools.chain(model.parameters(), model.buffers()))


def prepared(model: WaveNet, fold: Callable[..., Any], variant: str = "fp32") -> Prepared:
    """``model``'s shared :class:`Prepared` for one weight ``variant`` (a precision), with ``fold(model, variant)`` as
    its folded weights; folded again (and its packings and measurements dropped) when the model's weights have changed
    since."""
    key = _weights_key(model)
    entries = _PREPARED.setdefault(model, {})
    entry = entries.get(variant)
    if entry is None or entry.key != key:
        entry = Prepared(key, fold(model, variant))
        entries[variant] = entry
    return entry
