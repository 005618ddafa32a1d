"""Triton kernels of fastmask, installed as ``fastmask.triton_kernels``.

One launcher per op, named and called like the op (``fastmask.ops`` dispatches here for the
"triton" backend). Without a GPU the kernels run under ``TRITON_INTERPRET=1``, which must be set
before this package is imported.
"""
from .masking import mlm_mask, plm_eval_perm_mask, plm_train_masks
from .ranking import target_ranks
from .sampling import gumbel_argmax
from .sequence import bert4rec_mask, log_uniform_draws, merlin_mask_random  # noqa: F401

__all__ = ["mlm_mask", "plm_train_masks", "plm_eval_perm_mask", "gumbel_argmax", "target_ranks"]
