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

__all__ = ["Method", "full_precision"]


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """Context in which autocast is off, so that a loss is computed in float32."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


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
        self,
        views: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        """The training loss for one batch of views (d, N, C, H, W); a scalar.

        ``check`` allows checks that read values back from the device (W-MSE's
        non-finite and factorisation checks); the trainer turns it off on most GPU
        steps.
        """
        return self.embedding_loss(self.embed(views), generator, check)

    def embedding_loss(
        self,
        embeddings: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        """The loss from the views' embeddings (d, N, D); a scalar.

        Methods whose loss needs more than the embeddings (BYOL's target network)
        override :meth:`forward` instead.
        """
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Hook called after every optimizer step (e.g. an EMA update). Default: none."""
