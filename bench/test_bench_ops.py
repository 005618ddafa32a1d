"""The public ops ``gumbel_argmax`` and ``target_ranks`` per backend against the T4Rec computation
they replace, and each ranking metric's update, at the shapes of ``fastmask.bench.cases``."""
import itertools

import pytest
import torch

from fastmask import ops, ranking_metric
from fastmask.bench.cases import TOP_KS, make_scores


def _seed(device):
    return torch.tensor([1234], dtype=torch.int64, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gumbel_argmax(run_benchmark, contender, library, as_contender, device, shapes, dtype):
    if dtype == torch.bfloat16 and device.type == "cpu":
        pytest.skip("bf16 Gumbel sampling is benchmarked on GPU")
    rows, vocab = shapes.gumbel
    logits = make_scores(rows, vocab, device, 1, dtype)
    if library is not None:
        module = library.masking.ReplacementLanguageModeling(hidden_size=64)
        call = lambda: module.sample_from_softmax(logits)  # noqa: E731
    else:
        seed = _seed(device)
        call = lambda: ops.gumbel_argmax(logits, seed)  # noqa: E731
    with as_contender():
        run_benchmark(call, logits.nbytes + rows * 8, op="gumbel_argmax", contender=contender,
                      shape=[rows, vocab], dtype=str(dtype))


def test_target_ranks(run_benchmark, contender, library, as_contender, device, shapes):
    rows, vocab = shapes.ranks
    scores = make_scores(rows, vocab, device, 2)
    targets = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(3)).to(device)
    if library is not None:  # the top-k path every T4Rec metric takes: dense one-hot, topk, gather
        ks = torch.LongTensor(TOP_KS)

        def call():
            labels = library.utils.tranform_label_to_onehot(targets, vocab)
            return library.utils.extract_topk(ks, scores, labels)
    else:
        items = targets[:, None].contiguous()
        call = lambda: ops.target_ranks(scores, items)  # noqa: E731
    with as_contender():
        run_benchmark(call, scores.nbytes + 2 * targets.nbytes, op="target_ranks", contender=contender,
                      shape=[rows, vocab])


@pytest.mark.parametrize("labels", ["one-hot", "multi-hot"])
@pytest.mark.parametrize("metric", ["NDCGAt", "RecallAt", "AvgPrecisionAt"])
def test_ranking_metric_update(run_benchmark, contender, library, as_contender, device, shapes, metric, labels):
    """Each update gets a new scores tensor (two matrices in turn): fastmask's metrics share a rank
    pass keyed by tensor identity and version, so one tensor timed again would be a cache hit."""
    rows, vocab = shapes.metrics_onehot if labels == "one-hot" else shapes.metrics_multihot
    scores = [make_scores(rows, vocab, device, seed) for seed in (2, 3)]
    gen = torch.Generator().manual_seed(3)
    if labels == "one-hot":
        target = torch.randint(0, vocab, (rows,), generator=gen).to(device)
    else:
        target = (torch.rand(rows, vocab, generator=gen) < 5 / vocab).float().to(device)
    namespace = library.metrics if library is not None else ranking_metric
    module = getattr(namespace, metric)(top_ks=list(TOP_KS), labels_onehot=labels == "one-hot")
    turn = itertools.count()

    def call():
        module.update(scores[next(turn) % 2].view(rows, vocab), target)

    with as_contender():
        run_benchmark(call, scores[0].nbytes + target.nbytes, op=f"{metric}.update", labels=labels,
                      contender=contender, shape=[rows, vocab])
