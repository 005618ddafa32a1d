"""Triton Gumbel-max sampling: bit-identical to ``fastmask.reference.sampling``.

Grid (rows, splits): each program scans a contiguous, block-aligned range of columns and keeps the
first maximum of ``float32(logit) + noise`` (the first NaN wins outright). With one split it writes
the answer; otherwise it writes its (value, index) partial and a one-program-per-row kernel reduces
the partials in column order, so the result never depends on the split.

The noise ``float32(-log(-log((w + 0.5) * 2**-32)))`` needs two float64 logs per element, so a
block computes them only when one of its columns can still win: ``g`` grows with the draw ``w`` and
float32 addition is monotone, so ``logit + bound(w)`` bounds a column's value, with ``bound`` an upper
bound of ``g`` over the draws sharing w's top 12 bits (a 4096-entry table computed once on the host,
with a slack above any libm's error). A block whose largest logit cannot win even with the largest
possible noise skips its Philox draws too.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from . import launch
from .philox import STREAM_GUMBEL, block_draws

BLOCK_CAP = 1024
MAX_DRAW = tl.constexpr(0xFFFFFFFF)
# The noise bound table is indexed by a draw's top 12 bits.
BUCKET_SHIFT = tl.constexpr(20)
# Above any float64 libm's error in the noise (faithful logs) once rounded to float32: |noise| < 32,
# where a float32 ulp is at most 2^-19.
NOISE_SLACK = 1e-5


@functools.lru_cache(maxsize=None)
def _noise_bounds(device: torch.device) -> torch.Tensor:
    """float32 (4096,): an upper bound of the noise of every draw whose top 12 bits are the index."""
    largest = (np.arange(4096, dtype=np.float64) * 2.0**20) + (2.0**20 - 1)
    noise = (-np.log(-np.log((largest + 0.5) * 2.0**-32))).astype(np.float32)
    return torch.from_numpy(noise + np.float32(NOISE_SLACK)).to(device)


@triton.jit
def _gumbel_noise(words):
    """float32(-log(-log((w + 0.5) * 2**-32))) computed in float64, as the reference does."""
    uniform = (words.to(tl.float64) + 0.5) * 2.3283064365386963e-10
    return (-tl.log(-tl.log(uniform))).to(tl.float32)


@triton.jit
def _first_argmax(values, indices, valid):
    """(value, index) of the first maximum of ``values`` where ``valid``; a NaN beats everything.

    ``indices`` increase along the block, so "first" is the smallest index among the winners.
    """
    is_nan = (values != values) & valid
    first_nan = tl.min(tl.where(is_nan, indices, 2**62), axis=0)
    plain = tl.where(valid & ~is_nan, values, float("-inf"))
    best = tl.max(plain, axis=0)
    first_best = tl.min(tl.where(valid & (plain == best), indices, 2**62), axis=0)
    has_nan = first_nan < 2**62
    return tl.where(has_nan, float("nan"), best), tl.where(has_nan, first_nan, first_best)


@triton.jit
def _gumbel_argmax_kernel(
    logits_ptr, seed_ptr, bounds_ptr, out_ptr, values_ptr, num_columns, row_stride, split_columns,
    WRITE_PARTIAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    num_splits = tl.num_programs(1).to(tl.int64)
    seed = tl.load(seed_ptr)
    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    largest_noise = _gumbel_noise(tl.full([], MAX_DRAW, tl.uint32))

    best_value = tl.full([], float("-inf"), tl.float32)
    best_index = begin
    for first in range(begin, end, BLOCK):
        # Blocks run in column order: a later block wins only with a strictly larger value,
        # and nothing beats an earlier NaN.
        if best_value == best_value:
            columns = first + tl.arange(0, BLOCK).to(tl.int64)
            valid = columns < end
            logits = tl.load(logits_ptr + row * row_stride + columns, mask=valid, other=float("-inf")).to(tl.float32)
            has_nan = tl.max((logits != logits).to(tl.int32), axis=0) > 0
            largest_logit = tl.max(tl.where(logits != logits, float("-inf"), logits), axis=0)
            if has_nan | (largest_logit + largest_noise > best_value):
                words = block_draws(seed, STREAM_GUMBEL, row, first, BLOCK)
                bounds = tl.load(bounds_ptr + (words >> BUCKET_SHIFT))
                hopeful = valid & (logits + bounds > best_value)
                if has_nan | (tl.max(hopeful.to(tl.int32), axis=0) > 0):
                    value, index = _first_argmax(logits + _gumbel_noise(words), columns, valid)
                    if (value != value) | (value > best_value):
                        best_value = value
                        best_index = index
    if WRITE_PARTIAL:
        tl.store(values_ptr + row * num_splits + split, best_value)
        tl.store(out_ptr + row * num_splits + split, best_index)
    else:
        tl.store(out_ptr + row, best_index)


@triton.jit
def _reduce_partials_kernel(values_ptr, indices_ptr, out_ptr, num_splits, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    splits = tl.arange(0, BLOCK)
    valid = splits < num_splits
    values = tl.load(values_ptr + row * num_splits + splits, mask=valid, other=float("-inf"))
    indices = tl.load(indices_ptr + row * num_splits + splits, mask=valid, other=0)
    _, index = _first_argmax(values, indices, valid)
    tl.store(out_ptr + row, index)


def gumbel_argmax(
    logits: torch.Tensor, seed: torch.Tensor, *, block: int | None = None, splits: int | None = None
) -> torch.Tensor:
    """One Gumbel-max sample per row of ``logits`` (P, V); ``block``/``splits`` override the geometry."""
    num_rows, num_columns = logits.shape
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    if num_rows == 0:
        return out
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    bounds = _noise_bounds(logits.device)
    block = block or launch.block_size(num_columns, BLOCK_CAP)
    num_splits, split_columns = launch.column_splits(num_rows, num_columns, block, logits.device, splits)
    warps = launch.num_warps(block)
    if num_splits == 1:
        _gumbel_argmax_kernel[(num_rows, 1)](
            logits, seed, bounds, out, out, num_columns, logits.stride(0), split_columns,
            WRITE_PARTIAL=False, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
        )
        return out
    values = torch.empty((num_rows, num_splits), dtype=torch.float32, device=logits.device)
    indices = torch.empty((num_rows, num_splits), dtype=torch.int64, device=logits.device)
    _gumbel_argmax_kernel[(num_rows, num_splits)](
        logits, seed, bounds, indices, values, num_columns, logits.stride(0), split_columns,
        WRITE_PARTIAL=True, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
    )
    _reduce_partials_kernel[(num_rows,)](
        values, indices, out, num_splits, BLOCK=launch.block_size(num_splits, 1 << 16, 1)
    )
    return out
