"""The small interface every self-supervised method implements.

A method owns its trainable parts (the encoder and head it is given, plus anything of
its own such as a predictor or an EMA target), turns the views of a batch into a loss,
and may update non-gradient state after each optimizer step. A new method is one new
module with one subclass registered in ``wmse.methods.METHODS``.
"""

from __future__ import annotations

import torch
from torch import nn

from wmse.config import RunConfig

__all__ = ["Method"]


class Method(nn.Module):
    """Base class: encoder + projection head + a loss on the views' embeddings.

    Args:
        encoder: Maps (B, C, H, W) images to (B, F) features.
        head: Maps (B, F) features to (B, D) embeddings.
        config: The run's configuration (loss settings are read from ``config.loss``).
    """

    name = "base"

    def __init__(self, encoder: nn.Module, head: nn.Module, config: RunConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.config = config

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Embed all views as one batch (one BatchNorm statistic over all views).

        Args:
            views: (d, N, C, H, W) float images.

        Returns:
            (d, N, D) embeddings.
        """
        num_views, num_images = views.shape[:2]
        flat = views.flatten(0, 1)  # (d*N, C, H, W)
        embeddings = self.head(self.encoder(flat))  # (d*N, D)
        return embeddings.view(num_views, num_images, -1)

    def forward(
        self, views: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The training loss for one batch of views (d, N, C, H, W); a scalar."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Hook called after every optimizer step (e.g. an EMA update). Default: none."""
