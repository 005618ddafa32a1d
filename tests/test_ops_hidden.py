"""Ranks, top-k and Gumbel samples straight from hidden states, on every kernel backend.

Integer-valued inputs make every partial sum exact in float32, so every backend equals the reference
(and the materialised scores) bit for bit; the C++ kernels also equal it on real-valued inputs (the
reference's order of operations). Tensor-core kernels sum in their own order: on real-valued inputs they
may rank differently only items whose scores lie within float32 rounding of each other.
"""
import os
import subprocess
import sys

import pytest
import torch

from fastmask import ops
from fastmask.reference import hidden as ref_hidden

from helpers import assert_matches_reference, assert_same, run_op, seed_tensor

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Triton's interpreter multiplies NaN and infinite operands with numpy, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")


def integers(generator, *shape, low=-3, high=4):
    return torch.randint(low, high, shape, generator=generator).float()


def _targets(generator, rows, items, per_row):
    chosen = torch.randint(0, max(items, 1), (rows, per_row), generator=generator)
    chosen[torch.rand(rows, per_row, generator=generator) < 0.15] = -1
    chosen[torch.rand(rows, per_row, generator=generator) < 0.05] = items  # outside the catalogue: rank -1
    return chosen


def hidden_cases(generator, interpreted: bool, exact_infinities: bool = True):
    """(name, hidden, item_weight, bias, targets): integer-valued float32, so that every sum is exact.

    Sizes are odd, below and past a tile, with ties, NaN and infinite scores, no targets and no rows.
    ``exact_infinities``: include infinite entries of item_weight (backends that split values, as 3xTF32
    does, turn them into NaN).
    """
    def case(name, rows, dim, items, per_row):
        return (name, integers(generator, rows, dim), integers(generator, items, dim), integers(generator, items),
                _targets(generator, rows, items, per_row))

    special = case("nan and infinite scores", 7, 5, 90, 6)
    special[3][[3, 40]] = float("inf")
    special[3][[7, 50, 51]] = float("-inf")
    special[3][[11, 60]] = float("nan")
    special[1][2] = float("nan")  # a row of NaN scores: ranked by id
    special[4][4, :3] = torch.tensor([11, 60, 3])
    cases = [
        case("one item", 3, 4, 1, 1),
        case("odd sizes", 13, 7, 300, 3),
        ("ties", integers(generator, 6, 3, low=-1, high=2), integers(generator, 200, 3, low=-1, high=2),
         integers(generator, 200, low=0, high=2), _targets(generator, 6, 200, 5)),
        special,
        case("no targets", 4, 6, 50, 0),
        case("no rows", 0, 6, 50, 2),
        case("d = 0", 3, 0, 40, 2),
        case("d past one block", 5, 70, 40, 2),
    ]
    if exact_infinities:
        weights = cases[1][2].clone()
        weights[[5, 9], 2] = float("inf")
        weights[17, 0] = float("-inf")
        cases.append(("infinite weights", cases[1][1], weights, cases[1][3], cases[1][4]))
    if not interpreted:
        cases += [case("tiles + 5", 21, 64, 2 * 768 + 5, 4), case("wide d", 9, 130, 5000, 2),
                  case("many rows", 300, 16, 3000, 1)]
    return cases


def _cases(backend, generator, dtype):
    exact_infinities = not (backend.name == "triton" and dtype == torch.float32)
    for name, hidden, weight, bias, targets in hidden_cases(generator, backend.interpreted, exact_infinities):
        for with_bias in (bias, None):
            yield name, hidden.to(dtype), weight.to(dtype), None if with_bias is None else with_bias.to(dtype), targets


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_ranks_from_hidden(backend, dtype):
    generator = torch.Generator().manual_seed(31)
    for name, hidden, weight, bias, targets in _cases(backend, generator, dtype):
        assert_matches_reference(backend, "target_ranks_from_hidden", hidden, weight, targets, bias, context=(name,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_from_hidden(backend, dtype):
    generator = torch.Generator().manual_seed(32)
    for name, hidden, weight, bias, _ in _cases(backend, generator, dtype):
        for k in sorted({0, 1, min(7, weight.shape[0]), min(40, weight.shape[0])}):
            assert_matches_reference(backend, "topk_from_hidden", hidden, weight, k, bias, context=(name, k))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gumbel_argmax_from_hidden(backend, dtype):
    generator = torch.Generator().manual_seed(33)
    for case, (name, hidden, weight, bias, _) in enumerate(_cases(backend, generator, dtype)):
        if weight.shape[0] == 0:
            continue
        for seed in ((0, -1) if case % 2 else (2**40 + 7,)):
            assert_matches_reference(backend, "gumbel_argmax_from_hidden", hidden, weight, bias, seed_tensor(seed),
                                     context=(name, seed))


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_scores_and_counts_from_hidden(backend, dtype):
    generator = torch.Generator().manual_seed(34)
    for name, hidden, weight, bias, targets in _cases(backend, generator, dtype):
        scores = assert_matches_reference(backend, "target_scores_from_hidden", hidden, weight, targets, bias,
                                          context=(name,))
        for first_item in (0, 3):
            assert_matches_reference(backend, "count_ahead_from_hidden", hidden, weight, bias, scores, targets,
                                     first_item, context=(name, first_item))


def test_real_valued_scores_in_the_reference_order(backend):
    """The C++ kernels sum in the reference's order: the same bits on any input."""
    if backend.name != "cpp":
        pytest.skip("tensor-core kernels sum in their own order (test_real_valued_differences_are_near_ties)")
    generator = torch.Generator().manual_seed(35)
    for rows, dim, items in [(13, 64, 1541), (6, 33, 300), (9, 1, 130)]:
        hidden, weight = torch.randn(rows, dim, generator=generator), torch.randn(items, dim, generator=generator)
        bias, targets = torch.randn(items, generator=generator), _targets(generator, rows, items, 3)
        for dtype in DTYPES:
            args = (hidden.to(dtype), weight.to(dtype))
            b = bias.to(dtype)
            assert_matches_reference(backend, "target_ranks_from_hidden", *args, targets, b)
            assert_matches_reference(backend, "topk_from_hidden", *args, 9, b)
            assert_matches_reference(backend, "gumbel_argmax_from_hidden", *args, b, seed_tensor(5))
            assert_matches_reference(backend, "target_scores_from_hidden", *args, targets, None)


@pytest.mark.parametrize("integer_valued", [False, True])
def test_ranks_are_self_consistent(backend, integer_valued):
    """Ranking every item of a row gives each rank once: a target's score is the one its tile scan sees."""
    generator = torch.Generator().manual_seed(36)
    rows, dim, items = (5, 24, 70) if backend.interpreted else (12, 64, 1700)
    make = integers if integer_valued else (lambda g, *shape: torch.randn(*shape, generator=g))
    hidden, weight, bias = make(generator, rows, dim), make(generator, items, dim), make(generator, items)
    everything = torch.arange(items).repeat(rows, 1)
    for dtype, with_bias in zip(DTYPES, (bias, None, bias), strict=True):
        with_bias = None if with_bias is None else with_bias.to(dtype)
        ranks = run_op(backend, "target_ranks_from_hidden", hidden.to(dtype), weight.to(dtype), everything, with_bias)
        assert torch.equal(ranks.cpu().sort(dim=1).values, everything), dtype


def _untied(generator, dtype):
    """Integer-valued inputs whose scores are all distinct: the bias spaces items 32 apart, |h . w| < 16."""
    rows, dim, items = 9, 3, 200
    hidden, weight = integers(generator, rows, dim, low=-2, high=3), integers(generator, items, dim, low=-2, high=3)
    bias = 32.0 * torch.randperm(items, generator=generator).float()
    return hidden.to(dtype), weight.to(dtype), bias.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_valued_inputs_equal_the_materialised_path(backend, dtype):
    """target_ranks, torch.topk (untied) and gumbel_argmax on hidden @ item_weight.T + bias, bit for bit."""
    generator = torch.Generator().manual_seed(37)
    for name, hidden, weight, bias, targets in _cases(backend, generator, dtype):
        scores = hidden.float() @ weight.float().T + (0 if bias is None else bias.float())
        got = run_op(backend, "target_ranks_from_hidden", hidden, weight, targets, bias).cpu()
        assert_same(got, ops.target_ranks(scores, targets), name)
        if weight.shape[0]:
            got = run_op(backend, "gumbel_argmax_from_hidden", hidden, weight, bias, seed_tensor(9)).cpu()
            assert_same(got, ops.gumbel_argmax(scores, seed_tensor(9)), name)
    hidden, weight, bias = _untied(generator, dtype)
    scores = hidden.float() @ weight.float().T + bias.float()
    assert scores.sort(dim=1).values.diff(dim=1).ne(0).all()
    values, ids = run_op(backend, "topk_from_hidden", hidden, weight, 25, bias)
    expected = torch.topk(scores, 25)
    assert_same((values.cpu(), ids.cpu()), (expected.values, expected.indices))


# Float32 rounding of a sum of d products and a bias: |fl(s) - s| <= gamma(d + 2) * (sum |h_i w_i| + |b|),
# gamma(n) = n u / (1 - n u), in any order of summation, with or without fused multiply-adds (u = 2^-24).
# 3xTF32 products (Triton, float32 inputs on a GPU) keep about 21 bits: u = 2^-21 covers them.
def _rounding_bound(hidden, weight, bias, unit):
    magnitude = hidden.double().abs() @ weight.double().abs().T
    if bias is not None:
        magnitude += bias.double().abs()
    n = hidden.shape[1] + 2
    return n * unit / (1 - n * unit) * magnitude


def _near_tie_inputs(generator, rows, dim, pairs):
    """Real-valued inputs where items come in twins, one weight nudged by one ulp: their scores differ by far
    less than rounding, so their order depends on the order of summation."""
    hidden = torch.randn(rows, dim, generator=generator)
    weight = torch.randn(pairs, dim, generator=generator)
    twins = weight.clone()
    twins[:, 0] = torch.nextafter(twins[:, 0], torch.tensor(float("inf")))
    weight = torch.stack([weight, twins], 1).reshape(2 * pairs, dim)
    bias = torch.randn(pairs, generator=generator).repeat_interleave(2)
    targets = torch.randint(0, 2 * pairs, (rows, 3), generator=generator)
    return hidden, weight, bias, targets


def _ahead(scores, target):
    """Which items rank before item ``target`` in one row of ``scores``."""
    return (scores > scores[target]) | ((scores == scores[target]) & (torch.arange(scores.shape[0]) < target))


def test_real_valued_differences_are_near_ties(backend):
    """Against the materialised path (torch's matmul, its own order), ranks and top-k differ only where
    scores lie within the rounding bound of each other; measured rates are in README."""
    generator = torch.Generator().manual_seed(38)
    rows, dim, pairs = (6, 40, 60) if backend.interpreted else (64, 64, 2000)
    hidden, weight, bias, targets = _near_tie_inputs(generator, rows, dim, pairs)
    materialised = hidden @ weight.T + bias
    unit = 2.0**-21 if (backend.name == "triton" and not backend.interpreted) else 2.0**-24
    bound = _rounding_bound(hidden, weight, bias, unit)
    fused_scores = ref_hidden.item_scores(hidden, weight, bias)  # what the C++ kernels compute
    ranks = run_op(backend, "target_ranks_from_hidden", hidden, weight, targets, bias).cpu()
    expected = ops.target_ranks(materialised, targets)
    disagreements = 0
    for n, m in (ranks != expected).nonzero().tolist():
        t = targets[n, m]
        # Items whose side of the target differs between the two score sets.
        flipped = (_ahead(materialised[n], t) != _ahead(fused_scores[n], t)).nonzero().flatten()
        if backend.name == "cpp":
            assert flipped.numel() > 0
        gap = (materialised[n, flipped].double() - materialised[n, t].double()).abs()
        assert (gap <= 2 * (bound[n, flipped] + bound[n, t])).all(), (n, m, gap)
        disagreements += 1
    values, ids = run_op(backend, "topk_from_hidden", hidden, weight, 10, bias)
    expected_values, expected_ids = torch.topk(materialised, 10)
    for n in range(rows):
        differ = set(ids[n].tolist()) ^ set(expected_ids[n].tolist())
        if differ:  # only near ties at the cut: every such item is within the bound of the 10th score
            tenth = expected_values[n, -1].double()
            for item in differ:
                assert abs(materialised[n, item].double() - tenth) <= 4 * bound[n].max(), (n, item)
    scale = bound.max().item()
    assert (values.cpu().double() - materialised.gather(1, ids.cpu()).double()).abs().max() <= 2 * scale
    assert disagreements < ranks.numel()


def test_strided_inputs_are_read_and_left_untouched(backend):
    generator = torch.Generator().manual_seed(39)
    hidden = integers(generator, 14, 9).t()[:, ::2]  # (9, 7), strided both ways
    weight = integers(generator, 60, 14)[:, ::2]  # (60, 7)
    bias = integers(generator, 120)[::2]
    targets = torch.randint(-1, 60, (4, 9), generator=generator).t()  # (9, 4), transposed
    inputs = (hidden, weight, bias, targets)
    copies = [tensor.clone() for tensor in inputs]
    assert_matches_reference(backend, "target_ranks_from_hidden", hidden, weight, targets, bias)
    assert_matches_reference(backend, "topk_from_hidden", hidden, weight, 4, bias)
    assert_matches_reference(backend, "gumbel_argmax_from_hidden", hidden, weight, bias, seed_tensor(4))
    assert all(torch.equal(tensor, copy) for tensor, copy in zip(inputs, copies, strict=True))


def test_a_nan_score_is_sampled_first(backend):
    hidden = torch.ones(3, 2)
    weight = torch.zeros(300, 2)
    bias = torch.full((300,), -1e30)
    bias[[150, 20]] = float("nan")
    bias[5] = float("inf")
    samples = run_op(backend, "gumbel_argmax_from_hidden", hidden, weight, bias, seed_tensor(5)).cpu()
    assert samples.tolist() == [20, 20, 20]


@pytest.mark.parametrize("environment", [{"FASTMASK_CPU_PORTABLE": "1"}, {"FASTMASK_CPU_AVX512": "0"}])
def test_every_cpu_code_path_equals_the_reference(environment):
    """The AVX-512, AVX2 and portable micro-kernels give the same bits (this process runs the best one)."""
    script = """
import torch, fastmask
from fastmask import ops
if "cpp" not in fastmask.backends():
    raise SystemExit(0)
g = torch.Generator().manual_seed(40)
for rows, dim, items in [(13, 64, 1541), (5, 3, 40), (7, 0, 9)]:
    h, w, b = torch.randn(rows, dim, generator=g), torch.randn(items, dim, generator=g), torch.randn(items, generator=g)
    t = torch.randint(-1, items, (rows, 2), generator=g)
    with fastmask.use_backend("cpp"):
        got = (ops.target_ranks_from_hidden(h, w, t, b), *ops.topk_from_hidden(h, w, 5, b),
               ops.gumbel_argmax_from_hidden(h, w, b, torch.tensor([3])))
    reference = {name: ops.TABLE[name].reference for name in ops.TABLE}
    want = (reference["target_ranks_from_hidden"](h, w, t, b), *reference["topk_from_hidden"](h, w, 5, b),
            reference["gumbel_argmax_from_hidden"](h, w, b, torch.tensor([3])))
    assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True)), (rows, dim, items)
print("ok")
"""
    env = dict(os.environ, **environment)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
