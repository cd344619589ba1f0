// Calibration probes: a probe that runs only the layers from the first one it
// changes (probe::Reference) against the whole forward pass.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "calibration/lowrank.h"
#include "calibration/probe.h"
#include "model/loader.h"
#include "model/model.h"
#include "test_paths.h"

namespace {

using starkv::Model;
namespace probe = starkv::probe;

std::vector<std::vector<int32_t>> texts(const Model& m) {
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt"));
    std::vector<std::vector<int32_t>> out;
    for (size_t at : {size_t{0}, size_t{6000}}) {
        std::vector<int32_t> t = m.tokenizer().tokenize(text.substr(at, 2500), true, false);
        t.resize(std::min<size_t>(t.size(), at == 0 ? 150 : 90));  // two sequences of different lengths, > one micro-batch
        out.push_back(std::move(t));
    }
    return out;
}

// Multiplies every weight of layer l's output projection by f.
void scale_wo(Model& m, int l, float f) {
    starkv::Matrix& wo = m.mutable_weights().layers[static_cast<size_t>(l)].wo;
    for (int r = 0; r < wo.rows; ++r)
        for (int c = 0; c < wo.cols; ++c) wo.row(r)[c] *= f;
}

TEST(ProbeReference, RunningFromTheChangedLayerGivesTheWholePassKl) {
    Model m = starkv::load_model(starkv_test::stories_model(), nullptr);
    const auto seqs = texts(m);
    const size_t V = static_cast<size_t>(m.config().n_vocab);
    const probe::Reference ref(m, seqs, 256, 2, 1);
    // The reference's own output is the model's: KL 0 from any layer.
    EXPECT_EQ(ref.log_probs(), probe::log_probs(m, seqs, 256, 2));
    EXPECT_NEAR(ref.kl(m, 3), 0.0, 1e-12);

    scale_wo(m, 3, 1.3f);
    const double whole = probe::mean_kl(ref.log_probs(), probe::log_probs(m, seqs, 256, 2), V);
    ASSERT_GT(whole, 1e-4);  // the change is visible at the output
    // From layer 3 (the changed one), from layer 1 (the reference's first),
    // and the whole pass (0): the same KL to rounding.
    EXPECT_NEAR(ref.kl(m, 3), whole, 1e-9 * whole);
    EXPECT_NEAR(ref.kl(m, 1), whole, 1e-9 * whole);
    EXPECT_NEAR(ref.kl(m, 0), whole, 1e-9 * whole);
    // Claiming the change starts past layer 3 skips it: the kept stream
    // really replaces the layers below the start.
    EXPECT_LT(ref.kl(m, 4), 1e-3 * whole);

    // A change below the reference's first layer: the whole pass runs.
    scale_wo(m, 3, 1.0f / 1.3f);
    scale_wo(m, 0, 1.2f);
    const double below = probe::mean_kl(ref.log_probs(), probe::log_probs(m, seqs, 256, 2), V);
    ASSERT_GT(below, 1e-4);
    EXPECT_NEAR(ref.kl(m, 0), below, 1e-9 * below);
}

}  // namespace
