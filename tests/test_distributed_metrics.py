"""Ranking metrics under torch.distributed: two CPU processes (gloo), uneven batches per rank.

torchmetrics gathers the per-row ``cat`` state of every rank at ``compute()``, in rank order, so each
rank's result must equal, bit for bit, one process's result on all the batches in that order: the
per-row values are the same computation on the same rows (a row's value does not depend on the batch
it came in), and the final mean runs over the same rows in the same order.
"""
import datetime
import functools
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastmask import ranking_metric as rm

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD_SIZE = 2
NUM_ITEMS = 37
TOP_KS = [1, 3, 10]
# Rows per update on each rank: uneven counts of batches and of rows (8 on rank 0, 15 on rank 1).
BATCH_ROWS = {0: [6, 1, 1], 1: [9, 4, 2]}
METRICS = [rm.PrecisionAt, rm.RecallAt, rm.AvgPrecisionAt, rm.DCGAt, rm.NDCGAt, rm.MeanReciprocalRankAt]
LABELS = ["one_hot", "multi_hot"]
TIMEOUT_S = 240


def batches(rank: int, labels: str):
    """The (scores, target) updates of ``rank``: integer scores (many ties), item ids or dense 0/1
    labels with several relevant items per row, some rows with none."""
    generator = torch.Generator().manual_seed(17 + rank)
    out = []
    for rows in BATCH_ROWS[rank]:
        scores = torch.randint(0, 6, (rows, NUM_ITEMS), generator=generator).float()
        if labels == "one_hot":
            target = torch.randint(0, NUM_ITEMS, (rows,), generator=generator)
        else:
            target = (torch.rand(rows, NUM_ITEMS, generator=generator) < 0.1).float()
        out.append((scores, target))
    return out


def results_of(updates):
    """compute() of every metric class after ``updates``, per label kind."""
    results = {}
    for labels in LABELS:
        for cls in METRICS:
            metric = cls(TOP_KS, labels_onehot=labels == "one_hot")
            for scores, target in updates(labels):
                metric.update(scores, target)
            results[labels, cls.__name__] = metric.compute()
    return results


def run_rank(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S // 2))
    try:
        torch.save(results_of(lambda labels: batches(rank, labels)), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(run_rank, args=(free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1.0):  # raises if a rank failed
            if time.monotonic() > deadline:
                pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("cls", METRICS, ids=lambda cls: cls.__name__)
def test_synced_compute_equals_one_process_on_all_batches(rank_results, labels, cls):
    one_process = results_of(lambda kind: [b for rank in range(WORLD_SIZE) for b in batches(rank, kind)])
    expected = one_process[labels, cls.__name__]
    assert expected.dtype == torch.float32 and expected.shape == (len(TOP_KS),)
    for rank, results in enumerate(rank_results):
        got = results[labels, cls.__name__]
        assert got.dtype == expected.dtype and torch.equal(got, expected), (rank, got, expected)


def test_the_ranks_saw_different_rows(rank_results):
    """The comparison means something: each rank alone gives another value than the whole."""
    alone = [results_of(functools.partial(batches, rank)) for rank in range(WORLD_SIZE)]
    for key, whole in rank_results[0].items():
        for rank in range(WORLD_SIZE):
            assert not torch.equal(alone[rank][key], whole), (key, rank)
