"""Triton kernels of the sequence-masking policies and the log-uniform sampler.

Each launcher has the signature of the op of the same name (``fastmask.ops``, which checks the
arguments first) and returns the bits of ``fastmask.reference.sequence``. One program per row for
the masks, one per block of draws for the sampler.
"""
import torch
import triton
import triton.language as tl

from fastmask.reference import philox as reference
from fastmask.reference.sequence import BERT4REC_NEGATIVE_ATTEMPTS, LOG_UNIFORM_BITS

from . import launch
from .philox import block_draws, draw, philox_words, uniform_below

STREAM_MERLIN_BERNOULLI = tl.constexpr(reference.STREAM_MERLIN_BERNOULLI)
STREAM_MERLIN_RESET = tl.constexpr(reference.STREAM_MERLIN_RESET)
STREAM_BERT4REC_MASK = tl.constexpr(reference.STREAM_BERT4REC_MASK)
STREAM_BERT4REC_NEGATIVE = tl.constexpr(reference.STREAM_BERT4REC_NEGATIVE)
STREAM_BERT4REC_FINE_TUNE = tl.constexpr(reference.STREAM_BERT4REC_FINE_TUNE)
STREAM_LOG_UNIFORM = tl.constexpr(reference.STREAM_LOG_UNIFORM)
NEGATIVE_ATTEMPTS = tl.constexpr(BERT4REC_NEGATIVE_ATTEMPTS)
HIGH_SHIFT = tl.constexpr(LOG_UNIFORM_BITS - 32)
LOW_SHIFT = tl.constexpr(64 - LOG_UNIFORM_BITS)

_DRAWS_PER_PROGRAM = 256
_MEMBERSHIP_CHUNK = 32  # row items compared with the candidates per step of the negative search


def _row_block(length: int) -> int:
    return launch.block_size(length, 1 << 30)


@triton.jit
def _merlin_mask_random_kernel(
    ids_ptr, out_ptr, seed_ptr, longest_ptr, length, padding_idx, threshold,
    RESET_ANY_FULL_ROW: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    seed = tl.load(seed_ptr)
    offs = tl.arange(0, BLOCK)
    in_row = offs < length
    base = row.to(tl.int64) * length
    ids = tl.load(ids_ptr + base + offs, mask=in_row, other=padding_idx)
    valid = in_row & (ids != padding_idx)
    count = tl.sum(valid.to(tl.int32), 0)

    words = block_draws(seed, STREAM_MERLIN_BERNOULLI, row, 0, BLOCK)
    selected = valid & (words.to(tl.int64) < threshold)
    picked = tl.sum(selected.to(tl.int32), 0)
    full = picked == count
    if not RESET_ANY_FULL_ROW:
        full = full & (count == tl.load(longest_ptr))
    reset = (picked == 0) | full

    k = uniform_below(draw(seed, STREAM_MERLIN_RESET, row, row * 0), count)  # element 0
    rank = tl.cumsum(valid.to(tl.int32), 0) - 1
    one = valid & (rank == k)
    tl.store(out_ptr + base + offs, tl.where(reset, one, selected), mask=in_row)


def merlin_mask_random(item_ids, seed, padding_idx, threshold, reset_any_full_row):
    item_ids = item_ids.contiguous()
    batch, length = item_ids.shape
    out = torch.empty((batch, length), dtype=torch.bool, device=item_ids.device)
    if batch == 0 or length == 0:
        return out
    longest = (item_ids != padding_idx).sum(1).amax().to(torch.int32).reshape(1)
    _merlin_mask_random_kernel[(batch,)](
        item_ids, out, seed, longest, length, padding_idx, threshold,
        RESET_ANY_FULL_ROW=bool(reset_any_full_row), BLOCK=_row_block(length),
    )
    return out


@triton.jit
def _in_row(candidates, ids_ptr, base, length, CHUNK: tl.constexpr):
    """``candidates[t] in row`` (whole row); candidates are >= 1, so the 0 fill never matches."""
    hit = candidates < 0
    for start in range(0, length, CHUNK):
        cols = start + tl.arange(0, CHUNK)
        items = tl.load(ids_ptr + base + cols, mask=cols < length, other=0).to(tl.int64)
        hit = hit | (tl.max((candidates[:, None] == items[None, :]).to(tl.int32), 1) > 0)
    return hit


@triton.jit
def _bert4rec_mask_kernel(
    ids_ptr, lengths_ptr, seed_ptr, masked_seq_ptr, pos_ptr, neg_ptr, index_ptr,
    length, n_items, threshold, mask_item_length, ft_threshold,
    HAS_LENGTHS: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):
    row = tl.program_id(0)
    seed = tl.load(seed_ptr)
    offs = tl.arange(0, BLOCK)
    in_row = offs < length
    base = row.to(tl.int64) * length
    ids = tl.load(ids_ptr + base + offs, mask=in_row, other=1).to(tl.int64)
    scan_length = tl.min(tl.where(in_row & (ids == 0), offs, length), 0).to(tl.int64)

    # One draw per batch (element 0 of row 0): every program makes the same choice. A last-item batch
    # masks column `last` (Python's index n - 1) and draws nothing; a random batch has last = -1.
    last_item_batch = draw(seed, STREAM_BERT4REC_FINE_TUNE, row * 0, row * 0).to(tl.int64) < ft_threshold
    if HAS_LENGTHS:
        n = tl.load(lengths_ptr + row)
    else:
        n = scan_length
    last = tl.where(n > 0, n - 1, length - 1)
    last = tl.where(last_item_batch & (n >= 0) & (n <= length), last, -1)
    threshold = tl.where(last_item_batch, 0, threshold)

    words = block_draws(seed, STREAM_BERT4REC_MASK, row, 0, BLOCK)
    masked = (offs == last) | ((offs < scan_length) & (words.to(tl.int64) < threshold))
    tl.store(masked_seq_ptr + base + offs, tl.where(masked, n_items, ids), mask=in_row)

    count = tl.sum(masked.to(tl.int32), 0)
    slot = mask_item_length - count + tl.cumsum(masked.to(tl.int32), 0) - 1
    keep = masked & (slot >= 0)
    out = row.to(tl.int64) * mask_item_length + slot
    tl.store(pos_ptr + out, ids, mask=keep)
    tl.store(index_ptr + out, tl.where(offs == last, n - 1, offs.to(tl.int64)), mask=keep)

    # Negatives: bounded retries, then a cyclic scan after the last attempt (reference docstring).
    span = n_items - 1
    negatives = tl.zeros([BLOCK], dtype=tl.int64)
    last = tl.zeros([BLOCK], dtype=tl.int64)
    pending = keep
    attempt = tl.full([], 0, tl.int64)
    while (attempt < NEGATIVE_ATTEMPTS) & (tl.max(pending.to(tl.int32), 0) > 0):
        element = attempt * length + offs
        candidates = 1 + uniform_below(draw(seed, STREAM_BERT4REC_NEGATIVE, row, element), span)
        accept = pending & ~_in_row(candidates, ids_ptr, base, length, CHUNK)
        negatives = tl.where(accept, candidates, negatives)
        last = tl.where(pending, candidates, last)
        pending = pending & ~accept
        attempt += 1
    steps = tl.minimum(span, length + 1)
    step = 1
    while (step <= steps) & (tl.max(pending.to(tl.int32), 0) > 0):
        candidates = 1 + (last - 1 + step) % span
        accept = pending & ~_in_row(candidates, ids_ptr, base, length, CHUNK)
        negatives = tl.where(accept, candidates, negatives)
        pending = pending & ~accept
        step += 1
    tl.store(neg_ptr + out, negatives, mask=keep)


def bert4rec_mask(item_seq, item_seq_len, seed, n_items, threshold, mask_item_length, ft_threshold):
    item_seq = item_seq.contiguous()
    batch, length = item_seq.shape
    device = item_seq.device
    masked_item_seq = torch.empty((batch, length), dtype=torch.int64, device=device)
    lists = [torch.zeros((batch, mask_item_length), dtype=torch.int64, device=device) for _ in range(3)]
    if batch == 0 or length == 0:
        return (masked_item_seq, *lists)
    block = _row_block(length)
    has_lengths = item_seq_len is not None
    _bert4rec_mask_kernel[(batch,)](
        item_seq, item_seq_len.contiguous() if has_lengths else item_seq, seed, masked_item_seq, *lists,
        length, n_items, threshold, mask_item_length, ft_threshold,
        HAS_LENGTHS=has_lengths, BLOCK=block, CHUNK=min(block, _MEMBERSHIP_CHUNK),
    )
    return (masked_item_seq, *lists)


@triton.jit
def _log_uniform_draws_kernel(table_ptr, seed_ptr, out_ptr, table_size, num_draws, search_steps, BLOCK: tl.constexpr):
    seed = tl.load(seed_ptr)
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # Draw j uses elements 2j (high word) and 2j + 1 (low word): words 0-1 or 2-3 of counter j >> 1.
    w0, w1, w2, w3 = philox_words(seed, j >> 1, j * 0, STREAM_LOG_UNIFORM)  # row 0
    odd = (j & 1) == 1
    high = tl.where(odd, w2, w0).to(tl.int64)
    low = tl.where(odd, w3, w1).to(tl.int64)
    x = (high << HIGH_SHIFT) | (low >> LOW_SHIFT)

    # #{k : table[k] <= x} by binary search over [lo, hi).
    lo = tl.zeros([BLOCK], dtype=tl.int64)
    hi = tl.zeros([BLOCK], dtype=tl.int64) + table_size
    for _ in range(search_steps):
        open_range = lo < hi
        mid = (lo + hi) >> 1
        value = tl.load(table_ptr + mid, mask=open_range, other=0)
        right = open_range & (value <= x)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(open_range & ~right, mid, hi)
    tl.store(out_ptr + j, lo, mask=j < num_draws)


def log_uniform_draws(cdf_table, seed, num_draws):
    cdf_table = cdf_table.contiguous()
    out = torch.empty(num_draws, dtype=torch.int64, device=cdf_table.device)
    if num_draws == 0:
        return out
    table_size = cdf_table.shape[0]
    _log_uniform_draws_kernel[(triton.cdiv(num_draws, _DRAWS_PER_PROGRAM),)](
        cdf_table, seed, out, table_size, num_draws, table_size.bit_length(), BLOCK=_DRAWS_PER_PROGRAM,
    )
    return out
