"""``python -m fastmask``: a short report of this environment (versions, devices, backends and why
one is missing, where the compiled extension was loaded from). Builds the extension if needed."""
from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

import fastmask
from fastmask import _backend, _extension


def _triton_version() -> str:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _devices() -> list[str]:
    lines = [f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"]
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            lines.append(
                f"cuda:{index}: {props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB"
            )
    except Exception as error:  # a broken driver is worth reporting, not a traceback
        lines.append(f"cuda: error while listing GPUs: {error}")
        return lines
    if count == 0:
        lines.append("cuda: no GPU visible")
    return lines


def report() -> str:
    lines = [
        f"fastmask {fastmask.__version__} ({os.path.dirname(fastmask.__file__)})",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda or 'none (CPU-only torch)'}, triton {_triton_version()}",
        "devices:",
        *(f"  {line}" for line in _devices()),
    ]
    loaded = _extension.origin()
    if loaded is None:
        lines.append("extension: not loaded")
    else:
        path, how = loaded
        lines.append(f"extension: {path} ({'built just now' if how == 'built' else how})")
    lines.append("backends:")
    for name in _backend.BACKENDS:
        try:
            usable = _backend.available(name)
            reason = None if usable else _extension.missing_reason(name)
        except Exception as error:
            usable, reason = False, f"error while checking: {error}"
        lines.append(f"  {name:<9} {'available' if usable else 'unavailable: ' + (reason or 'unknown reason')}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
