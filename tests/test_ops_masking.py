"""The masking ops on every kernel backend equal the reference bit for bit (values, dtype, shape)."""
import pytest
import torch

from fastmask.reference import philox
from fastmask.reference.masking import plm_context_lengths
from fastmask.reference.philox import bernoulli_threshold

from helpers import (
    SEEDS,
    assert_matches_reference,
    assert_same,
    id_cases,
    mask_shapes,
    on_cpu,
    reference,
    run_op,
    seed_tensor,
    session_ids,
)

ROW_TARGET_OPS = ["next_item_targets", "last_item_targets", "clm_last_item_targets", "mlm_inference_targets"]


@pytest.mark.parametrize("probability", [0.0, 0.15, 0.5, 1.0])
def test_mlm_train(backend, probability):
    generator = torch.Generator().manual_seed(11)
    threshold = bernoulli_threshold(probability)
    for case, (ids, padding_idx) in enumerate(id_cases(mask_shapes(backend), generator)):
        seed = seed_tensor(SEEDS[case % len(SEEDS)])
        assert_matches_reference(backend, "mlm_train", ids, seed, padding_idx, threshold, context=(case,))


def test_mlm_train_extreme_thresholds(backend):
    ids = session_ids(6, 9, "scattered", 0, torch.int64, torch.Generator().manual_seed(3))
    for threshold in (1, 2**32 - 1, 2**32):
        assert_matches_reference(backend, "mlm_train", ids, seed_tensor(5), 0, threshold, context=(threshold,))


@pytest.mark.parametrize("permute_all", [False, True])
@pytest.mark.parametrize("plm_probability", [1 / 6, 0.05, 0.5, 1.0])
def test_plm_train(backend, permute_all, plm_probability):
    # 0.05: long contexts, short rows often mask nothing and take the force step; 1.0: spans fill their
    # contexts, so the last one runs into padding and is counted by the drop step.
    generator = torch.Generator().manual_seed(12)
    for case, (ids, padding_idx) in enumerate(id_cases(mask_shapes(backend), generator)):
        seed, max_span = seed_tensor(SEEDS[case % len(SEEDS)]), 1 + case % 6
        context = plm_context_lengths(plm_probability, max_span)
        assert_matches_reference(backend, "plm_train", ids, seed, padding_idx, max_span, context, permute_all,
                                 context=(case,))


def test_plm_eval(backend):
    generator = torch.Generator().manual_seed(13)
    for case, (ids, padding_idx) in enumerate(id_cases(mask_shapes(backend), generator)):
        assert_matches_reference(backend, "plm_eval", ids, padding_idx, context=(case,))


@pytest.mark.parametrize("op", ROW_TARGET_OPS)
def test_targets_without_randomness(backend, op):
    generator = torch.Generator().manual_seed(14)
    for case, (ids, padding_idx) in enumerate(id_cases(mask_shapes(backend), generator)):
        assert_matches_reference(backend, op, ids, padding_idx, context=(case,))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int8, torch.uint8])
def test_narrow_id_dtypes(backend, dtype):
    ids = session_ids(9, 23, "scattered", 2, dtype, torch.Generator().manual_seed(18))
    context = plm_context_lengths(0.25, 4)
    for seed in SEEDS[:3]:
        assert_matches_reference(backend, "mlm_train", ids, seed_tensor(seed), 2, 2**31)
        assert_matches_reference(backend, "plm_train", ids, seed_tensor(seed), 2, 4, context, False)
    for op in ["plm_eval", *ROW_TARGET_OPS]:
        assert_matches_reference(backend, op, ids, 2)


def test_any_padding_idx_the_ids_dtype_holds(backend):
    ids = torch.tensor([[5, -1, 7, -1], [-1, -1, -1, 3]], dtype=torch.int8)
    assert_matches_reference(backend, "mlm_train", ids, seed_tensor(9), -1, 2**31)
    assert_matches_reference(backend, "plm_eval", ids, -128)
    schema, targets = run_op(backend, "mlm_train", ids, seed_tensor(9), -1, 2**31)
    assert not schema.cpu()[ids == -1].any() and schema[0].any()  # padding is never a target; row 0 has one
    for padding_idx, dtype in ((128, torch.int8), (-129, torch.int8), (256, torch.uint8), (-1, torch.uint8)):
        with pytest.raises(ValueError, match=f"padding_idx={padding_idx} does not fit the dtype of item_ids"):
            run_op(backend, "mlm_train", ids.to(dtype), seed_tensor(9), padding_idx, 2**31)


def test_plm_forced_position_keeps_reference_quirk(backend):
    # With padding_idx != 0, a forced item whose id is 0 is stored as False, as in the reference.
    ids = torch.tensor([[0, 5, 5, 5, 5, 5, 5, 5, 5, 5], [0, 0, 0, 0, 0, 0, 0, 0, 0, 9]])
    context = plm_context_lengths(0.01, 2)  # context far beyond the row: the walk rarely masks
    forced_zero = 0
    for seed in range(16 if backend.interpreted else 64):
        schema = assert_matches_reference(backend, "plm_train", ids, seed_tensor(seed), 9, 2, context, False)[0]
        forced_zero += int(not schema[1].any())
    assert forced_zero > 0  # the quirk was exercised


def test_rows_without_columns_and_batches_without_rows(backend):
    context = plm_context_lengths(1 / 3, 2)
    for shape in [(3, 0), (0, 5)]:
        ids = torch.zeros(shape, dtype=torch.int64)
        assert_matches_reference(backend, "mlm_train", ids, seed_tensor(3), 0, 2**31)
        assert_matches_reference(backend, "plm_train", ids, seed_tensor(3), 0, 2, context, False)
        assert_matches_reference(backend, "plm_eval", ids, 0)
        for op in ROW_TARGET_OPS:
            assert_matches_reference(backend, op, ids, 0)
    schema, targets = run_op(backend, "mlm_inference_targets", torch.zeros(2, 0, dtype=torch.int64), 0)
    assert schema.shape == (2, 1) and not schema.any()  # one [MASK] slot, nothing to copy into it


def test_strided_inputs_are_read_and_left_untouched(backend):
    ids = session_ids(12, 9, "scattered", 0, torch.int64, torch.Generator().manual_seed(16)).t().to(backend.device)
    assert not ids.is_contiguous()
    before = ids.clone()
    seed = seed_tensor(77, backend.device)
    assert_matches_reference(backend, "mlm_train", ids, seed, 0, 2**31)
    assert_matches_reference(backend, "plm_train", ids, seed, 0, 3, plm_context_lengths(0.3, 3), False)
    for op in ["plm_eval", *ROW_TARGET_OPS]:
        assert_matches_reference(backend, op, ids, 0)
    assert_same(ids, before)
    assert_same(seed, seed_tensor(77, backend.device))


def test_seed_views_are_read_at_their_offset(backend):
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    want = reference("mlm_train", ids, 77, 0, 2**31)
    for seed in (torch.tensor([0, 0, 77])[2:], torch.tensor([[77]]), torch.tensor([77, 1])[::2]):
        assert_same(on_cpu(run_op(backend, "mlm_train", ids, seed, 0, 2**31)), want)


def test_mlm_bernoulli_draw_equal_to_the_threshold_is_no_target(backend):
    # The threshold is set to each draw of the row in turn: `draw < threshold` must be strict.
    ids = torch.arange(1, 17)[None, :]
    words = philox.draws(2024, philox.STREAM_MLM_BERNOULLI, 0, range(ids.shape[1]))
    for threshold in words.tolist():
        assert_matches_reference(backend, "mlm_train", ids, seed_tensor(2024), 0, threshold, context=(threshold,))


def test_plm_factorisation_key_tie_is_broken_by_position(backend):
    # Under this seed, row 0 draws the same PLM_PERM key at positions 4 and 6 (found by search).
    seed, first, second = 54854068, 4, 6
    keys = philox.draws(seed, philox.STREAM_PLM_PERM, 0, range(16))
    assert keys[first] == keys[second]
    ids = torch.arange(1, 17)[None, :]
    schema, _, perm, _ = assert_matches_reference(backend, "plm_train", ids, seed_tensor(seed), 0, 3, [0, 2, 4, 6],
                                                  True)
    # Both are targets, so the tie decides: the lower position comes first in the order.
    assert schema[0, first] and schema[0, second]
    assert perm[0, first, second] == 1 and perm[0, second, first] == 0
