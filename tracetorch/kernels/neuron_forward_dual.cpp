// The forward kernels of the dual layers: one of the four parts of neuron_kernels.h
// that the build compiles in parallel.

#include "neuron_kernels.h"

template void tracetorch_neuron::run_part<true, true>(bool, bool, int, const tracetorch_neuron::Call&);
