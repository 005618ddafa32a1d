"""Build fastmask: pure-Python package plus the optional compiled extension ``fastmask._C``.

Environment:
  FASTMASK_NO_EXTENSION=1   build no compiled code (reference and Triton backends only)
  FASTMASK_SKIP_CUDA=1      build the C++ CPU ops only, even where CUDA is available
  FASTMASK_FORCE_CUDA=1     fail, rather than build the CPU ops only, when the CUDA ops cannot be built
  TORCH_CUDA_ARCH_LIST      GPU architectures (default "8.0;9.0+PTX" when no GPU is visible)
  MAX_JOBS                  parallel compile jobs (default: one per core, at most one per 2 GiB of memory)
"""
import glob
import os

from setuptools import setup

PACKAGES = ["fastmask", "fastmask.bench", "fastmask.reference", "fastmask.triton_kernels"]
PACKAGE_DIR = {"fastmask.triton_kernels": "triton_kernels"}


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
    # No -std: torch's build helpers pick the C++ standard its headers need. -ffp-contract=off keeps
    # a*b+c unfused so float results match the reference bit for bit.
    cxx_flags = ["-O3", "-ffp-contract=off", "-fopenmp"]
    sources = sorted(glob.glob("csrc/*.cpp"))
    cpu_only_reason = (
        "FASTMASK_SKIP_CUDA is set" if _flag("FASTMASK_SKIP_CUDA")
        else "torch has no CUDA" if not torch.version.cuda
        else "CUDA_HOME is not set (no nvcc found)" if cpp_extension.CUDA_HOME is None
        else None
    )
    if cpu_only_reason is not None and _flag("FASTMASK_FORCE_CUDA"):
        raise SystemExit(f"fastmask: FASTMASK_FORCE_CUDA=1 but the CUDA ops cannot be built: {cpu_only_reason}")
    if cpu_only_reason is None:
        if not torch.cuda.is_available():  # torch would take the architectures of the visible GPUs: none
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        extension = cpp_extension.CUDAExtension(
            "fastmask._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")),
            include_dirs=[os.path.abspath("csrc")],
            define_macros=[("FASTMASK_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--fmad=false"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        print(f"fastmask: building the C++ CPU ops only ({cpu_only_reason})")
        extension = cpp_extension.CppExtension(
            "fastmask._C",
            sources,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    return [extension], {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="fastmask",
    version="0.1.0",
    description="Fused, seeded Triton/C++/CUDA kernels for Transformers4Rec masking, sampling and ranking metrics",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "torchmetrics>=1.0"],
    extras_require={
        "triton": ["triton"],
        "test": ["pytest", "hypothesis", "pytest-benchmark", "triton", "expecttest", "ruff"],
        "bench": ["pytest-benchmark", "tqdm", "matplotlib"],
    },
    entry_points={"console_scripts": ["fastmask-bench = fastmask.bench.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
