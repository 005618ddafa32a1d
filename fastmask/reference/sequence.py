"""Reference rules of the other sequence-masking systems and of the log-uniform negative sampler.

* Merlin Models (TF) ``SequenceMaskRandom``, ``SequenceMaskLast`` and ``SequenceMaskLastInference``
  (``merlin/models/tf/transforms/sequence.py``).
* RecBole / hopwise BERT4Rec: the ``mask_itemseq`` batch transform (``data/transform.py``,
  ``MaskItemSequence``) and ``BERT4Rec.reconstruct_test_data``.
* Transformers4Rec's ``LogUniformSampler`` (``torch/model/prediction_task.py``).

Their random draws come from fastmask's Philox stream (``philox.draws``); each function documents
the element layout of its streams, which is the contract every backend (C++, CUDA, Triton) follows
bit for bit. Decisions are integer-only: ``draw < threshold`` for a Bernoulli, ``(draw * n) >> 32``
for an integer in ``[0, n)``, a host-tabulated integer CDF for the log-uniform draws.
"""
from __future__ import annotations

import numpy as np
import torch

from . import philox
from .masking import _pick_one, _row_draws, _uniform_below

# BERT4Rec's negative sampler retries a uniform item until it is not in the sequence. fastmask makes
# that loop bounded: attempt ``a`` of position ``t`` is element ``a * L + t`` of the NEGATIVE stream.
BERT4REC_NEGATIVE_ATTEMPTS = 64

# Draws of the fixed-size log-uniform sampler, per draw of the reference (see ``fixed_size_negatives``).
FIXED_SIZE_DRAWS_PER_TRY = 4

# A log-uniform draw is a 62-bit integer compared with the integer CDF scaled by 2**62.
LOG_UNIFORM_BITS = 62


# --------------------------------------------------------------------------------------------------
# Merlin Models
# --------------------------------------------------------------------------------------------------
def merlin_mask_random(
    item_ids: torch.Tensor, seed, padding_idx: int, threshold: int, reset_any_full_row: bool
) -> torch.Tensor:
    """``SequenceMaskRandom`` training targets (bool, B x L).

    Valid positions are the non-padding ones; n = their number in the row.

    1. Bernoulli: valid position t is selected iff ``draw(MERLIN_BERNOULLI, row, element t) < threshold``.
    2. A row with no selected position is reset to exactly one: the k-th valid position (in
       order), k = ``uniform_below(draw(MERLIN_RESET, row, element 0), n)`` (Merlin's
       ``floor(U * len)``). A row without valid positions stays empty.
    3. A row whose valid positions are all selected is reset the same way. Merlin Models checks
       "all" on its dense (batch, longest row) mask, where the padding of shorter rows is never
       selected, so it only resets rows as long as the batch's longest row
       (``reset_any_full_row=False``); ``True`` resets every fully selected row, as its docstring
       ("between 1 and length-1 masked positions") intends.

    Merlin Models rejects rows with fewer than 2 items; that check belongs to the caller. Here a
    1-item row always ends with its item selected.
    """
    seed = philox.seed_value(seed)
    batch, length = item_ids.shape
    device = item_ids.device
    valid = item_ids != padding_idx
    count = valid.sum(1)
    words = _row_draws(seed, philox.STREAM_MERLIN_BERNOULLI, batch, length).to(device)
    selected = valid & (words < threshold)
    picked = selected.sum(1)
    full = picked == count
    if not reset_any_full_row and batch > 0:
        full &= count == count.max()
    reset = (picked == 0) | full
    one = torch.zeros_like(valid)
    if length > 0:
        position = _pick_one(valid, count, seed, philox.STREAM_MERLIN_RESET)
        one[torch.arange(batch, device=device), position] = count > 0
    return torch.where(reset[:, None], one, selected)


def last_valid_position(item_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Index of the last non-padding item of each row (-1 for a row of padding only); int64 (B,).

    For right-padded rows this is ``n - 1``.
    """
    batch, length = item_ids.shape
    if length == 0:
        return torch.full((batch,), -1, dtype=torch.int64, device=item_ids.device)
    positions = torch.arange(length, device=item_ids.device)
    return torch.where(item_ids != padding_idx, positions, -1).amax(1)


def merlin_mask_last(item_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """``SequenceMaskLast``: only the last valid item is a target (bool, B x L)."""
    positions = torch.arange(item_ids.shape[1], device=item_ids.device)
    return positions[None, :] == last_valid_position(item_ids, padding_idx)[:, None]


def merlin_inference_mask(item_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """``SequenceMaskLastInference``: (B, L + 1) bool, True right after the last valid item.

    Merlin Models appends a copy of the last embedding to each (ragged) row and masks it; on a
    padded batch that slot is position ``last valid + 1`` of the (L + 1)-long rows (n when
    right-padded, 0 for a row of padding only), as in Transformers4Rec's MLM inference.
    """
    positions = torch.arange(item_ids.shape[1] + 1, device=item_ids.device)
    return positions[None, :] == last_valid_position(item_ids, padding_idx)[:, None] + 1


# --------------------------------------------------------------------------------------------------
# RecBole / hopwise BERT4Rec
# --------------------------------------------------------------------------------------------------
def _in_row(candidates: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
    """``candidates[b, t] in item_seq[b]`` (the whole row, items after a 0 included)."""
    return (candidates[:, :, None] == item_seq[:, None, :]).any(2)


def bert4rec_negatives(item_seq: torch.Tensor, seed: int, n_items: int, wanted: torch.Tensor) -> torch.Tensor:
    """Negative item of every ``wanted`` position (0 elsewhere); int64 (B, L).

    The reference draws ``random.randint(1, n_items - 1)`` until the item is not in the row. Here:

    * attempt ``a`` (0 <= a < BERT4REC_NEGATIVE_ATTEMPTS) of position t is
      ``1 + uniform_below(draw(BERT4REC_NEGATIVE, row, element a * L + t), n_items - 1)``;
      the first one not in the row is the negative;
    * when every attempt is in the row, the items after the last attempt c, cyclically in
      ``[1, n_items)`` (c + 1, c + 2, ..., n_items - 1, 1, 2, ...), are scanned and the first one
      not in the row is taken; at most min(n_items - 1, L + 1) steps, since a row holds at most L
      distinct items. If every item of ``[1, n_items)`` is in the row (the reference loops forever),
      the negative is 0.
    """
    batch, length = item_seq.shape
    device = item_seq.device
    item_seq = item_seq.long()
    span = n_items - 1
    negatives = torch.zeros(batch, length, dtype=torch.int64, device=device)
    last = torch.zeros_like(negatives)
    pending = wanted.clone()
    rows = np.arange(batch, dtype=np.uint64)[:, None]
    for attempt in range(BERT4REC_NEGATIVE_ATTEMPTS):
        if not bool(pending.any()):
            return negatives
        elements = attempt * length + np.arange(length, dtype=np.uint64)[None, :]
        words = torch.from_numpy(
            philox.draws(seed, philox.STREAM_BERT4REC_NEGATIVE, rows, elements).astype(np.int64)
        ).to(device)
        candidates = 1 + _uniform_below(words, span)
        accept = pending & ~_in_row(candidates, item_seq)
        negatives = torch.where(accept, candidates, negatives)
        last = torch.where(pending, candidates, last)
        pending &= ~accept
    for step in range(1, min(span, length + 1) + 1):
        if not bool(pending.any()):
            break
        candidates = 1 + (last - 1 + step) % span
        accept = pending & ~_in_row(candidates, item_seq)
        negatives = torch.where(accept, candidates, negatives)
        pending &= ~accept
    return negatives


def _left_pad_last(values: torch.Tensor, slot: torch.Tensor, keep: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) int64: ``values[b, t]`` at ``slot[b, t]`` where ``keep``, 0 elsewhere."""
    out = torch.zeros(values.shape[0], width + 1, dtype=torch.int64, device=values.device)
    out.scatter_(1, torch.where(keep, slot, width), values.long())
    return out[:, :width].contiguous()


def bert4rec_fine_tune_batch(seed, ft_threshold: int) -> bool:
    """Whether a BERT4Rec batch is a last-item ("fine-tune") batch: RecBole draws one uniform number per
    batch and compares it with ``ft_ratio``. Here: ``draw(BERT4REC_FINE_TUNE, row 0, element 0) <
    ft_threshold``, with ``ft_threshold = bernoulli_threshold(ft_ratio)`` (0 never, 2^32 always)."""
    return int(philox.draws(philox.seed_value(seed), philox.STREAM_BERT4REC_FINE_TUNE, 0, 0)) < ft_threshold


def bert4rec_mask(
    item_seq: torch.Tensor, item_seq_len, seed, n_items: int, threshold: int, mask_item_length: int, ft_threshold: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """RecBole ``MaskItemSequence``: (masked_item_seq (B, L), pos_items, neg_items, masked_index (B, M)).

    All int64, M = ``mask_item_length``. The batch is a last-item batch iff
    ``bert4rec_fine_tune_batch(seed, ft_threshold)``; otherwise a random batch. Padding id is 0.

    Random batch, per row:

    1. Positions are scanned up to the first 0; scanned position t is masked iff
       ``draw(BERT4REC_MASK, row, element t) < threshold``. There is no at-least-one rule.
    2. ``masked_item_seq``: the row with every masked position replaced by the mask token
       ``n_items``.
    3. In position order, each masked position gives its item, a negative (``bert4rec_negatives``)
       and its index. The three lists are left-padded with 0 to M, keeping their LAST M entries
       (earlier masks stay masked in ``masked_item_seq`` but get no loss).

    Last-item batch, per row of length n (``item_seq_len``, int64 (B,); None: the position of the
    first 0, or L, which is the random batch's scan length and RecBole's length for right-padded rows):

    1. Only column p is masked, p = n - 1 as a Python index: n = 0 gives p = L - 1, the last column.
    2. The lists hold one entry, in their last slot: the item at p (0 when p is padding), its
       negative (``bert4rec_negatives`` for column p: elements ``a * L + p``) and the index ``n - 1``
       (-1 when n = 0, as RecBole writes it).
    3. A row with n outside [0, L] (which ``fastmask.sequence.BERT4RecMasking`` refuses when it checks
       values), and every row of a batch without columns, masks nothing: the row unchanged, its lists 0.
    """
    seed = philox.seed_value(seed)
    batch, length = item_seq.shape
    device = item_seq.device
    positions = torch.arange(length, device=device)
    if length > 0:
        scan_length = torch.where(item_seq == 0, positions, length).amin(1)
    else:
        scan_length = torch.zeros(batch, dtype=torch.int64, device=device)
    if bert4rec_fine_tune_batch(seed, ft_threshold):
        lengths = scan_length if item_seq_len is None else item_seq_len.long()
        last = torch.where(lengths > 0, lengths - 1, length - 1)
        in_range = (lengths >= 0) & (lengths <= length)
        masked = in_range[:, None] & (positions[None, :] == last[:, None])
        index = (lengths - 1)[:, None].expand(batch, length)
    else:
        words = _row_draws(seed, philox.STREAM_BERT4REC_MASK, batch, length).to(device)
        masked = (positions[None, :] < scan_length[:, None]) & (words < threshold)
        index = positions.expand(batch, length)
    masked_item_seq = torch.where(masked, n_items, item_seq.long())

    slot = mask_item_length - masked.sum(1, keepdim=True) + masked.long().cumsum(1) - 1
    keep = masked & (slot >= 0)
    negatives = bert4rec_negatives(item_seq, seed, n_items, keep)
    pos_items = _left_pad_last(item_seq, slot, keep, mask_item_length)
    neg_items = _left_pad_last(negatives, slot, keep, mask_item_length)
    masked_index = _left_pad_last(index, slot, keep, mask_item_length)
    return masked_item_seq, pos_items, neg_items, masked_index


def bert4rec_reconstruct_test_data(item_seq: torch.Tensor, item_seq_len: torch.Tensor, n_items: int) -> torch.Tensor:
    """``BERT4Rec.reconstruct_test_data``: int64 (B, L).

    Append a 0 column, write the mask token ``n_items`` at index ``item_seq_len`` of each row,
    then drop column 0: the mask ends at ``len - 1`` (after the row's first item is dropped).
    """
    padding = torch.zeros(item_seq.shape[0], 1, dtype=torch.long, device=item_seq.device)
    extended = torch.cat((item_seq.long(), padding), dim=-1)
    extended[torch.arange(item_seq.shape[0], device=item_seq.device), item_seq_len.long()] = n_items
    return extended[:, 1:]


# --------------------------------------------------------------------------------------------------
# Transformers4Rec LogUniformSampler
# --------------------------------------------------------------------------------------------------
def log_uniform_distribution(max_id: int, min_id: int = 0) -> torch.Tensor:
    """Transformers4Rec's ``get_log_uniform_distr`` (float32, length ``max_id``), same operations.

    ``dist[c] = (log(c - min_id + 2) - log(c - min_id + 1)) / log(max_id - min_id + 1)`` for
    c >= min_id, 0 below. Computed in float32 as the reference does, so above ~2**22 items many
    entries round to exactly 0 and those items are never sampled.
    """
    log_indices = torch.arange(1.0, max_id - min_id + 2.0, 1.0).log_()
    probs = (log_indices[1:] - log_indices[:-1]) / log_indices[-1]
    if min_id > 0:
        probs = torch.cat([torch.zeros([min_id], dtype=probs.dtype), probs], axis=0)
    return probs


def unique_sampling_distribution(dist: torch.Tensor, n_sample: int) -> torch.Tensor:
    """``get_unique_sampling_distr``, same operations: ``1 - (1 + p) ** -n_sample`` (float32).

    Meant as P(drawn at least once in n draws) = ``-expm1(n * log1p(-p))`` = 1 - (1 - p)^n, as the
    reference's docstring says, but its code ``-(-p.log1p() * n).expm1()`` negates ``log1p(p)``
    instead of ``p``; the two agree to first order in p. Kept as the code computes it.
    """
    return (-(-dist.double().log1p_() * n_sample).expm1_()).float()


def log_uniform_cdf_table(dist: torch.Tensor) -> torch.Tensor:
    """int64 (V - 1,) inverse-CDF table of ``multinomial(dist)`` over ids ``[0, V)``, V = len(dist).

    ``table[k] = floor(2**62 * (dist[0] + ... + dist[k]) / sum(dist))``, summed in float64 on the
    host once, so every backend compares against the same integers. Draw x (62-bit) samples id
    ``#{k : table[k] <= x}``: id k with probability ``(table[k] - table[k-1]) / 2**62``, i.e.
    ``dist[k] / sum(dist)`` (what ``torch.multinomial(dist)`` samples) to within 2**-62.
    """
    cumulative = np.cumsum(dist.detach().double().cpu().numpy())
    scaled = np.floor(cumulative[:-1] / cumulative[-1] * 2.0**LOG_UNIFORM_BITS)
    return torch.from_numpy(scaled.astype(np.int64))


def log_uniform_words(seed: int, num_draws: int) -> np.ndarray:
    """The 62-bit uniform integers of draws ``0..num_draws-1`` (uint64 array).

    Draw j is ``(hi << 30) | (lo >> 2)`` with hi = element 2j and lo = element 2j + 1 of the
    LOG_UNIFORM stream, row 0.
    """
    elements = np.arange(2 * num_draws, dtype=np.uint64)
    words = philox.draws(seed, philox.STREAM_LOG_UNIFORM, 0, elements).astype(np.uint64)
    return (words[0::2] << np.uint64(LOG_UNIFORM_BITS - 32)) | (words[1::2] >> np.uint64(64 - LOG_UNIFORM_BITS))


def log_uniform_draws(cdf_table: torch.Tensor, seed, num_draws: int) -> torch.Tensor:
    """``num_draws`` ids sampled with replacement from ``multinomial(dist)``; int64 (num_draws,).

    Draw j is ``#{k : cdf_table[k] <= x_j}`` with x_j from ``log_uniform_words``.
    """
    words = torch.from_numpy(log_uniform_words(seed, num_draws).astype(np.int64))
    return torch.searchsorted(cdf_table.cpu(), words, right=True).to(cdf_table.device)


def unique_negatives(draws: torch.Tensor, max_n_samples: int) -> torch.Tensor:
    """The reference's ``draws.unique()[:max_n_samples]``: sorted distinct ids, smallest first."""
    return draws.unique()[:max_n_samples]


def fixed_size_negatives(
    draws: torch.Tensor, num_tries: int, max_n_samples: int, max_id: int, min_id: int
) -> torch.Tensor:
    """Exactly ``max_n_samples`` distinct ids, sorted; fixed shapes only, so no host sync.

    ``draws`` holds ``FIXED_SIZE_DRAWS_PER_TRY * num_tries`` log-uniform draws (the first
    ``num_tries`` are the reference's). K = ``max_n_samples`` ids are chosen in this order:

    1. the distinct ids among the first ``num_tries`` draws, smallest first (so the result equals
       ``unique_negatives`` whenever that one has K ids);
    2. then new ids of the later draws, in order of first appearance;
    3. then, if still short, the smallest ids of ``[min_id, max_id)`` not drawn at all.

    Requires ``max_n_samples <= max_id - min_id``.
    """
    num_draws = draws.shape[0]
    device = draws.device
    values, order = torch.sort(draws, stable=True)
    first = torch.ones(num_draws, dtype=torch.bool, device=device)
    first[1:] = values[1:] != values[:-1]
    # Stable sort: ``order`` at the start of each run of equal values is the first draw of it.
    never = torch.iinfo(torch.int64).max
    priority = torch.where(order < num_tries, values, max_id + order)
    priority = torch.where(first, priority, never)

    fallback = torch.arange(min_id, min_id + max_n_samples, dtype=torch.int64, device=device)
    position = torch.searchsorted(values, fallback).clamp(max=num_draws - 1)
    drawn = values[position] == fallback
    fallback_priority = torch.where(drawn, never, 2 * max_id + num_draws + fallback)

    candidates = torch.cat([values, fallback])
    chosen = torch.topk(torch.cat([priority, fallback_priority]), max_n_samples, largest=False).indices
    return torch.sort(candidates[chosen]).values
