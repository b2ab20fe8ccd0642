"""Distributed data parallel helpers: thin wrappers over ``torch.distributed`` that are no-ops on one process.

Processes are launched by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`setup` reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without them (a plain
``python`` run) everything here behaves as a world of one: :func:`rank` is 0, :func:`is_main` is True, :func:`barrier`
and :func:`all_reduce_sum` do nothing.

Nothing here runs at import: the environment is read only when :func:`setup` is called.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main",
    "resolve_device",
    "setup",
    "teardown",
    "barrier",
    "all_reduce_sum",
    "all_gather_object",
]


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank of this process on its node, from torchrun's ``LOCAL_RANK`` (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """True on the process that logs, writes TensorBoard and saves checkpoints (global rank 0)."""
    return rank() == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, found {value!r}") from None


_DEVICE_CHOICES = "'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to train on: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``None`` for CUDA when available, else CPU.

    Raises:
        ValueError: any other name (``"tpu"``, ``"mps"``, a typo), CUDA asked for where there is none, or a GPU index
            this machine does not have. Checked before any work.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be {_DEVICE_CHOICES}, found {device!r}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as err:  # torch: "Expected one of cpu, cuda, … device type at start of …"
        raise ValueError(f"device must be {_DEVICE_CHOICES}, found {str(device)!r}") from err
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index not in (None, 0)):
        raise ValueError(f"device must be {_DEVICE_CHOICES}, found {str(device)!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available on this machine; use 'cpu'")
        n = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= n:
            raise ValueError(f"device {str(device)!r}: this machine has {n} GPU{'s' if n != 1 else ''} "
                             f"(cuda:0 to cuda:{n - 1})")  # fmt: skip
    return resolved


def setup(device: str | torch.device | None = None, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment and pick this process's device.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:N"`` or ``None`` (CUDA when available). Under torchrun with CUDA each
            process takes ``cuda:LOCAL_RANK``.
        timeout_minutes: how long collectives wait for a slow rank (e.g. rank 0 preprocessing) before failing.

    Returns:
        The ``torch.device`` this process trains on.

    Raises:
        ValueError: a device name :func:`resolve_device` refuses, or a torchrun environment that does not fit it.

    Without ``WORLD_SIZE`` > 1 in the environment no process group is created (a world of one). Calling it again once
    the group exists only returns the device.
    """
    device = resolve_device(device)
    n = _env_int("WORLD_SIZE") or 1
    if n > 1:
        r, lr = _env_int("RANK"), _env_int("LOCAL_RANK")
        if r is None or lr is None:
            raise ValueError(f"WORLD_SIZE={n} but RANK/LOCAL_RANK are not set: launch with torchrun")
        if device.type == "cuda":
            if lr >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK {lr} has no GPU: this node has {torch.cuda.device_count()}; "
                    "use --nproc_per_node at most the number of GPUs"
                )
            device = torch.device("cuda", lr)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    elif device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def teardown() -> None:
    """Leave the process group (if any); safe to call more than once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place and return it (unchanged on one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` on one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
