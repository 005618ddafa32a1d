"""The ops of the other sequence-masking systems and of the log-uniform sampler, on every kernel backend,
equal the reference bit for bit."""
import numpy as np
import pytest
import torch

from fastmask.reference import philox
from fastmask.reference import sequence as rules
from fastmask.reference.philox import bernoulli_threshold

from helpers import assert_matches_reference, assert_same, on_cpu, run_op, seed_tensor


def random_ids(batch, length, high, padding_rate=0.3, generator_seed=0, dtype=torch.int64):
    """Ids in [1, high) with padding (0) scattered anywhere, some right-padded rows, the last row empty."""
    g = torch.Generator().manual_seed(generator_seed)
    ids = torch.randint(1, high, (batch, length), generator=g)
    ids[torch.rand(batch, length, generator=g) < padding_rate] = 0
    if batch > 2:
        lengths = torch.randint(0, length + 1, (batch // 3,), generator=g)
        positions = torch.arange(length)
        ids[: batch // 3][positions[None, :] >= lengths[:, None]] = 0
        ids[-1] = 0
    return ids.to(dtype)


def merlin_cases(interpreted):
    shapes = [(0, 5), (3, 0), (1, 1), (3, 5), (5, 7), (4, 32), (2, 4)]
    if not interpreted:
        shapes += [(97, 513), (4096, 200)]
    for dtype in (torch.int64, torch.int32):
        for batch, length in shapes:
            yield random_ids(batch, length, 6, generator_seed=batch * 31 + length, dtype=dtype)


def test_merlin_mask_random(backend):
    for ids in merlin_cases(backend.interpreted):
        for seed, probability in [(0, 0.2), (2**63 - 5, 0.7), (12345, 1.0)]:
            for reset_any in (False, True):
                assert_matches_reference(backend, "merlin_mask_random", ids, seed_tensor(seed), 0,
                                         bernoulli_threshold(probability), reset_any,
                                         context=(tuple(ids.shape), seed, probability, reset_any))
    padded_with_5 = torch.tensor([[5, 1, 5, 2], [3, 5, 5, 5]])
    assert_matches_reference(backend, "merlin_mask_random", padded_with_5, seed_tensor(3), 5, 2**31, True)
    strided = random_ids(6, 10, 6, generator_seed=9)[:, ::2]
    assert_matches_reference(backend, "merlin_mask_random", strided, seed_tensor(4), 0, 2**31, False)


def bert4rec_cases(interpreted):
    cases = [(0, 5, 9), (3, 0, 9), (1, 1, 2), (3, 5, 4), (5, 7, 1000), (4, 32, 7), (2, 4, 3)]
    if not interpreted:
        cases += [(9, 97, 6), (2048, 200, 5000)]
    for dtype in (torch.int64, torch.int32):
        for batch, length, n_items in cases:
            yield random_ids(batch, length, n_items, generator_seed=batch + length, dtype=dtype), n_items


def bert4rec_lengths(ids, generator_seed):
    """Lengths in [0, L] (RecBole's item_seq_len need not match the padding), and some outside it."""
    batch, length = ids.shape
    g = torch.Generator().manual_seed(generator_seed)
    lengths = torch.randint(0, length + 1, (batch,), generator=g)
    if batch > 3:
        lengths[:4] = torch.tensor([0, length, -1, length + 1])
    return lengths


def test_bert4rec_mask(backend):
    assert not rules.bert4rec_fine_tune_batch(1, 2**31) and rules.bert4rec_fine_tune_batch(77, 2**31)
    for ids, n_items in bert4rec_cases(backend.interpreted):
        lengths = bert4rec_lengths(ids, ids.shape[0] * 7 + ids.shape[1])
        # ft_threshold 0: a random batch; 2^32: a last-item batch; 2^31: seed 1 draws a random batch (with
        # lengths, which it does not read), seed 77 a last-item one.
        for seed, ratio, ft_args in [(1, 0.2, (lengths, 2**31)), (2**63 - 9, 0.6, (None, 2**32)),
                                     (77, 1.0, (lengths, 2**31))]:
            width = max(1, int(ratio * max(ids.shape[1], 1)))
            for item_seq_len, ft_threshold in [(None, 0), ft_args]:
                assert_matches_reference(backend, "bert4rec_mask", ids, item_seq_len, seed_tensor(seed), n_items,
                                         bernoulli_threshold(ratio), width, ft_threshold,
                                         context=(tuple(ids.shape), n_items, seed, ft_threshold))
    strided = random_ids(6, 10, 9, generator_seed=9)[:, ::2]
    for ft_threshold in (0, 2**32):
        assert_matches_reference(backend, "bert4rec_mask", strided, None, seed_tensor(4), 9, 2**31, 2, ft_threshold)
        assert_matches_reference(backend, "bert4rec_mask", strided, torch.arange(12)[::2], seed_tensor(4), 9, 2**31, 2,
                                 ft_threshold)
    # The fallback scan: only item 20 of [1, 40) is missing from the rows.
    rows = torch.cat([torch.arange(1, 20), torch.arange(21, 40)]).repeat(2, 1)
    negatives = assert_matches_reference(backend, "bert4rec_mask", rows, None, seed_tensor(5), 40, 2**32, 3, 0)[2]
    assert negatives.tolist() == [[20, 20, 20]] * 2
    last_item = assert_matches_reference(backend, "bert4rec_mask", rows, torch.tensor([5, 0]), seed_tensor(5), 40, 0, 3,
                                         2**32)
    assert last_item[2].tolist() == [[0, 0, 20]] * 2 and last_item[3].tolist() == [[0, 0, 4], [0, 0, -1]]


def test_bert4rec_batch_choice_is_draw_below_ft_threshold(any_backend):
    """A batch is a last-item batch exactly when its draw (stream 14, row 0, element 0) is below ft_threshold."""
    ids = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]])
    lengths = torch.tensor([0, 2])  # row 0 of a last-item batch: index -1, which a random batch never has
    for seed in (0, 3, 2**63 - 1, 12345):
        word = int(philox.draws(seed, philox.STREAM_BERT4REC_FINE_TUNE, 0, 0))
        random_batch = run_op(any_backend, "bert4rec_mask", ids, lengths, seed_tensor(seed), 10, 2**31, 2, 0)
        for ft_threshold, last_item in [(word, False), (word + 1, True), (0, False), (2**32, True)]:
            batch = on_cpu(run_op(any_backend, "bert4rec_mask", ids, lengths, seed_tensor(seed), 10, 2**31, 2,
                                  ft_threshold))
            assert (batch[3][0, 1].item() == -1) == last_item, (seed, ft_threshold)
            if not last_item:
                assert_same(batch, on_cpu(random_batch), seed, ft_threshold)


def test_bert4rec_negatives_up_to_2_pow_32_items(any_backend):
    # (draw * (n_items - 1)) >> 32 needs 64 unsigned bits once n_items - 1 >= 2^31.
    ids = torch.arange(1, 8 * 16 + 1).reshape(8, 16)
    for n_items in (2**31 + 2, 2**32):
        negatives = run_op(any_backend, "bert4rec_mask", ids, None, seed_tensor(7), n_items, 2**32, 16, 0)[2]
        words = philox.draws(7, philox.STREAM_BERT4REC_NEGATIVE, np.arange(8)[:, None], np.arange(16)[None, :])
        expected = 1 + philox.uniform_below(words, n_items - 1).astype(np.int64)  # no item 1..128 is drawn
        assert negatives.tolist() == expected.tolist(), n_items
    with pytest.raises(ValueError, match=r"n_items .* must be in \[2, 4294967296\]"):
        run_op(any_backend, "bert4rec_mask", ids, None, seed_tensor(7), 2**32 + 1, 2**32, 16, 0)


def test_log_uniform_draws(backend):
    cases = [(1, 0, 7), (2, 1, 1), (50, 1, 300), (1000, 3, 513), (20, 1, 0)]
    if not backend.interpreted:
        cases += [(5_000_000, 1, 1_000_001)]
    for max_id, min_id, num_draws in cases:
        table = rules.log_uniform_cdf_table(rules.log_uniform_distribution(max_id, min_id))
        for seed in (0, 2**63 - 1):
            assert_matches_reference(backend, "log_uniform_draws", table, seed_tensor(seed), num_draws,
                                     context=(max_id, num_draws))
