"""Whitening: identity covariance, independence of blocks, gradients, errors."""

import warnings

import pytest
import torch

from wmse import WhiteningError, whiten
from wmse.whitening import centred_cholesky


def covariance(white: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance of every (W, D) block: (..., D, D)."""
    centred = white - white.mean(dim=-2, keepdim=True)
    return centred.transpose(-1, -2) @ centred / (white.shape[-2] - 1)


def correlated(*shape: int, seed: int = 0) -> torch.Tensor:
    """Gaussian rows with a random full-rank covariance and a non-zero mean."""
    generator = torch.Generator().manual_seed(seed)
    dim = shape[-1]
    mixing = torch.randn(dim, dim, generator=generator) + 3 * torch.eye(dim)
    return torch.randn(*shape, generator=generator) @ mixing + 5.0


@pytest.mark.parametrize("rows,dim", [(128, 64), (256, 64), (64, 8), (512, 128)])
def test_zero_mean_identity_covariance(rows: int, dim: int) -> None:
    white = whiten(correlated(rows, dim))

    assert white.dtype == torch.float32
    assert white.mean(dim=0).abs().max() < 1e-4
    assert (covariance(white) - torch.eye(dim)).abs().max() < 1e-3


def test_blocks_are_whitened_independently() -> None:
    x = correlated(3, 4, 128, 16)
    batched = whiten(x)

    for i in range(3):
        for j in range(4):
            alone = whiten(x[i, j])
            torch.testing.assert_close(batched[i, j], alone, rtol=1e-4, atol=1e-4)

    # Changing one block leaves every other block's output untouched.
    changed = x.clone()
    changed[1, 2] *= 7.0
    again = whiten(changed)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2] = False
    torch.testing.assert_close(again[mask], batched[mask])


def test_whitening_matrix_is_inverse_cholesky() -> None:
    x = correlated(200, 6).double()
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / 199
    whitening_matrix = torch.linalg.inv(torch.linalg.cholesky(cov))

    # W^T W = Sigma^-1 and the output is centred @ W^T.
    torch.testing.assert_close(
        whitening_matrix.T @ whitening_matrix, torch.linalg.inv(cov)
    )
    torch.testing.assert_close(whiten(x), centred @ whitening_matrix.T)


def test_eps_shrinks_towards_identity() -> None:
    x = correlated(256, 8).double()
    eps = 0.3
    centred = x - x.mean(dim=0)
    shrunk = (1 - eps) * centred.T @ centred / 255 + eps * torch.eye(8, dtype=x.dtype)
    expected = centred @ torch.linalg.inv(torch.linalg.cholesky(shrunk)).T

    torch.testing.assert_close(whiten(x, eps=eps), expected)


def test_gradients_match_float64_reference() -> None:
    x = correlated(2, 12, 4, seed=3).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: whiten(t), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_closed_form_backward_matches_autograd_of_plain_ops(eps: float) -> None:
    # The plain formula, differentiated by autograd through cholesky and solve.
    x = correlated(3, 40, 6, seed=4).double().requires_grad_(True)
    centred = x - x.mean(dim=-2, keepdim=True)
    cov = centred.transpose(-1, -2) @ centred / 39
    chol = torch.linalg.cholesky((1 - eps) * cov + eps * torch.eye(6).double())
    plain = torch.linalg.solve_triangular(chol, centred.transpose(-1, -2), upper=False)
    weights = torch.randn(3, 40, 6, dtype=torch.float64)
    (expected,) = torch.autograd.grad((plain.transpose(-1, -2) * weights).sum(), x)

    (actual,) = torch.autograd.grad((whiten(x, eps=eps) * weights).sum(), x)

    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


def test_half_precision_input_gets_gradient_in_its_dtype() -> None:
    x = correlated(256, 16).bfloat16().requires_grad_(True)
    whiten(x).sum().backward()

    assert x.grad is not None
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_input_is_whitened_in_float32(dtype: torch.dtype) -> None:
    x = correlated(256, 16).to(dtype)
    white = whiten(x)

    assert white.dtype == torch.float32
    assert (covariance(white) - torch.eye(16)).abs().max() < 1e-3


def test_cpu_bf16_autocast_does_not_lower_precision() -> None:
    x = correlated(256, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        white = whiten(x)

    assert white.dtype == torch.float32
    assert (covariance(white) - torch.eye(16)).abs().max() < 1e-3


def test_float64_stays_float64() -> None:
    assert whiten(correlated(64, 4).double()).dtype == torch.float64


def test_singular_block_is_refused_with_remedy() -> None:
    with pytest.raises(WhiteningError, match=r"W=64 rows in D=64 .*2\*D = 128"):
        whiten(torch.randn(64, 64))


def test_small_block_warns() -> None:
    with pytest.warns(UserWarning, match=r"W=100 rows for D=64 .*w_size >= 128"):
        whiten(correlated(100, 64))


def test_no_warning_at_twice_the_dimension() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whiten(correlated(128, 64))


def test_non_finite_input_is_counted() -> None:
    x = correlated(64, 4)
    x[3, 1] = float("nan")
    x[7, 2] = float("inf")
    with pytest.raises(WhiteningError, match="2 non-finite values"):
        whiten(x)


def test_cholesky_failure_names_sizes_and_remedy() -> None:
    # Rank-deficient data: 8 columns, only 2 independent directions.
    x = correlated(64, 2) @ torch.randn(2, 8)
    remedy = r"eps > 0.*larger w_size \(e\.g\. 128\)"
    with pytest.raises(WhiteningError, match=r"W=64 rows, D=8, eps=0.0.*" + remedy):
        whiten(x)


def test_eps_rescues_rank_deficient_data() -> None:
    x = correlated(64, 2) @ torch.randn(2, 8)
    assert torch.isfinite(whiten(x, eps=0.1)).all()


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2.0])
def test_eps_out_of_range(eps: float) -> None:
    with pytest.raises(WhiteningError, match=f"eps must be in \\[0, 1\\).*{eps}"):
        whiten(torch.randn(32, 4), eps=eps)


def test_one_dimensional_input_is_refused() -> None:
    with pytest.raises(
        WhiteningError, match=r"shape \(\.\.\., W, D\), got shape \(10,\)"
    ):
        whiten(torch.randn(10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype: torch.dtype) -> None:
    x = correlated(256, 32).cuda()
    with torch.autocast("cuda", dtype=dtype):
        white = whiten(x)
    assert white.dtype == torch.float32
    cov = covariance(white.cpu())
    assert (cov - torch.eye(32)).abs().max() < 1e-3


def test_ill_conditioned_float32_falls_back_to_float64() -> None:
    # Eight blocks with eigenvalues from 1 down to 1e-12 (as W-MSE training reaches):
    # positive definite in float64, but float32 rounding breaks their factorisation.
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(
        torch.randn(8, 16, 16, generator=generator, dtype=torch.float64)
    )
    scales = torch.logspace(0, -6, 16, dtype=torch.float64)
    x = (
        torch.randn(8, 64, 16, generator=generator, dtype=torch.float64)
        @ (basis * scales)
        @ basis.transpose(-1, -2)
    )
    _, _, info = centred_cholesky(x.float(), 0.0)
    assert int((info != 0).sum()) > 0  # the float32 path really fails

    white = whiten(x.float())
    assert white.dtype == torch.float32 and torch.isfinite(white).all()
    eye = torch.eye(16, dtype=torch.float64)
    assert (covariance(white.double()) - eye).abs().max() < 0.1
