/* SWIG interface of the Java binding: package-private classes in ai.starkv
 * (StarkvNative, StarkvNativeJNI, struct proxies, the callback directors) that
 * mirror include/starkv/starkv.h one-to-one. The public API is the hand-written
 * layer in src/main/java/ai/starkv (Model, Context, Sampler, ...).
 *
 * Mapping: handles are Java longs; a starkv_status is an int (the Java layer
 * turns a failure into StarkvException with starkv_last_error()); out-handles
 * and scalar out-parameters are 1-element arrays; buffers are Java arrays;
 * callbacks are SWIG directors (NativePieceCallback, NativeProgressCallback).
 */
%module(directors="1") StarkvNative

%include <stdint.i>
%include <enumtypeunsafe.swg>
%javaconst(1);

%{
#include <atomic>
#include <cstdint>
#include <cstring>
#include "starkv/starkv.h"
%}

/* Nothing generated is public: users see only the hand-written layer. */
%pragma(java) jniclassclassmodifiers="final class"
%pragma(java) moduleclassmodifiers="final class"
/* The native library is loaded before the first native call (see NativeLibrary). */
%pragma(java) jniclasscode=%{
  static {
    NativeLibrary.load();
  }
%}
%typemap(javaclassmodifiers) SWIGTYPE "class"

/* uint64_t as a Java long (two's complement for values >= 2^63, e.g. seeds). */
%apply int64_t { uint64_t };

/* ---- handles as long --------------------------------------------------------- */
%define STARKV_HANDLE(TYPE)
%typemap(jni) TYPE *, const TYPE * "jlong"
%typemap(jtype) TYPE *, const TYPE * "long"
%typemap(jstype) TYPE *, const TYPE * "long"
%typemap(in) TYPE *, const TYPE * %{ $1 = ($1_ltype)(intptr_t)$input; %}
%typemap(out) TYPE *, const TYPE * %{ $result = (jlong)(intptr_t)$1; %}
%typemap(javain) TYPE *, const TYPE * "$javainput"
%typemap(javaout) TYPE *, const TYPE * { return $jnicall; }
%typemap(jni) TYPE ** "jlongArray"
%typemap(jtype) TYPE ** "long[]"
%typemap(jstype) TYPE ** "long[]"
%typemap(javain) TYPE ** "$javainput"
%typemap(in) TYPE ** ($*1_ltype tmp = NULL) {
    if (!$input || JCALL1(GetArrayLength, jenv, $input) < 1) {
        SWIG_JavaThrowException(jenv, SWIG_JavaIllegalArgumentException, "a long[1] is needed");
        return $null;
    }
    $1 = &tmp;
}
%typemap(argout) TYPE ** {
    if (!JCALL0(ExceptionCheck, jenv)) { /* a callback's exception may be pending */
        jlong v = (jlong)(intptr_t)tmp$argnum;
        JCALL4(SetLongArrayRegion, jenv, $input, 0, 1, &v);
    }
}
%enddef
STARKV_HANDLE(starkv_model)
STARKV_HANDLE(starkv_context)
STARKV_HANDLE(starkv_sampler)

/* ---- scalar out-parameters as 1-element arrays --------------------------------- */
%define STARKV_OUT1(CTYPE, NAME, JARR, JTYPE, JNITYPE, JNAME)
%typemap(jni) CTYPE *NAME "JARR"
%typemap(jtype) CTYPE *NAME "JTYPE[]"
%typemap(jstype) CTYPE *NAME "JTYPE[]"
%typemap(javain) CTYPE *NAME "$javainput"
%typemap(in) CTYPE *NAME (CTYPE tmp = 0) {
    if (!$input || JCALL1(GetArrayLength, jenv, $input) < 1) {
        SWIG_JavaThrowException(jenv, SWIG_JavaIllegalArgumentException, "a 1-element array is needed");
        return $null;
    }
    $1 = &tmp;
}
%typemap(argout) CTYPE *NAME {
    if (!JCALL0(ExceptionCheck, jenv)) {
        JNITYPE v = (JNITYPE)tmp$argnum;
        JCALL4(Set##JNAME##ArrayRegion, jenv, $input, 0, 1, &v);
    }
}
%enddef
STARKV_OUT1(size_t, n_out, jlongArray, long, jlong, Long)
STARKV_OUT1(size_t, out_n_scored, jlongArray, long, jlong, Long)
STARKV_OUT1(double, out_nll_sum, jdoubleArray, double, jdouble, Double)
STARKV_OUT1(starkv_token, out_token, jintArray, int, jint, Int)

/* ---- arrays ----------------------------------------------------------------------- */
%define STARKV_ARRAY(CTYPE, PTR, LEN, JARR, JTYPE, JNITYPE, JNAME, MODE)
%typemap(jni) (CTYPE *PTR, size_t LEN) "JARR"
%typemap(jtype) (CTYPE *PTR, size_t LEN) "JTYPE[]"
%typemap(jstype) (CTYPE *PTR, size_t LEN) "JTYPE[]"
%typemap(javain) (CTYPE *PTR, size_t LEN) "$javainput"
%typemap(in) (CTYPE *PTR, size_t LEN) {
    if (!$input) {
        SWIG_JavaThrowException(jenv, SWIG_JavaNullPointerException, "null array");
        return $null;
    }
    $1 = ($1_ltype)JCALL2(Get##JNAME##ArrayElements, jenv, $input, 0);
    if (!$1) return $null;
    $2 = (size_t)JCALL1(GetArrayLength, jenv, $input);
}
%typemap(argout) (CTYPE *PTR, size_t LEN) {
    JCALL3(Release##JNAME##ArrayElements, jenv, $input, (JNITYPE *)$1, MODE);
}
%enddef
STARKV_ARRAY(const starkv_token, tokens, n_tokens, jintArray, int, jint, Int, JNI_ABORT)
STARKV_ARRAY(const starkv_token, prompt, n_prompt, jintArray, int, jint, Int, JNI_ABORT)
STARKV_ARRAY(starkv_token, tokens, capacity, jintArray, int, jint, Int, 0)
STARKV_ARRAY(const float, logits, n_vocab, jfloatArray, float, jfloat, Float, JNI_ABORT)
STARKV_ARRAY(float, out, n, jfloatArray, float, jfloat, Float, 0)
%apply (const char *STRING, size_t LENGTH) { (const char *text, size_t len) };
%apply (char *STRING, size_t LENGTH) { (char *buf, size_t capacity) };
%apply (const char *STRING, size_t LENGTH) { (const char *piece, size_t len) };

/* ---- replaced by helpers (callbacks) ------------------------------------------------- */
/* The abort callback (0.2) is not bound yet: generation stops through the piece callback. */
%ignore starkv_context_set_abort_callback;
%ignore starkv_set_log_callback;
%ignore starkv_model_params;
%ignore starkv_model_params_default;
%ignore starkv_model_load;
%ignore starkv_context_logits;
%ignore starkv_generate_params;
%ignore starkv_generate_params_default;
%ignore starkv_generate;
%ignore starkv_piece_fn;
%ignore starkv_progress_fn;
%ignore starkv_log_fn;

%ignore starkv_tensor_info::shape;
/* Sequences, batches and saved KV state (0.2): not bound yet. */
%ignore starkv_pool_params;
%ignore starkv_pool_params_default;
%ignore starkv_context_create_pooled;
%ignore starkv_seq_create;
%ignore starkv_seq_remove;
%ignore starkv_seq_truncate;
%ignore starkv_seq_fork;
%ignore starkv_seq_n_past;
%ignore starkv_seq_prefill;
%ignore starkv_batch_item;
%ignore starkv_batch_eval;
%ignore starkv_batch_logits;
%ignore starkv_seq_logits;
%ignore starkv_pool_stats;
%ignore starkv_pool_stats_default;
%ignore starkv_context_pool_stats;
%ignore starkv_state_save;
%ignore starkv_state_save_file;
%ignore starkv_state_restore;
%ignore starkv_state_restore_file;
%include "starkv/starkv.h"
%extend starkv_tensor_info {
    int64_t shapeAt(int i) const { return i >= 0 && i < 4 ? $self->shape[i] : 0; }
}

/* ---- callbacks: directors ------------------------------------------------------------
 * SWIG's default director exception handling turns a Java exception into a C++
 * exception, which would unwind through the library's C frames. Instead the
 * exception stays pending, the C side sees false ("stop"), and the JVM throws it
 * when the native call (starkv_jni_generate / starkv_jni_model_load) returns. */
%feature("director") NativePieceCallback;
%feature("director") NativeProgressCallback;
%feature("director:except") NativePieceCallback::onPiece %{
    if (jenv->ExceptionCheck()) {
        this->failed = true;
        if (swigjobj) jenv->DeleteLocalRef(swigjobj);
        return false;
    }
%}
%feature("director:except") NativeProgressCallback::onProgress %{
    if (jenv->ExceptionCheck()) {
        this->failed = true;
        if (swigjobj) jenv->DeleteLocalRef(swigjobj);
        return false;
    }
%}
%typemap(javaclassmodifiers) NativePieceCallback "class"
%typemap(javaclassmodifiers) NativeProgressCallback "class"
%immutable NativePieceCallback::failed;
%immutable NativeProgressCallback::failed;

%inline %{
/* Receives each generated piece (complete UTF-8 bytes) and its token; returns
 * false to stop. failed: a Java exception is pending (set by the director). */
class NativePieceCallback {
public:
    bool failed = false;
    virtual ~NativePieceCallback() {}
    virtual bool onPiece(const char *piece, size_t len, int token) { return true; }
};

/* Load progress in [0, 1]; false cancels. */
class NativeProgressCallback {
public:
    bool failed = false;
    virtual ~NativeProgressCallback() {}
    virtual bool onProgress(float progress) { return true; }
};
%}

%{
static bool starkv_jni_piece(const char *piece, size_t len, starkv_token token, void *user_data) {
    NativePieceCallback *cb = static_cast<NativePieceCallback *>(user_data);
    if (cb->failed) return false; /* never call Java with an exception pending */
    const bool go = cb->onPiece(piece, len, token);
    return go && !cb->failed;
}
static bool starkv_jni_progress(float progress, void *user_data) {
    NativeProgressCallback *cb = static_cast<NativeProgressCallback *>(user_data);
    if (cb->failed) return false;
    const bool go = cb->onProgress(progress);
    return go && !cb->failed;
}
%}

%inline %{
/* starkv_model_load with an optional progress callback. */
starkv_status starkv_jni_model_load(const char *path, NativeProgressCallback *progress, starkv_model **out_model) {
    starkv_model_params params;
    starkv_model_params_default(&params);
    if (progress) {
        params.progress = starkv_jni_progress;
        params.progress_user_data = progress;
    }
    return starkv_model_load(path, &params, out_model);
}

/* A context's cancel flag (an address, as a long): installed as its abort
 * callback, read without any lock, so another thread can stop an eval, score or
 * generation. 0 when the callback cannot be installed (see starkv_last_error). */
int64_t starkv_jni_cancel_install(starkv_context *ctx) {
    auto *flag = new std::atomic<bool>(false);
    auto read = [](void *user) { return static_cast<std::atomic<bool> *>(user)->load(std::memory_order_acquire); };
    if (starkv_context_set_abort_callback(ctx, read, flag) != STARKV_OK) { delete flag; return 0; }
    return static_cast<int64_t>(reinterpret_cast<intptr_t>(flag));
}
void starkv_jni_cancel_set(int64_t flag, bool on) {
    reinterpret_cast<std::atomic<bool> *>(static_cast<intptr_t>(flag))->store(on, std::memory_order_release);
}
void starkv_jni_cancel_free(int64_t flag) { delete reinterpret_cast<std::atomic<bool> *>(static_cast<intptr_t>(flag)); }

/* starkv_context_logits copied into out (n floats, n <= n_vocab). */
starkv_status starkv_jni_logits(const starkv_context *ctx, int32_t i, float *out, size_t n) {
    const float *logits = nullptr;
    starkv_status st = starkv_context_logits(ctx, i, &logits);
    if (st == STARKV_OK) std::memcpy(out, logits, n * sizeof(float));
    return st;
}

/* starkv_generate with an optional piece callback. */
starkv_status starkv_jni_generate(starkv_context *ctx, starkv_sampler *sampler, const starkv_token *prompt,
                                  size_t n_prompt, int32_t max_tokens, bool stop_at_eos, NativePieceCallback *on_piece,
                                  starkv_generate_result *result) {
    starkv_generate_params params;
    starkv_generate_params_default(&params);
    params.max_tokens = max_tokens;
    params.stop_at_eos = stop_at_eos;
    if (on_piece) {
        params.on_piece = starkv_jni_piece;
        params.user_data = on_piece;
    }
    return starkv_generate(ctx, sampler, prompt, n_prompt, &params, result);
}
%}
