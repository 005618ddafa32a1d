"""Reference ranks: the position of an item in its row sorted by descending score.

Order: higher score first; among equal scores the lower column first; NaN above every number
(``torch.sort(descending=True, stable=True)`` on the CPU). ``-0.0`` equals ``0.0``, and every NaN
is the same, whatever its sign: they are made so before sorting, since some device sorts order the
sign bits of zeros and NaNs (``torch.sort`` of bfloat16 on CUDA does).
"""
from __future__ import annotations

import torch


def stable_descending_order(scores: torch.Tensor) -> torch.Tensor:
    """Column indices of each row of ``scores`` (N, V) in ranking order."""
    if scores.is_floating_point():
        scores = scores.masked_fill(scores == 0, 0.0).masked_fill_(torch.isnan(scores), float("nan"))
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def target_ranks(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``items[n, m]`` in row n of ``scores``; -1 where the item is outside [0, V)."""
    if scores.shape[1] == 0:  # no column, so no item in [0, V); gather has nothing to read
        return torch.full_like(items, -1)
    order = stable_descending_order(scores)
    rank_of_column = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank_of_column.scatter_(1, order, positions)
    ranked = (items >= 0) & (items < scores.shape[1])
    ranks = torch.gather(rank_of_column, 1, torch.where(ranked, items, 0))
    return torch.where(ranked, ranks, torch.full_like(ranks, -1))


# --- Ranking metrics -------------------------------------------------------------------------
# Transformers4Rec's formulas (``transformers4rec.torch.ranking_metric``) on ``topk``: the (N, K)
# labels of each row's top-K items in ``stable_descending_order``, K = max(ks), as a contiguous
# tensor in the labels' dtype. Each keeps the reference's operations, dtypes and order of
# operations, so the float32 results are bit-identical to it for the same ``topk``.

# float32 log(2) read back as a Python float, the reference's DCG log base.
_LOG2_FLOAT32 = torch.log(torch.tensor([2.0], dtype=torch.float32)).item()


def topk_labels(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Labels (N, V) of the k best-scored items of each row, best first: (N, k), labels' dtype."""
    return torch.gather(labels, 1, stable_descending_order(scores)[:, :k])


def ideal_labels(topk: torch.Tensor) -> torch.Tensor:
    """``topk`` re-sorted by label value, best first: NDCG's ideal ordering of the retrieved labels."""
    return torch.gather(topk, 1, stable_descending_order(topk))


def _placeholder(topk: torch.Tensor, ks) -> torch.Tensor:
    return torch.zeros(topk.shape[0], len(ks), dtype=torch.float32, device=topk.device)


def precision_at(ks, topk: torch.Tensor) -> torch.Tensor:
    """P@k = sum of the first k labels / k."""
    precisions = _placeholder(topk, ks)
    for index, k in enumerate(ks):
        precisions[:, index] = torch.sum(topk[:, :k], dim=1) / float(k)
    return precisions


def recall_at(ks, topk: torch.Tensor, num_relevant: torch.Tensor, every_row_relevant: bool = False):
    """R@k = sum of the first k labels / num_relevant; 0 where num_relevant is 0.

    The relevant rows are found with ``nonzero`` (a device sync) unless ``every_row_relevant``
    says that they all are.
    """
    recalls = _placeholder(topk, ks)
    if every_row_relevant:
        rows = torch.arange(topk.shape[0], device=topk.device)
    else:
        rows = (num_relevant != 0).nonzero().squeeze(dim=1)
    if rows.shape[0] > 0:
        relevant_count = num_relevant[rows]
        for index, k in enumerate(ks):
            hits = torch.sum(topk[rows, :k], dim=-1)
            recalls[rows, index] = torch.div(hits, relevant_count).to(dtype=torch.float32)
    return recalls


def avg_precision_at(ks, topk: torch.Tensor, num_relevant: torch.Tensor) -> torch.Tensor:
    """AP@k = sum_{i<k} label_i * P@(i+1) / clamp(num_relevant, 1, k)."""
    avg_precisions = _placeholder(topk, ks)
    precisions = precision_at(range(1, topk.shape[1] + 1), topk)
    relevant_precisions = precisions * topk
    for index, k in enumerate(ks):
        total = relevant_precisions[:, :k].sum(dim=1)
        avg_precisions[:, index] = total / num_relevant.clamp(min=1, max=k).to(dtype=torch.float32)
    return avg_precisions


def dcg_at(ks, topk: torch.Tensor) -> torch.Tensor:
    """DCG@k = sum_{i<k} label_i / log2(i + 2) (linear gain)."""
    dcgs = _placeholder(topk, ks)
    positions = torch.arange(topk.shape[1], device=topk.device, dtype=torch.float32)
    discounts = 1 / (torch.log(positions + 2) / _LOG2_FLOAT32)
    for index, k in enumerate(ks):
        dcgs[:, index] = torch.sum(topk[:, :k] * discounts[:k], dim=1).to(dtype=torch.float32)
    return dcgs


def ndcg_at(ks, topk: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
    """DCG@k / DCG@k of ``ideal`` (the retrieved labels re-sorted, not all labels); 0 where that is 0."""
    gains = dcg_at(ks, topk)
    ideal_gains = dcg_at(ks, ideal)
    return torch.where(ideal_gains != 0, gains / ideal_gains, torch.zeros_like(gains))


def reciprocal_rank_at(ks, topk: torch.Tensor) -> torch.Tensor:
    """RR@k = max_{i<k} label_i / (i + 1)."""
    results = _placeholder(topk, ks)
    for index, k in enumerate(ks):
        ranks = torch.arange(k, device=topk.device) + 1
        results[:, index] = (topk[:, :k] / ranks).max(dim=1).values
    return results
