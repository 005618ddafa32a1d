"""The CUDA backend (torch.ops.fastmask_C on CUDA tensors) against fastmask.reference, bit for bit.

Runs only where a GPU is present and fastmask._C was built with CUDA. Without one,
tests/test_cuda_host.py checks the kernels' rules on the host and tools/check_cuda.sh compiles them.
References run on the CPU, except the (4096, 1M) ranks, sorted on the GPU in row chunks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastmask
from fastmask import _backend, ops
from fastmask.reference import masking as ref_masking
from fastmask.reference import philox
from fastmask.reference import ranking as ref_ranking
from fastmask.reference import sampling as ref_sampling

from cuda_cases import MASK_SHAPES, PLM_KEY_TIE, SEEDS, gumbel_logits, item_ids, rank_items, rank_scores, seed_value

pytestmark = pytest.mark.skipif(
    not _backend.available("cuda"), reason="needs a CUDA GPU and fastmask._C built with CUDA"
)

CUDA = torch.device("cuda")
ITEM_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def seed_tensor(key: int) -> torch.Tensor:
    return torch.tensor([seed_value(key)], dtype=torch.int64, device=CUDA)


def on_cuda(op: str, *args):
    """``fastmask.ops.<op>`` forced onto the CUDA backend; checks that it ran there."""
    with fastmask.use_backend("cuda"):
        result = getattr(ops, op)(*args)
    assert ops.last_backend(op) == "cuda"
    return result


def assert_same(got, expected, *context):
    got = got.cpu()
    assert got.dtype == expected.dtype and got.shape == expected.shape, context
    assert torch.equal(got, expected), context


# --------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize("padding_idx", [0, 3])
@pytest.mark.parametrize("dtype", ITEM_DTYPES)
def test_mlm_mask(dtype, padding_idx):
    thresholds = [0, 1, philox.bernoulli_threshold(0.15), philox.bernoulli_threshold(0.5), 2**32 - 1, 2**32]
    for case, (batch, length) in enumerate(MASK_SHAPES + [(0, 5)]):
        ids = item_ids(batch, length, padding_idx, dtype, case)
        for seed in SEEDS:
            threshold = thresholds[(case + seed) % len(thresholds)]
            got = on_cuda("mlm_mask", ids.to(CUDA), seed_tensor(seed), padding_idx, threshold)
            assert_same(got, ref_masking.mlm_mask(ids, seed, padding_idx, threshold), batch, length, seed)


PLM_SETTINGS = [(1 / 6, 5, False), (0.5, 1, False), (1.0, 3, False), (0.05, 2, False), (0.3, 8, False), (1 / 6, 5, True)]


@pytest.mark.parametrize("padding_idx", [0, 3])
@pytest.mark.parametrize("plm_probability,max_span,permute_all", PLM_SETTINGS)
def test_plm_train_masks(padding_idx, plm_probability, max_span, permute_all):
    contexts = ref_masking.plm_context_lengths(plm_probability, max_span)
    for case, (batch, length) in enumerate(MASK_SHAPES + [(0, 5)]):
        ids = item_ids(batch, length, padding_idx, ITEM_DTYPES[case % len(ITEM_DTYPES)], 100 + case)
        for seed in SEEDS[case % 2 :: 2]:
            got = on_cuda("plm_train_masks", ids.to(CUDA), seed_tensor(seed), padding_idx, max_span, contexts,
                          permute_all)
            expected = ref_masking.plm_train_masks(ids, seed, padding_idx, max_span, contexts, permute_all)
            for name, g, e in zip(("mask", "perm_mask", "target_mapping"), got, expected):
                assert_same(g, e, name, batch, length, seed)


@pytest.mark.parametrize("permute_all", [True, False])
def test_plm_order_key_tie(permute_all):
    seed, (batch, length) = PLM_KEY_TIE["seed"], PLM_KEY_TIE["shape"]
    ids = torch.arange(1, batch * length + 1).reshape(batch, length)
    contexts = ref_masking.plm_context_lengths(0.5, 5)
    got = on_cuda("plm_train_masks", ids.to(CUDA), seed_tensor(seed), 0, 5, contexts, permute_all)
    for g, e in zip(got, ref_masking.plm_train_masks(ids, seed, 0, 5, contexts, permute_all)):
        assert_same(g, e)


@pytest.mark.parametrize("padding_idx", [0, 3])
def test_plm_eval_perm_mask(padding_idx):
    for case, (batch, length) in enumerate(MASK_SHAPES + [(0, 5)]):
        ids = item_ids(batch, length, padding_idx, ITEM_DTYPES[case % len(ITEM_DTYPES)], 200 + case)
        got = on_cuda("plm_eval_perm_mask", ids.to(CUDA), padding_idx)
        assert_same(got, ref_masking.plm_eval_perm_mask(ids, padding_idx), batch, length)


def test_masking_empty_rows():
    """L = 0 (where the reference itself fails): empty results, as from the C++ CPU ops."""
    ids = torch.empty(4, 0, dtype=torch.int64, device=CUDA)
    assert on_cuda("mlm_mask", ids, seed_tensor(1), 0, 100).shape == (4, 0)
    shapes = [t.shape for t in on_cuda("plm_train_masks", ids, seed_tensor(1), 0, 5,
                                       ref_masking.plm_context_lengths(1 / 6, 5), False)]
    assert shapes == [(4, 0), (4, 0, 0), (4, 0, 0)]
    assert on_cuda("plm_eval_perm_mask", ids, 0).shape == (4, 0, 0)


def test_masking_full_shape():
    """B = 512, L = 200: every row layout, many rows per block and grid."""
    ids = item_ids(512, 200, 0, torch.int64, 7)
    contexts = ref_masking.plm_context_lengths(1 / 6, 5)
    for seed in SEEDS[2:4]:
        got = on_cuda("mlm_mask", ids.to(CUDA), seed_tensor(seed), 0, philox.bernoulli_threshold(0.15))
        assert_same(got, ref_masking.mlm_mask(ids, seed, 0, philox.bernoulli_threshold(0.15)), seed)
        for permute_all in (False, True):
            got = on_cuda("plm_train_masks", ids.to(CUDA), seed_tensor(seed), 0, 5, contexts, permute_all)
            expected = ref_masking.plm_train_masks(ids, seed, 0, 5, contexts, permute_all)
            for name, g, e in zip(("mask", "perm_mask", "target_mapping"), got, expected):
                assert_same(g, e, name, seed, permute_all)
    assert_same(on_cuda("plm_eval_perm_mask", ids.to(CUDA), 0), ref_masking.plm_eval_perm_mask(ids, 0))


def test_masking_non_contiguous_input():
    wide = item_ids(9, 66, 0, torch.int64, 3)
    ids = wide[:, ::2]
    got = on_cuda("mlm_mask", ids.to(CUDA), seed_tensor(5), 0, philox.bernoulli_threshold(0.3))
    assert_same(got, ref_masking.mlm_mask(ids, 5, 0, philox.bernoulli_threshold(0.3)))
    cuda_ids = wide.to(CUDA)[:, ::2]
    assert not cuda_ids.is_contiguous()
    got = on_cuda("plm_train_masks", cuda_ids, seed_tensor(5), 0, 5, ref_masking.plm_context_lengths(1 / 6, 5), False)
    expected = ref_masking.plm_train_masks(ids, 5, 0, 5, ref_masking.plm_context_lengths(1 / 6, 5), False)
    for g, e in zip(got, expected):
        assert_same(g, e)


# --------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gumbel_argmax(dtype):
    rng = np.random.default_rng(7)
    for case, vocab in enumerate([1, 2, 3, 4, 5, 7, 17, 64, 1000, 4097, 70_000]):
        logits = torch.from_numpy(gumbel_logits(vocab, rng)).to(dtype)
        for seed in SEEDS[case % 3 :: 2]:
            got = on_cuda("gumbel_argmax", logits.to(CUDA), seed_tensor(seed))
            assert_same(got, ref_sampling.gumbel_argmax(logits, seed), dtype, vocab, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gumbel_argmax_few_long_rows(dtype):
    """Few rows and a long vocabulary: each row is split over many blocks and combined."""
    logits = torch.from_numpy(np.random.default_rng(1).normal(scale=3.0, size=(3, 600_001))).to(dtype)
    logits[2, 123_457] = float("nan")  # the NaN of a later block must still win
    for seed in SEEDS[:3]:
        got = on_cuda("gumbel_argmax", logits.to(CUDA), seed_tensor(seed))
        assert_same(got, ref_sampling.gumbel_argmax(logits, seed), seed)
        assert got[2].item() == 123_457


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gumbel_argmax_full_shape(dtype):
    """P = 4096, V = 100k. The reference's float64 noise takes a few minutes on the CPU."""
    logits = torch.randn(4096, 100_000, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = on_cuda("gumbel_argmax", logits.to(CUDA), seed_tensor(SEEDS[2]))
    assert_same(got, ref_sampling.gumbel_argmax(logits, SEEDS[2]))


# --------------------------------------------------------------------------------------------
# Ranks


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_target_ranks(dtype):
    rng = np.random.default_rng(11)
    for vocab in (1, 2, 5, 33, 300, 2049, 100_003):
        for targets in (1, 3, 8, 9, 17):
            scores = torch.from_numpy(rank_scores(6, vocab, rng)).to(dtype)
            items = rank_items(6, targets, vocab, rng)
            got = on_cuda("target_ranks", scores.to(CUDA), items.to(CUDA))
            assert_same(got, ref_ranking.target_ranks(scores, items), dtype, vocab, targets)


def test_target_ranks_empty():
    scores = torch.randn(3, 10, device=CUDA)
    assert on_cuda("target_ranks", scores, torch.empty(3, 0, dtype=torch.int64, device=CUDA)).shape == (3, 0)
    assert on_cuda("target_ranks", scores[:0], torch.empty(0, 2, dtype=torch.int64, device=CUDA)).shape == (0, 2)


def _chunked_reference_ranks(scores: torch.Tensor, items: torch.Tensor, rows_per_chunk: int = 256) -> torch.Tensor:
    return torch.cat([
        ref_ranking.target_ranks(scores[first : first + rows_per_chunk], items[first : first + rows_per_chunk])
        for first in range(0, scores.shape[0], rows_per_chunk)
    ])


def test_target_ranks_full_shape():
    """N = 4096, V = 1M float32 (16 GB): one block per row; the first 64 rows are all ties."""
    gen = torch.Generator(device=CUDA).manual_seed(0)
    scores = torch.randn(4096, 1_000_000, device=CUDA, generator=gen)
    scores[:64] = torch.randint(-50, 50, (64, 1_000_000), device=CUDA, generator=gen).float()
    items = torch.randint(-1, 1_000_000, (4096, 3), device=CUDA, generator=gen)
    got = on_cuda("target_ranks", scores, items)
    assert torch.equal(got, _chunked_reference_ranks(scores, items))


def test_target_ranks_few_long_rows():
    """Few rows of V = 1M: each row is split over many blocks whose counts are added atomically."""
    gen = torch.Generator(device=CUDA).manual_seed(1)
    scores = torch.randint(-20, 20, (4, 1_000_000), device=CUDA, generator=gen).to(torch.bfloat16)
    scores[1, ::1000] = float("nan")
    items = torch.randint(-1, 1_000_000, (4, 11), device=CUDA, generator=gen)
    got = on_cuda("target_ranks", scores, items)
    assert torch.equal(got, ref_ranking.target_ranks(scores, items))


# --------------------------------------------------------------------------------------------
# Seeds on the device: CUDA graph replays draw fresh values


def test_graph_replay_reads_the_seed_on_the_device():
    ids = item_ids(64, 50, 0, torch.int64, 9).to(CUDA)
    logits = torch.randn(32, 5000, device=CUDA)
    contexts = ref_masking.plm_context_lengths(1 / 6, 5)
    threshold = philox.bernoulli_threshold(0.15)
    seed = seed_tensor(SEEDS[0])

    def run():
        return (torch.ops.fastmask_C.mlm_mask(ids, seed, 0, threshold),
                torch.ops.fastmask_C.plm_train_masks(ids, seed, 0, 5, contexts, False),
                torch.ops.fastmask_C.gumbel_argmax(logits, seed))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mlm, plm, samples = run()
    for key in SEEDS[1:]:
        seed.fill_(seed_value(key))
        graph.replay()
        torch.cuda.synchronize()
        assert_same(mlm, ref_masking.mlm_mask(ids.cpu(), key, 0, threshold), key)
        for g, e in zip(plm, ref_masking.plm_train_masks(ids.cpu(), key, 0, 5, contexts, False)):
            assert_same(g, e, key)
        assert_same(samples, ref_sampling.gumbel_argmax(logits.cpu(), key), key)


# --------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing launched


def test_bad_input_raises():
    ids = torch.ones(2, 5, dtype=torch.int64, device=CUDA)
    seed = seed_tensor(1)
    contexts = ref_masking.plm_context_lengths(1 / 6, 5)
    lib = torch.ops.fastmask_C
    with pytest.raises(TypeError, match="item_ids"):
        lib.mlm_mask(ids.float(), seed, 0, 10)
    with pytest.raises(ValueError, match="seed"):
        lib.mlm_mask(ids, seed.cpu(), 0, 10)
    with pytest.raises(ValueError, match="threshold"):
        lib.mlm_mask(ids, seed, 0, 2**32 + 1)
    with pytest.raises(ValueError, match="padding_idx"):
        lib.mlm_mask(ids.to(torch.uint8), seed, 300, 10)
    with pytest.raises(ValueError, match="max_span_length"):
        lib.plm_train_masks(ids, seed, 0, 300, ref_masking.plm_context_lengths(1.0, 300), False)
    with pytest.raises(ValueError, match="context_lengths"):
        lib.plm_train_masks(ids, seed, 0, 5, contexts[:-1], False)
    with pytest.raises(ValueError, match="context_lengths"):
        lib.plm_train_masks(ids, seed, 0, 5, [0, 0, 1, 2, 3, 4], False)
    with pytest.raises(ValueError, match="logits"):
        lib.gumbel_argmax(torch.empty(3, 0, device=CUDA), seed)
    with pytest.raises(TypeError, match="logits"):
        lib.gumbel_argmax(ids, seed)
    with pytest.raises(TypeError, match="items"):
        lib.target_ranks(torch.randn(2, 5, device=CUDA), torch.zeros(2, 1, dtype=torch.int32, device=CUDA))
    with pytest.raises(ValueError, match="scores"):
        lib.target_ranks(torch.randn(2, 5), torch.zeros(2, 1, dtype=torch.int64, device=CUDA))
