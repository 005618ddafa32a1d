// The rules of fastmask's compiled kernels, written once for the C++ CPU ops and the CUDA kernels
// (semantics and draw layout: fastmask/reference). Per-row rules take a RowLanes: on the device the
// 32 threads of a warp share a row through ballots; on the host (the CPU ops, and the host build of
// the CUDA kernels' steps in tests/test_cuda_host.py) the same code runs as loops.
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
  // Inline bit arithmetic: x86-64's baseline has no popcnt instruction, and the library call costs more.
  bits -= (bits >> 1) & 0x55555555u;
  bits = (bits & 0x33333333u) + ((bits >> 2) & 0x33333333u);
  return static_cast<int>((((bits + (bits >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
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
    const int64_t lanes = end - base < kWidth ? end - base : kWidth;
    uint32_t bits = 0;  // branch-free: pred is data-dependent
    for (int lane = 0; lane < lanes; ++lane) bits |= static_cast<uint32_t>(pred(base + lane)) << lane;
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

  // fn(t, draw(seed, stream, row, t)) for every t in [0, length). The host takes the four words of
  // each Philox call at once; a lane takes only its own word.
  template <class Fn>
  FASTMASK_HOST_DEVICE void for_each_draw(int64_t length, uint64_t seed, uint32_t stream, uint32_t row, Fn fn) const {
#if defined(__CUDA_ARCH__)
    for_each(0, length, [=](int64_t t) { fn(t, draw(seed, stream, row, static_cast<uint64_t>(t))); });
#else
    for (int64_t first = 0; first < length; first += 4) {
      const Philox4 words = philox4x32_10(seed, static_cast<uint32_t>(first >> 2), row, stream, 0u);
      const int64_t last = first + 4 < length ? first + 4 : length;
      for (int64_t t = first; t < last; ++t) fn(t, words.w[t - first]);
    }
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

// A Bernoulli(threshold / 2^32) decision from one draw (threshold = floor(p * 2^32), at most 2^32).
FASTMASK_HOST_DEVICE bool bernoulli(uint32_t word, uint64_t threshold) { return word < threshold; }

// ---------------------------------------------------------------------------------------------
// MLM: mask row `row` (length `length`) of the (B, L) target mask. See reference masking.mlm_mask.
template <class Item>
FASTMASK_HOST_DEVICE void mlm_mask_row(RowLanes lanes, const Item* items, bool* mask, int64_t length,
                                       int64_t padding_idx, uint64_t seed, uint32_t row, uint64_t threshold) {
  const auto nonpad = [=](int64_t t) { return is_item(items[t], padding_idx); };
  const auto masked = [=](int64_t t) { return mask[t]; };
  lanes.for_each_draw(length, seed, kStreamMlmBernoulli, row,
                      [=](int64_t t, uint32_t word) { mask[t] = nonpad(t) && bernoulli(word, threshold); });
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

// Targets of a row from its schema: the item where the schema holds, padding elsewhere.
template <class Item>
FASTMASK_HOST_DEVICE void masked_targets_row(RowLanes lanes, const Item* items, const bool* schema, Item* targets,
                                             int64_t length, int64_t padding_idx) {
  const Item padding = static_cast<Item>(padding_idx);
  lanes.for_each(0, length, [=](int64_t t) { targets[t] = schema[t] ? items[t] : padding; });
}

// Last-item evaluation: index of item n - 1, wrapped like a Python index (n = 0 gives L - 1).
FASTMASK_HOST_DEVICE int64_t last_item_index(int64_t count, int64_t length) {
  return count > 0 ? count - 1 : length - 1;
}

// ---------------------------------------------------------------------------------------------
// Targets without randomness (see reference masking.py): each writes one row's schema and targets.

// The next item of position t, a literal 0 after the last column.
template <class Item>
FASTMASK_HOST_DEVICE Item next_item(const Item* items, int64_t length, int64_t t) {
  return t + 1 < length ? items[t + 1] : Item(0);
}

template <class Item>
FASTMASK_HOST_DEVICE void next_item_targets_row(RowLanes lanes, const Item* items, bool* schema, Item* targets,
                                                int64_t length, int64_t padding_idx) {
  lanes.for_each(0, length, [=](int64_t t) {
    const Item target = next_item(items, length, t);
    targets[t] = target;
    schema[t] = is_item(target, padding_idx);
  });
}

template <class Item>
FASTMASK_HOST_DEVICE void last_item_targets_row(RowLanes lanes, const Item* items, bool* schema, Item* targets,
                                                int64_t length, int64_t padding_idx) {
  const int64_t last =
      last_item_index(lanes.count(length, [=](int64_t t) { return is_item(items[t], padding_idx); }), length);
  const Item padding = static_cast<Item>(padding_idx);
  lanes.for_each(0, length, [=](int64_t t) {
    const Item target = t == last ? items[t] : padding;
    targets[t] = target;
    schema[t] = is_item(target, padding_idx);
  });
}

// CLM's last-item mode: the next item at m - 1 (m = number of next items that are not padding),
// zeros elsewhere; the schema keeps every non-padding input visible.
template <class Item>
FASTMASK_HOST_DEVICE void clm_last_item_targets_row(RowLanes lanes, const Item* items, bool* schema, Item* targets,
                                                    int64_t length, int64_t padding_idx) {
  const int64_t last = last_item_index(
      lanes.count(length, [=](int64_t t) { return is_item(next_item(items, length, t), padding_idx); }), length);
  lanes.for_each(0, length, [=](int64_t t) {
    targets[t] = t == last ? next_item(items, length, t) : Item(0);
    schema[t] = is_item(items[t], padding_idx);
  });
}

// MLM inference: L + 1 slots, padding but the [MASK] slot n, which holds item n - 1 (Python-index wrap).
template <class Item>
FASTMASK_HOST_DEVICE void mlm_inference_targets_row(RowLanes lanes, const Item* items, bool* schema, Item* targets,
                                                    int64_t length, int64_t padding_idx) {
  const int64_t count = lanes.count(length, [=](int64_t t) { return is_item(items[t], padding_idx); });
  const Item padding = static_cast<Item>(padding_idx);
  const Item copied = length > 0 ? items[last_item_index(count, length)] : padding;
  lanes.for_each(0, length + 1, [=](int64_t t) {
    const Item target = t == count ? copied : padding;
    targets[t] = target;
    schema[t] = is_item(target, padding_idx);
  });
}

// ---------------------------------------------------------------------------------------------
// PLM training, first part: the target mask of one row. See reference masking.plm_train_masks.
// context_lengths[s] for s = 1..max_span_length must satisfy s <= context_lengths[s] < 2^31, so
// every span walk advances and every offset bound is positive (checks.h check_plm_spans).
template <class Item>
FASTMASK_HOST_DEVICE void plm_mask_row(RowLanes lanes, const Item* items, bool* mask, int64_t length,
                                       int64_t padding_idx, uint64_t seed, uint32_t row, int64_t max_span_length,
                                       const int64_t* context_lengths, bool permute_all) {
  const auto nonpad = [=](int64_t t) { return is_item(items[t], padding_idx); };
  const int64_t count = lanes.count(length, nonpad);
  int64_t total = count;  // masked positions, padding included
  int64_t spans_end = 0;  // only spans can mask padding, and only before this position
  if (permute_all) {
    lanes.for_each(0, length, [=](int64_t t) { mask[t] = nonpad(t); });
  } else {
    lanes.for_each(0, length, [=](int64_t t) { mask[t] = false; });
    lanes.sync();
    // A span lies inside its own context window [cur, cur + context), so spans never overlap and
    // the masked positions add up span by span.
    total = 0;
    int64_t cur = 0;
    Philox4 words{};
    for (int64_t k = 0; cur < count; ++k) {
      // Step k takes draws 2k (span length) and 2k + 1 (offset): two words of Philox call k / 2.
      if ((k & 1) == 0) words = philox4x32_10(seed, static_cast<uint32_t>(k >> 1), row, kStreamPlmSpan, 0u);
      const uint32_t span_word = (k & 1) ? words.w[2] : words.w[0];
      const uint32_t offset_word = (k & 1) ? words.w[3] : words.w[1];
      const int64_t span = 1 + static_cast<int64_t>(uniform_below(span_word, max_span_length));
      const int64_t context = context_lengths[span];
      const int64_t start = cur + static_cast<int64_t>(uniform_below(offset_word, context - span + 1));
      // The span may run into padding, as in the reference.
      if (start < count) {
        const int64_t end = start + span < length ? start + span : length;
        lanes.for_each(start, end, [=](int64_t t) { mask[t] = true; });
        total += end - start;
        spans_end = end;
      }
      cur += context;
    }
    if (count > 0 && total == 0) {
      const int64_t forced = lanes.kth(
          length, static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmForce, row, 0), count)), nonpad);
      // The reference stores the item id itself into the bool mask: item 0 stays unmasked.
      const bool forced_masked = static_cast<int64_t>(items[forced]) != 0;
      lanes.once([=] { mask[forced] = forced_masked; });
      total = forced_masked ? 1 : 0;
    }
  }
  lanes.sync();
  // Counted before padding is dropped, so spans that ran into padding count too.
  if (total > 0 && total == count) {
    const int64_t dropped = lanes.kth(
        length, static_cast<int64_t>(uniform_below(draw(seed, kStreamPlmUnmask, row, 0), total)),
        [=](int64_t t) { return mask[t]; });
    lanes.once([=] { mask[dropped] = false; });
    lanes.sync();
  }
  lanes.for_each(0, spans_end, [=](int64_t t) { mask[t] = mask[t] & nonpad(t); });
}

// Place of position t in a PLM row's factorisation order: its random key, ties broken by position
// (t < 2^32: an L x L output is far smaller).
FASTMASK_HOST_DEVICE uint64_t plm_order(uint64_t seed, uint32_t row, int64_t t) {
  return (static_cast<uint64_t>(draw(seed, kStreamPlmPerm, row, static_cast<uint64_t>(t))) << 32) |
         static_cast<uint32_t>(t);
}

// perm_mask[q, k] of a PLM training row: true when query q may not see key k. Orders are plm_order
// values or anything that sorts like them (their ranks among the row's targets).
template <class Order>
FASTMASK_HOST_DEVICE bool plm_hidden(bool q_masked, Order q_order, bool k_masked, Order k_order) {
  return k_masked && (!q_masked || !(k_order < q_order));
}

// target_mapping[q, k] of a PLM training row: the identity, all zero when every item is permuted.
FASTMASK_HOST_DEVICE bool plm_maps(bool identity_mapping, int64_t q, int64_t k) { return identity_mapping && q == k; }

// perm_mask[q, k] of last-item evaluation: keys after the query, and the last item, are hidden.
FASTMASK_HOST_DEVICE bool plm_eval_hidden(int64_t q, int64_t k, int64_t last) { return k > q || k == last; }

// ---------------------------------------------------------------------------------------------
// Gumbel-max sampling. See reference sampling.py: the sample is the argmax of logit + noise(draw).

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

// At least gumbel_noise(w) for every draw w <= word. The slack covers any non-monotonicity of the
// computed noise (libm's log is faithful, not correctly rounded) and is above one float ulp over the
// noise's whole range (|noise| < 32), far below its spread.
FASTMASK_HOST_DEVICE float gumbel_noise_bound(uint32_t word) {
  constexpr float kSlack = 1e-5f;
  return gumbel_noise(word) + kSlack;
}

FASTMASK_HOST_DEVICE float perturbed_logit(float logit, uint32_t word) { return logit + gumbel_noise(word); }

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

// Whether columns after `best`'s, none of them NaN, with logits at most `max_logit` and noises at
// most `noise_bound` cannot beat it: the perturbed logit is monotone in logit and noise, and a tie
// loses to best's lower index. So they are skipped exactly.
FASTMASK_HOST_DEVICE bool cannot_beat(float max_logit, float noise_bound, Candidate best) {
  return best.index >= 0 && max_logit + noise_bound <= best.value;
}

// ---------------------------------------------------------------------------------------------
// Target ranks. See reference ranking.py: rank = number of columns ordered before the target, in
// the stable descending order where NaN is above every number and equal to NaN, and -0.0 == 0.0.
// Items outside [0, vocab) are not ranked (rank -1).

FASTMASK_HOST_DEVICE bool ranked_item(int64_t item, int64_t vocab) { return item >= 0 && item < vocab; }

FASTMASK_HOST_DEVICE float to_rank_key(float x) { return x; }
FASTMASK_HOST_DEVICE double to_rank_key(double x) { return x; }
#if defined(__CUDACC__)
__device__ __forceinline__ float to_rank_key(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_rank_key(__nv_bfloat16 x) { return __bfloat162float(x); }
#endif

// Column j (score s) before the target column i (score target), for j < i and for j > i: scans
// over one side need no index compare.
template <class Key>
FASTMASK_HOST_DEVICE bool ranks_before_left(Key s, Key target) {
  return target != target ? s != s : !(s < target);
}
template <class Key>
FASTMASK_HOST_DEVICE bool ranks_before_right(Key s, Key target) {
  return target == target && !(s <= target);
}

template <class Key>
FASTMASK_HOST_DEVICE bool ranks_before(Key s, int64_t j, Key target, int64_t i) {
  return j < i ? ranks_before_left(s, target) : j > i && ranks_before_right(s, target);
}

}  // namespace rules
}  // namespace fastmask
