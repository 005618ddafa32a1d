"""The compiled extension ``fastmask._C``: its C++ CPU kernels (``_C.cpu``) and CUDA kernels (``_C.cuda``)."""
from __future__ import annotations

import importlib
import importlib.util
import os
from functools import lru_cache
from typing import Optional

import torch


@lru_cache(maxsize=None)
def load():
    """The extension module, or None when it is not built (or ``FASTMASK_SKIP_EXTENSION=1``)."""
    if os.environ.get("FASTMASK_SKIP_EXTENSION") == "1":
        return None
    try:
        return importlib.import_module("fastmask._C")
    except ImportError:
        return None


def missing_reason(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run here, with the fix; None when it can."""
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install triton)"
        return None if torch.cuda.is_available() else "no CUDA device"
    extension = load()
    if extension is None:
        if os.environ.get("FASTMASK_SKIP_EXTENSION") == "1":
            return "FASTMASK_SKIP_EXTENSION=1 leaves the compiled extension unused"
        return "the compiled extension fastmask._C is not built (pip install --no-build-isolation .)"
    if backend == "cuda" and not hasattr(extension, "cuda"):
        return "fastmask._C was built without its CUDA ops (a CUDA torch and nvcc are needed to build them)"
    return None
