// Run-time choice of the SIMD instruction set.
//
// The wheel is built for any x86-64; kernels for AVX2+FMA and AVX-512 are compiled alongside the
// baseline (SSE2) ones and picked here from what the CPU and the OS support. The environment variable
// SKETCHGN_SIMD=baseline|avx2|avx512 forces a path no higher than that (read once, at first use).
#pragma once
#include <string>
#include <vector>

namespace sketchgn {

enum class SimdLevel : int { baseline = 0, avx2 = 1, avx512 = 2 };

const char* simd_name(SimdLevel level);
// Parses "baseline", "avx2" or "avx512"; throws std::invalid_argument otherwise.
SimdLevel parse_simd_level(const std::string& name);

// Highest level both compiled into this build and supported by this CPU and OS.
SimdLevel best_simd_level();
// Every level usable here, lowest first.
std::vector<SimdLevel> available_simd_levels();

// The level the kernels use now. On first call it applies SKETCHGN_SIMD (throws
// std::invalid_argument naming the variable if it is unknown or above best_simd_level()).
SimdLevel active_simd_level();
// Switches the kernels (used by tests to run every path in one process). Throws
// std::invalid_argument if the level is above best_simd_level().
void set_active_simd_level(SimdLevel level);

}  // namespace sketchgn
