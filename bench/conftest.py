"""pytest-benchmark suite for fastmask: ``python -m pytest bench/`` (not collected by the unit tests).

The shapes are ``fastmask.bench.cases``' own (``--bench-size default`` is the shape set of
``fastmask-bench`` on the device, ``small`` its ``--quick`` set), and ``test_bench_cases.py`` times
exactly the calls of its cases. Every benchmark is parametrised over ``contender``: each fastmask
backend that measures speed on the device (the Triton interpreter on CPU is excluded) plus its
baseline: ``t4rec`` (Transformers4Rec's own code: the installed package, or the files of the archive
named by ``--t4rec-wheel``), unless the test is marked ``@pytest.mark.baseline(name)`` (another
baseline, e.g. ``recbole``) or ``@pytest.mark.baseline(None)`` (none). A baseline that is not loaded
is skipped, saying why. Options:

  --bench-device cpu|cuda    device (default: cuda when available)
  --bench-size small|default shapes
  --t4rec-wheel PATH         transformers4rec wheel or sdist to run T4Rec's files from
"""
import contextlib
import time

import pytest
import torch

import fastmask
from fastmask.bench import cases
from fastmask.bench.baselines import load_recbole, load_t4rec
from fastmask.bench.cases import RECBOLE, T4REC
from fastmask.bench.runner import device_backends

ROUND_BUDGET_S = 1.0  # time aimed at per benchmark
SLOW_CALL_S = 5.0  # a call this slow gets a single round


def pytest_addoption(parser):
    group = parser.getgroup("fastmask benchmarks")
    group.addoption("--bench-device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    group.addoption("--bench-size", choices=("small", "default"), default="default")
    group.addoption("--t4rec-wheel", default=None, help="transformers4rec wheel or sdist to run T4Rec's files from")


def pytest_configure(config):
    config.addinivalue_line("markers", "baseline(name): the test's baseline contender instead of t4rec (None: none)")


def bench_device(config) -> torch.device:
    return torch.device(config.getoption("--bench-device"))


def bench_shapes(config) -> cases.Shapes:
    return cases.shapes(bench_device(config).type, quick=config.getoption("--bench-size") == "small")


@pytest.fixture(scope="session")
def device(pytestconfig):
    if pytestconfig.getoption("--bench-device") == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda but torch sees no GPU")
    return bench_device(pytestconfig)


@pytest.fixture(scope="session")
def shapes(pytestconfig):
    return bench_shapes(pytestconfig)


@pytest.fixture(scope="session")
def libraries(pytestconfig):
    """Baseline name -> (loaded library or None, what was loaded or why not)."""
    return {T4REC: load_t4rec("auto", pytestconfig.getoption("--t4rec-wheel")), RECBOLE: load_recbole()}


def pytest_generate_tests(metafunc):
    if "contender" in metafunc.fixturenames and "case_name" not in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("baseline")
        baseline = marker.args[0] if marker else T4REC
        names = device_backends(bench_device(metafunc.config), None) + ([baseline] if baseline else [])
        metafunc.parametrize("contender", names)


@pytest.fixture
def library(contender, libraries):
    """The baseline library ``contender`` names (skips when it is not loaded); None for a backend."""
    if contender not in libraries:
        return None
    loaded, note = libraries[contender]
    if loaded is None:
        pytest.skip(f"{contender}: {note}")
    return loaded


@pytest.fixture
def as_contender(contender):
    """Context in which fastmask calls run on ``contender``'s backend (a no-op for a baseline)."""
    if contender in fastmask.backends():
        return lambda: fastmask.use_backend(contender)
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
