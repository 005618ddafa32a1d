"""Pure-PyTorch implementations of every fastmask rule: the oracles the kernels are proven against."""
from . import hidden, masking, philox, ranking, sampling

__all__ = ["hidden", "masking", "philox", "ranking", "sampling"]
