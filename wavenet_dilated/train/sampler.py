"""The order of training data: which crops make the batch of each step.

:class:`StepBatchSampler` yields, for each step, this process's ``(item index, epoch)`` keys, a function of
``(seed, step, rank)`` only, so a resumed run sees the batches the uninterrupted run would have seen;
:class:`EpochCrops` turns a key into the item with that epoch's crop.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.dataset import AudioDataset, mix_seed
from .config import TrainConfig

__all__ = ["EpochCrops", "StepBatchSampler", "train_loader"]


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(item index, epoch)`` keys whose content depends only on ``(seed, step, rank)``.

    The stream of items is an endless sequence of epochs, each a permutation of ``range(n_items)`` seeded from
    ``(seed, epoch)``. The global batch of step ``k`` is positions ``[k·B·W, (k+1)·B·W)`` of that stream (``B`` =
    ``batch_size`` per process, ``W`` = ``world_size``) and process ``rank`` takes its ``rank``-th slice of ``B`` — so
    one process with batch ``2B`` sees exactly the items two processes with batch ``B`` see, and a resumed run picks
    up at any step without replaying the ones before.

    Args:
        n_items: dataset size.
        batch_size: items per process and step.
        seed: data-order seed.
        start_step, end_step: yields the batches of steps ``start_step … end_step − 1``.
        rank, world_size: this process's shard.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, start_step: int, end_step: int, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, found {n_items}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), found {rank}")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_step, self.end_step = start_step, max(start_step, end_step)
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, list[int]] = {}  # the last few epochs' permutations (batches straddle epochs)

    def permutation(self, epoch: int) -> list[int]:
        """The order of items in ``epoch``."""
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.n_items, generator=g).tolist()
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This process's ``(index, epoch)`` keys for ``step``."""
        first = (step * self.world_size + self.rank) * self.batch_size
        keys = []
        for p in range(first, first + self.batch_size):
            epoch, pos = divmod(p, self.n_items)
            keys.append((self.permutation(epoch)[pos], epoch))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.end_step - self.start_step


class EpochCrops(Dataset):
    """``dataset[(index, epoch)]``: item ``index`` with the crop of ``epoch`` (see :meth:`AudioDataset.set_epoch`).

    Items are fetched one at a time in each process (main or worker), so selecting the epoch right before the fetch
    is safe.
    """

    def __init__(self, dataset: AudioDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def train_loader(
    dataset: AudioDataset, config: TrainConfig, start_step: int, end_step: int, rank: int = 0, world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:  # fmt: skip
    """The batches of steps ``start_step … end_step − 1`` of ``dataset`` for process ``rank`` (see
    :class:`StepBatchSampler`), with ``config``'s batch size, seed and worker count."""
    c = config
    sampler = StepBatchSampler(len(dataset), c.batch_size, c.seed, start_step, end_step, rank, world_size)
    # its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG, which would
    # shift the dropout stream of a resumed run (the batches themselves use no RNG state)
    generator = torch.Generator().manual_seed(mix_seed(c.seed, start_step, rank))
    return DataLoader(EpochCrops(dataset), batch_sampler=sampler, num_workers=c.num_workers,
                      collate_fn=dataset.collate_fn, pin_memory=pin_memory, generator=generator)
