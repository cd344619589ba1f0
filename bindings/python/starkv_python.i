/* SWIG interface of the Python binding: module starkv.capi, a one-to-one
 * mirror of include/starkv/starkv.h. The Pythonic layer is starkv/__init__.py.
 *
 * Conventions of this module (and nothing more than glue):
 *  - a function returning starkv_status raises the matching starkv.StarkvError
 *    subclass (built by starkv._errors from the status and starkv_last_error())
 *    and otherwise returns None or its out-parameters;
 *  - handles are opaque SWIG pointers; out-handles (starkv_model **out_model...)
 *    are returned;
 *  - token arrays are numpy int32 vectors, logits come back as numpy
 *    float32 copies;
 *  - the GIL is held by default (%nothread) and released only around the calls
 *    that compute (load, context create/eval/decode/score, generate, tokenize);
 *    callbacks take it back through PyGILState_Ensure.
 */
%module(package="starkv", threads="1") capi
%nothread;

%{
#define SWIG_FILE_WITH_INIT
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <cstring>
#include <string>
#include <vector>
#include "starkv/starkv.h"
%}

%include <stdint.i>
%init %{
import_array();
%}

%{
/* Sets the Python exception for a failed status: starkv._errors.make_error
 * (status, message) builds the StarkvError subclass. Reads the thread's
 * last-error message before anything else can touch it. */
static void starkv_py_raise(starkv_status status) {
    const std::string message = starkv_last_error();
    PyObject *msg = PyUnicode_DecodeUTF8(message.data(), (Py_ssize_t)message.size(), "replace");
    if (!msg) return;
    PyObject *mod = PyImport_ImportModule("starkv._errors");
    if (!mod) { Py_DECREF(msg); return; }
    PyObject *err = PyObject_CallMethod(mod, "make_error", "iO", (int)status, msg);
    Py_DECREF(mod);
    Py_DECREF(msg);
    if (!err) return;
    PyErr_SetObject((PyObject *)Py_TYPE(err), err);
    Py_DECREF(err);
}
%}

/* ---- status -> exception ------------------------------------------------- */
%typemap(out) starkv_status {
    if ($1 != STARKV_OK) {
        starkv_py_raise($1);
        SWIG_fail;
    }
    $result = SWIG_Py_Void();
}

/* ---- out-parameters ----------------------------------------------------------- */
%define STARKV_HANDLE_OUT(TYPE, NAME)
%typemap(in, numinputs=0) TYPE **NAME (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **NAME {
    $result = SWIG_Python_AppendOutput($result, SWIG_NewPointerObj(SWIG_as_voidptr(*$1), $*1_descriptor, 0));
}
%enddef
STARKV_HANDLE_OUT(starkv_context, out_ctx)
STARKV_HANDLE_OUT(starkv_sampler, out_sampler)

%typemap(in, numinputs=0) double *out_nll_sum (double tmp = 0) { $1 = &tmp; }
%typemap(argout) double *out_nll_sum { $result = SWIG_Python_AppendOutput($result, PyFloat_FromDouble(*$1)); }
%typemap(in, numinputs=0) size_t *out_n_scored (size_t tmp = 0) { $1 = &tmp; }
%typemap(argout) size_t *out_n_scored { $result = SWIG_Python_AppendOutput($result, PyLong_FromSize_t(*$1)); }
%typemap(in, numinputs=0) starkv_token *out_token (starkv_token tmp = 0) { $1 = &tmp; }
%typemap(argout) starkv_token *out_token { $result = SWIG_Python_AppendOutput($result, PyLong_FromLong(*$1)); }

/* ---- arrays in ----------------------------------------------------------------- */
/* A 1-D array of CTYPE from anything numpy converts safely (the Pythonic layer
 * passes contiguous int32 / float32 arrays, so this is normally no copy). */
%define STARKV_ARRAY_IN(CTYPE, NPYTYPE, PTR, LEN)
%typemap(in) (const CTYPE *PTR, size_t LEN) (PyArrayObject *arr = NULL) {
    arr = (PyArrayObject *)PyArray_FROMANY($input, NPYTYPE, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!arr) SWIG_fail;
    $1 = (CTYPE *)PyArray_DATA(arr);
    $2 = (size_t)PyArray_DIM(arr, 0);
}
%typemap(freearg) (const CTYPE *PTR, size_t LEN) { Py_XDECREF(arr$argnum); }
%enddef
STARKV_ARRAY_IN(starkv_token, NPY_INT32, tokens, n_tokens)
STARKV_ARRAY_IN(starkv_token, NPY_INT32, prompt, n_prompt)
STARKV_ARRAY_IN(float, NPY_FLOAT32, logits, n_vocab)

/* ---- calls that compute release the GIL ---------------------------------------- */
%thread starkv_context_create;
%thread starkv_context_eval;
%thread starkv_context_decode;
%thread starkv_context_score;
%thread starkv_sampler_sample;

/* ---- replaced by the helpers below (callbacks, sized outputs) -------------------- */
/* The abort callback (0.2) is not bound yet: generation stops through the piece callback. */
%ignore starkv_context_set_abort_callback;
%ignore starkv_set_log_callback;
%ignore starkv_model_params;
%ignore starkv_model_params_default;
%ignore starkv_model_load;
%ignore starkv_tokenize;
%ignore starkv_token_to_piece;
%ignore starkv_detokenize;
%ignore starkv_context_logits;
%ignore starkv_generate_params;
%ignore starkv_generate_params_default;
%ignore starkv_generate;

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

/* ---- helpers: C signatures Python can call, with callbacks as callables ----------- */
%{
#include <atomic>
namespace {

/* user_data of the trampolines: the callable and the first exception it raised. */
struct PyCallback {
    PyObject *fn = nullptr;
    PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
    bool failed() const { return type != nullptr; }
    /* Re-raises the stored exception in the caller (returns true if there was one). */
    bool restore() {
        if (!type) return false;
        PyErr_Restore(type, value, tb);
        type = value = tb = nullptr;
        return true;
    }
    ~PyCallback() { Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb); }
};

/* Calls fn(args...) with the GIL held; an exception is stored and reported as
 * "stop" (false). A callback that already failed is not called again. */
bool call_bool(PyCallback *cb, PyObject *args) {
    if (!args) { PyErr_Fetch(&cb->type, &cb->value, &cb->tb); return false; }
    PyObject *r = PyObject_CallObject(cb->fn, args);
    Py_DECREF(args);
    if (!r) { PyErr_Fetch(&cb->type, &cb->value, &cb->tb); return false; }
    int truth = r == Py_None ? 1 : PyObject_IsTrue(r); /* None (no return) means continue */
    Py_DECREF(r);
    if (truth < 0) { PyErr_Fetch(&cb->type, &cb->value, &cb->tb); return false; }
    return truth != 0;
}

bool piece_trampoline(const char *piece, size_t len, starkv_token token, void *user_data) {
    PyCallback *cb = static_cast<PyCallback *>(user_data);
    PyGILState_STATE g = PyGILState_Ensure();
    bool go = false;
    if (!cb->failed()) go = call_bool(cb, Py_BuildValue("(y#i)", piece, (Py_ssize_t)len, (int)token));
    PyGILState_Release(g);
    return go;
}

bool progress_trampoline(float progress, void *user_data) {
    PyCallback *cb = static_cast<PyCallback *>(user_data);
    PyGILState_STATE g = PyGILState_Ensure();
    bool go = false;
    if (!cb->failed()) go = call_bool(cb, Py_BuildValue("(d)", (double)progress));
    PyGILState_Release(g);
    return go;
}

PyObject *g_log_fn = nullptr; /* owned; guarded by the GIL */

void log_trampoline(starkv_log_level level, const char *message, void *) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    if (g_log_fn) {
        PyObject *r = PyObject_CallFunction(g_log_fn, "iy", (int)level, message);
        if (!r) PyErr_WriteUnraisable(g_log_fn); /* a logger must not break the call that logged */
        Py_XDECREF(r);
    }
    PyGILState_Release(g);
}

/* Two-call sizing of the C API's (buf, capacity, *n_out) outputs. */
template <typename T, typename Call>
starkv_status sized(std::vector<T> &out, size_t guess, Call &&call) {
    out.resize(guess);
    size_t n = 0;
    starkv_status st = call(out.data(), out.size(), &n);
    if (st == STARKV_ERR_BUFFER_TOO_SMALL) {
        out.resize(n);
        st = call(out.data(), out.size(), &n);
    }
    if (st == STARKV_OK) out.resize(n);
    return st;
}

}  // namespace
%}

%inline %{
/* starkv_model_load(path, progress) -> model handle. progress: callable(float) -> bool or None. */
PyObject *py_model_load(const char *path, PyObject *progress) {
    starkv_model_params params;
    starkv_model_params_default(&params);
    PyCallback cb;
    if (progress && progress != Py_None) {
        cb.fn = progress;
        params.progress = progress_trampoline;
        params.progress_user_data = &cb;
    }
    starkv_model *model = nullptr;
    starkv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = starkv_model_load(path, &params, &model);
    Py_END_ALLOW_THREADS
    if (cb.restore()) { starkv_model_free(model); return nullptr; }
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    return SWIG_NewPointerObj(SWIG_as_voidptr(model), SWIGTYPE_p_starkv_model, 0);
}

/* starkv_tokenize: bytes -> list[int]. */
PyObject *py_tokenize(const starkv_model *model, PyObject *text, bool add_bos, bool parse_special) {
    char *data = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(text, &data, &len) < 0) return nullptr;
    std::vector<starkv_token> toks;
    starkv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = sized(toks, (size_t)len + 4, [&](starkv_token *buf, size_t cap, size_t *n) {
        return starkv_tokenize(model, data, (size_t)len, add_bos, parse_special, buf, cap, n);
    });
    Py_END_ALLOW_THREADS
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    PyObject *list = PyList_New((Py_ssize_t)toks.size());
    if (!list) return nullptr;
    for (size_t i = 0; i < toks.size(); ++i) PyList_SET_ITEM(list, (Py_ssize_t)i, PyLong_FromLong(toks[i]));
    return list;
}

/* starkv_token_to_piece -> bytes. */
PyObject *py_token_to_piece(const starkv_model *model, starkv_token token, bool render_special) {
    std::vector<char> buf;
    starkv_status st = sized(buf, 64, [&](char *b, size_t cap, size_t *n) {
        return starkv_token_to_piece(model, token, render_special, b, cap, n);
    });
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    return PyBytes_FromStringAndSize(buf.data(), (Py_ssize_t)buf.size());
}

/* starkv_detokenize -> bytes. */
PyObject *py_detokenize(const starkv_model *model, const starkv_token *tokens, size_t n_tokens) {
    std::vector<char> buf;
    starkv_status st = sized(buf, n_tokens * 8 + 16, [&](char *b, size_t cap, size_t *n) {
        return starkv_detokenize(model, tokens, n_tokens, b, cap, n);
    });
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    return PyBytes_FromStringAndSize(buf.data(), (Py_ssize_t)buf.size());
}

/* starkv_context_logits(ctx, i) -> numpy float32 copy of n_vocab values. */
PyObject *py_context_logits(const starkv_context *ctx, int32_t i, size_t n_vocab) {
    const float *logits = nullptr;
    starkv_status st = starkv_context_logits(ctx, i, &logits);
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    npy_intp dims[1] = {(npy_intp)n_vocab};
    PyObject *arr = PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    if (!arr) return nullptr;
    std::memcpy(PyArray_DATA((PyArrayObject *)arr), logits, n_vocab * sizeof(float));
    return arr;
}

/* starkv_generate with on_piece: callable(piece: bytes, token: int) -> bool|None.
 * The GIL is released while the core runs; the trampoline takes it back. An
 * exception raised by on_piece makes the trampoline return false (the core
 * stops cleanly) and is re-raised here once starkv_generate has returned. */
PyObject *py_generate(starkv_context *ctx, starkv_sampler *sampler, const starkv_token *prompt, size_t n_prompt,
                      int32_t max_tokens, bool stop_at_eos, PyObject *on_piece, starkv_generate_result *result) {
    starkv_generate_params params;
    starkv_generate_params_default(&params);
    params.max_tokens = max_tokens;
    params.stop_at_eos = stop_at_eos;
    PyCallback cb;
    if (on_piece && on_piece != Py_None) {
        cb.fn = on_piece;
        params.on_piece = piece_trampoline;
        params.user_data = &cb;
    }
    starkv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = starkv_generate(ctx, sampler, prompt, n_prompt, &params, result);
    Py_END_ALLOW_THREADS
    if (cb.restore()) return nullptr;
    if (st != STARKV_OK) { starkv_py_raise(st); return nullptr; }
    Py_RETURN_NONE;
}

/* A context's cancel flag, as a capsule that owns it: installed as the
 * context's abort callback, which reads it without the GIL, so another Python
 * thread can stop an eval, score or generation that runs with the GIL released. */
PyObject *py_cancel_flag_install(starkv_context *ctx) {
    auto *flag = new std::atomic<bool>(false);
    auto read = [](void *user) { return static_cast<std::atomic<bool> *>(user)->load(std::memory_order_acquire); };
    starkv_status st = starkv_context_set_abort_callback(ctx, read, flag);
    if (st != STARKV_OK) { delete flag; starkv_py_raise(st); return nullptr; }
    PyObject *cap = PyCapsule_New(flag, "starkv.cancel_flag", [](PyObject *c) {
        delete static_cast<std::atomic<bool> *>(PyCapsule_GetPointer(c, "starkv.cancel_flag"));
    });
    if (!cap) delete flag;
    return cap;
}

PyObject *py_cancel_flag_set(PyObject *capsule, bool on) {
    auto *flag = static_cast<std::atomic<bool> *>(PyCapsule_GetPointer(capsule, "starkv.cancel_flag"));
    if (!flag) return nullptr;
    flag->store(on, std::memory_order_release);
    Py_RETURN_NONE;
}

/* shape[0..n_dims) of a tensor_info as a tuple. */
PyObject *py_tensor_shape(const starkv_tensor_info *t) {
    int n = t->n_dims < 0 ? 0 : t->n_dims > 4 ? 4 : t->n_dims;
    PyObject *tup = PyTuple_New(n);
    if (!tup) return nullptr;
    for (int i = 0; i < n; ++i) PyTuple_SET_ITEM(tup, i, PyLong_FromLongLong(t->shape[i]));
    return tup;
}

/* starkv_set_log_callback: fn(level: int, message: bytes) or None. */
PyObject *py_set_log_callback(PyObject *fn) {
    if (fn == Py_None) fn = nullptr;
    starkv_set_log_callback(nullptr, nullptr);
    Py_XINCREF(fn);
    Py_XSETREF(g_log_fn, fn);
    if (fn) starkv_set_log_callback(log_trampoline, nullptr);
    Py_RETURN_NONE;
}
%}
