"""Argument checks and launch geometry shared by the Triton launchers (host metadata only, no sync)."""
from __future__ import annotations

import functools
import os

import torch

INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Grid size that keeps every SM busy with a few programs each.
PROGRAMS_PER_SM = 4
# Under the interpreter there is no device; the split logic still runs as on a mid-size GPU.
INTERPRETER_SM_COUNT = 16


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_tensor(name: str, value, ndim: int, dtypes, dtype_words: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must be {dtype_words}, got {value.dtype}")
    if value.device.type != "cuda" and not interpreting():
        raise ValueError(f"{name} must be a CUDA tensor for the Triton backend, got device {value.device}")


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")


def check_seed(seed, device: torch.device) -> None:
    if not isinstance(seed, torch.Tensor):
        raise TypeError(f"seed must be an int64 torch.Tensor of shape (1,), got {type(seed).__name__}")
    if seed.dtype != torch.int64 or seed.numel() != 1:
        raise ValueError(f"seed must be an int64 tensor of shape (1,), got {seed.dtype} of shape {tuple(seed.shape)}")
    if seed.device != device:
        raise ValueError(f"seed must be on the data's device {device}, got {seed.device}")


def next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def block_size(n: int, cap: int, floor: int = 4) -> int:
    """Power-of-two block covering ``n`` up to ``cap``; at least ``floor`` (4 = one Philox call)."""
    return max(floor, min(next_power_of_2(n), cap))


def num_warps(block_elements: int) -> int:
    return 4 if block_elements <= 2048 else 8


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return PROGRAMS_PER_SM * INTERPRETER_SM_COUNT


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
