"""Triton kernels vs the reference, bit for bit.

Without a GPU the kernels run under the Triton interpreter (tests/conftest.py), so shapes stay
tiny (B <= 8, L <= 32, V <= 4096) and the launch geometry (blocks, splits, tiles) is forced small
to run every multi-block, multi-split and multi-tile path. GPU-only tests at full shapes, under
torch.compile and in CUDA graphs run where CUDA is available.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import fastmask
from fastmask import ops
from fastmask.reference import masking as ref_masking
from fastmask.reference import philox as ref_philox
from fastmask.reference import ranking as ref_ranking
from fastmask.reference import sampling as ref_sampling
from fastmask.triton_kernels import masking as tk_masking
from fastmask.triton_kernels import philox as tk_philox
from fastmask.triton_kernels import ranking as tk_ranking
from fastmask.triton_kernels import sampling as tk_sampling

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEEDS = (0, 12345, -1, 2**63 - 1)


def seed_tensor(seed: int) -> torch.Tensor:
    return torch.tensor([seed], dtype=torch.int64, device=DEVICE)


def key(seed: int) -> int:
    return seed & 0xFFFFFFFFFFFFFFFF


def edge_case_ids(length: int, padding_idx: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """One row per layout: all padding, one item first, right/left/middle padding, full, id 0, one item last.

    Ids are drawn from a small vocabulary that includes 0, so with padding_idx != 0 some items are 0.
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = torch.tensor([v for v in range(6) if v != padding_idx])
    ids = vocab[torch.randint(0, len(vocab), (8, length), generator=gen)]
    cut = max(1, length // 2)
    ids[0] = padding_idx
    ids[1, 1:] = padding_idx
    ids[2, cut:] = padding_idx
    ids[3, : length - cut] = padding_idx
    ids[4, 1::3] = padding_idx
    if padding_idx != 0:
        ids[6, ::2] = 0
    ids[7, :-1] = padding_idx
    return ids.to(dtype).to(DEVICE)


# --------------------------------------------------------------------------------------------
# Philox draw layout


@triton.jit
def _draws_kernel(seed_ptr, block_out, scalar_out, row, stream: tl.constexpr, BLOCK: tl.constexpr):
    seed = tl.load(seed_ptr)
    elements = tl.arange(0, BLOCK)
    tl.store(block_out + elements, tk_philox.block_draws(seed, stream, row, BLOCK, BLOCK).to(tl.int64))
    tl.store(scalar_out + elements, tk_philox.draw(seed, stream, row, elements + BLOCK).to(tl.int64))


@pytest.mark.parametrize("seed", SEEDS + (-(2**63),))
def test_philox_draws_match_reference(seed):
    block = 64
    block_out = torch.empty(block, dtype=torch.int64, device=DEVICE)
    scalar_out = torch.empty_like(block_out)
    _draws_kernel[(1,)](seed_tensor(seed), block_out, scalar_out, 5, ref_philox.STREAM_GUMBEL, BLOCK=block)
    expected = ref_philox.draws(key(seed), ref_philox.STREAM_GUMBEL, 5, np.arange(block, 2 * block)).astype(np.int64)
    assert np.array_equal(block_out.cpu().numpy(), expected)
    assert np.array_equal(scalar_out.cpu().numpy(), expected)


# --------------------------------------------------------------------------------------------
# MLM


# (length, id dtype, padding_idx): odd and power-of-two lengths, L = 1, both id widths.
ROW_LAYOUTS = [
    (1, torch.int64, 0),
    (1, torch.int32, 3),
    (5, torch.int32, 2),
    (13, torch.int64, 2),
    (32, torch.int32, 0),
    (32, torch.int64, 3),
]


@pytest.mark.parametrize("length,dtype,padding_idx", ROW_LAYOUTS)
def test_mlm_mask_matches_reference(length, dtype, padding_idx):
    ids = edge_case_ids(length, padding_idx, dtype, seed=length)
    before = ids.clone()
    for seed, probability in [(0, 0.15), (-1, 0.5), (2**63 - 1, 1.0), (777, 0.0)]:
        threshold = ref_philox.bernoulli_threshold(probability)
        got = tk_masking.mlm_mask(ids, seed_tensor(seed), padding_idx, threshold)
        expected = ref_masking.mlm_mask(ids, key(seed), padding_idx, threshold)
        assert got.dtype == torch.bool and torch.equal(got, expected), (seed, probability)
    assert torch.equal(ids, before)


# --------------------------------------------------------------------------------------------
# PLM


PLM_SETTINGS = [  # (max_span_length, plm_probability)
    (5, 1 / 6),
    (1, 1.0),  # every position masked: the drop-one step runs on every row with items
    (3, 0.5),
    (2, 0.05),  # long contexts: short rows often mask nothing and take the force step
    (4, 1.0),  # spans fill their contexts: the last one runs into padding and is counted for the drop step
]


def assert_plm_equal(got, expected):
    names = ("mask", "perm_mask", "target_mapping")
    for name, a, b in zip(names, got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name


@pytest.mark.parametrize("length,dtype,padding_idx", ROW_LAYOUTS)
def test_plm_train_masks_matches_reference(length, dtype, padding_idx):
    ids = edge_case_ids(length, padding_idx, dtype, seed=100 + length)
    before = ids.clone()
    for index, (max_span, probability) in enumerate(PLM_SETTINGS):
        context = ref_masking.plm_context_lengths(probability, max_span)
        seed = SEEDS[index % len(SEEDS)]
        for permute_all in (False, True) if index < 2 else (False,):
            got = tk_masking.plm_train_masks(ids, seed_tensor(seed), padding_idx, max_span, context, permute_all)
            expected = ref_masking.plm_train_masks(ids, key(seed), padding_idx, max_span, context, permute_all)
            assert_plm_equal(got, expected)
    assert torch.equal(ids, before)


@pytest.mark.parametrize("length,block_q,block_k", [(13, 4, 8), (32, 8, 16), (6, 4, 4)])
def test_plm_train_masks_several_tiles(length, block_q, block_k):
    ids = edge_case_ids(length, 0, torch.int64, seed=length)
    context = ref_masking.plm_context_lengths(0.5, 3)
    for permute_all in (False, True):
        got = tk_masking.plm_train_masks(ids, seed_tensor(99), 0, 3, context, permute_all, block_q=block_q, block_k=block_k)
        assert_plm_equal(got, ref_masking.plm_train_masks(ids, 99, 0, 3, context, permute_all))


@pytest.mark.parametrize("length,dtype,padding_idx", ROW_LAYOUTS)
def test_plm_eval_perm_mask_matches_reference(length, dtype, padding_idx):
    ids = edge_case_ids(length, padding_idx, dtype, seed=200 + length)
    got = tk_masking.plm_eval_perm_mask(ids, padding_idx)
    assert got.dtype == torch.int64 and torch.equal(got, ref_masking.plm_eval_perm_mask(ids, padding_idx))
    if length == 13:  # several query and key tiles
        assert torch.equal(tk_masking.plm_eval_perm_mask(ids, padding_idx, block_q=4, block_k=8), got)


def test_masking_empty_shapes():
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    for shape in [(0, 5), (3, 0)]:
        ids = torch.zeros(shape, dtype=torch.int64, device=DEVICE)
        assert tk_masking.mlm_mask(ids, seed_tensor(1), 0, 2**31).shape == shape
        mask, perm, mapping = tk_masking.plm_train_masks(ids, seed_tensor(1), 0, 5, context, False)
        assert mask.shape == shape and perm.shape == shape + shape[1:] and mapping.shape == perm.shape
        assert tk_masking.plm_eval_perm_mask(ids, 0).shape == shape + shape[1:]


# --------------------------------------------------------------------------------------------
# Gumbel-max sampling


def gumbel_logits(rows: int, columns: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random logits plus rows of ties, NaNs and infinities placed across blocks and splits."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, columns, generator=gen, dtype=torch.float64) * 3
    special = [
        lambda r: r.fill_(float("-inf")),  # all -inf: index 0
        lambda r: r.index_fill_(0, torch.arange(columns // 3, columns, max(1, columns // 4)), float("inf")),
        lambda r: r.fill_(1e30),  # the noise vanishes: a tie everywhere, index 0
        lambda r: r.index_fill_(0, torch.arange(columns - 1, -1, -max(1, columns // 3)), float("nan")),
        lambda r: r.fill_(float("-inf")).index_fill_(0, torch.tensor([columns - 1]), -5.0),
        lambda r: r.add_(torch.linspace(0, 40, columns, dtype=torch.float64)),  # winners late: few skips
    ]
    for row, fill in zip(range(1, rows), special):
        fill(logits[row])
    return logits.to(dtype).to(DEVICE)


GUMBEL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", GUMBEL_DTYPES)
@pytest.mark.parametrize(
    "rows,columns,block,splits",
    [
        (8, 4096, None, None),  # launcher's own geometry
        (7, 1000, 64, 1),  # one program per row walks 16 blocks: the block-skip path
        (7, 777, 64, 3),  # splits + reduction, a ragged last split
        (3, 5, None, None),
        (1, 1, None, None),
    ],
)
def test_gumbel_argmax_matches_reference(dtype, rows, columns, block, splits):
    logits = gumbel_logits(rows, columns, dtype, seed=columns)
    for seed in (SEEDS[:2] if columns >= 777 else SEEDS):
        got = tk_sampling.gumbel_argmax(logits, seed_tensor(seed), block=block, splits=splits)
        expected = ref_sampling.gumbel_argmax(logits, key(seed))
        assert got.dtype == torch.int64 and torch.equal(got, expected), (seed, got, expected)


def test_gumbel_argmax_tie_and_nan_rules():
    # Values equal after the noise is absorbed: the first index wins, also across blocks and splits.
    logits = torch.full((3, 300), -1e30, dtype=torch.float32, device=DEVICE)
    logits[0, [37, 100, 299]] = 1e30
    logits[1, [150, 20]] = float("nan")
    logits[1, 0] = float("inf")
    logits[2, [0, 299]] = float("inf")
    for block, splits in [(32, 1), (32, 4), (64, 2)]:
        got = tk_sampling.gumbel_argmax(logits, seed_tensor(5), block=block, splits=splits)
        assert got.tolist() == [37, 20, 0]
        assert torch.equal(got, ref_sampling.gumbel_argmax(logits, 5))


def test_gumbel_argmax_equal_values_in_a_later_block_that_is_not_skipped():
    """A later block whose bound beats the best but whose best value only ties it must not win."""
    seed, block = 4242, 32
    noise = ref_sampling.gumbel_noise(seed, np.zeros(1, dtype=np.uint64), 3 * block)[0]
    first, second = noise[:block], noise[block : 2 * block]
    a = int((first - 1).abs().argmin())
    b = block + int((second - noise[a]).abs().argmin())
    c = block + int(second.argmin())
    assert 0.5 * noise[b] <= noise[a] <= 2 * noise[b] and b != c  # Sterbenz: the difference is exact
    logits = torch.full((1, 3 * block), -1e30, dtype=torch.float32)
    logits[0, a] = 0.0
    logits[0, b] = noise[a] - noise[b]
    logits[0, c] = noise[a] - noise[c] - 0.5
    values = logits[0] + noise
    assert values[b] == values[a] and values[c] < values[a]
    assert logits[0, c] + second.max() > values[a]  # so the block is scanned, not skipped
    logits = logits.to(DEVICE)
    assert ref_sampling.gumbel_argmax(logits, seed).tolist() == [a]
    for splits in (1, 3):
        assert tk_sampling.gumbel_argmax(logits, seed_tensor(seed), block=block, splits=splits).tolist() == [a]


def test_gumbel_argmax_strided_and_empty():
    logits = gumbel_logits(4, 600, torch.float32, seed=3)
    view = logits.t().contiguous().t()  # column-major: copied to rows before the launch
    assert torch.equal(tk_sampling.gumbel_argmax(view, seed_tensor(8)), ref_sampling.gumbel_argmax(logits, 8))
    assert tk_sampling.gumbel_argmax(logits[:0], seed_tensor(8)).shape == (0,)


# --------------------------------------------------------------------------------------------
# Ranks


def ranking_scores(rows: int, columns: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Few distinct values (many ties), NaNs, both zeros and infinities."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (rows, columns), generator=gen).to(torch.float64) / 2
    scores[0, ::7] = float("nan")
    scores[-1, 1::5] = -0.0
    scores[-1, 2::11] = float("-inf")
    scores[0, 3::13] = float("inf")
    return scores.to(dtype).to(DEVICE)


def ranking_items(scores: torch.Tensor, items_per_row: int, seed: int) -> torch.Tensor:
    rows, columns = scores.shape
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(0, columns, (rows, items_per_row), generator=gen)
    items[0, 0] = -1
    if columns > 7:
        items[0, -1] = 7  # a NaN score
    items[-1, -1] = min(1, columns - 1)  # a -0.0 among zeros
    return items.to(DEVICE)


@pytest.mark.parametrize("dtype", GUMBEL_DTYPES)
@pytest.mark.parametrize(
    "rows,columns,items_per_row,block,splits",
    [
        (8, 4096, 1, None, None),
        (3, 1000, 5, 64, 1),  # several blocks per program
        (5, 777, 3, 32, 4),  # atomic accumulation over splits
        (2, 5, 2, None, None),
        (1, 1, 1, None, None),
    ],
)
def test_target_ranks_matches_reference(dtype, rows, columns, items_per_row, block, splits):
    scores = ranking_scores(rows, columns, dtype, seed=columns)
    items = ranking_items(scores, items_per_row, seed=columns)
    got = tk_ranking.target_ranks(scores, items, block=block, splits=splits)
    assert got.dtype == torch.int64 and torch.equal(got, ref_ranking.target_ranks(scores, items))


def test_target_ranks_total_order():
    values = [float("nan"), float("inf"), 1.0, 0.0, -0.0, -1e-45, float("-inf"), float("nan"), 0.0]
    scores = torch.tensor([values], dtype=torch.float32, device=DEVICE)
    items = torch.arange(len(values), device=DEVICE)[None, :]
    # NaNs first in column order; then descending; -0.0 ties with 0.0 in column order.
    assert tk_ranking.target_ranks(scores, items).tolist() == [[0, 2, 3, 4, 5, 7, 8, 1, 6]]
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        got = tk_ranking.target_ranks(scores.to(dtype), items)
        assert torch.equal(got, ref_ranking.target_ranks(scores.to(dtype), items))


def test_target_ranks_items_outside_the_row_are_none():
    scores = ranking_scores(2, 50, torch.float32, seed=1)
    items = torch.tensor([[-1, 50, 3], [-7, 0, 49]], device=DEVICE)
    got = tk_ranking.target_ranks(scores, items)
    assert got[0, :2].tolist() == [-1, -1] and got[1, 0].item() == -1
    assert torch.equal(got, ref_ranking.target_ranks(scores, items))


def test_target_ranks_more_items_than_one_tile(monkeypatch):
    monkeypatch.setattr(tk_ranking, "TILE_ELEMENTS", 8)  # 8 items per program: 3 item blocks
    scores = ranking_scores(3, 50, torch.float32, seed=4)
    items = torch.randint(-1, 50, (3, 21), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    expected = ref_ranking.target_ranks(scores, items)
    assert torch.equal(tk_ranking.target_ranks(scores, items), expected)
    assert torch.equal(tk_ranking.target_ranks(scores, items, block=16, splits=2), expected)


def test_rows_longer_than_one_program_are_refused(monkeypatch):
    monkeypatch.setattr(tk_masking, "MAX_ROW_LENGTH", 16)  # the kernels would cover 16 positions only
    ids = torch.ones(2, 17, dtype=torch.int64, device=DEVICE)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    with pytest.raises(ValueError, match="item_ids rows must be at most 16 long"):
        tk_masking.mlm_mask(ids, seed_tensor(1), 0, 2**31)
    with pytest.raises(ValueError, match="item_ids rows must be at most 16 long"):
        tk_masking.plm_train_masks(ids, seed_tensor(1), 0, 5, context, False)
    assert torch.equal(tk_masking.mlm_mask(ids[:, :16], seed_tensor(1), 0, 2**31),
                       ref_masking.mlm_mask(ids[:, :16], 1, 0, 2**31))


def test_target_ranks_empty():
    scores = ranking_scores(3, 10, torch.float32, seed=2)
    assert tk_ranking.target_ranks(scores, torch.empty((3, 0), dtype=torch.int64, device=DEVICE)).shape == (3, 0)
    assert tk_ranking.target_ranks(scores[:0], torch.empty((0, 2), dtype=torch.int64, device=DEVICE)).shape == (0, 2)
    no_columns = tk_ranking.target_ranks(scores[:, :0], torch.tensor([[-1], [0], [3]], device=DEVICE))
    assert no_columns.tolist() == [[-1], [-1], [-1]]  # no item is in [0, 0)


# --------------------------------------------------------------------------------------------
# Through fastmask.ops


def test_ops_dispatch_to_triton():
    ids = edge_case_ids(9, 0, torch.int64, seed=9)
    seed = seed_tensor(2024)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    logits = gumbel_logits(4, 300, torch.float32, seed=4)
    scores = ranking_scores(4, 300, torch.float32, seed=4)
    items = ranking_items(scores, 2, seed=4)
    calls = {
        "mlm_mask": (ids, seed, 0, ref_philox.bernoulli_threshold(0.15)),
        "plm_train_masks": (ids, seed, 0, 5, context, False),
        "plm_eval_perm_mask": (ids, 0),
        "gumbel_argmax": (logits, seed),
        "target_ranks": (scores, items),
    }
    for op, args in calls.items():
        with fastmask.use_backend("reference"):
            expected = getattr(ops, op)(*args)
        with fastmask.use_backend("triton"):
            got = getattr(ops, op)(*args)
        assert ops.last_backend(op) == "triton", op
        for a, b in zip(*((got, expected) if isinstance(got, tuple) else ((got,), (expected,)))):
            assert torch.equal(a, b), op


# --------------------------------------------------------------------------------------------
# Argument checks


def test_bad_arguments_name_the_argument():
    ids = torch.zeros((2, 4), dtype=torch.int64, device=DEVICE)
    seed = seed_tensor(1)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    cases = [
        (TypeError, "item_ids", lambda: tk_masking.mlm_mask(ids.float(), seed, 0, 10)),
        (ValueError, "item_ids", lambda: tk_masking.mlm_mask(ids[0], seed, 0, 10)),
        (TypeError, "item_ids", lambda: tk_masking.mlm_mask(ids.tolist(), seed, 0, 10)),
        (ValueError, "seed", lambda: tk_masking.mlm_mask(ids, seed.int(), 0, 10)),
        (ValueError, "seed", lambda: tk_masking.mlm_mask(ids, seed.repeat(2), 0, 10)),
        (TypeError, "seed", lambda: tk_masking.mlm_mask(ids, 1, 0, 10)),
        (ValueError, "threshold", lambda: tk_masking.mlm_mask(ids, seed, 0, 2**32 + 1)),
        (TypeError, "padding_idx", lambda: tk_masking.mlm_mask(ids, seed, 0.0, 10)),
        (ValueError, "max_span_length", lambda: tk_masking.plm_train_masks(ids, seed, 0, 0, [0], False)),
        (ValueError, "context_lengths", lambda: tk_masking.plm_train_masks(ids, seed, 0, 4, context, False)),
        (ValueError, "context_lengths[2]", lambda: tk_masking.plm_train_masks(ids, seed, 0, 2, [0, 1, 1], False)),
        (TypeError, "permute_all", lambda: tk_masking.plm_train_masks(ids, seed, 0, 5, context, 1)),
        (TypeError, "item_ids", lambda: tk_masking.plm_eval_perm_mask(ids.bool(), 0)),
        (TypeError, "logits", lambda: tk_sampling.gumbel_argmax(ids, seed)),
        (ValueError, "logits", lambda: tk_sampling.gumbel_argmax(torch.zeros((2, 0), device=DEVICE), seed)),
        (TypeError, "scores", lambda: tk_ranking.target_ranks(ids, ids)),
        (TypeError, "items", lambda: tk_ranking.target_ranks(ids.float(), ids.int())),
        (ValueError, "items", lambda: tk_ranking.target_ranks(ids.float(), ids[:1])),
    ]
    for error, name, call in cases:
        with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
            call()


# --------------------------------------------------------------------------------------------
# The kernels compile for real GPUs (no GPU needed: Triton's bundled toolchain builds cubins)

COMPILE_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from fastmask.triton_kernels import masking, ranking, sampling

    def build(fn, signature, constants, capability, warps):
        signature = dict(signature, **{name: "constexpr" for name in constants})
        source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants)
        triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})

    ids = {"ids_ptr": "*i32", "seed_ptr": "*i64"}
    capability = 90
    build(masking._mlm_mask_kernel, dict(ids, out_ptr="*i1", length="i32", padding_idx="i32", threshold="i64"),
          {"BLOCK_L": 256}, capability, 4)
    for permute_all in (False, True):
        build(masking._plm_target_mask_kernel,
              dict(ids, context_ptr="*i64", out_ptr="*i1", order_ptr="*i64", length="i32", padding_idx="i32",
                   max_span_length="i32"),
              {"PERMUTE_ALL": permute_all, "BLOCK_L": 256}, capability, 4)
        build(masking._plm_perm_kernel, dict(order_ptr="*i64", perm_ptr="*fp32", mapping_ptr="*fp32", length="i32"),
              {"PERMUTE_ALL": permute_all, "BLOCK_Q": 16, "BLOCK_K": 256}, capability, 8)
    build(masking._plm_eval_perm_kernel, dict(ids_ptr="*i64", out_ptr="*i64", length="i32", padding_idx="i32"),
          {"BLOCK_Q": 16, "BLOCK_K": 256}, capability, 8)
    for dtype, partial in (("fp32", False), ("fp32", True), ("bf16", True), ("fp64", True)):
        build(sampling._gumbel_argmax_kernel,
              dict(logits_ptr="*" + dtype, seed_ptr="*i64", out_ptr="*i64", values_ptr="*fp32",
                   num_columns="i32", row_stride="i64", split_columns="i32"),
              {"WRITE_PARTIAL": partial, "BLOCK": 1024}, capability, 4)
    build(sampling._reduce_partials_kernel,
          dict(values_ptr="*fp32", indices_ptr="*i64", out_ptr="*i64", num_splits="i32"), {"BLOCK": 64}, capability, 4)
    for dtype, accumulate in (("fp32", False), ("bf16", True), ("fp64", True)):
        build(ranking._target_ranks_kernel,
              dict(scores_ptr="*" + dtype, items_ptr="*i64", out_ptr="*i64", num_columns="i32",
                   row_stride="i64", num_items="i32", split_columns="i32"),
              {"ACCUMULATE": accumulate, "BLOCK_M": 2, "BLOCK_V": 2048}, capability, 8)
    print("compiled")
    """
)


def _nvidia_backend_present() -> bool:
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _nvidia_backend_present(), reason="Triton's NVIDIA backend is not installed")
def test_kernels_compile_for_sm90(tmp_path):
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="0")
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-4000:]


# --------------------------------------------------------------------------------------------
# GPU only: full shapes, torch.compile, CUDA graphs


def _full_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50_000, (batch, length), generator=gen)
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    ids[: batch // 8, : length // 4] = 0  # left padding
    ids[batch // 8 : batch // 4, 1::5] = 0  # holes
    return ids.cuda()


@needs_gpu
def test_full_shape_masking_on_gpu():
    ids = _full_ids(512, 200, seed=1)
    seed = seed_tensor(31337)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    threshold = ref_philox.bernoulli_threshold(0.15)
    assert torch.equal(tk_masking.mlm_mask(ids, seed, 0, threshold), ref_masking.mlm_mask(ids, 31337, 0, threshold))
    for permute_all in (False, True):
        assert_plm_equal(
            tk_masking.plm_train_masks(ids, seed, 0, 5, context, permute_all),
            ref_masking.plm_train_masks(ids, 31337, 0, 5, context, permute_all),
        )
    assert torch.equal(tk_masking.plm_eval_perm_mask(ids, 0), ref_masking.plm_eval_perm_mask(ids, 0))


@needs_gpu
@pytest.mark.parametrize("dtype", GUMBEL_DTYPES)
def test_full_shape_gumbel_argmax_on_gpu(dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(4096, 100_000, device="cuda", generator=gen) * 4).to(dtype)
    logits[1, 99_999] = float("nan")
    got = tk_sampling.gumbel_argmax(logits, seed_tensor(7))
    checked = 192  # the reference's float64 noise is computed with numpy: check a prefix of rows
    assert torch.equal(got[:checked], ref_sampling.gumbel_argmax(logits[:checked], 7))
    # Few rows: the vocabulary is split across programs.
    few = logits[:8]
    assert torch.equal(tk_sampling.gumbel_argmax(few, seed_tensor(7)), ref_sampling.gumbel_argmax(few, 7))


@needs_gpu
@pytest.mark.parametrize("dtype", GUMBEL_DTYPES)
def test_full_shape_target_ranks_on_gpu(dtype):
    rows, columns = (4096, 1_000_000) if dtype == torch.float32 else (512, 1_000_000)
    gen = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.randint(-2000, 2000, (rows, columns), device="cuda", generator=gen, dtype=torch.int16).to(dtype)
    scores.div_(16)  # many ties; in place to stay within GPU memory
    scores[0, ::1000] = float("nan")
    items = torch.randint(-1, columns, (rows, 3), device="cuda", generator=gen)
    got = tk_ranking.target_ranks(scores, items)
    for first in range(0, rows, 256):  # the sort-based reference needs ~20 bytes per score
        assert torch.equal(got[first : first + 256], ref_ranking.target_ranks(scores[first : first + 256], items[first : first + 256]))
    few = scores[:16]  # few rows: splits accumulate with atomics
    assert torch.equal(tk_ranking.target_ranks(few, items[:16]), ref_ranking.target_ranks(few, items[:16]))


@needs_gpu
def test_ops_under_torch_compile_fullgraph():
    ids = _full_ids(64, 50, seed=2)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    logits = torch.randn(64, 5000, device="cuda")
    scores = torch.randn(64, 5000, device="cuda")
    items = torch.randint(-1, 5000, (64, 2), device="cuda")

    def step(seed):
        mask = ops.mlm_mask(ids, seed, 0, ref_philox.bernoulli_threshold(0.15))
        plm = ops.plm_train_masks(ids, seed, 0, 5, context, False)
        return mask, *plm, ops.plm_eval_perm_mask(ids, 0), ops.gumbel_argmax(logits, seed), ops.target_ranks(scores, items)

    with fastmask.use_backend("triton"):
        compiled = torch.compile(step, fullgraph=True)
        seed = seed_tensor(11)
        for a, b in zip(compiled(seed), step(seed)):
            assert torch.equal(a, b)
    assert ops.last_backend("gumbel_argmax") == "triton"


@needs_gpu
def test_masking_modules_do_not_synchronise_by_default():
    from fastmask import masking

    ids = _full_ids(64, 30, seed=4)
    modules = [cls(hidden_size=8) for cls in (masking.CausalLanguageModeling, masking.MaskedLanguageModeling,
                                             masking.PermutationLanguageModeling, masking.ReplacementLanguageModeling)]
    logits = torch.randn(64, 1000, device="cuda")

    def step():
        for module in modules:
            for training in (True, False):
                module.compute_masked_targets(ids, training=training)
        modules[-1].sample_from_softmax(logits)

    with fastmask.use_backend("triton"):
        step()  # warm-up: compiles the kernels and copies the context-length table to the device
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


@needs_gpu
def test_masking_in_a_cuda_graph_draws_fresh_seeds():
    ids = _full_ids(128, 40, seed=3)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    threshold = ref_philox.bernoulli_threshold(0.15)

    def step():
        seed = torch.randint(-(2**63), 2**63 - 1, (1,), dtype=torch.int64, device="cuda")
        mask = ops.mlm_mask(ids, seed, 0, threshold)
        plm_mask, perm, _ = ops.plm_train_masks(ids, seed, 0, 5, context, False)
        return seed, mask, plm_mask, perm

    with fastmask.use_backend("triton"):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up: compiles the kernels and caches the context-length table
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            seed, mask, plm_mask, perm = step()
    results = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        drawn = int(seed.item())
        assert torch.equal(mask, ref_masking.mlm_mask(ids, key(drawn), 0, threshold))
        expected = ref_masking.plm_train_masks(ids, key(drawn), 0, 5, context, False)
        assert torch.equal(plm_mask, expected[0]) and torch.equal(perm, expected[1])
        results.append((drawn, mask.clone(), perm.clone()))
    assert results[0][0] != results[1][0]
    assert not torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][2], results[1][2])
