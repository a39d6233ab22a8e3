// The triangular-solve kernels for the 'baseline' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS baseline
#include "kernels/triangular_kernels.inc"
