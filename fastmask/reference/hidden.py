"""Reference ranks, top-k and Gumbel samples straight from hidden states: the oracles of the fused kernels.

The scores are ``hidden @ item_weight.T + bias`` in float32 (float16 and bfloat16 inputs widen exactly),
each one computed in this order, one rounding per operation::

    acc = +0.0
    for i in range(d):
        acc = acc + hidden[n, i] * item_weight[j, i]   # the product rounded, then the sum
    score = acc + bias[j]                               # when there is a bias

The C++ kernels compute every score in this order (no fused multiply-add), so they return the same bits
on any input. Tensor-core kernels (Triton) sum in their own order: they return the same bits where every
partial sum is exact (integer-valued inputs), and otherwise scores a few ulp apart.

On these scores the rules are those of ``ranking`` (higher score first, then lower item id; NaN above every
number; -0.0 == 0.0) and ``sampling`` (the Gumbel noise of column j of row p). Scores are computed for a
few rows at a time, so the reference needs no (N, V) tensor either.
"""
from __future__ import annotations

import numpy as np
import torch

from . import philox
from . import ranking as ref_ranking
from . import sampling as ref_sampling

_CHUNK_ELEMENTS = 2**22  # scores held at once


def _row_chunks(hidden: torch.Tensor, item_weight: torch.Tensor):
    rows = max(1, _CHUNK_ELEMENTS // max(1, item_weight.shape[0]))
    for first in range(0, hidden.shape[0], rows):
        yield first, min(first + rows, hidden.shape[0])


def item_scores(hidden: torch.Tensor, item_weight: torch.Tensor, bias) -> torch.Tensor:
    """float32 scores (N, V) of every row of ``hidden`` (N, d) for every item of ``item_weight`` (V, d)."""
    weight_by_dim = item_weight.float().t().contiguous()  # (d, V): one row per step of the sum
    acc = torch.zeros(hidden.shape[0], item_weight.shape[0], dtype=torch.float32, device=hidden.device)
    columns = hidden.float()
    for i in range(hidden.shape[1]):
        acc.add_(columns[:, i, None] * weight_by_dim[i])  # two roundings: the kernels use no FMA either
    if bias is not None:
        acc.add_(bias.float())
    return acc


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys of float32 ``scores`` in ranking order: NaN highest (all equal), -0.0 == 0.0."""
    bits = scores.contiguous().view(torch.int32)
    magnitude = bits & 0x7FFFFFFF
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys = torch.where(magnitude == 0, torch.zeros_like(keys), keys)
    return torch.where(magnitude > 0x7F800000, torch.full_like(keys, 0x7FFFFFFF), keys)


def target_ranks_from_hidden(hidden, item_weight, targets, bias) -> torch.Tensor:
    """``ranking.target_ranks`` of ``targets`` (N, M) on the scores: int64 (N, M), -1 outside [0, V)."""
    ranks = torch.empty(targets.shape, dtype=torch.int64, device=targets.device)
    for first, last in _row_chunks(hidden, item_weight):
        scores = item_scores(hidden[first:last], item_weight, bias)
        ranks[first:last] = ref_ranking.target_ranks(scores, targets[first:last])
    return ranks


def topk_from_hidden(hidden, item_weight, k: int, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 scores (N, k), int64 item ids (N, k)) of each row's k first items in ranking order."""
    rows = hidden.shape[0]
    values = torch.empty((rows, k), dtype=torch.float32, device=hidden.device)
    ids = torch.empty((rows, k), dtype=torch.int64, device=hidden.device)
    for first, last in _row_chunks(hidden, item_weight):
        scores = item_scores(hidden[first:last], item_weight, bias)
        order = ref_ranking.stable_descending_order(scores)[:, :k]
        ids[first:last] = order
        values[first:last] = torch.gather(scores, 1, order)
    return values, ids


def gumbel_argmax_from_hidden(hidden, item_weight, bias, seed) -> torch.Tensor:
    """``sampling.gumbel_argmax`` of the scores: one sample per row, int64 (N,)."""
    seed = philox.seed_value(seed)
    out = torch.empty(hidden.shape[0], dtype=torch.int64, device=hidden.device)
    for first, last in _row_chunks(hidden, item_weight):
        scores = item_scores(hidden[first:last], item_weight, bias)
        rows = np.arange(first, last, dtype=np.uint64)
        noise = ref_sampling.gumbel_noise(seed, rows, item_weight.shape[0]).to(hidden.device)
        out[first:last] = torch.argmax(scores + noise, dim=1)
    return out


def target_scores_from_hidden(hidden, item_weight, items, bias) -> torch.Tensor:
    """float32 score (N, M) of item ``items[n, m]`` for row n; 0 where the item is outside [0, V)."""
    out = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
    for first, last in _row_chunks(hidden, item_weight):
        chunk = items[first:last]
        inside = (chunk >= 0) & (chunk < item_weight.shape[0])
        if item_weight.shape[0] > 0:
            scores = item_scores(hidden[first:last], item_weight, bias)
            picked = torch.gather(scores, 1, torch.where(inside, chunk, 0))
            out[first:last] = torch.where(inside, picked, torch.zeros_like(picked))
    return out


def count_ahead_from_hidden(hidden, item_weight, bias, scores, items, first_item: int) -> torch.Tensor:
    """int64 (N, M): how many items of ``item_weight``, whose ids are ``first_item + j``, come before
    item ``items[n, m]`` scored ``scores[n, m]`` in row n's ranking order (the item itself never does).

    With the whole catalogue (``first_item = 0``) and the items' own scores, these are their ranks; with
    one slice of it, the slice's share of them.
    """
    counts = torch.zeros(items.shape, dtype=torch.int64, device=items.device)
    ids = first_item + torch.arange(item_weight.shape[0], device=items.device)
    for first, last in _row_chunks(hidden, item_weight):
        keys = order_keys(item_scores(hidden[first:last], item_weight, bias))
        target_keys = order_keys(scores[first:last].float())
        for m in range(items.shape[1]):
            target, item = target_keys[:, m, None], items[first:last, m, None]
            ahead = (keys > target) | ((keys == target) & (ids < item))
            counts[first:last, m] = ahead.sum(1)
    return counts
