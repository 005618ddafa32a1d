"""Property-based parity: every available backend equals the reference bit-for-bit on drawn inputs."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmask
from fastmask import _backend, ops
from fastmask.reference import masking as rules
from fastmask.reference import philox, ranking, sampling

from helpers import assert_same, seed_tensor

KERNEL_BACKENDS = [name for name in ("cpp", "triton") if _backend.functions(name, "cpu") is not None]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.skipif(not KERNEL_BACKENDS, reason="no kernel backend built here")


@st.composite
def item_batches(draw):
    batch = draw(st.integers(1, 6))
    length = draw(st.integers(1, 24))
    padding_idx = draw(st.sampled_from([0, 3]))
    dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    pad_rate = draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    right_padded = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(1, 50, size=(batch, length))
    ids[ids == padding_idx] = padding_idx + 1
    if right_padded:
        lengths = rng.integers(0, length + 1, size=batch) if pad_rate else np.full(batch, length)
        ids[np.arange(length)[None, :] >= lengths[:, None]] = padding_idx
    else:
        ids[rng.random((batch, length)) < pad_rate] = padding_idx
    return torch.from_numpy(ids).to(dtype), padding_idx


seeds = st.integers(0, 2**64 - 1)


def _assert_mlm_rules(mask, ids, padding_idx):
    nonpad = ids != padding_idx
    count, targets = nonpad.sum(1), mask.sum(1)
    assert not (mask & ~nonpad).any()
    assert (targets[count >= 2] >= 1).all() and ((targets < count) | (count == 0)).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(batch=item_batches(), seed=seeds, p=st.floats(0.01, 1.0))
def test_mlm_mask_parity(backend, batch, seed, p):
    ids, padding_idx = batch
    threshold = philox.bernoulli_threshold(p)
    with fastmask.use_backend(backend):
        got = ops.mlm_train(ids, seed_tensor(seed), padding_idx, threshold)
    assert_same(got, rules.mlm_train(ids, seed, padding_idx, threshold))
    _assert_mlm_rules(got[0], ids, padding_idx)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(
    batch=item_batches(), seed=seeds, max_span=st.integers(1, 6),
    prob=st.floats(0.05, 1.0), permute_all=st.booleans(),
)
def test_plm_train_parity(backend, batch, seed, max_span, prob, permute_all):
    ids, padding_idx = batch
    contexts = rules.plm_context_lengths(prob, max_span)
    with fastmask.use_backend(backend):
        got = ops.plm_train(ids, seed_tensor(seed), padding_idx, max_span, contexts, permute_all)
    assert_same(got, rules.plm_train(ids, seed, padding_idx, max_span, contexts, permute_all))
    mask, perm = got[0], got[2].bool()
    assert not (mask & (ids == padding_idx)).any()
    assert not (perm & ~mask[:, None, :]).any()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(batch=item_batches())
def test_plm_eval_parity(backend, batch):
    ids, padding_idx = batch
    with fastmask.use_backend(backend):
        got = ops.plm_eval(ids, padding_idx)
    assert_same(got, rules.plm_eval(ids, padding_idx))


@st.composite
def logit_rows(draw):
    rows, vocab = draw(st.integers(1, 4)), draw(st.integers(1, 300))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 1.0, 30.0]))
    values = rng.standard_normal((rows, vocab)) * scale
    if draw(st.booleans()):  # ties, -inf and NaN
        values = np.round(values)
        values[rng.random((rows, vocab)) < 0.1] = -np.inf
        if draw(st.booleans()):
            values[rng.random((rows, vocab)) < 0.02] = np.nan
    return torch.from_numpy(values).to(dtype)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(logits=logit_rows(), seed=seeds)
def test_gumbel_parity(backend, logits, seed):
    with fastmask.use_backend(backend):
        got = ops.gumbel_argmax(logits, seed_tensor(seed))
    assert_same(got, sampling.gumbel_argmax(logits, seed))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(scores=logit_rows(), data=st.data())
def test_target_ranks_parity(backend, scores, data):
    rows, vocab = scores.shape
    items = torch.tensor(
        data.draw(st.lists(st.lists(st.integers(-1, vocab - 1), min_size=3, max_size=3), min_size=rows, max_size=rows))
    )
    with fastmask.use_backend(backend):
        got = ops.target_ranks(scores, items)
    assert_same(got, ranking.target_ranks(scores, items))
