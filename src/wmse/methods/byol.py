"""BYOL: online network with a predictor, EMA target network, no negatives."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from wmse.config import RunConfig
from wmse.methods.base import Method, full_precision
from wmse.models import ProjectionHead

__all__ = ["BYOL", "byol_loss", "ema_rate"]


def ema_rate(step: int, total_steps: int, base: float = 0.99) -> float:
    """Target EMA rate at ``step``: rises from ``base`` to 1 on a cosine schedule."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1) / 2


def byol_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos`` between online predictions and the other views' targets.

    Args:
        online: (d, N, D) predictions; target: (d, N, D) target embeddings.

    Returns:
        Scalar, averaged over all ordered pairs of different views; float32.
    """
    num_views = online.shape[0]
    with full_precision(online):
        online = F.normalize(online.float(), dim=-1)
        target = F.normalize(target.float(), dim=-1)

        # All ordered pairs i != j: sum_i online_i . (sum_j target_j - target_i)
        others = target.sum(dim=0, keepdim=True) - target  # (d, N, D)
        cross = (online * others).sum(dim=-1)  # (d, N)
        mean_cos = cross.sum(dim=0).mean() / (num_views * (num_views - 1))
        return 2.0 - 2.0 * mean_cos


class BYOL(Method):
    """Online encoder, head and predictor regress the target's embedding of another view.

    The target (encoder and head) is an exponential moving average of the online ones,
    updated after every optimizer step, and never receives gradients. The loss is
    ``2 - 2 cos(predictor(online_i), target_j)`` averaged over all ordered pairs of
    different views (so symmetric in the views).
    """

    name = "byol"

    def __init__(self, encoder: nn.Module, head: nn.Module, config: RunConfig) -> None:
        super().__init__(encoder, head, config)
        dim = config.model.embedding_dim
        self.predictor = ProjectionHead(dim, config.model.head_hidden, dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_head = copy.deepcopy(head).requires_grad_(False)
        self.tau = config.loss.byol_tau

    def forward(
        self,
        views: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        num_views, num_images = views.shape[:2]
        flat = views.flatten(0, 1)  # (d*N, C, H, W)

        # Online predictions and target embeddings: (d, N, D) each.
        online = self.predictor(self.head(self.encoder(flat))).view(
            num_views, num_images, -1
        )
        with torch.no_grad():
            target = self.target_head(self.target_encoder(flat)).view(
                num_views, num_images, -1
            )
        return byol_loss(online, target)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """target <- rate * target + (1 - rate) * online, for parameters and buffers."""
        rate = ema_rate(step, total_steps, self.tau)
        self.last_rate = rate
        pairs = [(self.target_encoder, self.encoder), (self.target_head, self.head)]
        for target, online in pairs:
            for target_param, online_param in zip(
                target.parameters(), online.parameters()
            ):
                target_param.lerp_(online_param, 1.0 - rate)
            for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
                target_buffer.copy_(online_buffer)
