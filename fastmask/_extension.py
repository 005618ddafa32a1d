"""Finding, validating and, when needed, building the compiled extension ``fastmask._C``.

A ``_C`` is loaded only when the build key compiled into it (csrc/build_info.cpp) matches this
process: fastmask's version and C++ sources, torch, torch's CUDA and the Python ABI. The key is read
from the file's bytes, never by loading it: a library built for another torch can crash the process.
Without a usable ``_C`` (a pure-Python install, a foreign or stale one, one without the CUDA ops a
GPU here could run), the extension is built just in time with torch.utils.cpp_extension and ninja,
with setup.py's sources and flags, into a cache folder keyed by all of the above and the CUDA
architectures. A file lock makes parallel processes (DDP ranks, test workers) build it once.

setup.py loads this file by path, where neither fastmask nor torch may be importable: the module
level uses the standard library only.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import mmap
import os
import re
import shutil
import sys
import sysconfig
import threading
import traceback
import warnings
from pathlib import Path

# Compiler flags of every build (setup.py's and the just-in-time one). -ffp-contract=off and
# --fmad=false keep a*b+c unfused so float results match the reference bit for bit.
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]
NVCC_FLAGS = ["-O3", "--fmad=false"]
LINK_FLAGS = ["-fopenmp"]
CUDA_DEFINE = ("FASTMASK_WITH_CUDA", "1")
# What the sources' hash covers, and what a wheel ships under fastmask/csrc.
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")
# Fields that must match for a _C to be loaded at all.
ABI_FIELDS = ("fastmask", "torch", "cuda", "python", "sources")

SKIP_VAR = "FASTMASK_SKIP_EXTENSION"
JIT_VAR = "FASTMASK_JIT"
CACHE_VAR = "FASTMASK_CACHE_DIR"

_PACKAGE_DIR = Path(__file__).resolve().parent
_MARKER = re.compile(rb"fastmask-build-key:0x([0-9a-f]*):end")
_REINSTALL = "pip install --no-build-isolation . in fastmask's source folder"


class BackendMissingWarning(UserWarning):
    """A kernel backend that could run on this machine is missing; ops fall back to a slower one."""


# ---- shared with setup.py --------------------------------------------------------------------


def version() -> str:
    """fastmask's version, read from its ``__init__.py`` (no import: setup.py calls this too)."""
    text = (_PACKAGE_DIR / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def compiled_sources(csrc: Path, with_cuda: bool) -> list[Path]:
    """The files compiled into ``_C``: csrc/*.cpp, plus csrc/cuda/*.cu and csrc/cuda/*.cpp with CUDA."""
    sources = sorted(csrc.glob("*.cpp"))
    if with_cuda:
        sources += sorted((csrc / "cuda").glob("*.cu")) + sorted((csrc / "cuda").glob("*.cpp"))
    return sources


def source_files(csrc: Path) -> list[str]:
    """Every source and header under ``csrc`` (relative paths): what the key hashes and a wheel ships."""
    return sorted(
        path.relative_to(csrc).as_posix()
        for path in csrc.rglob("*")
        if path.suffix in SOURCE_SUFFIXES and path.is_file()
    )


def sources_hash(csrc: Path) -> str:
    digest = hashlib.sha256(repr((CXX_FLAGS, NVCC_FLAGS, LINK_FLAGS)).encode())
    for name in source_files(csrc):
        digest.update(name.encode() + b"\0" + (csrc / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cuda_archs() -> str | None:
    """The CUDA architectures to build for: ``TORCH_CUDA_ARCH_LIST``, else the visible GPUs' (the
    newest also as PTX, as torch picks them), else None."""
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if listed:
        return ";".join(part for part in re.split(r"[;\s]+", listed) if part)
    import torch

    if not torch.cuda.is_available():
        return None
    capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    if not capabilities:
        return None
    return ";".join(f"{major}.{minor}" for major, minor in capabilities) + "+PTX"


def build_key(csrc: Path | None, with_cuda: bool, archs: str | None) -> dict[str, str]:
    """What a build is for. ``csrc`` None: sources unknown (not installed), never compared."""
    import torch

    return {
        "fastmask": version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": sysconfig.get_config_var("EXT_SUFFIX") or sys.implementation.cache_tag,
        "sources": sources_hash(csrc) if csrc is not None else "unknown",
        "ops": "cpu+cuda" if with_cuda else "cpu",
        "archs": (archs or "-") if with_cuda else "-",
    }


def key_define(key: dict[str, str]) -> tuple[str, str]:
    """The macro that compiles ``key`` into csrc/build_info.cpp."""
    text = " ".join(f"{name}={value}" for name, value in key.items())
    return "FASTMASK_BUILD_KEY", "0x" + text.encode().hex()


def read_key(path: Path) -> dict[str, str] | None:
    """The build key inside a compiled library, read from its bytes; None when it has none."""
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            match = _MARKER.search(data)
            encoded = match.group(1) if match else None
    except (OSError, ValueError):
        return None
    if not encoded:
        return None
    try:
        fields = bytes.fromhex(encoded.decode()).decode().split()
        return dict(field.split("=", 1) for field in fields)
    except ValueError:
        return None


# ---- finding and building at run time ------------------------------------------------------------


def sources_dir() -> Path | None:
    """The C++ sources: shipped inside the package, or the csrc/ of the source checkout it lives in."""
    for csrc in (_PACKAGE_DIR / "csrc", _PACKAGE_DIR.parent / "csrc"):
        if any(csrc.glob("*.cpp")) and (csrc.parent == _PACKAGE_DIR or (csrc.parent / "setup.py").is_file()):
            return csrc
    return None


def installed_path() -> Path | None:
    """The ``fastmask._C`` that a plain import would load (not loading it)."""
    try:
        spec = importlib.util.find_spec("fastmask._C")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def cache_root() -> Path:
    if os.environ.get(CACHE_VAR):
        return Path(os.environ[CACHE_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastmask"


def _off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _abi_mismatch(found: dict[str, str] | None, wanted: dict[str, str]) -> str | None:
    """Why a library with build key ``found`` must not be loaded here, or None."""
    if found is None:
        return "it carries no fastmask build key"
    fields = [name for name in ABI_FIELDS if found.get(name) != wanted[name] and wanted[name] != "unknown"]
    if not fields:
        return None
    if fields == ["sources"]:
        return "it was built from other C++ sources"
    return "it was built for " + ", ".join(f"{name} {found.get(name, '?')} (here {wanted[name]})" for name in fields)


def _arch_covers(archs: str, capability: tuple[int, int]) -> bool:
    """Whether a build for ``archs`` (TORCH_CUDA_ARCH_LIST syntax) runs on a GPU of ``capability``:
    same major and no newer minor for machine code (exact for the 'a' variants), no newer for PTX.
    Lists left to torch's defaults ("-") or naming architectures ("Hopper") are trusted."""
    matches = [re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", arch) for arch in archs.split(";")]
    if archs == "-" or None in matches:
        return True
    for match in matches:
        built = (int(match.group(1)), int(match.group(2)))
        if match.group(4) and built <= capability:
            return True
        same_major = built[0] == capability[0]
        if same_major and (built[1] == capability[1] or (not match.group(3) and built[1] < capability[1])):
            return True
    return False


def _cuda_plan() -> tuple[str | None, str | None]:
    """(architectures, None) when CUDA ops should be built here, else (None, why not with its fix)."""
    import torch

    if _on("FASTMASK_SKIP_CUDA"):
        return None, "FASTMASK_SKIP_CUDA=1 is set"
    if not torch.version.cuda:
        return None, f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    archs = cuda_archs()
    if archs is None:
        return None, "no CUDA GPU is visible"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        return None, (f"nvcc was not found: install the CUDA {torch.version.cuda} toolkit "
                      "or set CUDA_HOME to it")
    return archs, None


def _missing_tools() -> str | None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler was found ({compiler!r} is not on PATH): install one (g++) or set CXX"
    if _ninja_dir() is None:
        return "ninja was not found: pip install ninja"
    return None


def _ninja_dir() -> str | None:
    found = shutil.which("ninja")
    if found:
        return os.path.dirname(found)
    try:
        import ninja
    except ImportError:
        return None
    return ninja.BIN_DIR


@contextlib.contextmanager
def _environment(**values: str | None):
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wrapped(entry: Path, csrc: Path, source: Path) -> str:
    """A file in the build folder that includes ``source``: torch names objects by the file's base
    name alone, so csrc/x.cpp and csrc/cuda/x.cpp would share one object; these names are unique."""
    wrapper = entry / "sources" / source.relative_to(csrc).as_posix().replace("/", "__")
    text = f'#include "{source.resolve()}"\n'
    if not wrapper.is_file() or wrapper.read_text() != text:
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(text)
    return str(wrapper)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location("fastmask._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["fastmask._C"] = module
    return module


class _State:
    def __init__(self):
        self.loaded = False
        self.module = None
        self.path: Path | None = None
        self.how: str | None = None  # "installed", "cache" or "built"
        self.key: dict[str, str] | None = None
        self.reasons: dict[str, str | None] = {"cpp": None, "cuda": None}


_state = _State()
_lock = threading.Lock()
_warned: set[str] = set()


def load():
    """The compiled extension module, or None (then ``missing_reason("cpp")`` says why). Cached;
    never raises for a missing or failed build."""
    if not _state.loaded:
        with _lock:
            if not _state.loaded:
                try:
                    _load(_state)
                except Exception as error:  # an unusual environment must not break the pure-Python ops
                    _state.reasons["cpp"] = f"loading the compiled extension failed: {error!r}"
                    _state.reasons["cuda"] = _state.reasons["cpp"]
                _state.loaded = True
    return _state.module


def _load(state: _State) -> None:
    if _on(SKIP_VAR):
        state.reasons["cpp"] = state.reasons["cuda"] = f"{SKIP_VAR}=1 is set: unset it to use the compiled ops"
        return
    csrc = sources_dir()
    archs, no_cuda = _cuda_plan()
    wanted = build_key(csrc, archs is not None, archs)

    installed, refused = installed_path(), None
    partial = None  # the key of a loadable installed _C that lacks CUDA ops for this GPU: it still serves the CPU
    if installed is not None:
        found = read_key(installed)
        refused = _abi_mismatch(found, wanted)
        if refused is None:
            covered = found["ops"] == "cpu+cuda" and all(_arch_covers(found["archs"], gpu) for gpu in _gpus())
            if archs is None or covered:
                _use(state, _load_installed(), installed, "installed", found, no_cuda)
                return
            partial, refused = found, "it has no CUDA ops for this GPU"

    why_not = (
        f"{JIT_VAR}=0 turns off the just-in-time build" if _off(JIT_VAR)
        else f"the C++ sources are not installed next to fastmask ({_PACKAGE_DIR}): reinstall it" if csrc is None
        else _missing_tools()
    )
    if why_not is None:
        try:
            path, how = _build_cached(wanted, csrc, archs, installed if refused else None, refused)
        except _BuildError as error:
            why_not = str(error)
        else:
            _use(state, _import(path), path, how, wanted, no_cuda)
            return
    else:
        status = ("is not built" if installed is None
                  else f"at {installed} has no CUDA ops for this GPU" if partial is not None
                  else f"at {installed} is not usable ({refused})")
        why_not = f"fastmask._C {status} and {why_not}; or build it ahead: {_REINSTALL}"
    if partial is not None:
        _use(state, _load_installed(), installed, "installed", partial, None)
        state.reasons["cuda"] = why_not
        return
    state.reasons["cpp"] = state.reasons["cuda"] = why_not


def _gpus():
    import torch

    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def _load_installed():
    return importlib.import_module("fastmask._C")


def _use(state, module, path, how, key, no_cuda) -> None:
    state.module, state.path, state.how, state.key = module, path, how, key
    state.reasons["cpp"] = None
    without_cuda = no_cuda or "the extension was built without CUDA ops"
    state.reasons["cuda"] = None if key.get("ops") == "cpu+cuda" else without_cuda


class _BuildError(Exception):
    pass


def _build_cached(wanted, csrc, archs, refused_path, refused):
    """(path, "cache" or "built") of the cache's build for ``wanted``, building it under a file lock
    if needed. Raises _BuildError naming the build's log when it fails."""
    from filelock import FileLock, Timeout

    with_cuda = archs is not None
    tag = f"cu{wanted['cuda'].replace('.', '')}" if with_cuda else "cpu"
    digest = hashlib.sha256(key_define(wanted)[1].encode()).hexdigest()[:12]
    name = f"{wanted['fastmask']}-torch{wanted['torch']}-{tag}-{digest}"
    entry = cache_root() / name
    entry.mkdir(parents=True, exist_ok=True)
    library = entry / "_C.so"
    lock = FileLock(str(entry / "fastmask.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"fastmask: waiting for another process building the C++ extension in {entry}", file=sys.stderr,
              flush=True)
        lock.acquire()
    try:
        if library.is_file() and read_key(library) == wanted:
            return library, "cache"
        ops = "CPU and CUDA ops" if with_cuda else "CPU ops"
        because = f" ({refused_path} is not usable: {refused})" if refused_path is not None else ""
        print(f"fastmask: building the C++ extension ({ops}) for torch {wanted['torch']} in {entry}, once "
              f"(a few minutes){because}", file=sys.stderr, flush=True)
        log = entry / "build.log"
        try:
            _compile(entry, csrc, with_cuda, archs, wanted)
            if read_key(library) != wanted:
                raise RuntimeError(f"{library} does not carry the build key {wanted}")
        except Exception as error:
            log.write_text(traceback.format_exc())
            print(f"fastmask: the build failed; its log: {log}", file=sys.stderr, flush=True)
            raise _BuildError(f"the just-in-time build of the C++ extension failed; its log: {log}") from error
        log.unlink(missing_ok=True)
        return library, "built"
    finally:
        lock.release()


def _compile(entry: Path, csrc: Path, with_cuda: bool, archs: str | None, key: dict[str, str]) -> None:
    from torch.utils import cpp_extension

    define = "-D{}={}".format(*key_define(key))
    cuda_define = "-D{}={}".format(*CUDA_DEFINE)
    (entry / "lock").unlink(missing_ok=True)  # torch's own lock, left behind by a killed build: ours serialises
    path = os.environ.get("PATH", "")
    ninja = _ninja_dir()
    with _environment(TORCH_CUDA_ARCH_LIST=archs, PATH=ninja + os.pathsep + path if ninja else None):
        cpp_extension.load(
            "_C",
            [_wrapped(entry, csrc, source) for source in compiled_sources(csrc, with_cuda)],
            extra_cflags=CXX_FLAGS + [define] + ([cuda_define] if with_cuda else []),
            extra_cuda_cflags=NVCC_FLAGS + [define, cuda_define] if with_cuda else None,
            extra_ldflags=LINK_FLAGS,
            extra_include_paths=[str(csrc)],
            build_directory=str(entry),
            with_cuda=with_cuda,
            is_python_module=False,
        )


# ---- why a backend is missing ----------------------------------------------------------------------


def origin() -> tuple[Path, str] | None:
    """(file, how) of the loaded extension: how is "installed", "cache" or "built" (just now)."""
    load()
    return (_state.path, _state.how) if _state.module is not None else None


def missing_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run in this process, with the fix; None when it can."""
    import torch

    if backend == "reference":
        return None
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed: pip install triton"
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            return "no CUDA GPU is visible (TRITON_INTERPRET=1, set before triton is imported, runs it on the CPU)"
        return None
    if backend not in ("cpp", "cuda"):
        raise ValueError(f"unknown fastmask backend {backend!r}")
    if backend == "cuda" and not torch.cuda.is_available():
        if not torch.version.cuda:
            return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
        return "no CUDA GPU is visible"
    load()
    return _state.reasons[backend]


def warn_missing(backend: str) -> None:
    """Warn once per process that ``backend`` is missing where it could run, naming why and the fix.
    Nothing when it was switched off on purpose (FASTMASK_SKIP_EXTENSION=1) or cannot run here."""
    if backend in _warned:
        return
    _warned.add(backend)
    import torch

    if backend in ("cuda", "triton") and not torch.cuda.is_available():
        return
    reason = missing_reason(backend)
    if reason is None or reason.startswith(SKIP_VAR):
        return
    warnings.warn(
        f"fastmask: the {backend} backend is not available, so ops fall back to slower code: {reason}",
        BackendMissingWarning,
        stacklevel=3,
    )
