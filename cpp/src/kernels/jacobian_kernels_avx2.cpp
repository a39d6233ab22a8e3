// The ReLU-Jacobian kernels for the 'avx2' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx2
#define SKETCHGN_ISA_LEVEL 1
#include "kernels/jacobian_kernels.inc"
