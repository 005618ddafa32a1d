"""Philox-4x32-10 and the counter layout shared by every fastmask backend.

This module is the single definition of fastmask's random stream. The C++ header
``csrc/philox.h``, the CUDA kernels and the Triton kernels (``tl.philox``) compute the
same function; tests compare them bit-for-bit.

Draw ``element`` of stream ``stream`` for row ``row`` under a 64-bit ``seed``::

    words = philox4x32_10(key=(seed & 0xFFFFFFFF, seed >> 32),
                          counter=(element >> 2, row, stream, 0))
    draw  = words[element & 3]

Every value is a uint32. Decisions are integer-only so that all backends agree:

* ``bernoulli(p)``: ``draw < bernoulli_threshold(p)`` with ``floor(p * 2**32)`` computed once.
* ``uniform_below(n)`` (an integer in ``[0, n)``): ``(draw * n) >> 32`` in 64-bit math.
* the Gumbel noise is computed in float64 and rounded once to float32 (see ``sampling.py``).
"""
from __future__ import annotations

import numpy as np

PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUNDS = 10

# Stream tags: counter word 2. One per kind of draw, so no two draws ever share a counter.
STREAM_MLM_BERNOULLI = 1  # element t: position t of the row
STREAM_MLM_FORCE = 2  # element 0: which non-pad position is forced to be a target
STREAM_MLM_UNMASK = 3  # element 0: which target is dropped when every non-pad item is one
STREAM_PLM_SPAN = 4  # element 2k: length of span k; element 2k+1: its start offset
STREAM_PLM_FORCE = 5  # element 0: position forced when the span walk masked nothing
STREAM_PLM_UNMASK = 6  # element 0: target dropped when every non-pad item is one
STREAM_PLM_PERM = 7  # element t: 32-bit permutation key of position t
STREAM_GUMBEL = 8  # element j: noise of vocabulary column j (row = logits row)
# Streams 9-14 belong to the sequence-masking policies and the sampler (fastmask.sequence):
# their element layouts are documented next to their reference rules.
STREAM_MERLIN_BERNOULLI = 9
STREAM_MERLIN_RESET = 10
STREAM_BERT4REC_MASK = 11
STREAM_BERT4REC_NEGATIVE = 12
STREAM_LOG_UNIFORM = 13
STREAM_BERT4REC_FINE_TUNE = 14

_MASK32 = np.uint64(0xFFFFFFFF)


def _mulhilo(a: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prod = np.uint64(a) * b
    return prod >> np.uint64(32), prod & _MASK32


def philox4x32(seed: int, c0, c1, c2, c3) -> tuple[np.ndarray, ...]:
    """Philox-4x32-10 of counters ``(c0, c1, c2, c3)`` (broadcast arrays) under a 64-bit seed.

    Identical to Triton's ``tl.philox`` with 32-bit counters: key = (low, high) half of seed.
    """
    seed = seed_value(seed)
    k0 = np.uint64(seed & 0xFFFFFFFF)
    k1 = np.uint64(seed >> 32)
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + np.uint64(PHILOX_KEY_A)) & _MASK32
        k1 = (k1 + np.uint64(PHILOX_KEY_B)) & _MASK32
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def draws(seed: int, stream: int, row, element) -> np.ndarray:
    """uint32 draw ``element`` of ``stream`` for ``row`` (``row`` and ``element`` broadcast)."""
    row = np.asarray(row, dtype=np.uint64)
    element = np.asarray(element, dtype=np.uint64)
    words = philox4x32(seed, element >> np.uint64(2), row, stream, 0)
    which = (element & np.uint64(3)).astype(np.int64)
    return np.choose(np.broadcast_to(which, words[0].shape), words).astype(np.uint32)


def seed_value(seed) -> int:
    """The 64-bit Philox key of ``seed``: a Python int, or an int64 tensor holding one value (the ops'
    form, read back to the host here)."""
    value = int(seed) if isinstance(seed, (int, np.integer)) else int(seed.reshape(-1)[0].item())
    return value & 0xFFFFFFFFFFFFFFFF


def uniform_below(word, n) -> np.ndarray:
    """Integer in ``[0, n)`` from a uint32 draw: ``(word * n) >> 32`` (``n < 2**32``)."""
    return (np.asarray(word, dtype=np.uint64) * np.asarray(n, dtype=np.uint64)) >> np.uint64(32)


def bernoulli_threshold(p: float) -> int:
    """``draw < threshold`` happens with probability ``p`` (to 2**-32)."""
    return min(int(float(p) * 2.0**32), 2**32)
