"""The reference rules: Philox known answers, the counter layout, and agreement with T4Rec's loops."""
import numpy as np
import pytest
import torch

from fastmask.reference import masking as rules
from fastmask.reference import philox, ranking, sampling

from t4rec_rules import mlm_loop, plm_loop


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


def _ids(rows, length, padding_idx=0, dtype=torch.int64):
    """Rows given as lists of (position, item); everything else is padding."""
    out = torch.full((len(rows), length), padding_idx, dtype=dtype)
    for i, row in enumerate(rows):
        for t, item in row:
            out[i, t] = item
    return out


def _batches():
    gen = torch.Generator().manual_seed(3)
    yield "right-padded", torch.tensor([[5, 3, 2, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7], [9, 0, 0, 0, 0, 0, 0]]), 0
    yield "padding everywhere", (torch.randint(0, 4, (6, 13), generator=gen)), 0
    yield "padding_idx 3", torch.randint(0, 6, (5, 11), generator=gen), 3
    yield "all padding row", torch.tensor([[0, 0, 0, 0], [4, 0, 2, 0]]), 0
    yield "L=1", torch.tensor([[4], [0], [2]]), 0
    yield "long rows", torch.randint(1, 50, (4, 40), generator=gen), 0
    yield "int32", torch.randint(0, 9, (4, 9), generator=gen, dtype=torch.int32), 0


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5])
@pytest.mark.parametrize("p", [0.15, 0.5, 1.0])
def test_mlm_reference_matches_t4rec_loop(seed, p):
    for name, ids, pad in _batches():
        threshold = philox.bernoulli_threshold(p)
        assert torch.equal(rules.mlm_mask(ids, seed, pad, threshold), mlm_loop(ids, seed, pad, threshold)), name


@pytest.mark.parametrize("seed", [0, 11, 2**64 - 1])
@pytest.mark.parametrize("max_span, prob", [(5, 1 / 6), (1, 0.5), (3, 1.0), (6, 0.3)])
@pytest.mark.parametrize("permute_all", [False, True])
def test_plm_reference_matches_t4rec_loop(seed, max_span, prob, permute_all):
    contexts = rules.plm_context_lengths(prob, max_span)
    for name, ids, pad in _batches():
        got = rules.plm_train_masks(ids, seed, pad, max_span, contexts, permute_all)
        want = plm_loop(ids, seed, pad, max_span, prob, permute_all)
        for g, w in zip(got, want):
            assert torch.equal(g, w.to(g.dtype)), name
        assert got[0].dtype == torch.bool and got[1].dtype == got[2].dtype == torch.float32


def test_plm_force_writes_the_item_id_into_the_bool_mask():
    # A row whose walk masks nothing gets one forced position set to `item != 0`: with padding_idx=9
    # an item id 0 leaves the row without a target, as the reference's bool assignment does.
    ids = torch.tensor([[0, 0, 0, 9, 9, 9]])
    contexts = rules.plm_context_lengths(1 / 1000, 1)  # the single span starts far beyond the row
    for seed in range(20):
        mask, _, _ = rules.plm_train_masks(ids, seed, 9, 1, contexts, False)
        assert not mask.any()


def test_plm_span_lengths_are_uniform_in_range():
    spans = []
    ids = torch.randint(1, 9, (64, 60), generator=torch.Generator().manual_seed(0))
    plm_loop(ids, 123, 0, 5, 1 / 6, False, spans=spans)
    counts = np.bincount(spans, minlength=6)
    assert counts[0] == 0 and set(spans) == {1, 2, 3, 4, 5}
    assert np.all(np.abs(counts[1:] / len(spans) - 0.2) < 0.05)


def test_eval_rules_by_hand():
    ids = torch.tensor([[5, 3, 2, 0], [1, 2, 3, 4], [0, 0, 0, 0]])
    schema, targets = rules.last_item_targets(ids, 0)
    assert targets.tolist() == [[0, 0, 2, 0], [0, 0, 0, 4], [0, 0, 0, 0]]
    schema, targets = rules.predict_all(ids, 0)
    assert targets.tolist() == [[3, 2, 0, 0], [2, 3, 4, 0], [0, 0, 0, 0]]
    assert schema.tolist() == [[True, True, False, False], [True, True, True, False], [False] * 4]
    schema, targets = rules.mlm_inference_targets(ids, 0)
    assert targets.tolist() == [[0, 0, 0, 2, 0], [0, 0, 0, 0, 4], [0, 0, 0, 0, 0]]
    perm = rules.plm_eval_perm_mask(ids, 0)
    assert perm.dtype == torch.int64
    assert perm[0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0]]
    assert perm[2].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]]  # n - 1 = -1 wraps
    assert torch.equal(rules.causal_perm_mask(3, 4, "cpu")[1], torch.ones(4, 4, dtype=torch.int64).triu(1))


def test_clm_rules_by_hand():
    ids = torch.tensor([[5, 3, 2, 0], [1, 2, 3, 4]])
    schema, targets = rules.clm_targets(ids, 0, training=False, testing=True, last_item_only=True)
    assert targets.tolist() == [[0, 2, 0, 0], [0, 0, 4, 0]]
    assert schema.tolist() == (ids != 0).tolist()
    schema, targets = rules.clm_targets(ids, 0, training=True, testing=False, last_item_only=False)
    assert targets.tolist() == [[3, 2, 0, 0], [2, 3, 4, 0]]
    schema, targets = rules.clm_targets(ids, 0, training=False, testing=False, last_item_only=True)
    assert targets is ids and schema.tolist() == (ids != 0).tolist()


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
