"""Triton MLM and PLM masking: bit-identical to ``fastmask.reference.masking``.

* ``mlm_mask``: one program per row (Bernoulli draws, force one target, drop one if all are).
* ``plm_train_masks``: kernel 1, one program per row, walks the spans and writes the (B, L) target
  mask plus each position's factorisation key (-1 for non-targets); kernel 2, one program per
  (row, query tile), compares keys and writes each perm_mask and target_mapping element once.
* ``plm_eval_perm_mask``: one program per (row, query tile).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import launch
from .philox import (
    STREAM_MLM_BERNOULLI,
    STREAM_MLM_FORCE,
    STREAM_MLM_UNMASK,
    STREAM_PLM_FORCE,
    STREAM_PLM_PERM,
    STREAM_PLM_SPAN,
    STREAM_PLM_UNMASK,
    block_draws,
    draw,
    philox_words,
    uniform_below,
)

# A perm_mask tile holds at most this many elements; key tiles are at most KEY_TILE columns wide.
TILE_ELEMENTS = 4096
KEY_TILE = 256
# One program holds a whole row of the target mask.
MAX_ROW_LENGTH = 1 << 20


@triton.jit
def _kth_true(flags, k, positions, BLOCK: tl.constexpr):
    """Position of the k-th (0-based) True of ``flags``; BLOCK when there is none."""
    rank = tl.cumsum(flags.to(tl.int32), axis=0)
    return tl.min(tl.where(flags & (rank == k + 1), positions, BLOCK), axis=0)


@triton.jit
def _load_row(ids_ptr, row, length, padding_idx, BLOCK_L: tl.constexpr):
    positions = tl.arange(0, BLOCK_L)
    in_row = positions < length
    ids = tl.load(ids_ptr + row * length + positions, mask=in_row, other=0)
    nonpad = (ids != padding_idx) & in_row
    return positions, in_row, ids, nonpad, tl.sum(nonpad.to(tl.int32), axis=0)


@triton.jit
def _mlm_mask_kernel(ids_ptr, seed_ptr, out_ptr, length, padding_idx, threshold, BLOCK_L: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seed = tl.load(seed_ptr)
    positions, in_row, ids, nonpad, count = _load_row(ids_ptr, row, length, padding_idx, BLOCK_L)

    words = block_draws(seed, STREAM_MLM_BERNOULLI, row, 0, BLOCK_L)
    mask = (words.to(tl.int64) < threshold) & nonpad

    forced = _kth_true(nonpad, uniform_below(draw(seed, STREAM_MLM_FORCE, row, 0), count), positions, BLOCK_L)
    mask = mask | ((positions == forced) & (count > 0))

    full = (count > 0) & (tl.sum(mask.to(tl.int32), axis=0) == count)
    dropped = _kth_true(mask, uniform_below(draw(seed, STREAM_MLM_UNMASK, row, 0), count), positions, BLOCK_L)
    mask = mask & ~(full & (positions == dropped))
    tl.store(out_ptr + row * length + positions, mask, mask=in_row)


@triton.jit
def _plm_target_mask_kernel(
    ids_ptr, seed_ptr, context_ptr, out_ptr, order_ptr, length, padding_idx, max_span_length,
    PERMUTE_ALL: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Target mask of one row, and its factorisation keys for the perm kernel (-1: not a target)."""
    row = tl.program_id(0).to(tl.int64)
    seed = tl.load(seed_ptr)
    positions, in_row, ids, nonpad, count = _load_row(ids_ptr, row, length, padding_idx, BLOCK_L)

    if PERMUTE_ALL:
        mask = nonpad
    else:
        # Span walk: span k uses elements 2k (length) and 2k+1 (start), i.e. one Philox call
        # (counter k >> 1) serves two spans.
        mask = positions < 0
        cur = tl.zeros([], dtype=tl.int64)
        span_index = tl.zeros([], dtype=tl.int64)
        while cur < count:
            w0, w1, w2, w3 = philox_words(seed, span_index >> 1, row, STREAM_PLM_SPAN)
            odd = (span_index & 1) == 1
            span = 1 + uniform_below(tl.where(odd, w2, w0), max_span_length)
            context = tl.load(context_ptr + span)
            start = cur + uniform_below(tl.where(odd, w3, w1), context - span + 1)
            mask = mask | ((positions >= start) & (positions < start + span) & in_row & (start < count))
            cur += context
            span_index += 1
        # A row left without a target gets one non-padding position, set to `item != 0`.
        forced = _kth_true(nonpad, uniform_below(draw(seed, STREAM_PLM_FORCE, row, 0), count), positions, BLOCK_L)
        force = (tl.sum(mask.to(tl.int32), axis=0) == 0) & (count > 0)
        mask = mask | (force & (positions == forced) & (ids != 0))

    # The count still includes span positions in padding, as in the reference.
    masked = tl.sum(mask.to(tl.int32), axis=0)
    full = (masked == count) & (masked > 0)
    dropped = _kth_true(mask, uniform_below(draw(seed, STREAM_PLM_UNMASK, row, 0), masked), positions, BLOCK_L)
    mask = mask & ~(full & (positions == dropped)) & nonpad
    tl.store(out_ptr + row * length + positions, mask, mask=in_row)
    # Factorisation order of the targets: by (key, position), packed into one non-negative int64.
    keys = block_draws(seed, STREAM_PLM_PERM, row, 0, BLOCK_L).to(tl.int64)
    tl.store(order_ptr + row * length + positions, tl.where(mask, (keys << 31) | positions, -1), mask=in_row)


@triton.jit
def _plm_perm_kernel(
    order_ptr, perm_ptr, mapping_ptr, length,
    PERMUTE_ALL: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """perm_mask[b, q, k] = target(k) & (!target(q) | !(k precedes q)).

    With order = (key << 31 | position) for targets and -1 otherwise, that is
    order[k] >= max(order[q], 0): one comparison per element.
    """
    row = tl.program_id(0).to(tl.int64)
    first_query = tl.program_id(1).to(tl.int64) * BLOCK_Q
    local_queries = tl.arange(0, BLOCK_Q)
    query_in = first_query + local_queries < length
    query_order = tl.load(order_ptr + row * length + first_query + local_queries, mask=query_in, other=0)
    threshold = tl.maximum(query_order, 0)
    # 64-bit base of the tile; offsets inside it are 32-bit.
    tile_offset = (row * length + first_query) * length
    for first_key in range(0, length, BLOCK_K):
        keys = first_key + tl.arange(0, BLOCK_K)
        key_in = keys < length
        key_order = tl.load(order_ptr + row * length + keys, mask=key_in, other=-1)
        hidden = key_order[None, :] >= threshold[:, None]
        offsets = local_queries[:, None] * length + keys[None, :]
        inside = query_in[:, None] & key_in[None, :]
        tl.store(perm_ptr + tile_offset + offsets, hidden.to(tl.float32), mask=inside)
        if PERMUTE_ALL:
            mapping = tl.zeros([BLOCK_Q, BLOCK_K], dtype=tl.float32)
        else:
            mapping = ((first_query + local_queries)[:, None] == keys[None, :]).to(tl.float32)
        tl.store(mapping_ptr + tile_offset + offsets, mapping, mask=inside)


@triton.jit
def _plm_eval_perm_kernel(ids_ptr, out_ptr, length, padding_idx, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    """Causal mask that also hides position (n - 1) mod L from every query."""
    row = tl.program_id(0).to(tl.int64)
    first_query = tl.program_id(1).to(tl.int64) * BLOCK_Q
    count = tl.zeros([], dtype=tl.int64)
    for first_key in range(0, length, BLOCK_K):
        keys = first_key + tl.arange(0, BLOCK_K)
        ids = tl.load(ids_ptr + row * length + keys, mask=keys < length, other=0)
        count += tl.sum(((ids != padding_idx) & (keys < length)).to(tl.int64), axis=0)
    last = (count + length - 1) % length
    local_queries = tl.arange(0, BLOCK_Q)
    queries = first_query + local_queries
    query_in = queries < length
    tile_offset = (row * length + first_query) * length
    for first_key in range(0, length, BLOCK_K):
        keys = first_key + tl.arange(0, BLOCK_K)
        hidden = (keys[None, :] > queries[:, None]) | (keys[None, :] == last)
        offsets = local_queries[:, None] * length + keys[None, :]
        inside = query_in[:, None] & (keys < length)[None, :]
        tl.store(out_ptr + tile_offset + offsets, hidden.to(tl.int64), mask=inside)


def _check_item_ids(item_ids) -> None:
    launch.check_tensor("item_ids", item_ids, 2, launch.INTEGER_DTYPES, "an integer tensor")


def _row_block(length: int) -> int:
    """Block of the one-program-per-row kernels, which cover a row only up to MAX_ROW_LENGTH."""
    if length > MAX_ROW_LENGTH:
        raise ValueError(f"item_ids rows must be at most {MAX_ROW_LENGTH} long on the Triton backend, got {length}")
    return launch.block_size(length, MAX_ROW_LENGTH)


def _square_tiles(length: int, block_q: int | None, block_k: int | None) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_K) of a (query, key) tile: rows of up to KEY_TILE keys, TILE_ELEMENTS in all.

    Explicit sizes (powers of two, at least 4) override the choice.
    """
    block_k = block_k or launch.block_size(length, KEY_TILE)
    return block_q or launch.block_size(length, max(4, TILE_ELEMENTS // block_k)), block_k


def mlm_mask(item_ids: torch.Tensor, seed: torch.Tensor, padding_idx: int, threshold: int) -> torch.Tensor:
    _check_item_ids(item_ids)
    launch.check_seed(seed, item_ids.device)
    launch.check_int("padding_idx", padding_idx, -(2**63), 2**63 - 1)
    launch.check_int("threshold", threshold, 0, 2**32)
    batch, length = item_ids.shape
    out = torch.empty((batch, length), dtype=torch.bool, device=item_ids.device)
    if out.numel() == 0:
        return out
    block = _row_block(length)
    _mlm_mask_kernel[(batch,)](
        item_ids.contiguous(), seed, out, length, padding_idx, threshold,
        BLOCK_L=block, num_warps=launch.num_warps(block),
    )
    return out


@functools.lru_cache(maxsize=64)
def _context_table(context_lengths: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The context-length table on ``device``, built once per (table, device): no copy per call."""
    return torch.tensor(context_lengths, dtype=torch.int64, device=device)


def plm_train_masks(
    item_ids: torch.Tensor,
    seed: torch.Tensor,
    padding_idx: int,
    max_span_length: int,
    context_lengths,
    permute_all: bool,
    *,
    block_q: int | None = None,
    block_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PLM training masks; ``block_q``/``block_k`` override the perm_mask tile."""
    _check_item_ids(item_ids)
    launch.check_seed(seed, item_ids.device)
    launch.check_int("padding_idx", padding_idx, -(2**63), 2**63 - 1)
    launch.check_int("max_span_length", max_span_length, 1, 2**31 - 1)
    if not isinstance(permute_all, bool):
        raise TypeError(f"permute_all must be a bool, got {type(permute_all).__name__}")
    context_lengths = tuple(context_lengths)
    if len(context_lengths) != max_span_length + 1:
        raise ValueError(
            f"context_lengths must have max_span_length + 1 = {max_span_length + 1} entries, got {len(context_lengths)}"
        )
    for span, context in enumerate(context_lengths):
        launch.check_int(f"context_lengths[{span}]", context)
        if span > 0 and not span <= context < 2**31:
            raise ValueError(f"context_lengths[{span}] must be in [{span}, 2**31), got {context}")

    batch, length = item_ids.shape
    device = item_ids.device
    mask = torch.empty((batch, length), dtype=torch.bool, device=device)
    perm_mask = torch.empty((batch, length, length), dtype=torch.float32, device=device)
    target_mapping = torch.empty_like(perm_mask)
    if mask.numel() == 0:
        return mask, perm_mask, target_mapping
    order = torch.empty((batch, length), dtype=torch.int64, device=device)
    block = _row_block(length)
    _plm_target_mask_kernel[(batch,)](
        item_ids.contiguous(), seed, _context_table(context_lengths, device), mask, order,
        length, padding_idx, max_span_length,
        PERMUTE_ALL=permute_all, BLOCK_L=block, num_warps=launch.num_warps(block),
    )
    block_q, block_k = _square_tiles(length, block_q, block_k)
    _plm_perm_kernel[(batch, triton.cdiv(length, block_q))](
        order, perm_mask, target_mapping, length,
        PERMUTE_ALL=permute_all, BLOCK_Q=block_q, BLOCK_K=block_k, num_warps=launch.num_warps(block_q * block_k),
    )
    return mask, perm_mask, target_mapping


def plm_eval_perm_mask(
    item_ids: torch.Tensor, padding_idx: int, *, block_q: int | None = None, block_k: int | None = None
) -> torch.Tensor:
    """Last-item PLM evaluation perm_mask; ``block_q``/``block_k`` override the tile."""
    _check_item_ids(item_ids)
    launch.check_int("padding_idx", padding_idx, -(2**63), 2**63 - 1)
    batch, length = item_ids.shape
    out = torch.empty((batch, length, length), dtype=torch.int64, device=item_ids.device)
    if out.numel() == 0:
        return out
    block_q, block_k = _square_tiles(length, block_q, block_k)
    _plm_eval_perm_kernel[(batch, triton.cdiv(length, block_q))](
        item_ids.contiguous(), out, length, padding_idx,
        BLOCK_Q=block_q, BLOCK_K=block_k, num_warps=launch.num_warps(block_q * block_k),
    )
    return out
