"""The op layer: the same behaviour on every backend, schemas, fakes and dispatch."""
import os

import pytest
import torch

import fastmask
from fastmask import ops

# Triton runs CPU tensors only under its interpreter.
CPU_BACKENDS = [
    name for name in fastmask.backends()
    if name != "cuda" and (name != "triton" or os.environ.get("TRITON_INTERPRET") == "1")
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_target_ranks_item_range_on_every_backend(backend):
    scores = torch.tensor([[0.5, 2.0, 1.0, 2.0]])
    with fastmask.use_backend(backend):
        with pytest.raises(ValueError, match="items must be item ids below V = 4"):
            ops.target_ranks(scores, torch.tensor([[4]]))
        ranks = ops.target_ranks(scores, torch.tensor([[3, -1, -7, 0]]))
        unchecked = ops.target_ranks(scores, torch.tensor([[4, 1, 9]]), check_items=False)
    assert ranks.tolist() == [[1, -1, -1, 3]]
    assert unchecked.tolist() == [[-1, 0, -1]]
    assert ops.last_backend("target_ranks") == backend


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_masking_ops_take_any_padding_idx_their_ids_dtype_holds(backend):
    ids = torch.tensor([[5, -1, 7, -1], [-1, -1, -1, 3]], dtype=torch.int8)
    seed = torch.tensor([9])
    with fastmask.use_backend(backend):
        mask = ops.mlm_mask(ids, seed, -1, 2**31)
        perm = ops.plm_eval_perm_mask(ids, -128)
        for padding_idx, dtype in ((128, torch.int8), (-129, torch.int8), (256, torch.uint8), (-1, torch.uint8)):
            with pytest.raises(ValueError, match=f"padding_idx={padding_idx} does not fit the dtype of item_ids"):
                ops.mlm_mask(ids.to(dtype), seed, padding_idx, 2**31)
    with fastmask.use_backend("reference"):
        assert torch.equal(mask, ops.mlm_mask(ids, seed, -1, 2**31))
        assert torch.equal(perm, ops.plm_eval_perm_mask(ids, -128))
    assert not mask[ids == -1].any() and mask[0].any()  # padding is never a target; row 0 has one


def test_ops_trace_under_compile():
    ids = torch.tensor([[3, 4, 0], [5, 0, 0]])
    seed = torch.tensor([11])

    @torch.compile(fullgraph=True, backend="eager")
    def step(ids, seed):
        mask = ops.mlm_mask(ids, seed, 0, 2**31)
        return torch.where(mask, ids, 0), ops.plm_eval_perm_mask(ids, 0)

    targets, perm = step(ids, seed)
    assert torch.equal(perm, ops.plm_eval_perm_mask(ids, 0))
    assert torch.equal(targets, torch.where(ops.mlm_mask(ids, seed, 0, 2**31), ids, 0))
