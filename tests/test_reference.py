"""The reference rules, checked by hand: Philox known answers, the counter layout, small rows worked
out from the rules' statements, and invariants."""
import numpy as np
import pytest
import torch

from fastmask.reference import masking as rules
from fastmask.reference import philox, ranking, sampling


@pytest.mark.parametrize(
    "key, counter, expected",
    [  # Random123's known-answer vectors for philox4x32-10
        (0, (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        (2**64 - 1, (2**32 - 1,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (0x299F31D0A4093822, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_known_answers(key, counter, expected):
    assert tuple(int(w) for w in philox.philox4x32(key, *counter)) == expected


def test_draw_layout_uses_each_word_of_a_counter_once():
    seed, stream, row = 987654321, philox.STREAM_PLM_PERM, 17
    words = philox.philox4x32(seed, np.arange(3), row, stream, 0)
    expected = np.stack(words, axis=1).reshape(-1)
    assert np.array_equal(philox.draws(seed, stream, row, np.arange(12)), expected)
    # Streams and rows are independent counters.
    assert not np.array_equal(philox.draws(seed, stream + 1, row, np.arange(12)), expected)
    assert not np.array_equal(philox.draws(seed, stream, row + 1, np.arange(12)), expected)


def test_integer_decisions():
    assert philox.bernoulli_threshold(1.0) == 2**32
    assert philox.bernoulli_threshold(0.5) == 2**31
    assert int(philox.uniform_below(2**32 - 1, 7)) == 6
    assert int(philox.uniform_below(0, 7)) == 0


def _word(seed, stream, row, element=0):
    return int(philox.draws(seed, stream, row, element))


def _kth(flags, k):
    """Column of the k-th (0-based) True of a row of flags."""
    return [t for t, flag in enumerate(flags) if flag][k]


# -- MLM: hand-checked rows --------------------------------------------------------------------------
# The rule (README, "Randomness contract"): Bernoulli(p) over the items; then one uniformly chosen item
# becomes a target; then a row whose items are all targets drops one uniformly chosen target.
def test_mlm_probability_zero_leaves_only_the_forced_target():
    ids = torch.tensor([[4, 8, 0, 15, 16, 0], [23, 42, 7, 1, 2, 3]])
    for seed in range(20):
        schema, targets = rules.mlm_train(ids, seed, 0, 0)
        for row in range(2):
            items = (ids[row] != 0).tolist()
            forced = _kth(items, int(philox.uniform_below(_word(seed, philox.STREAM_MLM_FORCE, row), sum(items))))
            assert schema[row].nonzero().flatten().tolist() == [forced]
        assert torch.equal(targets, torch.where(schema, ids, 0)) and targets.dtype == ids.dtype


def test_mlm_probability_one_drops_one_target():
    ids = torch.tensor([[4, 8, 0, 15, 16, 0], [0, 0, 9, 0, 0, 0]])
    for seed in range(20):
        schema, _ = rules.mlm_train(ids, seed, 0, 2**32)
        dropped = _kth((ids[0] != 0).tolist(), int(philox.uniform_below(_word(seed, philox.STREAM_MLM_UNMASK, 0), 4)))
        assert schema[0].tolist() == [t in (0, 1, 3, 4) and t != dropped for t in range(6)]
        assert not schema[1].any()  # one item: forced, then dropped (T4Rec's quirk)


def test_mlm_bernoulli_is_draw_below_the_threshold():
    ids = torch.arange(1, 17)[None, :]
    seed = 2024
    words = philox.draws(seed, philox.STREAM_MLM_BERNOULLI, 0, range(16)).tolist()
    forced = int(philox.uniform_below(_word(seed, philox.STREAM_MLM_FORCE, 0), 16))
    for t, threshold in enumerate(words):
        schema = rules.mlm_train(ids, seed, 0, threshold)[0][0].tolist()
        selected = [word < threshold or s == forced for s, word in enumerate(words)]
        if all(selected):
            continue  # then one target is dropped: checked above
        assert schema == selected, t  # strict: the draw equal to the threshold is no target
        assert not schema[t] or t == forced


def test_mlm_targets_stay_on_items():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 5, (300, 9), generator=gen)
    schema, targets = rules.mlm_train(ids, 7, 0, philox.bernoulli_threshold(0.5))
    count = (ids != 0).sum(1)
    assert not (schema & (ids == 0)).any()
    assert ((schema.sum(1) >= 1) | (count <= 1)).all() and ((schema.sum(1) < count) | (count == 0)).all()


# -- PLM: hand-checked rows --------------------------------------------------------------------------
# The span walk (reference masking.plm_train's docstring): span = 1 + uniform_below(draw 2k, max_span),
# start = cur + uniform_below(draw 2k + 1, context - span + 1), context = int(span / plm_probability).
def test_plm_contexts_of_probability_one_tile_the_row_from_its_start():
    # Context = span, so every span starts where the last ended: the first n positions are masked,
    # spans run past n into padding and count for the drop step.
    ids = torch.tensor([[3, 4, 5, 6, 7, 0, 0, 0]])
    for seed in range(40):
        ends, cur, k = [], 0, 0
        while cur < 5:
            cur += 1 + int(philox.uniform_below(_word(seed, philox.STREAM_PLM_SPAN, 0, 2 * k), 3))
            ends.append(cur)
            k += 1
        masked = min(ends[-1], 8)  # positions 0 .. masked - 1, padding included
        schema, targets, perm, mapping = rules.plm_train(ids, seed, 0, 3, rules.plm_context_lengths(1.0, 3), False)
        if masked == 5:  # every item a target: one is dropped
            dropped = int(philox.uniform_below(_word(seed, philox.STREAM_PLM_UNMASK, 0), 5))
            assert schema[0].tolist() == [t < 5 and t != dropped for t in range(8)]
        else:
            assert schema[0].tolist() == [t < 5 for t in range(8)]
        assert torch.equal(targets, torch.where(schema, ids, 0))
        assert torch.equal(mapping[0], torch.eye(8))


def test_plm_permute_all_targets_every_item_but_one_and_maps_nothing():
    ids = torch.tensor([[3, 0, 5, 6], [0, 0, 0, 9]])
    for seed in range(10):
        schema, _, _, mapping = rules.plm_train(ids, seed, 0, 2, rules.plm_context_lengths(0.5, 2), True)
        drawn = int(philox.uniform_below(_word(seed, philox.STREAM_PLM_UNMASK, 0), 3))
        dropped = _kth([True, False, True, True], drawn)
        assert schema[0].tolist() == [t in (0, 2, 3) and t != dropped for t in range(4)]
        assert not schema[1].any()  # one item: masked, then dropped
        assert not mapping.any()  # T4Rec leaves target_mapping all zero with permute_all


def test_plm_force_writes_the_item_id_into_the_bool_mask():
    # A row whose walk masks nothing gets one forced position set to `item != 0`: with padding_idx=9
    # an item id 0 leaves the row without a target, as the reference's bool assignment does.
    ids = torch.tensor([[0, 0, 0, 9, 9, 9], [5, 7, 0, 9, 9, 9]])
    contexts = rules.plm_context_lengths(1 / 1000, 1)  # one span of 1 in a context of 1000: rarely in the row
    forced_zero = 0
    for seed in range(40):
        schema = rules.plm_train(ids, seed, 9, 1, contexts, False)[0]
        for row in range(2):
            start = int(philox.uniform_below(_word(seed, philox.STREAM_PLM_SPAN, row, 1), 1000))
            if start >= 3:  # the walk masked nothing
                start = int(philox.uniform_below(_word(seed, philox.STREAM_PLM_FORCE, row), 3))
                forced_zero += int(ids[row, start] == 0)
                expected = [t == start and ids[row, t].item() != 0 for t in range(6)]
            else:
                expected = [t == start for t in range(6)]
            assert schema[row].tolist() == expected, (seed, row)
    assert forced_zero > 0


def test_plm_perm_mask_follows_the_factorisation_order():
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 6, (6, 11), generator=gen)
    seed = 77
    schema, _, perm, _ = rules.plm_train(ids, seed, 0, 3, rules.plm_context_lengths(0.4, 3), False)
    assert perm.dtype == torch.float32
    for row in range(6):
        keys = philox.draws(seed, philox.STREAM_PLM_PERM, row, range(11)).tolist()
        order = {t: (keys[t], t) for t in range(11)}
        for q in range(11):
            for k in range(11):
                target_q, target_k = bool(schema[row, q]), bool(schema[row, k])
                # q may not see k: k is a target that q is not, or that does not precede q in the order.
                hidden = target_k and (not target_q or not order[k] < order[q])
                assert perm[row, q, k] == float(hidden), (row, q, k)


def test_plm_span_lengths_are_uniform_in_range():
    # Low probability: spans are far apart, so each run of targets is one span (rarely merged, and cut
    # only at the end of a long row).
    ids = torch.randint(1, 9, (200, 600), generator=torch.Generator().manual_seed(0))
    schema = rules.plm_train(ids, 123, 0, 5, rules.plm_context_lengths(0.1, 5), False)[0]
    runs = []
    for row in schema.tolist():
        length = 0
        for masked in row + [False]:
            if masked:
                length += 1
            elif length:
                runs.append(length)
                length = 0
    counts = np.bincount(runs, minlength=7)
    assert counts[6:].sum() < 0.01 * len(runs)
    assert np.all(np.abs(counts[1:6] / len(runs) - 0.2) < 0.03), counts


# -- rules without randomness ------------------------------------------------------------------------
def test_eval_rules_by_hand():
    ids = torch.tensor([[5, 3, 2, 0], [1, 2, 3, 4], [0, 0, 0, 0]])
    schema, targets = rules.last_item_targets(ids, 0)
    assert targets.tolist() == [[0, 0, 2, 0], [0, 0, 0, 4], [0, 0, 0, 0]]
    schema, targets = rules.next_item_targets(ids, 0)
    assert targets.tolist() == [[3, 2, 0, 0], [2, 3, 4, 0], [0, 0, 0, 0]]
    assert schema.tolist() == [[True, True, False, False], [True, True, True, False], [False] * 4]
    schema, targets = rules.mlm_inference_targets(ids, 0)
    assert targets.tolist() == [[0, 0, 0, 2, 0], [0, 0, 0, 0, 4], [0, 0, 0, 0, 0]]
    schema, targets, perm, identity = rules.plm_eval(ids, 0)
    assert perm.dtype == torch.int64 and torch.equal(identity, torch.eye(4))
    assert targets.tolist() == [[0, 0, 2, 0], [0, 0, 0, 4], [0, 0, 0, 0]]
    assert perm[0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0]]
    assert perm[2].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]]  # n - 1 = -1 wraps
    assert torch.equal(rules.causal_perm_mask(3, 4, "cpu")[1], torch.ones(4, 4, dtype=torch.int64).triu(1))


def test_last_item_rules_count_items_not_positions():
    # n - 1 is a count, not the last item's position: with left padding the target is padding (none).
    ids = torch.tensor([[0, 0, 6, 7], [0, 6, 7, 0]])
    assert rules.last_item_targets(ids, 0)[1].tolist() == [[0, 0, 0, 0], [0, 6, 0, 0]]
    assert rules.mlm_inference_targets(ids, 0)[1].tolist() == [[0, 0, 0, 0, 0], [0, 0, 6, 0, 0]]


def test_clm_rules_by_hand():
    ids = torch.tensor([[5, 3, 2, 0], [1, 2, 3, 4]])
    schema, targets = rules.clm_last_item_targets(ids, 0)
    assert targets.tolist() == [[0, 2, 0, 0], [0, 0, 4, 0]]
    assert schema.tolist() == (ids != 0).tolist()
    assert rules.clm_last_item_targets(torch.tensor([[0, 0, 0]]), 0)[1].tolist() == [[0, 0, 0]]


def test_gumbel_noise_is_the_float64_formula_rounded_once():
    seed, rows = 42, np.array([0, 3], dtype=np.uint64)
    noise = sampling.gumbel_noise(seed, rows, 9)
    words = philox.draws(seed, philox.STREAM_GUMBEL, rows[:, None], np.arange(9, dtype=np.uint64)[None, :])
    u = (words.astype(np.float64) + 0.5) / 2**32
    assert torch.equal(noise, torch.from_numpy(np.float32(-np.log(-np.log(u)))))


def test_gumbel_argmax_ties_nan_and_distribution():
    logits = torch.full((3, 6), -float("inf"))
    logits[0, 2] = 0.0
    logits[1, 4] = float("nan")
    logits[1, 5] = float("nan")
    assert sampling.gumbel_argmax(logits, 1)[:2].tolist() == [2, 4]
    assert sampling.gumbel_argmax(logits, 1)[2] == 0  # all -inf: the first index
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    samples = sampling.gumbel_argmax(probs.log().expand(20000, 4).contiguous(), 7)
    freq = torch.bincount(samples, minlength=4).double() / 20000
    assert torch.all((freq - probs).abs() < 4 * (probs * (1 - probs) / 20000).sqrt())


def test_ranks_by_hand():
    scores = torch.tensor([[1.0, 3.0, 3.0, float("nan"), -0.0, 0.0]])
    items = torch.tensor([[3, 1, 2, 4, 5, 0, -1, 6, 99]])
    assert ranking.target_ranks(scores, items).tolist() == [[0, 1, 2, 4, 5, 3, -1, -1, -1]]


def counted_ranks(row: list) -> list:
    """Rank of each entry of ``row`` by the definition: the entries ahead of it, counted."""
    def ahead(j, i):
        a, b = row[j], row[i]
        if b != b:
            return a != a and j < i
        return a != a or a > b or (a == b and j < i)
    return [sum(ahead(j, i) for j in range(len(row))) for i in range(len(row))]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_ranks_ignore_the_signs_of_zero_and_nan(device, dtype):
    # Longer than the small-sort paths of device sorts, with both signs of zero and of NaN.
    gen = torch.Generator().manual_seed(3)
    values = (torch.randint(-2, 3, (2, 300), generator=gen) / 2).to(dtype)
    values[:, ::3] = -0.0
    values[:, 1::7] = float("nan")
    values[:, 2::11] = -values[:, 1::7][:, : values[:, 2::11].shape[1]]  # NaN with the sign bit set
    items = torch.arange(300).repeat(2, 1)
    got = ranking.target_ranks(values.to(device), items.to(device)).cpu()
    expected = [counted_ranks(row) for row in values.double().tolist()]
    assert got.tolist() == expected
