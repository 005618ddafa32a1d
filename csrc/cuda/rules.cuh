// Per-row and per-element rules of the CUDA kernels, written once for the device and the host.
//
// On the device a warp works on one row (RowLanes below uses ballots), while a host build
// (g++, no __CUDA_ARCH__) runs the same functions as plain loops: tests/test_cuda_host.py compiles
// this header on the CPU and compares it bit-for-bit with fastmask/reference.
#pragma once
#include <cmath>
#include <cstdint>

#include "philox.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastmask {
namespace rules {

FASTMASK_HOST_DEVICE int popcount32(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __popc(bits);
#else
  return __builtin_popcount(bits);
#endif
}

// Bit position of the k-th (0-based) set bit of `bits` (k < popcount32(bits)).
FASTMASK_HOST_DEVICE int nth_set_bit(uint32_t bits, int64_t k) {
  for (; k > 0; --k) bits &= bits - 1;
#if defined(__CUDA_ARCH__)
  return __ffs(static_cast<int>(bits)) - 1;
#else
  return __builtin_ctz(bits);
#endif
}

// The lanes that work on one row: the 32 threads of a warp on the device, a loop on the host.
// Every lane runs the row functions below with the same arguments; results of count() and kth()
// are the same in every lane, so control flow stays uniform across the warp.
struct RowLanes {
  static constexpr int kWidth = 32;

  // Bit i set iff pred(base + i) for base + i < end.
  template <class Pred>
  FASTMASK_HOST_DEVICE uint32_t ballot(int64_t base, int64_t end, Pred pred) const {
#if defined(__CUDA_ARCH__)
    const int64_t t = base + (threadIdx.x % kWidth);
    return __ballot_sync(0xffffffffu, t < end && pred(t));
#else
    uint32_t bits = 0;
    for (int lane = 0; lane < kWidth; ++lane) {
      if (base + lane < end && pred(base + lane)) bits |= 1u << lane;
    }
    return bits;
#endif
  }

  // fn(t) for every t in [begin, end), spread over the lanes.
  template <class Fn>
  FASTMASK_HOST_DEVICE void for_each(int64_t begin, int64_t end, Fn fn) const {
#if defined(__CUDA_ARCH__)
    for (int64_t t = begin + threadIdx.x % kWidth; t < end; t += kWidth) fn(t);
#else
    for (int64_t t = begin; t < end; ++t) fn(t);
#endif
  }

  // fn() once, by one lane.
  template <class Fn>
  FASTMASK_HOST_DEVICE void once(Fn fn) const {
#if defined(__CUDA_ARCH__)
    if (threadIdx.x % kWidth == 0) fn();
#else
    fn();
#endif
  }

  // Makes every lane's earlier writes visible to the other lanes.
  FASTMASK_HOST_DEVICE void sync() const {
#if defined(__CUDA_ARCH__)
    __syncwarp();
#endif
  }

  template <class Pred>
  FASTMASK_HOST_DEVICE int64_t count(int64_t length, Pred pred) const {
    int64_t total = 0;
    for (int64_t base = 0; base < length; base += kWidth) total += popcount32(ballot(base, length, pred));
    return total;
  }

  // Position of the k-th (0-based) t with pred(t); -1 when there are k or fewer.
  template <class Pred>
  FASTMASK_HOST_DEVICE int64_t kth(int64_t length, int64_t k, Pred pred) const {
    for (int64_t base = 0; base < length; base += kWidth) {
      const uint32_t bits = ballot(base, length, pred);
      const int found = popcount32(bits);
      if (k < found) return base + nth_set_bit(bits, k);
      k -= found;
    }
    return -1;
  }
};

template <class Item>
FASTMASK_HOST_DEVICE bool is_item(Item item, int64_t padding_idx) {
  return static_cast<int64_t>(item) != padding_idx;
}

// ---------------------------------------------------------------------------------------------
// MLM: mask row `row` (length `length`) of the (B, L) target mask. See reference masking.mlm_mask.
template <class Item>
FASTMASK_HOST_DEVICE void mlm_mask_row(RowLanes lanes, const Item* items, bool* mask, int64_t length,
                                       int64_t padding_idx, uint64_t seed, uint32_t row, uint64_t threshold) {
  const auto nonpad = [=](int64_t t) { return is_item(items[t], padding_idx); };
  const auto masked = [=](int64_t t) { return mask[t]; };
  lanes.for_each(0, length, [=](int64_t t) {
    mask[t] = nonpad(t) && draw(seed, kStreamMlmBernoulli, row, static_cast<uint64_t>(t)) < threshold;
  });
  const int64_t count = lanes.count(length, nonpad);
  if (count == 0) return;
  const int64_t forced = lanes.kth(
      length, static_cast<int64_t>(uniform_below(draw(seed, kStreamMlmForce, row, 0), count)), nonpad);
  lanes.sync();
  lanes.once([=] { mask[forced] = true; });
  lanes.sync();
  if (lanes.count(length, masked) == count) {
    const int64_t dropped = lanes.kth(
        length, static_cast<int64_t>(uniform_below(draw(seed, kStreamMlmUnmask, row, 0), count)), masked);
    lanes.once([=] { mask[dropped] = false; });
  }
}

// ---------------------------------------------------------------------------------------------
// PLM training, first part: the target mask of one row. See reference masking.plm_train_masks.
// context_lengths[s] for s = 1..max_span_length must satisfy s <= context_lengths[s] < 2^31, so
// every span walk advances and every offset bound is positive (the launcher's caller checks it).
template <class Item>
FASTMASK_HOST_DEVICE void plm_mask_row(RowLanes lanes, const Item* items, bool* mask, int64_t length,
                                       int64_t padding_idx, uint64_t seed, uint32_t row, int64_t max_span_length,
                                       const int64_t* context_lengths, bool permute_all) {
  const auto nonpad = [=](int64_t t) { return is_item(items[t], padding_idx); };
  const auto masked = [=](int64_t t) { return mask[t]; };
  const int64_t count = lanes.count(length, nonpad);
  if (permute_all) {
    lanes.for_each(0, length, [=](int64_t t) { mask[t] = nonpad(t); });
  } else {
    lanes.for_each(0, length, [=](int64_t t) { mask[t] = false; });
    lanes.sync();
    int64_t cur = 0;
    for (int64_t k = 0; k < length && cur < count; ++k) {
      const uint64_t element = 2 * static_cast<uint64_t>(k);  // draw 2k: span length; 2k + 1: offset
      const int64_t span =
          1 + static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmSpan, row, element), max_span_length));
      const int64_t context = context_lengths[span];
      const int64_t start =
          cur + static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmSpan, row, element + 1), context - span + 1));
      // The span may run into padding, as in the reference.
      if (start < count) {
        lanes.for_each(start, start + span < length ? start + span : length, [=](int64_t t) { mask[t] = true; });
      }
      cur += context;
    }
    lanes.sync();
    if (count > 0 && lanes.count(length, masked) == 0) {
      const int64_t forced = lanes.kth(
          length, static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmForce, row, 0), count)), nonpad);
      // The reference stores the item id itself into the bool mask: item 0 stays unmasked.
      lanes.once([=] { mask[forced] = static_cast<int64_t>(items[forced]) != 0; });
    }
  }
  lanes.sync();
  // Counted before padding is dropped, so spans that ran into padding count too.
  const int64_t total = lanes.count(length, masked);
  if (total > 0 && total == count) {
    const int64_t dropped = lanes.kth(
        length, static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmUnmask, row, 0), total)), masked);
    lanes.once([=] { mask[dropped] = false; });
    lanes.sync();
  }
  lanes.for_each(0, length, [=](int64_t t) {
    if (mask[t] && !nonpad(t)) mask[t] = false;
  });
}

// Factorisation-order key of position t of a PLM row.
FASTMASK_HOST_DEVICE uint32_t plm_order_key(uint64_t seed, uint32_t row, int64_t t) {
  return draw(seed, kStreamPlmPerm, row, static_cast<uint64_t>(t));
}

// perm_mask[q, k] of a PLM training row: true when query q may not see key k.
FASTMASK_HOST_DEVICE bool plm_hidden(bool q_masked, uint32_t q_key, int64_t q, bool k_masked, uint32_t k_key,
                                     int64_t k) {
  const bool k_before_q = k_key < q_key || (k_key == q_key && k < q);
  return k_masked && (!q_masked || !k_before_q);
}

// Column k of the query band [q_begin, q_begin + band) of one row's perm_mask and target_mapping
// (row-major L x L); band_masked/band_keys hold the band's queries.
FASTMASK_HOST_DEVICE void plm_write_column(float* perm_mask, float* target_mapping, int64_t length, int64_t q_begin,
                                           int64_t band, const bool* band_masked, const uint32_t* band_keys,
                                           int64_t k, bool k_masked, uint32_t k_key, bool identity_mapping) {
  for (int64_t i = 0; i < band; ++i) {
    const int64_t q = q_begin + i;
    const int64_t offset = q * length + k;
    perm_mask[offset] = plm_hidden(band_masked[i], band_keys[i], q, k_masked, k_key, k) ? 1.0f : 0.0f;
    target_mapping[offset] = identity_mapping && q == k ? 1.0f : 0.0f;
  }
}

// Last-item evaluation: index of item n - 1, wrapped like a Python index (n = 0 gives L - 1).
FASTMASK_HOST_DEVICE int64_t last_item_index(int64_t count, int64_t length) {
  return count > 0 ? count - 1 : length - 1;
}

// Column k of the query band [q_begin, q_begin + band) of one row's evaluation perm_mask (int64).
FASTMASK_HOST_DEVICE void plm_eval_write_column(int64_t* perm_mask, int64_t length, int64_t q_begin, int64_t band,
                                                int64_t last, int64_t k) {
  for (int64_t i = 0; i < band; ++i) {
    const int64_t q = q_begin + i;
    perm_mask[q * length + k] = (k > q || k == last) ? 1 : 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Gumbel-max sampling. See reference sampling.py.

FASTMASK_HOST_DEVICE float to_float(float x) { return x; }
FASTMASK_HOST_DEVICE float to_float(double x) { return static_cast<float>(x); }
#if defined(__CUDACC__)
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
#endif

// float64 noise rounded once to float32: the same bits under any correctly working libm.
FASTMASK_HOST_DEVICE float gumbel_noise(uint32_t word) {
  const double uniform = (static_cast<double>(word) + 0.5) * 0x1p-32;
  return static_cast<float>(-log(-log(uniform)));
}

// Covers any non-monotonicity of the computed noise in the draw (libm's log is faithful, not
// correctly rounded): far above its error, far below the noise's spread.
constexpr float kNoiseBoundSlack = 1e-5f;

struct Candidate {
  float value = 0.0f;
  int64_t index = -1;  // -1: no candidate yet
};

// torch.argmax's order: the first NaN wins outright, then the largest value, then the lowest index.
FASTMASK_HOST_DEVICE bool beats(Candidate a, Candidate b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan || b_nan) return a_nan && (!b_nan || a.index < b.index);
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// Best of the columns in quads first_quad, first_quad + quad_step, ... (< end_quad) of one row,
// against `best` found earlier at lower columns. Quad c holds columns 4c..4c+3, whose draws are the
// four words of one Philox call. A quad is skipped exactly when even its largest logit plus
// (a bound on) its largest noise cannot beat `best`: the value is monotone in logit and draw, and
// a tie loses to `best`'s lower index.
template <class T>
FASTMASK_HOST_DEVICE Candidate gumbel_scan(const T* logits, int64_t vocab, uint64_t seed, uint32_t row,
                                           int64_t first_quad, int64_t end_quad, int64_t quad_step, Candidate best) {
  for (int64_t quad = first_quad; quad < end_quad; quad += quad_step) {
    if (best.index >= 0 && best.value != best.value) break;  // an earlier NaN always wins
    const int64_t first_col = 4 * quad;
    const int64_t width = vocab - first_col;  // columns of this quad: min(width, 4)
    const Philox4 words = philox4x32_10(seed, static_cast<uint32_t>(quad), row, kStreamGumbel, 0u);
    float logit[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    bool any_nan = false;
    float max_logit = -INFINITY;
    uint32_t max_word = 0;
    for (int i = 0; i < 4; ++i) {
      if (i < width) {
        logit[i] = to_float(logits[first_col + i]);
        any_nan = any_nan || logit[i] != logit[i];
        max_logit = logit[i] > max_logit ? logit[i] : max_logit;
        max_word = words.w[i] > max_word ? words.w[i] : max_word;
      }
    }
    if (best.index >= 0 && !any_nan) {
      const float noise_bound = gumbel_noise(max_word) + kNoiseBoundSlack;
      if (max_logit + noise_bound <= best.value) continue;
    }
    for (int i = 0; i < 4; ++i) {
      if (i < width) {
        const Candidate candidate{logit[i] + gumbel_noise(words.w[i]), first_col + i};
        if (beats(candidate, best)) best = candidate;
      }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Target ranks. See reference ranking.py: rank = number of columns ordered before the target.

FASTMASK_HOST_DEVICE float to_rank_key(float x) { return x; }
FASTMASK_HOST_DEVICE double to_rank_key(double x) { return x; }
#if defined(__CUDACC__)
__device__ __forceinline__ float to_rank_key(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_rank_key(__nv_bfloat16 x) { return __bfloat162float(x); }
#endif

// Column j (score s) comes before column i (score target) in the stable descending order where NaN
// is above every number and equal to NaN, and -0.0 equals 0.0.
template <class Key>
FASTMASK_HOST_DEVICE bool ranks_before(Key s, int64_t j, Key target, int64_t i) {
  const bool s_nan = s != s;
  if (target != target) return s_nan && j < i;
  return s_nan || s > target || (s == target && j < i);
}

constexpr int kRankTargetsPerPass = 8;

template <class Key>
struct RankTargets {
  Key score[kRankTargetsPerPass];
  int64_t column[kRankTargetsPerPass];  // -1: no item (its rank is -1)
  int count;
};

// Targets first..first+count-1 (count <= kRankTargetsPerPass) of one row; items outside
// [0, vocab) are treated as no item.
template <class T, class Key>
FASTMASK_HOST_DEVICE RankTargets<Key> rank_targets(const T* scores, const int64_t* items, int64_t vocab,
                                                   int64_t first, int count) {
  RankTargets<Key> targets;
  targets.count = count;
  for (int m = 0; m < kRankTargetsPerPass; ++m) {
    const int64_t item = m < count ? items[first + m] : -1;
    const bool valid = item >= 0 && item < vocab;
    targets.column[m] = valid ? item : -1;
    targets.score[m] = valid ? to_rank_key(scores[item]) : Key(0);
  }
  return targets;
}

// Adds to counts[m] the columns j = begin, begin + step, ... (< end) that come before target m.
template <class T, class Key>
FASTMASK_HOST_DEVICE void rank_scan(const T* scores, int64_t begin, int64_t end, int64_t step,
                                    const RankTargets<Key>& targets, int64_t* counts) {
  for (int64_t j = begin; j < end; j += step) {
    const Key s = to_rank_key(scores[j]);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int m = 0; m < kRankTargetsPerPass; ++m) {
      if (m < targets.count) counts[m] += ranks_before(s, j, targets.score[m], targets.column[m]) ? 1 : 0;
    }
  }
}

}  // namespace rules
}  // namespace fastmask
