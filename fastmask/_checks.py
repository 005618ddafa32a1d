"""When fastmask may read input values back to the host to check them."""
from typing import Optional

import torch


def data_checks_enabled(tensor: torch.Tensor, check_inputs: Optional[bool] = None) -> bool:
    """Whether to check the values of ``tensor``, which reads them back to the host.

    ``check_inputs``: True checks on every device; None (the modules' default) checks where the read
    is free, not on a GPU, where it would stall the stream; False never checks. Checks are skipped
    under torch.compile and CUDA-graph capture whatever it says, and on the meta device (no values).
    """
    if (check_inputs is not None and not check_inputs) or torch.compiler.is_compiling() or tensor.is_meta:
        return False
    if not tensor.is_cuda:
        return True
    return bool(check_inputs) and not torch.cuda.is_current_stream_capturing()
