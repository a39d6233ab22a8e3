// The Walsh-Hadamard kernels for the 'avx2' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx2
#define SKETCHGN_VECTOR_BYTES 32
#define SKETCHGN_REGISTER_RADIX_LOG2 3
#include "kernels/fwht_kernels.inc"
