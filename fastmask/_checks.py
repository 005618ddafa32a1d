"""When fastmask may read input values back to the host to check them."""
import torch


def data_checks_enabled(tensor: torch.Tensor, check_inputs: bool = True) -> bool:
    """Value checks synchronise a GPU: skip them when asked, under torch.compile and CUDA-graph capture."""
    if not check_inputs or torch.compiler.is_compiling():
        return False
    return not (tensor.is_cuda and torch.cuda.is_current_stream_capturing())
