"""Sequence-masking policies (Merlin Models, RecBole BERT4Rec) and the log-uniform sampler: the
reference rules on hand-checked rows and invariants, rates with fixed seeds, and the modules on every
backend (the ops themselves: tests/test_ops_sequence.py)."""
import math

import numpy as np
import pytest
import torch

import fastmask
from fastmask import sequence as fs
from fastmask.reference import philox
from fastmask.reference import sequence as rules
from fastmask.reference.philox import bernoulli_threshold

from helpers import assert_same

HIDDEN = 8


def _seed(value):
    return torch.tensor([value], dtype=torch.int64)


def _draw(seed, stream, row, element):
    return int(philox.draws(seed, stream, row, element))


def _random_ids(batch, length, high, padding_rate=0.3, generator_seed=0, dtype=torch.int64):
    """Ids in [1, high) with padding (0) scattered anywhere, some right-padded rows, some empty."""
    g = torch.Generator().manual_seed(generator_seed)
    ids = torch.randint(1, high, (batch, length), generator=g)
    ids[torch.rand(batch, length, generator=g) < padding_rate] = 0
    if batch > 2:
        lengths = torch.randint(0, length + 1, (batch // 3,), generator=g)
        positions = torch.arange(length)
        ids[: batch // 3][positions[None, :] >= lengths[:, None]] = 0
        ids[-1] = 0
    return ids.to(dtype)


# ==================================================================================================
# Merlin Models
# ==================================================================================================
def test_merlin_rules_by_hand():
    ids = torch.tensor([[4, 0, 6, 7], [5, 5, 0, 0], [0, 0, 0, 0], [9, 0, 0, 0]])
    valid = ids != 0
    for seed in range(10):
        reset = [_kth(valid[row].tolist(), _reset_index(seed, row, int(valid[row].sum()))) if valid[row].any() else None
                 for row in range(4)]
        # Probability 0: nothing selected, every row with an item reset to one uniformly chosen item.
        assert rules.merlin_mask_random(ids, seed, 0, 0, False).tolist() == [
            [t == reset[row] for t in range(4)] for row in range(4)]
        # Probability 1: every item selected; only rows as long as the longest are reset (Merlin's quirk).
        selected = rules.merlin_mask_random(ids, seed, 0, 2**32, False).tolist()
        assert selected[0] == [t == reset[0] for t in range(4)]  # 3 items, the longest row
        assert selected[1] == [True, True, False, False] and not any(selected[2]) and selected[3][0]
        assert rules.merlin_mask_random(ids, seed, 0, 2**32, True).tolist()[1] == [t == reset[1] for t in range(4)]


def _kth(flags, k):
    return [t for t, flag in enumerate(flags) if flag][k]


def _reset_index(seed, row, count):
    return int(philox.uniform_below(_draw(seed, philox.STREAM_MERLIN_RESET, row, 0), count))


def test_merlin_reset_rules():
    ids = _random_ids(300, 7, 40, generator_seed=2)
    ids[0] = torch.arange(1, 8)
    valid, count = ids != 0, (ids != 0).sum(1)
    longest = int(count.max())
    short_full = 0
    for seed in range(10):
        for reset_any in (False, True):
            mask = rules.merlin_mask_random(ids, seed, 0, bernoulli_threshold(0.9), reset_any)
            picked = mask.sum(1)
            assert not (mask & ~valid).any()  # only valid positions
            assert torch.equal(picked > 0, count > 0)  # never none
            full = (picked == count) & (count > 1)
            if reset_any:
                assert not full.any()  # never all
            else:
                assert not (full & (count == longest)).any()
                short_full += int(full.sum())
    assert short_full > 0  # the quirk: fully selected shorter rows stay fully selected


def test_merlin_reset_picks_exactly_one_uniform_position():
    # p = 0: every row is reset; its one target is uniform over the row's valid positions.
    ids = torch.tensor([[3, 0, 4, 5, 0, 6]]).repeat(4000, 1)
    mask = rules.merlin_mask_random(ids, 11, 0, 0, False)
    assert torch.equal(mask.sum(1), torch.ones(4000, dtype=torch.int64))
    counts = mask.sum(0)
    assert counts[[1, 4]].sum() == 0
    for column in (0, 2, 3, 5):  # 1000 expected each; 4 sigma ~ 110
        assert abs(int(counts[column]) - 1000) < 110


def test_merlin_selection_rate():
    ids = torch.randint(1, 100, (200, 250))
    mask = rules.merlin_mask_random(ids, 5, 0, bernoulli_threshold(0.2), False)
    rate = mask.float().mean().item()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / ids.numel())


def test_merlin_last_and_inference_masks():
    ids = torch.tensor([[5, 3, 2, 0, 0], [1, 2, 3, 4, 5], [0, 4, 0, 8, 0], [0, 0, 0, 0, 0]])
    last = rules.merlin_mask_last(ids, 0)
    assert last.nonzero().tolist() == [[0, 2], [1, 4], [2, 3]]
    inference = rules.merlin_inference_mask(ids, 0)
    assert inference.shape == (4, 6)
    assert inference.nonzero().tolist() == [[0, 3], [1, 5], [2, 4], [3, 0]]


def _merlin_inputs(ids, dtype=torch.float64):
    return torch.randn(*ids.shape, HIDDEN, dtype=dtype)


@pytest.mark.parametrize("cls", [fs.MerlinMaskRandom, fs.MerlinMaskLast, fs.MerlinMaskLastInference])
def test_merlin_modules_modes(cls):
    ids = torch.tensor([[5, 3, 2, 0, 0], [1, 2, 3, 4, 5], [7, 6, 0, 0, 0]])
    module = cls(HIDDEN)
    assert [name for name, _ in module.named_parameters()] == ["masked_item_embedding"]
    assert abs(module.masked_item_embedding.std().item()) < 0.01
    inputs = _merlin_inputs(ids)
    before = inputs.clone()
    embedding = module.masked_item_embedding.to(inputs.dtype)
    for training, testing in [(True, False), (False, True)]:
        out = module(inputs, ids, training=training, testing=testing)
        schema = module.mask_schema
        assert out.shape == inputs.shape and schema.shape == ids.shape and schema.dtype == torch.bool
        assert torch.equal(module.masked_targets, ids)  # targets are the input ids
        assert torch.equal(out[schema], embedding.expand(int(schema.sum()), HIDDEN))
        assert torch.equal(out[~schema], inputs[~schema])
        if cls is fs.MerlinMaskLastInference:
            assert not schema.any()
        elif cls is fs.MerlinMaskLast or testing:
            assert torch.equal(schema, rules.merlin_mask_last(ids, 0))
    out = module(inputs, ids)  # inference: one more slot, right after the last item
    assert out.shape == (3, 6, HIDDEN) and module.masked_targets is None
    assert module.mask_schema.nonzero().tolist() == [[0, 3], [1, 5], [2, 2]]
    assert torch.equal(out[:, :5][~module.mask_schema[:, :5]], inputs[~module.mask_schema[:, :5]])
    assert torch.equal(out[1, 5], embedding) and torch.equal(out[0, 5], inputs[0, 4])
    assert torch.equal(inputs, before)


def test_merlin_random_module_uses_the_op_with_the_drawn_seed():
    ids = _random_ids(16, 12, 30, padding_rate=0.1, generator_seed=3)
    ids[ids.ne(0).sum(1) < 2, :2] = 4  # every row has >= 2 items
    module = fs.MerlinMaskRandom(HIDDEN, masking_prob=0.3, reset_any_full_row=True)
    torch.manual_seed(7)
    module.compute_masked_targets(ids, training=True)
    torch.manual_seed(7)
    seed = fastmask.masking.draw_seed(ids.device)
    expected = rules.merlin_mask_random(ids, seed, 0, bernoulli_threshold(0.3), True)
    assert torch.equal(module.mask_schema, expected)


@pytest.mark.parametrize("cls", [fs.MerlinMaskRandom, fs.MerlinMaskLast])
def test_merlin_rejects_rows_of_length_one(cls):
    module = cls(HIDDEN)
    ids = torch.tensor([[5, 3, 0], [4, 0, 0], [0, 0, 0]])
    for flags in (dict(training=True), dict(testing=True)):
        with pytest.raises(ValueError, match=r"rows \[1, 2\] have fewer than 2 items"):
            module.compute_masked_targets(ids, **flags)
    module.compute_masked_targets(ids)  # inference does not check lengths, as in Merlin Models
    unchecked = cls(HIDDEN, check_inputs=False)
    schema = unchecked.compute_masked_targets(ids, training=True).schema
    assert schema[1].tolist() == [True, False, False] and not schema[2].any()


def test_merlin_bad_arguments():
    with pytest.raises(ValueError, match="masking_prob"):
        fs.MerlinMaskRandom(HIDDEN, masking_prob=1.5)
    with pytest.raises(TypeError, match="item_ids"):
        fs.MerlinMaskRandom(HIDDEN).compute_masked_targets(torch.ones(2, 3), training=True)
    with pytest.raises(ValueError, match="2-D"):
        fs.MerlinMaskRandom(HIDDEN).compute_masked_targets(torch.ones(2, 3, 1, dtype=torch.long), training=True)


# ==================================================================================================
# RecBole / hopwise BERT4Rec
# ==================================================================================================
def test_bert4rec_rules_by_hand():
    ids = torch.tensor([[3, 1, 0, 2], [0, 7, 8, 0], [5, 6, 7, 8]])
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, None, 4, 10, 2**32, 3, 0)  # every scanned item masked
    # Scanned up to the first 0 only; lists left-padded with 0, keeping the last 3 entries.
    assert masked_seq.tolist() == [[10, 10, 0, 2], [0, 7, 8, 0], [10, 10, 10, 10]]
    assert pos.tolist() == [[0, 3, 1], [0, 0, 0], [6, 7, 8]] and index.tolist() == [[0, 0, 1], [0, 0, 0], [1, 2, 3]]
    assert (neg[0, 1:] >= 1).all() and not torch.isin(neg[0], ids[0, :2]).any() and neg[1].tolist() == [0, 0, 0]
    nothing = rules.bert4rec_mask(ids, None, 4, 10, 0, 3, 0)
    assert torch.equal(nothing[0], ids) and not any(t.any() for t in nothing[1:])


def test_bert4rec_rules():
    n_items, ratio = 40, 0.3
    ids = _random_ids(500, 15, n_items, generator_seed=5)
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, None, 3, n_items, bernoulli_threshold(ratio), 4, 0)
    positions = torch.arange(15)
    scan = torch.where(ids == 0, positions, 15).amin(1)
    masked = masked_seq != ids
    assert torch.equal(masked_seq[masked], torch.full_like(masked_seq[masked], n_items))  # mask token
    assert not (masked & (positions >= scan[:, None])).any()  # only before the first 0
    assert (masked.sum(1) == 0).any()  # no at-least-one rule
    for b in range(ids.shape[0]):
        where = masked[b].nonzero().flatten()
        last = where[-4:]  # the LAST mask_item_length masked positions, left-padded with 0
        assert index[b, 4 - len(last):].tolist() == last.tolist()
        assert pos[b, 4 - len(last):].tolist() == ids[b, last].tolist()
        assert (index[b, : 4 - len(last)] == 0).all() and (pos[b, : 4 - len(last)] == 0).all()
        negatives = neg[b, 4 - len(last):]
        assert ((negatives >= 1) & (negatives < n_items)).all()
        assert not torch.isin(negatives, ids[b]).any()  # never in the sequence
        assert (neg[b, : 4 - len(last)] == 0).all()


def test_bert4rec_truncation_keeps_the_last_entries():
    ids = torch.tensor([[7, 6, 5, 4, 3, 2, 0, 9]])
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, None, 0, 10, 2**32, 3, 0)
    assert masked_seq.tolist() == [[10, 10, 10, 10, 10, 10, 0, 9]]
    assert index.tolist() == [[3, 4, 5]] and pos.tolist() == [[4, 3, 2]]
    assert not torch.isin(neg, ids).any() and ((neg >= 1) & (neg < 10)).all()


def test_bert4rec_rates_and_uniform_negatives():
    n_items = 12
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]).repeat(3000, 1)
    masked_seq, _, neg, _ = rules.bert4rec_mask(ids, None, 8, n_items, bernoulli_threshold(0.25), 8, 0)
    rate = (masked_seq == n_items).float().mean().item()
    assert abs(rate - 0.25) < 4 * math.sqrt(0.25 * 0.75 / ids.numel())
    counts = torch.bincount(neg[neg > 0], minlength=n_items)
    assert counts[:9].sum() == 0  # items in the row are never negatives
    expected = counts.sum().item() / 3
    for item in (9, 10, 11):
        assert abs(counts[item].item() - expected) < 5 * math.sqrt(expected)


def test_bert4rec_negative_fallback():
    # Only item 500 of [1, 1000) is missing from the row: 64 attempts almost always fail, and the
    # cyclic scan after the last attempt must still find it.
    ids = torch.cat([torch.arange(1, 500), torch.arange(501, 1000)])[None, :]
    wanted = torch.zeros_like(ids, dtype=torch.bool)
    wanted[0, :50] = True
    negatives = rules.bert4rec_negatives(ids, 1, 1000, wanted)
    assert (negatives[0, :50] == 500).all() and (negatives[0, 50:] == 0).all()
    # Every item in the row: no negative exists (the reference would loop forever) -> 0.
    full = torch.tensor([[1, 2, 3, 2]])
    assert rules.bert4rec_negatives(full, 1, 4, torch.ones_like(full, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]]


def test_bert4rec_reconstruct_test_data_by_hand():
    # Append a 0 column, write the token at index len, drop column 0: the token ends at len - 1.
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9], [0, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 4, 0])
    expected = [[2, 3, 30, 0], [5, 30, 0, 0], [7, 8, 9, 30], [0, 0, 0, 0]]
    assert rules.bert4rec_reconstruct_test_data(ids, lengths, 30).tolist() == expected
    assert fs.reconstruct_test_data(ids.int(), lengths, 30).tolist() == expected
    assert fs.BERT4RecMasking(30, 0.5, 4).reconstruct_test_data(ids, lengths).tolist() == expected
    with pytest.raises(ValueError, match=r"item_seq_len values must be in \[0, 4\]"):
        fs.reconstruct_test_data(ids, torch.full((4,), 5), 30)
    with pytest.raises(ValueError, match="shape"):
        fs.reconstruct_test_data(ids, lengths[:3], 30)


def test_bert4rec_transform():
    transform = fs.BERT4RecMasking(50, 0.2, 20)
    assert transform.mask_item_length == 4 and transform.mask_token == 50 and transform.ft_ratio == 0.5
    ids = _random_ids(6, 20, 50, generator_seed=7)
    lengths = torch.tensor([3, 0, 20, 7, 1, 12], dtype=torch.int32)
    before, lengths_before = ids.clone(), lengths.clone()
    for ft_ratio, ft_threshold in [(0.5, 2**31), (0, 0), (1, 2**32), (0.25, 2**30)]:
        for item_seq_len in (None, lengths):
            transform = fs.BERT4RecMasking(50, 0.2, 20, ft_ratio)
            torch.manual_seed(3)
            batch = transform(ids, item_seq_len)
            torch.manual_seed(3)
            seed = fastmask.masking.draw_seed(ids.device)
            expected = rules.bert4rec_mask(ids, None if item_seq_len is None else item_seq_len.long(), seed, 50,
                                           bernoulli_threshold(0.2), 4, ft_threshold)
            assert isinstance(batch, fs.BERT4RecBatch)
            assert_same(tuple(batch), expected, ft_ratio)
    assert torch.equal(ids, before) and torch.equal(lengths, lengths_before)
    with pytest.raises(ValueError, match=r"int\(mask_ratio \* max_seq_length\)"):
        fs.BERT4RecMasking(50, 0.1, 5)
    with pytest.raises(ValueError, match="n_items"):
        fs.BERT4RecMasking(1, 0.5, 5)
    with pytest.raises(TypeError, match="item_seq"):
        transform(torch.ones(2, 3))


def _first_negative(seed, row, position, length, n_items, items):
    """The negative of column ``position`` by the documented rule: the first attempt a (element
    a * L + position of the NEGATIVE stream) whose item is not in the row."""
    for attempt in range(rules.BERT4REC_NEGATIVE_ATTEMPTS):
        word = _draw(seed, philox.STREAM_BERT4REC_NEGATIVE, row, attempt * length + position)
        item = 1 + int(philox.uniform_below(word, n_items - 1))
        if item not in items:
            return item
    raise AssertionError("no attempt found a negative")


def test_bert4rec_last_item_batch_by_hand():
    """Every row masks its item at Python index len - 1 (len 0: the last column) and nothing else; each
    list holds that one entry in its last slot, left-padded with 0."""
    ids = torch.tensor([[3, 1, 4, 0], [5, 9, 2, 6], [0, 0, 0, 0], [7, 0, 8, 0]])
    seed = 21
    # No lengths given: a row's length is the position of its first 0 (3, 4, 0 and 1 here).
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, None, seed, 10, 2**32, 3, 2**32)
    assert masked_seq.tolist() == [[3, 1, 10, 0], [5, 9, 2, 10], [0, 0, 0, 10], [10, 0, 8, 0]]
    assert pos.tolist() == [[0, 0, 4], [0, 0, 6], [0, 0, 0], [0, 0, 7]]
    assert index.tolist() == [[0, 0, 2], [0, 0, 3], [0, 0, -1], [0, 0, 0]]
    columns = [2, 3, 3, 0]
    assert neg.tolist() == [[0, 0, _first_negative(seed, row, column, 4, 10, ids[row].tolist())]
                            for row, column in enumerate(columns)]
    # Given lengths win over the padding (row 3: len 3 masks column 2, after a 0).
    lengths = torch.tensor([2, 4, 0, 3])
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, lengths, seed, 10, 0, 2, 2**32)
    assert masked_seq.tolist() == [[3, 10, 4, 0], [5, 9, 2, 10], [0, 0, 0, 10], [7, 0, 10, 0]]
    assert pos.tolist() == [[0, 1], [0, 6], [0, 0], [0, 8]]
    assert index.tolist() == [[0, 1], [0, 3], [0, -1], [0, 2]]
    assert neg.tolist() == [[0, _first_negative(seed, row, column, 4, 10, ids[row].tolist())]
                            for row, column in enumerate([1, 3, 3, 2])]
    # One slot: the entry fills it. Lengths outside [0, L] mask nothing (the module refuses them).
    masked_seq, pos, neg, index = rules.bert4rec_mask(ids, torch.tensor([1, -1, 5, 4]), seed, 10, 0, 1, 2**32)
    assert masked_seq.tolist() == [[10, 1, 4, 0], [5, 9, 2, 6], [0, 0, 0, 0], [7, 0, 8, 10]]
    assert pos.tolist() == [[3], [0], [0], [0]] and index.tolist() == [[0], [0], [0], [3]]
    # A batch without columns has nothing to mask.
    empty = rules.bert4rec_mask(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long), seed, 10, 0, 2,
                                2**32)
    assert empty[0].shape == (2, 0) and all(t.tolist() == [[0, 0]] * 2 for t in empty[1:])


def test_bert4rec_share_of_last_item_batches():
    """ft_ratio 0 and 1 exactly; 0.5 within 4 standard deviations of a binomial over 2000 fixed seeds."""
    ids = torch.tensor([[4, 5, 6], [7, 8, 0]])
    lengths = torch.tensor([0, 2])  # index -1 in row 0 marks a last-item batch
    calls = 2000
    for ft_ratio in (0.0, 0.5, 1.0):
        transform = fs.BERT4RecMasking(10, 0.5, 3, ft_ratio, generator=torch.Generator().manual_seed(17))
        share = sum(transform(ids, lengths).masked_index[0, -1].item() == -1 for _ in range(calls)) / calls
        if ft_ratio in (0.0, 1.0):
            assert share == ft_ratio
        else:
            assert abs(share - 0.5) < 4 * math.sqrt(0.25 / calls), share


def test_bert4rec_bad_arguments():
    ids = torch.tensor([[1, 2, 0], [3, 0, 0]])
    for ratio in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"ft_ratio must be in \[0, 1\]"):
            fs.BERT4RecMasking(10, 0.5, 4, ft_ratio=ratio)
    for ratio in ("0.5", None, True):
        with pytest.raises(TypeError, match="ft_ratio must be a float"):
            fs.BERT4RecMasking(10, 0.5, 4, ft_ratio=ratio)
    transform = fs.BERT4RecMasking(10, 0.5, 4)
    with pytest.raises(ValueError, match=r"item_seq_len must have shape \(2,\)"):
        transform(ids, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"item_seq_len must have shape \(2,\)"):
        transform(ids, torch.tensor([[1, 2]]))
    for bad in (torch.tensor([1.0, 2.0]), torch.tensor([True, False]), [1, 2]):
        with pytest.raises(TypeError, match="item_seq_len must be an integer torch.Tensor"):
            transform(ids, bad)
    for bad in ([-1, 2], [1, 4]):
        with pytest.raises(ValueError, match=r"item_seq_len values must be in \[0, 3\]"):
            transform(ids, torch.tensor(bad))
    # Unchecked, an out-of-range length masks nothing in a last-item batch.
    unchecked = fs.BERT4RecMasking(10, 0.5, 4, 1.0, check_inputs=False)(ids, torch.tensor([-1, 4]))
    assert torch.equal(unchecked.masked_item_seq, ids) and not unchecked.masked_index.any()


# ==================================================================================================
# LogUniformSampler
# ==================================================================================================
def test_log_uniform_probabilities_by_hand():
    sampler = fs.LogUniformSampler(max_n_samples=3, max_id=6, min_id=2)
    expected = [0.0, 0.0] + [(math.log(k + 2) - math.log(k + 1)) / math.log(5) for k in range(4)]
    assert sampler.dist.dtype == torch.float32 and sampler.dist.shape == (6,)
    assert np.allclose(sampler.dist.double().numpy(), expected, rtol=1e-6, atol=0)
    assert sampler.n_sample == 6
    # Transformers4Rec documents 1 - (1 - p)^n but its code, -(-p.log1p() * n).expm1(), is 1 - (1 + p)^-n.
    computed = [1 - (1 + p) ** -6 for p in expected]
    documented = [1 - (1 - p) ** 6 for p in expected]
    assert np.allclose(sampler.unique_sampling_dist.double().numpy(), computed, rtol=1e-6, atol=0)
    assert not np.allclose(computed[2:], documented[2:], rtol=1e-2)
    assert fs.LogUniformSampler(3, 6, unique_sampling=False).n_sample == 3
    assert list(sampler.state_dict()) == ["dist", "unique_sampling_dist"]


def test_cdf_table_and_draw_frequencies():
    dist = rules.log_uniform_distribution(200, 1)
    table = rules.log_uniform_cdf_table(dist)
    assert table.shape == (199,) and table[0] == 0 and (table.diff() >= 0).all() and table[-1] < 2**62
    draws = rules.log_uniform_draws(table, 4, 400_000)
    assert draws.min() >= 1 and draws.max() < 200
    frequency = torch.bincount(draws, minlength=200).double() / 400_000
    p = dist.double() / dist.double().sum()
    assert ((frequency - p).abs() <= 5 * (p * (1 - p) / 400_000).sqrt() + 1e-9).all()


def test_zero_probability_ids_are_never_drawn():
    dist = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25, 0.0])
    draws = rules.log_uniform_draws(rules.log_uniform_cdf_table(dist), 9, 20_000)
    assert set(draws.unique().tolist()) == {1, 3, 4}


def test_unique_sampling_semantics():
    sampler = fs.LogUniformSampler(max_n_samples=20, max_id=100, min_id=1)
    labels = torch.tensor([1, 50, 99])
    torch.manual_seed(2)
    negatives, true_probs, sample_probs = sampler.sample(labels)
    torch.manual_seed(2)
    seed = fastmask.masking.draw_seed(torch.device("cpu"))
    draws = rules.log_uniform_draws(sampler.log_uniform_cdf, seed, 40)
    assert torch.equal(negatives, draws.unique()[:20])  # sorted, distinct, smallest first
    assert negatives.dtype == torch.int64 and len(negatives) <= 20
    assert torch.equal(true_probs, sampler.unique_sampling_dist[labels])
    assert torch.equal(sample_probs, sampler.unique_sampling_dist[negatives])
    plain = fs.LogUniformSampler(max_n_samples=20, max_id=100, min_id=1, unique_sampling=False)
    negatives, true_probs, sample_probs = plain.sample(labels[:, None])
    assert true_probs.shape == (3, 1) and torch.equal(true_probs, plain.dist[labels[:, None]])
    assert torch.equal(sample_probs, plain.dist[negatives]) and torch.equal(negatives, negatives.unique())


def test_fixed_size_negatives():
    sampler = fs.LogUniformSampler(max_n_samples=20, max_id=100, min_id=1, fixed_size=True)
    default = fs.LogUniformSampler(max_n_samples=20, max_id=100, min_id=1)
    agreed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        fixed = sampler.sample(torch.tensor([3]))[0]
        torch.manual_seed(seed)
        reference = default.sample(torch.tensor([3]))[0]
        assert len(fixed) == 20 and torch.equal(fixed, fixed.unique())
        if len(reference) == 20:
            assert torch.equal(fixed, reference)
            agreed += 1
    assert agreed > 0
    # Fewer distinct ids than wanted in the first draws: later draws, then the smallest ids left.
    draws = torch.tensor([5, 5, 3, 5, 9, 7, 3, 2])
    assert rules.fixed_size_negatives(draws, 4, 5, 10, 1).tolist() == [2, 3, 5, 7, 9]
    assert rules.fixed_size_negatives(draws, 4, 3, 10, 1).tolist() == [3, 5, 9]
    assert rules.fixed_size_negatives(draws, 4, 7, 10, 1).tolist() == [1, 2, 3, 4, 5, 7, 9]
    # max_n_samples == max_id - min_id: every id.
    whole = fs.LogUniformSampler(max_n_samples=6, max_id=8, min_id=2, fixed_size=True)
    assert whole.sample(torch.tensor([2]))[0].tolist() == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="fixed_size"):
        fs.LogUniformSampler(max_n_samples=7, max_id=8, min_id=2, fixed_size=True)


def test_fixed_size_sampling_has_fixed_shapes_and_reads_no_values():
    # On the meta device nothing can be read back: this runs only if no step needs a value.
    sampler = fs.LogUniformSampler(max_n_samples=10, max_id=50, min_id=1, fixed_size=True, check_inputs=False)
    negatives, true_probs, sample_probs = sampler.to("meta").sample(torch.tensor([1, 2], device="meta"))
    assert negatives.shape == (10,) and true_probs.shape == (2,) and sample_probs.shape == (10,)


def test_sampler_built_on_meta_then_loaded_samples_like_one_built_on_cpu():
    """Deferred initialisation: build on the meta device, materialise, load a checkpoint."""
    with torch.device("meta"):
        deferred = fs.LogUniformSampler(10, 60, 1)
    assert deferred.dist.is_meta and list(deferred.state_dict()) == ["dist", "unique_sampling_dist"]
    built = fs.LogUniformSampler(10, 60, 1)
    deferred.to_empty(device="cpu").load_state_dict(built.state_dict())
    labels = torch.tensor([4, 7])
    torch.manual_seed(3)
    got = deferred.sample(labels)
    torch.manual_seed(3)
    assert_same(got, built.sample(labels))


def test_sampler_draws_from_the_loaded_dist():
    """As T4Rec's ``multinomial(self.dist)``: a loaded ``dist`` is the one sampled."""
    sampler = fs.LogUniformSampler(20, 50)
    sampler.load_state_dict(fs.LogUniformSampler(20, 50, min_id=40).state_dict())
    for _ in range(5):
        assert sampler.sample(torch.tensor([45]))[0].min() >= 40


def test_default_checks_are_skipped_on_the_meta_device():
    """Meta tensors have shapes but no values: the value checks step aside, as for check_inputs=False."""
    meta = torch.device("meta")
    ids = torch.ones(2, 5, dtype=torch.long, device=meta)
    assert fs.reconstruct_test_data(ids, torch.ones(2, dtype=torch.long, device=meta), 10).shape == (2, 5)
    sampler = fs.LogUniformSampler(5, 50, fixed_size=True).to(meta)
    assert sampler.sample(torch.ones(2, dtype=torch.long, device=meta))[0].shape == (5,)
    for cls in (fs.MerlinMaskRandom, fs.MerlinMaskLast):
        schema = cls(hidden_size=HIDDEN).to(meta).compute_masked_targets(ids, training=True).schema
        assert schema.shape == (2, 5) and schema.is_meta


def test_sampler_label_checks():
    sampler = fs.LogUniformSampler(5, 10)
    with pytest.raises(TypeError, match="Labels must be a torch.Tensor"):
        sampler.sample([1, 2])
    with pytest.raises(ValueError, match="dtype long"):
        sampler.sample(torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="1-dimensional"):
        sampler.sample(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        sampler.sample(torch.empty(0, dtype=torch.long))
    for bad in (-1, 10):  # the reference lets max_id through its check, then fails indexing dist
        with pytest.raises(ValueError, match=r"\[0, max_id\)"):
            sampler.sample(torch.tensor([1, bad]))
    with pytest.raises(ValueError, match="max_id must be a positive integer"):
        fs.LogUniformSampler(5, 0)
    with pytest.raises(ValueError, match="n_sample must be a positive integer"):
        fs.LogUniformSampler(0, 10)
    with pytest.raises(ValueError, match="min_id"):
        fs.LogUniformSampler(5, 10, min_id=10)
    for multiplier in (0, -1, 0.1):  # the reference's multinomial fails on its first sample
        with pytest.raises(ValueError, match="n_samples_multiplier_before_unique"):
            fs.LogUniformSampler(5, 10, n_samples_multiplier_before_unique=multiplier)
    fs.LogUniformSampler(5, 10, unique_sampling=False, n_samples_multiplier_before_unique=0)  # unused then


def test_sample_works_on_a_transformers4rec_shaped_instance():
    """``LogUniformSampler.sample`` set on Transformers4Rec's class: it only needs T4Rec's attributes."""

    class UpstreamShaped(torch.nn.Module):
        def __init__(self, max_n_samples, max_id, min_id):
            super().__init__()
            self.max_id, self.unique_sampling, self.max_n_samples = max_id, True, max_n_samples
            self.n_sample = 2 * max_n_samples
            dist = rules.log_uniform_distribution(max_id, min_id)
            self.register_buffer("dist", dist)
            self.register_buffer("unique_sampling_dist", rules.unique_sampling_distribution(dist, self.n_sample))

        sample = fs.LogUniformSampler.sample

    upstream, ours = UpstreamShaped(10, 60, 1), fs.LogUniformSampler(10, 60, 1)
    labels = torch.tensor([4, 7])
    torch.manual_seed(1)
    got = upstream.sample(labels)
    torch.manual_seed(1)
    expected = ours.sample(labels)
    assert_same(got, expected)
    assert list(upstream.state_dict()) == ["dist", "unique_sampling_dist"]


def test_against_transformers4rec_when_installed():
    prediction_task = pytest.importorskip("transformers4rec.torch.model.prediction_task")
    for args in [(100, 1000, 1), (7, 50, 0, False), (3, 4, 1, True, 3)]:
        upstream, ours = prediction_task.LogUniformSampler(*args), fs.LogUniformSampler(*args)
        assert torch.equal(upstream.dist, ours.dist)
        assert torch.equal(upstream.unique_sampling_dist, ours.unique_sampling_dist)
        assert (upstream.n_sample, upstream.max_n_samples) == (ours.n_sample, ours.max_n_samples)
        labels = torch.tensor([1, 2, 3])
        torch.manual_seed(5)
        swapped = fs.LogUniformSampler.sample(upstream, labels)
        torch.manual_seed(5)
        assert_same(swapped, ours.sample(labels))


def test_fixed_size_sampler_compiles_without_graph_breaks():
    sampler = fs.LogUniformSampler(max_n_samples=10, max_id=100, min_id=1, fixed_size=True)
    compiled = torch.compile(sampler.sample, fullgraph=True)
    labels = torch.tensor([1, 2])
    torch.manual_seed(1)
    got = compiled(labels)
    torch.manual_seed(1)
    assert_same(got, sampler.sample(labels))


def test_modules_give_the_same_bits_on_every_backend(any_backend):
    """The modules and transforms on each backend and its device, against the reference on the CPU."""
    ids = _random_ids(16, 12, 30, padding_rate=0.1, generator_seed=3)
    ids[ids.ne(0).sum(1) < 2, :2] = 4  # Merlin needs 2 items per row
    device_ids = ids.to(any_backend.device)
    labels = torch.tensor([3, 7]).to(any_backend.device)

    def run():
        torch.manual_seed(5)
        merlin = fs.MerlinMaskRandom(HIDDEN, masking_prob=0.4).to(any_backend.device)
        schema = merlin.compute_masked_targets(device_ids, training=True).schema
        batch = fs.BERT4RecMasking(30, 0.3, 12)(device_ids)
        sampler = fs.LogUniformSampler(10, 60, 1, fixed_size=True).to(any_backend.device)
        return (schema, *batch, *sampler.sample(labels))

    with fastmask.use_backend("reference"):
        expected = run()
    with fastmask.use_backend(any_backend.name):
        got = run()
    for op in ("merlin_mask_random", "bert4rec_mask", "log_uniform_draws"):
        assert fastmask.ops.last_backend(op) == any_backend.name
    assert_same(got, expected)


def test_integer_arguments_take_numpy_integers_as_the_masking_modules_do():
    transform = fs.BERT4RecMasking(np.int64(50), 0.2, np.int32(20))
    assert (transform.n_items, transform.max_seq_length) == (50, 20) and type(transform.n_items) is int
    with pytest.raises(TypeError, match="n_items must be an int, got bool"):
        fs.BERT4RecMasking(True, 0.2, 20)
    with pytest.raises(ValueError, match="max_seq_length must be >= 1, got 0"):
        fs.BERT4RecMasking(50, 0.2, 0)
