"""W-MSE: whitened embeddings of the views of an image pulled together."""

from __future__ import annotations

import torch

from wmse.distributed import gather_views
from wmse.loss import wmse_loss
from wmse.methods.base import Method

__all__ = ["WMSE"]


class WMSE(Method):
    """W-MSE d (d = ``config.loss.views``), with batch slicing by w_size and w_iter."""

    name = "wmse"

    def embedding_loss(
        self,
        embeddings: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        loss_config = self.config.loss

        # Across processes: whiten the global batch, exactly as one process would.
        if loss_config.whitening_scope == "global":
            embeddings = gather_views(embeddings)  # (d, world_size * N, D)
        return wmse_loss(
            embeddings,
            w_size=loss_config.w_size,
            w_iter=loss_config.w_iter,
            eps=loss_config.w_eps,
            generator=generator,
            dtype=getattr(torch, loss_config.whitening_precision),
            check=check,
        )
