"""Ranking metrics and ranks straight from hidden states (fastmask.hidden), in one process and over a
catalogue sharded across two processes."""
import functools
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastmask
from fastmask import hidden as from_hidden
from fastmask import ranking_metric as rm
from fastmask.reference import hidden as ref_hidden

METRICS = [rm.PrecisionAt, rm.RecallAt, rm.AvgPrecisionAt, rm.DCGAt, rm.NDCGAt, rm.MeanReciprocalRankAt]


def _backends():
    return ["reference"] + [name for name in ("cpp", "triton") if name in fastmask.backends()]


def _inputs(gen, shape, dim, items, integer_valued):
    if integer_valued:
        make = lambda *size: torch.randint(-3, 4, size, generator=gen).float()  # noqa: E731
    else:
        make = lambda *size: torch.randn(*size, generator=gen)  # noqa: E731
    return make(*shape, dim), make(items, dim), make(items)


def _rows(metric, call):
    metric.reset()
    call(metric)
    (rows,) = metric.metric_mean
    return rows


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("labels_onehot", [True, False])
def test_metrics_from_hidden_equal_metrics_from_the_scores(backend, labels_onehot):
    """update_from_hidden == update on the scores the kernels compute (``reference.hidden.item_scores``):
    bit for bit, on real-valued inputs where the backend sums in the reference's order, else integer ones."""
    gen = torch.Generator().manual_seed(51)
    integer_valued = backend == "triton"
    items = 90 if backend == "triton" else 700
    for shape, with_bias in (((4, 5), True), ((9,), False)):  # (B, L, d) flattens to rows, like scores
        hidden, weight, bias = _inputs(gen, shape, 16, items, integer_valued)
        bias = bias if with_bias else None
        rows = hidden.reshape(-1, 16)
        scores = ref_hidden.item_scores(rows, weight, bias)
        targets = torch.randint(0, items, (rows.shape[0],), generator=gen)
        labels = torch.zeros(rows.shape[0], items).scatter_(1, targets[:, None], 1.0)
        labels[:, ::9] = 0.5
        target = targets.reshape(shape) if labels_onehot else labels
        ks = [1, 5, 20]
        with fastmask.use_backend(backend):
            for cls in METRICS:
                metric = cls(ks, labels_onehot=labels_onehot)
                got = _rows(metric, functools.partial(rm.RankingMetric.update_from_hidden, hidden=hidden,
                                                      item_weight=weight, target=target, bias=bias))
                want = _rows(metric, functools.partial(rm.RankingMetric.update, preds=scores,
                                                       target=target if labels_onehot else labels))
                assert torch.equal(got, want), (cls.__name__, shape)
                metric.reset()
                metric.update(from_hidden.HiddenScores(hidden, weight, bias), target)  # the same, as preds
                assert torch.equal(metric.compute(), want.mean(0))


def _count_passes(monkeypatch):
    calls = []
    for name in ("target_ranks", "topk"):
        real = getattr(rm.from_hidden, name)
        def counted(*args, real=real, name=name, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(rm.from_hidden, name, counted)
    return calls


@pytest.mark.parametrize("labels_onehot", [True, False])
def test_metrics_of_one_batch_share_one_pass(monkeypatch, labels_onehot):
    gen = torch.Generator().manual_seed(52)
    hidden, weight, bias = _inputs(gen, (6,), 8, 120, False)
    targets = torch.randint(0, 120, (6,), generator=gen)
    target = targets if labels_onehot else torch.zeros(6, 120).scatter_(1, targets[:, None], 1.0)
    calls = _count_passes(monkeypatch)
    for cls in METRICS:
        cls([2, 10], labels_onehot=labels_onehot).update_from_hidden(hidden, weight, target, bias)
    assert calls == ["target_ranks" if labels_onehot else "topk"]
    rm.NDCGAt([2, 10], labels_onehot=labels_onehot).update_from_hidden(hidden, weight.clone(), target, bias)
    hidden.add_(1.0)  # in place: ranked again
    rm.NDCGAt([2, 10], labels_onehot=labels_onehot).update_from_hidden(hidden, weight, target, bias)
    assert len(calls) == 3


def test_a_subclass_own_metric_gets_the_scores():
    class Hits(rm.RankingMetric):
        def _metric(self, ks, scores, labels):
            return (scores * labels).sum(1, keepdim=True).repeat(1, len(ks))

    gen = torch.Generator().manual_seed(53)
    hidden, weight, bias = _inputs(gen, (5,), 4, 30, True)
    targets = torch.randint(0, 30, (5,), generator=gen)
    got = _rows(Hits([1], labels_onehot=True), lambda m: m.update_from_hidden(hidden, weight, targets, bias))
    assert torch.equal(got[:, 0], (hidden @ weight.T + bias).gather(1, targets[:, None])[:, 0])


def test_bad_hidden_inputs():
    metric = rm.RecallAt([2], labels_onehot=True)
    with pytest.raises(ValueError, match="target item ids must be in"):
        metric.update_from_hidden(torch.ones(3, 4), torch.ones(10, 4), torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="top_ks must not exceed the number of items"):
        rm.RecallAt([11], labels_onehot=True).update_from_hidden(torch.ones(3, 4), torch.ones(10, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="item_weight must have hidden's dtype"):
        metric.update_from_hidden(torch.ones(3, 4), torch.ones(10, 4).half(), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="hidden must be a tensor"):
        from_hidden.HiddenScores([1.0], torch.ones(10, 4))
    with pytest.raises(ValueError, match="torch.distributed must be initialized"):
        from_hidden.target_ranks(torch.ones(3, 4), torch.ones(10, 4), torch.zeros(3, 1, dtype=torch.int64),
                                 first_item=0)


# --- a catalogue sharded over two processes ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLICES = [(0, 40), (40, 301)]  # uneven: the first slice holds fewer items than the top-k asks for


def _sharded_worker(rank: int, port: int, backend: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        gen = torch.Generator().manual_seed(54)
        hidden, weight, bias = _inputs(gen, (12,), 16, 301, integer_valued=False)
        bias[[5, 70, 71]] = torch.tensor([float("nan"), float("inf"), float("-inf")])
        targets = torch.randint(-1, 302, (12, 4), generator=gen)
        targets[0, :3] = torch.tensor([5, 70, 71])
        tied = [torch.randint(-1, 2, shape, generator=gen).float() for shape in ((12, 16), (301, 16))]
        first, end = SLICES[rank]
        with fastmask.use_backend(backend):
            for rows, w, b in ((hidden, weight, bias), (*tied, None)):  # the second: many ties across slices
                local_bias = None if b is None else b[first:end]
                got = from_hidden.target_ranks(rows, w[first:end], targets, local_bias, first_item=first)
                assert torch.equal(got, from_hidden.target_ranks(rows, w, targets, b)), rank
                for k in (1, 50, 301):
                    got = from_hidden.topk(rows, w[first:end], k, local_bias, first_item=first)
                    want = from_hidden.topk(rows, w, k, b)
                    assert torch.equal(got[1], want[1]) and torch.equal(got[0].nan_to_num(7.0), want[0].nan_to_num(7.0))
            for labels_onehot in (True, False):
                target = targets[:, 1].clamp(0, 300)
                if not labels_onehot:
                    target = torch.zeros(12, 301).scatter_(1, target[:, None], 1.0)
                metric = rm.NDCGAt([1, 10, 60], labels_onehot=labels_onehot)
                metric.update_from_hidden(hidden, weight[first:end], target, bias[first:end], first_item=first)
                single = rm.NDCGAt([1, 10, 60], labels_onehot=labels_onehot)
                single.update_from_hidden(hidden, weight, target, bias)
                assert torch.equal(metric.metric_mean[0], single.metric_mean[0])
            with pytest.raises(ValueError, match="must tile"):
                from_hidden.target_ranks(hidden, weight[:10], targets, None, first_item=rank * 11)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", [name for name in ("reference", "cpp") if name in fastmask.backends()])
def test_a_sharded_catalogue_ranks_like_one_process(backend):
    mp.spawn(_sharded_worker, args=(_free_port(), backend), nprocs=2, join=True)
