// The triangular-solve kernels for the 'avx512' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx512
#include "kernels/triangular_kernels.inc"
