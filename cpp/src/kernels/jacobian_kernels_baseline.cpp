// The ReLU-Jacobian kernels for the 'baseline' path: the shared body, compiled with this file's flags.
#define SKETCHGN_KERNEL_NS baseline
#define SKETCHGN_ISA_LEVEL 0
#include "kernels/jacobian_kernels.inc"
