// The fused neuron ops for the CPU (traceTorch): neuron_forward / neuron_backward under
// torch.ops.tracetorch_kernels. The kernels are templates in neuron_kernels.h, compiled in
// the four neuron_{forward,backward}_{single,dual}.cpp parts.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "neuron_kernels.h"
#include "tensor_pool.h"

#include <vector>

namespace {

using tracetorch_neuron::Call;
using tracetorch_neuron::NP;
using tracetorch_neuron::NS;
using tracetorch_neuron::saved_slots;
using tracetorch_neuron::Shape;

void dispatch(bool forward, bool d, bool sy, bool r, int64_t f, const Call& c) {
  const int fam = static_cast<int>(f);
  if (forward) {
    return d ? tracetorch_neuron::run_part<true, true>(sy, r, fam, c)
             : tracetorch_neuron::run_part<true, false>(sy, r, fam, c);
  }
  return d ? tracetorch_neuron::run_part<false, true>(sy, r, fam, c)
           : tracetorch_neuron::run_part<false, false>(sy, r, fam, c);
}

void check_layout(int64_t M, int64_t num_neurons, int64_t inner) {
  TORCH_CHECK(num_neurons > 0 && inner > 0 && M % (num_neurons * inner) == 0, "traceTorch kernel: ", M,
              " elements per step do not hold ", num_neurons, " neurons times ", inner, " inner elements");
}

// pool: [] (none), or [H, W, kernel h, kernel w, stride h, stride w] of a max pooling over the last two
// dimensions of each step (planes of H * W elements, at most one block).
tracetorch_pooling::Window pool_window(at::IntArrayRef pool, int64_t M) {
  if (pool.empty()) return {};
  TORCH_CHECK(pool.size() == 6 && pool[0] > 0 && pool[1] > 0 && pool[2] > 0 && pool[3] > 0 && pool[4] > 0 &&
                  pool[5] > 0 && pool[2] * pool[3] <= 256 && pool[0] >= pool[2] && pool[1] >= pool[3],
              "traceTorch kernel: pool must be [H, W, kernel h, kernel w, stride h, stride w], the window inside the "
              "plane and at most 256 taps");
  TORCH_CHECK(pool[0] * pool[1] <= tracetorch_neuron::BLK && M % (pool[0] * pool[1]) == 0, "traceTorch kernel: ", M,
              " elements per step are not whole pooling planes of ", pool[0], " x ", pool[1], " (at most ",
              tracetorch_neuron::BLK, " elements)");
  return tracetorch_pooling::Window(pool[0], pool[1], pool[2], pool[3], pool[4], pool[5]);
}

// A block of whole planes when pooled, else the kernels' default.
int64_t block_of(const tracetorch_pooling::Window& w) {
  return w.H > 0 ? tracetorch_neuron::BLK / w.plane() * w.plane() : tracetorch_neuron::BLK;
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat, "traceTorch kernel: ", name,
              " must be a contiguous float32 CPU tensor");
}

}  // namespace

const float* cptr(const at::Tensor& t) { return t.numel() > 0 ? t.const_data_ptr<float>() : nullptr; }

// x [T, M], params [NP, N], init [NS, M] or empty (zeros), uniforms [T, draws, M] or empty, pool
// (pool_window) empty or a max pooling of the output. Returns out [T, M] (pooled: [T, P]), final
// states [NS, M] (the rows of unused slots undefined), saved [T, S, M] (empty unless save) and the
// pooling's argmax [T, P] (uint8; empty unless pooled).
std::vector<at::Tensor> neuron_forward(const at::Tensor& x, const at::Tensor& params, const at::Tensor& init,
                                       const at::Tensor& uniforms, bool dual, bool synaptic, bool recurrent,
                                       int64_t family, int64_t quant, double step, int64_t num_neurons, int64_t inner,
                                       bool save, at::IntArrayRef pool) {
  check(x, "x");
  check(params, "params");
  const int64_t T = x.size(0), M = x.size(1);
  const bool has_init = init.numel() > 0;
  if (has_init) check(init, "init");
  check_layout(M, num_neurons, inner);
  const int64_t S = saved_slots(dual, synaptic, recurrent);
  const bool has_u = uniforms.numel() > 0;
  if (has_u) check(uniforms, "uniforms");
  const tracetorch_pooling::Window window = pool_window(pool, M);
  tracetorch_neuron::Pooled pooled;
  if (window.H > 0) pooled.win = &window;
  const int64_t P = pooled.on() ? pooled.row(M) : M;
  auto out = tracetorch_pool::pooled_empty({T, P}, x.options());
  auto arg = tracetorch_pool::pooled_empty({pooled.on() ? T : 0, P}, x.options().dtype(at::kByte));
  pooled.arg = arg.mutable_data_ptr<uint8_t>();
  auto fin = tracetorch_pool::pooled_empty({NS, M}, x.options());
  auto sav = tracetorch_pool::pooled_empty({save ? T : 0, S, M}, x.options());
  Call c{};
  c.sh = Shape{T, M, num_neurons, inner, S, has_u ? uniforms.size(1) : 0, 0, block_of(window)};
  c.pool = pooled;
  c.q = static_cast<int>(quant);
  c.step = step;
  c.x = cptr(x);
  c.prm = cptr(params);
  c.init = has_init ? cptr(init) : nullptr;
  c.uni = has_u ? cptr(uniforms) : nullptr;
  c.out = out.mutable_data_ptr<float>();
  c.fin = fin.mutable_data_ptr<float>();
  c.sav = save ? sav.mutable_data_ptr<float>() : nullptr;
  dispatch(true, dual, synaptic, recurrent, family, c);
  return {out, fin, sav, arg};
}

// grad_out is [T, M], or [1, M] when it is the same at every step (a loss on the mean over time);
// pooled (pool as in neuron_forward, pool_arg the forward's argmax [T, P]) it is [T, P] or [1, P];
// grad_final and init are [NS, M], or empty for zeros. Returns grad x [T, M], the parameter
// grads [NP, N] (summed over the batch; zeros unless param_grad), and the grad of the initial
// states [NS, M] when init_grad (else empty; the rows of unused slots undefined).
std::vector<at::Tensor> neuron_backward(const at::Tensor& gout, const at::Tensor& gfin, const at::Tensor& x,
                                        const at::Tensor& params, const at::Tensor& init, const at::Tensor& uniforms,
                                        const at::Tensor& saved, bool dual, bool synaptic, bool recurrent, int64_t family,
                                        int64_t quant, double step, int64_t num_neurons, int64_t inner, bool init_grad,
                                        bool param_grad, const at::Tensor& pool_arg, at::IntArrayRef pool) {
  check(gout, "grad_out");
  check(params, "params");
  check(saved, "saved");
  TORCH_CHECK(saved.dim() == 3, "traceTorch kernel: saved must be [T, S, M]");
  const int64_t T = saved.size(0), M = saved.size(2);
  TORCH_CHECK(gout.size(0) == T || gout.size(0) == 1, "traceTorch kernel: grad_out must have T or 1 rows");
  check_layout(M, num_neurons, inner);
  const tracetorch_pooling::Window window = pool_window(pool, M);
  tracetorch_neuron::Pooled pooled;
  if (window.H > 0) {
    pooled.win = &window;
    TORCH_CHECK(pool_arg.scalar_type() == at::kByte && pool_arg.is_contiguous() && pool_arg.dim() == 2 &&
                    pool_arg.size(0) == T && pool_arg.size(1) == pooled.row(M),
                "traceTorch kernel: pool_arg must be the forward's uint8 argmax [T, P]");
    pooled.arg_in = pool_arg.const_data_ptr<uint8_t>();
  }
  const int64_t P = pooled.on() ? pooled.row(M) : M;
  TORCH_CHECK(gout.size(1) == P, "traceTorch kernel: grad_out has ", gout.size(1), " elements per step, expected ", P);
  const bool has_u = uniforms.numel() > 0, has_init = init.numel() > 0, has_gfin = gfin.numel() > 0;
  if (has_init) check(init, "init");
  if (has_gfin) check(gfin, "grad_final");
  if (x.numel() > 0) check(x, "x");
  if (has_u) check(uniforms, "uniforms");
  auto gx = tracetorch_pool::pooled_empty({T, M}, gout.options());
  auto gprm = at::empty({NP, num_neurons}, gout.options());
  auto ginit = tracetorch_pool::pooled_empty({init_grad ? NS : 0, M}, gout.options());
  Call c{};
  c.sh = Shape{T, M, num_neurons, inner, saved_slots(dual, synaptic, recurrent), has_u ? uniforms.size(1) : 0,
               gout.size(0) == T ? P : 0, block_of(window)};
  c.pool = pooled;
  c.q = static_cast<int>(quant);
  c.step = step;
  c.gout = cptr(gout);
  c.gfin = has_gfin ? cptr(gfin) : nullptr;
  c.x = cptr(x);
  c.prm = cptr(params);
  c.init = has_init ? cptr(init) : nullptr;
  c.uni = has_u ? cptr(uniforms) : nullptr;
  c.sav_in = cptr(saved);
  c.gx = gx.mutable_data_ptr<float>();
  c.gprm = gprm.mutable_data_ptr<float>();
  c.ginit = init_grad ? ginit.mutable_data_ptr<float>() : nullptr;
  c.param_grad = param_grad;
  dispatch(false, dual, synaptic, recurrent, family, c);
  return {gx, gprm, ginit};
}

// The slots a layer kind reads, as two bit masks (bit k: slot k): {parameters, states}.
std::vector<int64_t> neuron_slots(bool dual, bool synaptic, bool recurrent, int64_t family) {
  int64_t params = 0, states = 0;
  for (int k = 0; k < NP; ++k)
    if (tracetorch_neuron::param_used(k, dual, synaptic, recurrent, static_cast<int>(family))) params |= int64_t{1} << k;
  for (int k = 0; k < tracetorch_neuron::NS; ++k)
    if (tracetorch_neuron::state_used(k, dual, synaptic, recurrent)) states |= int64_t{1} << k;
  return {params, states};
}

TORCH_LIBRARY(tracetorch_kernels, m) {
  m.def("neuron_forward(Tensor x, Tensor params, Tensor init, Tensor uniforms, bool dual, bool synaptic, "
        "bool recurrent, int family, int quant, float step, int num_neurons, int inner, bool save, int[] pool) -> Tensor[]");
  m.def("neuron_backward(Tensor grad_out, Tensor grad_final, Tensor x, Tensor params, Tensor init, Tensor uniforms, "
        "Tensor saved, bool dual, bool synaptic, bool recurrent, int family, int quant, float step, int num_neurons, "
        "int inner, bool init_grad, bool param_grad, Tensor pool_arg, int[] pool) -> Tensor[]");
  m.def("neuron_slots(bool dual, bool synaptic, bool recurrent, int family) -> int[]");
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CPU, m) {
  m.impl("neuron_forward", &neuron_forward);
  m.impl("neuron_backward", &neuron_backward);
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CatchAll, m) { m.impl("neuron_slots", &neuron_slots); }
