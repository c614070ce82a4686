"""Multi-process helpers for ``torchrun``: one process group, rank queries and small collectives.

Everything here is a no-op (or the identity) when the process was not started by a launcher with
``WORLD_SIZE`` > 1, so single-process code paths stay exactly as they were. The backend is NCCL
when CUDA is available and gloo otherwise (CPU training, and CI).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as td

logger = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_initialized() -> bool:
    """True when this process is part of an initialised process group."""
    return td.is_available() and td.is_initialized()


def launched() -> bool:
    """True when a launcher (torchrun) asked for more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def backend_for(device_type: str | None = None) -> str:
    """``nccl`` for CUDA, ``gloo`` otherwise (``device_type`` None: CUDA if available)."""
    cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    return "nccl" if cuda and td.is_nccl_available() else "gloo"


def init_from_env(device_type: str | None = None) -> bool:
    """Join the process group described by torchrun's environment variables, once.

    Args:
        device_type: the device training will use (``cuda`` picks NCCL and binds this process to
            GPU ``LOCAL_RANK``); None decides from ``torch.cuda.is_available()``.

    Returns:
        True when running distributed (more than one process), False for a single process.
    """
    if is_initialized():
        return world_size() > 1
    if not launched():
        return False
    backend = backend_for(device_type)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
        td.init_process_group(backend=backend, device_id=torch.device("cuda", local_rank()))
    else:
        td.init_process_group(backend=backend)
    logger.info(
        "rank %d/%d (local %d) joined the %s process group",
        rank(),
        world_size(),
        local_rank(),
        backend,
    )
    return world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return td.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return td.get_rank() if is_initialized() else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, 0 by default)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0: the one process that writes files and prints."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Pin an index-less CUDA device to this process's GPU (``cuda`` → ``cuda:LOCAL_RANK``)."""
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", local_rank())
    return device


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    if is_initialized() and td.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place where possible); returns the summed tensor."""
    if not is_initialized() or world_size() == 1:
        return tensor
    buf = tensor.to(_comm_device())
    td.all_reduce(buf, op=td.ReduceOp.SUM)
    if buf is not tensor:
        tensor.copy_(buf.to(tensor.device))
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not is_initialized() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself for one process)."""
    if not is_initialized() or world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    td.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank."""
    if is_initialized() and world_size() > 1:
        td.barrier()


def cleanup() -> None:
    """Leave and destroy the process group (no-op without one)."""
    if is_initialized():
        td.destroy_process_group()
