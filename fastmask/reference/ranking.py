"""Reference ranks: the position of an item in its row sorted by descending score.

Order: higher score first; among equal scores the lower column first; NaN above every number
(``torch.sort(descending=True, stable=True)``). ``-0.0`` equals ``0.0``.
"""
from __future__ import annotations

import torch


def stable_descending_order(scores: torch.Tensor) -> torch.Tensor:
    """Column indices of each row of ``scores`` (N, V) in ranking order."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def target_ranks(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``items[n, m]`` in row n of ``scores``; -1 where the item is -1."""
    order = stable_descending_order(scores)
    rank_of_column = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank_of_column.scatter_(1, order, positions)
    valid = items >= 0
    ranks = torch.gather(rank_of_column, 1, items.clamp(min=0))
    return torch.where(valid, ranks, torch.full_like(ranks, -1))
