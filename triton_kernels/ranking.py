"""Triton target ranks: bit-identical to ``fastmask.reference.ranking``, without sorting.

rank(t) = #{j : s_j > s_t} + #{j < t : s_j == s_t}, with NaN above every number and equal to NaN,
and -0.0 == 0.0. Scores become integer keys with that order (float16/bfloat16 widen exactly to
float32 first; float64 keeps 64-bit keys), so each column costs one key and M integer compares.

Grid (rows, splits, item blocks): one pass over the scores per block of BLOCK_M items. With several
splits each program adds its counts to a zeroed int64 output with atomics (integer sums: the result
does not depend on their order).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch

# Elements of the (items x columns) comparison tile of one program.
TILE_ELEMENTS = 4096
BLOCK_CAP = 2048


@triton.jit
def _order_key(scores):
    """Signed integer with the ranking order of ``scores``: NaN highest, -0.0 == 0.0."""
    # NaN and zero are read off the bits, the same test for every dtype and compiler.
    if scores.dtype == tl.float64:
        bits = scores.to(tl.int64, bitcast=True)
        magnitude = bits & 0x7FFFFFFFFFFFFFFF
        key = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
        top = 0x7FFFFFFFFFFFFFFF
        is_nan = magnitude > 0x7FF0000000000000
    else:
        bits = scores.to(tl.int32, bitcast=True)
        magnitude = bits & 0x7FFFFFFF
        key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        top = 0x7FFFFFFF
        is_nan = magnitude > 0x7F800000
    key = tl.where(magnitude == 0, 0, key)
    return tl.where(is_nan, top, key)


@triton.jit
def _load_scores(ptr, mask):
    scores = tl.load(ptr, mask=mask, other=0)
    if scores.dtype != tl.float64:
        scores = scores.to(tl.float32)
    return scores


@triton.jit
def _target_ranks_kernel(
    scores_ptr, items_ptr, out_ptr, num_columns, row_stride, num_items, split_columns,
    ACCUMULATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    row_scores = scores_ptr + row * row_stride
    slots = tl.program_id(2).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    slot_in = slots < num_items
    items = tl.load(items_ptr + row * num_items + slots, mask=slot_in, other=-1)
    # Items outside [0, V) are reported like "no item" (-1); nothing is read out of bounds.
    valid = slot_in & (items >= 0) & (items < num_columns)
    target_key = _order_key(_load_scores(row_scores + tl.where(valid, items, 0), valid))

    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    count = tl.zeros([BLOCK_M], dtype=tl.int64)
    for first in range(begin, end, BLOCK_V):
        columns = first + tl.arange(0, BLOCK_V).to(tl.int64)
        column_in = columns < end
        key = _order_key(_load_scores(row_scores + columns, column_in))
        ahead = (key[None, :] > target_key[:, None]) | (
            (key[None, :] == target_key[:, None]) & (columns[None, :] < items[:, None])
        )
        count += tl.sum((ahead & column_in[None, :]).to(tl.int32), axis=1).to(tl.int64)

    result = tl.where(valid, count, -1)
    if ACCUMULATE:
        # Split 0 contributes the -1 of invalid items; the others add nothing for them.
        result = tl.where(valid | (split == 0), result, 0)
        tl.atomic_add(out_ptr + row * num_items + slots, result, mask=slot_in)
    else:
        tl.store(out_ptr + row * num_items + slots, result, mask=slot_in)


def target_ranks(
    scores: torch.Tensor, items: torch.Tensor, *, block: int | None = None, splits: int | None = None
) -> torch.Tensor:
    """0-based rank of ``items[n, m]`` in row n of ``scores`` (N, V); -1 for item -1.

    ``block``/``splits`` override the launch geometry.
    """
    num_rows, num_columns = scores.shape
    num_items = items.shape[1]
    if num_rows == 0 or num_items == 0 or num_columns == 0:  # no column: every item is outside [0, V)
        return torch.full((num_rows, num_items), -1, dtype=torch.int64, device=scores.device)
    if scores.stride(1) != 1:
        scores = scores.contiguous()
    items = items.contiguous()
    block_m = launch.block_size(num_items, TILE_ELEMENTS, 1)
    block = block or launch.block_size(num_columns, max(16, min(BLOCK_CAP, TILE_ELEMENTS // block_m)))
    num_splits, split_columns = launch.column_splits(num_rows, num_columns, block, scores.device, splits)
    accumulate = num_splits > 1
    out = (torch.zeros if accumulate else torch.empty)((num_rows, num_items), dtype=torch.int64, device=scores.device)
    _target_ranks_kernel[(num_rows, num_splits, triton.cdiv(num_items, block_m))](
        scores, items, out, num_columns, scores.stride(0), num_items, split_columns,
        ACCUMULATE=accumulate, BLOCK_M=block_m, BLOCK_V=block, num_warps=launch.num_warps(block_m * block),
    )
    return out
