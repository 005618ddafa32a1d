// The extension module fastmask._C: the C++ CPU kernels as _C.cpu.<op> and, when built with CUDA, the
// CUDA kernels as _C.cuda.<op>, each with the name, arguments and results of the op in fastmask/ops.py
// (the only statement of the ops' schemas). Plain functions: the op table calls them directly.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "cpu_ops.h"

#ifdef FASTMASK_WITH_CUDA
#include "cuda/bindings.h"
#endif

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastmask's compiled kernels";
  // Long CPU kernels run without the GIL, so other Python threads go on meanwhile.
  const auto release = py::call_guard<py::gil_scoped_release>();
  py::module_ cpu = m.def_submodule("cpu", "C++ CPU kernels (at::parallel_for over rows)");
  cpu.def("mlm_train", &fastmask::cpu::mlm_train, release);
  cpu.def("plm_train", &fastmask::cpu::plm_train, release);
  cpu.def("plm_eval", &fastmask::cpu::plm_eval, release);
  cpu.def("next_item_targets", &fastmask::cpu::next_item_targets, release);
  cpu.def("last_item_targets", &fastmask::cpu::last_item_targets, release);
  cpu.def("clm_last_item_targets", &fastmask::cpu::clm_last_item_targets, release);
  cpu.def("mlm_inference_targets", &fastmask::cpu::mlm_inference_targets, release);
  cpu.def("gumbel_argmax", &fastmask::cpu::gumbel_argmax, release);
  cpu.def("target_ranks", &fastmask::cpu::target_ranks, release);
  cpu.def("merlin_mask_random", &fastmask::cpu::merlin_mask_random, release);
  cpu.def("bert4rec_mask", &fastmask::cpu::bert4rec_mask, release);
  cpu.def("log_uniform_draws", &fastmask::cpu::log_uniform_draws, release);
  cpu.def("target_ranks_from_hidden", &fastmask::cpu::target_ranks_from_hidden, release);
  cpu.def("topk_from_hidden", &fastmask::cpu::topk_from_hidden, release);
  cpu.def("gumbel_argmax_from_hidden", &fastmask::cpu::gumbel_argmax_from_hidden, release);
  cpu.def("target_scores_from_hidden", &fastmask::cpu::target_scores_from_hidden, release);
  cpu.def("count_ahead_from_hidden", &fastmask::cpu::count_ahead_from_hidden, release);
#ifdef FASTMASK_WITH_CUDA
  fastmask::cuda::define_ops(m.def_submodule("cuda", "CUDA kernels"));
#endif
}
