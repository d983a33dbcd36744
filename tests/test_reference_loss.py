"""wmse_loss against the naive loop reference in benchmarks/reference_loss.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from wmse.loss import slice_permutations, wmse_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PATH = REPO_ROOT / "benchmarks" / "reference_loss.py"


def load_reference() -> ModuleType:
    """Import benchmarks/reference_loss.py by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("reference_loss", REFERENCE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference()

# (d, N, W, w_iter, D, eps); W >= 2 * D throughout so no conditioning warning fires.
CASES = [
    (2, 64, 64, 1, 8, 0.0),
    (2, 128, 32, 3, 16, 0.0),
    (3, 96, 32, 1, 8, 0.0),
    (3, 96, 24, 3, 12, 0.0),
    (4, 64, 16, 3, 4, 0.0),
    (4, 128, 64, 1, 32, 0.0),
    (3, 64, 32, 3, 8, 0.1),
]


def correlated_views(
    num_views: int, num_rows: int, dim: int, seed: int
) -> list[torch.Tensor]:
    """d noisy, scaled and shifted copies of one float64 batch, each of shape (N, D).

    Correlated views keep the loss away from its chance value of 2, so values and
    gradients carry signal; a random mixing matrix makes the covariance non-diagonal.
    """
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    base = torch.randn(num_rows, dim, generator=gen, dtype=torch.float64) @ mixing
    views = []
    for _ in range(num_views):
        noise = 0.5 * torch.randn(num_rows, dim, generator=gen, dtype=torch.float64)
        views.append((3.0 * base + noise + 1.0).requires_grad_())
    return views


def test_permutations_match_slice_permutations() -> None:
    # Same seed, same draws: the reference helper must reproduce our slicing.
    cpu = torch.device("cpu")
    ours = slice_permutations(96, 3, cpu, torch.Generator().manual_seed(7))
    theirs = reference.reference_permutations(96, 3, torch.Generator().manual_seed(7))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("num_views,num_rows,w_size,w_iter,dim,eps", CASES)
def test_values_and_gradients_match_reference(
    num_views: int, num_rows: int, w_size: int, w_iter: int, dim: int, eps: float
) -> None:
    views = correlated_views(num_views, num_rows, dim, seed=num_views * 1000 + dim)

    # Ours draws its permutations from one generator, the reference is fed the same.
    ours = wmse_loss(
        views, w_size, w_iter, eps=eps, generator=torch.Generator().manual_seed(3)
    )
    perms = slice_permutations(
        num_rows, w_iter, torch.device("cpu"), torch.Generator().manual_seed(3)
    )
    theirs = reference.reference_wmse_loss(views, w_size, w_iter, eps, perms)

    # Values agree, and the views are similar enough that the loss is well below 2.
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0.0)
    assert 0.0 < float(theirs.detach()) < 1.5

    # Gradients agree for every view, and none is zero.
    grads_ours = torch.autograd.grad(ours, views)
    grads_theirs = torch.autograd.grad(theirs, views)
    for index, (mine, ref) in enumerate(zip(grads_ours, grads_theirs)):
        assert ref.abs().max() > 1e-6, f"reference gradient of view {index} is zero"
        torch.testing.assert_close(
            mine, ref, rtol=0.0, atol=1e-8, msg=f"gradient of view {index} differs"
        )


def test_reference_draws_same_slicing_from_generator() -> None:
    # Without perms, the reference and ours agree when their generators share a seed.
    views = correlated_views(3, 64, 8, seed=11)
    ours = wmse_loss(views, 32, 3, generator=torch.Generator().manual_seed(5))
    theirs = reference.reference_wmse_loss(
        views, 32, 3, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0.0)


def test_different_slicing_changes_loss() -> None:
    # Guards the tests above: with W < N the slicing must matter, or they prove little.
    views = [view.detach() for view in correlated_views(2, 128, 8, seed=13)]
    losses = []
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        perms = reference.reference_permutations(128, 1, gen)
        losses.append(float(reference.reference_wmse_loss(views, 32, 1, perms=perms)))
    assert abs(losses[0] - losses[1]) > 1e-6
