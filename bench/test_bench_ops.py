"""Benchmarks of every fastmask op per backend, against the T4Rec computation that it replaces,
and of the ranking metrics' update path built on ``target_ranks``."""
import importlib

import pytest
import torch

from fastmask import ops
from fastmask.bench import T4REC, TOP_KS, make_item_ids, make_scores
from fastmask.reference.masking import plm_context_lengths
from fastmask.reference.philox import bernoulli_threshold

HIDDEN_SIZE = 64


def _seed(device):
    return torch.tensor([1234], dtype=torch.int64, device=device)


def test_mlm_mask(run_benchmark, contender, as_contender, t4rec, device, shapes):
    batch, length = shapes["masking"]
    ids = make_item_ids(batch, length, device)
    if contender == T4REC:
        module = t4rec.masking.MaskedLanguageModeling(hidden_size=HIDDEN_SIZE)
        call = lambda: module.compute_masked_targets(ids, training=True).schema  # noqa: E731
    else:
        seed, threshold = _seed(device), bernoulli_threshold(0.15)
        call = lambda: ops.mlm_mask(ids, seed, 0, threshold)  # noqa: E731
    with as_contender():
        run_benchmark(call, ids.nbytes + ids.numel(), op="mlm_mask", contender=contender, shape=[batch, length])


@pytest.mark.parametrize("permute_all", [False, True])
def test_plm_train_masks(run_benchmark, contender, as_contender, t4rec, device, shapes, permute_all):
    batch, length = shapes["masking"]
    ids = make_item_ids(batch, length, device)
    if contender == T4REC:
        module = t4rec.masking.PermutationLanguageModeling(hidden_size=HIDDEN_SIZE, permute_all=permute_all)
        call = lambda: module.compute_masked_targets(ids, training=True)  # noqa: E731
    else:
        seed, context_lengths = _seed(device), plm_context_lengths(1 / 6, 5)
        call = lambda: ops.plm_train_masks(ids, seed, 0, 5, context_lengths, permute_all)  # noqa: E731
    written = ids.numel() + 2 * 4 * batch * length * length
    with as_contender():
        run_benchmark(call, ids.nbytes + written, op="plm_train_masks", contender=contender,
                      shape=[batch, length], permute_all=permute_all)


def test_plm_eval_perm_mask(run_benchmark, contender, as_contender, t4rec, device, shapes):
    batch, length = shapes["masking"]
    ids = make_item_ids(batch, length, device)
    if contender == T4REC:
        module = t4rec.masking.PermutationLanguageModeling(hidden_size=HIDDEN_SIZE)
        call = lambda: module.compute_masked_targets(ids, training=False)  # noqa: E731
    else:
        call = lambda: ops.plm_eval_perm_mask(ids, 0)  # noqa: E731
    with as_contender():
        run_benchmark(call, ids.nbytes + 8 * batch * length * length, op="plm_eval_perm_mask",
                      contender=contender, shape=[batch, length])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gumbel_argmax(run_benchmark, contender, as_contender, t4rec, device, shapes, dtype):
    if dtype == torch.bfloat16 and device.type == "cpu":
        pytest.skip("bf16 Gumbel sampling is benchmarked on GPU")
    rows, vocab = shapes["gumbel"]
    logits = make_scores(rows, vocab, device, 1).to(dtype)
    if contender == T4REC:
        module = t4rec.masking.ReplacementLanguageModeling(hidden_size=HIDDEN_SIZE)
        call = lambda: module.sample_from_softmax(logits)  # noqa: E731
    else:
        seed = _seed(device)
        call = lambda: ops.gumbel_argmax(logits, seed)  # noqa: E731
    with as_contender():
        run_benchmark(call, logits.nbytes + rows * 8, op="gumbel_argmax", contender=contender,
                      shape=[rows, vocab], dtype=str(dtype))


def test_target_ranks(run_benchmark, contender, as_contender, t4rec, device, shapes):
    rows, vocab = shapes["ranks"]
    scores = make_scores(rows, vocab, device, 2)
    targets = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(3)).to(device)
    if contender == T4REC:  # the top-k path every T4Rec metric takes: dense one-hot, topk, gather
        ks = torch.LongTensor(TOP_KS)

        def call():
            labels = t4rec.utils.tranform_label_to_onehot(targets, vocab)
            return t4rec.utils.extract_topk(ks, scores, labels)
    else:
        items = targets[:, None].contiguous()
        call = lambda: ops.target_ranks(scores, items)  # noqa: E731
    with as_contender():
        run_benchmark(call, scores.nbytes + 2 * targets.nbytes, op="target_ranks", contender=contender,
                      shape=[rows, vocab])


@pytest.mark.parametrize("labels", ["one-hot", "multi-hot"])
@pytest.mark.parametrize("metric", ["NDCGAt", "RecallAt", "AvgPrecisionAt"])
def test_ranking_metric_update(run_benchmark, contender, as_contender, t4rec, device, shapes, metric, labels):
    rows, vocab = shapes["ranks"]
    scores = make_scores(rows, vocab, device, 2)
    gen = torch.Generator().manual_seed(3)
    if labels == "one-hot":
        target = torch.randint(0, vocab, (rows,), generator=gen).to(device)
    else:
        target = (torch.rand(rows, vocab, generator=gen) < 5 / vocab).float().to(device)
    namespace = t4rec.metrics if contender == T4REC else importlib.import_module("fastmask.ranking_metric")
    module = getattr(namespace, metric)(top_ks=list(TOP_KS), labels_onehot=labels == "one-hot")
    with as_contender():
        run_benchmark(lambda: module.update(scores, target), scores.nbytes + target.nbytes,
                      op=f"{metric}.update", labels=labels, contender=contender, shape=[rows, vocab])
