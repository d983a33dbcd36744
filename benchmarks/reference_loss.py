"""A deliberately naive W-MSE loss, written from the paper's description.

Ermolov et al., "Whitening for Self-Supervised Representation Learning" (ICML 2021),
section 3: for each of ``w_iter`` random slicings of the batch, every view of every
sub-batch is whitened on its own with a Cholesky factor of its covariance, and the loss
is the MSE between L2-normalised whitened embeddings of the same image in two views.

This file is the independent reference that tests and benchmarks compare
:func:`wmse.wmse_loss` against. It uses plain Python loops and one whitening call per
(iteration, sub-batch, view), inverts each Cholesky factor explicitly and writes the
whitened rows back into their original slots, so it shares none of the vectorised
code's shortcuts (one batched call, triangular solves, the O(d) pair sum). It does no
argument checking: feed it valid shapes.

Notation: N images per view, d views, D embedding size, W rows per sub-batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["reference_permutations", "reference_whiten", "reference_wmse_loss"]


def reference_permutations(
    num_rows: int, w_iter: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``w_iter`` random permutations of ``num_rows`` rows.

    Draws exactly as :func:`wmse.loss.slice_permutations` does (argsort of uniform
    keys, drawn on the generator's device), so two generators with the same seed give
    the reference and the vectorised loss the same slicing.

    Args:
        num_rows: N, the number of images per view.
        w_iter: How many permutations to draw.
        generator: Source of randomness; the global CPU generator when None.

    Returns:
        Long tensor of shape (w_iter, N) on the generator's device (CPU when None).
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(w_iter, num_rows, generator=generator, device=draw_device)
    return keys.argsort(dim=1)


def reference_whiten(block: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten one sub-batch of one view, step by step.

    Args:
        block: Tensor of shape (W, D) with W > D.
        eps: Shrinkage of the covariance towards the identity, in [0, 1).

    Returns:
        Tensor of shape (W, D), the centred rows times ``L^-T`` where ``L L^T`` is the
        shrunk covariance; same dtype as ``block``.
    """
    rows, dim = block.shape

    # Centre the rows: (W, D)
    centred = block - block.mean(dim=0, keepdim=True)

    # Unbiased covariance, shrunk towards the identity: (D, D)
    cov = centred.T @ centred / (rows - 1)
    eye = torch.eye(dim, dtype=block.dtype, device=block.device)
    cov = (1.0 - eps) * cov + eps * eye

    # Cholesky factor cov = L L^T and its explicit inverse: (D, D)
    chol = torch.linalg.cholesky(cov)
    whitening_matrix = torch.linalg.inv(chol)

    # Each row x becomes L^-1 x, i.e. the rows times L^-T: (W, D)
    return centred @ whitening_matrix.T


def reference_wmse_loss(
    views: Sequence[torch.Tensor] | torch.Tensor,
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    perms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE loss by loops over iterations, sub-batches, views and pairs of views.

    Args:
        views: d tensors of shape (N, D), or one tensor of shape (d, N, D).
        w_size: W, rows per whitening sub-batch; must divide N and exceed D.
        w_iter: How many slicings to average.
        eps: Covariance shrinkage, as in :func:`reference_whiten`.
        perms: Long tensor of shape (w_iter, N); row ``t`` orders the images for
            iteration ``t``, and its consecutive runs of W entries are the
            sub-batches. Drawn with :func:`reference_permutations` when None.
        generator: Used to draw ``perms`` when it is None.

    Returns:
        Scalar tensor, the loss averaged over the d(d-1)/2 pairs and the iterations.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> base = torch.randn(128, 4, generator=gen, dtype=torch.float64)
        >>> loss = reference_wmse_loss([base, base], w_size=64, generator=gen)
        >>> abs(float(loss)) < 1e-12
        True
    """
    views = list(views)
    num_views = len(views)
    num_rows, dim = views[0].shape
    if perms is None:
        perms = reference_permutations(num_rows, w_iter, generator)
    perms = perms.to(views[0].device)

    terms = []
    for iteration in range(w_iter):
        # Whiten each view of each sub-batch and put its rows back in image order.
        whitened = [
            torch.zeros(num_rows, dim, dtype=view.dtype, device=view.device)
            for view in views
        ]
        for start in range(0, num_rows, w_size):
            slots = perms[iteration, start : start + w_size]  # (W,)
            for index, view in enumerate(views):
                whitened[index][slots] = reference_whiten(view[slots], eps)

        # Cosine MSE for every pair of views: 2 - 2 * mean over images of cos.
        unit = [F.normalize(white, dim=1) for white in whitened]  # d x (N, D)
        for first in range(num_views):
            for second in range(first + 1, num_views):
                cosine = (unit[first] * unit[second]).sum(dim=1)  # (N,)
                terms.append(2.0 - 2.0 * cosine.mean())

    # Every (iteration, pair) term covers all N images, so a plain mean is fair.
    return torch.stack(terms).mean()
