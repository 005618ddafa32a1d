// The fastmask_C operator library: schemas of the masking, sampling and ranking ops and their CPU
// kernels. Other files extend it with TORCH_LIBRARY_FRAGMENT(fastmask_C, m) and add CUDA kernels with
// TORCH_LIBRARY_IMPL(fastmask_C, CUDA, m). Importing fastmask._C runs these registrations.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "cpu_ops.h"

TORCH_LIBRARY(fastmask_C, m) {
  // Random ops must not be merged or constant-folded by the compiler.
  const std::vector<at::Tag> seeded{at::Tag::nondeterministic_seeded};
  m.def("mlm_mask(Tensor item_ids, Tensor seed, int padding_idx, int threshold) -> Tensor", seeded);
  m.def("plm_train_masks(Tensor item_ids, Tensor seed, int padding_idx, int max_span_length, int[] context_lengths, "
        "bool permute_all) -> (Tensor, Tensor, Tensor)",
        seeded);
  m.def("plm_eval_perm_mask(Tensor item_ids, int padding_idx) -> Tensor");
  m.def("gumbel_argmax(Tensor logits, Tensor seed) -> Tensor", seeded);
  m.def("target_ranks(Tensor scores, Tensor items) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastmask_C, CPU, m) {
  m.impl("mlm_mask", &fastmask::mlm_mask_cpu);
  m.impl("plm_train_masks", &fastmask::plm_train_masks_cpu);
  m.impl("plm_eval_perm_mask", &fastmask::plm_eval_perm_mask_cpu);
  m.impl("gumbel_argmax", &fastmask::gumbel_argmax_cpu);
  m.impl("target_ranks", &fastmask::target_ranks_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef FASTMASK_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
}
