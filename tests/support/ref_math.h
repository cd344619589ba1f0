// Helpers for tests that compare the runtime against float64 references:
// seeded random buffers and error measures. Header-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace starkv_test {

// n floats uniform in [lo, hi) from a fixed seed.
inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// Normwise relative error: max_i |a_i - b_i| / max(max_i |b_i|, floor).
// b is the reference.
template <class A, class B>
double normwise_rel_err(const A* a, const B* b, size_t n, double floor = 1e-30) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num = std::max(num, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
        den = std::max(den, std::fabs(static_cast<double>(b[i])));
    }
    return num / std::max(den, floor);
}

// Elementwise relative error with a floor: max_i |a_i - b_i| / max(|b_i|, floor).
template <class A, class B>
double elementwise_rel_err(const A* a, const B* b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; ++i) {
        const double ref = static_cast<double>(b[i]);
        worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - ref) / std::max(std::fabs(ref), floor));
    }
    return worst;
}

}  // namespace starkv_test
