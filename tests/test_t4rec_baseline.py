"""The restated Transformers4Rec algorithms that the benchmarks time keep T4Rec's results."""
import math

import pytest
import torch

from fastmask import _t4rec_baseline as t4rec
from fastmask.bench import make_item_ids
from fastmask.reference.masking import plm_eval_perm_mask
from fastmask.reference.ranking import stable_descending_order, target_ranks

KS = [1, 5, 20]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def test_metrics_on_one_hot_labels_follow_the_target_rank():
    scores = torch.randn(64, 300)  # continuous: no ties
    targets = torch.randint(0, 300, (64,))
    rank = target_ranks(scores, targets[:, None])[:, 0].double()
    for name, expected_at_k in {
        "RecallAt": lambda k: (rank < k).double(),
        "NDCGAt": lambda k: (rank < k).double() / torch.log2(rank + 2),
        "AvgPrecisionAt": lambda k: (rank < k).double() / (rank + 1),
        "MeanReciprocalRankAt": lambda k: (rank < k).double() / (rank + 1),
        "PrecisionAt": lambda k: (rank < k).double() / k,
    }.items():
        metric = getattr(t4rec, name)(top_ks=KS, labels_onehot=True)
        metric.update(scores, targets)
        expected = torch.stack([expected_at_k(k) for k in KS], dim=1).float()
        torch.testing.assert_close(metric.metric_mean[0], expected, rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(metric.compute(), expected.mean(0), rtol=1e-6, atol=1e-6, msg=name)


def test_recall_and_ndcg_on_multi_hot_labels():
    scores = torch.randn(32, 200)
    labels = (torch.rand(32, 200) < 0.05).float()
    labels[0] = 0  # a row with no relevant item has recall 0
    ranked = torch.gather(labels, 1, stable_descending_order(scores)).double()
    relevant = labels.sum(1).double()
    recall = t4rec.RecallAt(top_ks=KS)
    recall.update(scores, labels)
    expected = torch.stack([torch.where(relevant > 0, ranked[:, :k].sum(1) / relevant.clamp(min=1), 0) for k in KS], 1)
    torch.testing.assert_close(recall.metric_mean[0], expected.float())
    # NDCG's ideal DCG comes from the retrieved top-k labels re-sorted (T4Rec's known quirk).
    discounts = 1 / torch.log2(torch.arange(max(KS), dtype=torch.float64) + 2)
    top = ranked[:, : max(KS)]
    ideal = top.sort(dim=1, descending=True).values
    ndcg = t4rec.NDCGAt(top_ks=KS)
    ndcg.update(scores, labels)
    dcg = torch.stack([(top[:, :k] * discounts[:k]).sum(1) for k in KS], 1)
    idcg = torch.stack([(ideal[:, :k] * discounts[:k]).sum(1) for k in KS], 1)
    torch.testing.assert_close(ndcg.metric_mean[0], torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), 0).float())


def test_plm_training_masks_keep_t4rec_invariants():
    ids = make_item_ids(16, 30, torch.device("cpu"))
    module = t4rec.PermutationLanguageModeling(hidden_size=8)
    info = module.compute_masked_targets(ids, training=True)
    nonpad = ids != 0
    mask = info.schema
    assert mask.dtype == torch.bool and not (mask & ~nonpad).any()
    assert ((mask.sum(1) >= 1) | (nonpad.sum(1) <= 1)).all()
    assert (mask.sum(1) < nonpad.sum(1)).all()  # never every item
    perm = module.perm_mask
    assert perm.shape == (16, 30, 30) and perm.dtype == torch.float32
    assert torch.equal(perm.bool() & ~mask[:, None, :], torch.zeros_like(perm, dtype=torch.bool))
    assert torch.equal(perm.diagonal(dim1=1, dim2=2).bool(), mask)  # a target never sees itself
    assert torch.equal(module.target_mapping, torch.eye(30).expand(16, 30, 30))


def test_plm_eval_perm_mask_is_the_reference_one():
    ids = make_item_ids(16, 30, torch.device("cpu"))
    module = t4rec.PermutationLanguageModeling(hidden_size=8)
    module.compute_masked_targets(ids, training=False)
    assert module.perm_mask.dtype == torch.int64
    assert torch.equal(module.perm_mask, plm_eval_perm_mask(ids, 0))


def test_mlm_training_targets_keep_t4rec_invariants():
    ids = make_item_ids(64, 20, torch.device("cpu"))
    info = t4rec.MaskedLanguageModeling(hidden_size=8).compute_masked_targets(ids, training=True)
    nonpad = (ids != 0).sum(1)
    targets = info.schema.sum(1)
    assert torch.equal(info.targets, torch.where(info.schema, ids, 0))
    assert ((targets >= 1) | (nonpad == 1)).all() and (targets < nonpad).all()


def test_gumbel_sampling_returns_the_dominant_logit():
    logits = torch.full((6, 50), -30.0)
    winners = torch.tensor([0, 7, 49, 3, 3, 12])
    logits[torch.arange(6), winners] = 30.0
    sample = t4rec.ReplacementLanguageModeling(hidden_size=8).sample_from_softmax(logits)
    assert sample.dtype == torch.int64 and torch.equal(sample, winners)


def test_discount_matches_log2():
    dcg = t4rec.DCGAt(top_ks=[3])
    labels = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    value = dcg._metric(torch.LongTensor([3]), torch.tensor([[4.0, 3.0, 2.0, 1.0]]), labels)
    assert value.item() == pytest.approx(1 + 1 / math.log2(3) + 1 / math.log2(4))


def test_log_uniform_sampler_is_multinomial_with_replacement_then_unique():
    sampler = t4rec.LogUniformSampler(max_n_samples=30, max_id=500, min_id=2)
    assert sampler.n_sample == 60
    labels = torch.tensor([[3], [499], [2]])
    torch.manual_seed(7)
    negatives, true_probs, sample_probs = sampler.sample(labels)
    torch.manual_seed(7)
    expected = torch.multinomial(sampler.dist, 60, replacement=True).unique()[:30]
    assert torch.equal(negatives, expected) and negatives.min() >= 2
    assert torch.equal(true_probs, sampler.unique_sampling_dist[labels])
    assert torch.equal(sample_probs, sampler.unique_sampling_dist[negatives])
    assert sampler.dist[:2].eq(0).all() and sampler.dist.sum().item() == pytest.approx(1, abs=1e-5)
    assert torch.allclose(sampler.unique_sampling_dist.double(), 1 - (1 + sampler.dist.double()) ** -60, rtol=1e-6)


def test_log_uniform_sampler_without_unique_sampling_uses_dist():
    sampler = t4rec.LogUniformSampler(max_n_samples=400, max_id=50, unique_sampling=False)
    assert sampler.n_sample == 400
    negatives, true_probs, sample_probs = sampler.sample(torch.tensor([0, 49]))
    assert torch.equal(negatives, negatives.unique()) and len(negatives) <= 50
    assert torch.equal(true_probs, sampler.dist[[0, 49]]) and torch.equal(sample_probs, sampler.dist[negatives])


def test_log_uniform_sampler_rejects_labels_as_t4rec_does():
    sampler = t4rec.LogUniformSampler(5, 10)
    with pytest.raises(ValueError, match="within the range"):
        sampler.sample(torch.tensor([-1]))
    with pytest.raises(ValueError, match="dtype long"):
        sampler.sample(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="one of the dimensions"):
        sampler.sample(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        sampler.sample(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="max_id"):
        t4rec.LogUniformSampler(5, 0)


def test_log_uniform_sampler_is_transformers4rec_when_installed():
    prediction_task = pytest.importorskip("transformers4rec.torch.model.prediction_task")
    for args in [(100, 1000, 1), (7, 50, 0, False), (3, 4, 1, True, 3)]:
        upstream, restated = prediction_task.LogUniformSampler(*args), t4rec.LogUniformSampler(*args)
        assert torch.equal(upstream.dist, restated.dist)
        assert torch.equal(upstream.unique_sampling_dist, restated.unique_sampling_dist)
        labels = torch.tensor([1, 2, 3])
        torch.manual_seed(5)
        expected = upstream.sample(labels)
        torch.manual_seed(5)
        assert all(torch.equal(a, b) for a, b in zip(expected, restated.sample(labels)))
