"""Reference masking rules: the oracle every kernel is tested against.

Each public function has the signature of the fastmask op of the same name: the row-major
``item_ids`` (B, L), ``padding_idx`` and, for random rules, ``seed`` (an int64 tensor of one value, or
a Python int). Draws follow ``philox.draws`` exactly, so these functions define the bits every
backend returns. Targets keep the dtype of ``item_ids``. Rows with no non-padding item get no target
(the API layer decides whether that is an error).
"""
from __future__ import annotations

import numpy as np
import torch

from . import philox


def _row_draws(seed: int, stream: int, batch: int, elements: int) -> torch.Tensor:
    """(B, elements) int64 tensor of uint32 draws of ``stream`` for every row."""
    rows = np.arange(batch, dtype=np.uint64)[:, None]
    cols = np.arange(elements, dtype=np.uint64)[None, :]
    return torch.from_numpy(philox.draws(seed, stream, rows, cols).astype(np.int64))


def _uniform_below(words: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    # (words * n) >> 32 without int64 overflow for any n < 2^32: n in 16-bit halves.
    return (words * (n >> 16) + ((words * (n & 0xFFFF)) >> 16)) >> 16


def _kth_true(flags: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Column of the k-th (0-based) True of each row of ``flags`` (rows with no such one: 0)."""
    if flags.shape[1] == 0:  # argmax has no empty reduction
        return torch.zeros(flags.shape[0], dtype=torch.int64, device=flags.device)
    hit = flags & (flags.long().cumsum(1) == (k + 1)[:, None])
    return hit.long().argmax(1)


def _pick_one(flags: torch.Tensor, count: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """Uniformly chosen True column per row: the multinomial(flags.float()) of the reference."""
    words = _row_draws(seed, stream, flags.shape[0], 1)[:, 0].to(flags.device)
    return _kth_true(flags, _uniform_below(words, count))


def _targets(item_ids: torch.Tensor, schema: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """The item where ``schema`` holds, padding elsewhere (the ids' dtype)."""
    return torch.where(schema, item_ids, padding_idx)


def mlm_train(item_ids: torch.Tensor, seed, padding_idx: int, threshold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM/RTD training: (schema bool B x L, targets B x L).

    1. Bernoulli(p) over non-padding positions (``draw < threshold``).
    2. One uniformly chosen non-padding position becomes a target.
    3. Rows where every non-padding item is a target drop one uniformly chosen target.
    """
    seed = philox.seed_value(seed)
    batch, length = item_ids.shape
    device = item_ids.device
    nonpad = item_ids != padding_idx
    count = nonpad.sum(1)
    words = _row_draws(seed, philox.STREAM_MLM_BERNOULLI, batch, length).to(device)
    mask = (words < threshold) & nonpad

    rows = torch.arange(batch, device=device)
    has_items = count > 0
    forced = _pick_one(nonpad, count, seed, philox.STREAM_MLM_FORCE)
    mask[rows[has_items], forced[has_items]] = True

    full = has_items & (mask.sum(1) == count)
    dropped = _pick_one(mask, count, seed, philox.STREAM_MLM_UNMASK)
    mask[rows[full], dropped[full]] = False
    return mask, _targets(item_ids, mask, padding_idx)


def plm_context_lengths(plm_probability: float, max_span_length: int) -> list[int]:
    """``int(span / plm_probability)`` for span = 0..max_span_length, in Python float math."""
    return [int(span / plm_probability) for span in range(max_span_length + 1)]


def plm_train(
    item_ids: torch.Tensor,
    seed,
    padding_idx: int,
    max_span_length: int,
    context_lengths: list[int],
    permute_all: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PLM training: (schema bool B x L, targets B x L, perm_mask f32 B x L x L, target_mapping f32 B x L x L).

    Span walk per row, with n = number of non-padding items (a count, not a position)::

        cur = 0; k = 0
        while cur < n:
            span  = 1 + uniform_below(draw(PLM_SPAN, 2k), max_span_length)
            ctx   = context_lengths[span]
            start = cur + uniform_below(draw(PLM_SPAN, 2k + 1), ctx - span + 1)
            if start < n: mask[start : start + span] = True   # may run into padding
            cur += ctx; k += 1

    A row left without a mask gets one uniformly chosen non-padding position, set to
    ``item != 0`` (the reference writes the item id into a bool tensor). Then, counting the
    mask before padding is dropped, a row whose count equals n drops one uniformly chosen
    masked position. ``permute_all`` masks every non-padding item instead of walking spans,
    keeps the drop step and leaves ``target_mapping`` all zero, as the reference does.

    perm_mask[b, q, k] = 1 (q cannot see k) iff k is a target and (q is not a target or
    k does not precede q in the row's factorisation order). The order sorts targets by
    (draw(PLM_PERM, t), t).
    """
    seed = philox.seed_value(seed)
    batch, length = item_ids.shape
    device = item_ids.device
    nonpad = item_ids != padding_idx
    count = nonpad.sum(1)
    positions = torch.arange(length, device=device)
    rows = torch.arange(batch, device=device)

    if permute_all:
        mask = nonpad.clone()
    else:
        ctx_table = torch.tensor(context_lengths, dtype=torch.int64, device=device)
        span_words = _row_draws(seed, philox.STREAM_PLM_SPAN, batch, 2 * length).to(device)
        mask = torch.zeros_like(nonpad)
        cur = torch.zeros(batch, dtype=torch.int64, device=device)
        for k in range(length):  # ctx >= 1, so no row walks more than `length` spans
            active = cur < count
            span = 1 + _uniform_below(span_words[:, 2 * k], max_span_length)
            ctx = ctx_table[span]
            start = cur + _uniform_below(span_words[:, 2 * k + 1], ctx - span + 1)
            hit = active & (start < count)
            in_span = (positions >= start[:, None]) & (positions < (start + span)[:, None])
            mask |= in_span & hit[:, None]
            cur = torch.where(active, cur + ctx, cur)

        unmasked = (mask.sum(1) == 0) & (count > 0)
        forced = _pick_one(nonpad, count, seed, philox.STREAM_PLM_FORCE)
        mask[rows[unmasked], forced[unmasked]] = item_ids[rows[unmasked], forced[unmasked]] != 0

    masked = mask.sum(1)
    full = (masked == count) & (masked > 0)
    dropped = _pick_one(mask, masked, seed, philox.STREAM_PLM_UNMASK)
    mask[rows[full], dropped[full]] = False
    mask &= nonpad

    keys = _row_draws(seed, philox.STREAM_PLM_PERM, batch, length).to(device)
    key_q, key_k = keys[:, :, None], keys[:, None, :]
    k_before_q = (key_k < key_q) | ((key_k == key_q) & (positions[None, :] < positions[:, None]))
    perm_mask = mask[:, None, :] & (~mask[:, :, None] | ~k_before_q)

    if permute_all:
        target_mapping = torch.zeros(batch, length, length, dtype=torch.float32, device=device)
    else:
        target_mapping = torch.eye(length, dtype=torch.float32, device=device).repeat(batch, 1, 1)
    return mask, _targets(item_ids, mask, padding_idx), perm_mask.float(), target_mapping


def last_item_index(item_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """``n - 1`` per row, wrapped like a Python index (an all-padding row gives L - 1; 0 when L = 0)."""
    return ((item_ids != padding_idx).sum(1) - 1) % max(item_ids.shape[1], 1)


def plm_eval(item_ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Last-item PLM evaluation: (schema, targets) of ``last_item_targets``, the perm_mask (int64
    B x L x L: causal, and nobody sees item n-1) and the identity (float32 L x L) that the module expands
    into the target_mapping."""
    length = item_ids.shape[1]
    positions = torch.arange(length, device=item_ids.device)
    last = last_item_index(item_ids, padding_idx)
    causal = positions[None, :] > positions[:, None]
    perm_mask = (causal[None] | (positions[None, None, :] == last[:, None, None])).long()
    identity = torch.eye(length, dtype=torch.float32, device=item_ids.device)
    return (*last_item_targets(item_ids, padding_idx), perm_mask, identity)


def next_item_targets(item_ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-item targets for every position: (schema, targets). The appended column is literal 0."""
    targets = torch.cat([item_ids[:, 1:], torch.zeros_like(item_ids[:, :1])], dim=1)
    return targets != padding_idx, targets


def clm_last_item_targets(item_ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CLM's last-item mode: of the ``next_item_targets``, only the one at ``m - 1`` (m = their count,
    Python-index wrap), zeros elsewhere; ``schema = item_ids != padding_idx``: n positions kept visible
    for one target."""
    schema, targets = next_item_targets(item_ids, padding_idx)
    rows = torch.arange(item_ids.shape[0], device=item_ids.device)
    last = schema.sum(1) - 1
    last_only = torch.zeros_like(targets)
    if item_ids.shape[1] > 0:
        last_only[rows, last] = targets[rows, last]
    return item_ids != padding_idx, last_only


def last_item_targets(item_ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation on the last item: only ``targets[n - 1] = item[n - 1]`` (Python-index wrap)."""
    rows = torch.arange(item_ids.shape[0], device=item_ids.device)
    last = (item_ids != padding_idx).sum(1) - 1
    targets = torch.full_like(item_ids, padding_idx)
    if item_ids.shape[1] > 0:
        targets[rows, last] = item_ids[rows, last]
    return targets != padding_idx, targets


def mlm_inference_targets(item_ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM inference: (B, L + 1) targets, pad except ``targets[n] = item[n - 1]`` (the [MASK] slot;
    Python-index wrap, so a row of padding copies its last column; with L = 0 nothing is copied)."""
    batch, length = item_ids.shape
    rows = torch.arange(batch, device=item_ids.device)
    count = (item_ids != padding_idx).sum(1)
    targets = torch.full((batch, length + 1), padding_idx, dtype=item_ids.dtype, device=item_ids.device)
    if length > 0:
        targets[rows, count] = item_ids[rows, count - 1]
    return targets != padding_idx, targets


def causal_perm_mask(batch: int, length: int, device) -> torch.Tensor:
    """All-positions PLM evaluation perm_mask: strict upper triangle, int64 (B, L, L)."""
    causal = torch.ones(length, length, dtype=torch.int64, device=device).triu(1)
    return causal.expand(batch, length, length).contiguous()
