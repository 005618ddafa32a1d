import os

import pytest
import torch

# Without a GPU the Triton kernels run under the interpreter; it must be chosen before triton loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastmask import _backend  # noqa: E402  (after TRITON_INTERPRET)

from helpers import Backend  # noqa: E402


def kernel_backends() -> list[Backend]:
    """Every kernel backend usable here, on each device it runs on."""
    found = []
    if _backend.functions("cpp", "cpu") is not None:
        found.append(Backend("cpp", "cpu", False))
    if _backend.functions("triton", "cpu") is not None:
        found.append(Backend("triton", "cpu", True))
    if torch.cuda.is_available():
        for name in ("cuda", "triton"):
            if _backend.functions(name, "cuda") is not None:
                found.append(Backend(name, "cuda", False))
    return found


KERNEL_BACKENDS = kernel_backends()


@pytest.fixture(params=KERNEL_BACKENDS or [pytest.param(None, marks=pytest.mark.skip("no kernel backend here"))],
                ids=str)
def backend(request) -> Backend:
    """Each kernel backend in turn (tests compare it with the reference)."""
    return request.param


@pytest.fixture(params=["reference", *KERNEL_BACKENDS], ids=str)
def any_backend(request) -> Backend:
    """The reference and each kernel backend in turn (tests of behaviour every backend shares)."""
    return Backend("reference", "cpu", False) if request.param == "reference" else request.param


# Tests that run on a GPU, for `pytest -m gpu` (.ci/gpu): those of a GPU backend, and the files whose
# every test uses the GPU where there is one.
_GPU_FILES = ("test_gpu.py", "test_triton_kernels.py")


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {}).values()
        on_gpu = any(isinstance(value, Backend) and value.device == "cuda" for value in params)
        if on_gpu or item.path.name in _GPU_FILES:
            item.add_marker(pytest.mark.gpu)
