// The triangular-solve kernels for the 'avx2' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx2
#include "kernels/triangular_kernels.inc"
