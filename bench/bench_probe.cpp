// A calibration probe (the KL of the output on 512 probe tokens after a change
// to the model) run from the first layer it changes against the whole pass
// (calibration/probe.h): the adaptive rank planner makes 2 such probes per
// compressed layer and round, the quantization planner one per latent.
// arg0: model (0 stories260K, 1 SmolLM2); arg1: the layer the probe starts at,
// as a percentage of the layers (0 = the whole pass).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_models.h"
#include "calibration/probe.h"
#include "model/loader.h"
#include "model/model.h"

namespace {

struct Probe {
    std::unique_ptr<starkv::Model> model;
    std::unique_ptr<starkv::probe::Reference> ref;
};

// Loads the model and takes the reference (all layers kept) once per model.
Probe* probe_for(int which) {
    static std::map<int, Probe> done;
    if (auto it = done.find(which); it != done.end()) return &it->second;
    const std::string path = starkv_bench::model_path(which);
    if (!std::filesystem::exists(path)) return nullptr;
    Probe p;
    p.model = std::make_unique<starkv::Model>(starkv::load_model(path, nullptr));
    std::string text;
    {
        std::FILE* f = std::fopen((starkv_bench::shared_dir() + "/data/tinystories_val.txt").c_str(), "rb");
        if (!f) return nullptr;
        char buf[8192];
        const size_t n = std::fread(buf, 1, sizeof buf, f);
        std::fclose(f);
        text.assign(buf, n);
    }
    const std::vector<int32_t> t = p.model->tokenizer().tokenize(text, true, false);
    std::vector<std::vector<int32_t>> seqs;
    for (size_t i = 0; i + 256 <= t.size() && seqs.size() < 2; i += 256) seqs.emplace_back(t.begin() + i, t.begin() + i + 256);
    p.ref = std::make_unique<starkv::probe::Reference>(*p.model, seqs, 256, 0, 0);
    return &(done[which] = std::move(p));
}

void BM_ProbeKl(benchmark::State& state) {
    Probe* p = probe_for(static_cast<int>(state.range(0)));
    if (!p) {
        state.SkipWithError("model or text not found");
        return;
    }
    const int start = static_cast<int>(state.range(1) * p->model->config().n_layer / 100);
    for (auto _ : state) benchmark::DoNotOptimize(p->ref->kl(*p->model, start));
    state.counters["start_layer"] = start;
    state.counters["tokens"] = 512;
}

}  // namespace

BENCHMARK(BM_ProbeKl)
    ->ArgNames({"model", "start_pct"})
    ->ArgsProduct({{0, 1}, {0, 50, 90}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3)
    ->UseRealTime();
