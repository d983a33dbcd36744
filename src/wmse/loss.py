"""The W-MSE loss: batch slicing, whitening of every slice, and cosine MSE between views."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from wmse.whitening import (
    check_block_shape,
    check_eps,
    compute_dtype,
    whitening_backward,
    whitening_forward,
)

__all__ = ["NonFiniteError", "slice_permutations", "stack_views", "wmse_loss"]


class NonFiniteError(ValueError):
    """Embeddings hold NaN or inf values (the network diverged or its input is bad)."""


def stack_views(
    views: torch.Tensor | Sequence[torch.Tensor], check_finite: bool = True
) -> torch.Tensor:
    """Validate the views of a batch and stack them into one (d, N, D) tensor.

    Args:
        views: d tensors of shape (N, D), or one tensor of shape (d, N, D).
        check_finite: Count non-finite values (one read-back from the device).

    Returns:
        Tensor of shape (d, N, D).

    Raises:
        ValueError: if there are fewer than 2 views, the views differ in shape or are not
            2-D, or hold non-finite values (the message names the views and counts).
    """
    if isinstance(views, torch.Tensor):
        if views.dim() != 3:
            raise ValueError(
                f"views as one tensor must have shape (d, N, D), got {tuple(views.shape)}"
            )
        stacked = views
    else:
        views = list(views)
        if len(views) < 2:
            raise ValueError(
                f"W-MSE needs at least 2 views of each image, got {len(views)}; "
                f"pass d >= 2 augmented views"
            )
        shapes = [tuple(view.shape) for view in views]
        if any(len(shape) != 2 for shape in shapes) or len(set(shapes)) != 1:
            raise ValueError(
                f"every view must be a tensor of the same shape (N, D); got shapes {shapes}"
            )
        stacked = torch.stack(views)
    if stacked.shape[0] < 2:
        raise ValueError(
            f"W-MSE needs at least 2 views of each image, got {stacked.shape[0]}; "
            f"pass d >= 2 augmented views"
        )

    if not check_finite:
        return stacked

    # Count non-finite values per view with one read-back: (d,)
    bad_per_view = (~torch.isfinite(stacked)).flatten(1).sum(dim=1).tolist()
    if any(bad_per_view):
        details = ", ".join(
            f"view {index}: {count}"
            for index, count in enumerate(bad_per_view)
            if count
        )
        raise NonFiniteError(
            f"embeddings hold non-finite values (NaN or inf) ({details}); the network "
            f"diverged or its input is broken. Lower the learning rate or check the data."
        )
    return stacked


def slice_permutations(
    num_rows: int,
    w_iter: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``w_iter`` independent random permutations of ``num_rows`` rows.

    Drawn on the generator's device (the CPU when there is none) so that a given
    generator gives the same permutations wherever the embeddings live.

    Returns:
        Long tensor of shape (w_iter, N) on ``device``.
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(w_iter, num_rows, generator=generator, device=draw_device)
    return keys.argsort(dim=1).to(device)


def wmse_loss(
    views: torch.Tensor | Sequence[torch.Tensor],
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """W-MSE loss of Ermolov et al. (ICML 2021) between d views of N images.

    For each of ``w_iter`` iterations a random permutation of the N images, shared by
    all views, splits the batch into N / w_size sub-batches. Each view of each sub-batch
    is whitened on its own (see :func:`wmse.whiten`); all of them go through a single
    batched whitening call. The loss is ``2 - 2 * cos`` between the whitened embeddings
    of the same image in two views (the MSE of their L2-normalised versions), averaged
    over images, the d(d-1)/2 view pairs and the iterations. Gradients reach every view.

    N must be a multiple of ``w_size``: every row is then whitened exactly once per
    iteration, as in the paper. Other sizes raise an error rather than dropping rows.

    Args:
        views: d tensors of shape (N, D), or one tensor of shape (d, N, D); d >= 2.
        w_size: Rows per whitening sub-batch (W); must divide N and exceed D
            (2 * D or more is advised).
        w_iter: How many independent slicings to average; more stabilises small
            sub-batches at proportional cost.
        eps: Covariance shrinkage passed to :func:`wmse.whiten`.
        generator: Source of the random permutations, for reproducibility.
        dtype: float32 or float64, the arithmetic of the whitening and the loss;
            None means float32 (float64 for float64 views). Gradients reach the
            views in their own dtype. float64 keeps an ill-conditioned covariance
            (eigenvalue ratios of 1e-7 and below, as training produces) from
            turning float32 rounding into gradient.
        check: Raise on non-finite embeddings and on failed factorisations, which
            reads two numbers back from the device. A training loop on a GPU passes
            False on most steps and checks the (then NaN) loss every few steps instead.

    Returns:
        Scalar tensor in [0, 4], in ``dtype`` (by default float32, float64 for
        float64 views).

    Raises:
        ValueError: for fewer than 2 views, mismatched shapes, non-finite embeddings,
            N < w_size, N not a multiple of w_size, w_iter < 1, a dtype other than
            float32 and float64, or W <= D
            (:class:`wmse.WhiteningError`, a ValueError, for the whitening checks).

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> base = torch.randn(256, 8, generator=gen)
        >>> noisy = base + 1e-3 * torch.randn(256, 8, generator=gen)
        >>> float(wmse_loss([base, noisy], w_size=64, generator=gen)) < 1e-3
        True
    """
    stacked = stack_views(views, check)  # (d, N, D)
    num_views, num_rows, dim = stacked.shape
    check_slicing(num_rows, w_size, w_iter)
    dtype = check_dtype(dtype, stacked.dtype)
    w_size, w_iter = operator.index(w_size), operator.index(w_iter)
    check_eps(eps)
    check_block_shape(w_size, dim)

    # One permutation per iteration, shared by all views: (w_iter, N)
    perms = slice_permutations(num_rows, w_iter, stacked.device, generator)

    # Gather and cut into sub-batches: (d, w_iter*N, D) -> (d, w_iter, N/W, W, D).
    # index_select's backward is much cheaper on the CPU than advanced indexing's.
    gathered = stacked.index_select(1, perms.flatten())
    sliced = gathered.view(num_views, w_iter, num_rows // w_size, w_size, dim)

    # Whitening and the cosine loss run in float32 or float64, never in half.
    with torch.autocast(device_type=sliced.device.type, enabled=False):
        return WhitenedCosineLoss.apply(sliced.to(dtype), eps, check)


class WhitenedCosineLoss(torch.autograd.Function):
    """Whiten every block, normalise the rows, average 2 - 2 cos over view pairs.

    Input: (d, ...) blocks of shape (W, D), where row r of every view is the same
    image. Forward and backward are written out by hand (the whitening part in
    :func:`wmse.whitening.whitening_backward`), which on the CPU is about twice as
    fast as autograd through the same operations. Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, sliced: torch.Tensor, eps: float, check: bool) -> torch.Tensor:
        num_views, dim = sliced.shape[0], sliced.shape[-1]
        white, inverse = whitening_forward(sliced, eps, check)

        # Unit rows u: (d, M, D) with M = w_iter * N rows per view.
        white = white.view(num_views, -1, dim)
        inv_norm = torch.linalg.vector_norm(white, dim=-1, keepdim=True)
        inv_norm = inv_norm.clamp_min_(1e-12).reciprocal_()  # (d, M, 1)
        unit = torch.mul(white, inv_norm, out=torch.empty_like(white))

        # The sum of cosines over the d(d-1)/2 pairs of unit vectors u_i equals
        # (|sum_i u_i|^2 - d) / 2, which costs O(d) instead of O(d^2).
        total = unit.sum(dim=0)  # (M, D)
        num_rows = total.shape[0]
        num_pairs = num_views * (num_views - 1) / 2
        mean_cos = (total.pow(2).sum() - num_views * num_rows) / (
            2 * num_rows * num_pairs
        )

        ctx.save_for_backward(white, inverse, unit, inv_norm, total)
        ctx.eps, ctx.shape = eps, sliced.shape
        ctx.coef = 2.0 / (num_rows * num_pairs)
        return (2.0 - 2.0 * mean_cos).to(sliced.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        white, inverse, unit, inv_norm, total = ctx.saved_tensors

        # dLoss/du_i = -coef * total for every view; through u = y / |y| this gives
        # (g - u (u . g)) / |y| per row: (d, M, D)
        grad_unit = total * (-ctx.coef * grad_loss)  # (M, D), shared by the views
        along = (unit * grad_unit).sum(dim=-1, keepdim=True)  # (d, M, 1)
        grad_white = torch.addcmul(grad_unit, unit, along, value=-1.0)
        grad_white.mul_(inv_norm)

        grad = whitening_backward(
            grad_white.view(ctx.shape),
            white.view(ctx.shape),
            inverse,
            ctx.eps,
            overwrite_grad=True,
        )
        return grad.to(grad_loss.dtype), None, None


def is_integer(value: object) -> bool:
    """True for Python, NumPy and 0-d integer tensor values, False for bools."""
    if isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and value.dim() != 0
    ):
        return False
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def check_dtype(dtype: torch.dtype | None, views_dtype: torch.dtype) -> torch.dtype:
    """The whitening dtype: ``dtype`` if it is float32 or float64, else the default.

    Raises:
        ValueError: for any other dtype, naming it.
    """
    if dtype is None:
        return compute_dtype(views_dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"wmse_loss computes in torch.float32 or torch.float64, got dtype={dtype!r}; "
            f"half precision is too coarse for a Cholesky factorisation"
        )
    return dtype


def check_slicing(num_rows: int, w_size: int, w_iter: int) -> None:
    """Check that N rows can be cut into whole sub-batches of ``w_size`` rows.

    Raises:
        ValueError: naming N and w_size (or w_iter) when they do not fit.
    """
    if not is_integer(w_size) or w_size < 2:
        raise ValueError(f"w_size must be an integer >= 2, got {w_size!r}")
    if not is_integer(w_iter) or w_iter < 1:
        raise ValueError(f"w_iter must be an integer >= 1, got {w_iter!r}")
    if num_rows < w_size:
        raise ValueError(
            f"batch of N={num_rows} images per view is smaller than the whitening "
            f"sub-batch w_size={w_size}; use a batch size of at least {w_size} or a "
            f"smaller w_size"
        )
    if num_rows % w_size:
        raise ValueError(
            f"batch of N={num_rows} images per view is not a multiple of w_size="
            f"{w_size}; choose a batch size that w_size divides (e.g. "
            f"{num_rows - num_rows % w_size} or {num_rows - num_rows % w_size + w_size})"
        )
