"""PyTorch DDP under torchrun: NCCL on GPUs, gloo on CPU. A plain run is a world of one.

    torchrun --nproc_per_node 2 -m mscg train ...

Every rank reads the inputs and trains on its shard (DistributedSampler); rank 0 alone writes.
`--batch-size` is per process: the global batch is world size x batch size.
"""

from __future__ import annotations

import atexit
import os
import time

import torch
import torch.distributed as dist

from mscg.devices import default_device, resolve_device  # noqa: F401  (training resolves --device too)


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op for a plain run).

    With GPUs: NCCL for CUDA tensors (gradients) and gloo for CPU tensors (metric sums, small
    broadcasts), so collectives work whatever device a tensor lives on; without: gloo. The group is
    destroyed at exit (see `_destroy`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group(backend="gloo")
        atexit.register(_destroy)


def _destroy() -> None:
    """Destroy the process group, then give gloo's worker threads the GIL before the interpreter shuts down.

    A gloo worker thread frees each finished collective's tensors itself, and that takes the GIL. A group
    that a DDP model has used outlives `destroy_process_group` (its threads keep running, even after the
    model is freed), so when a process exits straight after its last collective, such a thread can ask
    for the GIL during interpreter finalisation, and the process aborts ("terminate called without an
    active exception") after its work is done: pytorch/pytorch#179291, unfixed upstream. Sleeping
    releases the GIL to those threads first; a busy 2-core machine aborted 2 runs in 20 without it,
    none in 40 with it.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(0.2)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def shard(n: int) -> range:
    """This rank's share of range(n) (strided, so every rank gets a similar mix)."""
    return range(rank(), n, world_size())
