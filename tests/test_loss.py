"""W-MSE loss: limits, invariances, gradients, input forms and errors."""

import pytest
import torch

from wmse import WhiteningError, wmse_loss


def embeddings(
    num_views: int, rows: int, dim: int, seed: int = 0
) -> list[torch.Tensor]:
    """``num_views`` independent Gaussian views: list of (N, D)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, dim, generator=generator) for _ in range(num_views)]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_views", [2, 3, 4])
def test_near_identical_views_give_zero(num_views: int) -> None:
    base = embeddings(1, 512, 16)[0]
    noise = embeddings(num_views, 512, 16, seed=1)
    views = [base + 1e-4 * n for n in noise]

    assert float(wmse_loss(views, w_size=128, generator=seeded())) < 1e-4


@pytest.mark.parametrize("num_views", [2, 3, 4])
def test_independent_views_give_two(num_views: int) -> None:
    views = embeddings(num_views, 2048, 16)
    loss = float(wmse_loss(views, w_size=256, w_iter=2, generator=seeded()))

    # Independent unit vectors in 16-D: mean cosine ~ 0 with std ~ 1/sqrt(16 * rows).
    assert abs(loss - 2.0) < 0.02


def test_positive_scale_and_offset_of_one_view_leave_it_unchanged() -> None:
    base = embeddings(1, 512, 16)[0]
    other = base + 0.5 * embeddings(1, 512, 16, seed=1)[0]
    before = wmse_loss([base, other], w_size=128, generator=seeded(5))
    after = wmse_loss([base, 3.7 * other + 11.0], w_size=128, generator=seeded(5))

    assert 0.1 < float(before) < 1.9
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_loss_is_the_mean_of_pairwise_cosine_terms() -> None:
    # One sub-batch, so the whitened views are plain whiten() outputs.
    from wmse import whiten

    views = embeddings(3, 64, 4)
    white = [torch.nn.functional.normalize(whiten(v), dim=1) for v in views]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(2 - 2 * (white[i] * white[j]).sum(1).mean() for i, j in pairs) / 3

    torch.testing.assert_close(
        wmse_loss(views, w_size=64), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("num_views", [2, 4])
def test_every_view_gets_gradients(num_views: int) -> None:
    views = [v.requires_grad_(True) for v in embeddings(num_views, 256, 8)]
    wmse_loss(views, w_size=64, generator=seeded()).backward()

    for view in views:
        assert view.grad is not None
        assert view.grad.abs().sum() > 0


def test_tensor_and_list_forms_agree() -> None:
    views = embeddings(4, 256, 8)
    from_list = wmse_loss(views, w_size=64, w_iter=3, generator=seeded(7))
    from_tensor = wmse_loss(
        torch.stack(views), w_size=64, w_iter=3, generator=seeded(7)
    )

    torch.testing.assert_close(from_list, from_tensor)


def test_same_generator_seed_gives_same_value_other_seed_differs() -> None:
    views = embeddings(2, 512, 8)
    first = wmse_loss(views, w_size=64, generator=seeded(1))
    again = wmse_loss(views, w_size=64, generator=seeded(1))
    other = wmse_loss(views, w_size=64, generator=seeded(2))

    assert float(first) == float(again)
    assert float(first) != float(other)


def test_float64_views_give_float64_loss() -> None:
    views = [v.double() for v in embeddings(2, 128, 4)]
    assert wmse_loss(views, w_size=64).dtype == torch.float64


def ill_conditioned_views(seed: int = 0) -> torch.Tensor:
    """Two views (2, 256, 16) whose covariance has an eigenvalue ratio near 1e-8,
    as W-MSE embeddings reach during training."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -4, 16, dtype=torch.float64)  # variances 1 .. 1e-8
    base = torch.randn(256, 16, generator=generator, dtype=torch.float64) * scales
    noise = 0.3 * torch.randn(2, 256, 16, generator=generator, dtype=torch.float64)
    return base + noise * scales


def test_float64_whitening_of_float32_views() -> None:
    exact_views = ill_conditioned_views().requires_grad_(True)
    exact = wmse_loss(exact_views, w_size=128, generator=seeded(4))
    exact.backward()

    # float32 views whitened in float64: the float64 result, gradients in float32.
    views = ill_conditioned_views().float().requires_grad_(True)
    loss = wmse_loss(views, w_size=128, generator=seeded(4), dtype=torch.float64)
    loss.backward()
    assert loss.dtype == torch.float64 and views.grad.dtype == torch.float32
    torch.testing.assert_close(loss, exact, rtol=1e-6, atol=1e-7)
    relative = (views.grad.double() - exact_views.grad).norm() / exact_views.grad.norm()
    assert relative < 1e-5


def test_half_precision_whitening_is_refused() -> None:
    with pytest.raises(ValueError, match=r"float32 or torch.float64, got.*bfloat16"):
        wmse_loss(embeddings(2, 128, 4), w_size=64, dtype=torch.bfloat16)


def test_fewer_than_two_views() -> None:
    with pytest.raises(ValueError, match="at least 2 views.*got 1"):
        wmse_loss(embeddings(1, 128, 4), w_size=64)
    with pytest.raises(ValueError, match="at least 2 views.*got 1"):
        wmse_loss(torch.randn(1, 128, 4), w_size=64)


def test_views_of_different_shapes() -> None:
    views = [torch.randn(128, 4), torch.randn(128, 5)]
    with pytest.raises(
        ValueError, match=r"same shape \(N, D\); got shapes \[\(128, 4\), \(128, 5\)\]"
    ):
        wmse_loss(views, w_size=64)


def test_non_finite_values_name_the_view_and_count() -> None:
    views = embeddings(3, 128, 4)
    views[2][5, 1] = float("nan")
    views[2][9, 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite .*\(view 2: 2\)"):
        wmse_loss(views, w_size=64)


def test_batch_smaller_than_w_size() -> None:
    with pytest.raises(
        ValueError, match="N=100 images per view is smaller than .*w_size=128"
    ):
        wmse_loss(embeddings(2, 100, 4), w_size=128)


def test_batch_not_a_multiple_of_w_size() -> None:
    with pytest.raises(
        ValueError, match=r"N=200 .*not a multiple of w_size=128.*\(e\.g\. 128 or 256\)"
    ):
        wmse_loss(embeddings(2, 200, 4), w_size=128)


def test_sub_batch_not_larger_than_dimension() -> None:
    with pytest.raises(WhiteningError, match=r"W=64 rows in D=64.*at least 2\*D = 128"):
        wmse_loss(embeddings(2, 256, 64), w_size=64)


def test_sub_batch_below_twice_the_dimension_warns() -> None:
    with pytest.warns(UserWarning, match=r"W=96 rows for D=64"):
        wmse_loss(embeddings(2, 192, 64), w_size=96)


def test_cholesky_failure_from_the_loss() -> None:
    # Embeddings confined to 2 of 8 dimensions: the covariance is singular.
    low_rank = [v @ torch.randn(2, 8) for v in embeddings(2, 128, 2)]
    with pytest.raises(WhiteningError, match=r"W=64 rows, D=8, eps=0.0"):
        wmse_loss(low_rank, w_size=64)


@pytest.mark.parametrize("w_iter", [0, -1, 1.5])
def test_bad_w_iter(w_iter: object) -> None:
    with pytest.raises(
        ValueError, match=f"w_iter must be an integer >= 1, got {w_iter}"
    ):
        wmse_loss(embeddings(2, 128, 4), w_size=64, w_iter=w_iter)  # type: ignore[arg-type]


def test_gradients_agree_with_finite_differences() -> None:
    views = torch.stack(embeddings(2, 16, 3)).double().requires_grad_(True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return wmse_loss(x, w_size=8, w_iter=2, generator=seeded(3))

    assert torch.autograd.gradcheck(loss, (views,), eps=1e-6, atol=1e-5)


def test_gradients_with_shrinkage_and_four_views() -> None:
    views = torch.stack(embeddings(4, 16, 3, seed=2)).double().requires_grad_(True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return wmse_loss(x, w_size=8, w_iter=2, eps=0.1, generator=seeded(5))

    assert torch.autograd.gradcheck(loss, (views,), eps=1e-6, atol=1e-5)


def test_unchecked_loss_turns_bad_input_into_nan_without_raising() -> None:
    views = embeddings(2, 128, 4)
    views[1][3, 2] = float("nan")
    assert torch.isnan(wmse_loss(views, w_size=64, check=False))

    # Singular covariance: the failed blocks are NaN instead of an exception.
    low_rank = [v @ torch.randn(2, 8) for v in embeddings(2, 128, 2)]
    assert torch.isnan(wmse_loss(low_rank, w_size=64, check=False))


def test_unchecked_loss_equals_checked_loss_on_good_input() -> None:
    views = embeddings(4, 256, 8)
    checked = wmse_loss(views, w_size=64, w_iter=2, generator=seeded(1))
    unchecked = wmse_loss(views, w_size=64, w_iter=2, generator=seeded(1), check=False)
    assert float(checked) == float(unchecked)


def test_bf16_autocast_keeps_the_loss_in_float32() -> None:
    views = [v.bfloat16().requires_grad_(True) for v in embeddings(2, 256, 8)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = wmse_loss(views, w_size=128, generator=seeded(0))
    loss.backward()

    assert loss.dtype == torch.float32
    plain = [v.detach().float() for v in views]
    reference = wmse_loss(plain, w_size=128, generator=seeded(0))
    assert abs(float(loss.detach()) - float(reference)) < 1e-5
    assert all(v.grad is not None and v.grad.dtype == torch.bfloat16 for v in views)
