// A cache of large CPU buffers for the kernels' outputs (traceTorch).
//
// A fresh tensor of 100 MB is a fresh mmap: the kernel zeroes every page on its first touch,
// which took longer than the arithmetic of a neuron sequence (clone of 105 MB: 33 ms, copy into
// an existing tensor: 5 ms, on 2 cores). Smaller outputs pay the same way: glibc hands a freed
// 1 MB buffer back to the system, and the next call faults its pages in again (a neuron forward
// on [20, 12800] took 1.1 ms saving its traces against 0.19 ms without). pooled_empty keeps the
// buffers of freed outputs (>= 64 KiB; sizes rounded up to a power of two below 2 MiB, to a
// multiple of 2 MiB above) and hands them out again to a request of the same rounded size, like
// PyTorch's CUDA caching allocator; buffers of 2 MiB and more are 2 MiB aligned and advised as
// transparent huge pages. The pool holds at most `limit` bytes, which cpu.py sets
// from TRACETORCH_CPU_POOL_MB as it loads the library (0, no pool, until then); beyond that,
// freed buffers go back to the system.

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace tracetorch_pool {

constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kSmallest = size_t{64} << 10;

// The size class of a request of `want` bytes (>= kSmallest).
inline size_t rounded_size(size_t want) {
  if (want >= kHuge) return (want + kHuge - 1) / kHuge * kHuge;
  size_t bytes = kSmallest;
  while (bytes < want) bytes *= 2;
  return bytes;
}

struct Pool {
  std::mutex mu;
  std::unordered_multimap<size_t, void*> free_blocks;
  size_t cached = 0;
  size_t limit = 0;
};

inline Pool& pool() {
  static Pool* p = [] {
    return new Pool();  // never destroyed: tensors may be freed during interpreter shutdown
  }();
  return *p;
}

inline void release(void* ptr, size_t bytes) {
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.cached + bytes <= p.limit) {
      p.free_blocks.emplace(bytes, ptr);
      p.cached += bytes;
      return;
    }
  }
  std::free(ptr);
}

// Frees every cached buffer; returns how many bytes that gave back.
inline size_t release_all() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  const size_t bytes = p.cached;
  for (auto& block : p.free_blocks) std::free(block.second);
  p.free_blocks.clear();
  p.cached = 0;
  return bytes;
}

// Sets the most bytes the pool may hold; cached buffers beyond it go back to the system.
inline void set_limit(size_t bytes) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.limit = bytes;
  for (auto it = p.free_blocks.begin(); p.cached > p.limit && it != p.free_blocks.end();) {
    std::free(it->second);
    p.cached -= it->first;
    it = p.free_blocks.erase(it);
  }
}

// at::empty(sizes, options) for CPU tensors, served from the pool when large.
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const size_t want = static_cast<size_t>(numel) * options.dtype().itemsize();
  Pool& p = pool();
  if (want < kSmallest || p.limit == 0) return at::empty(sizes, options);
  const size_t bytes = rounded_size(want);
  void* ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.free_blocks.find(bytes);
    if (it != p.free_blocks.end()) {
      ptr = it->second;
      p.free_blocks.erase(it);
      p.cached -= bytes;
    }
  }
  if (ptr == nullptr) {
    const bool huge = bytes >= kHuge;
    ptr = std::aligned_alloc(huge ? kHuge : 64, bytes);
    TORCH_CHECK(ptr != nullptr, "traceTorch kernel: out of memory allocating ", bytes, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(ptr, bytes, MADV_HUGEPAGE);
#endif
  }
  return at::from_blob(ptr, sizes, [ptr, bytes](void*) { release(ptr, bytes); }, options);
}

}  // namespace tracetorch_pool
