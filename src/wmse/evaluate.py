"""Evaluation of a frozen encoder: k-NN, a linear probe and the effective rank.

Features are extracted once, in eval mode and without gradients; both classifiers then
work on the precomputed features, so a full evaluation costs one pass over the data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wmse.data.base import ImageDataset

__all__ = [
    "EvalResult",
    "effective_rank",
    "evaluate_features",
    "extract_features",
    "knn_majority",
    "knn_weighted",
    "linear_probe",
]

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset: ImageDataset,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Run ``model`` in eval mode over un-augmented, normalised images.

    Args:
        model: Maps (B, C, H, W) float images to (B, F) features.
        dataset: uint8 images of shape (N, C, H, W).

    Returns:
        float32 tensor of shape (N, F) on ``device``.
    """
    was_training = model.training
    model.eval()
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    chunks = []
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start : start + batch_size].to(
            device, non_blocking=True
        )
        pixels = (images.float() / 255 - mean_t) / std_t  # (B, C, H, W)
        chunks.append(model(pixels).float())
    model.train(was_training)
    return torch.cat(chunks)


def nearest_neighbours(
    query: torch.Tensor, keys: torch.Tensor, k: int, metric: str, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest keys of every query row, nearest first.

    Args:
        query: (Q, F) features; keys: (M, F) features.
        metric: "euclidean" (distance) or "cosine" (similarity).

    Returns:
        (scores, indices), both (Q, k): distances ascending or similarities descending.
    """
    if metric == "cosine":
        query, keys = F.normalize(query, dim=1), F.normalize(keys, dim=1)
    scores, indices = [], []
    for start in range(0, query.shape[0], chunk):
        block = query[start : start + chunk]
        if metric == "cosine":
            values, index = (block @ keys.T).topk(k, dim=1)  # (B, M) -> (B, k)
        else:
            values, index = torch.cdist(block, keys).topk(k, dim=1, largest=False)
        scores.append(values)
        indices.append(index)
    return torch.cat(scores), torch.cat(indices)


def knn_majority(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 5,
    metric: str = "euclidean",
) -> torch.Tensor:
    """Predict by majority vote of the k nearest training points; ties go to the class
    of the nearest neighbour among the tied classes.

    Args:
        train_features: (M, F); train_labels: (M,) int64; test_features: (Q, F).

    Returns:
        Predicted labels, (Q,) int64.
    """
    _, index = nearest_neighbours(test_features, train_features, k, metric)
    neighbour_labels = train_labels[index]  # (Q, k), nearest first
    num_classes = int(train_labels.max()) + 1

    # Votes per class: (Q, K)
    votes = F.one_hot(neighbour_labels, num_classes).sum(dim=1)
    tied = votes == votes.max(dim=1, keepdim=True).values  # (Q, K)

    # The first (nearest) neighbour whose class is among the tied winners.
    is_winner = tied.gather(1, neighbour_labels)  # (Q, k)
    first = is_winner.int().argmax(dim=1, keepdim=True)  # (Q, 1)
    return neighbour_labels.gather(1, first).squeeze(1)


def knn_weighted(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 200,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Weighted k-NN on cosine similarity: each of the k neighbours votes with weight
    exp(similarity / temperature).

    Returns:
        Class scores, (Q, K): argmax for top-1, topk for top-5.
    """
    k = min(k, train_features.shape[0])
    similarity, index = nearest_neighbours(test_features, train_features, k, "cosine")
    weights = (similarity / temperature).exp()  # (Q, k)
    num_classes = int(train_labels.max()) + 1
    one_hot = F.one_hot(train_labels[index], num_classes).float()  # (Q, k, K)
    return (weights.unsqueeze(2) * one_hot).sum(dim=1)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 5e-6,
    batch_size: int = 1000,
    seed: int = 0,
) -> torch.Tensor:
    """Train a linear classifier on standardised precomputed features.

    Adam with cosine decay of the learning rate to ~0, as in the paper's evaluation
    (which uses 500 epochs; fewer suffice on standardised features).

    Returns:
        Test logits, (Q, K).
    """
    generator = torch.Generator().manual_seed(seed)
    device = train_features.device

    # Standardise with training statistics: (M, F), (Q, F)
    mean = train_features.mean(dim=0)
    std = train_features.std(dim=0).clamp(min=1e-6)
    train_x = (train_features - mean) / std
    test_x = (test_features - mean) / std

    num_classes = int(train_labels.max()) + 1
    torch.manual_seed(seed)
    classifier = nn.Linear(train_x.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(
        classifier.parameters(), lr=lr, weight_decay=weight_decay
    )
    steps_per_epoch = math.ceil(train_x.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch, eta_min=lr * 1e-4
    )

    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(train_x.shape[0], generator=generator).to(device)
            for start in range(0, train_x.shape[0], batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(classifier(train_x[batch]), train_labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    with torch.no_grad():
        return classifier(test_x)


def effective_rank(embeddings: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli, 2007) of the embeddings' covariance.

    exp of the entropy of the normalised eigenvalues: D for isotropic embeddings,
    1 when they have collapsed onto a line. A collapse signal.

    Args:
        embeddings: (N, D).
    """
    centred = embeddings.double() - embeddings.double().mean(dim=0)
    cov = centred.T @ centred / max(embeddings.shape[0] - 1, 1)  # (D, D)
    eigenvalues = torch.linalg.eigvalsh(cov).clamp(min=0)
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues / total
    entropy = -(p * p.clamp(min=1e-30).log()).sum()
    return float(entropy.exp())


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of rows whose label is among the k highest scores."""
    k = min(k, scores.shape[1])
    hits = (scores.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
    return 100.0 * float(hits.float().mean())


@dataclass
class EvalResult:
    """Accuracies in percent on the test split."""

    knn_top1: float
    knn_weighted_top1: float
    linear_top1: float
    linear_top5: float
    effective_rank: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return dict(self.__dict__)


def evaluate_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    knn_k: int = 5,
    weighted_k: int = 200,
    temperature: float = 0.07,
    linear_epochs: int = 100,
    linear_lr: float = 1e-2,
    seed: int = 0,
) -> EvalResult:
    """k-NN (majority, Euclidean), weighted k-NN (cosine) and linear probe accuracies."""
    train_labels = train_labels.to(train_features.device)
    test_labels = test_labels.to(test_features.device)

    # Majority-vote k-NN on Euclidean distance, as in the paper's evaluation.
    predicted = knn_majority(train_features, train_labels, test_features, knn_k)
    knn_top1 = 100.0 * float((predicted == test_labels).float().mean())

    # Weighted k-NN on cosine similarity.
    scores = knn_weighted(
        train_features, train_labels, test_features, weighted_k, temperature
    )
    weighted_top1 = topk_accuracy(scores, test_labels, 1)

    # Linear probe on standardised features.
    logits = linear_probe(
        train_features, train_labels, test_features, linear_epochs, linear_lr, seed=seed
    )
    return EvalResult(
        knn_top1=knn_top1,
        knn_weighted_top1=weighted_top1,
        linear_top1=topk_accuracy(logits, test_labels, 1),
        linear_top5=topk_accuracy(logits, test_labels, 5),
    )
