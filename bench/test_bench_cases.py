"""``fastmask-bench``'s own cases under pytest-benchmark: the same inputs and calls, per contender."""
from conftest import bench_device

from fastmask.bench import cases
from fastmask.bench.runner import device_backends


def pytest_generate_tests(metafunc):
    device = bench_device(metafunc.config)
    quick = metafunc.config.getoption("--bench-size") == "small"
    pairs = [(case.name, contender) for case in cases.build_cases(device.type, quick)
             for contender in device_backends(device, None) + ([case.baseline] if case.baseline else [])]
    metafunc.parametrize("case_name, contender", pairs, ids=[f"{name}-{contender}" for name, contender in pairs])


def test_case(run_benchmark, pytestconfig, device, case_name, contender, library, as_contender):
    quick = pytestconfig.getoption("--bench-size") == "small"
    (case,) = [c for c in cases.build_cases(device.type, quick) if c.name == case_name]
    inputs = case.make_inputs(device)
    call = case.baseline_fn(library, inputs) if library is not None else case.fastmask_fn(inputs)
    with as_contender():
        call()
        run_benchmark(call, case.bytes_moved, op=case.op, case=case.name, contender=contender, shape=case.shape,
                      dtype=case.dtype)
