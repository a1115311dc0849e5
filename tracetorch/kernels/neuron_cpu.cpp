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

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat, "traceTorch kernel: ", name,
              " must be a contiguous float32 CPU tensor");
}

}  // namespace

const float* cptr(const at::Tensor& t) { return t.numel() > 0 ? t.const_data_ptr<float>() : nullptr; }

// x [T, M], params [NP, N], init [NS, M] or empty (zeros), uniforms [T, draws, M] or empty.
// Returns out [T, M], final states [NS, M] (the rows of unused slots undefined), saved [T, S, M]
// (empty unless save).
std::vector<at::Tensor> neuron_forward(const at::Tensor& x, const at::Tensor& params, const at::Tensor& init,
                                       const at::Tensor& uniforms, bool dual, bool synaptic, bool recurrent,
                                       int64_t family, int64_t quant, double step, int64_t num_neurons, int64_t inner,
                                       bool save) {
  check(x, "x");
  check(params, "params");
  const int64_t T = x.size(0), M = x.size(1);
  const bool has_init = init.numel() > 0;
  if (has_init) check(init, "init");
  check_layout(M, num_neurons, inner);
  const int64_t S = saved_slots(dual, synaptic, recurrent);
  const bool has_u = uniforms.numel() > 0;
  if (has_u) check(uniforms, "uniforms");
  auto out = tracetorch_pool::pooled_empty(x.sizes(), x.options());
  auto fin = tracetorch_pool::pooled_empty({NS, M}, x.options());
  auto sav = tracetorch_pool::pooled_empty({save ? T : 0, S, M}, x.options());
  Call c{};
  c.sh = Shape{T, M, num_neurons, inner, S, has_u ? uniforms.size(1) : 0};
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
  return {out, fin, sav};
}

// grad_out is [T, M], or [1, M] when it is the same at every step (a loss on the mean over time);
// grad_final and init are [NS, M], or empty for zeros. Returns grad x [T, M], the parameter
// grads [NP, N] (summed over the batch; zeros unless param_grad), and the grad of the initial
// states [NS, M] when init_grad (else empty; the rows of unused slots undefined).
std::vector<at::Tensor> neuron_backward(const at::Tensor& gout, const at::Tensor& gfin, const at::Tensor& x,
                                        const at::Tensor& params, const at::Tensor& init, const at::Tensor& uniforms,
                                        const at::Tensor& saved, bool dual, bool synaptic, bool recurrent, int64_t family,
                                        int64_t quant, double step, int64_t num_neurons, int64_t inner, bool init_grad,
                                        bool param_grad) {
  check(gout, "grad_out");
  check(params, "params");
  check(saved, "saved");
  const int64_t T = saved.size(0), M = gout.size(1);
  TORCH_CHECK(gout.size(0) == T || gout.size(0) == 1, "traceTorch kernel: grad_out must have T or 1 rows");
  check_layout(M, num_neurons, inner);
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
               gout.size(0) == T ? M : 0};
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
        "bool recurrent, int family, int quant, float step, int num_neurons, int inner, bool save) -> Tensor[]");
  m.def("neuron_backward(Tensor grad_out, Tensor grad_final, Tensor x, Tensor params, Tensor init, Tensor uniforms, "
        "Tensor saved, bool dual, bool synaptic, bool recurrent, int family, int quant, float step, int num_neurons, "
        "int inner, bool init_grad, bool param_grad) -> Tensor[]");
  m.def("neuron_slots(bool dual, bool synaptic, bool recurrent, int family) -> int[]");
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CPU, m) {
  m.impl("neuron_forward", &neuron_forward);
  m.impl("neuron_backward", &neuron_backward);
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CatchAll, m) { m.impl("neuron_slots", &neuron_slots); }
