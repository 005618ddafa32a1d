"""fastmask installed as a user would, into a fresh virtualenv with torch==2.13.0, then imported from
outside the checkout: a plain ``pip install .`` (pip's build isolation hides torch, so the wheel is
pure Python and the extension is built just in time on first use) and a wheel built with
``pip wheel --no-build-isolation`` (the extension inside, loaded as it is).

Slow (minutes, most of it compiling): marked ``slow``; ``pytest -m "not slow"`` leaves them out.
One virtualenv serves the module; pip's cache is reused.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Which backends an installed fastmask has, where its extension came from, and an op on the CPU.
CHECK = """
import json, torch, fastmask
from fastmask import _extension
path, how = _extension.origin() or (None, None)
fastmask.ops.gumbel_argmax(torch.zeros(3, 5), torch.tensor([1]))
print(json.dumps({"file": fastmask.__file__, "backends": fastmask.backends(), "path": str(path), "how": how,
                  "ran_on": fastmask.ops.last_backend("gumbel_argmax")}))
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(python, environment, folder) of a fresh virtualenv with torch==2.13.0 and its own extension cache."""
    folder = tmp_path_factory.mktemp("user")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FASTMASK_", "PYTHON", "VIRTUAL_ENV"))}
    env["FASTMASK_CACHE_DIR"] = str(folder / "cache")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"],
                   env=env, check=True, cwd=folder)
    return python, env, folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The checkout without build outputs: a build/ left by an earlier build would slip its _C into the wheel."""
    folder = tmp_path_factory.mktemp("source") / "fastmask"
    outputs = ("build", "dist", "*.egg-info", "_C*.so", "__pycache__", ".git", ".venv*", ".pytest_cache", ".hypothesis",
               ".benchmarks", "gpu-results")
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(*outputs))
    return folder


def check(user):
    python, env, folder = user
    result = subprocess.run([python, "-c", CHECK], env=env, cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def site_packages(python) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def test_plain_pip_install_builds_the_extension_on_first_use(user, source):
    python, env, folder = user
    subprocess.run([python, "-m", "pip", "install", "-q", str(source)], env=env, cwd=folder, check=True)
    first, err = check(user)
    assert Path(first["file"]).parent == site_packages(python) / "fastmask"
    assert "cpp" in first["backends"] and first["ran_on"] == "cpp"
    assert first["how"] == "built" and Path(first["path"]).is_relative_to(folder / "cache")
    assert err.count("fastmask: building the C++ extension (CPU ops)") == 1
    again, err = check(user)
    assert again == {**first, "how": "cache"} and "fastmask:" not in err


def test_wheel_built_without_isolation_carries_the_extension(user, source, tmp_path):
    python, env, folder = user
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(tmp_path), str(source)], env=env, check=True)
    (wheel,) = tmp_path.glob("fastmask-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)], env=env,
                   check=True)
    loaded, err = check(user)
    installed = site_packages(python) / "fastmask"
    assert Path(loaded["file"]).parent == installed
    assert "cpp" in loaded["backends"] and loaded["ran_on"] == "cpp"
    library = installed / f"_C{sysconfig.get_config_var('SHLIB_SUFFIX')}"
    assert loaded["how"] == "installed" and loaded["path"] == str(library)
    assert "fastmask:" not in err
