"""Which implementation runs an op: availability, defaults per device, and forcing one."""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from functools import lru_cache

import torch

from . import _extension

BACKENDS = ("reference", "cpp", "cuda", "triton")
ENV_VAR = "FASTMASK_BACKEND"

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastmask_backend", default=None)


@lru_cache(maxsize=None)
def compiled_extension():
    """The ``fastmask._C`` extension module, or None (``_extension.missing_reason("cpp")`` says why)."""
    extension = _extension.load()
    if extension is not None:
        importlib.import_module("fastmask._compiled")  # fakes of the fastmask_C ops
    return extension


@lru_cache(maxsize=None)
def _triton_usable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available(name: str) -> bool:
    if name == "reference":
        return True
    if name == "cpp":
        return compiled_extension() is not None
    if name == "cuda":
        ext = compiled_extension()
        return ext is not None and getattr(ext, "WITH_CUDA", False) and torch.cuda.is_available()
    if name == "triton":
        return _triton_usable()
    raise ValueError(f"unknown fastmask backend {name!r}; expected one of {', '.join(BACKENDS)}")


def backends() -> list[str]:
    """The backends usable in this process, in preference order."""
    return [name for name in BACKENDS if available(name)]


def _check(name: str) -> str:
    if not available(name):
        raise RuntimeError(
            f"fastmask backend {name!r} is not available here: {_extension.missing_reason(name)} "
            f"(available: {', '.join(backends())})"
        )
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Force every fastmask op inside the block to run on backend ``name``."""
    token = _forced.set(_check(name))
    try:
        yield
    finally:
        _forced.reset(token)


def select(device: torch.device) -> str:
    """The backend an op on ``device`` runs on: forced one, then ``FASTMASK_BACKEND``, then default."""
    forced = _forced.get() or os.environ.get(ENV_VAR)
    if forced:
        return _check(forced)
    if device.type == "cuda":
        for name in ("triton", "cuda"):
            if available(name):
                return name
        _extension.warn_missing("triton")
        _extension.warn_missing("cuda")
        return "reference"
    if available("cpp"):
        return "cpp"
    _extension.warn_missing("cpp")
    return "reference"
