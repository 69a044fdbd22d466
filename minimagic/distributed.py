"""Data-parallel training with torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

`torchrun --nproc_per_node N -m minimagic train STAGE ...` starts N copies of the same command with RANK,
LOCAL_RANK and WORLD_SIZE set. Every copy draws the same global batch from the run's seeded generator and
keeps its own 1/N slice (`shard`): the role a DistributedSampler plays for a DataLoader, here for stages that
sample with a generator. DistributedDataParallel averages the gradients, so each optimizer step sees the
global batch, as one process would; and since the data position is the generator's state, which is the same
on every rank, `--resume` stays exact. The loss's own noise (timesteps, eps) is drawn per rank
(`loss_generator`). Rank 0 alone logs, previews and writes checkpoints.
"""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def setup(device: torch.device, batch_size: int) -> tuple[torch.device, int, int]:
    """Join torchrun's process group if there is one; return (this rank's device, rank, world size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return device, 0, 1
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} torchrun processes")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True on rank 0, and in a run without torchrun."""
    return not dist.is_initialized() or dist.get_rank() == 0


class StageLoss(nn.Module):
    """`stage.loss(model, batch, generator)` as a module's forward. DistributedDataParallel syncs the gradients
    of what runs inside its forward, so wrapping this (not the model) works whichever methods of the model a
    stage's loss calls: `model(...)`, `encode`/`decode`, `decode_video`."""

    def __init__(self, stage, model: nn.Module):
        super().__init__()
        self.model, self.stage = model, stage  # the stage is a plain object, not a submodule

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self.stage.loss(self.model, batch, generator)


def wrap(stage, model: nn.Module, device: torch.device) -> nn.Module:
    """The loss module, inside DistributedDataParallel when torchrun started this process."""
    loss = StageLoss(stage, model)
    if not dist.is_initialized():
        return loss
    return DistributedDataParallel(loss, device_ids=[device] if device.type == "cuda" else None)


def shard(batch: dict) -> dict:
    """This rank's slice of the global batch: every tensor's first axis (B) split into world-size parts."""
    if not dist.is_initialized():
        return batch
    rank, world_size = dist.get_rank(), dist.get_world_size()
    return {k: v.chunk(world_size)[rank] if torch.is_tensor(v) else v for k, v in batch.items()}


def loss_generator(generator: torch.Generator, step: int, micro_batch: int = 0) -> torch.Generator:
    """The generator for the loss's own draws (timesteps, noise). In one process, the run's generator. Under
    torchrun, a fresh one seeded from (run seed, step, micro-batch, rank): the ranks' noise is independent,
    and the run's generator, which draws the batches, is left alone, so it stays in step on every rank."""
    if not dist.is_initialized():
        return generator
    # mixes (seed, step, micro-batch, rank) with distinct prime factors: in practice one seed per draw and rank
    seed = ((generator.initial_seed() * 1_000_003 + step) * 1_009 + micro_batch) * 1_031 + dist.get_rank()
    return torch.Generator().manual_seed(seed % 2**63)


def mean(value: float, device: torch.device) -> float:
    """The mean of a number over all ranks (the loss of the global batch, for the log and the guard)."""
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def teardown() -> None:
    """Leave the process group once every rank is here: a gloo rank destroying its group while another still
    works (rank 0 saving the checkpoint) can abort the process at exit."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
