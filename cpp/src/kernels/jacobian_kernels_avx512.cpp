// The ReLU-Jacobian kernels for the 'avx512' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx512
#define SKETCHGN_ISA_LEVEL 2
#include "kernels/jacobian_kernels.inc"
