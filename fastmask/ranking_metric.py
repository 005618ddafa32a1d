"""Drop-in replacement for ``transformers4rec.torch.ranking_metric``.

Same classes, constructor arguments, registry names, state and results (bit for bit) as
Transformers4Rec's torchmetrics ranking metrics; the top-k step runs on ``fastmask.ops.target_ranks``
instead of ``torch.topk`` over the whole catalogue.

How each update finds the labels of the top-K items (K = max(top_ks)):

* ``labels_onehot=True`` (targets are item ids): the rank of each target among its row's scores, from
  one ``target_ranks`` call. No (N, V) one-hot tensor is built and nothing is sorted.
* ``labels_onehot=False`` (dense (N, V) labels): the relevant items (label != 0) that can reach a row's
  top K are gathered into an (N, M) tensor, M = the most in a row, and ranked the same way. On the
  CPU, when K * ``RANK_BLOCK`` + V % ``RANK_BLOCK`` is at most V/4, one pass over the scores takes the
  maximum of each block of ``RANK_BLOCK`` columns; only items scored at least the K-th largest block
  maximum (NaN counted as +inf; found by ``torch.kthvalue``, a selection among the V / ``RANK_BLOCK``
  maxima), or NaN, can reach the top K, and they are ranked among the few blocks whose maximum reaches
  it and the last V % ``RANK_BLOCK`` columns, which hold every item ahead of them. So labels are read
  only there (and summed over each row for recall and average precision). Otherwise (on a GPU, or
  where so many maxima tie with it that those columns pass V/4), every relevant item is ranked among
  the whole row. Neither sorts. Finding M (and the blocks) reads them back to the host (a device
  sync), as does the reference's choice of rows for recall. When M exceeds ``MAX_RANKED_RELEVANT`` the
  batch falls back to a full stable sort, since ranking each item costs a pass over the row it is
  ranked in.
* Integer scores (accepted by the reference) also use the full sort.
* ``update_from_hidden(hidden, item_weight, target, bias=None)`` (or ``update(HiddenScores(...), target)``)
  takes the scores as ``hidden @ item_weight.T + bias`` and never builds them: item-id targets are ranked
  by ``target_ranks_from_hidden``, dense labels are read at the ids ``topk_from_hidden`` returns
  (``fastmask.hidden``, which also serves catalogues sharded across processes).

Metrics updated on one batch share its ranking: a model updates each of its metrics with the same
preds and target tensors, and the pass over the (N, V) scores is what an update costs. The last
batch's ranked labels (by K) are kept per thread, keyed by the very tensor objects (weak references,
so nothing is kept alive) and their version counters: an in-place change or another tensor ranks
again. Changes that bypass the version counter (writes through ``.data``) are not seen.

Ordering: higher score first; equal scores in column order (lower item id first); NaN above every
number, so NaN-scored items are ranked first. This is ``torch.sort(descending=True, stable=True)``,
which the reference's ``torch.topk`` matches on its own test cases; ``torch.topk`` itself leaves the
order of ties unspecified. Scores are ranked in their own dtype and labels keep theirs through the
formulas, as in current Transformers4Rec (older versions cast both to float32 first, which
turns float64 scores closer than float32 precision into ties).

Kept from the reference: NDCG's ideal DCG re-sorts the retrieved top-K labels, not all labels, and
is 0 (giving NDCG 0) where no relevant item was retrieved; graded labels make precision and
average precision exceed 1; ``compute()`` averages over rows, not over batches.

A subclass that defines its own ``_metric`` (the reference's way to add a metric) is updated as the
reference does: one-hot labels built where ``labels_onehot``, then its ``_metric`` on (N, V) tensors.

Beyond the reference: bad ``top_ks``, shapes and target ids raise ``ValueError`` (the reference fails
inside ``torch.topk`` or ``scatter``, or not at all); the target-id range check reads a flag back to
the host, except under ``torch.compile`` and CUDA-graph capture.
"""
from __future__ import annotations

import operator
import threading
import weakref
from typing import NamedTuple, Optional

import torch
import torchmetrics as tm
from torchmetrics.utilities.data import dim_zero_cat

from . import hidden as from_hidden
from . import ops
from ._checks import data_checks_enabled
from .hidden import HiddenScores
from .reference import ranking as rules
from .registry import ClassRegistry

ranking_metrics_registry = ClassRegistry("torch.ranking_metrics")

DEFAULT_TOP_KS = (2, 5)
# Ranking M relevant items costs about M passes over a row (O(V·M)); sorting it costs O(V log V), so
# a batch whose busiest row has more relevant items to rank than this is sorted instead.
MAX_RANKED_RELEVANT = 64
# Columns per block in the block maxima that narrow each row down to the part that decides its top K.
RANK_BLOCK = 64


class RankedLabels(NamedTuple):
    """What the formulas need from one batch."""

    topk: torch.Tensor  # (N, K) labels of each row's top-K items, best first, labels' dtype
    num_relevant: Optional[torch.Tensor]  # (N,) sum of each row's labels, when asked for
    every_row_relevant: bool  # every num_relevant is known to be non-zero
    ideal: Optional[torch.Tensor]  # (N, K) topk re-sorted by label (NDCG only)


def normalize_top_ks(top_ks, num_items: Optional[int] = None) -> list:
    """``top_ks`` as a list of positive ints, at most ``num_items`` when given; a single int is one cutoff."""
    if isinstance(top_ks, torch.Tensor):
        top_ks = top_ks.tolist()
    if not isinstance(top_ks, (list, tuple)):
        top_ks = [top_ks]
    if len(top_ks) == 0:
        raise ValueError("top_ks must hold at least one cutoff, got an empty list")
    cutoffs = []
    for k in top_ks:
        if isinstance(k, bool):
            raise ValueError(f"top_ks must be positive ints, got {top_ks!r}")
        try:
            cutoffs.append(operator.index(k))
        except TypeError:
            raise ValueError(f"top_ks must be positive ints, got {top_ks!r}") from None
    if min(cutoffs) < 1:
        raise ValueError(f"top_ks must be positive ints, got {top_ks!r}")
    if num_items is not None and max(cutoffs) > num_items:
        raise ValueError(f"top_ks must not exceed the number of items ({num_items}), got {top_ks!r}")
    return cutoffs


def _scatter_ranked(ranks: torch.Tensor, values: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) tensor holding ``values[n, m]`` at column ``ranks[n, m]`` where that rank is in [0, k)."""
    column = torch.where((ranks >= 0) & (ranks < k), ranks, k)  # column k collects the rest
    out = torch.zeros(ranks.shape[0], k + 1, dtype=values.dtype, device=values.device)
    return out.scatter_(1, column, values)[:, :k].contiguous()


def _sorted_by_label(topk: torch.Tensor) -> torch.Tensor:
    """``rules.ideal_labels`` without a sort: each label's place from ``target_ranks`` on the labels."""
    keys = topk if topk.is_floating_point() else topk.to(torch.float64)
    slots = torch.arange(topk.shape[1], device=topk.device).expand(topk.shape)
    places = ops.target_ranks(keys, slots.contiguous())
    return torch.empty_like(topk).scatter_(1, places, topk)


def _one_hot(items: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The reference's dense labels for item ids ``items`` (N,): float32 (N, V) like ``scores``."""
    labels = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
    return labels.scatter_(1, items.unsqueeze(1), 1.0)


def rank_item_ids(scores: torch.Tensor, items: torch.Tensor, k: int, need_ideal: bool) -> RankedLabels:
    """One-hot labels given as item ids ``items`` (N,): float32 labels, as the reference's one-hot."""
    if not scores.is_floating_point():
        return rank_dense(scores, _one_hot(items, scores), k, need_ideal)
    return _ranked_item_ids(ops.target_ranks(scores, items.unsqueeze(1)), k, need_ideal)  # checked by _item_ids


def _ranked_item_ids(ranks: torch.Tensor, k: int, need_ideal: bool) -> RankedLabels:
    """The ranked one-hot labels of items whose ranks are ``ranks`` (N, 1)."""
    topk = _scatter_ranked(ranks, torch.ones(ranks.shape, dtype=torch.float32, device=ranks.device), k)
    ideal = None
    if need_ideal:  # at most one 1: re-sorted, it comes first
        ideal = torch.zeros_like(topk)
        ideal[:, 0] = (ranks[:, 0] < k).to(torch.float32)
    num_relevant = torch.ones(ranks.shape[0], dtype=torch.float32, device=ranks.device)
    return RankedLabels(topk, num_relevant, True, ideal)


def _rank_by_sorting(scores, labels, k, need_ideal, num_relevant) -> RankedLabels:
    topk = rules.topk_labels(scores, labels, k)
    return RankedLabels(topk, num_relevant, False, rules.ideal_labels(topk) if need_ideal else None)


def _left_aligned(relevant: torch.Tensor, labels: Optional[torch.Tensor] = None):
    """Each row's columns where ``relevant`` (R, C) holds, left-aligned in an (R, M) int64 tensor padded
    with -1 (M = the most in a row, read back to the host), and ``labels`` (R, C) at those columns."""
    rows, cols = relevant.nonzero(as_tuple=True)  # row-major: each row's columns are contiguous
    per_row = torch.bincount(rows, minlength=relevant.shape[0])
    most = int(per_row.max()) if rows.shape[0] else 0
    slots = torch.arange(rows.shape[0], device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    items = torch.full((relevant.shape[0], most), -1, dtype=torch.int64, device=relevant.device)
    items[rows, slots] = cols
    if labels is None:
        return items, None
    values = torch.zeros(items.shape, dtype=labels.dtype, device=labels.device)
    values[rows, slots] = labels[rows, cols]
    return items, values


def _near_top(scores: torch.Tensor, labels: torch.Tensor, k: int):
    """The part of each row of ``scores`` (N, V) that decides its top k and the relevant items there:
    (candidate scores (N, C), items (N, M) as candidate columns, -1 for none, their labels (N, M)), or
    None where that part is not a small share of the row.

    Let t be the k-th largest maximum of the blocks of ``RANK_BLOCK`` columns (NaN counted as +inf;
    the last V % RANK_BLOCK columns are no block). An item scored below t (not NaN) has k items ahead
    of it, one in each block with a larger maximum, so only items scored t or more, or NaN, can be in
    the top k, and every item ahead of one of those is one too. They all lie in the blocks whose maximum
    reaches t or in the last columns: the candidates, in column order. Rows with fewer such blocks are
    padded with copies of their lowest block, whose items are all below t (else every block would
    reach it), so never ahead of those scored t or more, or NaN. So the ranks of these among the
    candidates are their ranks in the row; the relevant ones among them are returned.
    """
    rows, num_items = scores.shape
    whole = num_items - num_items % RANK_BLOCK
    small_share = num_items // 4 - (num_items - whole)
    if rows == 0 or k * RANK_BLOCK > small_share:
        return None
    block_scores = scores[:, :whole].view(rows, -1, RANK_BLOCK)
    inf = float("inf")
    maxima = block_scores.amax(2).nan_to_num_(nan=inf, posinf=inf, neginf=-inf)
    threshold = maxima.kthvalue(maxima.shape[1] - k + 1, dim=1, keepdim=True).values
    blocks, _ = _left_aligned(maxima >= threshold)
    if blocks.shape[1] * RANK_BLOCK > small_share:  # many block maxima tie with t
        return None
    blocks = torch.where(blocks >= 0, blocks, maxima.argmin(1, keepdim=True))
    row = torch.arange(rows, device=scores.device).unsqueeze(1)
    candidates = block_scores[row, blocks].view(rows, -1)
    near_labels = labels[:, :whole].unflatten(1, (-1, RANK_BLOCK))[row, blocks].view(rows, -1)
    if whole < num_items:
        candidates = torch.cat([candidates, scores[:, whole:]], 1)
        near_labels = torch.cat([near_labels, labels[:, whole:]], 1)
    near, near_values = _left_aligned((candidates < threshold).logical_not_(), near_labels)  # >= t or NaN
    slots, values = _left_aligned(near_values != 0, near_values)
    items = near.gather(1, slots.clamp(min=0)).masked_fill_(slots < 0, -1)
    return candidates, items, values


def rank_dense(scores: torch.Tensor, labels: torch.Tensor, k: int, need_ideal: bool,
               need_num_relevant: bool = True) -> RankedLabels:
    """Dense labels (N, V) of any dtype; the relevant items are those with label != 0."""
    num_relevant = torch.sum(labels, dim=-1) if need_num_relevant else None
    if not scores.is_floating_point():
        return _rank_by_sorting(scores, labels, k, need_ideal, num_relevant)
    scores = scores.contiguous()
    # On a GPU whole-row passes cost less than the extra launches and syncs of narrowing the rows down.
    near = _near_top(scores, labels, k) if scores.device.type == "cpu" else None
    if near is None:
        ranked_scores = scores
        items, values = _left_aligned(labels != 0, labels)
    else:
        ranked_scores, items, values = near
    if items.shape[1] > MAX_RANKED_RELEVANT:
        return _rank_by_sorting(scores, labels, k, need_ideal, num_relevant)
    if items.shape[1] == 0:
        topk = torch.zeros(labels.shape[0], k, dtype=labels.dtype, device=labels.device)
        return RankedLabels(topk, num_relevant, False, topk if need_ideal else None)
    topk = _scatter_ranked(ops.target_ranks(ranked_scores, items), values, k)
    return RankedLabels(topk, num_relevant, False, _sorted_by_label(topk) if need_ideal else None)


def _item_ids(target: torch.Tensor, rows: int, num_items: int) -> torch.Tensor:
    """One int64 item id per row of (N, V) scores, checked to lie in [0, V)."""
    items = target.detach().reshape(-1).to(torch.int64)
    if items.shape[0] != rows:
        raise ValueError(
            f"target must hold one item id per row of preds ({rows}), got shape {tuple(target.shape)}"
        )
    if data_checks_enabled(items, True) and ((items < 0) | (items >= num_items)).any():
        raise ValueError(f"target item ids must be in [0, {num_items}) for preds with {num_items} items")
    return items


def _dense_labels(target: torch.Tensor, shape) -> torch.Tensor:
    """``target`` flattened to labels of the scores' ``shape`` (N, V)."""
    labels = target.detach().reshape(-1, target.shape[-1]) if target.dim() else target
    if labels.shape != tuple(shape):
        raise ValueError(
            f"target must be labels of shape (N, V) = {tuple(shape)} once flattened, "
            f"got shape {tuple(target.shape)}"
        )
    return labels


def _completed(ranked: RankedLabels, labels: torch.Tensor, need_ideal: bool, need_num_relevant: bool):
    """``ranked`` with the parts a metric needs that an earlier metric did not."""
    if need_num_relevant and ranked.num_relevant is None:
        ranked = ranked._replace(num_relevant=torch.sum(labels, dim=-1))
    if need_ideal and ranked.ideal is None:
        ranked = ranked._replace(ideal=_sorted_by_label(ranked.topk))
    return ranked


_last_batch = threading.local()


def _batch_results(tensors: tuple, labels_onehot: bool) -> dict:
    """The ranked labels of the batch given by ``tensors`` (preds and target, or the hidden states, item
    table, bias and target), by K, shared by every metric updated on it.

    The entry is the last batch's: the very same tensor objects (held by weak references, so nothing
    is kept alive), unchanged since (same version counters). A fresh dict otherwise, and always under
    torch.compile and for inference tensors, which have no version counter.
    """
    if torch.compiler.is_compiling() or any(tensor.is_inference() for tensor in tensors):
        return {}
    key = (tuple(tensor._version for tensor in tensors), labels_onehot)
    entry = getattr(_last_batch, "entry", None)
    if (entry is not None and len(entry[0]) == len(tensors) and entry[1] == key
            and all(ref() is t for ref, t in zip(entry[0], tensors, strict=True))):
        return entry[2]
    results: dict = {}
    _last_batch.entry = (tuple(weakref.ref(tensor) for tensor in tensors), key, results)
    return results


class RankingMetric(tm.Metric):
    """Mean over all rows seen of a ranking metric at each cutoff in ``top_ks``.

    Parameters
    ----------
    top_ks : list of int or int, default [2, 5]
        cutoffs; read at every update, so they may be changed after construction
    labels_onehot : bool, default False
        targets are item ids (one per row) instead of dense (N, V) labels; read at every update
    """

    is_differentiable = False
    higher_is_better = True
    # The batch value comes from one update on a fresh state, then the states are concatenated.
    full_state_update = False
    _needs_ideal = False
    _needs_num_relevant = False

    def __init__(self, top_ks=None, labels_onehot=False):
        super().__init__()
        # As the reference: no cutoffs (None, [], 0) means the default ones; a single one is wrapped.
        if top_ks is None or (not isinstance(top_ks, torch.Tensor) and not top_ks):
            top_ks = list(DEFAULT_TOP_KS)
        self.top_ks = top_ks if isinstance(top_ks, (list, tuple, torch.Tensor)) else [top_ks]
        normalize_top_ks(self.top_ks)  # bad cutoffs raise here; the number of items is checked per update
        self.labels_onehot = labels_onehot
        # Per-row values of every update, one (N, len(top_ks)) float32 tensor each.
        self.add_state("metric_mean", default=[], dist_reduce_fx="cat")

    def update(self, preds, target: torch.Tensor, **kwargs):  # type: ignore
        """Adds a batch: ``preds`` are scores (..., V), or ``HiddenScores`` standing for them."""
        if isinstance(preds, HiddenScores):
            self._update_from_hidden_scores(preds, target)
            return
        _check_batch(preds, target, "preds")
        if preds.dim() == 0:
            raise ValueError("preds must hold scores over the items in its last dimension, got a 0-d tensor")
        num_items = preds.shape[-1]
        if not _runs_shared_metric(type(self)):
            self._update_with_own_metric(preds, target)
            return
        ks = normalize_top_ks(self.top_ks, num_items)
        k = max(ks)
        scores = preds.detach().reshape(-1, num_items)
        shared = _batch_results((preds, target), self.labels_onehot)
        ranked = shared.get(k)
        if self.labels_onehot:
            if ranked is None:
                ranked = rank_item_ids(scores, _item_ids(target, *scores.shape), k, need_ideal=True)
        else:
            labels = _dense_labels(target, scores.shape)
            if ranked is None:
                ranked = rank_dense(scores, labels, k, self._needs_ideal, self._needs_num_relevant)
            else:
                ranked = _completed(ranked, labels, self._needs_ideal, self._needs_num_relevant)
        shared[k] = ranked
        self.metric_mean.append(self._from_ranked(ks, ranked))  # type: ignore

    def update_from_hidden(self, hidden: torch.Tensor, item_weight: torch.Tensor, target: torch.Tensor,
                           bias: Optional[torch.Tensor] = None, *, first_item: Optional[int] = None, group=None):
        """``update`` with the scores ``hidden @ item_weight.T + bias`` (hidden (..., d), item_weight (V, d)),
        never built: one ``target_ranks_from_hidden`` (item-id targets) or ``topk_from_hidden`` (dense
        labels) pass per batch, shared by the metrics updated on the same tensors. ``first_item`` and
        ``group``: ``item_weight`` is this process's slice of a sharded catalogue (``fastmask.hidden``)."""
        self.update(HiddenScores(hidden, item_weight, bias, first_item=first_item, group=group), target)

    def _update_from_hidden_scores(self, scores: HiddenScores, target: torch.Tensor) -> None:
        _check_batch(scores.hidden, target, "hidden")
        if not _runs_shared_metric(type(self)):
            self._update_with_own_metric(scores.materialize(), target)
            return
        num_items = scores.num_items
        ks = normalize_top_ks(self.top_ks, num_items)
        k = max(ks)
        shared = _batch_results((*scores.sources, target), self.labels_onehot)
        ranked = shared.get(k)
        where = dict(first_item=scores.first_item, group=scores.group)
        if self.labels_onehot:
            if ranked is None:
                items = _item_ids(target, scores.rows, num_items).unsqueeze(1)
                ranks = from_hidden.target_ranks(scores.hidden, scores.item_weight, items, scores.bias, **where)
                ranked = _ranked_item_ids(ranks, k, need_ideal=True)
        else:
            labels = _dense_labels(target, (scores.rows, num_items))
            if ranked is None:
                _, ids = from_hidden.topk(scores.hidden, scores.item_weight, k, scores.bias, **where)
                topk = torch.gather(labels, 1, ids)
                ranked = RankedLabels(topk, None, False, None)
            ranked = _completed(ranked, labels, self._needs_ideal, self._needs_num_relevant)
        shared[k] = ranked
        self.metric_mean.append(self._from_ranked(ks, ranked))  # type: ignore

    def _update_with_own_metric(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """The reference's update, for a subclass that defines its own ``_metric``."""
        scores = preds.reshape(-1, preds.shape[-1])
        if self.labels_onehot:
            labels = _one_hot(_item_ids(target, *scores.shape), scores)
        else:
            labels = _dense_labels(target, scores.shape)
        self.metric_mean.append(self._metric(self.top_ks, scores, labels))  # type: ignore

    def compute(self):
        if isinstance(self.metric_mean, list) and not self.metric_mean:  # synced states are one tensor
            raise RuntimeError(
                f"{type(self).__name__}.compute() needs at least one update() since the metric was built or reset"
            )
        return dim_zero_cat(self.metric_mean).mean(0)

    def _metric(self, ks, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-row values (N, len(ks)) for scores and dense labels (N, V), as the reference's ``_metric``."""
        if scores.dim() != 2 or labels.dim() != 2 or scores.shape != labels.shape:
            raise ValueError(
                "scores and labels must be 2-D tensors of the same shape, "
                f"got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        ks = normalize_top_ks(ks, scores.shape[1])
        ranked = rank_dense(scores.detach(), labels, max(ks), self._needs_ideal, self._needs_num_relevant)
        return self._from_ranked(ks, ranked)

    def _from_ranked(self, ks, ranked: RankedLabels) -> torch.Tensor:
        raise NotImplementedError


def _check_batch(scores: torch.Tensor, target, name: str) -> None:
    """``scores`` (preds, or the hidden states standing for them) and ``target``: tensors on one device."""
    if not isinstance(scores, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{name} and target must be torch.Tensors, got {type(scores).__name__} and {type(target).__name__}"
        )
    if scores.device != target.device:
        raise ValueError(
            f"{name} and target must be on one device, got {name} on {scores.device} and target on {target.device}"
        )


def _runs_shared_metric(cls) -> bool:
    """Whether ``cls._metric`` is this module's (also when set on Transformers4Rec's classes by
    ``patch_transformers4rec``, wrapped): a subclass's own ``_metric`` is called as the reference does."""
    metric = cls._metric
    return getattr(metric, "__wrapped__", metric) is RankingMetric._metric


@ranking_metrics_registry.register_with_multiple_names("precision_at", "precision")
class PrecisionAt(RankingMetric):
    def _from_ranked(self, ks, ranked):
        return rules.precision_at(ks, ranked.topk)


@ranking_metrics_registry.register_with_multiple_names("recall_at", "recall")
class RecallAt(RankingMetric):
    _needs_num_relevant = True

    def _from_ranked(self, ks, ranked):
        return rules.recall_at(ks, ranked.topk, ranked.num_relevant, ranked.every_row_relevant)


@ranking_metrics_registry.register_with_multiple_names("avg_precision_at", "avg_precision", "map")
class AvgPrecisionAt(RankingMetric):
    _needs_num_relevant = True

    def _from_ranked(self, ks, ranked):
        return rules.avg_precision_at(ks, ranked.topk, ranked.num_relevant)


@ranking_metrics_registry.register_with_multiple_names("dcg_at", "dcg")
class DCGAt(RankingMetric):
    def _from_ranked(self, ks, ranked):
        return rules.dcg_at(ks, ranked.topk)


@ranking_metrics_registry.register_with_multiple_names("ndcg_at", "ndcg")
class NDCGAt(RankingMetric):
    _needs_ideal = True

    def _from_ranked(self, ks, ranked):
        return rules.ndcg_at(ks, ranked.topk, ranked.ideal)


@ranking_metrics_registry.register_with_multiple_names("mrr_at", "mrr")
class MeanReciprocalRankAt(RankingMetric):
    def _from_ranked(self, ks, ranked):
        return rules.reciprocal_rank_at(ks, ranked.topk)


# The misspelt name Transformers4Rec used for this class in its early releases.
MeanRecipricolRankAt = MeanReciprocalRankAt

__all__ = [
    "RankingMetric",
    "PrecisionAt",
    "RecallAt",
    "AvgPrecisionAt",
    "DCGAt",
    "NDCGAt",
    "MeanReciprocalRankAt",
    "MeanRecipricolRankAt",
    "ranking_metrics_registry",
]
