"""pytest-benchmark suite for fastmask: ``python -m pytest bench/`` (not collected by the unit tests).

Every benchmark is parametrised over ``contender``: each fastmask backend that measures speed on the
device (the Triton interpreter on CPU is excluded) plus its baseline: ``t4rec``, Transformers4Rec's
algorithm (the installed package, else ``fastmask._t4rec_baseline``), unless the test is marked
``@pytest.mark.baseline(name)`` (another baseline, e.g. ``per-user loop``) or
``@pytest.mark.baseline(None)`` (none: fastmask's backends only). Options:

  --bench-device cpu|cuda    device (default: cuda when available)
  --bench-size small|default shapes; ``small`` is a quick check that everything runs
"""
import contextlib
import time

import pytest
import torch

from fastmask import _backend
from fastmask.bench import T4REC, device_backends, load_t4rec

SHAPES = {
    # batch, length: masking; rows, vocab: Gumbel; ranks: rows, vocab of target_ranks / metrics.
    "small": {"masking": (8, 16), "gumbel": (8, 512), "ranks": (16, 1000)},
    "default": {"masking": (256, 50), "gumbel": (256, 50_000), "ranks": (512, 50_000)},
}
# Sequence policies: BERT4Rec (batch, length) pairs, Merlin (batch, length), sampler (max_n_samples, max_id, labels).
SEQUENCE_SHAPES = {
    "small": {"bert4rec": [(8, 20), (16, 10)], "merlin": (8, 20), "sampler": (20, 1000, 16)},
    "default": {"bert4rec": [(256, 200), (2048, 50)], "merlin": (512, 200), "sampler": (1000, 1_000_000, 2048)},
}
ROUND_BUDGET_S = 1.0  # time aimed at per benchmark
SLOW_CALL_S = 5.0  # a call this slow gets a single round


def pytest_addoption(parser):
    group = parser.getgroup("fastmask benchmarks")
    group.addoption("--bench-device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    group.addoption("--bench-size", choices=tuple(SHAPES), default="default")


def pytest_configure(config):
    config.addinivalue_line("markers", "baseline(name): the test's baseline contender instead of t4rec (None: none)")


@pytest.fixture(scope="session")
def device(pytestconfig):
    name = pytestconfig.getoption("--bench-device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda but torch sees no GPU")
    return torch.device(name)


@pytest.fixture(scope="session")
def shapes(pytestconfig):
    return SHAPES[pytestconfig.getoption("--bench-size")]


@pytest.fixture(scope="session")
def sequence_shapes(pytestconfig):
    return SEQUENCE_SHAPES[pytestconfig.getoption("--bench-size")]


@pytest.fixture(scope="session")
def t4rec():
    return load_t4rec()


def pytest_generate_tests(metafunc):
    if "contender" in metafunc.fixturenames:
        device = torch.device(metafunc.config.getoption("--bench-device"))
        marker = metafunc.definition.get_closest_marker("baseline")
        baseline = marker.args[0] if marker else T4REC
        names = device_backends(device, None) + ([baseline] if baseline else [])
        metafunc.parametrize("contender", names)


@pytest.fixture
def as_contender(contender):
    """Context in which fastmask calls run on ``contender``'s backend (a no-op for a baseline)."""
    if contender in _backend.BACKENDS:
        return lambda: _backend.use_backend(contender)
    return contextlib.nullcontext


@pytest.fixture(scope="session")
def output_bytes():
    """``output_bytes(*tensors)``: bytes they occupy; an expanded view counts its storage once."""

    def count(*tensors) -> int:
        return sum(
            tensor.nbytes if tensor.is_contiguous() else tensor.untyped_storage().nbytes()
            for tensor in tensors
            if isinstance(tensor, torch.Tensor)
        )

    return count


@pytest.fixture
def run_benchmark(benchmark, device):
    """``run(fn, bytes_moved, **info)``: time ``fn`` with ``benchmark.pedantic`` and record GB/s.

    One warm-up call sets the number of rounds (about ROUND_BUDGET_S in all). On GPU every round
    synchronises, and the L2 cache is flushed before it (untimed ``setup``).
    """
    flush = None
    if device.type == "cuda":
        l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 * 2**20)
        flush = torch.empty(2 * l2_bytes, dtype=torch.int8, device=device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed():
        result = fn_holder[0]()
        synchronize()
        return result

    def setup():
        if flush is not None:
            flush.zero_()
            synchronize()

    fn_holder = [None]

    def run(fn, bytes_moved, **info):
        fn_holder[0] = fn
        setup()
        start = time.perf_counter()
        timed()
        first = time.perf_counter() - start
        rounds = 1 if first >= SLOW_CALL_S else max(3, min(50, int(ROUND_BUDGET_S / max(first, 1e-6))))
        benchmark.extra_info.update(info, device=device.type, bytes=bytes_moved, threads=torch.get_num_threads())
        result = benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
        if benchmark.stats is not None:
            benchmark.extra_info["gbps"] = bytes_moved / benchmark.stats.stats.median / 1e9
        return result

    return run

