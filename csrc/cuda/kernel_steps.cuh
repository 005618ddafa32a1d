// Units of work of the CUDA kernels (a column of a query band, one thread's strided scan), built on
// the shared rules in ../rules.h. Written for the device and the host alike: tests/test_cuda_host.py
// compiles them on the CPU, drives them with the kernels' decomposition and compares the result
// with fastmask/reference bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "rules.h"

namespace fastmask {
namespace rules {

// Column k of the query band [q_begin, q_begin + band) of one row's perm_mask and target_mapping
// (row-major L x L); band_masked/band_orders hold the band's queries.
FASTMASK_HOST_DEVICE void plm_write_column(float* perm_mask, float* target_mapping, int64_t length, int64_t q_begin,
                                           int64_t band, const bool* band_masked, const uint64_t* band_orders,
                                           int64_t k, bool k_masked, uint64_t k_order, bool identity_mapping) {
  for (int64_t i = 0; i < band; ++i) {
    const int64_t q = q_begin + i;
    const int64_t offset = q * length + k;
    perm_mask[offset] = plm_hidden(band_masked[i], band_orders[i], k_masked, k_order) ? 1.0f : 0.0f;
    target_mapping[offset] = plm_maps(identity_mapping, q, k) ? 1.0f : 0.0f;
  }
}

// Column k of the query band [q_begin, q_begin + band) of one row's evaluation perm_mask (int64).
FASTMASK_HOST_DEVICE void plm_eval_write_column(int64_t* perm_mask, int64_t length, int64_t q_begin, int64_t band,
                                                int64_t last, int64_t k) {
  for (int64_t i = 0; i < band; ++i) {
    const int64_t q = q_begin + i;
    perm_mask[q * length + k] = plm_eval_hidden(q, k, last) ? 1 : 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Gumbel-max sampling.

// Best of the columns in quads first_quad, first_quad + quad_step, ... (< end_quad) of one row,
// against `best` found earlier at lower columns. Quad c holds columns 4c..4c+3, whose draws are the
// four words of one Philox call. A quad is skipped exactly when even its largest logit plus a
// bound on its largest noise cannot beat `best`.
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
    if (!any_nan && cannot_beat(max_logit, gumbel_noise_bound(max_word), best)) continue;
    for (int i = 0; i < 4; ++i) {
      if (i < width) {
        const Candidate candidate{perturbed_logit(logit[i], words.w[i]), first_col + i};
        if (beats(candidate, best)) best = candidate;
      }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Target ranks.

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
    const bool valid = ranked_item(item, vocab);
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
