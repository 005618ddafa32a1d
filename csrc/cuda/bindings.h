// The CUDA kernels as functions of the extension's submodule _C.cuda (see ../module.cpp).
#pragma once
#include <pybind11/pybind11.h>

namespace fastmask {
namespace cuda {

void define_ops(pybind11::module_ m);

}  // namespace cuda
}  // namespace fastmask
