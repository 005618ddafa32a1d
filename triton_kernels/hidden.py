"""Triton ranks, top-k and Gumbel samples straight from hidden states (``fastmask.reference.hidden``).

A program takes a block of ``BLOCK_N`` rows and walks its split of the catalogue in tiles of ``BLOCK_V``
items: ``_score_tile`` scores the tile with ``tl.dot`` on tensor cores (float32 inputs as 3xTF32, about
float32's precision; float32 accumulation), then the tile is consumed in registers: rank counts, a
running top-k or the Gumbel-max scan. Nothing of size (N, V) is stored.

Tensor cores add in their own order, so scores equal the reference's where every partial sum is exact
(integer-valued inputs) and are a few ulp apart otherwise. A target's score is taken from the very tile
the scan computes (``_score_tile`` on the same row block and the same column tile, with the same block
sizes and warps), so the ranks of one call are consistent with each other. With float32 inputs an
infinite entry of ``hidden`` or ``item_weight`` makes NaN scores (3xTF32 splits each value in two
parts); infinite biases are exact.

Grids: (row blocks, splits[, item blocks]); splits are whole numbers of tiles, so a column always falls
in the same tile. Splits add their rank counts with atomics (integers: order-free), write their top-k
and Gumbel partials for a merge in column order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch
from .philox import STREAM_GUMBEL, philox_words
from .ranking import _order_key
from .sampling import BUCKET_SHIFT, MAX_DRAW, _gumbel_noise, _noise_bounds, _reduce_partials_kernel

# Packed top-k entries: the score's order key in the high 32 bits, 0xFFFFFFFF - item in the low ones.
EMPTY = tl.constexpr(-(2**63))
_LOW_BITS = 0xFFFFFFFF
# Running top-k entries per program, and the most a call may ask for: they are held in registers.
TOPK_REGISTER_ELEMENTS = 8192
MAX_TOPK = 256


@triton.jit
def _load_rows(h_ptr, rows, num_rows, h_stride, ds, dim, UPCAST: tl.constexpr):
    h = tl.load(h_ptr + rows[:, None] * h_stride + ds[None, :], mask=(rows[:, None] < num_rows) & (ds[None, :] < dim),
                other=0)
    if UPCAST:
        h = h.to(tl.float32)
    return h


@triton.jit
def _score_tile(h_ptr, w_ptr, b_ptr, rows, columns, hidden_block, num_rows, num_columns, dim, h_stride, w_stride,
                HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr):
    """float32 scores (BLOCK_N, BLOCK_V) of ``rows`` x ``columns``; ``hidden_block`` holds the rows when
    ``ONE_D_BLOCK`` (d fits one block: loaded once per program)."""
    if ONE_D_BLOCK:
        ds = tl.arange(0, BLOCK_D)
        w = tl.load(w_ptr + columns[None, :] * w_stride + ds[:, None],
                    mask=(columns[None, :] < num_columns) & (ds[:, None] < dim), other=0)
        if UPCAST:
            w = w.to(tl.float32)
        acc = tl.dot(hidden_block, w, input_precision=PRECISION)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for first in range(0, dim, BLOCK_D):
            ds = first + tl.arange(0, BLOCK_D)
            h = _load_rows(h_ptr, rows, num_rows, h_stride, ds, dim, UPCAST)
            w = tl.load(w_ptr + columns[None, :] * w_stride + ds[:, None],
                        mask=(columns[None, :] < num_columns) & (ds[:, None] < dim), other=0)
            if UPCAST:
                w = w.to(tl.float32)
            acc = tl.dot(h, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc = acc + tl.load(b_ptr + columns, mask=columns < num_columns, other=0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _hidden_block(h_ptr, rows, num_rows, h_stride, dim, UPCAST: tl.constexpr, BLOCK_D: tl.constexpr,
                  ONE_D_BLOCK: tl.constexpr):
    if ONE_D_BLOCK:
        block = _load_rows(h_ptr, rows, num_rows, h_stride, tl.arange(0, BLOCK_D), dim, UPCAST)
    else:
        block = 0
    return block


@triton.jit
def _target_scores_kernel(
    h_ptr, w_ptr, b_ptr, items_ptr, out_ptr, num_rows, num_columns, dim, h_stride, w_stride, num_items,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
):
    """Grid (row blocks, items per row): the score of items[n, slot] for each row n of the block, read
    off the tile of the scan that holds it."""
    block = tl.program_id(0).to(tl.int64)
    slot = tl.program_id(1).to(tl.int64)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    hidden_block = _hidden_block(h_ptr, rows, num_rows, h_stride, dim, UPCAST, BLOCK_D, ONE_D_BLOCK)
    for r in range(0, BLOCK_N):
        row = block * BLOCK_N + r
        if row < num_rows:
            item = tl.load(items_ptr + row * num_items + slot)
            score = 0.0
            if (item >= 0) & (item < num_columns):
                columns = (item // BLOCK_V) * BLOCK_V + tl.arange(0, BLOCK_V).to(tl.int64)
                tile = _score_tile(h_ptr, w_ptr, b_ptr, rows, columns, hidden_block, num_rows, num_columns, dim,
                                   h_stride, w_stride, HAS_BIAS, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D,
                                   ONE_D_BLOCK)
                # One element picked: the sum of it and zeros is the element (a -0.0 becomes 0.0).
                picked = (rows[:, None] == row) & (columns[None, :] == item)
                score = tl.sum(tl.sum(tl.where(picked, tile, 0.0), axis=1), axis=0)
            tl.store(out_ptr + row * num_items + slot, score)


@triton.jit
def _count_ahead_kernel(
    h_ptr, w_ptr, b_ptr, scores_ptr, items_ptr, out_ptr, num_rows, num_columns, dim, h_stride, w_stride, num_items,
    first_item, split_columns,
    ACCUMULATE: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Grid (row blocks, splits, item blocks): items of the split ahead of (scores[n, m], items[n, m])."""
    block = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    slots = tl.program_id(2).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    inside = (rows[:, None] < num_rows) & (slots[None, :] < num_items)
    offsets = rows[:, None] * num_items + slots[None, :]
    target_keys = _order_key(tl.load(scores_ptr + offsets, mask=inside, other=0.0))
    items = tl.load(items_ptr + offsets, mask=inside, other=0)
    hidden_block = _hidden_block(h_ptr, rows, num_rows, h_stride, dim, UPCAST, BLOCK_D, ONE_D_BLOCK)

    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    counts = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.int64)
    for first in range(begin, end, BLOCK_V):
        columns = first + tl.arange(0, BLOCK_V).to(tl.int64)
        tile = _score_tile(h_ptr, w_ptr, b_ptr, rows, columns, hidden_block, num_rows, num_columns, dim, h_stride,
                           w_stride, HAS_BIAS, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D, ONE_D_BLOCK)
        keys = _order_key(tile)
        ids = first_item + columns
        column_in = columns < end
        for m in tl.static_range(BLOCK_M):
            pick = tl.arange(0, BLOCK_M)[None, :] == m
            target_key = tl.sum(tl.where(pick, target_keys, 0), axis=1)
            item = tl.sum(tl.where(pick, items, 0), axis=1)
            ahead = (keys > target_key[:, None]) | ((keys == target_key[:, None]) & (ids[None, :] < item[:, None]))
            count = tl.sum((ahead & column_in[None, :]).to(tl.int32), axis=1)
            counts += tl.where(pick, count.to(tl.int64)[:, None], 0)
    if ACCUMULATE:
        tl.atomic_add(out_ptr + offsets, counts, mask=inside)
    else:
        tl.store(out_ptr + offsets, counts, mask=inside)


@triton.jit
def _topk_kernel(
    h_ptr, w_ptr, b_ptr, out_ptr, num_rows, num_columns, dim, h_stride, w_stride, split_columns,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Grid (row blocks, splits): each row's BLOCK_K first items of the split, packed, in no order.

    An item enters when it ranks before the last one kept: packed values are unique (the item is in
    them), so the tile's best replaces the lowest kept until the tile has nothing better.
    """
    block = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    num_splits = tl.num_programs(1).to(tl.int64)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    hidden_block = _hidden_block(h_ptr, rows, num_rows, h_stride, dim, UPCAST, BLOCK_D, ONE_D_BLOCK)
    positions = tl.arange(0, BLOCK_K)
    kept = tl.full([BLOCK_N, BLOCK_K], EMPTY, tl.int64)
    lowest = tl.full([BLOCK_N], EMPTY, tl.int64)

    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    for first in range(begin, end, BLOCK_V):
        columns = first + tl.arange(0, BLOCK_V).to(tl.int64)
        tile = _score_tile(h_ptr, w_ptr, b_ptr, rows, columns, hidden_block, num_rows, num_columns, dim, h_stride,
                           w_stride, HAS_BIAS, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D, ONE_D_BLOCK)
        packed = (_order_key(tile).to(tl.int64) << 32) | (0xFFFFFFFF - columns)[None, :]
        packed = tl.where((columns < end)[None, :], packed, EMPTY)
        best = tl.max(packed, axis=1)
        while tl.max((best > lowest).to(tl.int32), axis=0) > 0:
            slot = tl.argmin(kept, axis=1)
            replace = (best > lowest)[:, None] & (positions[None, :] == slot[:, None])
            kept = tl.where(replace, best[:, None], kept)
            packed = tl.where(packed == best[:, None], EMPTY, packed)
            lowest = tl.min(kept, axis=1)
            best = tl.max(packed, axis=1)
    out = out_ptr + (rows[:, None] * num_splits + split) * BLOCK_K + positions[None, :]
    tl.store(out, kept, mask=(rows < num_rows)[:, None])


@triton.jit
def _first_argmax_rows(values, columns, valid):
    """Per row: (value, column) of the first maximum of ``values`` where ``valid``; a NaN beats everything."""
    is_nan = (values != values) & valid
    first_nan = tl.min(tl.where(is_nan, columns[None, :], 2**62), axis=1)
    plain = tl.where(valid & ~is_nan, values, float("-inf"))
    best = tl.max(plain, axis=1)
    first_best = tl.min(tl.where(valid & (plain == best[:, None]), columns[None, :], 2**62), axis=1)
    has_nan = first_nan < 2**62
    return tl.where(has_nan, float("nan"), best), tl.where(has_nan, first_nan, first_best)


@triton.jit
def _gumbel_kernel(
    h_ptr, w_ptr, b_ptr, seed_ptr, bounds_ptr, out_ptr, values_ptr, num_rows, num_columns, dim, h_stride, w_stride,
    split_columns,
    WRITE_PARTIAL: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
):
    """Grid (row blocks, splits): the first maximum of score + noise over the split, per row; the noise's
    float64 logs only where a column can still win (``triton_kernels.sampling`` explains the bounds)."""
    block = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    num_splits = tl.num_programs(1).to(tl.int64)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_in = rows < num_rows
    seed = tl.load(seed_ptr)
    hidden_block = _hidden_block(h_ptr, rows, num_rows, h_stride, dim, UPCAST, BLOCK_D, ONE_D_BLOCK)
    largest_noise = _gumbel_noise(tl.full([], MAX_DRAW, tl.uint32))

    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    best_value = tl.full([BLOCK_N], float("-inf"), tl.float32)
    best_index = tl.zeros([BLOCK_N], tl.int64) + begin
    for first in range(begin, end, BLOCK_V):
        # Tiles run in column order: a later one wins only with a strictly larger value, and nothing
        # beats an earlier NaN.
        live = (best_value == best_value) & row_in
        if tl.max(live.to(tl.int32), axis=0) > 0:
            columns = first + tl.arange(0, BLOCK_V).to(tl.int64)
            valid = (columns < end)[None, :]
            tile = _score_tile(h_ptr, w_ptr, b_ptr, rows, columns, hidden_block, num_rows, num_columns, dim,
                               h_stride, w_stride, HAS_BIAS, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D,
                               ONE_D_BLOCK)
            is_nan = (tile != tile) & valid
            row_nan = tl.max(is_nan.to(tl.int32), axis=1) > 0
            largest = tl.max(tl.where(valid & ~is_nan, tile, float("-inf")), axis=1)
            maybe = live & (row_nan | (largest + largest_noise > best_value))
            if tl.max(maybe.to(tl.int32), axis=0) > 0:
                counters = (first >> 2) + tl.arange(0, BLOCK_V // 4).to(tl.int64)
                w0, w1, w2, w3 = philox_words(seed, counters[None, :], rows[:, None], STREAM_GUMBEL)
                words = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
                bounds = tl.load(bounds_ptr + (words >> BUCKET_SHIFT))
                hopeful = valid & (tile + bounds > best_value[:, None])
                check = maybe & (row_nan | (tl.max(hopeful.to(tl.int32), axis=1) > 0))
                if tl.max(check.to(tl.int32), axis=0) > 0:
                    value, index = _first_argmax_rows(tile + _gumbel_noise(words), columns, valid)
                    take = check & ((value != value) | (value > best_value))
                    best_value = tl.where(take, value, best_value)
                    best_index = tl.where(take, index, best_index)
    if WRITE_PARTIAL:
        tl.store(values_ptr + rows * num_splits + split, best_value, mask=row_in)
        tl.store(out_ptr + rows * num_splits + split, best_index, mask=row_in)
    else:
        tl.store(out_ptr + rows, best_index, mask=row_in)


# -- launchers ------------------------------------------------------------------------------------
def _geometry(hidden: torch.Tensor, num_columns: int, block_rows, block_items):
    """Block sizes, warps and the dot's settings for ``hidden``'s device and dtype."""
    interpreted = hidden.device.type != "cuda"
    dim = hidden.shape[1]
    fp32 = hidden.dtype == torch.float32
    if interpreted:  # the interpreter runs each program step by step: small tiles
        rows, items, depth = 16, launch.block_size(num_columns, 64, 16), launch.block_size(dim, 64, 16)
    else:
        # Tensor-core tiles: a 64-row block (one Hopper warpgroup MMA), 128 items, d in blocks of 64
        # (float32) or 128 (16-bit) so that a few pipeline stages of both operands fit shared memory.
        rows, items = 64, launch.block_size(num_columns, 128, 16)
        depth = launch.block_size(dim, 64 if fp32 else 128, 16)
    return dict(
        BLOCK_N=block_rows or rows, BLOCK_V=block_items or items, BLOCK_D=depth, ONE_D_BLOCK=dim <= depth,
        UPCAST=interpreted,  # the interpreter computes float16 / bfloat16 right only once widened
        PRECISION="tf32x3" if fp32 else "tf32",
    )


def _operands(hidden, item_weight, bias):
    hidden = hidden if hidden.stride(1) == 1 else hidden.contiguous()
    item_weight = item_weight if item_weight.stride(1) == 1 else item_weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    # Without a bias the kernels never read it; any tensor stands for the pointer.
    return hidden, item_weight, bias, (hidden if bias is None else bias)


def target_scores_from_hidden(hidden, item_weight, items, bias, *, block_rows=None, block_items=None):
    """float32 (N, M) scores of ``items``, each read off the tile the scan computes it in."""
    hidden, item_weight, bias, bias_ptr = _operands(hidden, item_weight, bias)
    num_rows, num_items = items.shape
    out = torch.empty((num_rows, num_items), dtype=torch.float32, device=hidden.device)
    if num_rows == 0 or num_items == 0:
        return out
    items = items.contiguous()
    geometry = _geometry(hidden, item_weight.shape[0], block_rows, block_items)
    grid = (triton.cdiv(num_rows, geometry["BLOCK_N"]), num_items)
    _target_scores_kernel[grid](
        hidden, item_weight, bias_ptr, items, out, num_rows, item_weight.shape[0], hidden.shape[1], hidden.stride(0),
        item_weight.stride(0), num_items, HAS_BIAS=bias is not None, num_warps=4, **geometry,
    )
    return out


def count_ahead_from_hidden(hidden, item_weight, bias, scores, items, first_item, *, block_rows=None,
                            block_items=None, splits=None):
    """int64 (N, M): items of ``item_weight`` (ids ``first_item + j``) ranked before (scores, items)."""
    hidden, item_weight, bias, bias_ptr = _operands(hidden, item_weight, bias)
    num_rows, num_items = items.shape
    num_columns = item_weight.shape[0]
    if num_rows == 0 or num_items == 0 or num_columns == 0:
        return torch.zeros((num_rows, num_items), dtype=torch.int64, device=hidden.device)
    geometry = _geometry(hidden, num_columns, block_rows, block_items)
    row_blocks = triton.cdiv(num_rows, geometry["BLOCK_N"])
    num_splits, split_columns = launch.column_splits(row_blocks, num_columns, geometry["BLOCK_V"], hidden.device,
                                                     splits)
    block_m = launch.block_size(num_items, 8, 1)
    accumulate = num_splits > 1
    out = (torch.zeros if accumulate else torch.empty)((num_rows, num_items), dtype=torch.int64, device=hidden.device)
    _count_ahead_kernel[(row_blocks, num_splits, triton.cdiv(num_items, block_m))](
        hidden, item_weight, bias_ptr, scores.contiguous(), items.contiguous(), out, num_rows, num_columns,
        hidden.shape[1], hidden.stride(0), item_weight.stride(0), num_items, first_item, split_columns,
        ACCUMULATE=accumulate, HAS_BIAS=bias is not None, BLOCK_M=block_m, num_warps=4, **geometry,
    )
    return out


def target_ranks_from_hidden(hidden, item_weight, targets, bias, *, block_rows=None, block_items=None, splits=None):
    """0-based rank of ``targets[n, m]`` among row n's scores; -1 outside [0, V)."""
    sizes = dict(block_rows=block_rows, block_items=block_items)
    scores = target_scores_from_hidden(hidden, item_weight, targets, bias, **sizes)
    counts = count_ahead_from_hidden(hidden, item_weight, bias, scores, targets, 0, splits=splits, **sizes)
    ranked = (targets >= 0) & (targets < item_weight.shape[0])
    return torch.where(ranked, counts, -1)


def topk_from_hidden(hidden, item_weight, k, bias, *, block_rows=None, block_items=None, splits=None):
    """(float32 scores, int64 ids), (N, k): each row's k first items, best first (k <= MAX_TOPK)."""
    if k > MAX_TOPK:
        raise ValueError(f"k must be at most {MAX_TOPK} on the Triton backend (its running top-k is held in "
                         f"registers), got {k}")
    hidden, item_weight, bias, bias_ptr = _operands(hidden, item_weight, bias)
    num_rows, num_columns = hidden.shape[0], item_weight.shape[0]
    if num_rows == 0 or k == 0:
        return (torch.empty((num_rows, k), dtype=torch.float32, device=hidden.device),
                torch.empty((num_rows, k), dtype=torch.int64, device=hidden.device))
    block_k = launch.block_size(k, MAX_TOPK, 1)
    geometry = _geometry(hidden, num_columns, block_rows, block_items)
    # The running top-k of a row block sits in registers next to the tile.
    geometry["BLOCK_N"] = block_rows or max(16, min(geometry["BLOCK_N"], TOPK_REGISTER_ELEMENTS // block_k))
    row_blocks = triton.cdiv(num_rows, geometry["BLOCK_N"])
    num_splits, split_columns = launch.column_splits(row_blocks, num_columns, geometry["BLOCK_V"], hidden.device,
                                                     splits)
    kept = torch.empty((num_rows, num_splits * block_k), dtype=torch.int64, device=hidden.device)
    _topk_kernel[(row_blocks, num_splits)](
        hidden, item_weight, bias_ptr, kept, num_rows, num_columns, hidden.shape[1], hidden.stride(0),
        item_weight.stride(0), split_columns, HAS_BIAS=bias is not None, BLOCK_K=block_k, num_warps=4, **geometry,
    )
    # Entries are unique, so sorting them is the order: higher key, then lower item.
    best = torch.topk(kept, k, dim=1).values
    keys = (best >> 32).to(torch.int32)
    scores = (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(torch.float32)  # the key's own inverse: the score
    return scores, _LOW_BITS - (best & _LOW_BITS)


def gumbel_argmax_from_hidden(hidden, item_weight, bias, seed, *, block_rows=None, block_items=None, splits=None):
    """One Gumbel-max sample per row of the scores, int64 (N,)."""
    hidden, item_weight, bias, bias_ptr = _operands(hidden, item_weight, bias)
    num_rows, num_columns = hidden.shape[0], item_weight.shape[0]
    out = torch.empty(num_rows, dtype=torch.int64, device=hidden.device)
    if num_rows == 0:
        return out
    geometry = _geometry(hidden, num_columns, block_rows, block_items)
    row_blocks = triton.cdiv(num_rows, geometry["BLOCK_N"])
    num_splits, split_columns = launch.column_splits(row_blocks, num_columns, geometry["BLOCK_V"], hidden.device,
                                                     splits)
    args = (hidden, item_weight, bias_ptr, seed, _noise_bounds(hidden.device))
    sizes = (num_rows, num_columns, hidden.shape[1], hidden.stride(0), item_weight.stride(0), split_columns)
    options = dict(HAS_BIAS=bias is not None, num_warps=4, enable_fp_fusion=False, **geometry)
    if num_splits == 1:
        _gumbel_kernel[(row_blocks, 1)](*args, out, out, *sizes, WRITE_PARTIAL=False, **options)
        return out
    values = torch.empty((num_rows, num_splits), dtype=torch.float32, device=hidden.device)
    indices = torch.empty((num_rows, num_splits), dtype=torch.int64, device=hidden.device)
    _gumbel_kernel[(row_blocks, num_splits)](*args, indices, values, *sizes, WRITE_PARTIAL=True, **options)
    _reduce_partials_kernel[(num_rows,)](values, indices, out, num_splits,
                                         BLOCK=launch.block_size(num_splits, 1 << 16, 1))
    return out
