"""Reference Gumbel-max sampling: the oracle of the fused sampling kernels.

Row p, column j: ``g = -log(-log((draw(GUMBEL, p, j) + 0.5) * 2**-32))`` in float64, rounded once
to float32; the sample is the argmax of ``float32(logits) + g`` in float32 arithmetic, the first
index winning ties and the first NaN winning outright (``torch.argmax``'s rule). The float64 noise
rounded once is what makes it bit-identical across libm, CUDA and Triton.
"""
from __future__ import annotations

import numpy as np
import torch

from . import philox

_ROWS_PER_CHUNK = 64  # bounds the float64 noise temporaries


def gumbel_noise(seed: int, rows: np.ndarray, columns: int) -> torch.Tensor:
    """float32 Gumbel noise of shape (len(rows), columns)."""
    words = philox.draws(seed, philox.STREAM_GUMBEL, rows[:, None], np.arange(columns, dtype=np.uint64)[None, :])
    uniform = (words.astype(np.float64) + 0.5) * 2.0**-32
    return torch.from_numpy((-np.log(-np.log(uniform))).astype(np.float32))


def gumbel_argmax(logits: torch.Tensor, seed) -> torch.Tensor:
    """One categorical sample per row of ``logits`` (P, V) from softmax(logits); int64 (P,)."""
    seed = philox.seed_value(seed)
    num_rows, vocab = logits.shape
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    for first in range(0, num_rows, _ROWS_PER_CHUNK):
        rows = np.arange(first, min(first + _ROWS_PER_CHUNK, num_rows), dtype=np.uint64)
        noise = gumbel_noise(seed, rows, vocab).to(logits.device)
        out[first : first + len(rows)] = torch.argmax(logits[first : first + len(rows)].float() + noise, dim=1)
    return out
