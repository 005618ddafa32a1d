"""Which backend runs an op: what is available, each device's preference, and forcing one."""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from . import _extension

BACKENDS = ("reference", "cpp", "cuda", "triton")
ENV_VAR = "FASTMASK_BACKEND"
# Kernel backends in the order each device type tries them; the reference serves every device last.
_PREFERENCE = {"cpu": ("cpp",), "cuda": ("triton", "cuda")}

_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("fastmask_backend", default=None)
# Read once, when fastmask is imported: a lookup per op call would cost a tenth of a small call.
_from_environment = os.environ.get(ENV_VAR) or None


def interpreting_triton() -> bool:
    """Triton's interpreter runs its kernels on CPU tensors; it must be chosen before triton loads."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _checkout_triton_kernels():
    """``fastmask.triton_kernels`` from a source checkout, where it is the top-level triton_kernels/
    folder (an installed fastmask has it inside the package)."""
    init = Path(__file__).resolve().parent.parent / "triton_kernels" / "__init__.py"
    if not init.is_file():
        return None
    spec = importlib.util.spec_from_file_location(
        "fastmask.triton_kernels", init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


@lru_cache(maxsize=None)
def triton_kernels():
    """The Triton backend's functions, or None without triton or a device it can run on."""
    if importlib.util.find_spec("triton") is None:
        return None
    if not (torch.cuda.is_available() or interpreting_triton()):
        return None
    try:
        return importlib.import_module("fastmask.triton_kernels")
    except ModuleNotFoundError as error:
        if error.name != "fastmask.triton_kernels":
            raise
    return _checkout_triton_kernels()


@lru_cache(maxsize=None)
def _compiled(submodule: str):
    extension = _extension.load()
    return getattr(extension, submodule, None) if extension is not None else None


def functions(backend: str, device_type: str):
    """The namespace of ``backend``'s kernels for ``device_type`` (attributes named like the ops),
    or None where it is not available."""
    if backend == "cpp":
        return _compiled("cpu") if device_type == "cpu" else None
    if backend == "cuda":
        return _compiled("cuda") if device_type == "cuda" and torch.cuda.is_available() else None
    if backend == "triton":
        return triton_kernels() if device_type == "cuda" or interpreting_triton() else None
    raise ValueError(f"unknown fastmask backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def available(name: str) -> bool:
    """Whether backend ``name`` can run here (on some device)."""
    if name == "reference":
        return True
    if name not in BACKENDS:
        raise ValueError(f"unknown fastmask backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return any(functions(name, device_type) is not None for device_type in ("cpu", "cuda"))


def backends() -> list[str]:
    """The backends usable in this process, in the order of the names in ``BACKENDS``."""
    return [name for name in BACKENDS if available(name)]


def _checked(name: str) -> str:
    if not available(name):
        raise RuntimeError(
            f"fastmask backend {name!r} is not available here: {_extension.missing_reason(name)} "
            f"(available: {', '.join(backends())})"
        )
    return name


def requested() -> Optional[str]:
    """The backend forced by ``use_backend``, else by ``FASTMASK_BACKEND`` (as set when fastmask was
    imported), if any."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return _checked(_from_environment) if _from_environment is not None else None


@contextlib.contextmanager
def use_backend(name: str):
    """Run every fastmask op inside the block on backend ``name``."""
    token = _forced.set(_checked(name))
    try:
        yield
    finally:
        _forced.reset(token)


def candidates(device_type: str, forced: Optional[str]) -> tuple[str, ...]:
    """Backends to try, in order, for an op on ``device_type``: the forced one, else the device's kernel
    backends; then the reference."""
    if forced is None:
        return _PREFERENCE.get(device_type, ()) + ("reference",)
    if forced != "reference" and functions(forced, device_type) is None:
        runs_on = {"cpp": "CPU tensors", "cuda": "CUDA tensors",
                   "triton": "CUDA tensors (CPU ones under TRITON_INTERPRET=1)"}[forced]
        raise ValueError(f"fastmask backend {forced!r} runs {runs_on}; got a tensor on {device_type}")
    return (forced, "reference") if forced != "reference" else ("reference",)


def warn_if_no_kernels(device_type: str, forced: Optional[str]) -> None:
    """When ops on ``device_type`` fall back to the reference, warn once per kernel backend that could
    serve the device but is missing, saying why and the fix (``_extension.warn_missing``)."""
    if forced != "reference":
        for name in _PREFERENCE.get(device_type, ()):
            _extension.warn_missing(name)
