"""Weighted k-NN classification on frozen features: DINO's monitor of what self-supervision learned
(``p1_ssl_pretrain.py``) and the separability of the t-SNE features (``p1_tsne.py``).

Each test feature votes with its k nearest training features (cosine similarity), each vote weighted by
exp(similarity / T); k=20 and T=0.07 as in DINO's ``eval_knn.py``.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: Optional[float] = 0.07, chunk: int = 1024,
                 leave_one_out: bool = False) -> torch.Tensor:
    """Predicted labels of ``test_features`` by cosine k-NN votes: each of the k most similar training features
    votes exp(similarity / temperature) (DINO's rule), or with ``temperature=None`` one vote each, the summed
    similarity breaking ties. ``leave_one_out``: the test features are the training features, and each point's
    own vote is left out. float64 inputs stay float64."""
    with torch.no_grad():
        dtype = torch.float64 if train_features.dtype == torch.float64 else torch.float32
        train = F.normalize(train_features.to(dtype), dim=1)
        test = F.normalize(test_features.to(dtype), dim=1)
        k = min(k, train.shape[0] - (1 if leave_one_out else 0))
        preds = []
        for start in range(0, test.shape[0], chunk):
            sim = test[start:start + chunk] @ train.T  # (b, N)
            if leave_one_out:
                rows = torch.arange(sim.shape[0], device=sim.device)
                sim[rows, rows + start] = -float("inf")
            top_sim, top_idx = sim.topk(k, dim=1)
            weights = (top_sim / temperature).exp() if temperature else 1.0 + top_sim / (2.0 * k)
            votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
            votes.scatter_add_(1, train_labels[top_idx].to(torch.int64), weights)
            preds.append(votes.argmax(1))
        return torch.cat(preds)
