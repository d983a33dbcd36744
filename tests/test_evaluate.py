"""Evaluation: k-NN voting and ties, weighted k-NN, linear probe, effective rank."""

import torch

from wmse.evaluate import (
    effective_rank,
    evaluate_features,
    knn_majority,
    knn_weighted,
    linear_probe,
)


def test_majority_vote() -> None:
    train = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    predicted = knn_majority(train, labels, torch.tensor([[0.5], [10.5]]), k=3)
    assert predicted.tolist() == [0, 1]


def test_tie_goes_to_the_nearest_neighbour() -> None:
    # Neighbours of 0.0 with k=4: 0.1 (class 2), 0.2 (class 1), 0.3 (class 2), 0.4 (class 1):
    # a 2-2 tie, broken by the nearest neighbour's class, 2.
    train = torch.tensor([[0.1], [0.2], [0.3], [0.4], [9.0]])
    labels = torch.tensor([2, 1, 2, 1, 0])
    assert knn_majority(train, labels, torch.tensor([[0.0]]), k=4).tolist() == [2]

    # Mirror the classes: the answer follows the nearest neighbour.
    assert knn_majority(
        train, torch.tensor([1, 2, 1, 2, 0]), torch.tensor([[0.0]]), k=4
    ).tolist() == [1]


def test_weighted_knn_prefers_close_neighbours() -> None:
    train = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]]), dim=1
    )
    labels = torch.tensor([0, 1, 1])
    scores = knn_weighted(
        train, labels, torch.tensor([[1.0, 0.05]]), k=3, temperature=0.07
    )
    assert scores.argmax(dim=1).tolist() == [0]


def test_linear_probe_separates_separable_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 20, generator=generator) * 3
    labels = torch.arange(5).repeat_interleave(100)
    features = centres[labels] + torch.randn(500, 20, generator=generator)
    logits = linear_probe(features, labels, features, epochs=30)
    assert (logits.argmax(dim=1) == labels).float().mean() > 0.97


def test_effective_rank_limits() -> None:
    generator = torch.Generator().manual_seed(0)
    isotropic = torch.randn(20000, 8, generator=generator)
    collapsed = torch.randn(1000, 1, generator=generator) * torch.ones(1, 8)

    assert 7.9 < effective_rank(isotropic) <= 8.0
    assert abs(effective_rank(collapsed) - 1.0) < 1e-3
    assert effective_rank(torch.zeros(10, 4)) == 0.0


def test_evaluate_features_on_clustered_data() -> None:
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 16, generator=generator) * 4
    train_labels = torch.arange(4).repeat(50)
    test_labels = torch.arange(4).repeat(10)
    train = centres[train_labels] + torch.randn(200, 16, generator=generator)
    test = centres[test_labels] + torch.randn(40, 16, generator=generator)

    result = evaluate_features(
        train, train_labels, test, test_labels, weighted_k=20, linear_epochs=20
    )
    assert result.knn_top1 == 100.0
    assert result.knn_weighted_top1 == 100.0
    assert result.linear_top1 == 100.0 and result.linear_top5 == 100.0
