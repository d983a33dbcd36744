"""SimCLR: the contrastive baseline (NT-Xent over all views of a batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmse.methods.base import Method, full_precision

__all__ = ["SimCLR", "nt_xent_loss"]


def nt_xent_loss(embeddings: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised-temperature cross-entropy over d views of N images.

    Every embedding is an anchor; its positives are the other d - 1 views of the same
    image and every other embedding in the batch is a negative. For each (anchor,
    positive) pair the loss is ``-log(exp(s_ap / T) / sum_{k != a} exp(s_ak / T))`` with
    cosine similarities s; the result is the mean over all such pairs. For d = 2 this is
    SimCLR's NT-Xent.

    Args:
        embeddings: (d, N, D), not necessarily normalised.
        temperature: T > 0.

    Returns:
        Scalar loss (float32 at least).
    """
    with full_precision(embeddings):
        return nt_xent_float32(embeddings.float(), temperature)


def nt_xent_float32(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """:func:`nt_xent_loss` on float32 embeddings (d, N, D), autocast off."""
    num_views, num_images, _ = embeddings.shape
    unit = F.normalize(embeddings.flatten(0, 1), dim=1)  # (d*N, D)

    # Cosine similarities over temperature, the anchor itself excluded: (d*N, d*N)
    logits = unit @ unit.T / temperature
    self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)

    # Positives: same image index, other view. Row r is view r // N of image r % N.
    image = torch.arange(num_images, device=logits.device).repeat(num_views)  # (d*N,)
    positive = (image.unsqueeze(0) == image.unsqueeze(1)) & ~self_mask
    return -log_prob[positive].mean()


class SimCLR(Method):
    """SimCLR with NT-Xent over all d views (temperature ``config.loss.temperature``)."""

    name = "simclr"

    def embedding_loss(
        self,
        embeddings: torch.Tensor,
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        return nt_xent_loss(embeddings, self.config.loss.temperature)
