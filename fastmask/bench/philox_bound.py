"""The Philox bound of Gumbel sampling: a Triton kernel that makes the P x V Philox-4x32-10 draws of
a (P, V) sample and nothing else.

Gumbel-max sampling needs one 32-bit draw per logit; fastmask's layout takes the four words of
``tl.philox(seed, column // 4, row, stream, 0)`` for four consecutive columns
(``fastmask.reference.philox``). This kernel makes those calls, block by block over whole blocks of
columns as a sampling kernel does, and folds every word into one XOR per program, so the compiler
cannot drop any draw. Its time is the least a kernel that makes every draw can take.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048  # columns per step: BLOCK // 4 Philox calls
NUM_WARPS = 4
PROGRAMS_PER_SM = 8


@triton.jit
def _philox_draws_kernel(seed_ptr, out_ptr, num_columns, split_columns, stream, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    split = tl.program_id(1)
    seed = tl.load(seed_ptr)
    begin = split * split_columns
    end = tl.minimum(begin + split_columns, num_columns)
    folded = tl.zeros([BLOCK // 4], dtype=tl.uint32)
    for first in range(begin, end, BLOCK):
        counters = (first // 4 + tl.arange(0, BLOCK // 4)).to(tl.uint32)
        zero = counters * 0
        w0, w1, w2, w3 = tl.philox(seed, counters, zero + row.to(tl.uint32), zero + stream, zero)
        folded = folded ^ w0 ^ w1 ^ w2 ^ w3
    tl.store(out_ptr + row * tl.num_programs(1) + split, tl.xor_sum(folded, axis=0).to(tl.int32, bitcast=True))


def splits_for(rows: int, columns: int, device: torch.device, block: int = BLOCK) -> tuple[int, int]:
    """(splits per row, columns per split): enough programs to fill the GPU, whole blocks each."""
    blocks = -(-columns // block)
    programs = PROGRAMS_PER_SM * (torch.cuda.get_device_properties(device).multi_processor_count
                                  if device.type == "cuda" else 4)
    splits = max(1, min(blocks, -(-programs // max(rows, 1))))
    per_split = -(-blocks // splits) * block
    return -(-columns // per_split), per_split


def philox_draws(rows: int, columns: int, seed: torch.Tensor, stream: int, block: int = BLOCK,
                 splits: tuple[int, int] | None = None) -> torch.Tensor:
    """The XOR of the draws of each (row, split), int32 of shape (rows, splits)."""
    num_splits, split_columns = splits or splits_for(rows, columns, seed.device, block)
    out = torch.empty((rows, num_splits), dtype=torch.int32, device=seed.device)
    _philox_draws_kernel[(rows, num_splits)](
        seed, out, columns, split_columns, stream, BLOCK=block, num_warps=NUM_WARPS,
    )
    return out
