"""Triton kernels of fastmask, installed as ``fastmask.triton_kernels``.

One launcher per op, named and called like the op in ``fastmask.ops`` (which checks the arguments and
dispatches here for the "triton" backend). Without a GPU the kernels run under ``TRITON_INTERPRET=1``,
which must be set before this package is imported.
"""
from .hidden import (
    count_ahead_from_hidden,
    gumbel_argmax_from_hidden,
    target_ranks_from_hidden,
    target_scores_from_hidden,
    topk_from_hidden,
)
from .masking import (
    clm_last_item_targets,
    last_item_targets,
    mlm_inference_targets,
    mlm_train,
    next_item_targets,
    plm_eval,
    plm_train,
)
from .ranking import target_ranks
from .sampling import gumbel_argmax
from .sequence import bert4rec_mask, log_uniform_draws, merlin_mask_random

__all__ = [
    "mlm_train",
    "plm_train",
    "plm_eval",
    "next_item_targets",
    "last_item_targets",
    "clm_last_item_targets",
    "mlm_inference_targets",
    "gumbel_argmax",
    "target_ranks",
    "merlin_mask_random",
    "bert4rec_mask",
    "log_uniform_draws",
    "target_ranks_from_hidden",
    "topk_from_hidden",
    "gumbel_argmax_from_hidden",
    "target_scores_from_hidden",
    "count_ahead_from_hidden",
]
