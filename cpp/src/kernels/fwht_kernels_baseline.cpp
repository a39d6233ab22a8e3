// The Walsh-Hadamard kernels for the 'baseline' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS baseline
#define SKETCHGN_VECTOR_BYTES 16
#define SKETCHGN_REGISTER_RADIX_LOG2 3
#include "kernels/fwht_kernels.inc"
