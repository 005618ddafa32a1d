// CUDA kernels behind torch.ops.fastmask_C (schemas in ../registration.cpp). Arguments are checked
// as on the CPU (checks.h); outputs are allocated uninitialised because the kernels write every
// element; kernels run on the current stream and read the seed on the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "launchers.h"

namespace fastmask {
namespace {

void check_on_cuda(const char* name, const at::Tensor& tensor) {
  TORCH_CHECK_VALUE(tensor.is_cuda(), name, " must be a CUDA tensor, got one on ", tensor.device());
}

void check_cuda(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "fastmask_C::", op, ": CUDA error: ", cudaGetErrorString(status));
}

const int64_t* seed_pointer(const at::Tensor& seed) { return seed.const_data_ptr<int64_t>(); }

cuda::ItemType item_type(const at::Tensor& item_ids) {
  switch (item_ids.scalar_type()) {
    case at::kByte:
      return cuda::ItemType::kUInt8;
    case at::kChar:
      return cuda::ItemType::kInt8;
    case at::kShort:
      return cuda::ItemType::kInt16;
    case at::kInt:
      return cuda::ItemType::kInt32;
    case at::kLong:
      return cuda::ItemType::kInt64;
    default:
      TORCH_CHECK_TYPE(false, "item_ids must be an int8/uint8/int16/int32/int64 tensor, got ",
                       item_ids.scalar_type());
  }
  return cuda::ItemType::kInt64;
}

cuda::FloatType float_type(const char* name, const at::Tensor& values) {
  switch (values.scalar_type()) {
    case at::kFloat:
      return cuda::FloatType::kFloat32;
    case at::kHalf:
      return cuda::FloatType::kFloat16;
    case at::kBFloat16:
      return cuda::FloatType::kBFloat16;
    case at::kDouble:
      return cuda::FloatType::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, name, " must be float32, float16, bfloat16 or float64, got ", values.scalar_type());
  }
  return cuda::FloatType::kFloat32;
}

// Sizes the split of long rows over several blocks.
int multiprocessors(const at::Tensor& on_device, const char* op) {
  int count = 0;
  check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, on_device.get_device()), op);
  return count;
}

at::Tensor mlm_mask_cuda(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx,
                         int64_t threshold) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  TORCH_CHECK_VALUE(threshold >= 0 && threshold <= (int64_t{1} << 32),
                    "threshold must be in [0, 2^32] (floor(p * 2^32) for probability p), got ", threshold);
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  check_cuda(cuda::launch_mlm_mask(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                   seed_pointer(seed), static_cast<uint64_t>(threshold),
                                   mask.mutable_data_ptr<bool>(), c10::cuda::getCurrentCUDAStream()),
             "mlm_mask");
  return mask;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plm_train_masks_cuda(
    const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
    c10::IntArrayRef context_lengths, bool permute_all) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  TORCH_CHECK_VALUE(max_span_length >= 1 && max_span_length <= cuda::kMaxSpanLength,
                    "max_span_length must be in [1, ", cuda::kMaxSpanLength, "] on CUDA, got ", max_span_length);
  TORCH_CHECK_VALUE(static_cast<int64_t>(context_lengths.size()) == max_span_length + 1,
                    "context_lengths must have max_span_length + 1 = ", max_span_length + 1,
                    " entries (span 0..max_span_length), got ", context_lengths.size());
  cuda::PlmSpanTable spans{};
  spans.max_span_length = max_span_length;
  for (int64_t span = 1; span <= max_span_length; ++span) {
    TORCH_CHECK_VALUE(context_lengths[span] >= span && context_lengths[span] < (int64_t{1} << 31),
                      "context_lengths[", span, "] must be in [", span, ", 2^31), got ", context_lengths[span]);
    spans.context_lengths[span] = context_lengths[span];
  }
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  at::Tensor target_mapping = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  check_cuda(cuda::launch_plm_train_masks(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                          seed_pointer(seed), spans, permute_all, mask.mutable_data_ptr<bool>(),
                                          perm_mask.mutable_data_ptr<float>(),
                                          target_mapping.mutable_data_ptr<float>(),
                                          c10::cuda::getCurrentCUDAStream()),
             "plm_train_masks");
  return {mask, perm_mask, target_mapping};
}

at::Tensor plm_eval_perm_mask_cuda(const at::Tensor& item_ids, int64_t padding_idx) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kLong));
  check_cuda(cuda::launch_plm_eval_perm_mask(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                             perm_mask.mutable_data_ptr<int64_t>(),
                                             c10::cuda::getCurrentCUDAStream()),
             "plm_eval_perm_mask");
  return perm_mask;
}

at::Tensor gumbel_argmax_cuda(const at::Tensor& logits, const at::Tensor& seed) {
  check_on_cuda("logits", logits);
  const cuda::FloatType logits_type = float_type("logits", logits);
  TORCH_CHECK_VALUE(logits.dim() == 2, "logits must be 2-D (rows, vocabulary), got shape ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(1) >= 1, "logits must have at least one column, got shape ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(1) <= (int64_t{1} << 34), "logits has ", logits.size(1),
                    " columns; at most 2^34 are supported");
  check_rows("logits", logits.size(0));
  check_seed(seed, logits.device());
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor values = logits.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1);
  at::Tensor samples = at::empty({rows}, values.options().dtype(at::kLong));
  const int64_t splits = cuda::gumbel_argmax_splits(rows, vocab, multiprocessors(values, "gumbel_argmax"));
  at::Tensor partial_values, partial_indices;
  if (splits > 1) {
    partial_values = at::empty({rows * splits}, values.options().dtype(at::kFloat));
    partial_indices = at::empty({rows * splits}, values.options().dtype(at::kLong));
  }
  check_cuda(cuda::launch_gumbel_argmax(values.const_data_ptr(), logits_type, rows, vocab, seed_pointer(seed), splits,
                                        splits > 1 ? partial_values.mutable_data_ptr<float>() : nullptr,
                                        splits > 1 ? partial_indices.mutable_data_ptr<int64_t>() : nullptr,
                                        samples.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "gumbel_argmax");
  return samples;
}

at::Tensor target_ranks_cuda(const at::Tensor& scores, const at::Tensor& items) {
  check_on_cuda("scores", scores);
  const cuda::FloatType scores_type = float_type("scores", scores);
  TORCH_CHECK_VALUE(scores.dim() == 2, "scores must be 2-D (rows, vocabulary), got shape ", scores.sizes());
  TORCH_CHECK_TYPE(items.scalar_type() == at::kLong, "items must be an int64 tensor, got ", items.scalar_type());
  TORCH_CHECK_VALUE(items.dim() == 2 && items.size(0) == scores.size(0),
                    "items must be 2-D with one row per scores row (", scores.size(0), ", items per row), got shape ",
                    items.sizes());
  TORCH_CHECK_VALUE(items.device() == scores.device(), "items must be on ", scores.device(), " like scores, got ",
                    items.device());
  const c10::cuda::CUDAGuard guard(scores.device());
  const at::Tensor values = scores.contiguous();
  const at::Tensor columns = items.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1), num_items = columns.size(1);
  // The reference raises for an item beyond the vocabulary; checking it costs one device sync.
  if (columns.numel() > 0) {
    const int64_t largest = columns.max().item<int64_t>();
    TORCH_CHECK_VALUE(largest < vocab, "items must be column indices below ", vocab, " (or -1 for none), got ",
                      largest);
  }
  at::Tensor ranks = at::empty({rows, num_items}, columns.options());
  const int64_t splits = cuda::target_ranks_splits(rows, vocab, multiprocessors(values, "target_ranks"));
  check_cuda(cuda::launch_target_ranks(values.const_data_ptr(), scores_type, rows, vocab,
                                       columns.const_data_ptr<int64_t>(), num_items, splits,
                                       ranks.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "target_ranks");
  return ranks;
}

}  // namespace
}  // namespace fastmask

TORCH_LIBRARY_IMPL(fastmask_C, CUDA, m) {
  m.impl("mlm_mask", &fastmask::mlm_mask_cuda);
  m.impl("plm_train_masks", &fastmask::plm_train_masks_cuda);
  m.impl("plm_eval_perm_mask", &fastmask::plm_eval_perm_mask_cuda);
  m.impl("gumbel_argmax", &fastmask::gumbel_argmax_cuda);
  m.impl("target_ranks", &fastmask::target_ranks_cuda);
}
