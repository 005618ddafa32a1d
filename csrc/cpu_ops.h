// The CPU kernels behind torch.ops.fastmask_C (schemas in registration.cpp, rules in fastmask/reference).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "checks.h"

// x86 builds compile AVX2 / F16C paths next to the portable ones and pick one at run time.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTMASK_X86_DISPATCH 1
#endif

namespace fastmask {
// FASTMASK_CPU_PORTABLE=1 runs the portable code even where AVX2 / F16C exist, so that it is tested.
inline bool simd_allowed() {
  static const bool allowed = [] {
    const char* portable = std::getenv("FASTMASK_CPU_PORTABLE");
    return portable == nullptr || std::strcmp(portable, "1") != 0;
  }();
  return allowed;
}

// FASTMASK_CPU_AVX512=0 leaves AVX-512 unused (AVX2 code runs where it exists), so that both are tested.
inline bool avx512_allowed() {
  static const bool allowed = [] {
    const char* avx512 = std::getenv("FASTMASK_CPU_AVX512");
    return simd_allowed() && (avx512 == nullptr || std::strcmp(avx512, "0") != 0);
  }();
  return allowed;
}
}  // namespace fastmask

namespace fastmask {
namespace cpu {

// The C++ CPU kernels of the ops in fastmask/ops.py: same names, arguments and results (the op table
// checks the arguments first; the TORCH_CHECKs here only keep the kernels memory-safe).
using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using TensorQuad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

TensorPair mlm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold);
TensorQuad plm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
                     const std::vector<int64_t>& context_lengths, bool permute_all);
TensorQuad plm_eval(const at::Tensor& item_ids, int64_t padding_idx);
TensorPair next_item_targets(const at::Tensor& item_ids, int64_t padding_idx);
TensorPair last_item_targets(const at::Tensor& item_ids, int64_t padding_idx);
TensorPair clm_last_item_targets(const at::Tensor& item_ids, int64_t padding_idx);
TensorPair mlm_inference_targets(const at::Tensor& item_ids, int64_t padding_idx);
at::Tensor gumbel_argmax(const at::Tensor& logits, const at::Tensor& seed);
at::Tensor target_ranks(const at::Tensor& scores, const at::Tensor& items);
at::Tensor merlin_mask_random(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx,
                              int64_t threshold, bool reset_any_full_row);
TensorQuad bert4rec_mask(const at::Tensor& item_seq, const std::optional<at::Tensor>& item_seq_len,
                         const at::Tensor& seed, int64_t n_items, int64_t threshold, int64_t mask_item_length,
                         int64_t ft_threshold);
at::Tensor log_uniform_draws(const at::Tensor& cdf_table, const at::Tensor& seed, int64_t num_draws);
at::Tensor target_ranks_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, const at::Tensor& targets,
                                    const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor> topk_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, int64_t k,
                                                    const std::optional<at::Tensor>& bias);
at::Tensor gumbel_argmax_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight,
                                     const std::optional<at::Tensor>& bias, const at::Tensor& seed);
at::Tensor target_scores_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, const at::Tensor& items,
                                     const std::optional<at::Tensor>& bias);
at::Tensor count_ahead_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& scores,
                                   const at::Tensor& items, int64_t first_item);

}  // namespace cpu

// Rows per at::parallel_for task: about 256k elements (0.1-1 ms) of work each. Smaller inputs stay on
// one thread: waking a second one costs more than they take, and milliseconds on a busy machine.
inline int64_t grain_rows(int64_t elements_per_row) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, elements_per_row));
}

// float16 -> float32 (exact), with F16C where the CPU has it.
void half_to_float(const c10::Half* src, float* dst, int64_t n);

// Any floating dtype -> float32, rounding like Tensor.float().
template <typename scalar_t>
void to_float(const scalar_t* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    half_to_float(src, dst, n);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
  }
}

// The 64 bits of a CPU seed tensor (already checked by check_seed) as the Philox key.
inline uint64_t seed_key_cpu(const at::Tensor& seed) {
  return static_cast<uint64_t>(*seed.const_data_ptr<int64_t>());  // one element: strides do not matter
}

// Checked arguments of an op that draws a Bernoulli (B, L) bool mask over item ids (MLM, Merlin).
struct BernoulliMaskArgs {
  uint64_t key;     // Philox key
  at::Tensor ids;   // item ids, contiguous
  at::Tensor mask;  // the output, uninitialised
  uint64_t threshold;

  BernoulliMaskArgs(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold_arg) {
    check_item_ids(item_ids, padding_idx);
    check_seed(seed, item_ids.device());
    check_threshold(threshold_arg);
    key = seed_key_cpu(seed);
    ids = item_ids.contiguous();
    mask = at::empty(ids.sizes(), ids.options().dtype(at::kBool));
    threshold = static_cast<uint64_t>(threshold_arg);
  }
};

}  // namespace fastmask
