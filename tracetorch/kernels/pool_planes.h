// Max pooling of one [H, W] plane with a one-byte argmax per output (traceTorch), float32.
//
// Shared by the pooling ops (events_cpu.cpp: max_pool2d_planes, over many planes in parallel) and
// the neuron kernels' pooled output (neuron_kernels.h: a neuron layer followed by max pooling,
// pooled as each block of planes is computed). No padding, dilation 1; ties and NaNs follow
// torch's CPU kernel: a later value wins when it is greater or NaN. 2x2 windows with stride 2
// take AVX2 vectors where the build has them.

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace tracetorch_pooling {

#if defined(__AVX2__)
// Even and odd lanes of a's 8 floats then b's: {a0, a2, a4, a6, b0, b2, b4, b6} and {a1, ..., b7}.
inline void deinterleave(__m256 a, __m256 b, __m256& even, __m256& odd) {
  constexpr int blocks = _MM_SHUFFLE(3, 1, 2, 0);  // [a0 a2 b0 b2 | a4 a6 b4 b6] -> a's pairs, then b's
  const auto pairs_in_order = [](__m256 v) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), blocks));
  };
  even = pairs_in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
  odd = pairs_in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

// 2x2 windows, stride 2: four outputs from the 8 inputs at each of a and a + W (their two rows),
// four more from b and b + W, in one vector; the taps compared in torch's order with its rule.
inline void max_pool_2x2_runs(const float* a, const float* b, int64_t W, float* out_a, float* out_b, uint8_t* arg_a,
                              uint8_t* arg_b) {
  __m256 best, odd, lower_even, lower_odd;
  deinterleave(_mm256_loadu_ps(a), _mm256_loadu_ps(b), best, odd);
  deinterleave(_mm256_loadu_ps(a + W), _mm256_loadu_ps(b + W), lower_even, lower_odd);
  __m256 where = _mm256_setzero_ps();
  const __m256 taps[3] = {odd, lower_even, lower_odd};
  for (int t = 0; t < 3; ++t) {
    const __m256 take =
        _mm256_or_ps(_mm256_cmp_ps(taps[t], best, _CMP_GT_OQ), _mm256_cmp_ps(taps[t], taps[t], _CMP_UNORD_Q));
    best = _mm256_blendv_ps(best, taps[t], take);
    where = _mm256_blendv_ps(where, _mm256_set1_ps(static_cast<float>(t + 1)), take);
  }
  _mm_storeu_ps(out_a, _mm256_castps256_ps128(best));
  _mm_storeu_ps(out_b, _mm256_extractf128_ps(best, 1));
  alignas(32) int32_t w[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), _mm256_cvttps_epi32(where));
  for (int k = 0; k < 4; ++k) {
    arg_a[k] = static_cast<uint8_t>(w[k]);
    arg_b[k] = static_cast<uint8_t>(w[k + 4]);
  }
}

// The gradient of max_pool_2x2_runs: each run's 4 output gradients written to the tap of the
// window that won, zeros to the other three (0 + g, as torch's accumulation gives: -0 becomes 0).
inline void max_pool_2x2_runs_backward(const float* grad_a, const float* grad_b, const uint8_t* arg_a,
                                       const uint8_t* arg_b, int64_t W, float* a, float* b) {
  const __m256 g = _mm256_set_m128(_mm_loadu_ps(grad_b), _mm_loadu_ps(grad_a));
  int32_t bytes_a, bytes_b;
  std::memcpy(&bytes_a, arg_a, 4);
  std::memcpy(&bytes_b, arg_b, 4);
  const __m256i arg = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, bytes_b, bytes_a));
  __m256 at[4];
  for (int t = 0; t < 4; ++t)
    at[t] = _mm256_add_ps(_mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(arg, _mm256_set1_epi32(t))), g),
                          _mm256_setzero_ps());
  for (int row = 0; row < 2; ++row) {  // taps (0, 1) on the upper row, (2, 3) on the lower
    const __m256 low = _mm256_unpacklo_ps(at[2 * row], at[2 * row + 1]);
    const __m256 high = _mm256_unpackhi_ps(at[2 * row], at[2 * row + 1]);
    _mm256_storeu_ps(a + row * W, _mm256_permute2f128_ps(low, high, 0x20));
    _mm256_storeu_ps(b + row * W, _mm256_permute2f128_ps(low, high, 0x31));
  }
}
#endif

// The 2x2, stride-2 pooling's vector layout: each output row's first runs of four outputs
// (eight inputs wide) go through the vector kernels two runs at a time, in row-major order
// (pairs span rows, so narrow planes vectorize too); 0 runs for other windows or without AVX2.
inline int64_t vector_runs_per_row(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t OW, int64_t W) {
#if defined(__AVX2__)
  if (kh == 2 && kw == 2 && sh == 2 && sw == 2) return std::min(OW / 4, W / 8);
#endif
  return 0;
}
inline int64_t run_output(int64_t r, int64_t runs_per_row, int64_t OW) {  // offset of run r's first output
  return (r / runs_per_row) * OW + (r % runs_per_row) * 4;
}
inline int64_t run_input(int64_t r, int64_t runs_per_row, int64_t W) {  // offset of its window's corner
  return 2 * (r / runs_per_row) * W + 8 * (r % runs_per_row);
}
// The first output of row oy that the vector runs [0, paired) leave to the scalar loop.
inline int64_t first_scalar_output(int64_t oy, int64_t runs_per_row, int64_t paired) {
  return 4 * std::clamp<int64_t>(paired - oy * runs_per_row, 0, runs_per_row);
}

// One pooling geometry: the plane, the window, the stride and what follows from them.
struct Window {
  int64_t H = 0, W = 0, kh = 0, kw = 0, sh = 0, sw = 0, OH = 0, OW = 0, runs_per_row = 0, paired = 0;
  bool covered = false;     // the vector runs write every input of the plane (backward needs no zeros first)
  int64_t offset[256] = {};  // window position -> offset from the window's corner (no division per output)

  Window() = default;
  Window(int64_t height, int64_t width, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w)
      : H(height), W(width), kh(kernel_h), kw(kernel_w), sh(stride_h), sw(stride_w),
        OH((height - kernel_h) / stride_h + 1), OW((width - kernel_w) / stride_w + 1) {
    runs_per_row = vector_runs_per_row(kh, kw, sh, sw, OW, W);
    paired = OH * runs_per_row / 2 * 2;
    covered = paired == OH * runs_per_row && 4 * runs_per_row == OW && 2 * OH == H && 2 * OW == W;
    for (int64_t k = 0; k < kh * kw; ++k) offset[k] = (k / kw) * W + k % kw;
  }
  int64_t plane() const { return H * W; }
  int64_t pooled() const { return OH * OW; }
};

// out [OH, OW] and arg from the plane xp [H, W]; best and where: scratch of OW values each.
inline void pool_plane(const Window& g, const float* xp, float* po, uint8_t* pa, float* best, int32_t* where) {
  // the vector runs, then the other outputs one output row at a time, taps outermost: the loop
  // over the row's outputs is branch-free and vectorizes (the winner of each comparison is
  // unpredictable on spikes)
#if defined(__AVX2__)
  for (int64_t r = 0; r < g.paired; r += 2) {
    const int64_t o_a = run_output(r, g.runs_per_row, g.OW), o_b = run_output(r + 1, g.runs_per_row, g.OW);
    max_pool_2x2_runs(xp + run_input(r, g.runs_per_row, g.W), xp + run_input(r + 1, g.runs_per_row, g.W), g.W,
                      po + o_a, po + o_b, pa + o_a, pa + o_b);
  }
#endif
  for (int64_t oy = 0; oy < g.OH; ++oy) {
    const int64_t first = first_scalar_output(oy, g.runs_per_row, g.paired);
    if (first == g.OW) continue;
    std::fill(best, best + g.OW, -std::numeric_limits<float>::infinity());
    std::fill(where, where + g.OW, 0);
    float* __restrict b = best;
    int32_t* __restrict w = where;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const float* __restrict row = xp + (oy * g.sh + i) * g.W + j;
        const int32_t tap = static_cast<int32_t>(i * g.kw + j);
        for (int64_t ox = first; ox < g.OW; ++ox) {
          const float v = row[ox * g.sw];
          const bool take = (v > b[ox]) | (v != v);  // torch's rule: a later value wins when greater or NaN
          b[ox] = take ? v : b[ox];
          w[ox] = take ? tap : w[ox];
        }
      }
    float* o = po + oy * g.OW;
    uint8_t* a = pa + oy * g.OW;
    for (int64_t ox = first; ox < g.OW; ++ox) {
      o[ox] = b[ox];  // the value at the winning tap (-inf when none won, as tap 0 then is)
      a[ox] = static_cast<uint8_t>(w[ox]);
    }
  }
}

// The plane's input gradient gp [H, W]: each output gradient of pg [OH, OW] added at its maximum, zeros elsewhere.
inline void pool_plane_backward(const Window& g, const float* pg, const uint8_t* pa, float* gp) {
  if (!g.covered) std::fill(gp, gp + g.H * g.W, 0.0f);
#if defined(__AVX2__)
  for (int64_t r = 0; r < g.paired; r += 2) {
    const int64_t o_a = run_output(r, g.runs_per_row, g.OW), o_b = run_output(r + 1, g.runs_per_row, g.OW);
    max_pool_2x2_runs_backward(pg + o_a, pg + o_b, pa + o_a, pa + o_b, g.W, gp + run_input(r, g.runs_per_row, g.W),
                               gp + run_input(r + 1, g.runs_per_row, g.W));
  }
#endif
  for (int64_t oy = 0; oy < g.OH; ++oy)
    for (int64_t ox = first_scalar_output(oy, g.runs_per_row, g.paired); ox < g.OW; ++ox) {
      const int64_t o = oy * g.OW + ox;
      gp[oy * g.sh * g.W + ox * g.sw + g.offset[pa[o]]] += pg[o];
    }
}

}  // namespace tracetorch_pooling
