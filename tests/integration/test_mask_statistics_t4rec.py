"""fastmask's random training masks against Transformers4Rec's own modules, statistically.

For MLM, RTD and PLM, at default and other parameters, one batch of rows of varied lengths (padding
everywhere, rows of one and two items) is masked by Transformers4Rec and by fastmask, each with its
own fixed seed, and per-row statistics of the two samples are compared by Hotelling's two-sample T^2
(``mask_statistics.hotelling``): per-position target rate, targets per row (its distribution), lengths
of runs of consecutive targets, perm_mask density, and the factorisation order read from perm_mask
(for pairs of targets, how often the order follows the positions; the place of a row's first target
in the order).

False failures: each comparison rejects at p < ALPHA = 1e-4 (asymptotic chi^2 level; 23
comparisons, so under 0.25% for the whole file). The seeds are fixed, so every run gives the same
statistics.

Power: ``test_rejects_a_moved_parameter`` runs the same comparison with fastmask's parameter moved by
15% (``mlm_probability`` and ``plm_probability`` times 1.15, ``max_span_length`` + 1, which is 15% of
5 and of 8 rounded) and asserts that it rejects. The factorisation order has no parameter: its checks
are shown against an order that is left to right in 15% of the rows, and the permute_all position
check against masks that drop each row's last item, instead of a random one, in 15% of the rows. The
power of each check at the sample size used is in ``test_rejects_a_moved_parameter``'s docstring.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import pytest
import torch

pytest.importorskip("transformers4rec.torch")

from transformers4rec.torch import masking as t4r_masking  # noqa: E402

import mask_statistics as stats  # noqa: E402
from fastmask import masking as fm_masking  # noqa: E402

HIDDEN = 8
LENGTH = 24
# One design row per length, in this order, repeated: full rows, padding of every amount, 1 and 2 items.
DESIGN = [24, 24, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 4, 3, 2, 1]


class Config(NamedTuple):
    cls: str
    kwargs: dict
    rows: int
    checks: tuple


MLM_CHECKS = ("position", "row_count")
PLM_CHECKS = ("position", "row_count", "runs", "density", "order_pairs", "order_place")
PERMUTE_ALL_CHECKS = ("position", "order_pairs", "order_place")

CONFIGS = {
    "mlm": Config("MaskedLanguageModeling", {}, 8_000, MLM_CHECKS),
    "mlm_p0.4": Config("MaskedLanguageModeling", {"mlm_probability": 0.4}, 3_200, MLM_CHECKS),
    "rtd": Config("ReplacementLanguageModeling", {}, 8_000, MLM_CHECKS),
    "rtd_p0.4": Config("ReplacementLanguageModeling", {"mlm_probability": 0.4}, 3_200, MLM_CHECKS),
    "plm": Config("PermutationLanguageModeling", {}, 9_600, PLM_CHECKS),
    "plm_p0.35_span8": Config(
        "PermutationLanguageModeling", {"plm_probability": 0.35, "max_span_length": 8}, 6_400, PLM_CHECKS
    ),
    "plm_permute_all": Config("PermutationLanguageModeling", {"permute_all": True}, 4_800, PERMUTE_ALL_CHECKS),
}

# The alternative each check must reject: a parameter moved by 15%, or a 15% change of the order or of
# the dropped target where the rule has no parameter for it.
MOVES = {
    "position": "probability",
    "row_count": "probability",
    "density": "probability",
    "runs": "max_span_length",
    "order_pairs": "order",
    "order_place": "order",
}


class Sample(NamedTuple):
    schema: torch.Tensor
    perm_mask: Optional[torch.Tensor]


def row_lengths(rows: int) -> torch.Tensor:
    assert rows % len(DESIGN) == 0
    return torch.tensor(DESIGN).repeat(rows // len(DESIGN))


def item_ids(rows: int) -> torch.Tensor:
    ids = torch.randint(1, 1000, (rows, LENGTH), generator=torch.Generator().manual_seed(5))
    return ids.masked_fill(torch.arange(LENGTH) >= row_lengths(rows)[:, None], 0)


def t4rec_sample(config: Config, seed: int) -> Sample:
    module = getattr(t4r_masking, config.cls)(HIDDEN, **config.kwargs)
    # Transformers4Rec's RTD constructor drops mlm_probability (it hands its kwargs on as one argument
    # named `kwargs`); its masking reads the attribute, so set it there.
    for name, value in config.kwargs.items():
        setattr(module, name, value)
    threads = torch.get_num_threads()
    # Its PLM loops run tiny ops per row: a second thread only adds waits (5x slower on a busy machine).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module.compute_masked_targets(item_ids(config.rows), training=True)
    finally:
        torch.set_num_threads(threads)
    return Sample(module.mask_schema, getattr(module, "perm_mask", None))


def fastmask_sample(config: Config, seed: int, **changes) -> Sample:
    kwargs = {**config.kwargs, **changes}
    if config.cls == "ReplacementLanguageModeling":
        kwargs["use_mlm_probability"] = True  # as Transformers4Rec's, it ignores mlm_probability otherwise
    module = getattr(fm_masking, config.cls)(HIDDEN, generator=torch.Generator().manual_seed(seed), **kwargs)
    module.compute_masked_targets(item_ids(config.rows), training=True)
    return Sample(module.mask_schema, getattr(module, "perm_mask", None))


def features(check: str, config: Config, a: Sample, b: Sample):
    """Per-row vectors of statistic ``check`` for the two samples."""
    if check == "position":
        return a.schema.double(), b.schema.double()
    if check == "row_count":
        return stats.one_hot_merged(stats.targets_per_row(a.schema), stats.targets_per_row(b.schema))
    if check == "runs":  # runs of 1 .. max_span_length items, and longer ones (adjacent spans)
        longest = config.kwargs.get("max_span_length", 5) + 1
        return stats.run_length_counts(a.schema, longest), stats.run_length_counts(b.schema, longest)
    if check == "density":
        return stats.perm_mask_density(a.perm_mask), stats.perm_mask_density(b.perm_mask)
    if check == "order_pairs":
        return stats.kendall_s(a.schema, a.perm_mask), stats.kendall_s(b.schema, b.perm_mask)
    if check == "order_place":
        return stats.one_hot_merged(stats.first_target_place(a.schema, a.perm_mask),
                                    stats.first_target_place(b.schema, b.perm_mask))
    raise AssertionError(check)


def compare(check: str, config: Config, a: Sample, b: Sample) -> stats.Comparison:
    xa, xb = features(check, config, a, b)
    return stats.hotelling(xa, xb, row_lengths(config.rows))


@functools.lru_cache(maxsize=None)
def t4rec(name: str) -> Sample:
    """Transformers4Rec's sample of a config, drawn once (its PLM loops cost ~0.15 ms a row)."""
    return t4rec_sample(CONFIGS[name], seed=1000 + list(CONFIGS).index(name))


@functools.lru_cache(maxsize=None)
def fastmask(name: str) -> Sample:
    return fastmask_sample(CONFIGS[name], seed=3000 + list(CONFIGS).index(name))


def moved_sample(config: Config, move: str, seed: int) -> Sample:
    """fastmask's sample of ``config`` under the alternative ``move``."""
    if move == "probability":
        key, default = ("plm_probability", 1 / 6) if config.cls == "PermutationLanguageModeling" \
            else ("mlm_probability", 0.15)
        return fastmask_sample(config, seed, **{key: config.kwargs.get(key, default) * 1.15})
    if move == "max_span_length":
        return fastmask_sample(config, seed, max_span_length=config.kwargs.get("max_span_length", 5) + 1)
    sample = fastmask_sample(config, seed)
    changed = torch.rand(config.rows, generator=torch.Generator().manual_seed(seed)) < 0.15
    if move == "order":
        return Sample(sample.schema, stats.left_to_right_order(sample.schema, sample.perm_mask, changed))
    if move == "drop_last":  # permute_all: the row's last item is the one left out
        items = item_ids(config.rows) != 0
        last = torch.arange(LENGTH) == (row_lengths(config.rows) - 1)[:, None]
        return Sample(torch.where(changed[:, None], items & ~last, sample.schema), sample.perm_mask)
    raise AssertionError(move)


@functools.lru_cache(maxsize=None)
def moved(name: str, move: str) -> Sample:
    return moved_sample(CONFIGS[name], move, seed=2000 + list(CONFIGS).index(name))


def move_of(name: str, check: str) -> str:
    if CONFIGS[name].kwargs.get("permute_all") and check == "position":
        return "drop_last"
    return MOVES[check]


CASES = [(name, check) for name, config in CONFIGS.items() for check in config.checks]


@pytest.mark.parametrize("name,check", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_fastmask_matches_t4rec(name, check):
    config = CONFIGS[name]
    result = compare(check, config, t4rec(name), fastmask(name))
    assert result.p_value >= stats.ALPHA, f"{name} {check}: {result}"


@pytest.mark.parametrize("name,check", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_rejects_a_moved_parameter(name, check):
    """The check's power, shown: the same comparison with fastmask moved by 15% rejects.

    Power at the sizes used, from ``mask_statistics_power.py``: the noncentrality lambda of the
    alternative, measured on two 96 000-row samples of fastmask and scaled to the rows used, and
    P(miss) = P(noncentral chi^2_df(lambda) <= the ALPHA quantile):

    config           check        alternative      rows  df  lambda  P(miss)
    mlm, rtd         position     p x 1.15         8000  24     161  3e-10
    mlm, rtd         row_count    p x 1.15         8000  10     161  2e-13
    mlm, rtd p=0.4   position     p x 1.15         3200  24     272  4e-23
    mlm, rtd p=0.4   row_count    p x 1.15         3200  18     272  6e-25
    plm              position     p x 1.15         9600  24     589  3e-68
    plm              row_count    p x 1.15         9600   8     488  3e-63
    plm              runs         span 5 -> 6      9600   6     590  2e-82
    plm              density      p x 1.15         9600   1     460  2e-69
    plm              order_pairs  15% in order     9600   1     142  5e-16
    plm              order_place  15% in order     9600   4     100  4e-08
    plm p=.35 s=8    position     p x 1.15         6400  24    1048  2e-142
    plm p=.35 s=8    row_count    p x 1.15         6400  14    1147  2e-169
    plm p=.35 s=8    runs         span 8 -> 9      6400   9     349  2e-40
    plm p=.35 s=8    density      p x 1.15         6400   1     862  2e-143
    plm p=.35 s=8    order_pairs  15% in order     6400   1     226  4e-29
    plm p=.35 s=8    order_place  15% in order     6400   4     110  2e-09
    permute_all      position     15% drop last    4800  23     152  2e-09
    permute_all      order_pairs  15% in order     4800   1     296  1e-40
    permute_all      order_place  15% in order     4800   3     109  1e-09
    """
    config = CONFIGS[name]
    result = compare(check, config, t4rec(name), moved(name, move_of(name, check)))
    assert result.p_value < stats.ALPHA, f"{name} {check} under {move_of(name, check)}: {result}"


def test_permute_all_targets_every_item_but_one():
    """With permute_all the number of targets is fixed (a row of n items has n - 1), in both."""
    config = CONFIGS["plm_permute_all"]
    expected = row_lengths(config.rows) - 1
    assert torch.equal(stats.targets_per_row(t4rec("plm_permute_all").schema), expected)
    assert torch.equal(stats.targets_per_row(fastmask("plm_permute_all").schema), expected)
