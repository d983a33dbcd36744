"""NT-Xent against a direct float64 computation, and its behaviour."""

import math

import pytest
import torch

from wmse.methods.simclr import nt_xent_loss


def direct_nt_xent(embeddings: torch.Tensor, temperature: float) -> float:
    """Loop over every (anchor, positive) pair in float64."""
    num_views, num_images, _ = embeddings.shape
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    rows = [(v, i) for v in range(num_views) for i in range(num_images)]
    total, count = 0.0, 0
    for view, image in rows:
        anchor = unit[view, image]
        denominator = sum(
            math.exp(float(anchor @ unit[v, i]) / temperature)
            for v, i in rows
            if (v, i) != (view, image)
        )
        for other in range(num_views):
            if other != view:
                positive = math.exp(float(anchor @ unit[other, image]) / temperature)
                total += -math.log(positive / denominator)
                count += 1
    return total / count


@pytest.mark.parametrize("num_views,temperature", [(2, 0.5), (3, 0.2), (4, 1.0)])
def test_matches_direct_computation(num_views: int, temperature: float) -> None:
    embeddings = torch.randn(
        num_views, 6, 5, generator=torch.Generator().manual_seed(0)
    )
    expected = direct_nt_xent(embeddings, temperature)
    assert float(nt_xent_loss(embeddings, temperature)) == pytest.approx(
        expected, rel=1e-5
    )


def test_aligned_views_beat_random_views() -> None:
    generator = torch.Generator().manual_seed(1)
    # Well-separated images: one-hot directions; views nearly identical.
    base = torch.eye(32)[:16] * 5
    aligned = torch.stack(
        [base + 0.01 * torch.randn(16, 32, generator=generator) for _ in range(2)]
    )
    random_views = torch.randn(2, 16, 32, generator=generator)

    aligned_loss = float(nt_xent_loss(aligned, 0.5))
    random_loss = float(nt_xent_loss(random_views, 0.5))
    assert aligned_loss < 0.5 * random_loss
    # Random views sit near log(2N - 1), the chance level.
    assert abs(random_loss - math.log(31)) < 0.3


def test_gradients_reach_every_view() -> None:
    embeddings = torch.randn(3, 8, 4, requires_grad=True)
    nt_xent_loss(embeddings, 0.5).backward()
    assert (embeddings.grad.abs().sum(dim=(1, 2)) > 0).all()
