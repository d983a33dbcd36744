"""BYOL: EMA update, no gradient to the target, the rate schedule."""

import math

import pytest
import torch

from wmse.config import RunConfig
from wmse.methods.byol import BYOL, ema_rate
from wmse.models import ProjectionHead, ResNetEncoder


def tiny_byol() -> BYOL:
    config = RunConfig()
    config.model.embedding_dim = 8
    config.model.head_hidden = 16
    encoder = ResNetEncoder(in_channels=1, width=4, stem_stride=2)
    head = ProjectionHead(encoder.feature_dim, 16, 8)
    return BYOL(encoder, head, config)


def test_rate_schedule() -> None:
    assert ema_rate(0, 100, 0.99) == pytest.approx(0.99)
    assert ema_rate(50, 100, 0.99) == pytest.approx(0.995)
    assert ema_rate(100, 100, 0.99) == pytest.approx(1.0)
    assert ema_rate(25, 100, 0.9) == pytest.approx(
        1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2
    )


def test_target_gets_no_gradient_and_follows_the_ema() -> None:
    torch.manual_seed(0)
    method = tiny_byol()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    views = torch.randn(2, 8, 1, 16, 16)

    before_target = {
        k: v.clone() for k, v in method.target_encoder.state_dict().items()
    }
    loss = method(views)
    optimizer.zero_grad()
    loss.backward()

    # No gradient anywhere in the target.
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert all(p.grad is None for p in method.target_head.parameters())
    assert method.encoder.conv1.weight.grad is not None

    # After the step, target = rate * old target + (1 - rate) * new online.
    optimizer.step()
    method.after_step(step=30, total_steps=100)
    rate = ema_rate(30, 100, 0.99)
    online = dict(method.encoder.named_parameters())
    for name, target in method.target_encoder.named_parameters():
        expected = rate * before_target[name] + (1 - rate) * online[name]
        torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(
        method.target_encoder.conv1.weight, before_target["conv1.weight"]
    )


def test_loss_is_zero_when_prediction_matches_target() -> None:
    torch.manual_seed(0)
    method = tiny_byol()
    method.predictor = torch.nn.Identity()  # online head output == target output
    method.eval()
    with torch.no_grad():
        loss = method(torch.randn(1, 4, 1, 16, 16).expand(3, 4, 1, 16, 16))
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
