"""Process-group plumbing shared by distributed training and sharded evaluation.

advbench runs under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); without those variables everything here is a no-op for a single process, so the same
code path serves 1 and N processes. Backend: ``nccl`` for CUDA devices, ``gloo`` otherwise (CPU tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """LOCAL_RANK set by torchrun (0 otherwise): the GPU index of this process on its node."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0: the only process that writes to a run directory."""
    return rank() == 0


def default_backend(device: torch.device | str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: torch.device | str = "cpu", backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; False (and nothing done) for 1 process."""
    if env_world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or default_backend(device))
    return True


def shutdown() -> None:
    """Destroy the process group if this module's caller created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where small collective tensors live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (identity for one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (a stop request must reach all ranks)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@contextmanager
def process_group(device: torch.device | str = "cpu", backend: str | None = None) -> Iterator[bool]:
    """Initialise from the environment for the duration of a command, then tear down what it created."""
    created = not (dist.is_available() and dist.is_initialized()) and init_from_env(device, backend)
    try:
        yield is_distributed()
    finally:
        if created:
            shutdown()
