"""The W-MSE method whitens in the configured precision."""

import pytest
import torch

from wmse import wmse_loss
from wmse.config import RunConfig
from wmse.train import build_method


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_whitening_precision_reaches_the_loss(precision: str) -> None:
    config = RunConfig()
    config.model.width = 4
    config.model.embedding_dim = 8
    config.loss.w_size = 32
    config.loss.whitening_precision = precision
    method = build_method(config, image_size=28, channels=1)

    embeddings = torch.randn(4, 64, 8, generator=torch.Generator().manual_seed(0))
    loss = method.embedding_loss(embeddings, torch.Generator().manual_seed(1))

    dtype = getattr(torch, precision)
    expected = wmse_loss(
        embeddings, w_size=32, generator=torch.Generator().manual_seed(1), dtype=dtype
    )
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
