"""Ranks and top-k straight from hidden states, in one process or over a catalogue sharded across processes.

The scores ``hidden @ item_weight.T + bias`` are computed a tile of items at a time by the ops
``target_ranks_from_hidden`` and ``topk_from_hidden`` (``fastmask.ops``) and never stored: extra memory
O(N * (M + k)) plus one tile, whatever the number of items.

Sharded catalogues: with ``first_item``, ``item_weight`` (and ``bias``) hold items ``first_item`` ..
``first_item + V_local - 1`` of a catalogue whose slices, one per process of ``group`` (default: the
whole world of ``torch.distributed``), tile ``[0, V)`` without gaps. Every process of the group makes
the same call with the same ``hidden`` and ``targets`` and its own slice, and gets the single-process
result: a target's score comes from the process holding it, its rank is the sum of each slice's count
of items ahead of it, and the top-k is the merge of the slices' top-k.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from . import ops
from .reference import ranking as rules


class HiddenScores:
    """The scores ``hidden @ item_weight.T + bias`` of a batch, never built: what ranking metrics take in
    place of an (N, V) tensor of scores (``RankingMetric.update``).

    ``hidden`` (..., d) is flattened to (N, d) rows like scores are; ``first_item`` and ``group`` describe
    a sharded catalogue (see the module).
    """

    __slots__ = ("hidden", "item_weight", "bias", "first_item", "group", "sources", "_extents")

    def __init__(self, hidden: Tensor, item_weight: Tensor, bias: Optional[Tensor] = None, *,
                 first_item: Optional[int] = None, group=None):
        for name, value in (("hidden", hidden), ("item_weight", item_weight)):
            if not isinstance(value, Tensor) or value.dim() < 1:
                raise TypeError(f"{name} must be a tensor with d in its last dimension, got {type(value).__name__}")
        # The tensors as given: they identify the batch (ranking metrics share one pass per batch).
        self.sources = tuple(t for t in (hidden, item_weight, bias) if t is not None)
        self.hidden = hidden.detach().reshape(-1, hidden.shape[-1])
        self.item_weight = item_weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.first_item = first_item
        self.group = group
        self._extents = None

    @property
    def rows(self) -> int:
        return self.hidden.shape[0]

    @property
    def num_items(self) -> int:
        """Items in the whole catalogue (a collective call on a sharded one, made once)."""
        return self.extents()[1]

    def extents(self) -> tuple[int, int]:
        """(first_item of this slice, items in the whole catalogue)."""
        if self._extents is None:
            self._extents = (0, self.item_weight.shape[0]) if self.first_item is None else _catalogue_extents(
                self.first_item, self.item_weight.shape[0], self.group)
        return self._extents

    def materialize(self) -> Tensor:
        """The float32 (N, V) scores (for code that needs them all; single process only)."""
        if self.first_item is not None:
            raise ValueError("the scores of a sharded catalogue are not gathered into one tensor")
        scores = self.hidden.float() @ self.item_weight.float().T
        return scores if self.bias is None else scores + self.bias.float()


def _catalogue_extents(first_item: int, items: int, group) -> tuple[int, int]:
    """Checks that the slices of the group tile [0, V) in order; (first_item, V)."""
    if type(first_item) is not int or first_item < 0:
        raise ValueError(f"first_item must be a non-negative int, got {first_item!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "first_item describes a catalogue sharded over processes: torch.distributed must be initialized"
        )
    extents = [None] * dist.get_world_size(group)
    dist.all_gather_object(extents, (first_item, items), group=group)
    expected = 0
    for start, count in sorted(extents):
        if start != expected:
            raise ValueError(
                f"the catalogue slices (first_item, items) {sorted(extents)} must tile [0, V) without gaps"
            )
        expected = start + count
    return first_item, expected


def _all_reduce_sum(tensor: Tensor, group) -> Tensor:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def target_ranks(hidden: Tensor, item_weight: Tensor, targets: Tensor, bias: Optional[Tensor] = None, *,
                 first_item: Optional[int] = None, group=None) -> Tensor:
    """0-based rank of ``targets[n, m]`` (item ids, int64 (N, M)) among row n's scores (higher score, then
    lower id), -1 for ids outside the catalogue; see ``ops.target_ranks_from_hidden``."""
    if first_item is None:
        return ops.target_ranks_from_hidden(hidden, item_weight, targets, bias)
    first_item, num_items = _catalogue_extents(first_item, item_weight.shape[0], group)
    local = targets - first_item
    held = (local >= 0) & (local < item_weight.shape[0])
    scores = ops.target_scores_from_hidden(hidden, item_weight, torch.where(held, local, -1), bias)
    # Exactly one process holds each target; the others add +0.0, which leaves the score as it is.
    scores = _all_reduce_sum(torch.where(held, scores, 0.0), group)
    counts = _all_reduce_sum(ops.count_ahead_from_hidden(hidden, item_weight, bias, scores, targets, first_item), group)
    return torch.where((targets >= 0) & (targets < num_items), counts, -1)


def topk(hidden: Tensor, item_weight: Tensor, k: int, bias: Optional[Tensor] = None, *,
         first_item: Optional[int] = None, group=None) -> tuple[Tensor, Tensor]:
    """(float32 scores, int64 item ids), (N, k): each row's k first items, best first; see
    ``ops.topk_from_hidden``."""
    if first_item is None:
        return ops.topk_from_hidden(hidden, item_weight, k, bias)
    first_item, num_items = _catalogue_extents(first_item, item_weight.shape[0], group)
    if type(k) is not int or not 0 <= k <= num_items:
        raise ValueError(f"k must be an int in [0, {num_items}] (the catalogue's items), got {k!r}")
    scores, ids = ops.topk_from_hidden(hidden, item_weight, min(k, item_weight.shape[0]), bias)
    # A slice with fewer than k items pads with entries ranked after every item: -inf, the largest id.
    pad = k - scores.shape[1]
    scores = torch.cat([scores, scores.new_full((scores.shape[0], pad), float("-inf"))], 1)
    ids = torch.cat([ids + first_item, ids.new_full((ids.shape[0], pad), torch.iinfo(torch.int64).max)], 1)
    world = dist.get_world_size(group)
    all_scores = [torch.empty_like(scores) for _ in range(world)]
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(all_scores, scores, group=group)
    dist.all_gather(all_ids, ids, group=group)
    scores, ids = torch.cat(all_scores, 1), torch.cat(all_ids, 1)
    # The ranking order of the candidates: by id first, so that the stable order breaks ties by id.
    by_id = ids.argsort(dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    order = rules.stable_descending_order(scores)[:, :k]
    return scores.gather(1, order), ids.gather(1, order)
