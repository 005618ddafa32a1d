"""Per-row statistics of random training masks and a two-sample test that compares them.

Rows of a batch are independent draws, but positions within a row are not (spans, the forced and the
dropped target, the factorisation order). So every statistic is a vector per row and two samples are
compared with Hotelling's T^2 on the mean vectors, with the covariance estimated from the rows
themselves: asymptotically chi^2 with the covariance's rank as degrees of freedom, whatever the
dependence between the coordinates. Both samples are drawn from the same batch (the same row lengths);
the covariance is estimated within groups of equal row length, so the length mix adds no variance.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

# False-failure rate of one check (asymptotic); the checks use fixed seeds, so a run is reproducible.
ALPHA = 1e-4


class Comparison(NamedTuple):
    statistic: float
    df: int
    p_value: float

    def __str__(self):
        return f"chi2 = {self.statistic:.1f} on {self.df} df, p = {self.p_value:.2e}"


def chi2_sf(statistic: float, df: int) -> float:
    """P(chi^2_df > statistic)."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def critical_value(df: int, alpha: float = ALPHA) -> float:
    """The chi^2_df quantile that a statistic exceeds with probability ``alpha``."""
    low, high = 0.0, float(df) + 10.0
    while chi2_sf(high, df) > alpha:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if chi2_sf(middle, df) > alpha else (low, middle)
    return high


def miss_probability(noncentrality: float, df: int, alpha: float = ALPHA) -> float:
    """P(noncentral chi^2_df(noncentrality) <= the level-``alpha`` critical value): the chance that a
    test on df degrees of freedom misses an alternative with that noncentrality (one minus its power;
    a Poisson mixture of central chi^2 distribution functions)."""
    critical = critical_value(df, alpha)
    half = max(noncentrality, 0.0) / 2
    terms = torch.arange(int(half + 12 * half**0.5 + 60), dtype=torch.float64)
    weights = torch.exp(terms * math.log(half) - half - torch.lgamma(terms + 1)) if half > 0 \
        else (terms == 0).double()
    below = torch.special.gammainc((df + 2 * terms) / 2, torch.tensor(critical / 2, dtype=torch.float64))
    return float((weights * below).sum())


def hotelling(xa: torch.Tensor, xb: torch.Tensor, groups: torch.Tensor) -> Comparison:
    """Two-sample test of equal means of per-row vectors ``xa``, ``xb`` (N, d).

    Row i of both samples comes from the same design group ``groups[i]`` (its row length), so
    Var(mean_a - mean_b) = 2 S / N with S the average within-group covariance, estimated from both
    samples around each sample's group means. Directions of zero variance (coordinates that the rule
    fixes, such as padding) are left out of the statistic and of the degrees of freedom.
    """
    xa, xb = xa.double().reshape(len(xa), -1), xb.double().reshape(len(xb), -1)
    if xa.shape != xb.shape or groups.shape != (len(xa),):
        raise ValueError("both samples need one row per design row")
    n = len(xa)
    centred = []
    for x in (xa, xb):
        for group in groups.unique():
            rows = x[groups == group]
            centred.append(rows - rows.mean(0))
    centred = torch.cat(centred)
    num_groups = 2 * len(groups.unique())
    covariance = centred.T @ centred / (2 * n - num_groups) * 2 / n
    return quadratic_form(xa.mean(0) - xb.mean(0), covariance)


def one_sample_chi2(observed: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor) -> Comparison:
    """A sum of independent per-row vectors against its exact mean and covariance: chi^2 on the
    covariance's rank in the normal limit."""
    return quadratic_form(observed.double() - mean.double(), covariance.double())


def quadratic_form(difference: torch.Tensor, covariance: torch.Tensor) -> Comparison:
    """difference' covariance^-1 difference over the covariance's directions of non-zero variance,
    with their number as degrees of freedom."""
    values, vectors = torch.linalg.eigh(covariance)
    keep = values > values.max().clamp(min=1e-300) * 1e-9
    projected = vectors[:, keep].T @ difference
    statistic = float((projected**2 / values[keep]).sum())
    df = int(keep.sum())
    return Comparison(statistic, df, chi2_sf(statistic, df) if df else 1.0)


def one_hot_merged(values_a: torch.Tensor, values_b: torch.Tensor, min_count: int = 25):
    """One-hot encodings of two samples of integer categories; rare values at either end are merged
    into their neighbour until each end holds ``min_count`` of the pooled values (the merge depends
    on the pooled sample only, so it favours neither)."""
    pooled = torch.cat([values_a, values_b])
    low, high = int(pooled.min()), int(pooled.max())
    while low < high and int((pooled <= low).sum()) < min_count:
        low += 1
    while high > low and int((pooled >= high).sum()) < min_count:
        high -= 1
    return [torch.nn.functional.one_hot(v.clamp(low, high) - low, high - low + 1).double()
            for v in (values_a, values_b)]


# -- statistics of one sample ---------------------------------------------------------------------


def targets_per_row(schema: torch.Tensor) -> torch.Tensor:
    return schema.sum(1)


def run_length_counts(schema: torch.Tensor, longest: int) -> torch.Tensor:
    """(B, longest) float64: per row, the number of maximal runs of consecutive targets of length
    1, 2, ..., ``longest`` - 1 and (last column) ``longest`` or more."""
    batch, length = schema.shape
    padded = torch.nn.functional.pad(schema.int(), (1, 1))
    starts = (padded[:, 1:-1] == 1) & (padded[:, :-2] == 0)
    ends = (padded[:, 1:-1] == 1) & (padded[:, 2:] == 0)
    positions = torch.arange(length).expand(batch, length)
    start_at = positions[starts]  # runs in row-major order, starts and ends pair up
    runs = positions[ends] - start_at + 1
    rows = starts.nonzero()[:, 0]
    counts = torch.zeros(batch, longest, dtype=torch.float64)
    counts.index_put_((rows, runs.clamp(max=longest) - 1), torch.ones(len(runs), dtype=torch.float64),
                      accumulate=True)
    return counts


def perm_mask_density(perm_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1): the fraction of (query, key) pairs that the factorisation order hides."""
    return (perm_mask != 0).double().mean((1, 2)).unsqueeze(1)


def order_ranks(schema: torch.Tensor, perm_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) int64: each target's place in the factorisation order (0 = first) read from perm_mask;
    -1 off targets. A target sees (perm_mask 0) exactly the targets that come before it."""
    seen = (perm_mask == 0) & schema.unsqueeze(1)
    return torch.where(schema, seen.sum(2), -1)


def kendall_s(schema: torch.Tensor, perm_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1): per row, over pairs of targets, (pairs whose order follows the positions) - (pairs
    whose order reverses them). Mean 0 when the order is uniform, for any number of targets."""
    ranks = order_ranks(schema, perm_mask)
    both = schema.unsqueeze(2) & schema.unsqueeze(1)
    later = torch.ones(schema.shape[1], schema.shape[1], dtype=torch.bool).triu(1)
    signs = torch.sign(ranks.unsqueeze(1) - ranks.unsqueeze(2))  # [a, b] = sign(rank b - rank a)
    return (signs * (both & later)).sum((1, 2)).double().unsqueeze(1)


def first_target_place(schema: torch.Tensor, perm_mask: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """(B,) int64: the place of each row's first target (by position) in the order, as a quantile bin
    floor(bins * place / targets) in 0..bins-1; ``bins`` for rows with fewer than two targets. The
    place is uniform on 0..k-1 under a uniform order."""
    ranks = order_ranks(schema, perm_mask)
    k = schema.sum(1)
    first = schema.int().argmax(1)
    place = ranks.gather(1, first.unsqueeze(1)).squeeze(1)
    return torch.where(k >= 2, torch.div(bins * place, k.clamp(min=1), rounding_mode="floor"), bins)


def left_to_right_order(schema: torch.Tensor, perm_mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``perm_mask`` with the factorisation order of ``rows`` (bool (B,)) replaced by the targets'
    positions: a target hides itself and the targets after it, a non-target hides every target."""
    length = schema.shape[1]
    not_after = torch.ones(length, length, dtype=torch.bool).triu()  # [a, b]: a <= b
    ordered = schema.unsqueeze(1) & (~schema.unsqueeze(2) | not_after)
    return torch.where(rows[:, None, None], ordered.to(perm_mask.dtype), perm_mask)
