"""fastmask: fused, seeded kernels for Transformers4Rec masking, sampling and ranking metrics."""
from ._backend import backends, use_backend
from . import ops
from .integration import (
    is_transformers4rec_patched,
    patch_transformers4rec,
    patched_transformers4rec,
    unpatch_transformers4rec,
)

__version__ = "0.1.0"
__all__ = ["backends", "use_backend", "ops", "__version__"]
__all__ += [
    "patch_transformers4rec",
    "unpatch_transformers4rec",
    "patched_transformers4rec",
    "is_transformers4rec_patched",
]
