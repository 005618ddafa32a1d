"""Triton masking kernels: bit-identical to ``fastmask.reference.masking``.

Each launcher has the signature of the op of the same name in ``fastmask.ops``, which checks the
arguments first. One launch per op, except PLM training (two):

* ``mlm_train`` and the targets without randomness: one program per row writes its schema and targets.
* ``plm_train``: one program per row walks the spans and writes the schema, the targets and each
  position's factorisation key (-1 for non-targets); then programs over (row, chunk of the row's
  flattened L x L square) write perm_mask and target_mapping, each element once, in contiguous chunks.
* ``plm_eval``: programs over (row, chunk of the square) write the perm_mask; each row's first
  program also writes its schema and targets, and row 0's programs the identity.
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

# One program holds a whole row of the one-program-per-row kernels.
MAX_ROW_LENGTH = 1 << 20
# Elements of a chunk of an L x L square per loop step of the square writers.
SQUARE_BLOCK = 2048
# Rules of _row_targets_kernel.
NEXT_ITEM, LAST_ITEM, CLM_LAST_ITEM, MLM_INFERENCE = 0, 1, 2, 3


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
def _last_item_index(count, length):
    """Index of item n - 1, wrapped like a Python index (n = 0 gives L - 1)."""
    return tl.where(count > 0, count - 1, length - 1)


@triton.jit
def _store_row(schema_ptr, targets_ptr, row, width, positions, in_row, mask, ids, padding_idx):
    """The row's schema and its targets: the item where masked, padding elsewhere."""
    tl.store(schema_ptr + row * width + positions, mask, mask=in_row)
    tl.store(targets_ptr + row * width + positions, tl.where(mask, ids, padding_idx), mask=in_row)


@triton.jit
def _mlm_train_kernel(
    ids_ptr, seed_ptr, schema_ptr, targets_ptr, length, padding_idx, threshold, BLOCK_L: tl.constexpr
):
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
    _store_row(schema_ptr, targets_ptr, row, length, positions, in_row, mask, ids, padding_idx)


@triton.jit
def _row_targets_kernel(
    ids_ptr, schema_ptr, targets_ptr, length, padding_idx, RULE: tl.constexpr, BLOCK_L: tl.constexpr
):
    """Schema and targets of one row under a rule without randomness (``fastmask.reference.masking``)."""
    row = tl.program_id(0).to(tl.int64)
    positions, in_row, ids, nonpad, count = _load_row(ids_ptr, row, length, padding_idx, BLOCK_L)
    following = positions + 1 < length
    next_ids = tl.load(ids_ptr + row * length + positions + 1, mask=following, other=0)
    if RULE == 0:  # NEXT_ITEM: every next item, a literal 0 after the last column
        _store_row(schema_ptr, targets_ptr, row, length, positions, in_row, next_ids != padding_idx, next_ids,
                   padding_idx)
    elif RULE == 1:  # LAST_ITEM: only item n - 1
        target = positions == _last_item_index(count, length)
        _store_row(schema_ptr, targets_ptr, row, length, positions, in_row, target & (ids != padding_idx), ids,
                   padding_idx)
    elif RULE == 2:  # CLM_LAST_ITEM: the next item at m - 1 (m next items), zeros elsewhere
        next_count = tl.sum(((next_ids != padding_idx) & in_row).to(tl.int32), axis=0)
        target = positions == _last_item_index(next_count, length)
        tl.store(schema_ptr + row * length + positions, nonpad, mask=in_row)
        tl.store(targets_ptr + row * length + positions, tl.where(target, next_ids, 0), mask=in_row)
    else:  # MLM_INFERENCE: L + 1 slots, item n - 1 in slot n
        width = length + 1
        copied = tl.load(ids_ptr + row * length + _last_item_index(count, length), mask=length > 0, other=padding_idx)
        slot = (positions == count) & (copied != padding_idx)
        _store_row(schema_ptr, targets_ptr, row, width, positions, positions < width, slot, tl.zeros_like(ids) + copied,
                   padding_idx)


@triton.jit
def _plm_target_mask_kernel(
    ids_ptr, seed_ptr, context_ptr, schema_ptr, targets_ptr, order_ptr, length, padding_idx, max_span_length,
    PERMUTE_ALL: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Schema and targets of one row, and its factorisation keys for the perm kernel (-1: not a target)."""
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
    _store_row(schema_ptr, targets_ptr, row, length, positions, in_row, mask, ids, padding_idx)
    # Factorisation order of the targets: by (key, position), packed into one non-negative int64.
    keys = block_draws(seed, STREAM_PLM_PERM, row, 0, BLOCK_L).to(tl.int64)
    tl.store(order_ptr + row * length + positions, tl.where(mask, (keys << 31) | positions, -1), mask=in_row)


@triton.jit
def _square_chunks(square, WIDE: tl.constexpr, BLOCK: tl.constexpr):
    """(first, step) of this program's chunks of a row's flattened square: chunk c, c + n, ..."""
    first = tl.program_id(1) * BLOCK
    step = tl.num_programs(1) * BLOCK
    if WIDE:  # squares of 2^31 elements or more need 64-bit offsets
        first = first.to(tl.int64)
        step = step.to(tl.int64)
    return first, step


@triton.jit
def _plm_perm_kernel(
    order_ptr, perm_ptr, mapping_ptr, length, square,
    PERMUTE_ALL: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):
    """perm_mask[b, q, k] = target(k) & (!target(q) | !(k precedes q)).

    With order = (key << 31 | position) for targets and -1 otherwise, that is
    order[k] >= max(order[q], 0): one comparison per element.
    """
    row = tl.program_id(0).to(tl.int64)
    orders = order_ptr + row * length
    first, step = _square_chunks(square, WIDE, BLOCK)
    for chunk in range(first, square, step):
        flat = chunk + tl.arange(0, BLOCK)
        inside = flat < square
        query = flat // length
        key = flat - query * length
        query_order = tl.load(orders + query, mask=inside, other=0)
        key_order = tl.load(orders + key, mask=inside, other=-1)
        hidden = key_order >= tl.maximum(query_order, 0)
        tl.store(perm_ptr + row * square + flat, hidden.to(tl.float32), mask=inside)
        if PERMUTE_ALL:
            mapping = tl.zeros([BLOCK], dtype=tl.float32)
        else:
            mapping = (query == key).to(tl.float32)
        tl.store(mapping_ptr + row * square + flat, mapping, mask=inside)


@triton.jit
def _plm_eval_kernel(
    ids_ptr, schema_ptr, targets_ptr, perm_ptr, identity_ptr, length, square, padding_idx,
    WIDE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Causal perm_mask that also hides item n - 1 from every query."""
    row = tl.program_id(0).to(tl.int64)
    count = tl.zeros([], dtype=tl.int64)
    for first_item in range(0, length, BLOCK_L):
        positions = first_item + tl.arange(0, BLOCK_L)
        ids = tl.load(ids_ptr + row * length + positions, mask=positions < length, other=padding_idx)
        count += tl.sum((ids != padding_idx).to(tl.int64), axis=0)
    last = _last_item_index(count, length)
    if tl.program_id(1) == 0:
        for first_item in range(0, length, BLOCK_L):
            positions = first_item + tl.arange(0, BLOCK_L)
            in_row = positions < length
            ids = tl.load(ids_ptr + row * length + positions, mask=in_row, other=padding_idx)
            target = (positions == last) & (ids != padding_idx)
            _store_row(schema_ptr, targets_ptr, row, length, positions, in_row, target, ids, padding_idx)
    first, step = _square_chunks(square, WIDE, BLOCK)
    for chunk in range(first, square, step):
        flat = chunk + tl.arange(0, BLOCK)
        inside = flat < square
        query = flat // length
        key = flat - query * length
        hidden = (key > query) | (key == last)
        tl.store(perm_ptr + row * square + flat, hidden.to(tl.int64), mask=inside)
        if row == 0:
            tl.store(identity_ptr + flat, (key == query).to(tl.float32), mask=inside)


def _row_block(length: int) -> int:
    """Block of the one-program-per-row kernels, which cover a row only up to MAX_ROW_LENGTH."""
    if length > MAX_ROW_LENGTH:
        raise ValueError(f"item_ids rows must be at most {MAX_ROW_LENGTH} long on the Triton backend, got {length}")
    return launch.block_size(length, MAX_ROW_LENGTH)


def _square_grid(batch: int, square: int) -> tuple[int, int]:
    """Programs over (row, chunk of the row's square): every chunk its own program, up to the grid limit."""
    return batch, max(1, min(triton.cdiv(square, SQUARE_BLOCK), launch.MAX_GRID_Y))


def _schema_and_targets(item_ids: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    schema = torch.empty((item_ids.shape[0], width), dtype=torch.bool, device=item_ids.device)
    return schema, torch.empty((item_ids.shape[0], width), dtype=item_ids.dtype, device=item_ids.device)


def mlm_train(item_ids: torch.Tensor, seed: torch.Tensor, padding_idx: int, threshold: int):
    batch, length = item_ids.shape
    schema, targets = _schema_and_targets(item_ids, length)
    if schema.numel() == 0:
        return schema, targets
    block = _row_block(length)
    _mlm_train_kernel[(batch,)](
        item_ids.contiguous(), seed, schema, targets, length, padding_idx, threshold,
        BLOCK_L=block, num_warps=launch.num_warps(block),
    )
    return schema, targets


def _row_targets(item_ids: torch.Tensor, padding_idx: int, rule: int, width: int):
    batch, length = item_ids.shape
    schema, targets = _schema_and_targets(item_ids, width)
    if schema.numel() == 0:
        return schema, targets
    block = _row_block(width)
    _row_targets_kernel[(batch,)](
        item_ids.contiguous(), schema, targets, length, padding_idx,
        RULE=rule, BLOCK_L=block, num_warps=launch.num_warps(block),
    )
    return schema, targets


def next_item_targets(item_ids: torch.Tensor, padding_idx: int):
    return _row_targets(item_ids, padding_idx, NEXT_ITEM, item_ids.shape[1])


def last_item_targets(item_ids: torch.Tensor, padding_idx: int):
    return _row_targets(item_ids, padding_idx, LAST_ITEM, item_ids.shape[1])


def clm_last_item_targets(item_ids: torch.Tensor, padding_idx: int):
    return _row_targets(item_ids, padding_idx, CLM_LAST_ITEM, item_ids.shape[1])


def mlm_inference_targets(item_ids: torch.Tensor, padding_idx: int):
    return _row_targets(item_ids, padding_idx, MLM_INFERENCE, item_ids.shape[1] + 1)


@functools.lru_cache(maxsize=64)
def _context_table(context_lengths: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The context-length table on ``device``, built once per (table, device): no copy per call."""
    return torch.tensor(context_lengths, dtype=torch.int64, device=device)


def plm_train(
    item_ids: torch.Tensor,
    seed: torch.Tensor,
    padding_idx: int,
    max_span_length: int,
    context_lengths,
    permute_all: bool,
):
    batch, length = item_ids.shape
    device = item_ids.device
    schema, targets = _schema_and_targets(item_ids, length)
    perm_mask = torch.empty((batch, length, length), dtype=torch.float32, device=device)
    target_mapping = torch.empty_like(perm_mask)
    if schema.numel() == 0:
        return schema, targets, perm_mask, target_mapping
    order = torch.empty((batch, length), dtype=torch.int64, device=device)
    block = _row_block(length)
    _plm_target_mask_kernel[(batch,)](
        item_ids.contiguous(), seed, _context_table(tuple(context_lengths), device), schema, targets, order,
        length, padding_idx, max_span_length,
        PERMUTE_ALL=permute_all, BLOCK_L=block, num_warps=launch.num_warps(block),
    )
    square = length * length
    _plm_perm_kernel[_square_grid(batch, square)](
        order, perm_mask, target_mapping, length, square,
        PERMUTE_ALL=permute_all, WIDE=square >= 2**31, BLOCK=SQUARE_BLOCK, num_warps=8,
    )
    return schema, targets, perm_mask, target_mapping


def plm_eval(item_ids: torch.Tensor, padding_idx: int):
    batch, length = item_ids.shape
    device = item_ids.device
    schema, targets = _schema_and_targets(item_ids, length)
    perm_mask = torch.empty((batch, length, length), dtype=torch.int64, device=device)
    identity = (torch.eye if batch == 0 else torch.empty)(length, length, dtype=torch.float32, device=device)
    if schema.numel() == 0:
        return schema, targets, perm_mask, identity
    square = length * length
    _plm_eval_kernel[_square_grid(batch, square)](
        item_ids.contiguous(), schema, targets, perm_mask, identity, length, square, padding_idx,
        WIDE=square >= 2**31, BLOCK=SQUARE_BLOCK, BLOCK_L=launch.block_size(length, 1024), num_warps=8,
    )
    return schema, targets, perm_mask, identity
