#include "sketchgn/simd.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace sketchgn {
namespace {

bool cpu_has(SimdLevel level) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // __builtin_cpu_supports also checks (via XGETBV) that the OS saves the wider registers.
  switch (level) {
    case SimdLevel::baseline: return true;
    case SimdLevel::avx2:
#if defined(SKETCHGN_HAVE_KERNELS_AVX2)
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("popcnt");
#else
      return false;
#endif
    case SimdLevel::avx512:
#if defined(SKETCHGN_HAVE_KERNELS_AVX512)
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
#else
      return false;
#endif
  }
  return false;
#else
  return level == SimdLevel::baseline;
#endif
}

std::atomic<int> g_active{-1};
std::once_flag g_env_once;

void apply_environment() {
  SimdLevel level = best_simd_level();
  if (const char* env = std::getenv("SKETCHGN_SIMD"); env != nullptr && *env != '\0') {
    SimdLevel wanted;
    try {
      wanted = parse_simd_level(env);
    } catch (const std::invalid_argument&) {
      throw std::invalid_argument(std::string("SKETCHGN_SIMD must be one of 'baseline', 'avx2', "
                                              "'avx512'; got '") + env + "'");
    }
    if (static_cast<int>(wanted) > static_cast<int>(level)) {
      throw std::invalid_argument(std::string("SKETCHGN_SIMD='") + env +
                                  "' is not supported here: this CPU and build support at most '" +
                                  simd_name(level) + "'");
    }
    level = wanted;
  }
  g_active.store(static_cast<int>(level));
}

}  // namespace

const char* simd_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::baseline: return "baseline";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "baseline") return SimdLevel::baseline;
  if (name == "avx2") return SimdLevel::avx2;
  if (name == "avx512") return SimdLevel::avx512;
  throw std::invalid_argument("unknown SIMD level '" + name +
                              "': expected 'baseline', 'avx2' or 'avx512'");
}

SimdLevel best_simd_level() {
  if (cpu_has(SimdLevel::avx512)) return SimdLevel::avx512;
  if (cpu_has(SimdLevel::avx2)) return SimdLevel::avx2;
  return SimdLevel::baseline;
}

std::vector<SimdLevel> available_simd_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::baseline, SimdLevel::avx2, SimdLevel::avx512})
    if (cpu_has(l)) out.push_back(l);
  return out;
}

SimdLevel active_simd_level() {
  std::call_once(g_env_once, apply_environment);
  return static_cast<SimdLevel>(g_active.load());
}

void set_active_simd_level(SimdLevel level) {
  std::call_once(g_env_once, apply_environment);
  if (!cpu_has(level)) {
    throw std::invalid_argument(std::string("SIMD level '") + simd_name(level) +
                                "' is not supported here: this CPU and build support at most '" +
                                simd_name(best_simd_level()) + "'");
  }
  g_active.store(static_cast<int>(level));
}

}  // namespace sketchgn
