// Synthetic bundles' pieces (src/bundle/synthetic.h): the random factors are
// orthonormal (checked in double: A A^T = I), on both construction paths, and
// bad requests are refused with a status.
#include <gtest/gtest.h>

#include <cmath>

#include "bundle/synthetic.h"
#include "core/error.h"

using namespace starkv;

namespace {

double max_gram_error(const std::vector<float>& a, int rows, int n) {
    double worst = 0;
    for (int i = 0; i < rows; ++i)
        for (int k = 0; k < rows; ++k) {
            double d = 0;
            for (int j = 0; j < n; ++j) d += static_cast<double>(a[static_cast<size_t>(i) * n + j]) * a[static_cast<size_t>(k) * n + j];
            worst = std::max(worst, std::fabs(d - (i == k ? 1.0 : 0.0)));
        }
    return worst;
}

}  // namespace

TEST(Synthetic, HadamardRowsAreOrthonormal) {
    const std::vector<float> a = random_orthonormal_rows(64, 1024, 3);
    ASSERT_EQ(a.size(), 64u * 1024u);
    EXPECT_LT(max_gram_error(a, 64, 1024), 1e-5);
    EXPECT_NE(a, random_orthonormal_rows(64, 1024, 4));  // the seed matters
}

TEST(Synthetic, GramSchmidtRowsAreOrthonormal) {
    const std::vector<float> a = random_orthonormal_rows(12, 12, 5);  // full rank, n not a power of two
    EXPECT_LT(max_gram_error(a, 12, 12), 1e-5);
}

TEST(Synthetic, BadRequestsAreRefused) {
    auto status_of = [](auto fn) {
        try {
            fn();
        } catch (const Error& e) {
            return e.status();
        }
        return STARKV_OK;
    };
    EXPECT_EQ(status_of([] { make_synthetic_model("gpt2", 1, 0.0f); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([] { make_synthetic_model("llama2-7b", 1, 1.0f); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([] { make_synthetic_model("llama2-7b", -1, 0.0f); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([] { random_orthonormal_rows(5, 4, 1); }), STARKV_ERR_INVALID_ARGUMENT);
}
