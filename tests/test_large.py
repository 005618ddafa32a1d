"""Inputs past 2**31 elements: offsets must be 64-bit. Results are known by construction."""
import os

import pytest
import torch

import fastmask
from fastmask import ops

ROWS, VOCAB = 3, 2**30  # the last row starts at element 2**31


def _available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) / 2**20


pytestmark = [
    pytest.mark.skipif("cpp" not in fastmask.backends(), reason="needs the C++ extension"),
    pytest.mark.skipif(not os.path.exists("/proc/meminfo") or _available_gib() < 14, reason="needs 14 GiB free"),
]


def test_target_ranks_past_two_to_the_31():
    scores = torch.zeros(ROWS, VOCAB, dtype=torch.float16)
    scores[2, 10] = 1.0
    scores[2, VOCAB - 1] = 2.0
    items = torch.tensor([[0, 1, 2], [VOCAB - 1, 3, -1], [VOCAB - 1, 10, VOCAB - 2]])
    with fastmask.use_backend("cpp"):
        ranks = ops.target_ranks(scores, items)
    # Row 2: two higher scores, then the zeros in column order (column 10 is not among them).
    assert ranks.tolist() == [[0, 1, 2], [VOCAB - 1, 3, -1], [0, 1, VOCAB - 1]]


def test_gumbel_argmax_past_two_to_the_31():
    logits = torch.full((ROWS, VOCAB), -float("inf"), dtype=torch.float16)
    winners = [5, VOCAB // 2, VOCAB - 3]
    for row, column in enumerate(winners):
        logits[row, column] = 0.0  # the only finite logit wins whatever the noise
    with fastmask.use_backend("cpp"):
        assert ops.gumbel_argmax(logits, torch.tensor([7])).tolist() == winners
