"""Pure-PyTorch implementations of every fastmask rule: the oracles the kernels are proven against."""
from . import masking, philox, ranking, sampling

__all__ = ["masking", "philox", "ranking", "sampling"]
