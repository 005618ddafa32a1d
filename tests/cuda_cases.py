"""Inputs shared by the CUDA backend tests (tests/test_cuda_host.py, tests/test_cuda_ops.py)."""
from __future__ import annotations

import numpy as np
import torch

# Philox keys, including ones with the top bit set (negative as an int64 seed tensor).
SEEDS = [0, 1, 0x243F6A8885A308D3, 2**63 + 5, 2**64 - 1]
# Under this key, row 3 of a (8, 64) batch draws the same factorisation-order key at positions 3
# and 42 (found by search), so its perm_mask depends on the index tie-break.
PLM_KEY_TIE = {"seed": 169481, "shape": (8, 64), "row": 3, "positions": (3, 42)}
MASK_SHAPES = [(1, 1), (3, 1), (2, 2), (5, 7), (6, 31), (4, 32), (7, 33), (9, 64), (3, 100), (2, 257)]


def seed_value(key: int) -> int:
    """The int64 value whose 64 bits are the Philox key ``key``."""
    return key - 2**64 if key >= 2**63 else key


def item_ids(batch: int, length: int, padding_idx: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Ids in [0, 6) (0 is a real item when padding_idx != 0) with padding anywhere in a row.

    Row 0 is all padding, row 1 holds one item (at a random place), the others mix padding rates.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, size=(batch, length))
    ids[ids == padding_idx] = (padding_idx + 1) % 6
    pad_rate = rng.choice([0.0, 0.2, 0.5, 0.9, 1.0], size=(batch, 1))
    pad = rng.random((batch, length)) < pad_rate
    if batch > 0:
        pad[0] = True
    if batch > 1 and length > 0:
        pad[1] = True
        pad[1, rng.integers(length)] = False
    ids[pad] = padding_idx
    return torch.from_numpy(ids).to(dtype)


def special_logits(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Rows that exercise the argmax rules: NaN first wins, +inf ties, all -inf, huge spreads."""
    rows = [np.full(vocab, -np.inf), np.full(vocab, 1.5)]
    with_nan = rng.normal(size=vocab)
    with_nan[rng.integers(vocab, size=2)] = np.nan
    rows.append(with_nan)
    with_inf = rng.normal(size=vocab)
    with_inf[rng.integers(vocab, size=3)] = np.inf
    rows.append(with_inf)
    nan_and_inf = np.full(vocab, np.inf)
    nan_and_inf[-1] = np.nan
    rows.append(nan_and_inf)
    rows.append(rng.normal(scale=30.0, size=vocab))
    rows.append(rng.normal(scale=1e-3, size=vocab) + 1e4)
    return np.stack(rows)


def gumbel_logits(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Plain rows at three temperatures, then the special rows."""
    return np.concatenate([rng.normal(size=(3, vocab)) * [[0.1], [1.0], [8.0]], special_logits(vocab, rng)])


def rank_scores(rows: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Ties (small integers), signed zeros, NaNs and infinities; row 0 has none of them."""
    scores = rng.integers(-3, 4, size=(rows, vocab)).astype(np.float64)
    scores[scores == 0] = rng.choice([0.0, -0.0], size=int((scores == 0).sum()))
    scores[rng.random((rows, vocab)) < 0.05] = np.nan
    scores[rng.random((rows, vocab)) < 0.03] = np.inf
    scores[rng.random((rows, vocab)) < 0.03] = -np.inf
    scores[0] = rng.normal(size=vocab)
    return scores


def rank_items(rows: int, targets: int, vocab: int, rng: np.random.Generator) -> torch.Tensor:
    """Item columns in [0, vocab), with -1 (no item) and other items outside the row (also none) mixed in."""
    items = torch.from_numpy(rng.integers(-1, vocab, size=(rows, targets)))
    items[torch.from_numpy(rng.random((rows, targets)) < 0.1)] = -7
    items[torch.from_numpy(rng.random((rows, targets)) < 0.05)] = vocab
    return items
