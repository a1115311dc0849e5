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

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat, "traceTorch kernel: ", name,
              " must be a contiguous float32 CPU tensor");
}

}  // namespace

const float* cptr(const at::Tensor& t) { return t.numel() > 0 ? t.const_data_ptr<float>() : nullptr; }

// x [T, M], params [NP, N], init [NS, M], uniforms [T, draws, M] or empty.
// Returns out [T, M], final states [NS, M], saved [T, S, M] (empty unless save).
std::vector<at::Tensor> neuron_forward(const at::Tensor& x, const at::Tensor& params, const at::Tensor& init,
                                       const at::Tensor& uniforms, bool dual, bool synaptic, bool recurrent,
                                       int64_t family, int64_t quant, double step, int64_t num_neurons, int64_t inner,
                                       bool save) {
  check(x, "x");
  check(params, "params");
  check(init, "init");
  const int64_t T = x.size(0), M = x.size(1);
  const int64_t S = saved_slots(dual, synaptic, recurrent);
  const bool has_u = uniforms.numel() > 0;
  if (has_u) check(uniforms, "uniforms");
  auto out = tracetorch_pool::pooled_empty(x.sizes(), x.options());
  auto fin = tracetorch_pool::pooled_empty(init.sizes(), init.options());
  auto sav = tracetorch_pool::pooled_empty({save ? T : 0, S, M}, x.options());
  Call c{};
  c.sh = Shape{T, M, num_neurons, inner, S, has_u ? uniforms.size(1) : 0};
  c.q = static_cast<int>(quant);
  c.step = step;
  c.x = cptr(x);
  c.prm = cptr(params);
  c.init = cptr(init);
  c.uni = has_u ? cptr(uniforms) : nullptr;
  c.out = out.mutable_data_ptr<float>();
  c.fin = fin.mutable_data_ptr<float>();
  c.sav = save ? sav.mutable_data_ptr<float>() : nullptr;
  dispatch(true, dual, synaptic, recurrent, family, c);
  return {out, fin, sav};
}

// grad_out is [T, M], or [1, M] when it is the same at every step (a loss on the mean over time).
// Returns grad x [T, M], per-element parameter grads [NP, M], grad of the initial states [NS, M].
std::vector<at::Tensor> neuron_backward(const at::Tensor& gout, const at::Tensor& gfin, const at::Tensor& x,
                                        const at::Tensor& params, const at::Tensor& init, const at::Tensor& uniforms,
                                        const at::Tensor& saved, bool dual, bool synaptic, bool recurrent, int64_t family,
                                        int64_t quant, double step, int64_t num_neurons, int64_t inner) {
  check(gout, "grad_out");
  check(gfin, "grad_final");
  check(params, "params");
  check(init, "init");
  check(saved, "saved");
  const int64_t T = saved.size(0), M = gout.size(1);
  TORCH_CHECK(gout.size(0) == T || gout.size(0) == 1, "traceTorch kernel: grad_out must have T or 1 rows");
  const bool has_u = uniforms.numel() > 0;
  if (x.numel() > 0) check(x, "x");
  if (has_u) check(uniforms, "uniforms");
  auto gx = tracetorch_pool::pooled_empty({T, M}, gout.options());
  auto gprm = tracetorch_pool::pooled_empty({NP, M}, gout.options());
  auto ginit = tracetorch_pool::pooled_empty(init.sizes(), init.options());
  Call c{};
  c.sh = Shape{T, M, num_neurons, inner, saved_slots(dual, synaptic, recurrent), has_u ? uniforms.size(1) : 0,
               gout.size(0) == T ? M : 0};
  c.q = static_cast<int>(quant);
  c.step = step;
  c.gout = cptr(gout);
  c.gfin = cptr(gfin);
  c.x = cptr(x);
  c.prm = cptr(params);
  c.init = cptr(init);
  c.uni = has_u ? cptr(uniforms) : nullptr;
  c.sav_in = cptr(saved);
  c.gx = gx.mutable_data_ptr<float>();
  c.gprm = gprm.mutable_data_ptr<float>();
  c.ginit = ginit.mutable_data_ptr<float>();
  dispatch(false, dual, synaptic, recurrent, family, c);
  return {gx, gprm, ginit};
}

TORCH_LIBRARY(tracetorch_kernels, m) {
  m.def("neuron_forward(Tensor x, Tensor params, Tensor init, Tensor uniforms, bool dual, bool synaptic, "
        "bool recurrent, int family, int quant, float step, int num_neurons, int inner, bool save) -> Tensor[]");
  m.def("neuron_backward(Tensor grad_out, Tensor grad_final, Tensor x, Tensor params, Tensor init, Tensor uniforms, "
        "Tensor saved, bool dual, bool synaptic, bool recurrent, int family, int quant, float step, int num_neurons, "
        "int inner) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tracetorch_kernels, CPU, m) {
  m.impl("neuron_forward", &neuron_forward);
  m.impl("neuron_backward", &neuron_backward);
}
