"""Triton kernels of fastmask, installed as ``fastmask.triton_kernels``."""
