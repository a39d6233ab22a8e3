// The Walsh-Hadamard kernels for the 'avx512' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS avx512
#define SKETCHGN_VECTOR_BYTES 64
#define SKETCHGN_REGISTER_RADIX_LOG2 4
#include "kernels/fwht_kernels.inc"
