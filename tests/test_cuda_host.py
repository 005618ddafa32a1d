"""The CUDA kernels' rules built for the host, against fastmask.reference.

tests/cuda_host_rules.cpp drives the same per-row and per-element functions the kernels call
(csrc/rules.h, csrc/cuda/kernel_steps.cuh), with the kernels' decomposition (warp-per-row lanes,
(row, query band) writers, (row, split, thread) scans), so these tests check the device logic bit
for bit without a GPU. Skipped without a C++ compiler; a compile error of the rules is a failure.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmask.reference import masking as ref_masking
from fastmask.reference import philox
from fastmask.reference import ranking as ref_ranking
from fastmask.reference import sampling as ref_sampling

from helpers import assert_same

# Philox keys, including ones with the top bit set (negative as an int64 seed tensor).
SEEDS = [0, 1, 0x243F6A8885A308D3, 2**63 + 5, 2**64 - 1]
# Under this key, row 3 of a (8, 64) batch draws the same factorisation-order key at positions 3
# and 42 (found by search), so its perm_mask depends on the index tie-break.
PLM_KEY_TIE = {"seed": 169481, "shape": (8, 64), "row": 3, "positions": (3, 42)}
MASK_SHAPES = [(1, 1), (3, 1), (2, 2), (5, 7), (6, 31), (4, 32), (7, 33), (9, 64), (3, 100), (2, 257)]


def item_ids(batch: int, length: int, padding_idx: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Ids in [0, 6) (0 is a real item when padding_idx != 0) with padding anywhere in a row.

    Row 0 is all padding, row 1 holds one item (at a random place), the others mix padding rates.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, size=(batch, length))
    ids[ids == padding_idx] = (padding_idx + 1) % 6
    pad_rate = rng.choice([0.0, 0.2, 0.5, 0.9, 1.0], size=(batch, 1))
    pad = rng.random((batch, length)) < pad_rate
    if batch > 0:
        pad[0] = True
    if batch > 1 and length > 0:
        pad[1] = True
        pad[1, rng.integers(length)] = False
    ids[pad] = padding_idx
    return torch.from_numpy(ids).to(dtype)


def special_logits(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Rows that exercise the argmax rules: NaN first wins, +inf ties, all -inf, huge spreads."""
    rows = [np.full(vocab, -np.inf), np.full(vocab, 1.5)]
    with_nan = rng.normal(size=vocab)
    with_nan[rng.integers(vocab, size=2)] = np.nan
    rows.append(with_nan)
    with_inf = rng.normal(size=vocab)
    with_inf[rng.integers(vocab, size=3)] = np.inf
    rows.append(with_inf)
    nan_and_inf = np.full(vocab, np.inf)
    nan_and_inf[-1] = np.nan
    rows.append(nan_and_inf)
    rows.append(rng.normal(scale=30.0, size=vocab))
    rows.append(rng.normal(scale=1e-3, size=vocab) + 1e4)
    return np.stack(rows)


def gumbel_logits(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Plain rows at three temperatures, then the special rows."""
    return np.concatenate([rng.normal(size=(3, vocab)) * [[0.1], [1.0], [8.0]], special_logits(vocab, rng)])


def rank_scores(rows: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Ties (small integers), signed zeros, NaNs and infinities; row 0 has none of them."""
    scores = rng.integers(-3, 4, size=(rows, vocab)).astype(np.float64)
    scores[scores == 0] = rng.choice([0.0, -0.0], size=int((scores == 0).sum()))
    scores[rng.random((rows, vocab)) < 0.05] = np.nan
    scores[rng.random((rows, vocab)) < 0.03] = np.inf
    scores[rng.random((rows, vocab)) < 0.03] = -np.inf
    scores[0] = rng.normal(size=vocab)
    return scores


def rank_items(rows: int, targets: int, vocab: int, rng: np.random.Generator) -> torch.Tensor:
    """Item columns in [0, vocab), with -1 (no item) and other items outside the row (also none) mixed in."""
    items = torch.from_numpy(rng.integers(-1, vocab, size=(rows, targets)))
    items[torch.from_numpy(rng.random((rows, targets)) < 0.1)] = -7
    items[torch.from_numpy(rng.random((rows, targets)) < 0.05)] = vocab
    return items


ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "cuda_host_rules.cpp"

ITEM_TYPES = {torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4}
KERNEL_BAND_ROWS = 16  # kBandRows in csrc/cuda/masking.cu
KERNEL_THREADS = 256  # kThreads in csrc/cuda/sampling.cu and ranking.cu

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_U64 = ctypes.c_uint64
_INT = ctypes.c_int
_BOOL = ctypes.c_bool


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    library = tmp_path_factory.mktemp("cuda_host") / "cuda_host_rules.so"
    command = [compiler, "-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Werror",
               f"-I{ROOT / 'csrc'}", str(SOURCE), "-o", str(library)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    lib = ctypes.CDLL(str(library))
    lib.host_mlm_train.argtypes = [_P, _INT, _I64, _I64, _I64, _U64, _U64, _P, _P]
    lib.host_plm_train.argtypes = [_P, _INT, _I64, _I64, _I64, _U64, _I64, _P, _BOOL, _I64, _P, _P, _P, _P]
    lib.host_row_targets.argtypes = [_INT, _P, _INT, _I64, _I64, _I64, _P, _P]
    lib.host_plm_eval_perm_mask.argtypes = [_P, _INT, _I64, _I64, _I64, _I64, _P]
    lib.host_gumbel_noise.argtypes = [_P, _I64, _P]
    lib.host_gumbel_argmax.argtypes = [_P, _INT, _I64, _I64, _U64, _I64, _I64, _P]
    lib.host_target_ranks.argtypes = [_P, _INT, _I64, _I64, _P, _I64, _I64, _I64, _P]
    return lib


def _ptr(array) -> int:
    if isinstance(array, np.ndarray):
        assert array.flags.c_contiguous
        return array.ctypes.data
    assert array.is_contiguous()
    return array.data_ptr()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize("padding_idx", [0, 3])
def test_mlm_train(lib, dtype, padding_idx):
    thresholds = [0, 1, philox.bernoulli_threshold(0.15), philox.bernoulli_threshold(0.5), 2**32 - 1, 2**32]
    for case, (batch, length) in enumerate(MASK_SHAPES):
        ids = item_ids(batch, length, padding_idx, dtype, case)
        for seed in SEEDS:
            threshold = thresholds[(case + seed) % len(thresholds)]
            mask, targets = torch.empty(batch, length, dtype=torch.bool), torch.empty_like(ids)
            lib.host_mlm_train(_ptr(ids), ITEM_TYPES[dtype], batch, length, padding_idx, seed, threshold, _ptr(mask),
                               _ptr(targets))
            expected = ref_masking.mlm_train(ids, seed, padding_idx, threshold)
            assert_same((mask, targets), expected, batch, length, seed, threshold)


def test_mlm_bernoulli_is_strict(lib):
    # The threshold is set to each draw of the row in turn: `draw < threshold`, never `<=`.
    ids = torch.arange(1, 17)[None, :]
    for threshold in philox.draws(2024, philox.STREAM_MLM_BERNOULLI, 0, np.arange(16)).tolist():
        mask, targets = torch.empty(1, 16, dtype=torch.bool), torch.empty_like(ids)
        lib.host_mlm_train(_ptr(ids), ITEM_TYPES[ids.dtype], 1, 16, 0, 2024, threshold, _ptr(mask), _ptr(targets))
        assert_same((mask, targets), ref_masking.mlm_train(ids, 2024, 0, threshold), threshold)


@pytest.mark.parametrize("rule, op", list(enumerate(
    ["next_item_targets", "last_item_targets", "clm_last_item_targets", "mlm_inference_targets"])))
def test_targets_without_randomness(lib, rule, op):
    for case, (batch, length) in enumerate(MASK_SHAPES + [(3, 0)]):
        dtype = [torch.int64, torch.int32, torch.int8][case % 3]
        padding_idx = case % 2 * 3
        ids = item_ids(batch, length, padding_idx, dtype, 300 + case)
        width = length + (rule == 3)
        schema, targets = torch.empty(batch, width, dtype=torch.bool), torch.empty(batch, width, dtype=dtype)
        lib.host_row_targets(rule, _ptr(ids), ITEM_TYPES[dtype], batch, length, padding_idx, _ptr(schema),
                             _ptr(targets))
        assert_same((schema, targets), getattr(ref_masking, op)(ids, padding_idx), batch, length)


def _plm_host(lib, ids, seed, padding_idx, max_span, contexts, permute_all, band_rows):
    batch, length = ids.shape
    mask, targets = torch.empty(batch, length, dtype=torch.bool), torch.empty_like(ids)
    perm = torch.empty(batch, length, length, dtype=torch.float32)
    target = torch.empty(batch, length, length, dtype=torch.float32)
    table = torch.tensor(contexts, dtype=torch.int64)
    lib.host_plm_train(_ptr(ids), ITEM_TYPES[ids.dtype], batch, length, padding_idx, seed, max_span,
                       _ptr(table), permute_all, band_rows, _ptr(mask), _ptr(targets), _ptr(perm), _ptr(target))
    return mask, targets, perm, target


@pytest.mark.parametrize("padding_idx", [0, 3])
@pytest.mark.parametrize(
    "plm_probability,max_span,permute_all",
    [(1 / 6, 5, False), (0.5, 1, False), (1.0, 3, False), (0.05, 2, False), (0.3, 8, False), (1 / 6, 5, True)],
)
def test_plm_train(lib, padding_idx, plm_probability, max_span, permute_all):
    contexts = ref_masking.plm_context_lengths(plm_probability, max_span)
    for case, (batch, length) in enumerate(MASK_SHAPES):
        dtype = [torch.int64, torch.int32, torch.int16, torch.int8][case % 4]
        ids = item_ids(batch, length, padding_idx, dtype, 100 + case)
        seed = SEEDS[case % len(SEEDS)]
        band_rows = [KERNEL_BAND_ROWS, 1, 5][case % 3]
        got = _plm_host(lib, ids, seed, padding_idx, max_span, contexts, permute_all, band_rows)
        expected = ref_masking.plm_train(ids, seed, padding_idx, max_span, contexts, permute_all)
        assert_same(got, expected, batch, length, seed)


@pytest.mark.parametrize("permute_all", [True, False])
def test_plm_order_key_tie(lib, permute_all):
    """Two targets with equal order keys: the lower position comes first in the order."""
    seed, (batch, length), row, (first, second) = (PLM_KEY_TIE[k] for k in ("seed", "shape", "row", "positions"))
    keys = philox.draws(seed, philox.STREAM_PLM_PERM, row, np.arange(length, dtype=np.uint64))
    assert keys[first] == keys[second]
    ids = torch.arange(1, batch * length + 1).reshape(batch, length)
    contexts = ref_masking.plm_context_lengths(0.5, 5)
    got = _plm_host(lib, ids, seed, 0, 5, contexts, permute_all, KERNEL_BAND_ROWS)
    expected = ref_masking.plm_train(ids, seed, 0, 5, contexts, permute_all)
    assert_same(got, expected)
    if permute_all:  # both are targets, so the tie decides
        assert expected[0][row, first] and expected[0][row, second]
        assert expected[2][row, first, second] == 1 and expected[2][row, second, first] == 0


def test_plm_item_zero_quirk(lib):
    """With padding_idx != 0, a forced position holding item 0 stays unmasked, as in the reference.

    Rows hold items 0 and 5 then padding; spans rarely land on them (context 20), so most rows are
    forced, half of them onto item 0. Only that quirk can leave a row with no target here.
    """
    ids = torch.full((64, 12), 7, dtype=torch.int64)
    ids[:, 0], ids[:, 1] = 0, 5
    contexts = ref_masking.plm_context_lengths(0.05, 1)
    mask = _plm_host(lib, ids, 11, 7, 1, contexts, False, KERNEL_BAND_ROWS)[0]
    expected = ref_masking.plm_train(ids, 11, 7, 1, contexts, False)[0]
    assert_same(mask, expected)
    assert (~expected.any(1)).sum() > 0


@pytest.mark.parametrize("padding_idx", [0, 3])
def test_plm_eval(lib, padding_idx):
    for case, (batch, length) in enumerate(MASK_SHAPES + [(0, 4)]):  # the reference fails on L = 0
        dtype = [torch.int64, torch.int32, torch.uint8][case % 3]
        ids = item_ids(batch, length, padding_idx, dtype, 200 + case)
        for band_rows in (KERNEL_BAND_ROWS, 3):
            host = torch.empty(batch, length, length, dtype=torch.int64)
            lib.host_plm_eval_perm_mask(_ptr(ids), ITEM_TYPES[dtype], batch, length, padding_idx, band_rows, _ptr(host))
            assert_same(host, ref_masking.plm_eval(ids, padding_idx)[2], batch, length)


def test_gumbel_noise(lib):
    rows = np.arange(3, dtype=np.uint64)
    for seed in SEEDS[:3]:
        words = np.ascontiguousarray(
            philox.draws(seed, philox.STREAM_GUMBEL, rows[:, None], np.arange(40_000, dtype=np.uint64)[None, :])
        )
        host = torch.empty(words.shape, dtype=torch.float32)
        lib.host_gumbel_noise(_ptr(words), words.size, _ptr(host))
        assert torch.equal(host, ref_sampling.gumbel_noise(seed, rows, 40_000))
    # The ends of the draw range, through the reference's formula.
    extremes = np.array([0, 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=np.uint32)
    host = torch.empty(5, dtype=torch.float32)
    lib.host_gumbel_noise(_ptr(extremes), 5, _ptr(host))
    uniform = (extremes.astype(np.float64) + 0.5) * 2.0**-32
    assert np.array_equal(host.numpy(), (-np.log(-np.log(uniform))).astype(np.float32))


GUMBEL_VOCABS = [1, 2, 3, 4, 5, 7, 17, 64, 1000, 4097]
# (splits, threads): one block of the kernel's size, several blocks, and degenerate ones.
GUMBEL_LAYOUTS = [(1, KERNEL_THREADS), (1, 1), (3, 8), (5, 32), (2, KERNEL_THREADS)]


def _gumbel_host(lib, logits: torch.Tensor, seed: int, splits: int, threads: int) -> torch.Tensor:
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.int64)
    is_double = int(logits.dtype == torch.float64)
    lib.host_gumbel_argmax(_ptr(logits), is_double, rows, vocab, seed, splits, threads, _ptr(out))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gumbel_argmax(lib, dtype):
    rng = np.random.default_rng(7)
    for case, vocab in enumerate(GUMBEL_VOCABS):
        logits = torch.from_numpy(gumbel_logits(vocab, rng)).to(dtype)
        # float16/bfloat16 rows reach the kernel's fp32 math through an exact upcast.
        host_input = logits if dtype in (torch.float32, torch.float64) else logits.float()
        for seed in SEEDS[case % 3 :: 2]:
            expected = ref_sampling.gumbel_argmax(logits, seed)
            for splits, threads in GUMBEL_LAYOUTS:
                got = _gumbel_host(lib, host_input, seed, splits, threads)
                assert torch.equal(got, expected), (dtype, vocab, seed, splits, threads, got, expected)


def test_gumbel_argmax_many_rows(lib):
    """Enough rows and columns that the exact skip of most quads decides most results."""
    logits = torch.from_numpy(np.random.default_rng(3).normal(scale=2.0, size=(64, 3001)).astype(np.float32))
    for seed in SEEDS[:2]:
        expected = ref_sampling.gumbel_argmax(logits, seed)
        assert torch.equal(_gumbel_host(lib, logits, seed, 1, KERNEL_THREADS), expected)
        assert torch.equal(_gumbel_host(lib, logits, seed, 4, 1), expected)


def _ranks_host(lib, scores: torch.Tensor, items: torch.Tensor, splits: int, threads: int) -> torch.Tensor:
    rows, vocab = scores.shape
    out = torch.empty(items.shape, dtype=torch.int64)
    lib.host_target_ranks(_ptr(scores), int(scores.dtype == torch.float64), rows, vocab, _ptr(items), items.shape[1],
                          splits, threads, _ptr(out))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_target_ranks(lib, dtype):
    rng = np.random.default_rng(11)
    for vocab in (1, 2, 5, 33, 300, 2049):
        for targets in (1, 3, 8, 9, 17):
            rows = 6
            scores = torch.from_numpy(rank_scores(rows, vocab, rng)).to(dtype)
            items = rank_items(rows, targets, vocab, rng)
            host_input = scores if dtype in (torch.float32, torch.float64) else scores.float()
            expected = ref_ranking.target_ranks(scores, items)
            for splits, threads in [(1, KERNEL_THREADS), (1, 1), (3, 7), (4, 32)]:
                got = _ranks_host(lib, host_input, items, splits, threads)
                assert torch.equal(got, expected), (dtype, vocab, targets, splits, threads)
