"""fastmask: fused, seeded kernels for Transformers4Rec masking, sampling and ranking metrics."""
from ._backend import backends, use_backend
from . import ops

__version__ = "0.1.0"
__all__ = ["backends", "use_backend", "ops", "__version__"]
