"""Batched Cholesky whitening, the step that keeps W-MSE from collapsing.

Notation used throughout the package: N images per view, d views, D embedding size,
W rows in one whitening sub-batch, K classes.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["WhiteningError", "compute_dtype", "whiten"]


# Eigenvalue ratio under which a covariance of float32 data counts as singular.
FLOAT32_SINGULAR = 1e-12


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


def whiten_unchecked(x: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`whiten` without the shape, eps and finiteness checks (callers did them).

    A failed Cholesky factorisation still raises :class:`WhiteningError`.
    """
    rows, dim = x.shape[-2], x.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute_dtype(x.dtype))

        # Centre each block: (..., W, D)
        centred = x - x.mean(dim=-2, keepdim=True)

        # Unbiased covariance, shrunk towards the identity: (..., D, D)
        cov = centred.transpose(-1, -2) @ centred / (rows - 1)
        if eps > 0:
            eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
            cov = (1.0 - eps) * cov + eps * eye

        # cov = L L^T with L lower-triangular: (..., D, D)
        chol, info = torch.linalg.cholesky_ex(cov)
        failed = int((info != 0).sum())
        if failed and cov.dtype == torch.float32:
            # An ill-conditioned float32 covariance can lose positive definiteness to
            # rounding; factorise and solve in float64 then, and return float32.
            centred = x.double() - x.double().mean(dim=-2, keepdim=True)
            cov = centred.transpose(-1, -2) @ centred / (rows - 1)  # (..., D, D)
            if eps > 0:
                eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
                cov = (1.0 - eps) * cov + eps * eye
            chol, info = torch.linalg.cholesky_ex(cov)
            failed = int((info != 0).sum())

            # Refuse covariances that are singular for float32 data (eigenvalue ratio
            # below float32's resolution squared): whitening them would amplify noise.
            eigenvalues = torch.linalg.eigvalsh(cov)  # (..., D), ascending
            ratio = eigenvalues[..., 0] / eigenvalues[..., -1].clamp(min=1e-300)
            failed = max(failed, int((ratio < FLOAT32_SINGULAR).sum()))
        if failed:
            raise WhiteningError(
                f"Cholesky factorisation failed for {failed} of "
                f"{info.numel()} sub-batches of W={rows} rows, D={dim}, eps={eps}: the "
                f"covariance is not positive definite. Use eps > 0 (e.g. 1e-4) or a "
                f"larger w_size (>= {2 * dim}); if this appears mid-training, lower the "
                f"learning rate."
            )

        # Rows times L^-T, i.e. solve L Y^T = centred^T: (..., D, W) -> (..., W, D)
        white_t = torch.linalg.solve_triangular(
            chol, centred.transpose(-1, -2), upper=False
        )
        return white_t.transpose(-1, -2).to(x.dtype)
