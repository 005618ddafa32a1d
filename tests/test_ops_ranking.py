"""Target ranks on every kernel backend equal the reference bit for bit."""
import pytest
import torch

from helpers import assert_matches_reference, run_op, score_cases

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_target_ranks(backend, dtype):
    generator = torch.Generator().manual_seed(15)
    for name, scores, items in score_cases(generator, backend.interpreted):
        assert_matches_reference(backend, "target_ranks", scores.to(dtype), items, context=(name,))


def test_target_ranks_total_order(backend):
    values = [float("nan"), float("inf"), 1.0, 0.0, -0.0, -1e-45, float("-inf"), -float("nan"), 0.0]
    scores = torch.tensor([values], dtype=torch.float32)
    items = torch.arange(len(values))[None, :]
    # NaNs first in column order, whatever their sign; then descending; -0.0 ties with 0.0 in column order.
    ranks = assert_matches_reference(backend, "target_ranks", scores, items)
    assert ranks.tolist() == [[0, 2, 3, 4, 5, 7, 8, 1, 6]]
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert_matches_reference(backend, "target_ranks", scores.to(dtype), items)


def test_items_outside_the_row_rank_minus_one(backend):
    scores = torch.tensor([[0.5, 0.2, 0.9]])
    items = torch.tensor([[-1, -7, 2, 3, 2**40]])
    assert assert_matches_reference(backend, "target_ranks", scores, items).tolist() == [[-1, -1, 0, -1, -1]]
    no_columns = assert_matches_reference(backend, "target_ranks", torch.zeros(2, 0), torch.tensor([[-1, 0], [7, -5]]))
    assert no_columns.tolist() == [[-1, -1], [-1, -1]]


def test_strided_inputs_are_read_and_left_untouched(backend):
    generator = torch.Generator().manual_seed(16)
    scores = torch.randint(0, 5, (300, 4), generator=generator).float().t().to(backend.device)
    items = torch.randint(0, 300, (3, 4), generator=generator).t().to(backend.device)
    scores_before, items_before = scores.clone(), items.clone()
    assert_matches_reference(backend, "target_ranks", scores, items)
    assert torch.equal(scores, scores_before) and torch.equal(items, items_before)
    assert run_op(backend, "target_ranks", scores[:0], items[:0]).shape == (0, 3)
