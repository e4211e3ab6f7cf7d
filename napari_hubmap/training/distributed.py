"""DistributedDataParallel under torchrun: one process per device, gloo on CPU, nccl on CUDA.

``torchrun`` (``torch.distributed.run``) sets RANK / WORLD_SIZE / LOCAL_RANK; without them training is a
single process. Rank 0 validates, saves and reports; the others follow its decisions (broadcast).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def start(world: World, device: torch.device) -> None:
    """Join the process group; CPU ranks share the cores instead of each taking all of them."""
    if not world.distributed:
        return
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    else:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(world: World, value):
    """Rank 0's ``value`` on every rank (any picklable object made by our own code)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(world: World, value: float, device: torch.device) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal on every rank when DDP kept them in step."""
    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if p.dtype.is_floating_point and "running" not in name:
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather(world: World, value) -> list:
    if not world.distributed:
        return [value]
    out = [None] * world.size
    dist.all_gather_object(out, value)
    return out
