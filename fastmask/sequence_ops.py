"""Custom ops of the sequence-masking policies and the log-uniform sampler.

``fastmask::merlin_mask_random``, ``fastmask::bert4rec_mask`` and ``fastmask::log_uniform_draws``
dispatch like the ops of ``fastmask.ops`` (reference, compiled ``fastmask_C``, Triton) and return
the bits of ``fastmask.reference.sequence``. Arguments are checked here, from metadata only (no
host sync), so every backend raises the same errors.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _backend
from .ops import check_ids, check_seed, check_threshold, define, reference_impl, run, seed_int
from .reference import sequence as rules

OPS = ("merlin_mask_random", "bert4rec_mask", "log_uniform_draws")

# Philox's element counter (element >> 2) is 32 bits wide; BERT4Rec's negatives use elements < 64 * L.
_MAX_BERT4REC_LENGTH = 2**28
# A negative is 1 + uniform_below(draw, n_items - 1), exact for n_items - 1 < 2^32.
_MAX_BERT4REC_ITEMS = 2**32
_MAX_LOG_UNIFORM_DRAWS = 2**33


class _ReferenceBackend:
    """The reference rules behind the ops' signatures (seed tensor -> 64-bit int)."""

    @staticmethod
    @reference_impl
    def merlin_mask_random(item_ids, seed, padding_idx, threshold, reset_any_full_row):
        return rules.merlin_mask_random(item_ids, seed_int(seed), padding_idx, threshold, reset_any_full_row)

    @staticmethod
    @reference_impl
    def bert4rec_mask(item_seq, seed, n_items, threshold, mask_item_length):
        return rules.bert4rec_mask(item_seq, seed_int(seed), n_items, threshold, mask_item_length)

    @staticmethod
    @reference_impl
    def log_uniform_draws(cdf_table, seed, num_draws):
        return rules.log_uniform_draws(cdf_table, seed_int(seed), num_draws)


@define(
    "(Tensor item_ids, Tensor seed, int padding_idx, int threshold, bool reset_any_full_row) -> Tensor", random=True
)
def merlin_mask_random(
    item_ids: Tensor, seed: Tensor, padding_idx: int, threshold: int, reset_any_full_row: bool
) -> Tensor:
    """Merlin Models ``SequenceMaskRandom`` targets as a bool (B, L) mask (``threshold`` =
    ``bernoulli_threshold(masking_prob)``); see ``fastmask.reference.sequence.merlin_mask_random``."""
    check_ids("item_ids", item_ids, padding_idx)
    check_seed(seed, item_ids.device)
    check_threshold(threshold)
    return run("merlin_mask_random", item_ids.device, item_ids, seed, padding_idx, threshold, reset_any_full_row)


@torch.library.register_fake("fastmask::merlin_mask_random")
def _(item_ids, seed, padding_idx, threshold, reset_any_full_row):
    return item_ids.new_empty(item_ids.shape, dtype=torch.bool)


@define(
    "(Tensor item_seq, Tensor seed, int n_items, int threshold, int mask_item_length)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
    random=True,
)
def bert4rec_mask(
    item_seq: Tensor, seed: Tensor, n_items: int, threshold: int, mask_item_length: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RecBole BERT4Rec masking: int64 (masked_item_seq (B, L), pos_items, neg_items, masked_index
    (B, mask_item_length)); see ``fastmask.reference.sequence.bert4rec_mask``."""
    check_ids("item_seq", item_seq, 0)
    check_seed(seed, item_seq.device)
    check_threshold(threshold)
    if not 2 <= n_items <= _MAX_BERT4REC_ITEMS:
        raise ValueError(f"n_items must be in [2, 2^32] (items 1..n_items-1 plus padding 0), got {n_items}")
    if mask_item_length < 1:
        raise ValueError(f"mask_item_length must be >= 1, got {mask_item_length}")
    if item_seq.shape[1] > _MAX_BERT4REC_LENGTH:
        raise ValueError(f"item_seq rows must be at most 2^28 long, got {item_seq.shape[1]}")
    return run("bert4rec_mask", item_seq.device, item_seq, seed, n_items, threshold, mask_item_length)


@torch.library.register_fake("fastmask::bert4rec_mask")
def _(item_seq, seed, n_items, threshold, mask_item_length):
    batch, length = item_seq.shape
    lists = [item_seq.new_empty((batch, mask_item_length), dtype=torch.int64) for _ in range(3)]
    return (item_seq.new_empty((batch, length), dtype=torch.int64), *lists)


@define("(Tensor cdf_table, Tensor seed, int num_draws) -> Tensor", random=True)
def log_uniform_draws(cdf_table: Tensor, seed: Tensor, num_draws: int) -> Tensor:
    """``num_draws`` int64 ids drawn with replacement through the integer inverse-CDF ``cdf_table``
    (``fastmask.reference.sequence.log_uniform_cdf_table``)."""
    if not isinstance(cdf_table, Tensor) or cdf_table.dtype != torch.int64:
        raise TypeError(f"cdf_table must be an int64 tensor, got {getattr(cdf_table, 'dtype', type(cdf_table).__name__)}")
    if cdf_table.ndim != 1:
        raise ValueError(f"cdf_table must be 1-D, got shape {tuple(cdf_table.shape)}")
    check_seed(seed, cdf_table.device)
    if not 0 <= num_draws <= _MAX_LOG_UNIFORM_DRAWS:
        raise ValueError(f"num_draws must be in [0, 2^33], got {num_draws}")
    return run("log_uniform_draws", cdf_table.device, cdf_table, seed, num_draws)


@torch.library.register_fake("fastmask::log_uniform_draws")
def _(cdf_table, seed, num_draws):
    return cdf_table.new_empty((num_draws,), dtype=torch.int64)


def _register_compiled_fakes() -> None:
    """Fakes of the ``fastmask_C`` sequence ops (defined in csrc/sequence.cpp) when the extension has them."""
    if _backend.compiled_extension() is None:
        return
    from ._compiled import _fake_of

    for name in OPS:
        if hasattr(torch.ops.fastmask_C, name):
            torch.library.register_fake(f"fastmask_C::{name}")(_fake_of(name))


_register_compiled_fakes()
