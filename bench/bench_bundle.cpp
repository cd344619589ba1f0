// Load time of a model from its source file against a bundle of it (zstd
// levels 0, 3, 19), and the sizes on disk (counters). Models: stories260K from
// ../shared, SmolLM2-135M Q4_1 from the starkv model cache when present.
// Results: docs/perf/bundle.md.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "bench_models.h"
#include "bundle/writer.h"
#include "model/loader.h"

namespace {

namespace fs = std::filesystem;

using starkv_bench::model_path;

// Packs once per (model, level) into the temp directory.
std::string bundle_path(int which, int level) {
    static std::map<std::pair<int, int>, std::string> done;
    auto key = std::make_pair(which, level);
    if (auto it = done.find(key); it != done.end()) return it->second;
    const std::string out = (fs::temp_directory_path() / ("starkv_bench_" + std::to_string(which) + "_z" +
                                                           std::to_string(level) + ".skv")).string();
    starkv::PackOptions o;
    o.zstd_level = level;
    starkv::pack_bundle(model_path(which), out, o);
    return done[key] = out;
}

void load(benchmark::State& state, const std::string& path, const std::string& source) {
    for (auto _ : state) {
        starkv::LoadedModel m = starkv::load_model(path, nullptr);
        benchmark::DoNotOptimize(m.weights.tok_embd.data.data());
    }
    state.counters["file_MB"] = static_cast<double>(fs::file_size(path)) / 1e6;
    state.counters["vs_source"] = static_cast<double>(fs::file_size(path)) / static_cast<double>(fs::file_size(source));
}

// arg0: model (0 stories260K, 1 SmolLM2); arg1: -1 = the GGUF itself, else the zstd level of a bundle.
void BM_Load(benchmark::State& state) {
    const int which = static_cast<int>(state.range(0)), level = static_cast<int>(state.range(1));
    const std::string src = model_path(which);
    if (!fs::exists(src)) {
        state.SkipWithError(("model not found: " + src).c_str());
        return;
    }
    load(state, level < 0 ? src : bundle_path(which, level), src);
}

}  // namespace

BENCHMARK(BM_Load)
    ->ArgNames({"model", "zstd"})
    ->ArgsProduct({{0, 1}, {-1, 0, 3, 19}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)
    ->UseRealTime();

// Weak: starkv_bench takes its main from whichever bench file defines a strong
// BENCHMARK_MAIN(); this one serves while no other does.
__attribute__((weak)) int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
