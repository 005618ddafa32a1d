"""Packaging: the sdist carries what a source build needs; the wheel installs triton_kernels/ as
fastmask.triton_kernels (never as a top-level triton_kernels, a name Triton itself ships)."""
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

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


def test_wheel_installs_the_triton_kernels_inside_fastmask(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        env=NO_EXTENSION, check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("fastmask-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    kernels = [name.replace("triton_kernels/", "fastmask/triton_kernels/") for name in source_files("triton_kernels")]
    assert [name for name in kernels if name not in names] == []
    assert not any(name.startswith("triton_kernels/") for name in names)
