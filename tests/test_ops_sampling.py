"""Gumbel-max sampling on every kernel backend equals the reference bit for bit."""
import numpy as np
import pytest
import torch

from fastmask.reference import sampling as ref_sampling

from helpers import SEEDS, assert_matches_reference, logits_cases, run_op, seed_tensor

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gumbel_argmax(backend, dtype):
    generator = torch.Generator().manual_seed(14)
    for case, (name, logits) in enumerate(logits_cases(generator, backend.interpreted)):
        if dtype == torch.float64:
            logits = logits.double() * (1 + 1e-9)  # values that round when cast to float32
        seed = seed_tensor(SEEDS[case % len(SEEDS)])
        assert_matches_reference(backend, "gumbel_argmax", logits.to(dtype), seed, context=(name,))


def test_gumbel_argmax_float64_beyond_float32_range(backend):
    logits = torch.tensor([[1e300, 1e39, -1e300, 3.0], [-1e300, -1e39, -1e40, -1e300]], dtype=torch.float64)
    for seed in SEEDS:
        assert_matches_reference(backend, "gumbel_argmax", logits, seed_tensor(seed))


def test_gumbel_argmax_tie_and_nan_rules(backend):
    # Values equal once the noise is absorbed: the first index wins; the first NaN wins outright.
    logits = torch.full((3, 300), -1e30, dtype=torch.float32)
    logits[0, [37, 100, 299]] = 1e30
    logits[1, [150, 20]] = float("nan")
    logits[1, 0] = float("inf")
    logits[2, [0, 299]] = float("inf")
    assert assert_matches_reference(backend, "gumbel_argmax", logits, seed_tensor(5)).tolist() == [37, 20, 0]


def test_gumbel_argmax_equal_values_in_a_later_block_do_not_win(backend):
    """A later column whose value only ties the best so far loses, however the columns are blocked."""
    seed, width = 4242, 32
    noise = ref_sampling.gumbel_noise(seed, np.zeros(1, dtype=np.uint64), 3 * width)[0]
    first, second = noise[:width], noise[width : 2 * width]
    a = int((first - 1).abs().argmin())
    b = width + int((second - noise[a]).abs().argmin())
    c = width + int(second.argmin())
    assert 0.5 * noise[b] <= noise[a] <= 2 * noise[b] and b != c  # Sterbenz: the difference is exact
    logits = torch.full((1, 3 * width), -1e30, dtype=torch.float32)
    logits[0, a] = 0.0
    logits[0, b] = noise[a] - noise[b]
    logits[0, c] = noise[a] - noise[c] - 0.5
    values = logits[0] + noise
    assert values[b] == values[a] and values[c] < values[a]
    assert assert_matches_reference(backend, "gumbel_argmax", logits, seed_tensor(seed)).tolist() == [a]


def test_gumbel_argmax_rows_and_seeds_change_the_sample(backend):
    logits = torch.zeros(64, 100 if backend.interpreted else 1000)
    samples = run_op(backend, "gumbel_argmax", logits, seed_tensor(3)).cpu()
    assert samples.unique().numel() > 40  # rows draw independent noise
    assert not torch.equal(samples, run_op(backend, "gumbel_argmax", logits, seed_tensor(4)).cpu())


def test_gumbel_argmax_strided_empty_and_untouched(backend):
    generator = torch.Generator().manual_seed(16)
    logits = torch.randn(400, 6, generator=generator).t()[:, ::3].to(backend.device)  # (6, 134), strided both ways
    before = logits.clone()
    assert_matches_reference(backend, "gumbel_argmax", logits, seed_tensor(77))
    assert torch.equal(logits, before)
    assert run_op(backend, "gumbel_argmax", logits[:0], seed_tensor(8)).shape == (0,)
