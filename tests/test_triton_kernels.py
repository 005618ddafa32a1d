"""What is particular to the Triton backend (its ops against the reference: tests/test_ops_*.py).

Without a GPU the kernels run under the Triton interpreter (tests/conftest.py), so shapes stay
tiny (B <= 8, L <= 32, V <= 4096) and the launch geometry (blocks, splits, chunks, tiles) is forced
small to run every multi-block, multi-split and multi-chunk path. The kernels are compiled for sm_90
without a GPU. GPU-only tests at full shapes, under torch.compile and in CUDA graphs run where CUDA is
available.
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

from fastmask.reference import hidden as ref_hidden
from fastmask.reference import masking as ref_masking
from fastmask.reference import philox as ref_philox
from fastmask.reference import ranking as ref_ranking
from fastmask.reference import sampling as ref_sampling
from fastmask.triton_kernels import hidden as tk_hidden
from fastmask.triton_kernels import masking as tk_masking
from fastmask.triton_kernels import philox as tk_philox
from fastmask.triton_kernels import ranking as tk_ranking
from fastmask.triton_kernels import sampling as tk_sampling

from helpers import assert_same, on_cpu
from helpers import seed_tensor as _seed_tensor

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEEDS = (0, 12345, -1, 2**63 - 1)


def seed_tensor(seed: int) -> torch.Tensor:
    return _seed_tensor(seed, DEVICE)


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
    expected = ref_philox.draws(seed, ref_philox.STREAM_GUMBEL, 5, np.arange(block, 2 * block)).astype(np.int64)
    assert np.array_equal(block_out.cpu().numpy(), expected)
    assert np.array_equal(scalar_out.cpu().numpy(), expected)


# --------------------------------------------------------------------------------------------
# Masking: squares written in several chunks per program, rows refused beyond one program


@pytest.mark.parametrize("length", [6, 13, 32])
def test_squares_in_several_chunks(monkeypatch, length):
    # 64-element chunks: each program of a row loops over several of them (the grid is capped).
    monkeypatch.setattr(tk_masking, "SQUARE_BLOCK", 64)
    monkeypatch.setattr(tk_masking.launch, "MAX_GRID_Y", 2)
    ids = edge_case_ids(length, 0, torch.int64, seed=length)
    context = ref_masking.plm_context_lengths(0.5, 3)
    for permute_all in (False, True):
        got = tk_masking.plm_train(ids, seed_tensor(99), 0, 3, context, permute_all)
        assert_same(on_cpu(got), ref_masking.plm_train(ids.cpu(), 99, 0, 3, context, permute_all))
    assert_same(on_cpu(tk_masking.plm_eval(ids, 0)), ref_masking.plm_eval(ids.cpu(), 0))


def test_rows_longer_than_one_program_are_refused(monkeypatch):
    monkeypatch.setattr(tk_masking, "MAX_ROW_LENGTH", 16)  # the kernels would cover 16 positions only
    ids = torch.ones(2, 17, dtype=torch.int64, device=DEVICE)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    for call in (lambda: tk_masking.mlm_train(ids, seed_tensor(1), 0, 2**31),
                 lambda: tk_masking.plm_train(ids, seed_tensor(1), 0, 5, context, False),
                 lambda: tk_masking.last_item_targets(ids, 0)):
        with pytest.raises(ValueError, match="item_ids rows must be at most 16 long"):
            call()
    assert_same(on_cpu(tk_masking.mlm_train(ids[:, :16], seed_tensor(1), 0, 2**31)),
                ref_masking.mlm_train(ids[:, :16].cpu(), 1, 0, 2**31))


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
    for row, fill in zip(range(1, rows), special, strict=False):
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
        assert_same(got.cpu(), ref_sampling.gumbel_argmax(logits.cpu(), seed), seed)


def test_gumbel_argmax_ties_across_blocks_and_splits():
    # Values equal once the noise is absorbed: the first index wins, also across blocks and splits.
    logits = torch.full((3, 300), -1e30, dtype=torch.float32, device=DEVICE)
    logits[0, [37, 100, 299]] = 1e30
    logits[1, [150, 20]] = float("nan")
    logits[1, 0] = float("inf")
    logits[2, [0, 299]] = float("inf")
    for block, splits in [(32, 1), (32, 4), (64, 2)]:
        got = tk_sampling.gumbel_argmax(logits, seed_tensor(5), block=block, splits=splits)
        assert got.tolist() == [37, 20, 0]


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
    assert_same(got.cpu(), ref_ranking.target_ranks(scores.cpu(), items.cpu()))


def test_target_ranks_more_items_than_one_tile(monkeypatch):
    monkeypatch.setattr(tk_ranking, "TILE_ELEMENTS", 8)  # 8 items per program: 3 item blocks
    scores = ranking_scores(3, 50, torch.float32, seed=4)
    items = torch.randint(-1, 50, (3, 21), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    expected = ref_ranking.target_ranks(scores.cpu(), items.cpu())
    assert_same(tk_ranking.target_ranks(scores, items).cpu(), expected)
    assert_same(tk_ranking.target_ranks(scores, items, block=16, splits=2).cpu(), expected)


# --------------------------------------------------------------------------------------------
# Scores from hidden states: many tiles per program, splits, d in several blocks, several item blocks


def hidden_inputs(rows: int, dim: int, items: int, dtype: torch.dtype, seed: int):
    """Integer-valued (exact sums), ties, a NaN, infinite biases, targets outside the catalogue."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randint(-2, 3, (rows, dim), generator=gen).float()
    weight = torch.randint(-2, 3, (items, dim), generator=gen).float()
    bias = torch.randint(-2, 3, (items,), generator=gen).float()
    bias[items // 3] = float("nan")
    bias[items // 2] = float("inf")
    bias[-1] = float("-inf")
    targets = torch.randint(-1, items + 1, (rows, 11), generator=gen)
    targets[0, :3] = torch.tensor([items // 3, items // 2, items - 1])
    return [tensor.to(dtype).to(DEVICE) if tensor.is_floating_point() else tensor.to(DEVICE)
            for tensor in (hidden, weight, bias, targets)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "rows,dim,items,block_items,splits",
    [
        (17, 5, 100, 16, 1),  # two row blocks, seven tiles per program
        (9, 70, 77, 16, 3),  # d in two blocks, splits with a ragged last one
        (3, 2, 40, 16, 5),  # more splits than a program's tiles would need
    ],
)
def test_hidden_ops_across_tiles_and_splits(dtype, rows, dim, items, block_items, splits):
    hidden, weight, bias, targets = hidden_inputs(rows, dim, items, dtype, seed=items)
    geometry = dict(block_items=block_items, splits=splits)
    cpu = [t.cpu() for t in (hidden, weight, bias, targets)]
    got = tk_hidden.target_ranks_from_hidden(hidden, weight, targets, bias, **geometry)
    assert_same(got.cpu(), ref_hidden.target_ranks_from_hidden(cpu[0], cpu[1], cpu[3], cpu[2]))
    for k in (1, 6, items):
        got = tk_hidden.topk_from_hidden(hidden, weight, k, bias, **geometry)
        assert_same(on_cpu(got), ref_hidden.topk_from_hidden(cpu[0], cpu[1], k, cpu[2]), k)
    for seed in (0, -1):
        got = tk_hidden.gumbel_argmax_from_hidden(hidden, weight, bias, seed_tensor(seed), **geometry)
        assert_same(got.cpu(), ref_hidden.gumbel_argmax_from_hidden(cpu[0], cpu[1], cpu[2], seed), seed)
    scores = ref_hidden.target_scores_from_hidden(cpu[0], cpu[1], cpu[3], cpu[2])
    got = tk_hidden.count_ahead_from_hidden(hidden, weight, bias, scores.to(DEVICE), targets, 7, **geometry)
    assert_same(got.cpu(), ref_hidden.count_ahead_from_hidden(cpu[0], cpu[1], cpu[2], scores, cpu[3], 7))


def test_hidden_topk_beyond_its_registers_is_refused():
    hidden, weight, bias, _ = hidden_inputs(2, 3, 300, torch.float32, seed=1)
    with pytest.raises(ValueError, match="k must be at most 256 on the Triton backend"):
        tk_hidden.topk_from_hidden(hidden, weight, 257, bias)


# --------------------------------------------------------------------------------------------
# The kernels compile for real GPUs (no GPU needed: Triton's bundled toolchain builds cubins)

COMPILE_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from fastmask.triton_kernels import hidden, masking, ranking, sampling, sequence

    def build(fn, signature, constants, capability, warps):
        signature = dict(signature, **{name: "constexpr" for name in constants})
        source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants)
        triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})

    ids = {"ids_ptr": "*i32", "seed_ptr": "*i64"}
    outputs = {"schema_ptr": "*i1", "targets_ptr": "*i32"}
    capability = 90
    build(masking._mlm_train_kernel, dict(ids, **outputs, length="i32", padding_idx="i32", threshold="i64"),
          {"BLOCK_L": 256}, capability, 4)
    for rule in range(4):
        build(masking._row_targets_kernel, dict(ids_ptr="*i64", schema_ptr="*i1", targets_ptr="*i64", length="i32",
                                               padding_idx="i32"), {"RULE": rule, "BLOCK_L": 256}, capability, 4)
    for permute_all in (False, True):
        build(masking._plm_target_mask_kernel,
              dict(ids, context_ptr="*i64", **outputs, order_ptr="*i64", length="i32", padding_idx="i32",
                   max_span_length="i32"),
              {"PERMUTE_ALL": permute_all, "BLOCK_L": 256}, capability, 4)
        for wide in (False, True):
            build(masking._plm_perm_kernel,
                  dict(order_ptr="*i64", perm_ptr="*fp32", mapping_ptr="*fp32", length="i32",
                       square="i64" if wide else "i32"),
                  {"PERMUTE_ALL": permute_all, "WIDE": wide, "BLOCK": 2048}, capability, 8)
    build(masking._plm_eval_kernel,
          dict(ids_ptr="*i64", schema_ptr="*i1", targets_ptr="*i64", perm_ptr="*i64", identity_ptr="*fp32",
               length="i32", square="i32", padding_idx="i32"),
          {"WIDE": False, "BLOCK": 2048, "BLOCK_L": 256}, capability, 8)
    for dtype, partial in (("fp32", False), ("fp32", True), ("bf16", True), ("fp64", True)):
        build(sampling._gumbel_argmax_kernel,
              dict(logits_ptr="*" + dtype, seed_ptr="*i64", bounds_ptr="*fp32", out_ptr="*i64", values_ptr="*fp32",
                   num_columns="i32", row_stride="i64", split_columns="i32"),
              {"WRITE_PARTIAL": partial, "BLOCK": 1024}, capability, 4)
    build(sampling._reduce_partials_kernel,
          dict(values_ptr="*fp32", indices_ptr="*i64", out_ptr="*i64", num_splits="i32"), {"BLOCK": 64}, capability, 4)
    for dtype, accumulate in (("fp32", False), ("bf16", True), ("fp64", True)):
        build(ranking._target_ranks_kernel,
              dict(scores_ptr="*" + dtype, items_ptr="*i64", out_ptr="*i64", num_columns="i32",
                   row_stride="i64", num_items="i32", split_columns="i32"),
              {"ACCUMULATE": accumulate, "BLOCK_M": 2, "BLOCK_V": 2048}, capability, 8)
    for has_lengths in (False, True):
        build(sequence._bert4rec_mask_kernel,
              dict(ids, lengths_ptr="*i64", masked_seq_ptr="*i64", pos_ptr="*i64", neg_ptr="*i64", index_ptr="*i64",
                   length="i32", n_items="i64", threshold="i64", mask_item_length="i32", ft_threshold="i64"),
              {"HAS_LENGTHS": has_lengths, "BLOCK": 256, "CHUNK": 32}, capability, 4)
    for dtype, precision, depth, one_d in (("fp32", "tf32x3", 64, True), ("bf16", "tf32", 128, False)):
        operands = dict(h_ptr="*" + dtype, w_ptr="*" + dtype, b_ptr="*" + dtype)
        sizes = dict(num_rows="i32", num_columns="i32", dim="i32", h_stride="i64", w_stride="i64")
        tiles = dict(UPCAST=False, PRECISION=precision, BLOCK_N=64, BLOCK_V=128, BLOCK_D=depth, ONE_D_BLOCK=one_d)
        build(hidden._target_scores_kernel, dict(operands, items_ptr="*i64", out_ptr="*fp32", **sizes, num_items="i32"),
              dict(tiles, HAS_BIAS=True), capability, 4)
        build(hidden._count_ahead_kernel,
              dict(operands, scores_ptr="*fp32", items_ptr="*i64", out_ptr="*i64", **sizes, num_items="i32",
                   first_item="i64", split_columns="i32"),
              dict(tiles, HAS_BIAS=one_d, ACCUMULATE=True, BLOCK_M=2), capability, 4)
        build(hidden._topk_kernel, dict(operands, out_ptr="*i64", **sizes, split_columns="i32"),
              dict(tiles, HAS_BIAS=False, BLOCK_K=16), capability, 4)
        build(hidden._gumbel_kernel,
              dict(operands, seed_ptr="*i64", bounds_ptr="*fp32", out_ptr="*i64", values_ptr="*fp32", **sizes,
                   split_columns="i32"),
              dict(tiles, HAS_BIAS=True, WRITE_PARTIAL=True), capability, 4)
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
    result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-4000:]
