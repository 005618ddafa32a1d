"""Launch geometry shared by the Triton launchers (host metadata only, no sync)."""
from __future__ import annotations

import functools

import torch
import triton

# Grid size that keeps every SM busy with a few programs each.
PROGRAMS_PER_SM = 4
# Under the interpreter there is no device; the split logic still runs as on a mid-size GPU.
INTERPRETER_SM_COUNT = 16
# CUDA's limit on the second and third grid dimensions.
MAX_GRID_Y = 65535


def block_size(n: int, cap: int, floor: int = 4) -> int:
    """Power-of-two block covering ``n`` up to ``cap``; at least ``floor`` (4 = one Philox call)."""
    return max(floor, min(triton.next_power_of_2(n), cap))


def num_warps(block_elements: int) -> int:
    return 4 if block_elements <= 2048 else 8


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return PROGRAMS_PER_SM * INTERPRETER_SM_COUNT  # the interpreter runs CPU tensors


def column_splits(rows: int, columns: int, block: int, device: torch.device, splits: int | None = None):
    """(number of splits, columns per split): enough splits that rows x splits fill the device.

    ``splits`` asks for a given number instead (at most one per block). Each split is a whole
    number of blocks, so every program starts on a block boundary.
    """
    blocks = -(-columns // block)
    if splits is None:
        splits = -(-target_programs(device) // max(rows, 1))
    blocks_per_split = -(-blocks // max(1, min(blocks, splits)))
    per_split = blocks_per_split * block
    return -(-columns // per_split), per_split
