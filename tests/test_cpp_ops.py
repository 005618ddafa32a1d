"""The compiled CPU ops (torch.ops.fastmask_C) return exactly the reference's bits."""
import itertools
import os
import subprocess
import sys

import pytest
import torch

import fastmask
from fastmask import _backend
from fastmask.reference import masking as ref_masking
from fastmask.reference import ranking as ref_ranking
from fastmask.reference import sampling as ref_sampling
from fastmask.reference.philox import bernoulli_threshold

if _backend.compiled_extension() is None:
    pytest.skip("fastmask._C is not built", allow_module_level=True)

C = torch.ops.fastmask_C
SEEDS = (0, 1, 2**40 + 7, -1, -(2**63), 2**63 - 1)
LAYOUTS = ("right", "left", "middle", "scattered")


def seed_tensor(seed):
    return torch.tensor([seed], dtype=torch.int64)


def session_ids(batch, length, layout, padding_idx, dtype, generator):
    """Item ids with padding placed per `layout`, plus an all-padding row and a one-item row when room."""
    ids = torch.randint(0, 6, (batch, length), generator=generator)
    ids[ids == padding_idx] = padding_idx + 1  # padding only where the layout puts it
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    if batch >= 3:
        lengths[0], lengths[1] = 0, 1
    positions = torch.arange(length)[None, :]
    if layout == "right":
        pad = positions >= lengths[:, None]
    elif layout == "left":
        pad = positions < (length - lengths)[:, None]
    elif layout == "middle":
        pad = (positions >= lengths[:, None] // 2) & (positions < (length - (lengths - lengths // 2))[:, None])
    else:
        pad = torch.rand(batch, length, generator=generator) < 0.4
        if batch >= 3:
            pad[0], pad[1] = True, positions[0] != length // 2
    ids[pad] = padding_idx
    return ids.to(dtype)


def cases(shapes, generator):
    """(ids, padding_idx) over shapes x layouts x padding_idx x id dtype, cycling the last three."""
    combos = itertools.cycle(itertools.product(LAYOUTS, (0, 3), (torch.int64, torch.int32)))
    for (batch, length), (layout, padding_idx, dtype) in zip(shapes, combos):
        yield session_ids(batch, length, layout, padding_idx, dtype, generator), padding_idx


def assert_same(actual, expected):
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want), (got, want)


MASK_SHAPES = [(1, 1), (0, 4), (1, 2), (3, 1), (5, 7), (4, 16), (9, 33), (6, 64), (3, 129), (2, 512)] * 4


@pytest.mark.parametrize("probability", [0.0, 0.15, 0.5, 1.0])
def test_mlm_mask_matches_reference(probability):
    generator = torch.Generator().manual_seed(11)
    threshold = bernoulli_threshold(probability)
    for case, (ids, padding_idx) in enumerate(cases(MASK_SHAPES, generator)):
        seed = SEEDS[case % len(SEEDS)]
        assert_same(C.mlm_mask(ids, seed_tensor(seed), padding_idx, threshold),
                    ref_masking.mlm_mask(ids, seed, padding_idx, threshold))


@pytest.mark.parametrize("permute_all", [False, True])
@pytest.mark.parametrize("plm_probability", [1 / 6, 0.05, 0.5, 1.0])
def test_plm_train_masks_matches_reference(permute_all, plm_probability):
    generator = torch.Generator().manual_seed(12)
    for case, (ids, padding_idx) in enumerate(cases(MASK_SHAPES, generator)):
        seed, max_span = SEEDS[case % len(SEEDS)], 1 + case % 6
        context = ref_masking.plm_context_lengths(plm_probability, max_span)
        assert_same(C.plm_train_masks(ids, seed_tensor(seed), padding_idx, max_span, context, permute_all),
                    ref_masking.plm_train_masks(ids, seed, padding_idx, max_span, context, permute_all))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int8, torch.uint8])
def test_narrow_id_dtypes_match_reference(dtype):
    generator = torch.Generator().manual_seed(18)
    ids = session_ids(9, 23, "scattered", 2, dtype, generator)
    context = ref_masking.plm_context_lengths(0.25, 4)
    for seed in SEEDS[:3]:
        assert_same(C.mlm_mask(ids, seed_tensor(seed), 2, 2**31), ref_masking.mlm_mask(ids, seed, 2, 2**31))
        assert_same(C.plm_train_masks(ids, seed_tensor(seed), 2, 4, context, False),
                    ref_masking.plm_train_masks(ids, seed, 2, 4, context, False))
    assert_same(C.plm_eval_perm_mask(ids, 2), ref_masking.plm_eval_perm_mask(ids, 2))


def test_plm_forced_position_keeps_reference_quirk():
    # With padding_idx != 0, a forced item whose id is 0 is stored as False, as in the reference.
    ids = torch.tensor([[0, 5, 5, 5, 5, 5, 5, 5, 5, 5], [0, 0, 0, 0, 0, 0, 0, 0, 0, 9]])
    context = ref_masking.plm_context_lengths(0.01, 2)  # context far beyond the row: the walk rarely masks
    forced_zero = 0
    for seed in range(64):
        got = C.plm_train_masks(ids, seed_tensor(seed), 9, 2, context, False)
        assert_same(got, ref_masking.plm_train_masks(ids, seed, 9, 2, context, False))
        forced_zero += int(not got[0][1].any())
    assert forced_zero > 0  # the quirk was exercised


def test_plm_eval_perm_mask_matches_reference():
    generator = torch.Generator().manual_seed(13)
    for ids, padding_idx in cases(MASK_SHAPES, generator):
        assert_same(C.plm_eval_perm_mask(ids, padding_idx), ref_masking.plm_eval_perm_mask(ids, padding_idx))


def test_zero_length_rows_give_empty_outputs():
    ids, seed = torch.zeros(3, 0, dtype=torch.int64), seed_tensor(5)
    assert C.mlm_mask(ids, seed, 0, 7).shape == (3, 0)
    assert [t.shape for t in C.plm_train_masks(ids, seed, 0, 2, [0, 6, 12], False)] == [(3, 0), (3, 0, 0), (3, 0, 0)]
    assert C.plm_eval_perm_mask(ids, 0).shape == (3, 0, 0)


def logits_cases(generator):
    """(name, float32 logits) covering ties, infinities, NaN and wide ranges."""
    def randn(rows, vocab, scale=1.0):
        return torch.randn(rows, vocab, generator=generator) * scale

    ties = torch.randint(0, 3, (4, 3001), generator=generator).float()
    with_inf = randn(5, 777)
    with_inf[with_inf < -0.5] = -float("inf")
    with_inf[1] = -float("inf")  # every column -inf: the first one wins
    with_inf[2, 100] = float("inf")
    with_inf[3, [5, 600]] = float("inf")  # tie between +inf: the first wins
    with_nan = randn(6, 515)
    with_nan[0, 0] = with_nan[1, 514] = float("nan")
    with_nan[2, [3, 200]] = float("nan")
    with_nan[3, 130] = float("nan")
    with_nan[3, 129] = 1e30
    with_nan[4] = float("nan")
    spread = randn(4, 2000) * torch.logspace(-3, 30, 2000)
    peaked = randn(3, 4096)
    peaked[:, 4000] = 40.0
    return [
        ("one column", randn(3, 1)),
        ("tiny", randn(5, 3)),
        ("chunk edges", randn(4, 128)),
        ("chunk edges + 1", randn(4, 129)),
        ("block edges", randn(3, 161)),
        ("ties", ties),
        ("zeros", torch.zeros(3, 1000)),
        ("inf", with_inf),
        ("nan", with_nan),
        ("spread", spread),
        ("flat", randn(4, 5000, 1e-3)),
        ("wide", randn(4, 5000, 30.0)),
        ("peaked late", peaked),
        ("vocab 50k", randn(3, 50_000)),
        ("vocab 200k", randn(2, 200_000, 3.0)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gumbel_argmax_matches_reference(dtype):
    generator = torch.Generator().manual_seed(14)
    for case, (name, logits) in enumerate(logits_cases(generator)):
        if dtype == torch.float64:
            logits = logits.double() * (1 + 1e-9)  # values that round when cast to float32
        logits = logits.to(dtype)
        seed = SEEDS[case % len(SEEDS)]
        got = C.gumbel_argmax(logits, seed_tensor(seed))
        assert torch.equal(got, ref_sampling.gumbel_argmax(logits, seed)), name


PORTABLE_SCRIPT = """
import torch
from fastmask import _backend
from fastmask.reference import ranking, sampling
_backend.compiled_extension()
g = torch.Generator().manual_seed(21)
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for rows, vocab in ((3, 1), (4, 128), (3, 1000), (2, 20_001)):
        logits = (torch.randn(rows, vocab, generator=g) * 3).to(dtype)
        got = torch.ops.fastmask_C.gumbel_argmax(logits, torch.tensor([rows * vocab]))
        assert torch.equal(got, sampling.gumbel_argmax(logits, rows * vocab)), (dtype, rows, vocab)
        items = torch.randint(-1, vocab, (rows, 3), generator=g)
        assert torch.equal(torch.ops.fastmask_C.target_ranks(logits, items), ranking.target_ranks(logits, items))
print("portable ok")
"""


def test_portable_code_paths_match_reference():
    # The AVX2 / F16C paths run everywhere else in this file; FASTMASK_CPU_PORTABLE=1 selects the others.
    env = {**os.environ, "FASTMASK_CPU_PORTABLE": "1"}
    result = subprocess.run([sys.executable, "-c", PORTABLE_SCRIPT], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "portable ok" in result.stdout, result.stderr


def test_extension_reports_cuda_support():
    assert _backend.compiled_extension().WITH_CUDA in (True, False)


def test_gumbel_argmax_float64_beyond_float32_range():
    logits = torch.tensor([[1e300, 1e39, -1e300, 3.0], [-1e300, -1e39, -1e40, -1e300]], dtype=torch.float64)
    for seed in SEEDS:
        assert torch.equal(C.gumbel_argmax(logits, seed_tensor(seed)), ref_sampling.gumbel_argmax(logits, seed))


def test_seed_tensor_views_are_read_at_their_offset():
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    for seed in (torch.tensor([0, 0, 77])[2:], torch.tensor([[77]]), torch.tensor([77, 1])[::2]):
        assert torch.equal(C.mlm_mask(ids, seed, 0, 2**31), ref_masking.mlm_mask(ids, 77, 0, 2**31))


def test_gumbel_argmax_rows_and_seeds_change_the_sample():
    logits = torch.zeros(64, 1000)
    samples = C.gumbel_argmax(logits, seed_tensor(3))
    assert samples.unique().numel() > 50  # rows draw independent noise
    assert not torch.equal(samples, C.gumbel_argmax(logits, seed_tensor(4)))


def test_gumbel_argmax_empty_batch():
    logits = torch.zeros(0, 10)
    assert torch.equal(C.gumbel_argmax(logits, seed_tensor(1)), ref_sampling.gumbel_argmax(logits, 1))


def score_cases(generator):
    def items(rows, vocab, per_row):
        chosen = torch.randint(0, vocab, (rows, per_row), generator=generator)
        chosen[torch.rand(rows, per_row, generator=generator) < 0.2] = -1
        return chosen

    tied = torch.randint(0, 3, (6, 1000), generator=generator).float()
    special = torch.randn(5, 300, generator=generator)
    special[special > 1.0] = float("nan")
    special[special < -1.5] = -float("inf")
    special[:, ::7] = 0.0
    special[:, ::11] = -0.0
    special[0, :] = float("nan")
    special[1, 10] = float("inf")
    special[2, ::13] = -torch.tensor(float("nan"))  # NaN with the sign bit set
    return [
        ("one column", torch.randn(3, 1, generator=generator), torch.tensor([[0], [-1], [0]])),
        ("random", torch.randn(7, 513, generator=generator), items(7, 513, 1)),
        ("tied", tied, items(6, 1000, 5)),
        ("tied small range", torch.randint(0, 2, (4, 9000), generator=generator).float(), items(4, 9000, 3)),
        ("nan inf signed zero", special, items(5, 300, 8)),
        ("every column", torch.randint(0, 4, (2, 50), generator=generator).float(),
         torch.arange(50).repeat(2, 1)),
        ("vocab 200k", torch.randn(2, 200_000, generator=generator), items(2, 200_000, 4)),
        ("no items", torch.randn(3, 10, generator=generator), torch.empty(3, 0, dtype=torch.int64)),
        ("no rows", torch.randn(0, 10, generator=generator), torch.empty(0, 2, dtype=torch.int64)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_target_ranks_matches_reference(dtype):
    generator = torch.Generator().manual_seed(15)
    for name, scores, items in score_cases(generator):
        scores = scores.to(dtype)
        got = C.target_ranks(scores, items)
        assert got.dtype == torch.int64 and got.shape == items.shape
        assert torch.equal(got, ref_ranking.target_ranks(scores, items)), name


def test_target_ranks_items_outside_the_row_mean_none():
    scores = torch.tensor([[0.5, 0.2, 0.9]])
    items = torch.tensor([[-1, -7, 2, 3, 2**40]])
    assert torch.equal(C.target_ranks(scores, items), ref_ranking.target_ranks(scores, items))
    assert C.target_ranks(scores, items).tolist() == [[-1, -1, 0, -1, -1]]


def test_non_contiguous_inputs_and_inputs_untouched():
    generator = torch.Generator().manual_seed(16)
    ids = session_ids(12, 9, "scattered", 0, torch.int64, generator).t()  # (9, 12), strided
    ids_before = ids.clone()
    seed = seed_tensor(77)
    context = ref_masking.plm_context_lengths(0.3, 3)
    assert_same(C.mlm_mask(ids, seed, 0, 2**31), ref_masking.mlm_mask(ids.contiguous(), 77, 0, 2**31))
    assert_same(C.plm_train_masks(ids, seed, 0, 3, context, False),
                ref_masking.plm_train_masks(ids.contiguous(), 77, 0, 3, context, False))
    assert_same(C.plm_eval_perm_mask(ids, 0), ref_masking.plm_eval_perm_mask(ids.contiguous(), 0))
    assert torch.equal(ids, ids_before) and torch.equal(seed, seed_tensor(77))

    logits = torch.randn(400, 6, generator=generator).t()[:, ::3]  # (6, 134), strided both ways
    logits_before = logits.clone()
    assert torch.equal(C.gumbel_argmax(logits, seed), ref_sampling.gumbel_argmax(logits.contiguous(), 77))
    assert torch.equal(logits, logits_before)

    scores = torch.randint(0, 5, (300, 4), generator=generator).float().t()
    items = torch.randint(0, 300, (3, 4), generator=generator).t()
    scores_before, items_before = scores.clone(), items.clone()
    assert torch.equal(C.target_ranks(scores, items), ref_ranking.target_ranks(scores.contiguous(), items.contiguous()))
    assert torch.equal(scores, scores_before) and torch.equal(items, items_before)


IDS = torch.tensor([[1, 2, 0]])
SEED = seed_tensor(1)
CONTEXT = [0, 6, 12]


@pytest.mark.parametrize("call, error, words", [
    (lambda: C.mlm_mask(IDS[0], SEED, 0, 5), ValueError, "item_ids must be 2-D"),
    (lambda: C.mlm_mask(IDS.float(), SEED, 0, 5), TypeError, "item_ids must be an integer"),
    (lambda: C.mlm_mask(IDS.bool(), SEED, 0, 5), TypeError, "item_ids must be an integer"),
    (lambda: C.mlm_mask(IDS.to(torch.uint16), SEED, 0, 5), TypeError, "item_ids must be an integer"),
    (lambda: C.mlm_mask(IDS.int(), SEED, 2**40, 5), ValueError, "padding_idx"),
    (lambda: C.mlm_mask(IDS.to(torch.uint8), SEED, 300, 5), ValueError, "padding_idx=300 does not fit"),
    (lambda: C.mlm_mask(IDS.to(torch.int8), SEED, -129, 5), ValueError, "padding_idx=-129 does not fit"),
    (lambda: C.mlm_mask(IDS, SEED.int(), 0, 5), TypeError, "seed must be an int64"),
    (lambda: C.mlm_mask(IDS, torch.tensor([1, 2]), 0, 5), ValueError, "seed must hold exactly one"),
    (lambda: C.mlm_mask(IDS, SEED, 0, -1), ValueError, "threshold"),
    (lambda: C.mlm_mask(IDS, SEED, 0, 2**32 + 1), ValueError, "threshold"),
    (lambda: C.plm_train_masks(IDS, SEED, 0, 2, [0, 6], False), ValueError, "context_lengths must have"),
    (lambda: C.plm_train_masks(IDS, SEED, 0, 0, [0], False), ValueError, "max_span_length"),
    (lambda: C.plm_train_masks(IDS, SEED, 0, 2, [0, 6, 1], False), ValueError, "context_lengths[2]"),
    (lambda: C.plm_train_masks(IDS, SEED, 0, 2, [0, 6, 2**31], False), ValueError, "context_lengths[2]"),
    (lambda: C.plm_train_masks(IDS.double(), SEED, 0, 2, CONTEXT, False), TypeError, "item_ids"),
    (lambda: C.plm_eval_perm_mask(IDS[None], 0), ValueError, "item_ids must be 2-D"),
    (lambda: C.gumbel_argmax(torch.ones(2, 3, dtype=torch.int64), SEED), TypeError, "logits must be float"),
    (lambda: C.gumbel_argmax(torch.ones(3), SEED), ValueError, "logits must be 2-D"),
    (lambda: C.gumbel_argmax(torch.ones(2, 3).to(torch.float8_e5m2), SEED), TypeError, "logits must be float32"),
    (lambda: C.target_ranks(torch.ones(2, 3).to(torch.float8_e4m3fn), torch.zeros(2, 1, dtype=torch.int64)), TypeError,
     "scores must be float32"),
    (lambda: C.gumbel_argmax(torch.ones(2, 0), SEED), ValueError, "at least one column"),
    (lambda: C.gumbel_argmax(torch.ones(2, 3), torch.tensor([1.0])), TypeError, "seed must be an int64"),
    (lambda: C.target_ranks(torch.ones(2, 3, dtype=torch.int32), torch.zeros(2, 1, dtype=torch.int64)), TypeError,
     "scores must be float"),
    (lambda: C.target_ranks(torch.ones(3), torch.zeros(2, 1, dtype=torch.int64)), ValueError, "scores must be 2-D"),
    (lambda: C.target_ranks(torch.ones(2, 3), torch.zeros(2, 1, dtype=torch.int32)), TypeError, "items must be an int64"),
    (lambda: C.target_ranks(torch.ones(2, 3), torch.zeros(3, 1, dtype=torch.int64)), ValueError, "one row per scores"),
])
def test_bad_input_raises_a_named_error(call, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_use_backend_cpp_reaches_the_compiled_ops():
    generator = torch.Generator().manual_seed(17)
    ids = session_ids(6, 20, "right", 0, torch.int64, generator)
    seed = seed_tensor(9)
    logits = torch.randn(4, 300, generator=generator)
    scores, items = torch.randn(4, 300, generator=generator), torch.tensor([[1], [2], [-1], [299]])
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    with fastmask.use_backend("cpp"):
        results = {
            "mlm_mask": (fastmask.ops.mlm_mask(ids, seed, 0, 2**30), ref_masking.mlm_mask(ids, 9, 0, 2**30)),
            "plm_train_masks": (fastmask.ops.plm_train_masks(ids, seed, 0, 5, context, False),
                                ref_masking.plm_train_masks(ids, 9, 0, 5, context, False)),
            "plm_eval_perm_mask": (fastmask.ops.plm_eval_perm_mask(ids, 0), ref_masking.plm_eval_perm_mask(ids, 0)),
            "gumbel_argmax": (fastmask.ops.gumbel_argmax(logits, seed), ref_sampling.gumbel_argmax(logits, 9)),
            "target_ranks": (fastmask.ops.target_ranks(scores, items), ref_ranking.target_ranks(scores, items)),
        }
    for op, (got, want) in results.items():
        assert fastmask.ops.last_backend(op) == "cpp"
        assert_same(got, want)
