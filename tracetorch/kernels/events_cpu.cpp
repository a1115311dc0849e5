// Event-driven CPU kernels (traceTorch), float32: work proportional to the number of spikes.
//
// * binary_rows: the column indices of the ones of a {0, 1} matrix x [R, K], row by row (CSR
//   without values); an empty result when x holds anything else or is denser than asked.
// * event_linear_forward: out[r] = bias + sum over the ones k of row r of W^T[k]  (= x W^T + b).
// * event_linear_grad_weight: grad W[:, k] = sum over the rows r with x[r, k] = 1 of grad_out[r].
// * event_conv2d_forward / event_conv2d_grad_weight: a Conv2d's output, and its weight (and bias)
//   gradient, from the index of its input's ones.
// * conv2d_direct_forward / conv2d_direct_grad_weight: a stride-1 Conv2d computed directly from
//   the input's rows (for few input taps).
// * max_pool2d_planes (+ _backward): max pooling with a one-byte argmax per output.
// * bernoulli_spikes: out[t, m] = 1 if u(seed, t * M + m) < p[m] else 0, with u a counter-based
//   hash of the element's index into [0, 1) (24 bits): the same values whatever the thread count,
//   and the same as tracetorch/kernels/spike_draws.py computes with torch ops.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "pool_planes.h"
#include "tensor_pool.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <cstring>
#include <vector>

namespace {

using tracetorch_pooling::pool_plane;
using tracetorch_pooling::pool_plane_backward;
using tracetorch_pooling::Window;

constexpr int64_t ROW_GRAIN = 16;
constexpr int64_t CONV_CHUNKS = 32;  // sample chunks of the conv weight gradient (fixed: see there)
constexpr int64_t SLOT_LIMIT = int64_t{1} << 20;  // weight-row slots per thread in the conv forward (4 MB)

void check_float(const at::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat && t.dim() == dims,
              "traceTorch event kernel: ", name, " must be a contiguous ", dims, "-d float32 CPU tensor");
}

void check_index(const at::Tensor& indptr, const at::Tensor& indices) {
  TORCH_CHECK(indptr.scalar_type() == at::kLong && indptr.is_contiguous() && indptr.dim() == 1 && indptr.size(0) >= 1,
              "traceTorch event kernel: indptr must be a contiguous int64 vector [R + 1]");
  TORCH_CHECK(indices.scalar_type() == at::kInt && indices.is_contiguous() && indices.dim() == 1,
              "traceTorch event kernel: indices must be a contiguous int32 vector");
}

// lowbias32 (Chris Wellons' hash prospector): a 32-bit integer hash with two multiplies.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Eight floats; GCC/Clang vector extension (one AVX register with -mavx2, two SSE ones without).
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

// out[n0 : n0 + 8V] = init[n0 : ...] + the rows list[0 : cnt] of table [., Cp], summed in registers
// (init may be out).
template <int V>
inline void gather_slice(const float* table, int64_t Cp, int64_t n0, const float* init, const int32_t* list,
                         int64_t cnt, float* out) {
  v8 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = load8(init + n0 + 8 * v);
  for (int64_t j = 0; j < cnt; ++j) {
    const float* w = table + static_cast<int64_t>(list[j]) * Cp + n0;
    for (int v = 0; v < V; ++v) acc[v] += load8(w + 8 * v);
  }
  for (int v = 0; v < V; ++v) store8(out + n0 + 8 * v, acc[v]);
}

// gather_slice for 1..8 vectors (index: the number of vectors).
using GatherSlice = void (*)(const float*, int64_t, int64_t, const float*, const int32_t*, int64_t, float*);
constexpr GatherSlice GATHER_SLICES[9] = {nullptr,         gather_slice<1>, gather_slice<2>, gather_slice<3>,
                                          gather_slice<4>, gather_slice<5>, gather_slice<6>, gather_slice<7>,
                                          gather_slice<8>};

constexpr int64_t SLICE = 32;  // features a pass of the event forward sums: four vectors an index

// W [N, K] -> its SLICE-feature slices [S][K][SLICE] (S = ceil(N / SLICE); the lanes past N zero):
// the rows the ones select.
std::unique_ptr<float[]> weight_slices(const float* w, int64_t N, int64_t K) {
  const int64_t S = (N + SLICE - 1) / SLICE;
  std::unique_ptr<float[]> sliced(new float[S * K * SLICE]);
  at::parallel_for(0, S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t l = 0; l < SLICE; ++l) {
        float* d = sliced.get() + s * K * SLICE + l;
        if (SLICE * s + l >= N) {
          for (int64_t k = 0; k < K; ++k) d[k * SLICE] = 0.0f;
          continue;
        }
        const float* row = w + (SLICE * s + l) * K;
        for (int64_t k = 0; k < K; ++k) d[k * SLICE] = row[k];
      }
  });
  return sliced;
}

constexpr int64_t SLICE_ROWS = 64;  // rows per block: their index stays in cache while every slice passes over it

// The first V vectors (`lanes` floats) of one slice for rows r0..r1: out = start + the sum over the
// indices j of each row of table[j] (SLICE floats a row); four rows at a time, each its own chain of
// adds in index order.
template <int V>
void sum_slice(const int64_t* ip, const int32_t* ix, int64_t r0, int64_t r1, const float* table, const float* start,
               int64_t lanes, int64_t N, float* out) {
  v8 first[V];
  for (int v = 0; v < V; ++v) first[v] = load8(start + 8 * v);
  auto add = [&](v8* acc, int32_t k) {
    for (int v = 0; v < V; ++v) acc[v] += load8(table + static_cast<int64_t>(k) * SLICE + 8 * v);
  };
  auto put = [&](int64_t r, const v8* acc) {
    float tmp[SLICE];
    for (int v = 0; v < V; ++v) store8(tmp + 8 * v, acc[v]);
    std::copy(tmp, tmp + lanes, out + r * N);
  };
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int32_t* idx[4];
    int64_t cnt[4];
    v8 acc[4][V];
    for (int q = 0; q < 4; ++q) {
      idx[q] = ix + ip[r + q];
      cnt[q] = ip[r + q + 1] - ip[r + q];
      for (int v = 0; v < V; ++v) acc[q][v] = first[v];
    }
    const int64_t common = std::min(std::min(cnt[0], cnt[1]), std::min(cnt[2], cnt[3]));
    for (int64_t j = 0; j < common; ++j)
      for (int q = 0; q < 4; ++q) add(acc[q], idx[q][j]);
    for (int q = 0; q < 4; ++q) {
      for (int64_t j = common; j < cnt[q]; ++j) add(acc[q], idx[q][j]);
      put(r + q, acc[q]);
    }
  }
  for (; r < r1; ++r) {
    v8 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = first[v];
    for (int64_t j = ip[r]; j < ip[r + 1]; ++j) add(acc, ix[j]);
    put(r, acc);
  }
}

using SumSlice = void (*)(const int64_t*, const int32_t*, int64_t, int64_t, const float*, const float*, int64_t,
                          int64_t, float*);
constexpr SumSlice SUM_SLICES[5] = {nullptr, sum_slice<1>, sum_slice<2>, sum_slice<3>, sum_slice<4>};

// out[r] = init (bias row, or zeros) + sum over the indices j of row r of W^T[j]: a sparse 0/1
// matrix [R, K] (CSR) times W^T, from weight_slices. Blocks of rows take the slices in turn, each
// index adding as many vectors as its slice has features (up to four), in index order.
void sparse_binary_matmul(const int64_t* ip, const int32_t* ix, int64_t R, const float* sliced, int64_t K, int64_t N,
                          const float* init, float* out) {
  const int64_t S = (N + SLICE - 1) / SLICE;
  at::parallel_for(0, (R + SLICE_ROWS - 1) / SLICE_ROWS, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t block = b0; block < b1; ++block) {
      const int64_t r0 = block * SLICE_ROWS, r1 = std::min(R, r0 + SLICE_ROWS);
      for (int64_t s = 0; s < S; ++s) {
        const int64_t lanes = std::min<int64_t>(SLICE, N - SLICE * s);
        float start[SLICE] = {};
        if (init != nullptr) std::copy(init + SLICE * s, init + SLICE * s + lanes, start);
        SUM_SLICES[(lanes + 7) / 8](ip, ix, r0, r1, sliced + s * K * SLICE, start, lanes, N, out + SLICE * s);
      }
    }
  });
}

// The 256 ways 8 lanes can fire, each as the lane numbers of its ones, packed one byte a lane
// in increasing order: entry m of the table compacts the lanes of bit mask m.
struct LaneTable {
  uint64_t lanes[256];
  constexpr LaneTable() : lanes() {
    for (int m = 0; m < 256; ++m) {
      uint64_t packed = 0;
      int count = 0;
      for (int lane = 0; lane < 8; ++lane)
        if (m & (1 << lane)) packed |= static_cast<uint64_t>(lane) << (8 * count++);
      lanes[m] = packed;
    }
  }
};
constexpr LaneTable LANES;

// Writes the positions of the non-zeros of row[0:K] to buf (room for K + 8), in order, and
// returns how many; sets `bad` when a value is neither 0 nor 1 (NaN included). Eight values at a
// time: compare, look the lane numbers of the ones up in LANES, store all eight, advance by the
// number of ones (a store that is overwritten next, no branch on the data).
inline int64_t compact_ones(const float* row, int64_t K, int32_t* buf, bool& bad) {
  int64_t k = 0, count = 0;
#if defined(__AVX2__)
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  __m256 other = zero;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(row + k);
    const __m256 nonzero = _mm256_cmp_ps(v, zero, _CMP_NEQ_UQ);
    other = _mm256_or_ps(other, _mm256_and_ps(nonzero, _mm256_cmp_ps(v, one, _CMP_NEQ_UQ)));
    const int mask = _mm256_movemask_ps(nonzero);
    const __m256i lanes = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(LANES.lanes[mask])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(buf + count),
                        _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(k))));
    count += __builtin_popcount(static_cast<unsigned>(mask));
  }
  bad |= _mm256_movemask_ps(other) != 0;
#endif
  int other_scalar = 0;
  for (; k < K; ++k) {  // branch-free: always store, advance on a one
    const float v = row[k];
    buf[count] = static_cast<int32_t>(k);
    count += v != 0.0f;
    other_scalar |= (v != 0.0f) & (v != 1.0f);
  }
  bad |= other_scalar != 0;
  return count;
}

}  // namespace

// x [R, K] -> (indptr int64 [R + 1], indices int32 [nnz]); both empty when x is not all 0/1 or
// has more than max_density * R * K ones. One pass over x: each block of rows compacts its ones
// into a buffer of its own (sized for max_density, grown if a block is denser) and counts them per
// row; the counts give every block its place in `indices`, and the blocks are copied there.
std::vector<at::Tensor> binary_rows(const at::Tensor& x, double max_density) {
  check_float(x, "x", 2);
  const int64_t R = x.size(0), K = x.size(1);
  TORCH_CHECK(K < (int64_t{1} << 31), "traceTorch event kernel: more than 2^31 columns");
  const float* px = x.const_data_ptr<float>();
  auto indptr = at::empty({R + 1}, x.options().dtype(at::kLong));
  int64_t* ip = indptr.mutable_data_ptr<int64_t>();
  auto none = [&] { return std::vector<at::Tensor>{at::empty({0}, indptr.options()), at::empty({0}, x.options().dtype(at::kInt))}; };
  const int64_t blocks = std::min<int64_t>(R, std::max<int64_t>(1, at::get_num_threads()) * 4);
  const int64_t per_block = blocks > 0 ? (R + blocks - 1) / blocks : 0;
  const double density = std::clamp(max_density, 0.0, 1.0);
  std::vector<std::unique_ptr<int32_t[]>> found(blocks);  // uninitialized: only the written part is read
  std::vector<int64_t> found_count(blocks, 0);
  std::atomic<bool> any_bad{false};
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1 && !any_bad.load(std::memory_order_relaxed); ++b) {
      const int64_t r0 = std::min(R, b * per_block), r1 = std::min(R, (b + 1) * per_block);
      int64_t room = static_cast<int64_t>(density * static_cast<double>((r1 - r0) * K)) + K + 8, used = 0;
      std::unique_ptr<int32_t[]> buf(new int32_t[room]);
      bool bad = false;
      for (int64_t r = r0; r < r1 && !bad; ++r) {
        if (used + K + 8 > room) {
          room = 2 * room + K + 8;
          std::unique_ptr<int32_t[]> grown(new int32_t[room]);
          std::memcpy(grown.get(), buf.get(), used * sizeof(int32_t));
          buf = std::move(grown);
        }
        const int64_t count = compact_ones(px + r * K, K, buf.get() + used, bad);
        ip[r + 1] = count;
        used += count;
      }
      found[b] = std::move(buf);
      found_count[b] = used;
      if (bad) any_bad.store(true, std::memory_order_relaxed);
    }
  });
  if (any_bad.load()) return none();
  ip[0] = 0;
  for (int64_t r = 0; r < R; ++r) ip[r + 1] += ip[r];
  if (static_cast<double>(ip[R]) > max_density * static_cast<double>(R) * static_cast<double>(K)) return none();
  auto indices = tracetorch_pool::pooled_empty({ip[R]}, x.options().dtype(at::kInt));
  int32_t* ix = indices.mutable_data_ptr<int32_t>();
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::memcpy(ix + ip[std::min(R, b * per_block)], found[b].get(), found_count[b] * sizeof(int32_t));
    }
  });
  return {indptr, indices};
}

// (indptr, indices) of x [R, K], W [N, K], bias [N] or empty -> out [R, N] = x W^T + bias.
at::Tensor event_linear_forward(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& weight,
                                const at::Tensor& bias) {
  check_index(indptr, indices);
  check_float(weight, "weight", 2);
  const int64_t R = indptr.size(0) - 1, N = weight.size(0), K = weight.size(1);
  const bool has_bias = bias.numel() > 0;
  if (has_bias) check_float(bias, "bias", 1);
  TORCH_CHECK(!has_bias || bias.size(0) == N, "traceTorch event kernel: bias has ", bias.size(0), " values for ", N,
              " outputs");
  const auto sliced = weight_slices(weight.const_data_ptr<float>(), N, K);
  auto out = tracetorch_pool::pooled_empty({R, N}, weight.options());
  sparse_binary_matmul(indptr.const_data_ptr<int64_t>(), indices.const_data_ptr<int32_t>(), R, sliced.get(), K, N,
                       has_bias ? bias.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>());
  return out;
}

// (indptr, indices) of x [R, K], grad_out [R, N] -> grad W [N, K] = grad_out^T x: grad W^T[k] is the
// sum of the rows r of grad_out with x[r, k] = 1, in increasing r whatever the number of threads.
// The columns k are cut into jobs whose rows of grad W^T (padded to `stride` floats) fit in L2
// (JOB_BYTES), one thread a job. A job walks the rows of x in tiles of `tile` rows, whose rows of
// grad_out it copies into an L1 buffer (lanes past N zero): first it lists, for each of its
// columns, the tile's rows that fired there, then it adds those rows to the column's running sum
// held in registers (gather_slice). The adds read from L1 instead of adding into memory once per
// spike; the running sums touch memory once per column and tile.
at::Tensor event_linear_grad_weight(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& grad_out,
                                    int64_t in_features) {
  check_index(indptr, indices);
  check_float(grad_out, "grad_out", 2);
  const int64_t R = indptr.size(0) - 1, N = grad_out.size(1), K = in_features;
  TORCH_CHECK(grad_out.size(0) == R, "traceTorch event kernel: grad_out has ", grad_out.size(0), " rows, expected ", R);
  constexpr int64_t JOB_BYTES = 512 * 1024;  // the running sums of a job: half an L2 here
  constexpr int64_t TILE_FLOATS = 8192;      // 32 KB of grad_out rows per tile (L1)
  constexpr int64_t TILE_L2_FLOATS = 65536;
  const int64_t Np = std::max<int64_t>(8, (N + 7) / 8 * 8);
  const int64_t stride = Np % 1024 == 0 ? Np + 16 : Np;  // rows 4 KB apart would alias in the store buffer
  // at least 64 rows a tile while they fit in 256 KB (wide rows: fewer passes over the running sums)
  const int64_t tile = std::clamp<int64_t>(std::max(TILE_FLOATS / Np, std::min<int64_t>(64, TILE_L2_FLOATS / Np)), 1, 256);
  const int64_t per_job = std::max<int64_t>(1, JOB_BYTES / (stride * static_cast<int64_t>(sizeof(float))));
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());  // a multiple of them: even shares
  const int64_t jobs = std::min(K, ((K + per_job - 1) / per_job + threads - 1) / threads * threads);
  const int64_t* ip = indptr.const_data_ptr<int64_t>();
  const int32_t* ix = indices.const_data_ptr<int32_t>();
  const float* g = grad_out.const_data_ptr<float>();
  auto gw = tracetorch_pool::pooled_empty({N, K}, grad_out.options());
  float* pw = gw.mutable_data_ptr<float>();
  at::parallel_for(0, jobs, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t job = j0; job < j1; ++job) {
      const int64_t k0 = K * job / jobs, k1 = K * (job + 1) / jobs, cols = k1 - k0;
      std::vector<float> sums(cols * stride, 0.0f), rows(tile * Np, 0.0f);
      std::vector<int32_t> fired(cols * tile), count(cols);
      for (int64_t t0 = 0; t0 < R; t0 += tile) {
        const int64_t t1 = std::min(R, t0 + tile);
        std::fill(count.begin(), count.end(), 0);
        for (int64_t r = t0; r < t1; ++r) {
          const int32_t local = static_cast<int32_t>(r - t0);
          const int64_t end = ip[r + 1];
          int64_t j = k0 == 0 ? ip[r] : std::lower_bound(ix + ip[r], ix + end, static_cast<int32_t>(k0)) - ix;
          for (; j < end && ix[j] < k1; ++j) {
            const int64_t c = ix[j] - k0;
            fired[c * tile + count[c]++] = local;
          }
          std::copy(g + r * N, g + r * N + N, rows.data() + local * Np);
        }
        for (int64_t c = 0; c < cols; ++c) {
          if (count[c] == 0) continue;
          float* sum = sums.data() + c * stride;
          for (int64_t n0 = 0; n0 < Np; n0 += 64)
            GATHER_SLICES[std::min<int64_t>(8, (Np - n0) / 8)](rows.data(), Np, n0, sum, fired.data() + c * tile,
                                                               count[c], sum);
        }
      }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cols; ++c) pw[n * K + k0 + c] = sums[c * stride + n];
    }
  });
  return gw;
}

// One axis of a convolution: for every input position, the (kernel tap, output position) pairs
// whose window covers it, found once per call (no division in the event loop).
struct AxisTaps {
  std::vector<int32_t> start, tap, out;  // pairs of position p: [start[p], start[p + 1])
  AxisTaps(int64_t in, int64_t out_size, int64_t kernel, int64_t stride, int64_t pad, int64_t dil) : start(in + 1, 0) {
    std::vector<std::vector<std::pair<int32_t, int32_t>>> at_pos(in);
    for (int64_t k = 0; k < kernel; ++k)
      for (int64_t o = 0; o < out_size; ++o) {
        const int64_t p = o * stride + k * dil - pad;
        if (p >= 0 && p < in) at_pos[p].emplace_back(static_cast<int32_t>(k), static_cast<int32_t>(o));
      }
    for (int64_t p = 0; p < in; ++p) {
      start[p + 1] = start[p] + static_cast<int32_t>(at_pos[p].size());
      for (const auto& [k, o] : at_pos[p]) {
        tap.push_back(k);
        out.push_back(o);
      }
    }
  }
};

// Row and column of every position of an H x W plane, looked up instead of divided per one.
struct PlanePositions {
  int64_t plane;
  std::vector<int32_t> y, x;
  PlanePositions(int64_t H, int64_t W) : plane(H * W), y(H * W), x(H * W) {
    for (int64_t p = 0; p < plane; ++p) {
      y[p] = static_cast<int32_t>(p / W);
      x[p] = static_cast<int32_t>(p % W);
    }
  }
};

// visit(channel, row, column) for each of a sample's ones [first, last), whose flat indices
// (channel, y, x) increase.
template <class Visit>
inline void for_each_one(const int32_t* ix, int64_t first, int64_t last, const PlanePositions& at, Visit&& visit) {
  int64_t ci = -1, next_plane = 0;
  for (int64_t j = first; j < last; ++j) {
    const int64_t e = ix[j];
    while (e >= next_plane) {
      ++ci;
      next_plane += at.plane;
    }
    const int64_t rest = e - (next_plane - at.plane);
    visit(ci, at.y[rest], at.x[rest]);
  }
}

// dst[0:n] += src[0:n], n a multiple of 8.
inline void add_row(float* dst, const float* src, int64_t n) {
  for (int64_t k = 0; k < n; k += 8) store8(dst + k, load8(dst + k) + load8(src + k));
}

// One channel's ones of one sample, row by row: the columns of the ones (rows in increasing y, each
// in increasing x), where each row begins, and before[y * (W + 1) + x]: how many ones of row y lie
// left of column x.
struct ChannelOnes {
  std::vector<int32_t> column, row_begin, before;
  ChannelOnes(int64_t H, int64_t W) : row_begin(H + 1), before(H * (W + 1)) { column.reserve(H * W); }
  void fill(const int32_t* ix, int64_t first, int64_t last, int64_t plane_start, const PlanePositions& at, int64_t H,
            int64_t W) {
    column.clear();
    std::fill(row_begin.begin(), row_begin.end(), 0);
    for (int64_t j = first; j < last; ++j) {
      const int64_t rest = ix[j] - plane_start;
      column.push_back(at.x[rest]);
      ++row_begin[at.y[rest] + 1];
    }
    for (int64_t y = 0; y < H; ++y) {
      row_begin[y + 1] += row_begin[y];
      int32_t* b = before.data() + y * (W + 1);
      int32_t count = 0;
      for (int64_t x = 0, j = row_begin[y]; x <= W; ++x) {
        while (j < row_begin[y + 1] && column[j] < x) ++j, ++count;
        b[x] = count;
      }
    }
  }
};

// Stride 1: grad W[ci, ki, kj] (vectors n0 .. n0 + V of a row of Cp) += the rows of the sample's
// transposed grad_out [OH * OW, Cp] at the output positions (y + pad - ki * dil, x + pad - kj * dil)
// of channel ci's ones (y, x) whose positions are in range, summed in registers in the ones' order
// (the order the scatter adds them in) and written once per tap.
template <int V>
void gather_taps(const ChannelOnes& ones, const float* rows, float* taps_row, int64_t H, int64_t W, int64_t OH,
                 int64_t OW, int64_t KH, int64_t KW, int64_t pad_y, int64_t pad_x, int64_t dil_y, int64_t dil_x,
                 int64_t Cp, int64_t n0) {
  for (int64_t ki = 0; ki < KH; ++ki) {
    const int64_t shift_y = pad_y - ki * dil_y, y0 = std::clamp<int64_t>(-shift_y, 0, H),
                  y1 = std::clamp<int64_t>(OH - shift_y, y0, H);
    for (int64_t kj = 0; kj < KW; ++kj) {
      const int64_t shift_x = pad_x - kj * dil_x, x0 = std::clamp<int64_t>(-shift_x, 0, W),
                    x1 = std::clamp<int64_t>(OW - shift_x, x0, W);
      float* sum = taps_row + (ki * KW + kj) * Cp + n0;
      v8 acc[V];
      for (int v = 0; v < V; ++v) acc[v] = load8(sum + 8 * v);
      for (int64_t y = y0; y < y1; ++y) {
        const int32_t* b = ones.before.data() + y * (W + 1);
        const int64_t origin = ((y + shift_y) * OW + shift_x) * Cp + n0;  // + x * Cp: output (y + shift_y, x + shift_x)
        for (int64_t j = ones.row_begin[y] + b[x0], end = ones.row_begin[y] + b[x1]; j < end; ++j) {
          const float* g = rows + (origin + static_cast<int64_t>(ones.column[j]) * Cp);
          for (int v = 0; v < V; ++v) acc[v] += load8(g + 8 * v);
        }
      }
      for (int v = 0; v < V; ++v) store8(sum + 8 * v, acc[v]);
    }
  }
}

using GatherTaps = void (*)(const ChannelOnes&, const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
constexpr GatherTaps GATHER_TAPS[9] = {nullptr,        gather_taps<1>, gather_taps<2>, gather_taps<3>, gather_taps<4>,
                                       gather_taps<5>, gather_taps<6>, gather_taps<7>, gather_taps<8>};

// (indptr, indices) of x [B, Cin * H * W] (the ones of each sample), grad_out [B, Cout, OH, OW]
// -> {grad W in [Cin, KH, KW, Cout] order, grad bias [Cout]}:
//   grad W[ci, ki, kj] = sum over the ones (b, ci, py, px) whose window position
//   (oy, ox) = ((py + pad - ki * dil) / stride, likewise) is whole and in range, of grad_out[b, :, oy, ox];
//   grad bias = grad_out summed over samples and positions (read anyway).
// Each sample's grad_out is transposed to [OH * OW, Cp] in a local buffer (Cp: Cout rounded up to
// whole vectors, the extra lanes zero), so that every term is a few vector adds. Samples are split
// into a fixed number of chunks, each summing into its own rows, added in chunk order: the result
// depends neither on thread timing nor on the thread count.
std::vector<at::Tensor> event_conv2d_grad_weight(const at::Tensor& indptr, const at::Tensor& indices,
                                                 const at::Tensor& grad_out, int64_t in_channels, at::IntArrayRef in_size,
                                                 at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation) {
  check_index(indptr, indices);
  check_float(grad_out, "grad_out", 4);
  TORCH_CHECK(in_size.size() == 2 && kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              "traceTorch event kernel: in_size, kernel, stride, padding and dilation need two values each");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 && kernel[0] > 0 && kernel[1] > 0,
              "traceTorch event kernel: bad convolution geometry");
  const int64_t B = indptr.size(0) - 1, Cout = grad_out.size(1), OH = grad_out.size(2), OW = grad_out.size(3);
  const int64_t H = in_size[0], W = in_size[1], KH = kernel[0], KW = kernel[1];
  TORCH_CHECK(grad_out.size(0) == B, "traceTorch event kernel: grad_out has ", grad_out.size(0), " samples, expected ", B);
  const AxisTaps ty(H, OH, KH, stride[0], padding[0], dilation[0]), tx(W, OW, KW, stride[1], padding[1], dilation[1]);
  const PlanePositions at(H, W);
  const int64_t taps = in_channels * KH * KW, outs = OH * OW;
  const int64_t V = (Cout + 7) / 8, Cp = 8 * V;  // vectors per row, padded row length
  const int64_t* ip = indptr.const_data_ptr<int64_t>();
  const int32_t* ix = indices.const_data_ptr<int32_t>();
  const float* go = grad_out.const_data_ptr<float>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(B, CONV_CHUNKS));
  const int64_t per_chunk = (B + chunks - 1) / chunks;
  const int64_t span = taps * Cp + Cp;  // a chunk's weight rows, then its bias row
  std::vector<float> acc(chunks * span, 0.0f);
  const bool unit_stride = stride[0] == 1 && stride[1] == 1;  // the ones gather their rows (else: scatter)
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> rows(outs * Cp, 0.0f);
    ChannelOnes ones(H, W);
    for (int64_t c = c0; c < c1; ++c) {
      float* a = acc.data() + c * span;
      float* bias = a + taps * Cp;
      for (int64_t b = c * per_chunk; b < std::min(B, (c + 1) * per_chunk); ++b) {
        const float* gb = go + b * Cout * outs;
        for (int64_t o = 0; o < Cout; ++o) {
          float total = 0.0f;
          for (int64_t q = 0; q < outs; ++q) {
            const float g = gb[o * outs + q];
            rows[q * Cp + o] = g;
            total += g;
          }
          bias[o] += total;
        }
        auto scatter = [&](int64_t ci, int32_t py, int32_t px) {
          for (int32_t u = ty.start[py]; u < ty.start[py + 1]; ++u) {
            float* wrow = a + (ci * KH + ty.tap[u]) * KW * Cp;
            const float* grow = rows.data() + ty.out[u] * OW * Cp;
            for (int32_t v = tx.start[px]; v < tx.start[px + 1]; ++v)
              add_row(wrow + tx.tap[v] * Cp, grow + tx.out[v] * Cp, Cp);
          }
        };
        if (!unit_stride) {
          for_each_one(ix, ip[b], ip[b + 1], at, scatter);
          continue;
        }
        for (int64_t ci = 0, j = ip[b]; ci < in_channels && j < ip[b + 1]; ++ci) {
          const int64_t end = std::lower_bound(ix + j, ix + ip[b + 1], static_cast<int32_t>((ci + 1) * H * W)) - ix;
          if (end - j < 2 * H) {  // under two ones a row: scattered, each to its taps (the same sums either way)
            for (; j < end; ++j) scatter(ci, at.y[ix[j] - ci * H * W], at.x[ix[j] - ci * H * W]);
            continue;
          }
          ones.fill(ix, j, end, ci * H * W, at, H, W);
          for (int64_t n0 = 0; n0 < Cp; n0 += 64)
            GATHER_TAPS[std::min<int64_t>(8, (Cp - n0) / 8)](ones, rows.data(), a + ci * KH * KW * Cp, H, W, OH, OW, KH,
                                                             KW, padding[0], padding[1], dilation[0], dilation[1], Cp,
                                                             n0);
          j = end;
        }
      }
    }
  });
  auto gw = at::empty({taps, Cout}, grad_out.options());
  auto gbias = at::empty({Cout}, grad_out.options());
  float* pw = gw.mutable_data_ptr<float>();
  float* pb = gbias.mutable_data_ptr<float>();
  for (int64_t k = 0; k <= taps; ++k)
    for (int64_t o = 0; o < Cout; ++o) {
      float total = acc[k * Cp + o];
      for (int64_t c = 1; c < chunks; ++c) total += acc[c * span + k * Cp + o];
      (k < taps ? pw[k * Cout + o] : pb[o]) = total;
    }
  return {gw, gbias};
}

// Conv2d forward on a 0/1 input from the index of its ones (per sample, increasing in
// (channel, y, x)): out [B, Cout, OH, OW] = bias + for every output position, the sum of the
// weights W[:, c, ky, kx] whose input x[b, c, y, x] is 1. Each sample lists, in one pass over its
// ones, the weight rows each output position's ones reach (through the AxisTaps tables), sums each
// list in registers into a tile (channels innermost), then transposes the tile into out. Every
// output is summed in the same order whatever the thread count.
at::Tensor event_conv2d_forward(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& weight,
                                const at::Tensor& bias, at::IntArrayRef in_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_index(indptr, indices);
  check_float(weight, "weight", 4);
  TORCH_CHECK(in_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "traceTorch event kernel: in_size, stride, padding and dilation need two values each");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 && padding[0] >= 0 &&
                  padding[1] >= 0,
              "traceTorch event kernel: bad convolution geometry");
  const int64_t B = indptr.size(0) - 1, Cout = weight.size(0), Cin = weight.size(1), KH = weight.size(2),
                KW = weight.size(3), H = in_size[0], W = in_size[1];
  const int64_t OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) / stride[0] + 1;
  const int64_t OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(OH > 0 && OW > 0, "traceTorch event kernel: the input is smaller than the kernel");
  const bool has_bias = bias.numel() > 0;
  if (has_bias) check_float(bias, "bias", 1);
  TORCH_CHECK(!has_bias || bias.size(0) == Cout, "traceTorch event kernel: bias has ", bias.size(0), " values for ",
              Cout, " outputs");
  const int64_t outs = OH * OW, taps = Cin * KH * KW;
  const int64_t Cp = (Cout + 7) / 8 * 8;
  const AxisTaps ty(H, OH, KH, stride[0], padding[0], dilation[0]), tx(W, OW, KW, stride[1], padding[1], dilation[1]);
  const PlanePositions at(H, W);
  // the weights as rows by (channel, ky, kx), output channels innermost, padded with zeros to Cp
  std::vector<float> table(taps * Cp, 0.0f), bias_row(Cp, 0.0f);
  const float* pw = weight.const_data_ptr<float>();
  for (int64_t o = 0; o < Cout; ++o)
    for (int64_t k = 0; k < taps; ++k) table[k * Cp + o] = pw[o * taps + k];
  if (has_bias) std::copy(bias.const_data_ptr<float>(), bias.const_data_ptr<float>() + Cout, bias_row.begin());
  const int64_t* ip = indptr.const_data_ptr<int64_t>();
  const int32_t* ixs = indices.const_data_ptr<int32_t>();
  auto out = tracetorch_pool::pooled_empty({B, Cout, OH, OW}, weight.options());
  float* po = out.mutable_data_ptr<float>();
  // output rows per band: each band's positions list their weight rows in slots of `taps` (a row
  // reaches a position at most once), at most SLOT_LIMIT slots per thread; one band but for big layers
  const int64_t band = std::clamp<int64_t>(SLOT_LIMIT / (OW * taps), 1, OH);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int32_t> count(band * OW), slots(band * OW * taps);
    std::vector<float> tile(outs * Cp);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t oy0 = 0; oy0 < OH; oy0 += band) {
        const int64_t oy1 = std::min(OH, oy0 + band);
        std::fill(count.begin(), count.end(), 0);
        for_each_one(ixs, ip[b], ip[b + 1], at, [&](int64_t ci, int32_t py, int32_t px) {
          for (int32_t u = ty.start[py]; u < ty.start[py + 1]; ++u) {
            if (ty.out[u] < oy0 || ty.out[u] >= oy1) continue;
            const auto row = static_cast<int32_t>((ci * KH + ty.tap[u]) * KW);
            const auto q0 = static_cast<int32_t>((ty.out[u] - oy0) * OW);
            for (int32_t v = tx.start[px]; v < tx.start[px + 1]; ++v) {
              const int32_t q = q0 + tx.out[v];
              slots[q * taps + count[q]++] = row + tx.tap[v];
            }
          }
        });
        for (int64_t q = 0; q < (oy1 - oy0) * OW; ++q)
          for (int64_t n0 = 0; n0 < Cp; n0 += 64)
            GATHER_SLICES[std::min<int64_t>(8, (Cp - n0) / 8)](table.data(), Cp, n0, bias_row.data(),
                                                               slots.data() + q * taps, count[q],
                                                               tile.data() + (oy0 * OW + q) * Cp);
      }
      float* ob = po + b * Cout * outs;
      for (int64_t o = 0; o < Cout; ++o)
        for (int64_t q = 0; q < outs; ++q) ob[o * outs + q] = tile[q * Cp + o];
    }
  });
  return out;
}

// Direct convolutions (stride 1, dilation 1, zero padding), for layers with few input taps
// (a first layer on one channel), where a dense kernel computes fewer, better-packed products
// than the events. Each sample's planes are first copied into zero-padded rows with room for
// whole vectors past the edge (PaddedPlanes).
struct PaddedPlanes {
  int64_t rows, width;  // per plane: rows of `width` floats
  std::vector<float> data;
  PaddedPlanes(int64_t C, int64_t H, int64_t W, int64_t pad_y, int64_t pad_x, int64_t slack)
      : rows(H + 2 * pad_y), width(W + 2 * pad_x + slack), data(C * rows * width, 0.0f) {}
  void fill(const float* x, int64_t C, int64_t H, int64_t W, int64_t pad_y, int64_t pad_x) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y) std::copy(x + (c * H + y) * W, x + (c * H + y + 1) * W, row(c, y + pad_y) + pad_x);
  }
  float* row(int64_t c, int64_t y) { return data.data() + (c * rows + y) * width; }
};

// NC vectors (8 NC outputs from ox0) of output row oy of channel co: bias plus every tap times
// the input row it reaches.
template <int NC> inline void direct_row(PaddedPlanes& xp, const float* w, int64_t Cin, int64_t KH, int64_t KW,
                                         int64_t oy, int64_t ox0, float bias, float* out) {
  v8 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = v8{} + bias;
  for (int64_t ci = 0; ci < Cin; ++ci)
    for (int64_t ky = 0; ky < KH; ++ky) {
      const float* row = xp.row(ci, oy + ky) + ox0;
      const float* wk = w + (ci * KH + ky) * KW;
      for (int64_t kx = 0; kx < KW; ++kx) {
        const v8 wv = v8{} + wk[kx];
        for (int c = 0; c < NC; ++c) acc[c] += wv * load8(row + kx + 8 * c);
      }
    }
  for (int c = 0; c < NC; ++c) store8(out + 8 * c, acc[c]);
}

// direct_row for 1..4 vectors (index: the number of vectors).
using DirectRow = void (*)(PaddedPlanes&, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float, float*);
constexpr DirectRow DIRECT_ROWS[5] = {nullptr, direct_row<1>, direct_row<2>, direct_row<3>, direct_row<4>};

// x [B, Cin, H, W], weight [Cout, Cin, KH, KW], bias [Cout] or empty -> out [B, Cout, OH, OW].
at::Tensor conv2d_direct_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 at::IntArrayRef padding) {
  check_float(x, "x", 4);
  check_float(weight, "weight", 4);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0,
              "traceTorch conv kernel: padding needs two values >= 0");
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cout = weight.size(0), KH = weight.size(2), KW = weight.size(3);
  TORCH_CHECK(weight.size(1) == Cin, "traceTorch conv kernel: weight has ", weight.size(1), " input channels, x ", Cin);
  const int64_t OH = H + 2 * padding[0] - KH + 1, OW = W + 2 * padding[1] - KW + 1;
  TORCH_CHECK(OH > 0 && OW > 0, "traceTorch conv kernel: the input is smaller than the kernel");
  const bool has_bias = bias.numel() > 0;
  if (has_bias) check_float(bias, "bias", 1);
  const float* px = x.const_data_ptr<float>();
  const float* pw = weight.const_data_ptr<float>();
  const float* pb = has_bias ? bias.const_data_ptr<float>() : nullptr;
  auto out = tracetorch_pool::pooled_empty({B, Cout, OH, OW}, x.options());
  float* po = out.mutable_data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    PaddedPlanes xp(Cin, H, W, padding[0], padding[1], 32);
    std::vector<float> row((OW + 31) / 32 * 32);
    for (int64_t b = b0; b < b1; ++b) {
      xp.fill(px + b * Cin * H * W, Cin, H, W, padding[0], padding[1]);
      for (int64_t co = 0; co < Cout; ++co) {
        const float* w = pw + co * Cin * KH * KW;
        const float bv = pb ? pb[co] : 0.0f;
        for (int64_t oy = 0; oy < OH; ++oy) {
          for (int64_t ox0 = 0; ox0 < OW; ox0 += 32) {
            DIRECT_ROWS[std::min<int64_t>(4, (OW - ox0 + 7) / 8)](xp, w, Cin, KH, KW, oy, ox0, bv, row.data() + ox0);
          }
          std::copy(row.begin(), row.begin() + OW, po + ((b * Cout + co) * OH + oy) * OW);
        }
      }
    }
  });
  return out;
}

// The weight taps (ky, kx < KWT) of one (co, ci) pair for one sample: KWT dot products of the
// output gradient's rows with the shifted input rows, added to the lanes acc[8 (ky KWT + kx) : ...].
template <int KWT> void direct_taps(PaddedPlanes& gp, PaddedPlanes& xp, int64_t co, int64_t ci, int64_t KH,
                                    int64_t OH, int64_t chunks, float* acc) {
  for (int64_t ky = 0; ky < KH; ++ky) {
    v8 sum[KWT];
    for (int k = 0; k < KWT; ++k) sum[k] = v8{};
    for (int64_t oy = 0; oy < OH; ++oy) {
      const float* g = gp.row(co, oy);
      const float* xr = xp.row(ci, oy + ky);
      for (int64_t c = 0; c < chunks; ++c) {
        const v8 gv = load8(g + 8 * c);
        for (int k = 0; k < KWT; ++k) sum[k] += gv * load8(xr + k + 8 * c);
      }
    }
    for (int k = 0; k < KWT; ++k) {
      float* lane = acc + 8 * (ky * KWT + k);
      store8(lane, load8(lane) + sum[k]);
    }
  }
}

using DirectTaps = void (*)(PaddedPlanes&, PaddedPlanes&, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
constexpr DirectTaps DIRECT_TAPS[9] = {nullptr,        direct_taps<1>, direct_taps<2>, direct_taps<3>, direct_taps<4>,
                                       direct_taps<5>, direct_taps<6>, direct_taps<7>, direct_taps<8>};

// x [B, Cin, H, W], grad_out [B, Cout, OH, OW] -> (grad weight [Cout, Cin, KH, KW], grad bias [Cout]):
// per sample, the dot products of the output gradient's rows (zero-padded to whole vectors) with
// the input's shifted rows. Samples go in CONV_CHUNKS fixed chunks added in order, and each dot
// product keeps eight lanes until the end: the result does not depend on the thread count.
std::vector<at::Tensor> conv2d_direct_grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                                                  at::IntArrayRef kernel, at::IntArrayRef padding) {
  check_float(x, "x", 4);
  check_float(grad_out, "grad_out", 4);
  TORCH_CHECK(kernel.size() == 2 && padding.size() == 2 && kernel[0] > 0 && kernel[1] > 0 && kernel[1] <= 8 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "traceTorch conv kernel: two kernel sizes (the width at most 8) and two paddings >= 0");
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), KH = kernel[0], KW = kernel[1];
  const int64_t Cout = grad_out.size(1), OH = grad_out.size(2), OW = grad_out.size(3);
  TORCH_CHECK(grad_out.size(0) == B && OH == H + 2 * padding[0] - KH + 1 && OW == W + 2 * padding[1] - KW + 1,
              "traceTorch conv kernel: grad_out ", grad_out.sizes(), " does not match x ", x.sizes());
  const int64_t chunks_per_row = (OW + 7) / 8, taps = Cin * KH * KW;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(B, CONV_CHUNKS)), per_chunk = (B + chunks - 1) / chunks;
  const int64_t span = Cout * taps * 8 + Cout * 8;  // a chunk's lanes: weights, then biases
  std::vector<float> acc(chunks * span, 0.0f);
  const float* px = x.const_data_ptr<float>();
  const float* pg = grad_out.const_data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    PaddedPlanes xp(Cin, H, W, padding[0], padding[1], 16), gp(Cout, OH, chunks_per_row * 8, 0, 0, 0);
    for (int64_t c = c0; c < c1; ++c) {
      float* lanes = acc.data() + c * span;
      for (int64_t b = c * per_chunk; b < std::min(B, (c + 1) * per_chunk); ++b) {
        xp.fill(px + b * Cin * H * W, Cin, H, W, padding[0], padding[1]);
        for (int64_t co = 0; co < Cout; ++co)
          for (int64_t oy = 0; oy < OH; ++oy) {
            const float* g = pg + ((b * Cout + co) * OH + oy) * OW;
            std::copy(g, g + OW, gp.row(co, oy));
          }
        for (int64_t co = 0; co < Cout; ++co) {
          for (int64_t ci = 0; ci < Cin; ++ci)
            DIRECT_TAPS[KW](gp, xp, co, ci, KH, OH, chunks_per_row, lanes + 8 * (co * Cin + ci) * KH * KW);
          v8 total{};
          for (int64_t oy = 0; oy < OH; ++oy)
            for (int64_t k = 0; k < chunks_per_row; ++k) total += load8(gp.row(co, oy) + 8 * k);
          float* lane = lanes + 8 * (Cout * taps + co);
          store8(lane, load8(lane) + total);
        }
      }
    }
  });
  auto gw = at::empty({Cout, Cin, KH, KW}, x.options());
  auto gb = at::empty({Cout}, x.options());
  float* pw = gw.mutable_data_ptr<float>();
  float* pbias = gb.mutable_data_ptr<float>();
  for (int64_t k = 0; k < Cout * taps + Cout; ++k) {
    v8 total = load8(acc.data() + k * 8);
    for (int64_t c = 1; c < chunks; ++c) total += load8(acc.data() + c * span + k * 8);
    float sum = 0.0f;
    for (int l = 0; l < 8; ++l) sum += total[l];
    (k < Cout * taps ? pw[k] : pbias[k - Cout * taps]) = sum;
  }
  return {gw, gb};
}

// Max pooling over the planes of x [P, H, W] (no padding, dilation 1): out [P, OH, OW] and the
// position of each maximum within its window (uint8, row-major in the window); see pool_planes.h.
std::vector<at::Tensor> max_pool2d_planes(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride) {
  check_float(x, "x", 3);
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && kernel[0] > 0 && kernel[1] > 0 && stride[0] > 0 &&
                  stride[1] > 0 && kernel[0] * kernel[1] <= 256,
              "traceTorch pooling kernel: two positive kernel sizes (at most 256 taps) and strides");
  const int64_t P = x.size(0), H = x.size(1), W = x.size(2);
  TORCH_CHECK(H >= kernel[0] && W >= kernel[1], "traceTorch pooling kernel: input smaller than the window");
  const Window g(H, W, kernel[0], kernel[1], stride[0], stride[1]);
  auto out = tracetorch_pool::pooled_empty({P, g.OH, g.OW}, x.options());
  auto arg = tracetorch_pool::pooled_empty({P, g.OH, g.OW}, x.options().dtype(at::kByte));
  const float* px = x.const_data_ptr<float>();
  float* po = out.mutable_data_ptr<float>();
  uint8_t* pa = arg.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, P, 16, [&](int64_t p0, int64_t p1) {
    std::vector<float> best(g.OW);
    std::vector<int32_t> where(g.OW);
    for (int64_t p = p0; p < p1; ++p)
      pool_plane(g, px + p * g.plane(), po + p * g.pooled(), pa + p * g.pooled(), best.data(), where.data());
  });
  return {out, arg};
}

// The gradient of max_pool2d_planes: grad_out [P, OH, OW] added into zeros [P, H, W] at each maximum.
at::Tensor max_pool2d_planes_backward(const at::Tensor& grad_out, const at::Tensor& arg, int64_t height, int64_t width,
                                      at::IntArrayRef kernel, at::IntArrayRef stride) {
  check_float(grad_out, "grad_out", 3);
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && kernel[0] > 0 && kernel[1] > 0 && kernel[0] * kernel[1] <= 256,
              "traceTorch pooling kernel: two positive kernel sizes (at most 256 taps) and strides");
  TORCH_CHECK(arg.scalar_type() == at::kByte && arg.is_contiguous() && arg.sizes() == grad_out.sizes(),
              "traceTorch pooling kernel: the argmax must be a contiguous uint8 tensor shaped like grad_out");
  const Window g(height, width, kernel[0], kernel[1], stride[0], stride[1]);
  const int64_t P = grad_out.size(0);
  TORCH_CHECK(grad_out.size(1) == g.OH && grad_out.size(2) == g.OW,
              "traceTorch pooling kernel: grad_out does not match the input size, kernel and stride");
  auto gx = tracetorch_pool::pooled_empty({P, height, width}, grad_out.options());
  const float* pg = grad_out.const_data_ptr<float>();
  const uint8_t* pa = arg.const_data_ptr<uint8_t>();
  float* px = gx.mutable_data_ptr<float>();
  at::parallel_for(0, P, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) pool_plane_backward(g, pg + p * g.pooled(), pa + p * g.pooled(), px + p * g.plane());
  });
  return gx;
}

// p [M] (probabilities), steps T, seed -> spikes [T, M] in {0, 1}.
at::Tensor bernoulli_spikes(const at::Tensor& p, int64_t steps, int64_t seed) {
  check_float(p, "p", 1);
  TORCH_CHECK(steps >= 0, "traceTorch event kernel: steps must be >= 0");
  const int64_t M = p.size(0);
  auto out = tracetorch_pool::pooled_empty({steps, M}, p.options());
  const float* pp = p.const_data_ptr<float>();
  float* po = out.mutable_data_ptr<float>();
  const auto key = static_cast<uint64_t>(seed);
  const auto k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  constexpr float scale = 1.0f / 16777216.0f;
  constexpr int64_t CHUNK = 4096;
  const int64_t chunks = (M + CHUNK - 1) / CHUNK;
  at::parallel_for(0, steps * chunks, 4, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t t = w / chunks, m0 = (w % chunks) * CHUNK, m1 = std::min(M, m0 + CHUNK);
      float* row = po + t * M;
      for (int64_t m = m0; m < m1; ++m) {
        const auto c = static_cast<uint64_t>(t * M + m);
        const uint32_t h = mix32(mix32(static_cast<uint32_t>(c) ^ k0) ^ static_cast<uint32_t>(c >> 32) ^ k1);
        row[m] = static_cast<float>(h >> 8) * scale < pp[m] ? 1.0f : 0.0f;
      }
    }
  });
  return out;
}

// Bytes of freed output buffers the pool (tensor_pool.h) holds for reuse.
int64_t pool_cached_bytes() {
  tracetorch_pool::Pool& p = tracetorch_pool::pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return static_cast<int64_t>(p.cached);
}

// Frees the cached buffers; returns the bytes given back.
int64_t pool_release() { return static_cast<int64_t>(tracetorch_pool::release_all()); }

// Sets the most MiB the pool may hold (0: no pool).
void pool_set_limit(int64_t mib) {
  TORCH_CHECK(mib >= 0, "pool_set_limit: the limit must be >= 0 MiB, got ", mib);
  tracetorch_pool::set_limit(static_cast<size_t>(mib) << 20);
}

TORCH_LIBRARY_FRAGMENT(tracetorch_kernels, m) {
  m.def("pool_cached_bytes() -> int");
  m.def("pool_release() -> int");
  m.def("pool_set_limit(int mib) -> ()");
  m.def("binary_rows(Tensor x, float max_density) -> Tensor[]");
  m.def("event_linear_forward(Tensor indptr, Tensor indices, Tensor weight, Tensor bias) -> Tensor");
  m.def("event_linear_grad_weight(Tensor indptr, Tensor indices, Tensor grad_out, int in_features) -> Tensor");
  m.def("bernoulli_spikes(Tensor p, int steps, int seed) -> Tensor");
  m.def("event_conv2d_forward(Tensor indptr, Tensor indices, Tensor weight, Tensor bias, int[] in_size, int[] stride, "
        "int[] padding, int[] dilation) -> Tensor");
  m.def("conv2d_direct_forward(Tensor x, Tensor weight, Tensor bias, int[] padding) -> Tensor");
  m.def("conv2d_direct_grad_weight(Tensor x, Tensor grad_out, int[] kernel, int[] padding) -> Tensor[]");
  m.def("event_conv2d_grad_weight(Tensor indptr, Tensor indices, Tensor grad_out, int in_channels, int[] in_size, "
        "int[] kernel, int[] stride, int[] padding, int[] dilation) -> Tensor[]");
  m.def("max_pool2d_planes(Tensor x, int[] kernel, int[] stride) -> Tensor[]");
  m.def("max_pool2d_planes_backward(Tensor grad_out, Tensor arg, int height, int width, int[] kernel, "
        "int[] stride) -> Tensor");
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CPU, m) {
  m.impl("binary_rows", &binary_rows);
  m.impl("event_linear_forward", &event_linear_forward);
  m.impl("event_linear_grad_weight", &event_linear_grad_weight);
  m.impl("bernoulli_spikes", &bernoulli_spikes);
  m.impl("event_conv2d_forward", &event_conv2d_forward);
  m.impl("event_conv2d_grad_weight", &event_conv2d_grad_weight);
  m.impl("conv2d_direct_forward", &conv2d_direct_forward);
  m.impl("conv2d_direct_grad_weight", &conv2d_direct_grad_weight);
  m.impl("max_pool2d_planes", &max_pool2d_planes);
  m.impl("max_pool2d_planes_backward", &max_pool2d_planes_backward);
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CatchAll, m) {
  m.impl("pool_cached_bytes", &pool_cached_bytes);
  m.impl("pool_release", &pool_release);
  m.impl("pool_set_limit", &pool_set_limit);
}
