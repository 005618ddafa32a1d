"""torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch) for every op on CPU."""
import pytest
import torch

import fastmask
from fastmask import _backend
from fastmask.reference.masking import plm_context_lengths
from fastmask.reference.philox import bernoulli_threshold

OPS = ("mlm_mask", "plm_train_masks", "plm_eval_perm_mask", "gumbel_argmax", "target_ranks")


def samples(op):
    """Argument tuples for `op`: odd sizes, padding in several places, int32 and int64 ids."""
    generator = torch.Generator().manual_seed(3)
    seed = torch.tensor([2**40 + 3], dtype=torch.int64)
    ids = torch.randint(1, 50, (5, 7), generator=generator)
    ids[0, 4:] = 0
    ids[1, :2] = 0
    ids[2] = 0
    ids32 = ids.int()
    if op == "mlm_mask":
        return [(ids, seed, 0, bernoulli_threshold(0.3)), (ids32, seed, 0, bernoulli_threshold(1.0))]
    if op == "plm_train_masks":
        return [(ids, seed, 0, 5, plm_context_lengths(1 / 6, 5), False),
                (ids32, seed, 0, 2, plm_context_lengths(0.5, 2), True)]
    if op == "plm_eval_perm_mask":
        return [(ids, 0), (ids32, 3)]
    if op == "gumbel_argmax":
        logits = torch.randn(3, 301, generator=generator)
        return [(logits, seed), (logits.half(), seed), (logits.double(), seed)]
    scores = torch.randint(0, 4, (4, 97), generator=generator).float()
    items = torch.tensor([[0, -1], [5, 96], [-1, -1], [3, 3]])
    return [(scores, items), (scores.bfloat16(), items[:, :1])]


def backends_here():
    return [name for name in ("reference", "cpp") if _backend.available(name)]


@pytest.mark.parametrize("op", OPS)
def test_opcheck_compiled_op(op):
    if _backend.compiled_extension() is None:
        pytest.skip("fastmask._C is not built")
    for args in samples(op):
        torch.library.opcheck(getattr(torch.ops.fastmask_C, op).default, args)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("op", OPS)
def test_opcheck_fastmask_op(op, backend):
    if backend not in backends_here():
        pytest.skip(f"backend {backend} is not available")
    with fastmask.use_backend(backend):
        for args in samples(op):
            torch.library.opcheck(getattr(torch.ops.fastmask, op).default, args)
        assert fastmask.ops.last_backend(op) == backend
