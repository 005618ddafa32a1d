"""The training masks of MLM and PLM follow their parameters: observed statistics against their exact
distributions, computed here from the rules themselves (no Transformers4Rec needed).

MLM: each item is a target with probability ``mlm_probability``; one random item of the row is then
made a target; a row whose items are all targets gives one random target back.
PLM: contexts follow one another from position 0 while a context starts inside the row's items; each
draws a span length s uniform in 1..``max_span_length``, spans int(s / ``plm_probability``) positions
and places s targets at a uniform offset that leaves the span inside it. A span that starts past the
row's items is dropped; one that starts inside may run into padding (clipped at the batch's width). A
row without a target gets one random item; a row whose count of span positions (padding included)
equals its number of items gives one of those positions back.

Every check rejects at p < ALPHA = 1e-4 (a z or chi^2 bound on exact moments, normal limit); the
power of each is stated in its docstring and shown by a test that runs the same check on a module that
ignores its parameter (monkeypatched to the default, as a module that dropped it would behave) and on
one whose parameter is moved by 15%.
"""
import functools
import math

import pytest
import torch

import mask_statistics as stats
from fastmask import masking as M

WIDTH = 12
# One design row per length, repeated: full rows and padded ones (1 and 2 items included).
DESIGN = [12, 12, 12, 11, 9, 7, 5, 3, 2, 1]


def item_ids(rows: int) -> torch.Tensor:
    lengths = torch.tensor(DESIGN).repeat(rows // len(DESIGN))
    ids = torch.randint(1, 100, (len(lengths), WIDTH), generator=torch.Generator().manual_seed(0))
    return ids.masked_fill(torch.arange(WIDTH) >= lengths[:, None], 0)


# -- exact distributions from the rules ------------------------------------------------------------


def mlm_count_distribution(items: int, probability: float) -> torch.Tensor:
    """(items + 1,) float64: P(a row of ``items`` items ends with k targets)."""
    k = torch.arange(items + 1, dtype=torch.float64)
    binomial = torch.tensor([math.comb(items, j) * probability**j * (1 - probability) ** (items - j)
                             for j in range(items + 1)], dtype=torch.float64)
    forced = torch.zeros(items + 2, dtype=torch.float64)
    forced[: items + 1] += binomial * k / items  # the forced item was already a target
    forced[1: items + 2] += binomial * (1 - k / items)
    final = forced[: items + 1].clone()
    final[items - 1] += final[items]  # every item a target: one given back
    final[items] = 0
    return final


def popcounts(width: int) -> torch.Tensor:
    masks = torch.arange(1 << width)
    return sum((masks >> bit) & 1 for bit in range(width))


def plm_mask_distribution(items: int, width: int, probability: float, max_span: int) -> torch.Tensor:
    """(2**width,) float64: P(the row's final targets are the bit mask m) for a row of ``items`` items
    in a batch of ``width`` positions (bit j = position j)."""
    size = 1 << width
    contexts = [int(span / probability) for span in range(1, max_span + 1)]
    spans_from = {}  # context start -> distribution of the spans placed from there on
    for start in range(items - 1, -1, -1):
        dist = torch.zeros(size, dtype=torch.float64)
        for span, context in enumerate(contexts, 1):
            nxt = spans_from.get(start + context)
            if nxt is None:  # no more spans: the empty mask
                support, weights = torch.zeros(1, dtype=torch.int64), torch.ones(1, dtype=torch.float64)
            else:
                support = nxt.nonzero().squeeze(1)
                weights = nxt[support]
            offsets = context - span + 1
            for first in range(start, start + offsets):
                bits = (1 << min(first + span, width)) - (1 << first) if first < items else 0
                dist.index_add_(0, support | bits, weights / (max_span * offsets))
        spans_from[start] = dist
    dist = spans_from[0]
    # No target: one random item.
    for item in range(items):
        dist[1 << item] += dist[0] / items
    dist[0] = 0
    # As many span positions as items: one of them given back.
    counts = popcounts(width)
    for mask in ((counts == items) & (dist > 0)).nonzero().squeeze(1).tolist():
        weight = dist[mask].item()
        dist[mask] = 0
        for bit in range(width):
            if mask >> bit & 1:
                dist[mask & ~(1 << bit)] += weight / items
    # Only the row's items hold targets.
    final = torch.zeros(size, dtype=torch.float64)
    final.index_add_(0, torch.arange(size) & ((1 << items) - 1), dist)
    return final


def run_length_vectors(width: int, longest: int) -> torch.Tensor:
    """(2**width, longest): run-length counts (as mask_statistics.run_length_counts) of every mask."""
    masks = torch.arange(1 << width)
    schema = ((masks[:, None] >> torch.arange(width)) & 1).bool()
    return stats.run_length_counts(schema, longest)


# -- the checks -----------------------------------------------------------------------------------


def z_bound() -> float:
    """|z| above which a two-sided normal test rejects at ALPHA."""
    return math.sqrt(stats.critical_value(1))


def check_mlm_targets(module, probability: float, rows: int = 5_000) -> float:
    """z of the batch's number of targets against its exact mean and variance at ``probability``."""
    ids = item_ids(rows)
    module.compute_masked_targets(ids, training=True)
    mean = variance = 0.0
    for items, times in zip(*(ids != 0).sum(1).unique(return_counts=True), strict=True):
        dist = mlm_count_distribution(int(items), probability)
        k = torch.arange(int(items) + 1, dtype=torch.float64)
        mean += int(times) * float((dist * k).sum())
        variance += int(times) * (float((dist * k * k).sum()) - float((dist * k).sum()) ** 2)
    return (int(module.mask_schema.sum()) - mean) / math.sqrt(variance)


@functools.lru_cache(maxsize=None)
def plm_moments(probability: float, max_span: int, longest: int):
    """Per design row: the exact mean and covariance of (number of targets, run-length counts)."""
    counts = popcounts(WIDTH).double()[:, None]
    vectors = torch.cat([counts, run_length_vectors(WIDTH, longest)], 1)
    moments = {}
    for items in set(DESIGN):
        dist = plm_mask_distribution(items, WIDTH, probability, max_span)
        mean = dist @ vectors
        centred = vectors - mean
        moments[items] = mean, centred.T @ (centred * dist[:, None])
    return moments


def check_plm(module, probability: float, max_span: int, rows: int = 5_000):
    """The batch's number of targets (z against its exact moments) and its run-length counts
    (chi^2 of the total counts against their exact mean and covariance), at the stated parameters."""
    longest = max_span + 1
    ids = item_ids(rows)
    module.compute_masked_targets(ids, training=True)
    schema = module.mask_schema
    moments = plm_moments(probability, max_span, longest)
    mean = sum(moments[n][0] for n in (ids != 0).sum(1).tolist())
    covariance = sum(moments[n][1] for n in (ids != 0).sum(1).tolist())
    observed = torch.cat([schema.sum().double()[None], stats.run_length_counts(schema, longest).sum(0)])
    z = float((observed[0] - mean[0]) / covariance[0, 0].sqrt())
    runs = stats.one_sample_chi2(observed[1:], mean[1:], covariance[1:, 1:])
    return z, runs


def plm(seed: int, **kwargs):
    return M.PermutationLanguageModeling(8, generator=torch.Generator().manual_seed(seed), **kwargs)


def mlm(seed: int, **kwargs):
    return M.MaskedLanguageModeling(8, generator=torch.Generator().manual_seed(seed), **kwargs)


# -- the rules' own numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("probability,max_span", [(1 / 6, 5), (0.5, 5), (0.4, 3), (0.3, 8)])
def test_plm_span_rule_distribution_is_a_distribution(probability, max_span):
    for items in set(DESIGN):
        dist = plm_mask_distribution(items, WIDTH, probability, max_span)
        assert torch.isclose(dist.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)
        assert dist.min() >= 0
        assert dist[torch.arange(1 << WIDTH) >> items != 0].sum() == 0  # nothing on padding


def test_plm_span_rule_by_hand_on_a_one_item_row():
    """p = 0.5, spans 1..5, contexts 2s: a span starts on the item with probability 1/(s + 1). A span
    of 1 (0.2 * 0.5) or no span (then the forced target; 1 - 0.1 - 0.2 * (1/3 + 1/4 + 1/5 + 1/6))
    leaves one target among the row's one item, which is given back; a longer span runs into the
    padding, so its count (2 or more) is not the row's 1 and the item stays a target."""
    dist = plm_mask_distribution(1, WIDTH, 0.5, 5)
    assert math.isclose(float(dist[0]), 0.1 + 0.71, rel_tol=1e-12)
    assert math.isclose(float(dist[1]), 0.19, rel_tol=1e-12)


def test_plm_long_rows_approach_mean_span_over_mean_context():
    """Far from the row's ends the target rate is E[span] / E[context] over the span table."""
    width, probability, max_span = 16, 0.4, 3
    contexts = [int(s / probability) for s in range(1, max_span + 1)]
    expected = sum(range(1, max_span + 1)) / sum(contexts)
    dist = plm_mask_distribution(width, width, probability, max_span)
    rate_by_position = (dist[:, None] * ((torch.arange(1 << width)[:, None] >> torch.arange(width)) & 1)).sum(0)
    # The rule's stationary rate: the middle positions average E[s]/E[ctx] to within the edge effects.
    assert abs(float(rate_by_position[4:12].mean()) - expected) < 0.01


def test_mlm_count_distribution_matches_the_rule_by_hand():
    # Two items at p: K=0 (forced) -> 1; K=1 -> 1 or 2 (-> 1); K=2 -> 1. Always one target.
    assert torch.allclose(mlm_count_distribution(2, 0.3), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(mlm_count_distribution(1, 0.3), torch.tensor([1.0, 0.0], dtype=torch.float64))
    dist = mlm_count_distribution(5, 0.4)
    k = torch.arange(6, dtype=torch.float64)
    # E = n p + 1 - p - p^(n-1): the forced target adds 1 - K/n, the give-back takes P(all) = p^(n-1).
    assert math.isclose(float((dist * k).sum()), 5 * 0.4 + 1 - 0.4 - 0.4**4, rel_tol=1e-12)


# -- fastmask against the rules ----------------------------------------------------------------------


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_mlm_target_count_follows_mlm_probability(probability):
    """|z| < 3.89 (two-sided ALPHA = 1e-4). Power, 5 000 rows, exact moments at the alternative: a
    module that ignores mlm_probability = 0.4 (uses 0.15) expects z = -91; 0.4 moved to 0.46 z = +22,
    0.15 moved to 0.1725 z = +11 (miss 3e-12)."""
    z = check_mlm_targets(mlm(11, mlm_probability=probability), probability)
    assert abs(z) < z_bound(), z


@pytest.mark.parametrize("probability,max_span", [(1 / 6, 5), (0.5, 5), (0.3, 8)])
def test_plm_targets_and_spans_follow_their_parameters(probability, max_span):
    """Targets of the batch: |z| < 3.89; run-length counts: chi^2 below its ALPHA = 1e-4 quantile.
    Power, 5 000 rows, exact moments at the alternative: the count's z expects -186 for a module that
    ignores plm_probability = 0.5 (uses 1/6), +98 for 0.5 moved to 0.575, +12 for 1/6 moved to 0.19
    (miss 3e-16). The run counts' noncentrality is 1 196 on 9 df for a module that ignores
    max_span_length = 8 (uses 5), 2 763 for 8 moved to 9, 15 824 on 6 df for 5 moved to 6 (miss
    below 1e-180 each); the count alone does not see max_span_length (|z| <= 1.5)."""
    z, runs = check_plm(plm(12, plm_probability=probability, max_span_length=max_span), probability, max_span)
    assert abs(z) < z_bound(), z
    assert runs.p_value >= stats.ALPHA, runs


# -- the same checks reject a module that ignores or moves its parameter -------------------------------


def test_mlm_check_rejects_ignored_or_moved_probability(monkeypatch):
    """At these seeds: z = -90.5 (0.4 ignored), +22.4 (0.4 -> 0.46), +11.4 (0.15 -> 0.1725)."""
    broken = mlm(11, mlm_probability=0.4)
    monkeypatch.setattr(broken, "mlm_probability", 0.15)
    assert check_mlm_targets(broken, 0.4) < -z_bound()
    assert check_mlm_targets(mlm(11, mlm_probability=0.4 * 1.15), 0.4) > z_bound()
    assert check_mlm_targets(mlm(11, mlm_probability=0.15 * 1.15), 0.15) > z_bound()


def test_plm_check_rejects_ignored_or_moved_plm_probability(monkeypatch):
    """At these seeds: z = -185.1 (0.5 ignored), +98.1 (0.5 -> 0.575), +13.2 (1/6 -> 0.19)."""
    broken = plm(12, plm_probability=0.5)
    monkeypatch.setattr(broken, "plm_probability", 1 / 6)
    z, _ = check_plm(broken, 0.5, 5)
    assert z < -z_bound()
    z, _ = check_plm(plm(12, plm_probability=0.5 * 1.15), 0.5, 5)
    assert z > z_bound()
    z, _ = check_plm(plm(12, plm_probability=1 / 6 * 1.15), 1 / 6, 5)
    assert z > z_bound()


def test_plm_check_rejects_ignored_or_moved_max_span_length(monkeypatch):
    """At these seeds: chi^2 = 1 299 on 9 df (8 ignored), 2 187 (8 -> 9), 15 994 on 6 df (5 -> 6)."""
    broken = plm(12, plm_probability=0.3, max_span_length=8)
    monkeypatch.setattr(broken, "max_span_length", 5)
    _, runs = check_plm(broken, 0.3, 8)
    assert runs.p_value < stats.ALPHA, runs
    _, runs = check_plm(plm(12, plm_probability=0.3, max_span_length=9), 0.3, 8)
    assert runs.p_value < stats.ALPHA, runs
    _, runs = check_plm(plm(12, max_span_length=6), 1 / 6, 5)
    assert runs.p_value < stats.ALPHA, runs
