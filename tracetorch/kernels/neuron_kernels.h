// Fused whole-sequence neuron kernels for the CPU (traceTorch), float32: the kernel templates.
//
// One template covers all 32 layers: the flags (dual, synaptic, recurrent, family) and the
// quantizer are template parameters, so every instantiation is a branch-free loop. The
// equations are those of tracetorch/snn/step.py (reference: docs/layers.md).
//
// Layout: x [T, M] (M = all elements of one timestep), params [NP, N] (activated values,
// one slot per role below, neuron n of element e is (e / inner) % N), states [NS, M].
// Work is split over blocks of BLK consecutive elements (at::parallel_for); inside a block
// the time loop runs outermost and the states stay in small local arrays (on the heap), and
// the next step's rows are prefetched (they lie M elements further on).
//
// forward saves, per step, the post-update traces and the membrane before the reset
// ([T, S, M]); backward walks time in reverse, recomputing spikes from those, and returns
// the gradients of x, of the initial states and, per element, of every parameter slot
// (reduced over the batch in Python).
//
// With a max pooling after the layer (Pooled, below), blocks are whole [H, W] planes: each step's
// output rows are pooled as they are computed (forward: only the pooled output and its one-byte
// argmax are written) and the output gradient of a step is unpooled into an L1 row (backward), so
// the unpooled output never reaches memory.
//
// The instantiations are compiled in four parts, one translation unit each
// (neuron_{forward,backward}_{single,dual}.cpp, see run_part), so that the build runs in
// parallel; neuron_cpu.cpp holds the ops that call them.

#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "pool_planes.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace tracetorch_neuron {


enum Family { LI = 0, LIEMA = 1, LIB = 2, LIT = 3, LITS = 4 };
enum Quant { Q_ID = 0, Q_ROUND = 1, Q_SROUND = 2, Q_PROB = 3 };
// parameter slots: tracetorch.snn.grammar.PARAM_SLOTS, in order (tests/test_kernel_layout.py checks)
enum { P_A = 0, P_NA, P_B, P_NB, P_G, P_NG, P_W, P_NW, P_TH, P_NTH, P_BIAS, P_PSC, P_NSC, NP };
// state slots: tracetorch.snn.grammar.STATE_SLOTS, in order
enum { S_SYN = 0, S_NSYN, S_REC, S_NREC, S_PREV, S_MEM, S_NMEM, NS };
constexpr int64_t BLK = 1024;
constexpr int64_t LINE = 64 / sizeof(float);  // floats per cache line

// Aligned heap rows for a block's local states: a block is too large for a worker thread's stack.
template <typename T> class Rows {
 public:
  explicit Rows(int64_t rows) : n_(rows * BLK), p_(static_cast<T*>(std::aligned_alloc(64, n_ * sizeof(T)))) {
    TORCH_CHECK(p_ != nullptr, "traceTorch kernel: out of memory for block scratch");
    std::fill(p_, p_ + n_, T(0));
  }
  ~Rows() { std::free(p_); }
  Rows(const Rows&) = delete;
  Rows& operator=(const Rows&) = delete;
  T (*get())[BLK] { return reinterpret_cast<T (*)[BLK]>(p_); }

 private:
  int64_t n_;
  T* p_;
};

// The helpers called in the element loops are always inlined: a loop vectorizes only around inline
// code, and GCC left calls (fast_exp, Fire::eval) in the largest instantiations, whose backward
// loops then ran one element at a time.
#define TT_INLINE inline __attribute__((always_inline))

// The time loop jumps M elements between steps, which defeats the hardware prefetcher at every
// step: fetch the next step's rows of a block ahead of time.
template <typename T> inline void prefetch_row(const T* p, int64_t cnt, bool write) {
  if (write) {
    for (int64_t k = 0; k < cnt; k += LINE) __builtin_prefetch(p + k, 1);
  } else {
    for (int64_t k = 0; k < cnt; k += LINE) __builtin_prefetch(p + k, 0);
  }
}

// An output array of STREAM_BYTES or more cannot stay in the caches for the next op: a block
// writes its rows into an L1 row and copies them out with non-temporal stores, which skip
// reading every line before it is written (RFO). On a [100, 64 x 4096] forward that read is a
// third of the memory traffic.
constexpr int64_t STREAM_BYTES = int64_t{16} << 20;
template <typename T> inline bool streamed(int64_t elements) { return elements * int64_t{sizeof(T)} >= STREAM_BYTES; }

template <typename T> inline void stream_row(T* dst, const T* src, int64_t cnt) { std::copy(src, src + cnt, dst); }
inline void stream_row(float* dst, const float* src, int64_t cnt) {
  int64_t j = 0;
#if defined(__AVX__)
  for (; j < cnt && (reinterpret_cast<uintptr_t>(dst + j) & 31) != 0; ++j) dst[j] = src[j];
  for (; j + 8 <= cnt; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#elif defined(__SSE2__)
  for (; j < cnt && (reinterpret_cast<uintptr_t>(dst + j) & 15) != 0; ++j) dst[j] = src[j];
  for (; j + 4 <= cnt; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
#endif
  for (; j < cnt; ++j) dst[j] = src[j];
}

// Non-temporal stores are weakly ordered: a thread fences them before its results are read.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

TT_INLINE float fast_exp(float x) {
  // Cephes expf: range reduction by ln 2, degree-5 polynomial, 2^n by exponent bits.
  // Written without branches so that the block loops vectorize.
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
TT_INLINE double fast_exp(double x) { return std::exp(x); }

template <typename T> TT_INLINE T sig4(T z) { return T(1) / (T(1) + fast_exp(T(-4) * z)); }
template <typename T> TT_INLINE T posv(T v) { return v >= T(0) ? v : T(0); }
template <typename T> TT_INLINE T negv(T v) { return v <= T(0) ? v : T(0); }
template <typename T> TT_INLINE T ipos(T v) { return v >= T(0) ? T(1) : T(0); }
template <typename T> TT_INLINE T ineg(T v) { return v <= T(0) ? T(1) : T(0); }

// The non-identity quantizers are chosen at run time by 0/1 weights computed once per call: every
// variant is computed and blended, which is exact (weights are exactly 0 or 1, the values finite)
// and keeps the vector loops free of control flow. The identity (the default) has its own
// instantiation (IdentityQuant below): blending doubled the cost of a step.
template <typename T> struct Quantizer {
  T w_id, w_round, w_sround, w_prob, step;
  Quantizer(int q, T step_size)
      : w_id(q == Q_ID), w_round(q == Q_ROUND), w_sround(q == Q_SROUND), w_prob(q == Q_PROB), step(step_size) {}
  TT_INLINE T operator()(T sg, T u) const {
    const T sc = sg / step;
    const T rounded = std::nearbyint(sc) * step;
    const T lo = std::floor(sc);
    const T srounded = (lo + (u < sc - lo ? T(1) : T(0))) * step;
    const T p = std::min(std::max(sg, T(0)), T(1));
    const T prob = sg * (u < p ? T(1) : T(0));
    return w_id * sg + w_round * (sg + (rounded - sg)) + w_sround * (sg + (srounded - sg)) + w_prob * prob;
  }
  // d quant / d input: straight-through 1, probabilistic 2x
  TT_INLINE T grad(T sg) const { return w_prob * (T(2) * sg) + (T(1) - w_prob); }
};

// The identity quantizer (the default), known at compile time: the firing loops then carry no
// quantizer arithmetic at all.
template <typename T> struct IdentityQuant {
  IdentityQuant(int, T) {}
  TT_INLINE T operator()(T sg, T) const { return sg; }
  TT_INLINE T grad(T) const { return T(1); }
};

// round_ste with its default step 1, the usual binary-spike quantizer, known at compile time: the
// same value as the blended Quantizer gives it (sg + (round(sg / 1) * 1 - sg), where dividing and
// multiplying by 1 are exact), without the other variants and without a division. round_ste with
// another step takes the blended Quantizer.
template <typename T> struct RoundQuant {
  RoundQuant(int, T) {}
  TT_INLINE T operator()(T sg, T) const { return sg + (std::nearbyint(sg) - sg); }
  TT_INLINE T grad(T) const { return T(1); }
};

struct Shape {
  int64_t T, M, N, inner, S, draws;
  int64_t gout_tstride = 0;  // backward: M (pooled: P), or 0 when the output gradient is the same at every step
  int64_t block = BLK;       // elements per block: BLK, or whole pooling planes (at most BLK)
};

// A max pooling of the layer's output over [H, W] planes (win null: none). Forward writes the
// pooled output [T, P] (P = M / plane * pooled elements per step) and the argmax arg [T, P];
// backward takes the pooled output gradient (rows of P, or one row) and that argmax.
struct Pooled {
  const tracetorch_pooling::Window* win = nullptr;
  uint8_t* arg = nullptr;
  const uint8_t* arg_in = nullptr;
  bool on() const { return win != nullptr; }
  int64_t row(int64_t M) const { return M / win->plane() * win->pooled(); }  // P
  int64_t offset(int64_t e0) const { return e0 / win->plane() * win->pooled(); }  // a block's first pooled element
};

// The blocks split into equal chunks, one task each: at most one per thread, and at least ~64k
// element-steps per chunk, so small problems skip the thread start-up. The split depends on the
// shape and the thread count only (backward sums parameter gradients per chunk, in chunk order).
struct Split {
  int64_t blocks, chunks, per_chunk;
  explicit Split(const Shape& sh) : blocks((sh.M + sh.block - 1) / sh.block) {
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (sh.block * std::max<int64_t>(sh.T, 1)));
    chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (blocks + grain - 1) / grain));
    per_chunk = (blocks + chunks - 1) / chunks;
  }
  int64_t first(int64_t chunk) const { return std::min(blocks, chunk * per_chunk); }
  int64_t last(int64_t chunk) const { return std::min(blocks, (chunk + 1) * per_chunk); }
};

// Saved rows per step: the synaptic, recurrent and membrane traces the layer has, in that order,
// each one row (two when dual: positive and negative). Also used at run time by neuron_cpu.cpp.
constexpr int trace_rows(bool d) { return d ? 2 : 1; }
constexpr int KS = 0;  // first saved row of each trace
constexpr int rec_slot(bool d, bool sy) { return sy ? trace_rows(d) : 0; }
constexpr int mem_slot(bool d, bool sy, bool r) { return rec_slot(d, sy) + (r ? trace_rows(d) : 0); }
constexpr int saved_slots(bool d, bool sy, bool r) { return mem_slot(d, sy, r) + trace_rows(d); }

// The slots a layer kind reads: the others are never loaded, stored or reduced. The grammar's
// param_slot_names / state_slot_names name the same ones (tests/test_kernel_layout.py checks,
// through the neuron_slots op).
constexpr bool param_used(int k, bool d, bool sy, bool r, int f) {
  switch (k) {
    case P_A: return sy;
    case P_NA: return sy && d;
    case P_B: return true;
    case P_NB: return d;
    case P_G: case P_W: return r;
    case P_NG: case P_NW: return r && d;
    case P_TH: case P_BIAS: return f >= LIB;
    case P_NTH: return f >= LIT;
    case P_PSC: case P_NSC: return f == LITS;
    default: return false;
  }
}
constexpr bool state_used(int k, bool d, bool sy, bool r) {
  switch (k) {
    case S_SYN: return sy;
    case S_NSYN: return sy && d;
    case S_REC: case S_PREV: return r;
    case S_NREC: return r && d;
    case S_MEM: return true;
    case S_NMEM: return d;
    default: return false;
  }
}

// spike values of one step from the membrane before reset (h) and the uniforms
template <typename T, int F> struct Fire {
  T sgp = T(0), sp = T(0), sgn = T(0), sn = T(0);
  // z of the positive spike, sigmoid(4 z): how far h lies above the threshold (bias added)
  static TT_INLINE T above(T h, const T (*pv)[BLK], int64_t j) { return h - pv[P_TH][j] + pv[P_BIAS][j]; }
  template <typename Q> TT_INLINE void eval(const Q& qz, T h, const T (*pv)[BLK], int64_t j, T up, T un) {
    if constexpr (F == LIB) {
      sgp = sig4(above(h, pv, j));
      sp = qz(sgp, up);
    } else if constexpr (F == LIT || F == LITS) {
      sgp = sig4(above(h, pv, j));
      sp = qz(sgp, up);
      sgn = sig4(-pv[P_NTH][j] - h - pv[P_BIAS][j]);
      sn = -qz(sgn, un);
    }
  }
  template <typename Q> TT_INLINE void from_sg(const Q& qz, T up, T un) {  // spikes again from stored sg values
    if constexpr (F >= LIB) sp = qz(sgp, up);
    if constexpr (F >= LIT) sn = -qz(sgn, un);
  }
  TT_INLINE T reset(const T (*pv)[BLK], int64_t j) const {
    if constexpr (F == LIB) return sp * pv[P_TH][j];
    else if constexpr (F >= LIT) return sp * pv[P_TH][j] + sn * pv[P_NTH][j];
    else return T(0);
  }
  TT_INLINE T out(T h, const T (*pv)[BLK], int64_t j) const {
    if constexpr (F == LIB) return sp;
    else if constexpr (F == LIT) return sp + sn;
    else if constexpr (F == LITS) return pv[P_PSC][j] * sp + pv[P_NSC][j] * sn;
    else return h;
  }
};

// Binary spikes of LIB with round_ste (step 1) are round(sigmoid(4 z)), z = h - threshold + bias:
// 1 for z > 0 and 0 for z < 0, except where sigmoid's rounding decides, within a hair of z = 0.
// Away from there (|z| > MARGIN: 4 |z| is hundreds of times the largest error of fast_exp and of
// the float steps near 1/2) the forward takes the sign and skips the exponential and the division;
// a run of RUN elements with any z within MARGIN (or NaN) computes round(sigmoid(4 z)) as before.
// The spikes are the same bit for bit.
template <typename T, typename Q, int F> struct SignFire {
  static constexpr bool ENABLED = F == LIB && std::is_same_v<Q, RoundQuant<T>>;
  static constexpr int64_t RUN = 64;
  static constexpr T MARGIN = T(1e-5);
  static TT_INLINE int near(T z) { return !(std::abs(z) > MARGIN); }
};

// The fused passes of one layer kind (flags D, SY, R, family F) with the quantizer Q.
template <typename T, typename Q, bool D, bool SY, bool R, int F> struct Kernel {
  static constexpr bool EMA = F == LIEMA;
  static constexpr bool FIRES = F >= LIB;
  static constexpr int S = saved_slots(D, SY, R);  // saved rows per step
  static constexpr int KR = rec_slot(D, SY);
  static constexpr int KM = mem_slot(D, SY, R);

  static constexpr bool uses_param(int k) { return param_used(k, D, SY, R, F); }
  static constexpr bool uses_state(int k) { return state_used(k, D, SY, R); }

  // One term of a parameter's per-element gradient; nothing (no load, no store) when PG is false.
  template <bool PG> static TT_INLINE void add_param(T& slot, T term) {
    if constexpr (PG) slot += term;
  }

  // Copy the used rows of a block: params [NP, N] by neuron into pv, states [NS, M] (or zeros when
  // src is null) into st. The neuron index advances with the element (no division per element).
  static void load_block(const Shape& sh, int64_t e0, int64_t cnt, const T* prm, const T* src, T (*pv)[BLK],
                         T (*st)[BLK]) {
    int64_t n = (e0 / sh.inner) % sh.N, r = e0 % sh.inner;
    for (int64_t j = 0; j < cnt; ++j) {
      for (int k = 0; k < NP; ++k)
        if (uses_param(k)) pv[k][j] = prm[k * sh.N + n];
      if (++r == sh.inner) {
        r = 0;
        if (++n == sh.N) n = 0;
      }
    }
    for (int k = 0; k < NS; ++k)
      if (uses_state(k)) {
        if (src) std::copy(src + k * sh.M + e0, src + k * sh.M + e0 + cnt, st[k]);
        else std::fill(st[k], st[k] + cnt, T(0));
      }
  }

  // The used state rows of a block back into dst [NS, M].
  static void store_states(const Shape& sh, int64_t e0, int64_t cnt, const T (*st)[BLK], T* dst) {
    for (int k = 0; k < NS; ++k)
      if (uses_state(k)) std::copy(st[k], st[k] + cnt, dst + k * sh.M + e0);
  }

  // Add a block's per-element parameter gradients gp into acc [NP, N] by neuron, element by element
  // in increasing order (the same sums whatever the layout), one run of elements at a time: with
  // inner == 1 a run is consecutive neurons (an element-wise add that vectorizes), otherwise the
  // `inner` elements of one neuron (summed in a register instead of through memory).
  static void reduce_params(const Shape& sh, int64_t e0, int64_t cnt, const T (*gp)[BLK], T* acc) {
    if (sh.inner == 1) {
      for (int64_t j = 0, n = e0 % sh.N; j < cnt; n = 0) {  // after the first run, the next starts at neuron 0
        const int64_t run = std::min(cnt - j, sh.N - n);
        for (int k = 0; k < NP; ++k)
          if (uses_param(k)) {
            T* __restrict a = acc + k * sh.N + n;
            const T* __restrict g = gp[k] + j;
            for (int64_t i = 0; i < run; ++i) a[i] += g[i];
          }
        j += run;
      }
      return;
    }
    int64_t n = (e0 / sh.inner) % sh.N, r = e0 % sh.inner;
    for (int64_t j = 0; j < cnt;) {
      const int64_t run = std::min(cnt - j, sh.inner - r);
      for (int k = 0; k < NP; ++k)
        if (uses_param(k)) {
          T sum = acc[k * sh.N + n];
          for (int64_t i = 0; i < run; ++i) sum += gp[k][j + i];
          acc[k * sh.N + n] = sum;
        }
      j += run;
      r += run;
      if (r == sh.inner) {
        r = 0;
        if (++n == sh.N) n = 0;
      }
    }
  }

  // The traces of element j in one step's saved rows sv ([S, M]); those the layer lacks stay as they are.
  static TT_INLINE void saved_traces(const T* sv, int64_t M, int64_t j, T& syn, T& nsyn, T& rec, T& nrec) {
    if constexpr (SY) {
      syn = sv[KS * M + j];
      if constexpr (D) nsyn = sv[(KS + 1) * M + j];
    }
    if constexpr (R) {
      rec = sv[KR * M + j];
      if constexpr (D) nrec = sv[(KR + 1) * M + j];
    }
  }

  // The membrane drive of one step from the input u and the recurrent trace r (rec, or
  // rec + nrec when dual): dp for the positive (or only) membrane, dn for the negative one.
  static TT_INLINE void drive(const T (*pv)[BLK], int64_t j, T u, T r, T& dp, T& dn) {
    if constexpr (R && !D) {
      dp = pv[P_W][j] * r + u;
    } else if constexpr (R && D) {
      dp = pv[P_W][j] * posv(r) + posv(u);
      dn = pv[P_NW][j] * negv(r) + negv(u);
    } else if constexpr (D) {
      dp = posv(u);
      dn = negv(u);
    } else {
      dp = u;
    }
  }

  static void forward(const Shape& sh, int q, const T* x, const T* prm, const T* init, const T* uni, T step, T* out, T* fin,
                      T* sav, const Pooled& pool) {
    const Q qz_call(q, step);
    const Split split(sh);
    at::parallel_for(0, split.chunks, 1, [&](int64_t c0, int64_t c1) {
      const int64_t b0 = split.first(c0), b1 = split.last(c1 - 1);
      const Q qz = qz_call;  // a local copy: stores to float outputs cannot alias it
      // every pointer used in the vector loop is valid, so that no load or store is conditional
      Rows<T> st_rows(NS), pv_rows(NP), zero_rows(1), scratch_rows(S + 3);
      T(*__restrict st)[BLK] = st_rows.get();
      T(*__restrict pv)[BLK] = pv_rows.get();
      const T* zeros = zero_rows.get()[0];
      T(*scratch)[BLK] = scratch_rows.get();  // the saved rows when not written in place; row S + 2: the output's
      const bool stream = streamed<T>(sh.T * sh.M);
      const bool in_place = sav && !stream;  // the saved rows written straight into sav
      const bool out_local = stream || pool.on();  // the output row computed in scratch, then streamed or pooled
      const int64_t pooled_row = pool.on() ? pool.row(sh.M) : 0;
      std::vector<float> best(pool.on() ? pool.win->OW : 0);
      std::vector<int32_t> where(best.size());
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t e0 = blk * sh.block;
        const int64_t cnt = std::min(sh.block, sh.M - e0);
        load_block(sh, e0, cnt, prm, init, pv, st);
        const int64_t svs = in_place ? sh.M : BLK;  // stride between saved slots
        for (int64_t t = 0; t < sh.T; ++t) {
          const T* __restrict xt = x + t * sh.M + e0;
          T* __restrict ot = out_local ? scratch[S + 2] : out + t * sh.M + e0;
          T* svt = in_place ? sav + t * S * sh.M + e0 : &scratch[0][0];
          // one restrict pointer per saved slot: a runtime stride between slots defeats the vectorizer
          T* __restrict sv_syn = svt + KS * svs;
          T* __restrict sv_nsyn = svt + (KS + 1) * svs;
          T* __restrict sv_rec = svt + KR * svs;
          T* __restrict sv_nrec = svt + (KR + 1) * svs;
          T* __restrict sv_mem = svt + KM * svs;
          T* __restrict sv_nmem = svt + (KM + 1) * svs;
          const T* __restrict u0 = uni ? uni + t * sh.draws * sh.M + e0 : zeros;
          const T* __restrict u1 = (uni && sh.draws > 1) ? u0 + sh.M : zeros;
          if (t + 1 < sh.T) {
            prefetch_row(xt + sh.M, cnt, false);
            if (!out_local) prefetch_row(ot + sh.M, cnt, true);
            if (in_place)
              for (int k = 0; k < S; ++k) prefetch_row(svt + (S + k) * sh.M, cnt, true);
            if (uni)
              for (int64_t k = 0; k < sh.draws; ++k) prefetch_row(u0 + (sh.draws + k) * sh.M, cnt, false);
          }
          // the membrane before the reset (h) from the states: after integrate, before fire
          auto membrane = [&](int64_t j) { return D ? st[S_MEM][j] + st[S_NMEM][j] : st[S_MEM][j]; };
          // the step up to the membrane before the reset (h), with the rows saved for backward
          auto integrate = [&](int64_t j) -> T {
            const T xv = xt[j];
            T u, dp, dn = T(0);
            if constexpr (SY && !D) {
              st[S_SYN][j] = pv[P_A][j] * st[S_SYN][j] + (T(1) - pv[P_A][j]) * xv;
              u = st[S_SYN][j];
            } else if constexpr (SY && D) {
              st[S_SYN][j] = pv[P_A][j] * st[S_SYN][j] + (T(1) - pv[P_A][j]) * posv(xv);
              st[S_NSYN][j] = pv[P_NA][j] * st[S_NSYN][j] + (T(1) - pv[P_NA][j]) * negv(xv);
              u = st[S_SYN][j] + st[S_NSYN][j];
            } else {
              u = xv;
            }
            if constexpr (R && !D) {
              st[S_REC][j] = pv[P_G][j] * st[S_REC][j] + (T(1) - pv[P_G][j]) * st[S_PREV][j];
            } else if constexpr (R && D) {
              const T prev = st[S_PREV][j];
              st[S_REC][j] = pv[P_G][j] * st[S_REC][j] + (T(1) - pv[P_G][j]) * posv(prev);
              st[S_NREC][j] = pv[P_NG][j] * st[S_NREC][j] + (T(1) - pv[P_NG][j]) * negv(prev);
            }
            drive(pv, j, u, R ? (D ? st[S_REC][j] + st[S_NREC][j] : st[S_REC][j]) : T(0), dp, dn);
            st[S_MEM][j] = pv[P_B][j] * st[S_MEM][j] + (EMA ? (T(1) - pv[P_B][j]) * dp : dp);
            if constexpr (D) st[S_NMEM][j] = pv[P_NB][j] * st[S_NMEM][j] + (EMA ? (T(1) - pv[P_NB][j]) * dn : dn);
            const T h = membrane(j);
            if constexpr (SY) {
              sv_syn[j] = st[S_SYN][j];
              if constexpr (D) sv_nsyn[j] = st[S_NSYN][j];
            }
            if constexpr (R) {
              sv_rec[j] = st[S_REC][j];
              if constexpr (D) sv_nrec[j] = st[S_NREC][j];
            }
            sv_mem[j] = st[S_MEM][j];
            if constexpr (D) sv_nmem[j] = st[S_NMEM][j];
            return h;
          };
          // the spikes from h, the reset and the output; SIGN: binary spikes from the sign alone (SignFire)
          auto fire = [&](int64_t j, T h, auto sign) {
            Fire<T, F> f;
            if constexpr (decltype(sign)::value) {
              f.sp = Fire<T, F>::above(h, pv, j) > T(0) ? T(1) : T(0);
            } else {
              f.eval(qz, h, pv, j, u0[j], u1[j]);
            }
            if constexpr (FIRES) {
              const T amount = f.reset(pv, j);
              if constexpr (D) {
                st[S_MEM][j] = st[S_MEM][j] - T(0.5) * amount;
                st[S_NMEM][j] = st[S_NMEM][j] - T(0.5) * amount;
              } else {
                st[S_MEM][j] = st[S_MEM][j] - amount;
              }
            }
            const T o = f.out(h, pv, j);
            if constexpr (R) st[S_PREV][j] = o;
            ot[j] = o;
          };
          if constexpr (SignFire<T, Q, F>::ENABLED) {
            // runs of RUN elements: integrate, noting any z near 0; then fire from the membrane in st
            // (not yet reset, so h again, bit for bit)
            for (int64_t j0 = 0; j0 < cnt; j0 += SignFire<T, Q, F>::RUN) {
              const int64_t j1 = std::min(cnt, j0 + SignFire<T, Q, F>::RUN);
              int near = 0;
  #pragma GCC ivdep
              for (int64_t j = j0; j < j1; ++j) near |= SignFire<T, Q, F>::near(Fire<T, F>::above(integrate(j), pv, j));
              if (near) {
  #pragma GCC ivdep
                for (int64_t j = j0; j < j1; ++j) fire(j, membrane(j), std::false_type{});
              } else {
  #pragma GCC ivdep
                for (int64_t j = j0; j < j1; ++j) fire(j, membrane(j), std::true_type{});
              }
            }
          } else {
  #pragma GCC ivdep  // elements are independent; only the alias analysis needs telling
            for (int64_t j = 0; j < cnt; ++j) fire(j, integrate(j), std::false_type{});
          }
          if (pool.on()) {
            const tracetorch_pooling::Window& w = *pool.win;
            const int64_t o0 = t * pooled_row + pool.offset(e0);
            for (int64_t p = 0; p * w.plane() < cnt; ++p)
              tracetorch_pooling::pool_plane(w, ot + p * w.plane(), out + o0 + p * w.pooled(),
                                             pool.arg + o0 + p * w.pooled(), best.data(), where.data());
          } else if (stream) {
            stream_row(out + t * sh.M + e0, ot, cnt);
          }
          if (stream && sav)
            for (int k = 0; k < S; ++k) stream_row(sav + (t * S + k) * sh.M + e0, scratch[k], cnt);
        }
        store_states(sh, e0, cnt, st, fin);
      }
      if (stream) stream_fence();
    });
  }

  // Reverse-time pass. ga = adjoints of the states after the step being processed. PG: the parameter
  // gradients are wanted; without them gprm is zeros and the per-element terms are never formed.
  template <bool PG>
  static void backward(const Shape& sh, int q, const T* gout, const T* gfin, const T* x, const T* prm, const T* init, const T* uni,
                       T step, const T* sav, T* gx, T* gprm, T* ginit, const Pooled& pool) {
    const Q qz_call(q, step);
    // Each chunk sums its parameter gradients into its own [NP, N] rows, added up in chunk order
    // afterwards: the result does not depend on thread timing.
    const Split split(sh);
    const int64_t nchunks = split.chunks;
    std::vector<T> acc(nchunks * NP * sh.N, T(0));
    const bool stream = streamed<T>(sh.T * sh.M);  // gx through an L1 row and non-temporal stores
    at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
     for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t b0 = split.first(chunk), b1 = split.last(chunk);
      T* chunk_acc = acc.data() + chunk * NP * sh.N;
      const Q qz = qz_call;  // a local copy: stores to float outputs cannot alias it
      Rows<T> ga_rows(NS), gp_rows(NP), pv_rows(NP), sg_rows(2), zero_rows(1), gx_rows(1), gout_rows(1);
      T(*__restrict ga)[BLK] = ga_rows.get();
      T(*__restrict gp)[BLK] = gp_rows.get();
      T(*__restrict pv)[BLK] = pv_rows.get();
      T* __restrict sgp_c = sg_rows.get()[0];  // spike probabilities of the step being processed
      T* __restrict sgn_c = sg_rows.get()[1];
      const T* zeros = zero_rows.get()[0];
      const int64_t pooled_row = pool.on() ? pool.row(sh.M) : 0;
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t e0 = blk * sh.block;
        const int64_t cnt = std::min(sh.block, sh.M - e0);
        load_block(sh, e0, cnt, prm, gfin, pv, ga);
        for (int k = 0; k < NP; ++k)
          if (PG && uses_param(k)) std::fill(gp[k], gp[k] + cnt, T(0));
        // the initial states, or zeros when none are held
        const T* ini[NS];
        for (int k = 0; k < NS; ++k) ini[k] = init ? init + k * sh.M + e0 : zeros;
        if constexpr (FIRES) {  // spike probabilities of the last step
          const T* svt = sav + (sh.T - 1) * S * sh.M + e0;
  #pragma GCC ivdep  // elements are independent; only the alias analysis needs telling
          for (int64_t j = 0; j < cnt; ++j) {
            const T h = D ? svt[KM * sh.M + j] + svt[(KM + 1) * sh.M + j] : svt[KM * sh.M + j];
            Fire<T, F> f;
            f.eval(qz, h, pv, j, T(0), T(0));
            sgp_c[j] = f.sgp;
            sgn_c[j] = f.sgn;
          }
        }
        // one reverse step; FIRST: t == 0, the states before it are the initial ones
        auto step_back = [&](int64_t t, auto first) {
          constexpr bool FIRST = decltype(first)::value;
          const T* __restrict svt = sav + t * S * sh.M + e0;
          const T* __restrict svp = FIRST ? zeros : sav + (t - 1) * S * sh.M + e0;
          const T* __restrict xt = x ? x + t * sh.M + e0 : zeros;
          const T* __restrict got = pool.on() ? gout_rows.get()[0] : gout + t * sh.gout_tstride + e0;
          if (pool.on()) {  // this step's output gradient, unpooled into an L1 row
            const tracetorch_pooling::Window& w = *pool.win;
            const int64_t g0 = t * sh.gout_tstride + pool.offset(e0), a0 = t * pooled_row + pool.offset(e0);
            for (int64_t p = 0; p * w.plane() < cnt; ++p)
              tracetorch_pooling::pool_plane_backward(w, gout + g0 + p * w.pooled(), pool.arg_in + a0 + p * w.pooled(),
                                                      gout_rows.get()[0] + p * w.plane());
          }
          const T* __restrict ut0 = uni ? uni + t * sh.draws * sh.M + e0 : zeros;
          const T* __restrict ut1 = (uni && sh.draws > 1) ? ut0 + sh.M : zeros;
          const T* __restrict up0 = (uni && !FIRST) ? uni + (t - 1) * sh.draws * sh.M + e0 : zeros;
          const T* __restrict up1 = (uni && !FIRST && sh.draws > 1) ? up0 + sh.M : zeros;
          T* __restrict gxt = stream ? gx_rows.get()[0] : gx + t * sh.M + e0;
          if constexpr (!FIRST) {  // the next (earlier) step's rows
            if (t >= 2)
              for (int k = 0; k < S; ++k) prefetch_row(sav + ((t - 2) * S + k) * sh.M + e0, cnt, false);
            if (x) prefetch_row(xt - sh.M, cnt, false);
            if (sh.gout_tstride && !pool.on()) prefetch_row(got - sh.gout_tstride, cnt, false);
            if (!stream) prefetch_row(gxt - sh.M, cnt, true);
            if (uni && t >= 2)
              for (int64_t k = 0; k < sh.draws; ++k) prefetch_row(up0 + (k - sh.draws) * sh.M, cnt, false);
          }
  #pragma GCC ivdep  // elements are independent; only the alias analysis needs telling
          for (int64_t j = 0; j < cnt; ++j) {
            // ---- states before this step ----
            T syn0 = T(0), nsyn0 = T(0), rec0 = T(0), nrec0 = T(0), prev = T(0), mem0, nmem0 = T(0);
            Fire<T, F> fp;  // previous step's spikes
            if constexpr (FIRST) {
              if constexpr (SY) syn0 = ini[S_SYN][j];
              if constexpr (SY && D) nsyn0 = ini[S_NSYN][j];
              if constexpr (R) {
                rec0 = ini[S_REC][j];
                prev = ini[S_PREV][j];
              }
              if constexpr (R && D) nrec0 = ini[S_NREC][j];
              mem0 = ini[S_MEM][j];
              if constexpr (D) nmem0 = ini[S_NMEM][j];
            } else {
              saved_traces(svp, sh.M, j, syn0, nsyn0, rec0, nrec0);
              mem0 = svp[KM * sh.M + j];
              if constexpr (D) nmem0 = svp[(KM + 1) * sh.M + j];
              const T h0 = D ? mem0 + nmem0 : mem0;
              fp.eval(qz, h0, pv, j, up0[j], up1[j]);
              if constexpr (FIRES) {
                const T amount = fp.reset(pv, j);
                if constexpr (D) {
                  mem0 = mem0 - T(0.5) * amount;
                  nmem0 = nmem0 - T(0.5) * amount;
                } else {
                  mem0 = mem0 - amount;
                }
              }
              if constexpr (R) prev = fp.out(h0, pv, j);
            }
            // ---- this step's values ----
            const T xv = xt[j];
            T syn = T(0), nsyn = T(0), rec = T(0), nrec = T(0);
            saved_traces(svt, sh.M, j, syn, nsyn, rec, nrec);
            const T u = SY ? (D ? syn + nsyn : syn) : xv;
            T dp, dn = T(0);
            const T r = rec + nrec;
            drive(pv, j, u, r, dp, dn);
            // ---- fire ----
            const T G = got[j] + (R ? ga[S_PREV][j] : T(0));
            T gh_p, gh_n = T(0);  // adjoints of the membrane(s) before the reset
            if constexpr (!FIRES) {
              gh_p = ga[S_MEM][j] + G;
              if constexpr (D) gh_n = ga[S_NMEM][j] + G;
            } else {
              Fire<T, F> f;
              f.sgp = sgp_c[j];
              f.sgn = sgn_c[j];
              f.from_sg(qz, ut0[j], ut1[j]);
              const T c = D ? T(0.5) : T(1);
              const T gsum = D ? ga[S_MEM][j] + ga[S_NMEM][j] : ga[S_MEM][j];
              const T g_amount = -c * gsum;
              T ghf;
              if constexpr (F == LIB) {
                const T g_s = G + g_amount * pv[P_TH][j];
                const T g_z = g_s * qz.grad(f.sgp) * T(4) * f.sgp * (T(1) - f.sgp);
                add_param<PG>(gp[P_TH][j], g_amount * f.sp - g_z);
                add_param<PG>(gp[P_BIAS][j], g_z);
                ghf = g_z;
              } else {
                const T ap = F == LITS ? pv[P_PSC][j] : T(1);
                const T an = F == LITS ? pv[P_NSC][j] : T(1);
                const T g_sp = G * ap + g_amount * pv[P_TH][j];
                const T g_sn = G * an + g_amount * pv[P_NTH][j];
                if constexpr (F == LITS) {
                  add_param<PG>(gp[P_PSC][j], G * f.sp);
                  add_param<PG>(gp[P_NSC][j], G * f.sn);
                }
                const T g_zp = g_sp * qz.grad(f.sgp) * T(4) * f.sgp * (T(1) - f.sgp);
                const T g_zn = -g_sn * qz.grad(f.sgn) * T(4) * f.sgn * (T(1) - f.sgn);
                add_param<PG>(gp[P_TH][j], g_amount * f.sp - g_zp);
                add_param<PG>(gp[P_NTH][j], g_amount * f.sn - g_zn);
                add_param<PG>(gp[P_BIAS][j], g_zp - g_zn);
                ghf = g_zp - g_zn;
              }
              gh_p = ga[S_MEM][j] + ghf;
              if constexpr (D) gh_n = ga[S_NMEM][j] + ghf;
              sgp_c[j] = fp.sgp;  // the previous step becomes the current one
              sgn_c[j] = fp.sgn;
            }
            // ---- membrane ----
            T g_dp, g_dn = T(0);
            add_param<PG>(gp[P_B][j], gh_p * (mem0 - (EMA ? dp : T(0))));
            ga[S_MEM][j] = gh_p * pv[P_B][j];
            g_dp = EMA ? gh_p * (T(1) - pv[P_B][j]) : gh_p;
            if constexpr (D) {
              add_param<PG>(gp[P_NB][j], gh_n * (nmem0 - (EMA ? dn : T(0))));
              ga[S_NMEM][j] = gh_n * pv[P_NB][j];
              g_dn = EMA ? gh_n * (T(1) - pv[P_NB][j]) : gh_n;
            }
            // ---- recurrence ----
            T g_u;
            if constexpr (R && !D) {
              add_param<PG>(gp[P_W][j], g_dp * rec);
              const T g_rec = ga[S_REC][j] + g_dp * pv[P_W][j];
              add_param<PG>(gp[P_G][j], g_rec * (rec0 - prev));
              ga[S_REC][j] = g_rec * pv[P_G][j];
              ga[S_PREV][j] = g_rec * (T(1) - pv[P_G][j]);
              g_u = g_dp;
            } else if constexpr (R && D) {
              add_param<PG>(gp[P_W][j], g_dp * posv(r));
              add_param<PG>(gp[P_NW][j], g_dn * negv(r));
              const T g_r = g_dp * pv[P_W][j] * ipos(r) + g_dn * pv[P_NW][j] * ineg(r);
              const T g_pr = ga[S_REC][j] + g_r;
              const T g_nr = ga[S_NREC][j] + g_r;
              add_param<PG>(gp[P_G][j], g_pr * (rec0 - posv(prev)));
              add_param<PG>(gp[P_NG][j], g_nr * (nrec0 - negv(prev)));
              ga[S_REC][j] = g_pr * pv[P_G][j];
              ga[S_NREC][j] = g_nr * pv[P_NG][j];
              ga[S_PREV][j] = g_pr * (T(1) - pv[P_G][j]) * ipos(prev) + g_nr * (T(1) - pv[P_NG][j]) * ineg(prev);
              g_u = g_dp * ipos(u) + g_dn * ineg(u);
            } else if constexpr (D) {
              g_u = g_dp * ipos(u) + g_dn * ineg(u);
            } else {
              g_u = g_dp;
            }
            // ---- drive ----
            if constexpr (SY && !D) {
              const T g_syn = ga[S_SYN][j] + g_u;
              add_param<PG>(gp[P_A][j], g_syn * (syn0 - xv));
              ga[S_SYN][j] = g_syn * pv[P_A][j];
              gxt[j] = g_syn * (T(1) - pv[P_A][j]);
            } else if constexpr (SY && D) {
              const T g_ps = ga[S_SYN][j] + g_u;
              const T g_ns = ga[S_NSYN][j] + g_u;
              add_param<PG>(gp[P_A][j], g_ps * (syn0 - posv(xv)));
              add_param<PG>(gp[P_NA][j], g_ns * (nsyn0 - negv(xv)));
              ga[S_SYN][j] = g_ps * pv[P_A][j];
              ga[S_NSYN][j] = g_ns * pv[P_NA][j];
              gxt[j] = g_ps * (T(1) - pv[P_A][j]) * ipos(xv) + g_ns * (T(1) - pv[P_NA][j]) * ineg(xv);
            } else {
              gxt[j] = g_u;
            }
          }
          if (stream) stream_row(gx + t * sh.M + e0, gxt, cnt);
        };
        for (int64_t t = sh.T - 1; t >= 1; --t) step_back(t, std::false_type{});
        step_back(0, std::true_type{});
        if (ginit) store_states(sh, e0, cnt, ga, ginit);
        if constexpr (PG) reduce_params(sh, e0, cnt, gp, chunk_acc);
      }
      if (stream) stream_fence();
     }
    });
    for (int k = 0; k < NP; ++k)
      for (int64_t n = 0; n < sh.N; ++n) {
        T total = T(0);
        if (PG && uses_param(k))
          for (int64_t c = 0; c < nchunks; ++c) total += acc[(c * NP + k) * sh.N + n];
        gprm[k * sh.N + n] = total;
      }
  }
};

struct Call {
  Shape sh;
  int q;
  double step;
  const float *x, *prm, *init, *uni;
  float *out, *fin, *sav;                   // forward
  const float *gout, *gfin, *sav_in;       // backward
  float *gx, *gprm, *ginit;
  bool param_grad = true;  // backward: false when no parameter gradient is wanted (gprm comes back zeros)
  Pooled pool;             // a max pooling after the layer (none by default)
};

template <bool FORWARD, typename Q, bool D, bool SY, bool R, int F> void launch_with(const Call& c) {
  const float step = static_cast<float>(c.step);
  if constexpr (FORWARD) {
    Kernel<float, Q, D, SY, R, F>::forward(c.sh, c.q, c.x, c.prm, c.init, c.uni, step, c.out, c.fin, c.sav, c.pool);
  } else {
    using K = Kernel<float, Q, D, SY, R, F>;
    const auto backward = c.param_grad ? &K::template backward<true> : &K::template backward<false>;
    backward(c.sh, c.q, c.gout, c.gfin, c.x, c.prm, c.init, c.uni, step, c.sav_in, c.gx, c.gprm, c.ginit, c.pool);
  }
}

// Firing layers get specializations for the identity quantizer and round_ste with step 1; the
// others share the blended one.
template <bool FORWARD, bool D, bool SY, bool R, int F> void launch(const Call& c) {
  if constexpr (F >= LIB) {
    if (c.q == Q_ROUND && c.step == 1.0) return launch_with<FORWARD, RoundQuant<float>, D, SY, R, F>(c);
    if (c.q != Q_ID) return launch_with<FORWARD, Quantizer<float>, D, SY, R, F>(c);
  }
  launch_with<FORWARD, IdentityQuant<float>, D, SY, R, F>(c);
}

template <bool FORWARD, bool D, bool SY, bool R> void by_family(int f, const Call& c) {
  if constexpr (!R) {
    if (f == LI) return launch<FORWARD, D, SY, R, LI>(c);
    if (f == LIEMA) return launch<FORWARD, D, SY, R, LIEMA>(c);
  }
  if (f == LIB) return launch<FORWARD, D, SY, R, LIB>(c);
  if (f == LIT) return launch<FORWARD, D, SY, R, LIT>(c);
  if (f == LITS) return launch<FORWARD, D, SY, R, LITS>(c);
  TORCH_CHECK(false, "traceTorch kernel: unsupported family code ", f, R ? " with the recurrent flag" : "");
}

// The forward (or backward) pass of the dual (or single) layers with the given synaptic and
// recurrent flags and family: one part of the build, instantiated in its own translation unit.
template <bool FORWARD, bool D> void run_part(bool sy, bool r, int f, const Call& c) {
  if (sy) return r ? by_family<FORWARD, D, true, true>(f, c) : by_family<FORWARD, D, true, false>(f, c);
  return r ? by_family<FORWARD, D, false, true>(f, c) : by_family<FORWARD, D, false, false>(f, c);
}

extern template void run_part<true, false>(bool, bool, int, const Call&);
extern template void run_part<true, true>(bool, bool, int, const Call&);
extern template void run_part<false, false>(bool, bool, int, const Call&);
extern template void run_part<false, true>(bool, bool, int, const Call&);

}  // namespace tracetorch_neuron
