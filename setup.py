"""Build fastmask: pure-Python package plus the optional compiled extension ``fastmask._C``.

The C++/CUDA sources ship inside the package (fastmask/csrc): where no usable ``_C`` was built here
(torch absent at build time, as under pip's default build isolation), fastmask builds it just in time
on first use (fastmask/_extension.py, which also holds the flags and source lists used below).

Environment:
  FASTMASK_NO_EXTENSION=1   build no compiled code (reference and Triton backends only)
  FASTMASK_SKIP_CUDA=1      build the C++ CPU ops only, even where CUDA is available
  FASTMASK_FORCE_CUDA=1     fail, rather than build the CPU ops only, when the CUDA ops cannot be built
  TORCH_CUDA_ARCH_LIST      GPU architectures (default: the visible GPUs', else "8.0;9.0+PTX")
  MAX_JOBS                  parallel compile jobs (default: one per core, at most one per 2 GiB of memory)
"""
import importlib.util
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
PACKAGES = ["fastmask", "fastmask.bench", "fastmask.reference", "fastmask.triton_kernels", "fastmask.csrc"]
PACKAGE_DIR = {"fastmask.triton_kernels": "triton_kernels", "fastmask.csrc": "csrc"}


def _load_build_helpers():
    # fastmask/_extension.py by path: importing the package would need torch and its dependencies.
    spec = importlib.util.spec_from_file_location("_fastmask_extension", ROOT / "fastmask" / "_extension.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_helpers()


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _default_jobs():
    jobs = os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        jobs = min(jobs, int(memory_gib // 2))
    except (ValueError, OSError, AttributeError):
        pass
    return max(1, jobs)


def _extensions():
    if _flag("FASTMASK_NO_EXTENSION"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("fastmask: torch is not installed at build time; building without the C++ extension")
        return [], {}

    os.environ.setdefault("MAX_JOBS", str(_default_jobs()))
    cpu_only_reason = (
        "FASTMASK_SKIP_CUDA is set" if _flag("FASTMASK_SKIP_CUDA")
        else "torch has no CUDA" if not torch.version.cuda
        else "CUDA_HOME is not set (no nvcc found)" if cpp_extension.CUDA_HOME is None
        else None
    )
    if cpu_only_reason is not None and _flag("FASTMASK_FORCE_CUDA"):
        raise SystemExit(f"fastmask: FASTMASK_FORCE_CUDA=1 but the CUDA ops cannot be built: {cpu_only_reason}")
    with_cuda = cpu_only_reason is None
    archs = None
    if with_cuda:
        # Without a GPU, torch would take the architectures of the visible GPUs: none.
        archs = build.cuda_archs() or (None if torch.cuda.is_available() else "8.0;9.0+PTX")
        if archs is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    else:
        print(f"fastmask: building the C++ CPU ops only ({cpu_only_reason})")
    # Relative paths: setuptools names the objects after them.
    sources = [path.relative_to(ROOT).as_posix() for path in build.compiled_sources(CSRC, with_cuda)]
    options = dict(
        include_dirs=[str(CSRC)],
        define_macros=[build.key_define(build.build_key(CSRC, with_cuda, archs))]
        + ([build.CUDA_DEFINE] if with_cuda else []),
        extra_compile_args={"cxx": build.CXX_FLAGS, **({"nvcc": build.NVCC_FLAGS} if with_cuda else {})},
        extra_link_args=build.LINK_FLAGS,
    )
    make = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    extension = make("fastmask._C", sources, **options)
    return [extension], {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="fastmask",
    version=build.version(),
    description="Fused, seeded Triton/C++/CUDA kernels for Transformers4Rec masking, sampling and ranking metrics",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    # The C++/CUDA sources and headers, for the just-in-time build.
    package_data={"fastmask.csrc": build.source_files(CSRC)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "torchmetrics>=1.0", "ninja", "filelock"],
    extras_require={
        "triton": ["triton"],
        "test": ["pytest", "hypothesis", "pytest-benchmark", "triton", "expecttest", "ruff"],
        "bench": ["pytest-benchmark", "matplotlib"],
    },
    entry_points={"console_scripts": ["fastmask-bench = fastmask.bench.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
