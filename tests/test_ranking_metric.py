"""fastmask.ranking_metric: the fast top-k path against the sorting reference, bit for bit; hand-made
cases; torchmetrics behaviour; validation; and proof that the fast path neither sorts nor builds an
(N, V) float tensor."""
import re
import weakref
import zlib

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fastmask
from fastmask import _backend, ops
from fastmask import ranking_metric as rm
from fastmask.reference import ranking as rules

METRICS = {
    "precision": rm.PrecisionAt,
    "recall": rm.RecallAt,
    "avg_precision": rm.AvgPrecisionAt,
    "dcg": rm.DCGAt,
    "ndcg": rm.NDCGAt,
    "mrr": rm.MeanReciprocalRankAt,
}


def reference_rows(name, ks, scores, labels):
    """Per-row values from the sorting reference on dense (N, V) labels."""
    topk = rules.topk_labels(scores, labels, max(ks))
    num_relevant = labels.sum(-1)
    return {
        "precision": lambda: rules.precision_at(ks, topk),
        "recall": lambda: rules.recall_at(ks, topk, num_relevant),
        "avg_precision": lambda: rules.avg_precision_at(ks, topk, num_relevant),
        "dcg": lambda: rules.dcg_at(ks, topk),
        "ndcg": lambda: rules.ndcg_at(ks, topk, rules.ideal_labels(topk)),
        "mrr": lambda: rules.reciprocal_rank_at(ks, topk),
    }[name]()


def one_hot(items, num_items):
    """The reference's one-hot labels: float32 (N, V)."""
    return torch.zeros(items.shape[0], num_items).scatter_(1, items.unsqueeze(1), 1.0)


def batch_rows(metric, preds, target):
    """Per-row values of one update."""
    metric.reset()
    metric.update(preds, target)
    (rows,) = metric.metric_mean
    return rows


def case_seed(*key):
    """A seed from a test case's parameters that does not change with PYTHONHASHSEED (unlike hash())."""
    return zlib.crc32(repr(key).encode())


def make_scores(shape, kind, dtype, gen):
    if kind == "random":
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(0, 4, shape, generator=gen).to(dtype)  # many ties


def cutoffs(num_items):
    return sorted({1, max(1, num_items // 2), num_items})


SHAPES = [(1, 1), (1, 7), (5, 13), (17, 64), (33, 257), (0, 9)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _backends_with_target_ranks():
    return ["reference"] + [name for name in ("cpp", "triton") if _backend.functions(name, "cpu") is not None]


# --- fast path == reference, bit for bit -----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "tied"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_item_ids_match_reference(shape, kind, dtype):
    gen = torch.Generator().manual_seed(case_seed(shape, kind, str(dtype)))
    scores = make_scores(shape, kind, dtype, gen)
    items = torch.randint(0, shape[1], (shape[0],), generator=gen)
    ks = cutoffs(shape[1])
    ranked = rm.rank_item_ids(scores, items, max(ks), need_ideal=True)
    assert torch.equal(ranked.topk, rules.topk_labels(scores, one_hot(items, shape[1]), max(ks)))
    for name, cls in METRICS.items():
        got = batch_rows(cls(ks, labels_onehot=True), scores, items)
        expected = reference_rows(name, ks, scores, one_hot(items, shape[1]))
        assert got.dtype == torch.float32 and got.shape == (shape[0], len(ks))
        assert torch.equal(got, expected), name


def _dense_labels(shape, label_kind, gen):
    relevant = torch.rand(shape, generator=gen) < 0.15
    if shape[0] > 1:
        relevant[0] = False  # a row with no relevant item
    if label_kind == "binary_int":
        return relevant.to(torch.int64)
    if label_kind == "fraction":
        return relevant * torch.rand(shape, generator=gen)
    if label_kind == "signed_float64":  # non-binary values, some negative
        return relevant * torch.randn(shape, generator=gen, dtype=torch.float64)
    if label_kind == "counts":
        return relevant * torch.randint(1, 5, shape, generator=gen)
    return relevant  # bool


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "tied"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_kind", ["binary_int", "fraction", "signed_float64", "counts", "bool"])
def test_dense_labels_match_reference(shape, kind, dtype, label_kind):
    gen = torch.Generator().manual_seed(case_seed(shape, kind, str(dtype), label_kind))
    scores = make_scores(shape, kind, dtype, gen)
    labels = _dense_labels(shape, label_kind, gen)
    ks = cutoffs(shape[1])
    ranked = rm.rank_dense(scores, labels, max(ks), need_ideal=True)
    topk = rules.topk_labels(scores, labels, max(ks))
    assert torch.equal(ranked.topk, topk) and ranked.topk.dtype == labels.dtype
    assert torch.equal(ranked.ideal, rules.ideal_labels(topk))
    for name, cls in METRICS.items():
        got = batch_rows(cls(ks), scores, labels)
        assert torch.equal(got, reference_rows(name, ks, scores, labels)), name


def test_many_relevant_items_fall_back_to_sorting(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (6, 40), generator=gen).float()
    labels = (torch.rand(6, 40, generator=gen) < 0.5).float() * torch.rand(6, 40, generator=gen)
    ks = [1, 4, 30]
    calls = []
    real = ops.target_ranks
    monkeypatch.setattr(ops, "target_ranks", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    monkeypatch.setattr(rm, "MAX_RANKED_RELEVANT", int((labels != 0).sum(1).max()) - 1)
    for name, cls in METRICS.items():
        assert torch.equal(batch_rows(cls(ks), scores, labels), reference_rows(name, ks, scores, labels))
    assert [a[0].shape for a in calls] == [(6, 30)]  # every row went through the sort; NDCG's ideal ranks topk
    monkeypatch.setattr(rm, "MAX_RANKED_RELEVANT", 40)
    calls.clear()
    scores, labels = scores.clone(), labels.clone()  # a new batch
    for name, cls in METRICS.items():
        assert torch.equal(batch_rows(cls(ks), scores, labels), reference_rows(name, ks, scores, labels))
    # One ranking of the rows shared by the metrics of the batch, one more for NDCG's ideal.
    assert [a[0].shape for a in calls] == [(6, 40), (6, 30)]


# Shapes where dense labels take the block-maxima path: V >= 4 * K * RANK_BLOCK, V not always a multiple
# of RANK_BLOCK, one row.
NEAR_TOP_CASES = [((1, 1024), [1, 2]), ((6, 5000), [1, 5, 10]), ((9, 4097), [1, 8]), ((4, 2113), [3, 4]),
                  ((3, 20_000), [5, 20])]


def _near_top_scores(shape, kind, dtype, gen):
    scores = torch.randn(shape, generator=gen, dtype=torch.float64)
    if kind == "tied":  # all negative; copies of each row's best scores in other blocks, so ties at and
        # around the K-th, and rows with different numbers of candidate blocks
        scores = -scores.abs()
        best = scores.sort(1, descending=True).values[:, :24]
        copies = best.gather(1, torch.randint(0, 24, (shape[0], 4), generator=gen))
        scores.scatter_(1, torch.randint(0, shape[1], (shape[0], 4), generator=gen), copies)
    elif kind == "special":  # two NaN and two +inf per row (top blocks), many -inf, signed zeros
        scores = scores.round(decimals=2)
        scores[scores == 0] = -0.0
        scores[torch.rand(shape, generator=gen) < 0.05] = float("-inf")
        for value in (float("nan"), float("inf")):
            scores.scatter_(1, torch.randint(0, shape[1], (shape[0], 2), generator=gen), value)
    return scores.to(dtype)


def _plant_in_top(scores, labels, gen):
    """Labels on some of each row's best items, so that the top K holds several relevant ones."""
    best = rules.stable_descending_order(scores)[:, :40]
    pick = torch.rand(best.shape, generator=gen) < 0.3
    return labels.scatter(1, best, torch.where(pick, torch.ones((), dtype=labels.dtype), labels.gather(1, best)))


@pytest.mark.parametrize("shape,ks", NEAR_TOP_CASES)
@pytest.mark.parametrize("kind", ["random", "tied", "special"])
@pytest.mark.parametrize("dtype,label_kind", [(torch.float32, "fraction"), (torch.float64, "signed_float64"),
                                              (torch.bfloat16, "bool"), (torch.float16, "binary_int")])
def test_block_maxima_path_matches_reference(shape, ks, kind, dtype, label_kind):
    gen = torch.Generator().manual_seed(case_seed(shape, kind, str(dtype), label_kind))
    scores = _near_top_scores(shape, kind, dtype, gen)
    labels = _plant_in_top(scores, _dense_labels(shape, label_kind, gen), gen)
    assert rm._near_top(scores, labels, max(ks)) is not None  # this path, not the whole-row one
    topk = rules.topk_labels(scores, labels, max(ks))
    ranked = rm.rank_dense(scores, labels, max(ks), need_ideal=True)
    assert torch.equal(ranked.topk, topk) and ranked.topk.dtype == labels.dtype
    assert torch.equal(ranked.ideal, rules.ideal_labels(topk))
    for name, cls in METRICS.items():
        got = batch_rows(cls(ks), scores, labels)
        assert torch.equal(got, reference_rows(name, ks, scores, labels)), name


def test_block_maxima_path_finds_items_tied_with_a_block_maximum():
    # 32 blocks of 64; K = 2. Every block's maximum is 1 at its first column except block 5 (2.0) and
    # blocks 9 and 20, whose maxima 1.5 tie for the 2nd largest; block 20 also holds a 1.5 at column 1300.
    scores = torch.zeros(1, 2048)
    scores[0, ::64] = 1.0
    scores[0, 5 * 64 + 3] = 2.0
    scores[0, 9 * 64 + 7] = scores[0, 20 * 64] = scores[0, 1300] = 1.5
    labels = torch.zeros(1, 2048)
    labels[0, [20 * 64, 1300, 9 * 64 + 7]] = torch.tensor([1.0, 2.0, 3.0])
    # order: 323 (2.0), 583 (1.5), 1280 (1.5), 1300 (1.5), then the 1.0s
    assert rm._near_top(scores, labels, 2) is not None
    assert rm.rank_dense(scores, labels, 2, need_ideal=False).topk.tolist() == [[0.0, 3.0]]
    assert rm._near_top(scores, labels, 4) is None  # the 4th largest maximum, 1.0, is every other block's
    assert rm.rank_dense(scores, labels, 4, need_ideal=False).topk.tolist() == [[0.0, 3.0, 1.0, 2.0]]


@pytest.mark.parametrize("shape,k", [((3, 4096), 17), ((5, 1023), 4), ((2, 9000), 2)])
def test_whole_row_path_where_the_blocks_would_not_narrow_much(shape, k):
    gen = torch.Generator().manual_seed(16)
    many_ties = torch.randint(0, 4, shape, generator=gen).float()  # every block's maximum is 3
    labels = _dense_labels(shape, "counts", gen)
    if shape[1] >= 4 * k * rm.RANK_BLOCK:
        assert rm._near_top(torch.randn(shape, generator=gen), labels, k) is not None
        scores = many_ties
    else:
        scores = torch.randn(shape, generator=gen)
    assert rm._near_top(scores, labels, k) is None
    assert torch.equal(rm.rank_dense(scores, labels, k, need_ideal=False).topk,
                       rules.topk_labels(scores, labels, k))


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_integer_scores_are_ranked_like_the_reference(labels_onehot):
    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(-3, 3, (9, 11), generator=gen)
    items = torch.randint(0, 11, (9,), generator=gen)
    labels = one_hot(items, 11) if labels_onehot else _dense_labels((9, 11), "counts", gen)
    for name, cls in METRICS.items():
        got = batch_rows(cls([1, 3, 11], labels_onehot), scores, items if labels_onehot else labels)
        assert torch.equal(got, reference_rows(name, [1, 3, 11], scores, labels)), name


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_nan_scores_rank_first(labels_onehot):
    nan = float("nan")
    scores = torch.tensor([[0.5, nan, 2.0, nan, 1.0], [1.0, 1.0, nan, 3.0, 0.0]])
    items = torch.tensor([3, 3])
    labels = one_hot(items, 5)
    # row 0: order 1(NaN), 3(NaN), 2, 4, 0 -> item 3 second; row 1: 2(NaN), 3 -> item 3 second
    if labels_onehot:
        ranked = rm.rank_item_ids(scores, items, 5, need_ideal=True)
    else:
        ranked = rm.rank_dense(scores, labels, 5, need_ideal=True)
    assert ranked.topk.tolist() == [[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    for name, cls in METRICS.items():
        got = batch_rows(cls([1, 2, 5], labels_onehot), scores, items if labels_onehot else labels)
        assert torch.equal(got, reference_rows(name, [1, 2, 5], scores, labels)), name


@pytest.mark.parametrize("backend", _backends_with_target_ranks())
def test_every_target_ranks_backend_gives_the_same_rows(backend):
    gen = torch.Generator().manual_seed(11)
    scores = torch.randint(0, 6, (7, 31), generator=gen).float()
    items = torch.randint(0, 31, (7,), generator=gen)
    labels = _dense_labels((7, 31), "fraction", gen)
    with fastmask.use_backend(backend):
        for name, cls in METRICS.items():
            assert torch.equal(batch_rows(cls([1, 5, 31], True), scores, items),
                               reference_rows(name, [1, 5, 31], scores, one_hot(items, 31)))
            assert torch.equal(batch_rows(cls([1, 5, 31]), scores, labels),
                               reference_rows(name, [1, 5, 31], scores, labels))


# --- hand-computed cases ---------------------------------------------------------------------

# Ties in every row; stable order by score then column: 4, 3, 5, 2, 6, 1, 7, 0, 8 (1-based ranks).
TIED_SCORES = torch.tensor([[1, 2, 3, 4, 5, 4, 3, 2, 1]] * 3)
TIED_TARGETS = torch.tensor([7, 5, 4])  # ranks 7, 3, 1
TIED_LABELS = one_hot(TIED_TARGETS, 9).long()
T = 1 / 3
TIED_EXPECTED = {  # per row, at k = 1, 2, 3, 4
    "precision": [[0, 0, 0, 0], [0, 0, T, 1 / 4], [1, 1 / 2, T, 1 / 4]],
    "recall": [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]],
    "avg_precision": [[0, 0, 0, 0], [0, 0, T, T], [1, 1, 1, 1]],
    "dcg": [[0, 0, 0, 0], [0, 0, 1 / 2, 1 / 2], [1, 1, 1, 1]],
    # the ideal DCG comes from the top-4 labels re-sorted, so row 1's ideal at k = 1 is 1 already
    "ndcg": [[0, 0, 0, 0], [0, 0, 1 / 2, 1 / 2], [1, 1, 1, 1]],
    "mrr": [[0, 0, 0, 0], [0, 0, T, T], [1, 1, 1, 1]],
}


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("labels_onehot", [True, False])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float32])
def test_tied_scores_by_hand(name, labels_onehot, dtype):
    metric = METRICS[name]([1, 2, 3, 4], labels_onehot)
    target = TIED_TARGETS if labels_onehot else TIED_LABELS
    result = metric(TIED_SCORES.to(dtype), target)
    expected = torch.tensor(TIED_EXPECTED[name], dtype=torch.float32)
    torch.testing.assert_close(metric.metric_mean[0], expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(result, expected.mean(0), rtol=1e-6, atol=0)


def test_reference_unit_test_values():
    # Transformers4Rec's own expected values for these inputs.
    mrr = rm.MeanReciprocalRankAt()
    mrr.top_ks = [1, 2, 3, 4]
    torch.testing.assert_close(mrr(TIED_SCORES, TIED_LABELS), torch.tensor([T, T, 4 / 9, 4 / 9]))
    recall = rm.RecallAt([1, 2, 3, 4])
    torch.testing.assert_close(recall(TIED_SCORES, TIED_LABELS), torch.tensor([T, T, 2 * T, 2 * T]))
    for cutoff in (4, [4]):
        torch.testing.assert_close(rm.RecallAt(cutoff)(TIED_SCORES, TIED_LABELS), torch.tensor(2 * T))
    scores_3d = TIED_SCORES[:2].reshape(1, 2, 9).expand(2, 2, 9)
    labels_3d = one_hot(torch.tensor([7, 5, 4, 5]), 9).long().reshape(2, 2, 9)
    recall.reset()
    torch.testing.assert_close(recall(scores_3d, labels_3d), torch.tensor([0.25, 0.25, 0.75, 0.75]))
    # batch size 1 (Transformers4Rec #778)
    single_row = rm.RecallAt()._metric([1, 2], torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 0]]))
    assert single_row.tolist() == [[0.0, 1.0]]


LOG2_3 = np.log2(3.0)
LOG2_6 = np.log2(6.0)
MULTI_EXPECTED = {  # scores 5..1, labels [1, 0, 1, 0, 1], k = 1, 3, 5; three relevant items
    "precision": [1, 2 / 3, 3 / 5],
    "recall": [1 / 3, 2 / 3, 1],
    "avg_precision": [1, (1 + 2 / 3) / 3, (1 + 2 / 3 + 3 / 5) / 3],
    "dcg": [1, 1 + 1 / 2, 1 + 1 / 2 + 1 / LOG2_6],
    "ndcg": [1, 1.5 / (1 + 1 / LOG2_3 + 1 / 2), (1.5 + 1 / LOG2_6) / (1 + 1 / LOG2_3 + 1 / 2)],
    "mrr": [1, 1, 1],
}


@pytest.mark.parametrize("name", METRICS)
def test_multi_hot_by_hand(name):
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0]])
    result = METRICS[name]([1, 3, 5])(scores, labels)
    expected = torch.tensor(MULTI_EXPECTED[name], dtype=torch.float32)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=0)


def test_ndcg_ideal_uses_only_the_retrieved_labels():
    # Two relevant items, only one in the top 2: the ideal is [1, 0], not [1, 1].
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(rm.NDCGAt([2])(scores, labels), torch.tensor(1 / LOG2_3, dtype=torch.float32))


def test_graded_labels_by_hand():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[0.0, 2.0, 0.0, 3.0]])  # at ranks 2 and 4; R = 5; P@2 = 1, P@4 = 5/4
    dcg = 2 / LOG2_3 + 3 / np.log2(5.0)
    expected = {"recall": 1.0, "precision": 5 / 4, "dcg": dcg, "ndcg": dcg / (3 + 2 / LOG2_3),
                "mrr": 1.0, "avg_precision": (2 * 1 + 3 * 5 / 4) / 4}
    for name, value in expected.items():
        result = METRICS[name]([4])(scores, labels)
        torch.testing.assert_close(result, torch.tensor(value, dtype=torch.float32))


# --- torchmetrics behaviour ------------------------------------------------------------------


def _batches(gen, n, num_items=20):
    sizes = [4 + i for i in range(n)]
    return [(torch.randn(size, num_items, generator=gen), torch.randint(0, num_items, (size,), generator=gen))
            for size in sizes]


@pytest.mark.parametrize("name", METRICS)
def test_update_compute_reset_and_forward(name):
    gen = torch.Generator().manual_seed(7)
    batches = _batches(gen, 3)
    ks = [1, 5]
    rows = [reference_rows(name, ks, p, one_hot(t, 20)) for p, t in batches]
    metric = METRICS[name](ks, labels_onehot=True)
    for (preds, target), expected in zip(batches, rows, strict=True):
        assert torch.equal(metric(preds, target), expected.mean(0))  # forward: this batch only
    assert len(metric.metric_mean) == 3
    assert torch.equal(metric.compute(), torch.cat(rows).mean(0))  # mean over every row seen
    metric.reset()
    assert metric.metric_mean == []
    metric.update(*batches[2])
    assert torch.equal(metric.compute(), rows[2].mean(0))
    metric.update(*batches[0])
    assert torch.equal(metric.compute(), torch.cat([rows[2], rows[0]]).mean(0))


def test_states_merge_by_concatenation():
    gen = torch.Generator().manual_seed(8)
    (p1, t1), (p2, t2) = _batches(gen, 2)
    first, second = rm.NDCGAt([2, 5], True), rm.NDCGAt([2, 5], True)
    first.update(p1, t1)
    second.update(p2, t2)
    first.merge_state(second)
    expected = torch.cat([reference_rows("ndcg", [2, 5], p, one_hot(t, 20)) for p, t in ((p1, t1), (p2, t2))])
    assert torch.equal(first.compute(), expected.mean(0))


def test_registry_gives_fresh_default_instances():
    names = ["precision_at", "precision", "recall_at", "recall", "avg_precision_at", "avg_precision", "map",
             "dcg_at", "dcg", "ndcg_at", "ndcg", "mrr_at", "mrr"]
    assert list(rm.ranking_metrics_registry.keys()) == names
    for name in names:
        first, second = rm.ranking_metrics_registry[name], rm.ranking_metrics_registry[name]
        assert first is not second and type(first) is type(second)
        assert first.top_ks == [2, 5] and first.labels_onehot is False
        assert rm.ranking_metrics_registry.parse(name).__class__ is type(first)
    assert type(rm.ranking_metrics_registry["map"]) is rm.AvgPrecisionAt
    assert rm.ranking_metrics_registry.parse(rm.NDCGAt) is rm.NDCGAt
    with pytest.raises(KeyError):
        rm.ranking_metrics_registry["hit_rate"]
    with pytest.raises(KeyError):
        rm.ranking_metrics_registry.register_with_multiple_names("ndcg")(rm.NDCGAt)


def _snake_case(name):  # how Transformers4Rec turns a metric's class name into its log key
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)).lower()


def test_class_names_and_log_keys():
    keys = {cls.__name__: _snake_case(cls.__name__) for cls in METRICS.values()}
    assert keys == {
        "PrecisionAt": "precision_at", "RecallAt": "recall_at", "AvgPrecisionAt": "avg_precision_at",
        "DCGAt": "dcg_at", "NDCGAt": "ndcg_at", "MeanReciprocalRankAt": "mean_reciprocal_rank_at",
    }
    assert rm.MeanRecipricolRankAt is rm.MeanReciprocalRankAt
    assert all(issubclass(cls, rm.RankingMetric) for cls in METRICS.values())


def test_constructor_defaults_and_scalar_cutoff():
    assert rm.RecallAt().top_ks == [2, 5] and rm.RecallAt([]).top_ks == [2, 5]
    assert rm.RecallAt(3).top_ks == [3]
    assert rm.RecallAt(labels_onehot=True).labels_onehot is True


@pytest.mark.parametrize("registry_name", ["ndcg", "recall", "map", "mrr"])
def test_attributes_set_after_construction_take_effect(registry_name):
    gen = torch.Generator().manual_seed(9)
    scores = torch.randn(10, 30, generator=gen)
    items = torch.randint(0, 30, (10,), generator=gen)
    metric = rm.ranking_metrics_registry[registry_name]
    metric.top_ks = [1, 3, 10]
    metric.labels_onehot = True
    result = metric(scores, items)
    name = {"ndcg": "ndcg", "recall": "recall", "map": "avg_precision", "mrr": "mrr"}[registry_name]
    assert torch.equal(result, reference_rows(name, [1, 3, 10], scores, one_hot(items, 30)).mean(0))
    metric.top_ks = 7  # a bare int is one cutoff
    assert metric(scores, items).shape == ()


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_three_dimensional_inputs_are_flattened(labels_onehot):
    gen = torch.Generator().manual_seed(10)
    preds = torch.randn(3, 4, 15, generator=gen)
    items = torch.randint(0, 15, (3, 4), generator=gen)
    target = items if labels_onehot else one_hot(items.reshape(-1), 15).reshape(3, 4, 15)
    flat_target = items.reshape(-1) if labels_onehot else target.reshape(12, 15)
    for cls in METRICS.values():
        assert torch.equal(batch_rows(cls([2, 5], labels_onehot), preds, target),
                           batch_rows(cls([2, 5], labels_onehot), preds.reshape(12, 15), flat_target))


def test_inputs_are_left_untouched_and_may_be_views_or_need_grad():
    gen = torch.Generator().manual_seed(12)
    base = torch.randn(15, 8, generator=gen, requires_grad=True)
    preds = base.t()  # non-contiguous
    labels = _dense_labels((8, 15), "fraction", gen)
    items = torch.randint(0, 15, (8,), generator=gen)
    before = (preds.detach().clone(), labels.clone(), items.clone())
    for name, cls in METRICS.items():
        expected = reference_rows(name, [3], preds.detach(), labels)
        assert torch.equal(batch_rows(cls([3]), preds, labels), expected)
        batch_rows(cls([3], True), preds, items)
    assert all(torch.equal(a, b) for a, b in zip(before, (preds.detach(), labels, items), strict=True))


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("top_ks", [[0], [-1, 2], [11], [2, 1.5], [True], ["3"]])
def test_bad_top_ks(top_ks):
    metric = rm.NDCGAt(labels_onehot=True)
    metric.top_ks = top_ks
    with pytest.raises(ValueError, match="top_ks"):
        metric.update(torch.randn(4, 10), torch.zeros(4, dtype=torch.long))


def test_empty_top_ks_set_after_construction():
    metric = rm.RecallAt()
    metric.top_ks = []
    with pytest.raises(ValueError, match="top_ks"):
        metric.update(torch.randn(4, 10), torch.zeros(4, 10))


@pytest.mark.parametrize("labels_onehot", [True, False])
@pytest.mark.parametrize("preds_shape", [(10,), (2, 2, 2, 10)])
def test_preds_of_any_rank_are_flattened_to_rows(preds_shape, labels_onehot):
    # The reference flattens preds with view(-1, V): one row for 1-D preds, B*L*... rows above 3-D.
    gen = torch.Generator().manual_seed(14)
    preds = torch.randn(preds_shape, generator=gen)
    items = torch.randint(0, 10, preds_shape[:-1], generator=gen)
    flat_items = items.reshape(-1)
    target = items if labels_onehot else one_hot(flat_items, 10).reshape(preds_shape)
    for name, cls in METRICS.items():
        expected = reference_rows(name, [1, 3], preds.reshape(-1, 10), one_hot(flat_items, 10))
        assert torch.equal(batch_rows(cls([1, 3], labels_onehot), preds, target), expected)


def test_bad_preds_rank():
    with pytest.raises(ValueError, match="preds"):
        rm.RecallAt([1]).update(torch.tensor(1.0), torch.tensor(0))


@pytest.mark.parametrize("labels_onehot,target", [
    (False, torch.zeros(4, 9)), (False, torch.zeros(40)), (False, torch.tensor(1.0)),
    (True, torch.zeros(5, dtype=torch.long)), (True, torch.tensor([0, 1, 10, 2])),
    (True, torch.tensor([0, -1, 3, 2])),
])
def test_bad_target(labels_onehot, target):
    with pytest.raises(ValueError, match="target"):
        rm.RecallAt([1], labels_onehot).update(torch.randn(4, 10), target)


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="same shape"):
        rm.RecallAt()._metric([1], torch.randn(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="top_ks"):
        rm.RecallAt()._metric([], torch.randn(3, 4), torch.zeros(3, 4))


# --- subclasses with their own _metric -------------------------------------------------------


class HitRateAt(rm.RankingMetric):
    """A metric defined as the reference's docs say: by its ``_metric`` alone."""

    def _metric(self, ks, scores, labels):
        topk = rules.topk_labels(scores, labels, max(ks))
        return torch.stack([topk[:, :k].sum(1).clamp(max=1) for k in ks], 1)


class DoubledRecallAt(rm.RecallAt):
    def _metric(self, ks, scores, labels):
        return 2 * super()._metric(ks, scores, labels)


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_a_subclass_own_metric_is_what_update_runs(labels_onehot):
    gen = torch.Generator().manual_seed(15)
    preds = torch.randn(2, 4, 30, generator=gen)
    items = torch.randint(0, 30, (2, 4), generator=gen)
    preds.view(8, 30)[torch.arange(4), items.view(8)[:4]] += 10  # half the targets ranked first
    labels = one_hot(items.reshape(-1), 30)
    target = items if labels_onehot else labels.reshape(2, 4, 30)
    hits = batch_rows(HitRateAt([1, 5], labels_onehot), preds, target)
    assert torch.equal(hits, HitRateAt()._metric([1, 5], preds.reshape(8, 30), labels))
    assert hits.sum() >= 8
    doubled = batch_rows(DoubledRecallAt([1, 5], labels_onehot), preds, target)
    assert torch.equal(doubled, 2 * reference_rows("recall", [1, 5], preds.reshape(8, 30), labels))


# --- the fast path neither sorts nor builds (N, V) float tensors -----------------------------


def _count_rank_passes(monkeypatch, num_items):
    """The ``target_ranks`` calls over whole rows of ``num_items`` scores, as a list that grows."""
    passes = []
    real = ops.target_ranks

    def counted(scores, items, **kwargs):
        if scores.shape[-1] == num_items:
            passes.append(scores.shape)
        return real(scores, items, **kwargs)

    monkeypatch.setattr(ops, "target_ranks", counted)
    return passes


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_metrics_updated_on_one_batch_share_its_rank_pass(monkeypatch, labels_onehot):
    gen = torch.Generator().manual_seed(21)
    preds = torch.randint(0, 6, (2, 4, 300), generator=gen).float()  # (B, L, V): many ties
    items = torch.randint(0, 300, (2, 4), generator=gen)
    labels = one_hot(items.reshape(-1), 300)
    if not labels_onehot:
        labels[:, ::7] = 0.5
    target = items if labels_onehot else labels
    passes = _count_rank_passes(monkeypatch, 300)
    ks = [1, 5, 20]
    for name, cls in METRICS.items():  # needs differ: recall and AP sum the labels, NDCG re-sorts them
        got = batch_rows(cls(ks, labels_onehot=labels_onehot), preds, target)
        assert torch.equal(got, reference_rows(name, ks, preds.reshape(-1, 300), labels)), name
    assert len(passes) == 1
    metric = rm.NDCGAt([1, 50], labels_onehot=labels_onehot)  # another K: another pass
    expected = reference_rows("ndcg", [1, 50], preds.reshape(-1, 300), labels)
    assert torch.equal(batch_rows(metric, preds, target), expected)
    assert len(passes) == 2


def test_a_changed_or_new_batch_is_ranked_again(monkeypatch):
    gen = torch.Generator().manual_seed(22)
    preds = torch.randn(6, 200, generator=gen)
    items = torch.randint(0, 200, (6,), generator=gen)
    passes = _count_rank_passes(monkeypatch, 200)
    recall, ndcg = rm.RecallAt([3], labels_onehot=True), rm.NDCGAt([3], labels_onehot=True)
    batch_rows(recall, preds, items)
    preds[torch.arange(6), items] = 10.0  # in place: every target now ranks first
    assert batch_rows(ndcg, preds, items).tolist() == [[1.0]] * 6
    assert torch.equal(batch_rows(recall, preds, items.clone()), torch.ones(6, 1))  # equal values, new tensor
    assert len(passes) == 3
    with torch.inference_mode():  # no version counter: never shared
        frozen, frozen_items = preds.clone(), items.clone()
    batch_rows(recall, frozen, frozen_items)
    batch_rows(ndcg, frozen, frozen_items)
    assert len(passes) == 5


def test_shared_results_keep_no_batch_alive():
    preds = torch.randn(4, 100)
    target = torch.randint(0, 100, (4,))
    batch_rows(rm.RecallAt([2], labels_onehot=True), preds, target)
    watch = weakref.ref(preds)
    del preds
    assert watch() is None


def counting_ranks(scores, items):
    """``target_ranks`` by counting, in numpy: the stable descending order without any sort."""
    values = scores.detach().to(torch.float64).numpy()
    wanted = items.numpy()
    ranks = np.full(wanted.shape, -1, dtype=np.int64)
    nans = np.isnan(values)
    for row, column in zip(*np.nonzero(wanted >= 0), strict=True):
        item = wanted[row, column]
        if nans[row, item]:  # behind the NaNs of lower columns only
            ranks[row, column] = nans[row, :item].sum()
        else:  # behind every NaN, every larger score, and equal scores of lower columns
            value = values[row, item]
            ahead = (values[row] > value).sum() + (values[row, :item] == value).sum()
            ranks[row, column] = nans[row].sum() + ahead
    return torch.from_numpy(ranks)


def test_counting_ranks_is_target_ranks():
    gen = torch.Generator().manual_seed(13)
    scores = torch.randint(0, 4, (6, 25), generator=gen).float()
    scores[1, 3] = scores[2, 0] = scores[2, 7] = float("nan")
    items = torch.randint(-1, 25, (6, 9), generator=gen)
    assert torch.equal(counting_ranks(scores, items), ops.target_ranks(scores, items))


def _storages(tree):
    return {t.untyped_storage().data_ptr() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)}


class _Recorder(TorchDispatchMode):
    """Every aten op run, and the largest new tensor (not a view of an input) any of them made."""

    def __init__(self):
        super().__init__()
        self.ops, self.largest_float, self.largest, self.paused = set(), 0, 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.ops.add(func.overloadpacket.__name__)
            inputs = _storages((args, kwargs))
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in inputs:
                    self.largest = max(self.largest, tensor.numel())
                    if tensor.is_floating_point():
                        self.largest_float = max(self.largest_float, tensor.numel())
        return out


def _record(monkeypatch, metric, preds, target):
    recorder = _Recorder()

    def ranks_without_recording(scores, items):
        recorder.paused = True
        try:
            return counting_ranks(scores, items)
        finally:
            recorder.paused = False

    monkeypatch.setattr(ops, "target_ranks", ranks_without_recording)
    with recorder:
        metric.update(preds, target)
    return recorder


@pytest.mark.parametrize("name", METRICS)
def test_item_id_path_neither_sorts_nor_allocates_n_by_v(monkeypatch, name):
    gen = torch.Generator().manual_seed(14)
    rows, num_items, ks = 8, 500, [1, 10, 20]
    preds = torch.randint(0, 50, (rows, num_items), generator=gen).float()
    items = torch.randint(0, num_items, (rows,), generator=gen)
    expected = reference_rows(name, ks, preds, one_hot(items, num_items))
    metric = METRICS[name](ks, labels_onehot=True)
    recorder = _record(monkeypatch, metric, preds, items)
    assert torch.equal(metric.metric_mean[0], expected)
    assert not recorder.ops & {"sort", "topk", "argsort", "one_hot"}
    assert recorder.largest < rows * num_items // 4  # nothing near (N, V), of any dtype


@pytest.mark.parametrize("name", METRICS)
def test_dense_label_path_neither_sorts_nor_allocates_float_n_by_v(monkeypatch, name):
    gen = torch.Generator().manual_seed(15)
    rows, num_items, ks = 8, 500, [1, 10, 20]
    preds = torch.randint(0, 50, (rows, num_items), generator=gen).float()
    labels = (torch.rand(rows, num_items, generator=gen) < 0.05) * torch.rand(rows, num_items, generator=gen)
    assert 0 < int((labels != 0).sum(1).max()) <= rm.MAX_RANKED_RELEVANT
    expected = reference_rows(name, ks, preds, labels)
    metric = METRICS[name](ks)
    recorder = _record(monkeypatch, metric, preds, labels)
    assert torch.equal(metric.metric_mean[0], expected)
    assert not recorder.ops & {"sort", "topk", "argsort", "one_hot"}
    assert recorder.largest_float < rows * num_items // 4  # only the (N, V) relevance mask is bool


@pytest.mark.parametrize("name", METRICS)
def test_block_maxima_path_neither_sorts_nor_allocates_n_by_v(monkeypatch, name):
    gen = torch.Generator().manual_seed(17)
    rows, num_items, ks = 8, 20_000, [1, 10, 20]
    preds = torch.randn(rows, num_items, generator=gen)
    labels = _plant_in_top(preds, _dense_labels((rows, num_items), "fraction", gen), gen)
    assert rm._near_top(preds, labels, max(ks)) is not None
    expected = reference_rows(name, ks, preds, labels)
    metric = METRICS[name](ks)
    recorder = _record(monkeypatch, metric, preds, labels)
    assert torch.equal(metric.metric_mean[0], expected)
    assert not recorder.ops & {"sort", "topk", "argsort", "one_hot"}
    assert recorder.largest < rows * num_items // 4  # nothing near (N, V), of any dtype


def test_recorder_sees_the_sorting_reference():
    # The checks above can fail: the sorting path trips both.
    preds, labels = torch.randn(8, 500), torch.rand(8, 500)
    recorder = _Recorder()
    with recorder:
        rm.rank_dense(preds.to(torch.int64), labels, 20, need_ideal=True)
    assert "sort" in recorder.ops and recorder.largest >= 8 * 500
    recorder = _Recorder()
    with recorder:
        rules.topk_labels(preds, one_hot(torch.zeros(8, dtype=torch.long), 500), 20)
    assert recorder.largest_float >= 8 * 500


# --- errors at the edges ----------------------------------------------------------------------


@pytest.mark.parametrize("name", METRICS)
def test_cutoffs_are_checked_when_the_metric_is_built(name):
    cls = METRICS[name]
    for top_ks in ([-5], [0, 3], ["10"], [2.5], [True]):
        with pytest.raises(ValueError, match="top_ks must be positive ints"):
            cls(top_ks)
    # What Transformers4Rec accepts: no cutoffs mean [2, 5]; a single one is wrapped; tuples.
    assert cls([]).top_ks == cls(None).top_ks == cls(0).top_ks == [2, 5]
    assert cls(3).top_ks == [3] and cls((1, 4)).top_ks == (1, 4)


def test_preds_and_target_on_different_devices_name_both():
    metric = rm.NDCGAt([2], labels_onehot=True)
    with pytest.raises(ValueError, match="preds on meta and target on cpu"):
        metric.update(torch.zeros(3, 5, device="meta"), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="preds and target must be torch.Tensors, got list and Tensor"):
        metric.update([[0.1, 0.2]], torch.zeros(1, dtype=torch.long))


def test_compute_before_update_says_so():
    metric = rm.RecallAt([1], labels_onehot=True)
    with pytest.raises(RuntimeError, match=r"RecallAt.compute\(\) needs at least one update\(\)"):
        metric.compute()
    metric.update(torch.tensor([[0.1, 0.9]]), torch.tensor([1]))
    assert metric.compute().item() == 1.0  # one cutoff: torchmetrics squeezes the result
    metric.reset()
    with pytest.raises(RuntimeError, match="needs at least one update"):
        metric.compute()
