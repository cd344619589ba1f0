// Fault injection through the C API. This executable replaces the global
// operator new/delete: once armed, the Nth allocation (counted over every
// thread) throws std::bad_alloc. Sweeping N over every allocation that
// starkv_context_create + eval + generate make checks that each failure ends
// in a status (STARKV_ERR_OUT_OF_MEMORY), leaks nothing (LeakSanitizer in the
// ASan run), and leaves the model usable. Also: the KV cache failing to grow,
// cancellation of a load and of a generation, and pack into an unwritable
// directory or onto a full disk (RLIMIT_FSIZE) leaving no partial bundle.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <execinfo.h>

#include <exception>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "robust_util.h"

namespace {
std::atomic<bool> g_armed{false};
std::atomic<long> g_countdown{0};
std::atomic<long> g_failures{0};
void* g_fired_at[48];  // the stack of the injected failure (printed if it ends in std::terminate)
int g_fired_depth = 0;

void* counted_alloc(size_t n, size_t align) {
    if (g_armed.load(std::memory_order_relaxed) && g_countdown.fetch_sub(1, std::memory_order_relaxed) == 0) {
        g_armed.store(false, std::memory_order_relaxed);
        g_failures.fetch_add(1, std::memory_order_relaxed);
        g_fired_depth = ::backtrace(g_fired_at, 48);
        throw std::bad_alloc();
    }
    if (n == 0) n = 1;
    void* p = nullptr;
    if (align <= alignof(std::max_align_t)) {
        p = std::malloc(n);
    } else if (::posix_memalign(&p, align, n) != 0) {
        p = nullptr;
    }
    if (!p) throw std::bad_alloc();
    return p;
}
}  // namespace

void* operator new(size_t n) { return counted_alloc(n, 0); }
void* operator new[](size_t n) { return counted_alloc(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return counted_alloc(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a) { return counted_alloc(n, static_cast<size_t>(a)); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
    try { return counted_alloc(n, 0); } catch (...) { return nullptr; }
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
    try { return counted_alloc(n, 0); } catch (...) { return nullptr; }
}
// The aligned nothrow forms too (the KV pool's pages use them): left to the
// runtime, a sanitizer's own allocator would hand out what free() then releases.
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try { return counted_alloc(n, static_cast<size_t>(a)); } catch (...) { return nullptr; }
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try { return counted_alloc(n, static_cast<size_t>(a)); } catch (...) { return nullptr; }
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using namespace starkv_robust;

// Arms the failure of the nth allocation from now (0 = the next one).
struct FailNth {
    explicit FailNth(long n) {
        g_countdown.store(n);
        g_armed.store(true);
    }
    ~FailNth() { g_armed.store(false); }
    bool fired() const { return !g_armed.load() && g_countdown.load() < 0; }
};

// Greedy text of 24 tokens after the prompt, on a fresh context: the reference.
std::vector<starkv_token> generate_greedy(const starkv_model* m, starkv_context* ctx, const std::vector<starkv_token>& prompt,
                                          starkv_status* status = nullptr) {
    std::vector<starkv_token> out;
    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = 0.0f;
    starkv_sampler* s = nullptr;
    starkv_status st = starkv_sampler_create(&sp, &s);
    if (st == STARKV_OK) {
        starkv_generate_params gp;
        starkv_generate_params_default(&gp);
        gp.max_tokens = 24;
        gp.stop_at_eos = false;
        gp.user_data = &out;
        gp.on_piece = [](const char*, size_t, starkv_token t, void* ud) {
            static_cast<std::vector<starkv_token>*>(ud)->push_back(t);
            return true;
        };
        st = starkv_generate(ctx, s, prompt.data(), prompt.size(), &gp, nullptr);
        starkv_sampler_free(s);
    }
    if (status) *status = st;
    return out;
}

starkv_context* make_ctx(const starkv_model* m, uint32_t n_ctx, starkv_status* st) {
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = n_ctx;
    cp.n_threads = 1;  // deterministic allocation order
    starkv_context* c = nullptr;
    *st = starkv_context_create(m, &cp, &c);
    return c;
}

TEST(FaultInjection, EveryAllocationOfContextCreateEvalGenerate) {
    ModelPtr model = load_stories();
    ASSERT_TRUE(model);
    const auto prompt = tokenize(model.get(), "Once upon a time, there was a little girl");
    starkv_status st;
    ContextPtr ref_ctx(make_ctx(model.get(), 64, &st));
    ASSERT_EQ(st, STARKV_OK);
    const auto reference = generate_greedy(model.get(), ref_ctx.get(), prompt);
    ASSERT_EQ(reference.size(), 24u);
    ref_ctx.reset();

    long injected = 0, n = 0;
    const long limit = env_int("STARKV_FAULT_MAX_POINTS", 5000);
    const long ctx_stride = env_int("STARKV_FAULT_CTX_STRIDE", sanitized() ? 3 : 1);
    for (; n < limit; n += ctx_stride) {
        starkv_status create_st = STARKV_OK, gen_st = STARKV_OK;
        std::vector<starkv_token> got;
        bool fired;
        {
            FailNth fail(n);
            ContextPtr ctx(make_ctx(model.get(), 64, &create_st));
            if (create_st == STARKV_OK) got = generate_greedy(model.get(), ctx.get(), prompt, &gen_st);
            fired = fail.fired();
        }
        if (!fired) {  // every allocation succeeded: the sweep is complete
            EXPECT_EQ(create_st, STARKV_OK);
            EXPECT_EQ(gen_st, STARKV_OK);
            EXPECT_EQ(got, reference);
            break;
        }
        ++injected;
        const starkv_status failed = create_st != STARKV_OK ? create_st : gen_st;
        // The failure is reported (no crash, no abort); allocations made by the
        // test itself (the token vector) may absorb it, then generation is OK.
        if (failed != STARKV_OK) {
            EXPECT_EQ(failed, STARKV_ERR_OUT_OF_MEMORY) << "allocation " << n << ": " << starkv_last_error();
        }
        // The model is still usable: a fresh context gives the reference text.
        if (injected % 16 == 1) {
            ContextPtr ctx(make_ctx(model.get(), 64, &st));
            ASSERT_EQ(st, STARKV_OK);
            ASSERT_EQ(generate_greedy(model.get(), ctx.get(), prompt), reference) << "after failing allocation " << n;
        }
    }
    EXPECT_LT(n, limit) << "sweep did not reach the end";
    EXPECT_GT(injected, 10);
    RecordProperty("faults_injected", static_cast<int>(injected));
    std::printf("[ fault ] context create + eval + generate: %ld allocation points failed (stride %ld)\n", injected,
                ctx_stride);
}

TEST(FaultInjection, KvCacheGrowthFailureKeepsContextUsable) {
    ModelPtr model = load_stories();
    ASSERT_TRUE(model);
    starkv_status st;
    ContextPtr a(make_ctx(model.get(), 512, &st));
    ASSERT_EQ(st, STARKV_OK);
    ContextPtr b(make_ctx(model.get(), 512, &st));
    ASSERT_EQ(st, STARKV_OK);
    // Fill both to just below the cache's first growth step (256 tokens).
    std::vector<starkv_token> toks;
    for (int i = 0; i < 300; ++i) toks.push_back(1 + (i * 37) % 500);
    ASSERT_EQ(starkv_context_eval(a.get(), toks.data(), 250, false), STARKV_OK);
    ASSERT_EQ(starkv_context_eval(b.get(), toks.data(), 250, false), STARKV_OK);
    long failures = 0;
    for (long n = 0; n < 64; ++n) {
        starkv_status e;
        bool fired;
        {
            FailNth fail(n);
            e = starkv_context_eval(a.get(), toks.data() + 250, 20, false);  // grows past 256
            fired = fail.fired();
        }
        if (!fired) {
            ASSERT_EQ(e, STARKV_OK);
            break;
        }
        if (e == STARKV_OK) {  // the failure hit after the cache was grown: undo
            ASSERT_EQ(starkv_context_rewind(a.get(), 250), STARKV_OK);
            continue;
        }
        ++failures;
        EXPECT_EQ(e, STARKV_ERR_OUT_OF_MEMORY) << starkv_last_error();
        EXPECT_EQ(starkv_context_n_past(a.get()), 250u) << "a failed eval must not change the context";
    }
    EXPECT_GT(failures, 0);
    ASSERT_EQ(starkv_context_n_past(a.get()), 270u);
    ASSERT_EQ(starkv_context_eval(b.get(), toks.data() + 250, 20, false), STARKV_OK);
    // The context that saw the failures computes exactly what the other one does.
    const float *la = nullptr, *lb = nullptr;
    ASSERT_EQ(starkv_context_logits(a.get(), -1, &la), STARKV_OK);
    ASSERT_EQ(starkv_context_logits(b.get(), -1, &lb), STARKV_OK);
    for (int i = 0; i < 512; ++i) ASSERT_EQ(la[i], lb[i]) << i;
    RecordProperty("faults_injected", static_cast<int>(failures));
}

TEST(FaultInjection, ModelLoadAllocationFailures) {
    // Every allocation of a load (stories260K GGUF) fails once, at a stride.
    long injected = 0, n = 0;
    const long stride = env_int("STARKV_FAULT_LOAD_STRIDE", sanitized() ? 7 : 1);
    const std::string path = starkv_test::stories_model();
    for (;; n += stride) {
        starkv_model* m = nullptr;
        starkv_status s;
        bool fired;
        {
            FailNth fail(n);
            s = starkv_model_load(path.c_str(), nullptr, &m);
            fired = fail.fired();
        }
        if (!fired) {
            ASSERT_EQ(s, STARKV_OK);
            starkv_model_free(m);
            break;
        }
        ++injected;
        if (s != STARKV_OK) {
            EXPECT_EQ(s, STARKV_ERR_OUT_OF_MEMORY) << "allocation " << n << ": " << starkv_last_error();
            EXPECT_EQ(m, nullptr);
        }
        starkv_model_free(m);
        ASSERT_LT(n, 2000000) << "load never completed";
    }
    EXPECT_GT(injected, 5);
    RecordProperty("faults_injected", static_cast<int>(injected));
    std::printf("[ fault ] model load: %ld allocation points failed (stride %ld, %ld allocations)\n", injected, stride, n);
}

// Runs f() in a child process; returns its exit code, or 100 + the signal.
// An uncaught exception / std::terminate in the child exits with kTerminated.
constexpr int kTerminated = 99;
template <typename F>
int in_child(F&& f) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::set_terminate([] {
            if (std::getenv("STARKV_FAULT_VERBOSE")) ::backtrace_symbols_fd(g_fired_at, g_fired_depth, 2);
            ::_exit(kTerminated);
        });
        ::_exit(f());
    }
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 100 + WTERMSIG(ws);
}

// Child exit codes of one injected pack or load.
enum { kDone = 0, kFailedCleanly = 1, kAbsorbed = 2, kWrongStatus = 3, kLeftFile = 4 };

TEST(FaultInjection, PackAndBundleLoadAllocationFailures) {
    // Packing fails at every allocation (strided), each in a child process: a
    // status, and no bundle or temporary file left; then the same for loading
    // the bundle. std::terminate in a child is counted and reported: the one
    // place seen is nlohmann::json's destructor, which allocates (a std::vector
    // stack) inside a noexcept function (docs/reliability.md);
    // STARKV_FAULT_STRICT=1 makes it a failure.
    const std::string in = starkv_test::stories_model();
    const std::string dir = starkv_test::temp_dir() + "/packfault";
    std::filesystem::create_directories(dir);
    const std::string out = dir + "/m.skv";
    const long stride = env_int("STARKV_FAULT_PACK_STRIDE", sanitized() ? 31 : 7);
    const bool strict = env_int("STARKV_FAULT_STRICT", 0) != 0;
    std::map<int, long> outcomes;
    std::vector<long> terminated;
    for (long n = env_int("STARKV_FAULT_PACK_START", 0);; n += stride) {
        const int code = in_child([&] {
            starkv_status s;
            bool fired;
            {
                FailNth fail(n);
                s = starkv_pack(in.c_str(), out.c_str(), nullptr);
                fired = fail.fired();
            }
            if (!fired) return s == STARKV_OK ? kDone : kWrongStatus;
            if (s == STARKV_OK) return kAbsorbed;
            if (s != STARKV_ERR_OUT_OF_MEMORY) return kWrongStatus;
            if (std::filesystem::is_empty(dir)) return kFailedCleanly;
            if (std::getenv("STARKV_FAULT_VERBOSE")) ::backtrace_symbols_fd(g_fired_at, g_fired_depth, 2);
            return kLeftFile;
        });
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        ++outcomes[code];
        if (code == kTerminated) terminated.push_back(n);
        EXPECT_TRUE(code <= kAbsorbed || code == kTerminated) << "pack, failing allocation " << n << ": child exit " << code;
        if (code == kDone) break;
        ASSERT_LT(n, 1000000);
    }
    ASSERT_STARKV_OK(starkv_pack(in.c_str(), out.c_str(), nullptr));
    long load_points = 0;
    for (long n = env_int("STARKV_FAULT_LOAD_START", 0);; n += stride) {
        const int code = in_child([&] {
            starkv_model* m = nullptr;
            starkv_status s;
            bool fired;
            {
                FailNth fail(n);
                s = starkv_model_load(out.c_str(), nullptr, &m);
                fired = fail.fired();
            }
            starkv_model_free(m);
            if (!fired) return s == STARKV_OK ? kDone : kWrongStatus;
            if (s == STARKV_OK) return kAbsorbed;
            return s == STARKV_ERR_OUT_OF_MEMORY && m == nullptr ? kFailedCleanly : kWrongStatus;
        });
        ++load_points;
        if (code == kTerminated) terminated.push_back(-n);
        EXPECT_TRUE(code <= kAbsorbed || code == kTerminated) << "bundle load, failing allocation " << n << ": child exit " << code;
        if (code == kDone) break;
        ASSERT_LT(n, 1000000);
    }
    long pack_points = 0;
    for (const auto& [code, count] : outcomes) pack_points += count;
    std::printf("[ fault ] pack: %ld allocation points failed, bundle load: %ld (stride %ld); std::terminate at %zu:",
                pack_points, load_points, stride, terminated.size());
    for (long t : terminated) std::printf(" %s%ld", t < 0 ? "load@" : "pack@", t < 0 ? -t : t);
    std::printf("\n");
    if (strict) EXPECT_TRUE(terminated.empty());
    EXPECT_LE(terminated.size(), static_cast<size_t>(pack_points + load_points) / 20) << "std::terminate is not rare";
    RecordProperty("faults_injected", static_cast<int>(pack_points + load_points));
}

TEST(Cancellation, LoadAtEveryProgressCall) {
    struct Cut {
        int calls = 0, stop_at = 0;
    };
    // Count the progress calls of a full load.
    Cut count{0, 1 << 30};
    starkv_model_params mp;
    starkv_model_params_default(&mp);
    mp.progress = [](float, void* ud) {
        auto* c = static_cast<Cut*>(ud);
        return ++c->calls < c->stop_at;
    };
    mp.progress_user_data = &count;
    starkv_model* m = nullptr;
    ASSERT_EQ(starkv_model_load(starkv_test::stories_model().c_str(), &mp, &m), STARKV_OK);
    starkv_model_free(m);
    ASSERT_GT(count.calls, 1);
    for (int k = 1; k <= count.calls; ++k) {
        Cut cut{0, k};
        mp.progress_user_data = &cut;
        m = reinterpret_cast<starkv_model*>(1);
        EXPECT_STARKV_ERROR(starkv_model_load(starkv_test::stories_model().c_str(), &mp, &m), STARKV_ERR_CANCELLED);
        EXPECT_EQ(m, nullptr);
        EXPECT_EQ(cut.calls, k) << "no progress call after the one that cancelled";
    }
}

TEST(Cancellation, GenerationStopsAtEveryToken) {
    ModelPtr model = load_stories();
    ASSERT_TRUE(model);
    const auto prompt = tokenize(model.get(), "Lily and Ben went to the park");
    starkv_status st;
    ContextPtr ref(make_ctx(model.get(), 128, &st));
    const auto full = generate_greedy(model.get(), ref.get(), prompt);
    ASSERT_EQ(full.size(), 24u);
    for (int k = 1; k <= 24; k += 3) {
        ContextPtr ctx(make_ctx(model.get(), 128, &st));
        ASSERT_EQ(st, STARKV_OK);
        struct S { int left; std::vector<starkv_token> got; } s{k, {}};
        starkv_generate_params gp;
        starkv_generate_params_default(&gp);
        gp.max_tokens = 24;
        gp.stop_at_eos = false;
        gp.user_data = &s;
        gp.on_piece = [](const char*, size_t, starkv_token t, void* ud) {
            auto* s = static_cast<S*>(ud);
            s->got.push_back(t);
            return --s->left > 0;
        };
        starkv_generate_result res;
        starkv_generate_result_default(&res);
        starkv_sampler_params sp;
        starkv_sampler_params_default(&sp);
        sp.temperature = 0.0f;
        starkv_sampler* smp = nullptr;
        ASSERT_EQ(starkv_sampler_create(&sp, &smp), STARKV_OK);
        SamplerPtr sampler(smp);
        ASSERT_EQ(starkv_generate(ctx.get(), smp, prompt.data(), prompt.size(), &gp, &res), STARKV_OK);
        EXPECT_EQ(res.stop_reason, STARKV_STOP_CALLBACK);
        EXPECT_EQ(static_cast<int>(s.got.size()), k);
        EXPECT_EQ(s.got, std::vector<starkv_token>(full.begin(), full.begin() + static_cast<long>(s.got.size())));
        // The context continues: rewinding to the prompt regenerates the same text greedily.
        ASSERT_EQ(starkv_context_rewind(ctx.get(), static_cast<uint32_t>(prompt.size())), STARKV_OK);
        ASSERT_EQ(starkv_context_rewind(ctx.get(), 0), STARKV_OK);
        EXPECT_EQ(generate_greedy(model.get(), ctx.get(), prompt), full);
    }
}

bool dir_has_only(const std::string& dir, size_t n_entries) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
    return n == n_entries;
}

TEST(PackFaults, UnwritableOrMissingDirectoryLeavesNothing) {
    const std::string out = "/nonexistent-starkv-dir/sub/out.skv";
    EXPECT_STARKV_ERROR(starkv_pack(starkv_test::stories_model().c_str(), out.c_str(), nullptr), STARKV_ERR_IO);
    EXPECT_FALSE(std::filesystem::exists(out));
    // A path whose directory is a regular file.
    const std::string dir = starkv_test::temp_dir() + "/unwritable";
    std::filesystem::create_directories(dir);
    const std::string file = dir + "/plain";
    { std::ofstream(file) << "x"; }
    EXPECT_STARKV_ERROR(starkv_pack(starkv_test::stories_model().c_str(), (file + "/out.skv").c_str(), nullptr),
                        STARKV_ERR_IO);
    EXPECT_TRUE(dir_has_only(dir, 1));
}

TEST(PackFaults, FullDiskLeavesNoPartialBundle) {
    // A full disk, simulated per process: writes past RLIMIT_FSIZE fail (EFBIG,
    // SIGXFSZ ignored) as they would with ENOSPC. stories260K packs to ~1 MB.
    const std::string dir = starkv_test::temp_dir() + "/full";
    std::filesystem::create_directories(dir);
    const std::string out = dir + "/out.skv";
    struct rlimit old;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    auto* prev = signal(SIGXFSZ, SIG_IGN);
    for (rlim_t limit : {rlim_t{0}, rlim_t{4096}, rlim_t{64 << 10}, rlim_t{512 << 10}}) {
        struct rlimit lim = old;
        lim.rlim_cur = limit;
        ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
        starkv_pack_params pp;
        starkv_pack_params_default(&pp);
        pp.zstd_level = 0;
        const starkv_status s = starkv_pack(starkv_test::stories_model().c_str(), out.c_str(), &pp);
        ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
        EXPECT_STARKV_ERROR(s, STARKV_ERR_IO) << "limit " << limit;
        EXPECT_TRUE(dir_has_only(dir, 0)) << "a partial bundle or temporary file was left (limit " << limit << ")";
    }
    signal(SIGXFSZ, prev);
    // With room, the same pack succeeds and loads.
    starkv_pack_params pp;
    starkv_pack_params_default(&pp);
    ASSERT_STARKV_OK(starkv_pack(starkv_test::stories_model().c_str(), out.c_str(), &pp));
    starkv_model* m = nullptr;
    EXPECT_STARKV_OK(starkv_model_load(out.c_str(), nullptr, &m));
    starkv_model_free(m);
}

}  // namespace
