"""The no-whitening ablation: W-MSE's loss without the whitening step.

With nothing to spread the embeddings apart, the cheapest way to make every pair of
views agree is to map every image to the same point; the embeddings collapse and their
effective rank falls towards 1. Run it to see why whitening matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmse.methods.base import Method, full_precision

__all__ = ["NoWhiten", "normalized_mse_loss"]


def normalized_mse_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos`` between the views of each image, averaged over the d(d-1)/2 pairs.

    Args:
        embeddings: (d, N, D).
    """
    num_views = embeddings.shape[0]
    with full_precision(embeddings):
        unit = F.normalize(embeddings.float(), dim=-1)  # (d, N, D)

        # Sum of pairwise cosines from the squared norm of the sum of unit vectors.
        pair_cos_sum = (unit.sum(dim=0).pow(2).sum(dim=-1) - num_views) / 2  # (N,)
        num_pairs = num_views * (num_views - 1) / 2
        return 2.0 - 2.0 * pair_cos_sum.mean() / num_pairs


class NoWhiten(Method):
    """Normalised MSE between views, no whitening: collapses by design."""

    name = "nowhiten"

    def embedding_loss(
        self,
        embeddings: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        return normalized_mse_loss(embeddings)
