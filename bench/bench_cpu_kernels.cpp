// CPU kernel benchmarks: the machine's ceilings (memory bandwidth, FMA peak)
// and starkv's kernels (matrix-vector, batched matmul, decode attention,
// end-to-end decoding) measured against them. docs/perf/cpu.md turns the
// output into floors and ratios.
//
//   build/bench/starkv_bench --benchmark_out=out.json --benchmark_out_format=json
//
// Byte counts (SetBytesProcessed, printed as bytes_per_second) are the bytes a
// kernel MUST read from memory at least once: weights for matmul, the K and V
// rows for attention. FLOP rates are counters named "FLOP/s".
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define STARKV_BENCH_X86 1
#endif

#include "backend/cpu_ops.h"
#include "core/thread_pool.h"
#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"

namespace {

using starkv::Matrix;
using starkv::ThreadPool;

std::string shared_dir() {
    const char* env = std::getenv("STARKV_SHARED_DIR");
    return env && *env ? env : STARKV_SHARED_DIR;
}

std::string smollm2_path() {
    if (const char* env = std::getenv("STARKV_SMOLLM2_GGUF"); env && *env) return env;
    std::string cache;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        cache = x;
    else if (const char* h = std::getenv("HOME"); h && *h)
        cache = std::string(h) + "/.cache";
    return cache + "/starkv/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

void fill_random(float* p, size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) p[i] = d(rng);
}

// One pool per thread count, reused across benchmarks.
ThreadPool& pool(int n_threads) {
    static std::unique_ptr<ThreadPool> pools[9];
    auto& p = pools[n_threads];
    if (!p) p = std::make_unique<ThreadPool>(n_threads);
    return *p;
}

constexpr size_t kMiB = size_t(1) << 20;

// ---------------------------------------------------------------------------
// Machine ceilings

// Read bandwidth: integer sum over a buffer (integer adds vectorise freely,
// so the loop is bound by loads, not by an FP dependency chain).
// Arg 0: buffer MiB, arg 1: threads.
void BM_MemRead(benchmark::State& state) {
    const size_t bytes = static_cast<size_t>(state.range(0)) * kMiB;
    const int threads = static_cast<int>(state.range(1));
    const size_t n = bytes / sizeof(uint64_t);
    std::vector<uint64_t> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = i * 2654435761u;
    ThreadPool& tp = pool(threads);
    std::vector<uint64_t> partial(static_cast<size_t>(threads) * 8);
    for (auto _ : state) {
        const size_t chunk = (n + threads - 1) / threads;
        tp.parallel_for(static_cast<size_t>(threads), 1, [&](size_t b, size_t e) {
            for (size_t t = b; t < e; ++t) {
                const uint64_t* p = buf.data() + t * chunk;
                const size_t m = std::min(chunk, n - t * chunk);
                uint64_t s = 0;
                for (size_t i = 0; i < m; ++i) s += p[i];
                partial[t * 8] = s;
            }
        });
        benchmark::DoNotOptimize(partial.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_MemRead)
    ->ArgNames({"MiB", "threads"})
    ->Args({1, 1})     // L2-resident
    ->Args({16, 1})    // L3-resident
    ->Args({256, 1})   // DRAM
    ->Args({256, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Copy bandwidth (memcpy, bytes read + written). Arg 0: MiB per buffer.
void BM_MemCopy(benchmark::State& state) {
    const size_t bytes = static_cast<size_t>(state.range(0)) * kMiB;
    std::vector<char> a(bytes, 1), b(bytes, 2);
    for (auto _ : state) {
        std::memcpy(b.data(), a.data(), bytes);
        benchmark::DoNotOptimize(b.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_MemCopy)->Arg(256)->ArgName("MiB")->Unit(benchmark::kMillisecond)->UseRealTime();

#ifdef STARKV_BENCH_X86
// Peak fp32 FMA throughput of one core: 12 independent 8-wide FMA chains,
// all in registers (the ceiling for any AVX2 kernel; AVX-512 is not used by starkv).
__attribute__((target("avx2,fma"))) float fma_peak_kernel(int64_t iters) {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t k = 0; k < iters; ++k) {
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
        // Opaque to the optimiser: the chains cannot be folded or shortened.
        for (int i = 0; i < 12; ++i) asm volatile("" : "+x"(acc[i]));
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

void BM_FmaPeak(benchmark::State& state) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        state.SkipWithError("no AVX2+FMA");
        return;
    }
    const int64_t iters = 1 << 20;
    for (auto _ : state) benchmark::DoNotOptimize(fma_peak_kernel(iters));
    state.counters["FLOP/s"] = benchmark::Counter(static_cast<double>(iters) * 12 * 8 * 2,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_FmaPeak)->Unit(benchmark::kMicrosecond);
#endif

// ---------------------------------------------------------------------------
// dot: the inner kernel of matmul and attention, with both operands in L1
// (arg: floats per operand). Its FLOP/s is the compute ceiling of the
// current matmul.
void BM_DotL1(benchmark::State& state) {
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<float> a(n), b(n);
    fill_random(a.data(), n, 1);
    fill_random(b.data(), n, 2);
    for (auto _ : state) {
        benchmark::DoNotOptimize(a.data());
        benchmark::DoNotOptimize(starkv::cpu::dot(a.data(), b.data(), n));
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(2 * n * sizeof(float)));
    state.counters["FLOP/s"] =
        benchmark::Counter(2.0 * static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DotL1)->Arg(64)->Arg(576)->Arg(4096)->ArgName("n");

// ---------------------------------------------------------------------------
// matmul. Args: rows (n_out), cols (n_in), n_tokens, threads, cold.
// cold = 1 rotates over enough copies of the weight matrix (>= 256 MiB in
// all) that every call streams its weights from DRAM, as a real decode step
// does (each layer's weights differ); cold = 0 reuses one matrix, which stays
// in cache when it fits (576x576 fp32 = 1.3 MB).
void BM_Matmul(benchmark::State& state) {
    const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
    const int n_tokens = static_cast<int>(state.range(2));
    const int threads = static_cast<int>(state.range(3));
    const bool cold = state.range(4) != 0;
    const size_t w_bytes = static_cast<size_t>(rows) * cols * sizeof(float);
    const size_t copies = cold ? std::max<size_t>(1, (256 * kMiB + w_bytes - 1) / w_bytes) : 1;
    std::vector<Matrix> ws;
    ws.reserve(copies);
    for (size_t c = 0; c < copies; ++c) {
        ws.emplace_back(rows, cols);
        fill_random(ws.back().data.data(), ws.back().data.size(), static_cast<uint32_t>(c + 7));
    }
    std::vector<float> x(static_cast<size_t>(n_tokens) * cols), out(static_cast<size_t>(n_tokens) * rows);
    fill_random(x.data(), x.size(), 3);
    ThreadPool& tp = pool(threads);
    size_t k = 0;
    for (auto _ : state) {
        starkv::cpu::matmul(ws[k], x.data(), n_tokens, out.data(), tp);
        benchmark::DoNotOptimize(out.data());
        if (++k == copies) k = 0;
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w_bytes));
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * rows * cols * n_tokens,
                                                  benchmark::Counter::kIsIterationInvariantRate);
    state.counters["copies"] = static_cast<double>(copies);
}

void matvec_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "cols", "tok", "thr", "cold"});
    // Llama-7B projections, SmolLM2-135M projections (q/o, k/v, gate/up, down)
    // and its LM head (49152 x 576, tied embedding).
    const int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {576, 576}, {192, 576},
                             {1536, 576},  {576, 1536},   {49152, 576}};
    for (auto& s : shapes)
        for (int thr : {1, 2}) {
            b->Args({s[0], s[1], 1, thr, 1});
            if (static_cast<size_t>(s[0]) * s[1] * 4 < 8 * kMiB) b->Args({s[0], s[1], 1, thr, 0});
        }
}
BENCHMARK(BM_Matmul)->Name("BM_Matvec")->Apply(matvec_args)->Unit(benchmark::kMicrosecond)->UseRealTime();

void batched_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "cols", "tok", "thr", "cold"});
    for (int tok : {16, 64})
        for (int thr : {1, 2}) {
            b->Args({4096, 4096, tok, thr, 1});
            b->Args({1536, 576, tok, thr, 1});
        }
}
BENCHMARK(BM_Matmul)->Name("BM_MatmulBatched")->Apply(batched_args)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------------------
// Decode attention: one query token over `ctx` cached positions, one layer,
// in the cache's layout ([kv_head][pos][head_dim]) and the way forward() runs
// it: one task per KV head, its group of query heads reading each cached key
// and value once. Args: ctx, n_head, n_head_kv, head_dim, threads.
void BM_AttentionDecode(benchmark::State& state) {
    const int ctx = static_cast<int>(state.range(0));
    const int n_head = static_cast<int>(state.range(1)), n_head_kv = static_cast<int>(state.range(2));
    const int head_dim = static_cast<int>(state.range(3));
    const int threads = static_cast<int>(state.range(4));
    const size_t hd = static_cast<size_t>(head_dim);
    const size_t per_head = static_cast<size_t>(ctx) * hd;
    std::vector<float> k(static_cast<size_t>(n_head_kv) * per_head), v(k.size());
    fill_random(k.data(), k.size(), 11);
    fill_random(v.data(), v.size(), 12);
    std::vector<float> q(static_cast<size_t>(n_head) * head_dim), out(q.size());
    fill_random(q.data(), q.size(), 13);
    for (auto& f : q) f *= 0.1f;
    const int group = n_head / n_head_kv;
    ThreadPool& tp = pool(threads);
    std::vector<float> scratch(static_cast<size_t>(tp.size()) * group * ctx);
    for (auto _ : state) {
        tp.parallel_chunks(static_cast<size_t>(n_head_kv), 1, [&](size_t b, size_t e, size_t chunk) {
            float* sc = scratch.data() + chunk * static_cast<size_t>(group) * ctx;
            for (size_t kvh = b; kvh < e; ++kvh) {
                const size_t h0 = kvh * static_cast<size_t>(group);
                starkv::cpu::attention_group(q.data() + h0 * hd, k.data() + kvh * per_head, v.data() + kvh * per_head,
                                             hd, ctx, group, head_dim, out.data() + h0 * hd, sc);
            }
        });
        benchmark::DoNotOptimize(out.data());
    }
    const double kv_bytes = 2.0 * ctx * static_cast<double>(n_head_kv) * head_dim * sizeof(float);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(kv_bytes));
    state.counters["KV_MiB"] = kv_bytes / kMiB;
    state.counters["FLOP/s"] = benchmark::Counter(4.0 * ctx * n_head * head_dim,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
void attention_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"ctx", "heads", "kv", "hd", "thr"});
    for (int ctx : {512, 4096, 16384})
        for (int kv : {8, 32})
            for (int thr : {1, 2}) b->Args({ctx, 32, kv, 128, thr});
    // SmolLM2-135M's shape.
    for (int thr : {1, 2}) b->Args({4096, 9, 3, 64, thr});
}
BENCHMARK(BM_AttentionDecode)->Apply(attention_args)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---------------------------------------------------------------------------
// End to end: a Context over a loaded GGUF, as `starkv run` does it.

std::shared_ptr<const starkv::Model> load_cached(const std::string& path) {
    static std::string loaded_path;
    static std::shared_ptr<const starkv::Model> model;
    if (loaded_path != path) {
        model.reset();
        model = std::make_shared<const starkv::Model>(starkv::load_gguf(path, nullptr));
        loaded_path = path;
    }
    return model;
}

int32_t argmax(const float* x, int n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

// Decode: one token per iteration, greedy (argmax of the last logits), the
// context rewound to the prompt when it would reach `max_pos`. Args: threads,
// max_pos. Counter tok/s.
void run_decode(benchmark::State& state, const std::string& path) {
    if (!std::filesystem::exists(path)) {
        state.SkipWithError(("model not found: " + path).c_str());
        return;
    }
    auto model = load_cached(path);
    const int threads = static_cast<int>(state.range(0));
    const int max_pos = static_cast<int>(state.range(1));
    starkv::ContextOptions opt;
    opt.n_ctx = max_pos;
    opt.n_threads = threads;
    starkv::Context ctx(model, opt);
    std::vector<int32_t> prompt = model->tokenizer().tokenize("Once upon a time", model->tokenizer().vocab().add_bos, false);
    ctx.eval(prompt.data(), prompt.size(), false);
    const int n_vocab = model->config().n_vocab;
    int32_t tok = argmax(ctx.logits(-1), n_vocab);
    for (auto _ : state) {
        if (ctx.n_past() >= max_pos) {
            state.PauseTiming();
            ctx.rewind(static_cast<int>(prompt.size()));
            state.ResumeTiming();
        }
        ctx.eval(&tok, 1, false);
        tok = argmax(ctx.logits(-1), n_vocab);
    }
    state.counters["tok/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

// Prompt: evaluate a prompt of `n` tokens from an empty context. Args: threads, n.
void run_prompt(benchmark::State& state, const std::string& path) {
    if (!std::filesystem::exists(path)) {
        state.SkipWithError(("model not found: " + path).c_str());
        return;
    }
    auto model = load_cached(path);
    const int threads = static_cast<int>(state.range(0));
    const int n = static_cast<int>(state.range(1));
    starkv::ContextOptions opt;
    opt.n_ctx = n;
    opt.n_threads = threads;
    starkv::Context ctx(model, opt);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    std::mt19937 rng(5);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(model->config().n_vocab));
    for (auto _ : state) {
        ctx.reset();
        ctx.eval(tokens.data(), tokens.size(), false);
    }
    state.counters["tok/s"] = benchmark::Counter(n, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Stories260K_Decode(benchmark::State& state) { run_decode(state, shared_dir() + "/models/stories260K.gguf"); }
BENCHMARK(BM_Stories260K_Decode)->ArgNames({"thr", "max_pos"})->Args({1, 256})->Args({2, 256})->UseRealTime();

void BM_Stories260K_Prompt(benchmark::State& state) { run_prompt(state, shared_dir() + "/models/stories260K.gguf"); }
BENCHMARK(BM_Stories260K_Prompt)->ArgNames({"thr", "n"})->Args({1, 128})->Args({2, 128})->UseRealTime();

// SmolLM2-135M (scripts/fetch_smollm2.sh): 30 layers of realistic head sizes.
// Skipped with a message when the GGUF is not in the cache.
void BM_SmolLM2_Decode(benchmark::State& state) { run_decode(state, smollm2_path()); }
BENCHMARK(BM_SmolLM2_Decode)
    ->ArgNames({"thr", "max_pos"})
    ->Args({1, 256})
    ->Args({2, 256})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_SmolLM2_Prompt(benchmark::State& state) { run_prompt(state, smollm2_path()); }
BENCHMARK(BM_SmolLM2_Prompt)
    ->ArgNames({"thr", "n"})
    ->Args({1, 128})
    ->Args({2, 128})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
