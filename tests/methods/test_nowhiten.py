"""Only the no-whitening loss has a constant embedding as its optimum."""

import torch

from wmse import wmse_loss
from wmse.evaluate import effective_rank
from wmse.methods.nowhiten import normalized_mse_loss


def train_linear_embedding(loss_fn, steps: int = 300) -> torch.Tensor:
    """Fit a linear embedding (16 -> 8, with bias) to two noisy views of fixed inputs.

    The views of each input differ by noise as large as the inputs, so the only way to
    make them agree exactly is to ignore the input: a constant embedding.
    Returns the embeddings of the clean inputs, (256, 8).
    """
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 16, generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        noise = torch.randn(2, 256, 16, generator=generator)
        views = model(inputs + noise)  # (2, 256, 8)
        loss = loss_fn(views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return model(inputs)


def test_nowhiten_collapses_wmse_keeps_full_rank() -> None:
    slicing = torch.Generator().manual_seed(1)
    collapsed = train_linear_embedding(normalized_mse_loss)
    healthy = train_linear_embedding(
        lambda v: wmse_loss(v, w_size=64, generator=slicing)
    )

    # nowhiten: every input maps to (nearly) the same direction, effective rank ~ 1.
    directions = torch.nn.functional.normalize(collapsed, dim=1)
    mean_direction = torch.nn.functional.normalize(directions.mean(dim=0), dim=0)
    assert (directions @ mean_direction).min() > 0.99
    assert effective_rank(collapsed) < 1.5

    # wmse: the embeddings still use all 8 dimensions.
    assert effective_rank(healthy) > 6.0


def test_nowhiten_loss_values() -> None:
    same = torch.randn(1, 32, 4).expand(3, 32, 4)
    assert float(normalized_mse_loss(same)) < 1e-6
    opposite = torch.stack([torch.ones(5, 2), -torch.ones(5, 2)])
    assert abs(float(normalized_mse_loss(opposite)) - 4.0) < 1e-6
