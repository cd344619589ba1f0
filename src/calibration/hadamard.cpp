#include "calibration/hadamard.h"

#include <cmath>

namespace starkv::hadamard {

void rotate(float* x, int n, int block) {
    const float norm = 1.0f / std::sqrt(static_cast<float>(block));
    for (int b0 = 0; b0 < n; b0 += block) {
        float* v = x + b0;
        // Fast Walsh-Hadamard transform (Sylvester order), then 1/sqrt(B).
        for (int len = 1; len < block; len <<= 1)
            for (int i = 0; i < block; i += 2 * len)
                for (int j = i; j < i + len; ++j) {
                    const float a = v[j], b = v[j + len];
                    v[j] = a + b;
                    v[j + len] = a - b;
                }
        for (int i = 0; i < block; ++i) v[i] *= norm;
    }
}

void fold(Matrix& a, Matrix& u, int width, int block, bool rot) {
    Matrix pa(width, a.cols), pu(u.rows, width);
    for (int r = 0; r < a.rows; ++r)
        for (int c = 0; c < a.cols; ++c) pa.row(r)[c] = a.row(r)[c];
    for (int r = 0; r < u.rows; ++r)
        for (int c = 0; c < u.cols; ++c) pu.row(r)[c] = u.row(r)[c];
    if (rot) {
        // A <- H A: rotate every column of A; U <- U H (H symmetric): rotate every row of U.
        std::vector<float> col(static_cast<size_t>(width));
        for (int c = 0; c < pa.cols; ++c) {
            for (int r = 0; r < width; ++r) col[static_cast<size_t>(r)] = pa.row(r)[c];
            rotate(col.data(), width, block);
            for (int r = 0; r < width; ++r) pa.row(r)[c] = col[static_cast<size_t>(r)];
        }
        for (int r = 0; r < pu.rows; ++r) rotate(pu.row(r), width, block);
    }
    a = std::move(pa);
    u = std::move(pu);
}

}  // namespace starkv::hadamard
