"""Batched Cholesky whitening, the step that keeps W-MSE from collapsing.

Notation used throughout the package: N images per view, d views, D embedding size,
W rows in one whitening sub-batch, K classes.
"""

from __future__ import annotations

import logging
import warnings

import torch

__all__ = ["WhiteningError", "compute_dtype", "whiten"]

logger = logging.getLogger(__name__)


# A float32 block whose float64 covariance has an eigenvalue ratio below D times this
# is singular up to rounding (exactly dependent float32 columns give about 1e-17).
SINGULAR_RATIO_PER_DIM = torch.finfo(torch.float64).eps


class WhiteningError(ValueError):
    """Raised when a sub-batch cannot be whitened (singular or non-finite input)."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype whitening runs in: float64 stays float64, anything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_block_shape(rows: int, dim: int) -> None:
    """Refuse sub-batches whose covariance is singular; warn when it is ill-conditioned.

    Centring removes one degree of freedom, so W rows span at most W - 1 dimensions and
    the D x D covariance is singular whenever W <= D.

    Raises:
        WhiteningError: if ``rows <= dim``.
    """
    if dim < 1 or rows < 2:
        raise WhiteningError(
            f"cannot whiten blocks of W={rows} rows and D={dim} dimensions: need D >= 1 "
            f"and W > D"
        )
    if rows <= dim:
        raise WhiteningError(
            f"cannot whiten a sub-batch of W={rows} rows in D={dim} dimensions: the "
            f"covariance of W centred rows has rank at most W-1 < D, so it is singular. "
            f"Use a whitening sub-batch (w_size) of at least 2*D = {2 * dim} rows, or a "
            f"smaller embedding size."
        )
    if rows < 2 * dim:
        warnings.warn(
            f"whitening sub-batch of W={rows} rows for D={dim} dimensions is below 2*D="
            f"{2 * dim}; the covariance estimate is noisy and may be ill-conditioned. "
            f"Prefer w_size >= {2 * dim}.",
            stacklevel=3,
        )


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten each (W, D) block of ``x`` independently.

    Every block is centred, its unbiased covariance ``cov`` (divided by W - 1) is shrunk
    to ``(1 - eps) * cov + eps * I``, factorised as ``L @ L.T`` (Cholesky) and the centred
    rows are multiplied by ``L^-T``. The whitening matrix ``L^-1`` satisfies
    ``(L^-1)^T L^-1 = cov^-1``, so each output block has zero mean and (for eps = 0)
    identity covariance.

    The computation runs in float32, or float64 for float64 input, with autocast
    disabled, whatever the input dtype (fp16/bf16 included): the Cholesky factor of a
    half-precision covariance is too inaccurate to whiten with.

    Args:
        x: Tensor of shape (..., W, D); any number of leading batch dimensions, each
            (W, D) block whitened on its own. Requires W > D.
        eps: Shrinkage towards the identity, in [0, 1). The paper uses 0; a small value
            such as 1e-4 guards against a nearly singular covariance.

    Returns:
        Tensor of shape (..., W, D), dtype float64 for float64 input and float32
        otherwise, on the device of ``x``.

    Raises:
        WhiteningError: if ``x`` has fewer than 2 dimensions, W <= D, ``x`` holds
            non-finite values, eps is outside [0, 1), or a Cholesky factorisation fails.

    Example:
        >>> x = torch.randn(3, 256, 16) * 5 + 2  # 3 blocks of W=256 rows, D=16
        >>> white = whiten(x)
        >>> white.shape, white.dtype
        (torch.Size([3, 256, 16]), torch.float32)
        >>> cov = white.transpose(-1, -2) @ white / 255
        >>> bool((cov - torch.eye(16)).abs().max() < 1e-3)
        True
    """
    if not isinstance(x, torch.Tensor):
        raise WhiteningError(f"whiten expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise WhiteningError(
            f"whiten expects a tensor of shape (..., W, D), got shape {tuple(x.shape)}"
        )
    check_eps(eps)
    check_block_shape(x.shape[-2], x.shape[-1])

    # Non-finite values would poison the covariance and make Cholesky fail obscurely.
    # This reads one number back from the device.
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise WhiteningError(
            f"whiten got {bad} non-finite values (NaN or inf) in its input of shape "
            f"{tuple(x.shape)}; check the learning rate and the inputs of the network"
        )
    return whiten_unchecked(x, eps)


def check_eps(eps: float) -> None:
    """Raises WhiteningError unless eps is a number with 0 <= eps < 1."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise WhiteningError(f"eps must be a number in [0, 1), got {eps!r}")
    if not 0.0 <= eps < 1.0:
        raise WhiteningError(f"eps must be in [0, 1) (the paper uses 0), got {eps}")


def whiten_unchecked(x: torch.Tensor, eps: float, check: bool = True) -> torch.Tensor:
    """:func:`whiten` without the shape, eps and finiteness checks (callers did them).

    With ``check`` a failed Cholesky factorisation raises :class:`WhiteningError` (after
    a float64 retry), which reads one number back from the device. Without it nothing
    is read back: blocks that cannot be factorised come out as NaN, for the caller to
    detect later.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute_dtype(x.dtype))
        return BlockWhitening.apply(x, eps, check)


class BlockWhitening(torch.autograd.Function):
    """Whitening with a closed-form backward pass (see :func:`whitening_backward`).

    Autograd through ``cholesky`` and ``solve_triangular`` would take several times
    longer on the CPU. Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float, check: bool) -> torch.Tensor:
        white, inverse = whitening_forward(x, eps, check)
        ctx.save_for_backward(white, inverse)
        ctx.eps = eps
        return white.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        white, inverse = ctx.saved_tensors
        grad_x = whitening_backward(grad.to(white.dtype), white, inverse, ctx.eps)
        return grad_x.to(grad.dtype), None, None


def whitening_forward(
    x: torch.Tensor, eps: float, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whiten each (W, D) block and return what the backward pass needs.

    Args:
        x: float32 or float64 tensor of shape (..., W, D).
        eps: Covariance shrinkage, in [0, 1).
        check: Detect failed factorisations (one read-back from the device); retry
            them in float64 and raise :class:`WhiteningError` if that fails too.
            Without it, failed blocks are NaN and nothing is read back.

    Returns:
        ``white`` of shape (..., W, D), the centred rows times ``L^-T``, and
        ``inverse`` of shape (..., D, D), the whitening matrix ``L^-1``. Both are in
        the dtype of ``x``, or float64 when a float32 factorisation had to be retried.
    """
    rows, dim = x.shape[-2], x.shape[-1]
    lead = x.shape[:-2]
    blocks = x.reshape(-1, rows, dim)  # (B, W, D)

    # Centre each block and factorise its shrunk covariance: cov = L L^T.
    centred, chol, info = centred_cholesky(blocks, eps)
    if check:
        failed = int((info != 0).sum())
        if failed and blocks.dtype == torch.float32:
            # An ill-conditioned float32 covariance can lose positive definiteness to
            # rounding; factorise in float64 then.
            logger.debug(
                "float32 Cholesky failed for %d blocks; retrying in float64", failed
            )
            centred, chol, info = centred_cholesky(blocks.double(), eps)
            failed = count_singular(chol, info)
        if failed:
            raise WhiteningError(
                f"Cholesky factorisation failed for {failed} of {info.numel()} "
                f"sub-batches of W={rows} rows, D={dim}, eps={eps}: the covariance is "
                f"not positive definite. Use eps > 0 (e.g. 1e-4) or a larger w_size "
                f"(e.g. {max(2 * rows, 2 * dim)}); if this appears mid-training, lower "
                f"the learning rate."
            )

    # The whitening matrix L^-1, by a triangular solve: (B, D, D). Multiplying by it
    # is as accurate here as solving against the rows, and on the CPU much faster
    # (no copies into LAPACK's column-major layout for the big (W, D) blocks).
    eye = torch.eye(dim, dtype=chol.dtype, device=chol.device)
    inverse = torch.linalg.solve_triangular(
        chol, eye.expand_as(chol).contiguous(), upper=False
    )
    if not check:
        # Poison blocks whose factorisation failed, without reading anything back.
        inverse = inverse.masked_fill((info != 0).view(-1, 1, 1), float("nan"))

    # Each row x becomes L^-1 x, i.e. the rows times L^-T: (B, W, D)
    white = torch.bmm(centred, inverse.transpose(-1, -2))
    return white.view(*lead, rows, dim), inverse.view(*lead, dim, dim)


def centred_cholesky(
    blocks: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred rows (B, W, D), Cholesky factor (B, D, D) and LAPACK info (B,)."""
    rows = blocks.shape[-2]
    centred = blocks - blocks.mean(dim=-2, keepdim=True)

    # Unbiased covariance, shrunk towards the identity: (B, D, D)
    cov = torch.bmm(centred.transpose(-1, -2), centred)
    cov.div_(rows - 1)
    if eps > 0:
        cov.mul_(1.0 - eps).diagonal(dim1=-2, dim2=-1).add_(eps)

    chol, info = torch.linalg.cholesky_ex(cov)
    return centred, chol, info


def count_singular(chol: torch.Tensor, info: torch.Tensor) -> int:
    """Blocks whose float64 factorisation failed or is singular up to rounding.

    A block whose eigenvalue ratio is below D * float64's resolution has linearly
    dependent columns, and whitening would turn rounding error into signal; those
    blocks count as failed too. Ill-conditioned but genuine covariances pass (W-MSE
    training on Fashion-MNIST reached ratios of 1e-7 to 1e-12); whitening them in
    float32 is what degrades training, hence float64 by default in ``wmse train``.
    """
    failed = int((info != 0).sum())
    if failed:
        return failed
    cov = chol @ chol.transpose(-1, -2)  # (B, D, D)
    eigenvalues = torch.linalg.eigvalsh(cov)  # (B, D), ascending
    ratio = eigenvalues[..., 0] / eigenvalues[..., -1].clamp(min=1e-300)
    return int((ratio < cov.shape[-1] * SINGULAR_RATIO_PER_DIM).sum())


def whitening_backward(
    grad: torch.Tensor,
    white: torch.Tensor,
    inverse: torch.Tensor,
    eps: float,
    overwrite_grad: bool = False,
) -> torch.Tensor:
    """Gradient of the whitening input from the gradient of its output.

    With Y = C L^-T the whitened rows of the centred block C and G = dLoss/dY,
    differentiating cov = L L^T gives

        dLoss/dx = (G - mean_rows(G) - Y @ Psi) @ L^-1,
        Psi = (1 - eps) / (W - 1) * (B_low + B_low^T + diag(B)),

    where B = G^T Y and B_low is its strictly lower triangle. This costs three
    batched matrix products and no factorisation.

    Args:
        grad: G, shape (..., W, D).
        white: Y from :func:`whitening_forward`, shape (..., W, D).
        inverse: L^-1 from :func:`whitening_forward`, shape (..., D, D).
        eps: The shrinkage used in the forward pass.
        overwrite_grad: Reuse ``grad``'s memory for intermediate results, which
            saves two large allocations (each page-faults fresh memory on the CPU).

    Returns:
        Tensor of shape (..., W, D).
    """
    rows, dim = white.shape[-2], white.shape[-1]
    lead = white.shape[:-2]
    grad = grad.reshape(-1, rows, dim)  # (B, W, D)
    white = white.reshape(-1, rows, dim)
    inverse = inverse.reshape(-1, dim, dim)

    # Psi, the symmetric part coming through the Cholesky factor: (B, D, D)
    outer = torch.bmm(grad.transpose(-1, -2), white).tril_()
    psi = outer + outer.transpose(-1, -2)
    psi.diagonal(dim1=-2, dim2=-1).mul_(0.5)
    psi.mul_((1.0 - eps) / (rows - 1))

    # Centre the gradient (the mean was subtracted in the forward pass), remove the
    # covariance term and map back through L^-1.
    mean = grad.mean(dim=-2, keepdim=True)
    centred = grad.sub_(mean) if overwrite_grad else grad - mean
    through_cov = centred.baddbmm_(white, psi, alpha=-1.0)
    return torch.bmm(through_cov, inverse).view(*lead, rows, dim)
