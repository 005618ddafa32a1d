// CPU ranks, top-k and Gumbel samples straight from hidden states (fastmask/reference/hidden.py): the
// scores hidden @ item_weight.T + bias are computed one tile of items at a time and consumed at once, so
// no (N, V) tensor is ever built.
//
// Every score is the reference's sum: acc = 0, acc = acc + h[i] * w[i] for i = 0..d-1, then acc + bias,
// one rounding per operation (-ffp-contract=off: no FMA; no reassociation). The same IEEE operations
// give the same bits in any vector width, so an item's score depends neither on the tile nor on the lane
// it is computed in, nor on whether it is computed alone (a target's score) or in a tile.
//
// Work: at::parallel_for over rows. Each task walks the item tiles in id order, packs a tile transposed
// (d x T floats, sized for L2), scores it for a few rows at a time with a register-blocked micro-kernel
// (AVX-512, AVX2 or portable, chosen at run time) and hands each row's T scores to an epilogue: rank
// counts, a top-k heap or the Gumbel scan. Extra memory: one tile per task and O(N * (M + k)).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "checks.h"
#include "cpu_ops.h"
#include "gumbel_scan.h"
#include "rank_count.h"
#include "rules.h"

#ifdef FASTMASK_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastmask {
namespace {

// Bytes of one packed tile: most of a core's L2, which also holds the rows' scores and hidden states.
constexpr int64_t kTileBytes = 192 * 1024;
// Tiles are whole Gumbel chunks (and so whole micro-kernel widths).
constexpr int64_t kTileQuantum = kGumbelChunk;
constexpr int64_t kMaxTileItems = 8192;
constexpr int kMaxMicroRows = 8;  // rows per micro-kernel call, the most of any variant

using ScoreFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*);

struct Scorer {
  ScoreFn score;
  int rows;  // rows per call
};

// Each variant scores rows h[0..R) (row stride d) for the packed tile's columns [0, width) (packed[i * stride
// + j] = w[j][i]; width a multiple of 32) into out[r * stride + j], plus bias[j] when there is a bias, with
// R x C accumulators, C weight vectors and a broadcast held in vector registers.
void score_portable(const float* h, int64_t d, const float* packed, int64_t stride, const float* bias,
                    int64_t width, float* out) {
  constexpr int R = 4, W = 8;
  for (int64_t col = 0; col < width; col += W) {
    float acc[R][W] = {};
    const float* w = packed + col;
    for (int64_t i = 0; i < d; ++i, w += stride) {
      for (int r = 0; r < R; ++r) {
        const float x = h[r * d + i];
        for (int j = 0; j < W; ++j) acc[r][j] = acc[r][j] + x * w[j];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < W; ++j) out[r * stride + col + j] = bias != nullptr ? acc[r][j] + bias[col + j] : acc[r][j];
  }
}

#ifdef FASTMASK_X86_DISPATCH
__attribute__((target("avx2"))) void score_avx2(const float* h, int64_t d, const float* packed, int64_t stride,
                                                const float* bias, int64_t width, float* out) {
  constexpr int R = 6, C = 2, L = 8;
  for (int64_t col = 0; col < width; col += C * L) {
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    const float* w = packed + col;
    for (int64_t i = 0; i < d; ++i, w += stride) {
      const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + L);
      for (int r = 0; r < R; ++r) {
        const __m256 x = _mm256_broadcast_ss(h + r * d + i);
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(x, w0));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(x, w1));
      }
    }
    for (int c = 0; c < C; ++c) {
      const __m256 b = bias != nullptr ? _mm256_loadu_ps(bias + col + c * L) : _mm256_setzero_ps();
      for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(out + r * stride + col + c * L, bias != nullptr ? _mm256_add_ps(acc[r][c], b) : acc[r][c]);
      }
    }
  }
}

__attribute__((target("avx512f"))) void score_avx512(const float* h, int64_t d, const float* packed, int64_t stride,
                                                     const float* bias, int64_t width, float* out) {
  constexpr int R = 8, C = 2, L = 16;
  for (int64_t col = 0; col < width; col += C * L) {
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    const float* w = packed + col;
    for (int64_t i = 0; i < d; ++i, w += stride) {
      const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + L);
      for (int r = 0; r < R; ++r) {
        const __m512 x = _mm512_set1_ps(h[r * d + i]);
        acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_mul_ps(x, w0));
        acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_mul_ps(x, w1));
      }
    }
    for (int c = 0; c < C; ++c) {
      const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + col + c * L) : _mm512_setzero_ps();
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(out + r * stride + col + c * L, bias != nullptr ? _mm512_add_ps(acc[r][c], b) : acc[r][c]);
      }
    }
  }
}
#endif

const Scorer& scorer() {
  static const Scorer chosen = [] {
#ifdef FASTMASK_X86_DISPATCH
    if (avx512_allowed() && __builtin_cpu_supports("avx512f")) return Scorer{score_avx512, 8};
    if (simd_allowed() && __builtin_cpu_supports("avx2")) return Scorer{score_avx2, 6};
#endif
    return Scorer{score_portable, 4};
  }();
  return chosen;
}

// One score computed alone, in the micro-kernel's order.
template <typename scalar_t>
float score_one(const float* h, const scalar_t* w, int64_t d, const scalar_t* bias) {
  float acc = 0.0f;
  for (int64_t i = 0; i < d; ++i) acc = acc + h[i] * static_cast<float>(w[i]);
  return bias != nullptr ? acc + static_cast<float>(*bias) : acc;
}

// The checked inputs: hidden widened to float32 (padded with zero rows, so that a micro-kernel call
// starting at any row stays inside), the items' weights and bias as given.
template <typename scalar_t>
struct Scores {
  at::Tensor hidden_rows;  // float32 (N + kMaxMicroRows, d)
  at::Tensor weight_rows;  // (V, d), contiguous
  at::Tensor bias_values;  // (V,), contiguous, or undefined
  int64_t rows, dim, items;

  Scores(const at::Tensor& hidden, const at::Tensor& item_weight, const std::optional<at::Tensor>& bias) {
    rows = hidden.size(0);
    dim = hidden.size(1);
    items = item_weight.size(0);
    hidden_rows = at::zeros({rows + kMaxMicroRows, dim}, hidden.options().dtype(at::kFloat));
    hidden_rows.narrow(0, 0, rows).copy_(hidden);
    weight_rows = item_weight.contiguous();
    if (bias.has_value()) bias_values = bias->contiguous();
  }

  const float* hidden_row(int64_t n) const { return hidden_rows.const_data_ptr<float>() + n * dim; }
  const scalar_t* weight() const { return weight_rows.const_data_ptr<scalar_t>(); }
  const scalar_t* bias() const { return bias_values.defined() ? bias_values.const_data_ptr<scalar_t>() : nullptr; }

  int64_t tile_items() const {
    const int64_t fit = kTileBytes / (static_cast<int64_t>(sizeof(float)) * std::max<int64_t>(dim, 1));
    return std::clamp<int64_t>(fit / kTileQuantum * kTileQuantum, kTileQuantum, kMaxTileItems);
  }

  float score(int64_t n, int64_t item) const {
    const scalar_t* b = bias();
    return score_one(hidden_row(n), weight() + item * dim, dim, b != nullptr ? b + item : nullptr);
  }

  // fn(n, scores, first, count) for rows n in [begin, end) and every tile [first, first + count) of
  // items in id order, scores[j] the score of item first + j.
  template <class Fn>
  void for_each_tile(int64_t begin, int64_t end, Fn fn) const {
    const Scorer& micro = scorer();
    const int64_t stride = tile_items();
    std::vector<float> packed(dim * stride), bias_tile(stride), tile_scores(micro.rows * stride);
    const scalar_t* b = bias();
    for (int64_t first = 0; first < items; first += stride) {
      const int64_t count = std::min(stride, items - first);
      const int64_t width = (count + kTileQuantum - 1) / kTileQuantum * kTileQuantum;
      const scalar_t* w = weight() + first * dim;
      for (int64_t j = 0; j < width; ++j) {
        for (int64_t i = 0; i < dim; ++i) packed[i * stride + j] = j < count ? static_cast<float>(w[j * dim + i]) : 0.0f;
        if (b != nullptr) bias_tile[j] = j < count ? static_cast<float>(b[first + j]) : 0.0f;
      }
      for (int64_t row = begin; row < end; row += micro.rows) {
        micro.score(hidden_row(row), dim, packed.data(), stride, b != nullptr ? bias_tile.data() : nullptr, width,
                    tile_scores.data());
        for (int64_t r = 0; r < std::min<int64_t>(micro.rows, end - row); ++r) {
          fn(row + r, tile_scores.data() + r * stride, first, count);
        }
      }
    }
  }
};

// Rows per at::parallel_for task: whole micro-kernel blocks, and enough work to be worth a thread.
int64_t grain(int64_t items, int64_t dim) { return std::max<int64_t>(kMaxMicroRows, grain_rows(items * std::max<int64_t>(dim, 1))); }

// Calls fn(scalar_t{}) with the C++ type of a checked hidden dtype.
template <class Fn>
void dispatch_hidden(const at::Tensor& hidden, Fn fn) {
  switch (hidden.scalar_type()) {
    case at::kFloat:
      return fn(float{});
    case at::kHalf:
      return fn(c10::Half{});
    case at::kBFloat16:
      return fn(c10::BFloat16{});
    default:
      TORCH_CHECK_TYPE(false, "hidden must be float32, float16 or bfloat16, got ", hidden.scalar_type());
  }
}

// counts[n, m] += the items ranked before (target_scores[n, m], items[n, m]), for rows n in [begin, end)
// and the slots n * num_items + m that are `active` (all when null).
template <typename scalar_t>
void count_ahead_rows(const Scores<scalar_t>& s, int64_t begin, int64_t end, const float* target_scores,
                      const int64_t* items, int64_t num_items, int64_t first_item, const uint8_t* active,
                      int64_t* counts) {
  s.for_each_tile(begin, end, [&](int64_t n, const float* scores, int64_t first, int64_t count) {
    for (int64_t slot = n * num_items; slot < (n + 1) * num_items; ++slot) {
      if (active == nullptr || active[slot]) {
        counts[slot] += count_before(scores, first_item + first, count, items[slot], target_scores[slot]);
      }
    }
  });
}

// The ranking order as a signed integer: NaN highest (all equal), -0.0 == 0.0. Branch-free, so that
// loops over it vectorise.
inline int32_t order_key(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const int32_t magnitude = bits & 0x7FFFFFFF;
  const int32_t key = bits ^ ((bits >> 31) & 0x7FFFFFFF);
  return magnitude > 0x7F800000 ? std::numeric_limits<int32_t>::max() : (magnitude == 0 ? 0 : key);
}

struct Ranked {
  float score;
  int64_t id;
};

// a before b: higher key, then lower id.
inline bool ranks_first(const Ranked& a, const Ranked& b) {
  const int32_t ka = order_key(a.score), kb = order_key(b.score);
  return ka > kb || (ka == kb && a.id < b.id);
}

// A row's k first items so far, as a heap whose front is the last of them.
struct TopHeap {
  Ranked* slots;
  int64_t size = 0;

  // Items first..first+count-1, after every item seen so far: a later item enters only when it ranks
  // before the last one kept (a higher score, or NaN over a number), never on a tie.
  void offer(const float* scores, int64_t first, int64_t count, int64_t k) {
    int64_t j = 0;
    for (; j < count && size < k; ++j) {
      slots[size++] = Ranked{scores[j], first + j};
      std::push_heap(slots, slots + size, ranks_first);
    }
    float last = slots[0].score;
    if (j == count || std::isnan(last)) return;
    uint32_t entering = 0;  // a count, so that the test vectorises
    for (int64_t t = j; t < count; ++t) entering += !(scores[t] <= last);
    if (entering == 0) return;
    for (; j < count; ++j) {
      if (scores[j] <= last) continue;
      std::pop_heap(slots, slots + k, ranks_first);
      slots[k - 1] = Ranked{scores[j], first + j};
      std::push_heap(slots, slots + k, ranks_first);
      last = slots[0].score;
      if (std::isnan(last)) return;
    }
  }
};

}  // namespace

namespace cpu {

at::Tensor target_scores_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, const at::Tensor& items,
                                     const std::optional<at::Tensor>& bias) {
  check_hidden_inputs(hidden, item_weight, bias);
  check_hidden_items("items", items, hidden);
  const at::Tensor ids = items.contiguous();
  at::Tensor out = at::empty(ids.sizes(), ids.options().dtype(at::kFloat));
  float* values = out.mutable_data_ptr<float>();
  const int64_t* id_data = ids.const_data_ptr<int64_t>();
  const int64_t num_items = ids.size(1);
  dispatch_hidden(hidden, [&](auto type) {
    using scalar_t = decltype(type);
    const Scores<scalar_t> s(hidden, item_weight, bias);
    at::parallel_for(0, s.rows, grain_rows(num_items * std::max<int64_t>(s.dim, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t slot = begin * num_items; slot < end * num_items; ++slot) {
        const int64_t item = id_data[slot];
        values[slot] = rules::ranked_item(item, s.items) ? s.score(slot / num_items, item) : 0.0f;
      }
    });
  });
  return out;
}

at::Tensor count_ahead_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& scores,
                                   const at::Tensor& items, int64_t first_item) {
  check_hidden_inputs(hidden, item_weight, bias);
  check_hidden_items("items", items, hidden);
  TORCH_CHECK_TYPE(scores.scalar_type() == at::kFloat, "scores must be a float32 tensor, got ", scores.scalar_type());
  TORCH_CHECK_VALUE(scores.sizes() == items.sizes(), "scores must have the shape of items");
  const at::Tensor ids = items.contiguous(), targets = scores.contiguous();
  at::Tensor counts = at::zeros(ids.sizes(), ids.options());
  int64_t* out = counts.mutable_data_ptr<int64_t>();
  if (ids.size(1) == 0) return counts;
  dispatch_hidden(hidden, [&](auto type) {
    using scalar_t = decltype(type);
    const Scores<scalar_t> s(hidden, item_weight, bias);
    at::parallel_for(0, s.rows, grain(s.items, s.dim), [&](int64_t begin, int64_t end) {
      count_ahead_rows(s, begin, end, targets.const_data_ptr<float>(), ids.const_data_ptr<int64_t>(), ids.size(1),
                       first_item, nullptr, out);
    });
  });
  return counts;
}

at::Tensor target_ranks_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, const at::Tensor& targets,
                                    const std::optional<at::Tensor>& bias) {
  check_hidden_inputs(hidden, item_weight, bias);
  check_hidden_items("targets", targets, hidden);
  const at::Tensor ids = targets.contiguous();
  const int64_t num_items = ids.size(1);
  at::Tensor ranks = at::empty(ids.sizes(), ids.options());
  int64_t* out = ranks.mutable_data_ptr<int64_t>();
  if (num_items == 0) return ranks;
  const int64_t* id_data = ids.const_data_ptr<int64_t>();
  std::vector<float> target_scores(ids.numel());
  std::vector<uint8_t> ranked(ids.numel());
  dispatch_hidden(hidden, [&](auto type) {
    using scalar_t = decltype(type);
    const Scores<scalar_t> s(hidden, item_weight, bias);
    at::parallel_for(0, s.rows, grain(s.items, s.dim), [&](int64_t begin, int64_t end) {
      for (int64_t slot = begin * num_items; slot < end * num_items; ++slot) {
        ranked[slot] = rules::ranked_item(id_data[slot], s.items);
        target_scores[slot] = ranked[slot] ? s.score(slot / num_items, id_data[slot]) : 0.0f;
        out[slot] = ranked[slot] ? 0 : -1;
      }
      count_ahead_rows(s, begin, end, target_scores.data(), id_data, num_items, 0, ranked.data(), out);
    });
  });
  return ranks;
}

std::tuple<at::Tensor, at::Tensor> topk_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight, int64_t k,
                                                    const std::optional<at::Tensor>& bias) {
  check_hidden_inputs(hidden, item_weight, bias);
  TORCH_CHECK_VALUE(k >= 0 && k <= item_weight.size(0), "k must be in [0, ", item_weight.size(0), "], got ", k);
  const int64_t rows = hidden.size(0);
  at::Tensor values = at::empty({rows, k}, hidden.options().dtype(at::kFloat));
  at::Tensor ids = at::empty({rows, k}, hidden.options().dtype(at::kLong));
  if (k == 0 || rows == 0) return {values, ids};
  float* value_data = values.mutable_data_ptr<float>();
  int64_t* id_data = ids.mutable_data_ptr<int64_t>();
  dispatch_hidden(hidden, [&](auto type) {
    using scalar_t = decltype(type);
    const Scores<scalar_t> s(hidden, item_weight, bias);
    at::parallel_for(0, rows, grain(s.items, s.dim), [&](int64_t begin, int64_t end) {
      std::vector<Ranked> slots((end - begin) * k);
      std::vector<TopHeap> heaps(end - begin);
      for (int64_t n = begin; n < end; ++n) heaps[n - begin].slots = slots.data() + (n - begin) * k;
      s.for_each_tile(begin, end, [&](int64_t n, const float* scores, int64_t first, int64_t count) {
        heaps[n - begin].offer(scores, first, count, k);
      });
      for (int64_t n = begin; n < end; ++n) {
        Ranked* row = heaps[n - begin].slots;
        std::sort_heap(row, row + k, ranks_first);
        for (int64_t j = 0; j < k; ++j) {
          value_data[n * k + j] = row[j].score;
          id_data[n * k + j] = row[j].id;
        }
      }
    });
  });
  return {values, ids};
}

at::Tensor gumbel_argmax_from_hidden(const at::Tensor& hidden, const at::Tensor& item_weight,
                                     const std::optional<at::Tensor>& bias, const at::Tensor& seed) {
  check_hidden_inputs(hidden, item_weight, bias);
  TORCH_CHECK_VALUE(item_weight.size(0) >= 1, "item_weight must hold at least one item to sample from");
  TORCH_CHECK_VALUE(item_weight.size(0) <= kMaxVocab, "item_weight has more than 2^34 items");
  check_seed(seed, hidden.device());
  const uint64_t key = seed_key_cpu(seed);
  const int64_t rows = hidden.size(0);
  at::Tensor samples = at::empty({rows}, hidden.options().dtype(at::kLong));
  int64_t* out = samples.mutable_data_ptr<int64_t>();
  gumbel_scan_init();  // tables built once, before the parallel region
  dispatch_hidden(hidden, [&](auto type) {
    using scalar_t = decltype(type);
    const Scores<scalar_t> s(hidden, item_weight, bias);
    at::parallel_for(0, rows, grain(s.items, s.dim), [&](int64_t begin, int64_t end) {
      std::vector<rules::Candidate> best(end - begin);
      std::vector<int64_t> nan_column(end - begin, -1);
      s.for_each_tile(begin, end, [&](int64_t n, const float* scores, int64_t first, int64_t count) {
        if (nan_column[n - begin] < 0) {
          nan_column[n - begin] = gumbel_scan(scores, first, count, key, static_cast<uint32_t>(n), best[n - begin]);
        }
      });
      for (int64_t n = begin; n < end; ++n) out[n] = nan_column[n - begin] >= 0 ? nan_column[n - begin] : best[n - begin].index;
    });
  });
  return samples;
}

}  // namespace cpu
}  // namespace fastmask
