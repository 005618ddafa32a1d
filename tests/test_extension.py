"""fastmask._extension: which compiled extension a process loads, when it builds one just in time,
and what it says when a backend is missing.

The builds here compile a tiny extension (csrc/build_info.cpp and a one-line module) with the real
just-in-time path, each process in a subprocess with its own cache folder, so that the process
running the tests keeps its own ``fastmask._C``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmask import _extension

ROOT = Path(__file__).resolve().parents[1]
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None and _extension._ninja_dir() is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="needs a C++ compiler and ninja")

# A module in plain Python C API: a build takes a second, not pybind11's fifteen.
TINY_MODULE = """#include <Python.h>
#define FASTMASK_CAT_(a, b) a##b
#define FASTMASK_CAT(a, b) FASTMASK_CAT_(a, b)
static PyModuleDef tiny = {PyModuleDef_HEAD_INIT, "tiny", nullptr, -1, nullptr};
PyMODINIT_FUNC FASTMASK_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  PyObject* module = PyModule_Create(&tiny);
  PyModule_AddIntConstant(module, "tiny", %d);
  return module;
}
"""

# Loads the extension with fastmask's sources replaced by a tiny set and the installed _C by argv[2],
# and prints what it loaded and why a backend is missing.
LOAD = """
import json, sys
from pathlib import Path
from fastmask import _extension
_extension.sources_dir = lambda: Path(sys.argv[1]) if sys.argv[1] else None
_extension.installed_path = lambda: Path(sys.argv[2]) if sys.argv[2] else None
module = _extension.load()
origin = _extension.origin()
print(json.dumps({
    "tiny": getattr(module, "tiny", None),
    "path": str(origin[0]) if origin else None,
    "how": origin[1] if origin else None,
    "cpp": _extension.missing_reason("cpp"),
}))
"""


def tiny_sources(folder: Path, version: int = 1, broken: bool = False) -> Path:
    csrc = folder / "csrc"
    csrc.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "csrc" / "build_info.cpp", csrc / "build_info.cpp")
    (csrc / "tiny.cpp").write_text(TINY_MODULE % version + ("this does not compile;\n" if broken else ""))
    return csrc


def clean_env(cache: Path, **extra):
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTMASK_")}
    return {**env, "FASTMASK_CACHE_DIR": str(cache), **extra}


def start(csrc, installed, env):
    return subprocess.Popen(
        [sys.executable, "-c", LOAD, str(csrc or ""), str(installed or "")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return json.loads(out.splitlines()[-1]), err


def load_in_subprocess(csrc, installed, env):
    return finish(start(csrc, installed, env))


def test_build_key_round_trips_through_the_compiled_marker(tmp_path):
    key = _extension.build_key(ROOT / "csrc", True, "8.0;9.0+PTX")
    name, value = _extension.key_define(key)
    obj = tmp_path / "build_info.o"
    subprocess.run(["c++", "-c", f"-D{name}={value}", str(ROOT / "csrc" / "build_info.cpp"), "-o", str(obj)],
                   check=True)
    assert _extension.read_key(obj) == key
    subprocess.run(["c++", "-c", str(ROOT / "csrc" / "build_info.cpp"), "-o", str(obj)], check=True)
    assert _extension.read_key(obj) is None  # built without a key: never loaded


def test_key_changes_with_each_source_and_header(tmp_path):
    csrc = tiny_sources(tmp_path)
    (csrc / "cuda").mkdir()
    (csrc / "cuda" / "kernel.cuh").write_text("// v1\n")
    before = _extension.build_key(csrc, False, None)
    (csrc / "cuda" / "kernel.cuh").write_text("// v2\n")
    assert _extension.build_key(csrc, False, None)["sources"] != before["sources"]
    assert _extension.source_files(csrc) == ["build_info.cpp", "cuda/kernel.cuh", "tiny.cpp"]


def test_a_foreign_key_names_what_differs():
    wanted = _extension.build_key(ROOT / "csrc", False, None)
    assert _extension._abi_mismatch(wanted, wanted) is None
    assert _extension._abi_mismatch({**wanted, "ops": "cpu+cuda", "archs": "9.0"}, wanted) is None
    assert "torch 2.12.0 (here " in _extension._abi_mismatch({**wanted, "torch": "2.12.0"}, wanted)
    assert _extension._abi_mismatch({**wanted, "sources": "0"}, wanted) == "it was built from other C++ sources"
    assert _extension._abi_mismatch(None, wanted) == "it carries no fastmask build key"


@pytest.mark.parametrize("archs, capability, runs", [
    ("8.0;9.0+PTX", (8, 0), True),
    ("8.0;9.0+PTX", (8, 6), True),    # sm_80 machine code runs on 8.6
    ("8.0;9.0+PTX", (10, 0), True),   # 9.0 PTX is compiled for newer GPUs by the driver
    ("8.0;9.0", (10, 0), False),
    ("8.6", (8, 0), False),
    ("9.0a", (9, 0), True),
    ("9.0a", (9, 1), False),          # arch-specific code runs on that architecture only
    ("7.5+PTX", (7, 0), False),
    ("-", (7, 0), True),              # left to torch's defaults
    ("Ampere;Hopper", (7, 0), True),  # named architectures: trusted
])
def test_architecture_coverage(archs, capability, runs):
    assert _extension._arch_covers(archs, capability) is runs


def foreign_library(tmp_path: Path, key) -> Path:
    """A shared library with ``key`` as its fastmask build key that aborts the process when loaded."""
    source = tmp_path / "foreign.c"
    marker = "fastmask-build-key:{}:end".format(_extension.key_define(key)[1]) if key else "no key"
    source.write_text(f'#include <stdlib.h>\nconst char marker[] = "{marker}";\n'
                      "__attribute__((constructor)) static void refuse(void) { abort(); }\n")
    library = tmp_path / "_C.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    return library


@needs_compiler
@pytest.mark.parametrize("foreign", ["another torch", "no key"])
def test_a_foreign_extension_is_never_loaded_and_is_rebuilt(tmp_path, foreign):
    csrc = tiny_sources(tmp_path)
    key = {**_extension.build_key(csrc, False, None), "torch": "2.12.0"} if foreign == "another torch" else None
    library = foreign_library(tmp_path, key)
    loaded, err = load_in_subprocess(csrc, library, clean_env(tmp_path / "cache"))  # loading it would abort
    assert loaded["tiny"] == 1 and loaded["how"] == "built"
    assert Path(loaded["path"]).parent.parent == tmp_path / "cache"
    expected = "built for torch 2.12.0" if key else "carries no fastmask build key"
    assert f"{library} is not usable: it" in err and expected in err
    assert err.count("fastmask: building the C++ extension (CPU ops)") == 1


@needs_compiler
def test_edited_sources_rebuild_and_unchanged_ones_come_from_the_cache(tmp_path):
    csrc, env = tiny_sources(tmp_path), clean_env(tmp_path / "cache")
    first, err = load_in_subprocess(csrc, None, env)
    assert first["how"] == "built" and "building the C++ extension" in err
    again, err = load_in_subprocess(csrc, None, env)
    assert again == {**first, "how": "cache"} and err == ""
    tiny_sources(tmp_path, version=2)
    edited, err = load_in_subprocess(csrc, None, env)
    assert edited["tiny"] == 2 and edited["how"] == "built" and edited["path"] != first["path"]


@needs_compiler
def test_processes_asking_at_once_build_once(tmp_path):
    csrc, env = tiny_sources(tmp_path), clean_env(tmp_path / "cache")
    processes = [start(csrc, None, env) for _ in range(3)]
    results = [finish(process) for process in processes]
    assert {loaded["path"] for loaded, _ in results} == {results[0][0]["path"]}
    assert sorted(loaded["how"] for loaded, _ in results) == ["built", "cache", "cache"]
    errors = "".join(err for _, err in results)
    assert errors.count("fastmask: building the C++ extension") == 1
    assert errors.count("fastmask: waiting for another process building") == 2


@needs_compiler
def test_a_failed_build_names_its_log(tmp_path):
    csrc = tiny_sources(tmp_path, broken=True)
    loaded, err = load_in_subprocess(csrc, None, clean_env(tmp_path / "cache"))
    assert loaded["path"] is None
    log = Path(loaded["cpp"].rsplit("its log: ", 1)[1])
    assert loaded["cpp"].startswith("the just-in-time build of the C++ extension failed")
    assert "this does not compile" in log.read_text() and f"the build failed; its log: {log}" in err


@pytest.mark.parametrize("env, reason", [
    ({"FASTMASK_JIT": "0"}, "fastmask._C is not built and FASTMASK_JIT=0 turns off the just-in-time build"),
    ({"CXX": "no-such-compiler"}, "no C++ compiler was found ('no-such-compiler' is not on PATH)"),
    ({"FASTMASK_SKIP_EXTENSION": "1"}, "FASTMASK_SKIP_EXTENSION=1 is set"),
])
def test_why_the_extension_is_missing(tmp_path, env, reason):
    loaded, err = load_in_subprocess(tiny_sources(tmp_path), None, clean_env(tmp_path / "cache", **env))
    assert loaded["path"] is None and reason in loaded["cpp"] and err == ""
    assert not (tmp_path / "cache").exists()


def test_sources_missing_from_the_install(tmp_path):
    loaded, _ = load_in_subprocess(None, None, clean_env(tmp_path / "cache"))
    assert "the C++ sources are not installed next to fastmask" in loaded["cpp"]


WARN = """
import json, sys, warnings
import torch, fastmask
from fastmask import _extension
_extension.installed_path = lambda: None
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    for _ in range(2):
        fastmask.ops.gumbel_argmax(torch.zeros(2, 3), torch.tensor([7]))
print(json.dumps([str(w.message) for w in caught if issubclass(w.category, _extension.BackendMissingWarning)]))
"""


@pytest.mark.parametrize("env, warned", [({"FASTMASK_JIT": "0"}, True), ({"FASTMASK_SKIP_EXTENSION": "1"}, False)])
def test_a_missing_cpu_backend_warns_once_with_the_fix(tmp_path, env, warned):
    result = subprocess.run([sys.executable, "-c", WARN], capture_output=True, text=True,
                            env=clean_env(tmp_path / "cache", **env), check=True)
    messages = json.loads(result.stdout.splitlines()[-1])
    if warned:
        assert messages == ["fastmask: the cpp backend is not available, so ops fall back to slower code: "
                            "fastmask._C is not built and FASTMASK_JIT=0 turns off the just-in-time build; "
                            "or build it ahead: pip install --no-build-isolation . in fastmask's source folder"]
    else:
        assert messages == []


@pytest.mark.skipif(_extension.installed_path() is None, reason="no fastmask._C was built by setup.py here")
def test_the_extension_setup_py_built_is_loaded_as_is(tmp_path):
    # setup.py and the run time agree on the build key: no rebuild, no JIT.
    env = clean_env(tmp_path / "cache", FASTMASK_JIT="0")
    code = "from fastmask import _extension; print(_extension.origin())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr((_extension.installed_path(), "installed"))


def test_environment_report(tmp_path):
    env = clean_env(tmp_path / "cache", FASTMASK_SKIP_EXTENSION="1")
    # Triton absent: an import that fails, as where it is not installed.
    code = "import sys, runpy; sys.modules['triton'] = None; runpy.run_module('fastmask', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fastmask 0.1.0 (")
    assert f"torch {torch.__version__}" in lines[1] and "triton " in lines[1]
    assert "extension: not loaded" in lines
    assert "  reference available" in lines
    assert "  cpp       unavailable: FASTMASK_SKIP_EXTENSION=1 is set: unset it to use the compiled ops" in lines
    assert "  triton    unavailable: triton is not installed: pip install triton" in lines
    if not torch.cuda.is_available():
        assert "  cuda: no GPU visible" in lines


@pytest.mark.parametrize("setting, reason", [
    ({"cuda": None}, "is a CPU-only build: install a CUDA build of torch"),
    ({"gpu": False}, "no CUDA GPU is visible"),
    ({"nvcc": None}, "nvcc was not found: install the CUDA 12.8 toolkit or set CUDA_HOME to it"),
    ({"FASTMASK_SKIP_CUDA": "1"}, "FASTMASK_SKIP_CUDA=1 is set"),
    ({}, None),
    ({"gpu": False, "TORCH_CUDA_ARCH_LIST": "9.0"}, None),  # a listed architecture needs no GPU
])
def test_when_cuda_ops_are_built(monkeypatch, setting, reason):
    from torch.utils import cpp_extension

    monkeypatch.setattr(torch.version, "cuda", setting.get("cuda", "12.8"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: setting.get("gpu", True))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", setting.get("nvcc", "/usr/local/cuda"))
    for name in ("FASTMASK_SKIP_CUDA", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(name, raising=False)
        if name in setting:
            monkeypatch.setenv(name, setting[name])
    archs, why_not = _extension._cuda_plan()
    assert (archs is None) == (reason is not None)
    assert why_not is None if reason is None else why_not.endswith(reason)
    if reason is None:
        assert archs == setting.get("TORCH_CUDA_ARCH_LIST", "9.0+PTX")


def test_cuda_build_compiles_what_setup_py_compiles(tmp_path, monkeypatch):
    # torch.utils.cpp_extension.load replaced by a recorder that writes a library with the key it got.
    from torch.utils import cpp_extension

    calls = []

    def record(name, sources, **options):
        calls.append(dict(options, name=name, sources=sources, archs=os.environ.get("TORCH_CUDA_ARCH_LIST")))
        define = next(flag for flag in options["extra_cflags"] if flag.startswith("-DFASTMASK_BUILD_KEY="))
        Path(options["build_directory"], "_C.so").write_text("fastmask-build-key:" + define.split("=", 1)[1] + ":end")

    monkeypatch.setattr(cpp_extension, "load", record)
    monkeypatch.setenv("FASTMASK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    csrc = ROOT / "csrc"
    key = _extension.build_key(csrc, True, "9.0+PTX")
    path, how = _extension._build_cached(key, csrc, "9.0+PTX", None, None)
    assert how == "built" and _extension.read_key(path) == key
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ
    (call,) = calls
    define = "-DFASTMASK_BUILD_KEY=" + _extension.key_define(key)[1]
    assert call["name"] == "_C" and call["with_cuda"] and call["archs"] == "9.0+PTX"
    assert call["extra_cflags"] == ["-O3", "-ffp-contract=off", "-fopenmp", define, "-DFASTMASK_WITH_CUDA=1"]
    assert call["extra_cuda_cflags"] == ["-O3", "--fmad=false", define, "-DFASTMASK_WITH_CUDA=1"]
    assert call["extra_ldflags"] == ["-fopenmp"] and call["extra_include_paths"] == [str(csrc)]
    # Each source through a uniquely named file that includes it: torch names objects by base name.
    wrapped = {Path(source).name: Path(source).read_text() for source in call["sources"]}
    expected = _extension.compiled_sources(csrc, True)
    assert len(wrapped) == len(expected)
    assert sorted(wrapped.values()) == sorted(f'#include "{source.resolve()}"\n' for source in expected)
    assert {"module.cpp", "build_info.cpp", "cuda__bindings.cpp", "cuda__masking.cu"} <= set(wrapped)


@needs_compiler
def test_an_installed_extension_without_cuda_ops_still_serves_the_cpu(tmp_path):
    # A CPU-only build, as a GPU machine without nvcc at install time would have made.
    csrc = tiny_sources(tmp_path)
    built, _ = load_in_subprocess(csrc, None, clean_env(tmp_path / "cache"))
    # The same library found as the installed _C by a process that sees a GPU it cannot serve,
    # with the just-in-time build off.
    code = LOAD.replace("module = _extension.load()", (
        "_extension._cuda_plan = lambda: ('9.0+PTX', None)\n"
        "_extension._gpus = lambda: [(9, 0)]\n"
        "_extension._load_installed = lambda: _extension._import(Path(sys.argv[2]))\n"
        "module = _extension.load()\n"
        "print(_extension._state.reasons['cuda'])"))
    result = subprocess.run([sys.executable, "-c", code, str(csrc), built["path"]], capture_output=True, text=True,
                            env=clean_env(tmp_path / "other-cache", FASTMASK_JIT="0"), check=True)
    reason, loaded = result.stdout.splitlines()[-2:]
    loaded = json.loads(loaded)
    assert loaded["tiny"] == 1 and loaded["how"] == "installed" and loaded["path"] == built["path"]
    assert reason == (f"fastmask._C at {built['path']} has no CUDA ops for this GPU and "
                      "FASTMASK_JIT=0 turns off the just-in-time build; or build it ahead: " + _extension._REINSTALL)
