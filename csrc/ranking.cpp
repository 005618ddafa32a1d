// CPU target ranks (fastmask/reference/ranking.py) without sorting: the rank of column i is the number
// of columns j that come before it in stable descending order (rank_count.h). Each row is read once, in
// L1-sized chunks, counting for all of the row's items per chunk.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu_ops.h"
#include "rank_count.h"
#include "rules.h"

namespace fastmask {
namespace {

constexpr int64_t kChunk = 4096;

// float16 / bfloat16 scores compare exactly as float32.
template <typename scalar_t>
using compare_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename scalar_t, typename acc_t = compare_t<scalar_t>>
void rank_row(const scalar_t* scores, int64_t vocab, const int64_t* items, int64_t num_items, int64_t* ranks,
              std::vector<acc_t>& targets, std::vector<float>& converted) {
  for (int64_t m = 0; m < num_items; ++m) {
    ranks[m] = rules::ranked_item(items[m], vocab) ? 0 : -1;
    targets[m] = ranks[m] < 0 ? acc_t{0} : static_cast<acc_t>(scores[items[m]]);
  }
  for (int64_t begin = 0; begin < vocab; begin += kChunk) {
    const int64_t n = std::min(kChunk, vocab - begin);
    const acc_t* chunk;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      chunk = scores + begin;
    } else {
      to_float(scores + begin, converted.data(), n);
      chunk = converted.data();
    }
    for (int64_t m = 0; m < num_items; ++m) {
      if (ranks[m] >= 0) ranks[m] += count_before(chunk, begin, n, items[m], targets[m]);
    }
  }
}

}  // namespace

namespace cpu {

at::Tensor target_ranks(const at::Tensor& scores, const at::Tensor& items) {
  check_rank_inputs(scores, items);
  const at::Tensor values = scores.contiguous();
  const at::Tensor columns = items.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1), num_items = columns.size(1);
  const int64_t* item_data = columns.const_data_ptr<int64_t>();
  at::Tensor ranks = at::empty({rows, num_items}, columns.options());
  int64_t* out = ranks.mutable_data_ptr<int64_t>();
  if (num_items == 0) return ranks;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "target_ranks_cpu", [&] {
    const scalar_t* data = values.const_data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(vocab),
                     [&](int64_t begin, int64_t end) {
                       std::vector<compare_t<scalar_t>> targets(num_items);
                       std::vector<float> converted(std::is_same_v<compare_t<scalar_t>, scalar_t> ? 0 : kChunk);
                       for (int64_t r = begin; r < end; ++r) {
                         rank_row(data + r * vocab, vocab, item_data + r * num_items, num_items, out + r * num_items,
                                  targets, converted);
                       }
                     });
  });
  return ranks;
}

}  // namespace cpu
}  // namespace fastmask
