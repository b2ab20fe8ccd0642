"""Run by tests/test_train.py under torchrun: train on a cache and dump this rank's weights at given steps.

    python -m torch.distributed.run --nproc_per_node=2 tests/_ddp_worker.py CACHE OUT DUMP SPEC_JSON

``SPEC_JSON``: ``{"model": asdict(WaveNetConfig), "train": asdict(TrainConfig), "steps": [1, 3]}``; writes
``DUMP/rank{r}_step{s}.pt`` (the model's state_dict) after each of ``steps``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from wavenet_dilated.train import TrainConfig, Trainer
from wavenet_dilated.train import distributed as dist
from wavenet_dilated.wavenet import WaveNetConfig


def main() -> None:
    cache, out, dump, spec_json = sys.argv[1:5]
    spec = json.loads(spec_json)
    torch.set_num_threads(1)  # two processes on two cores
    trainer = Trainer(WaveNetConfig.from_dict(spec["model"]), TrainConfig.from_dict(spec["train"]), cache, out)
    try:
        for until in spec["steps"]:
            trainer.fit(until_step=until, progress=False)
            torch.save(trainer.model.state_dict(), Path(dump) / f"rank{dist.rank()}_step{until}.pt")
    finally:
        dist.teardown()


if __name__ == "__main__":
    main()
