"""Packaging: the sdist carries what a source build needs; the wheel installs triton_kernels/ as
fastmask.triton_kernels (never as a top-level triton_kernels, a name Triton itself ships) and the C++
sources as fastmask/csrc (for the just-in-time build); setup.py compiles the build key in."""
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NO_EXTENSION = {**os.environ, "FASTMASK_NO_EXTENSION": "1"}


def source_files(*folders):
    return sorted(
        path.relative_to(ROOT).as_posix()
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def test_sdist_carries_every_source_and_header(tmp_path):
    # The extension's sources are listed whatever the machine: here without compiling anything.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "sdist", "-d", str(tmp_path)],
        cwd=ROOT, env=NO_EXTENSION, check=True, capture_output=True,
    )
    (tarball,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = source_files("csrc", "triton_kernels", "fastmask/reference") + ["setup.py", "pyproject.toml", "README.md"]
    assert [name for name in needed if name not in names] == []


def test_wheel_installs_the_triton_kernels_and_the_sources_inside_fastmask(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path),
         str(ROOT)],
        env=NO_EXTENSION, check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("fastmask-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    kernels = [name.replace("triton_kernels/", "fastmask/triton_kernels/") for name in source_files("triton_kernels")]
    assert [name for name in kernels if name not in names] == []
    assert not any(name.startswith("triton_kernels/") for name in names)
    # Every source and header, exactly: the build key hashes these files.
    shipped = sorted(name for name in names if name.startswith("fastmask/csrc/"))
    assert shipped == ["fastmask/" + name for name in source_files("csrc")]


# setup.py run as if torch were a CUDA build with nvcc found (the machine needs neither): which
# extension it would build, and with which CUDA architectures.
_FAKE_CUDA_SETUP = """
import json, os, runpy, sys
import torch
from torch.utils import cpp_extension
torch.version.cuda = "12.4"
cpp_extension.CUDA_HOME = "/nonexistent/cuda"
gpu = sys.argv[1] == "gpu"
torch.cuda.is_available = lambda: gpu
sys.argv = ["setup.py", "--name"]
(extension,) = runpy.run_path("setup.py", run_name="__main__")["ext_modules"]
cuda = any(source.endswith(".cu") for source in extension.sources)
arch_flags = cpp_extension._get_cuda_arch_flags() if cuda and "TORCH_CUDA_ARCH_LIST" in os.environ else None
key = bytes.fromhex(dict(extension.define_macros)["FASTMASK_BUILD_KEY"][2:]).decode()
print(json.dumps({"cuda": cuda, "arch_flags": arch_flags, "key": dict(field.split("=") for field in key.split())}))
"""


def fake_cuda_build(gpu, **env):
    switches = ("TORCH_CUDA_ARCH_LIST", "FASTMASK_FORCE_CUDA", "FASTMASK_SKIP_CUDA")
    clean = {key: value for key, value in os.environ.items() if key not in switches}
    result = subprocess.run(
        [sys.executable, "-c", _FAKE_CUDA_SETUP, "gpu" if gpu else "none"],
        cwd=ROOT, env={**clean, **env}, check=True, capture_output=True, text=True,
    )
    return result.stdout, json.loads(result.stdout.splitlines()[-1])


def test_cuda_ops_are_built_where_torch_has_cuda_and_nvcc_gpu_or_not():
    _, built = fake_cuda_build(gpu=False)
    assert built["cuda"]
    assert built["arch_flags"] == [  # without a GPU: the default 8.0;9.0+PTX
        "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=compute_90",
        "-gencode=arch=compute_90,code=sm_90",
    ]
    assert (built["key"]["cuda"], built["key"]["ops"], built["key"]["archs"]) == ("12.4", "cpu+cuda", "8.0;9.0+PTX")
    _, built = fake_cuda_build(gpu=False, TORCH_CUDA_ARCH_LIST="9.0")
    assert built["arch_flags"] == ["-gencode=arch=compute_90,code=sm_90"] and built["key"]["archs"] == "9.0"
    _, built = fake_cuda_build(gpu=True)
    assert built["cuda"] and built["arch_flags"] is None  # torch takes the visible GPU's architecture
    out, built = fake_cuda_build(gpu=True, FASTMASK_SKIP_CUDA="1")
    assert not built["cuda"] and "FASTMASK_SKIP_CUDA is set" in out
    assert built["key"]["ops"] == "cpu" and built["key"]["archs"] == "-"


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a torch without CUDA")
def test_forced_cuda_build_fails_when_cuda_ops_cannot_be_built():
    failed = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "FASTMASK_FORCE_CUDA": "1", "FASTMASK_SKIP_CUDA": "0", "FASTMASK_NO_EXTENSION": "0"},
    )
    assert failed.returncode != 0 and "FASTMASK_FORCE_CUDA=1 but the CUDA ops cannot be built" in failed.stderr
