"""Multi-process training helpers (torch.distributed), used when launched by torchrun.

Whitening across ranks comes in two modes (``--whitening-scope``):
- ``global``: every rank's embeddings are gathered, with gradients, so the batch is
  sliced and whitened exactly as on one process with the same global batch. Every rank
  then computes the same loss; the gather's backward sums the gradients of all ranks
  and DistributedDataParallel averages them, which gives the single-process gradient.
- ``local``: each rank whitens its own sub-batches, as the paper's code did on one
  device; a rank's rows per view must then exceed D.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

__all__ = ["DistributedContext", "gather_views", "init_distributed"]

logger = logging.getLogger(__name__)


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, metrics and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group that torchrun describes in the environment.

    Uses NCCL on GPUs and gloo on the CPU. Without torchrun's variables (or with one
    process) nothing is initialised and a single-process context is returned.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("joined %s process group, %d processes", backend, world_size)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def gather_views(embeddings: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's embeddings along the image axis, keeping gradients.

    Args:
        embeddings: (d, n, D) on this rank; n must be equal on all ranks.

    Returns:
        (d, world_size * n, D): rank 0's images first, then rank 1's, and so on.
    """
    if (
        not (dist.is_available() and dist.is_initialized())
        or dist.get_world_size() == 1
    ):
        return embeddings
    parts = dist_fn.all_gather(embeddings.contiguous())  # world_size x (d, n, D)
    return torch.cat(parts, dim=1)
