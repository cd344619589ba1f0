/* A desktop chat window (GTK 4) that embeds starkv the way an application would.
 *
 *   starkv-desktop MODEL [--temp T] [-n N]
 *
 * Type a prompt, press Send: the model continues the conversation on a worker
 * thread and its pieces stream into the text view. Cancel stops the generation
 * through the library (the piece callback returns false). The status line shows
 * the KV cache live: bytes in use (tokens x bytes per token), bytes reserved,
 * and the STAR-KV compression against the same model's uncompressed cache.
 *
 * Threading: GTK is touched only on the main thread. The worker owns the
 * starkv context while it generates and hands every piece (with a KV snapshot)
 * to the main loop through g_idle_add.
 *
 * Self-test (used by ctest under xvfb-run, also handy to make screenshots):
 *   starkv-desktop MODEL --self-test PROMPT [-n N] [--cancel-after K]
 *                        [--delay-ms D] [--dump-text FILE] [--screenshot FILE.png]
 * types PROMPT, clicks Send (and Cancel once K pieces have arrived; --delay-ms
 * slows the worker by D ms a piece, as a bigger model would), writes the
 * text view's contents to FILE, a PNG of the window to FILE.png, prints one
 * line "self-test: generated=G stop=REASON" and exits 0 (1 on any failure). */
#include <gtk/gtk.h>
#include <starkv/starkv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    /* set at start-up */
    starkv_model *model;
    starkv_context *ctx;
    starkv_sampler *sampler;
    bool ctx_has_text; /* the context holds earlier turns: no BOS for the next prompt */
    float temperature;
    int max_tokens;
    /* self-test */
    const char *self_test_prompt;
    int cancel_after;
    int delay_ms; /* per piece, on the worker: a slow model, so that Cancel lands mid-story */
    const char *dump_text_path;
    const char *screenshot_path;
    int self_test_status; /* exit code */
    /* widgets */
    GtkWidget *window, *view, *entry, *send, *cancel, *kv_label, *status_label;
    GtkTextBuffer *buffer;
    /* the generation in flight */
    GThread *worker;
    gint cancel_requested; /* atomic: read by the worker's piece callback */
    int pieces_shown;      /* main thread only */
    bool closing;          /* main thread only: the window is being destroyed */
} App;

typedef struct {
    App *app;
    starkv_token *tokens;
    size_t n_tokens;
} Job;

/* One message from the worker to the main loop. */
typedef struct {
    App *app;
    char *piece; /* NULL for the final message */
    starkv_kv_stats kv;
    /* final message */
    starkv_status status;
    starkv_generate_result result;
    char error[256];
} Update;

static void format_bytes(char *buf, size_t n, uint64_t bytes) {
    if (bytes >= (uint64_t)1 << 20)
        snprintf(buf, n, "%.2f MiB", bytes / (double)(1 << 20));
    else if (bytes >= 1024)
        snprintf(buf, n, "%.1f KiB", bytes / 1024.0);
    else
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
}

static void show_kv(App *app, const starkv_kv_stats *kv) {
    char in_use[32], reserved[32], per_token[32], uncompressed[32];
    format_bytes(in_use, sizeof in_use, kv->bytes_in_use);
    format_bytes(reserved, sizeof reserved, kv->bytes_reserved);
    format_bytes(per_token, sizeof per_token, kv->bytes_per_token);
    format_bytes(uncompressed, sizeof uncompressed,
                 kv->bytes_per_token_uncompressed * (uint64_t)kv->n_tokens);
    char text[320];
    int n = snprintf(text, sizeof text, "KV cache: %s in use (%u tokens \xc3\x97 %s) \xc2\xb7 %s reserved \xc2\xb7 ",
                     in_use, kv->n_tokens, per_token, reserved);
    if (kv->bytes_per_token && kv->bytes_per_token < kv->bytes_per_token_uncompressed)
        snprintf(text + n, sizeof text - n, "STAR-KV: %.2f\xc3\x97 smaller than uncompressed (%s)",
                 (double)kv->bytes_per_token_uncompressed / kv->bytes_per_token, uncompressed);
    else
        snprintf(text + n, sizeof text - n, "uncompressed (no STAR-KV factors in this model)");
    gtk_label_set_text(GTK_LABEL(app->kv_label), text);
}

static void refresh_kv(App *app) {
    starkv_kv_stats kv;
    starkv_kv_stats_default(&kv);
    if (starkv_context_kv_stats(app->ctx, &kv) == STARKV_OK) show_kv(app, &kv);
}

static void set_busy(App *app, bool busy) {
    gtk_widget_set_sensitive(app->send, !busy);
    gtk_widget_set_sensitive(app->entry, !busy);
    gtk_widget_set_sensitive(app->cancel, busy);
}

static void append_text(App *app, const char *text, const char *tag) {
    GtkTextIter end;
    gtk_text_buffer_get_end_iter(app->buffer, &end);
    if (tag)
        gtk_text_buffer_insert_with_tags_by_name(app->buffer, &end, text, -1, tag, NULL);
    else
        gtk_text_buffer_insert(app->buffer, &end, text, -1);
    gtk_text_buffer_get_end_iter(app->buffer, &end);
    GtkTextMark *mark = gtk_text_buffer_get_insert(app->buffer);
    gtk_text_buffer_place_cursor(app->buffer, &end);
    gtk_text_view_scroll_mark_onscreen(GTK_TEXT_VIEW(app->view), mark);
}

static gboolean show_update(gpointer data);

/* ---- self-test: screenshot and the end of the run ---------------------------- */

/* Renders the window as it is on screen (GtkWidgetPaintable -> render node ->
 * texture) and saves it as PNG. */
static bool save_screenshot(App *app, const char *path) {
    int w = gtk_widget_get_width(app->window), h = gtk_widget_get_height(app->window);
    GskRenderer *renderer = gtk_native_get_renderer(GTK_NATIVE(app->window));
    if (w <= 0 || h <= 0 || !renderer) return false;
    GdkPaintable *paintable = gtk_widget_paintable_new(app->window);
    GtkSnapshot *snapshot = gtk_snapshot_new();
    gdk_paintable_snapshot(paintable, GDK_SNAPSHOT(snapshot), w, h);
    GskRenderNode *node = gtk_snapshot_free_to_node(snapshot);
    bool ok = false;
    if (node) {
        GdkTexture *texture = gsk_renderer_render_texture(renderer, node, &GRAPHENE_RECT_INIT(0, 0, w, h));
        ok = texture && gdk_texture_save_to_png(texture, path);
        if (texture) g_object_unref(texture);
        gsk_render_node_unref(node);
    }
    g_object_unref(paintable);
    return ok;
}

static gboolean finish_self_test(gpointer data) {
    App *app = data;
    if (app->dump_text_path) {
        GtkTextIter a, b;
        gtk_text_buffer_get_bounds(app->buffer, &a, &b);
        char *text = gtk_text_buffer_get_text(app->buffer, &a, &b, FALSE);
        GError *err = NULL;
        if (!g_file_set_contents(app->dump_text_path, text, -1, &err)) {
            fprintf(stderr, "self-test: %s\n", err->message);
            g_error_free(err);
            app->self_test_status = 1;
        }
        g_free(text);
    }
    if (app->screenshot_path && !save_screenshot(app, app->screenshot_path)) {
        fprintf(stderr, "self-test: cannot save the screenshot %s\n", app->screenshot_path);
        app->self_test_status = 1;
    }
    app->closing = true;
    gtk_window_destroy(GTK_WINDOW(app->window));
    return G_SOURCE_REMOVE;
}

/* ---- the worker ------------------------------------------------------------- */

static bool on_piece(const char *piece, size_t len, starkv_token token, void *user_data) {
    (void)token;
    App *app = user_data;
    Update *u = g_new0(Update, 1);
    u->app = app;
    u->piece = g_strndup(piece, len);
    starkv_kv_stats_default(&u->kv);
    /* Same thread as starkv_generate: the context is ours between steps. */
    starkv_context_kv_stats(app->ctx, &u->kv);
    g_idle_add(show_update, u);
    if (app->delay_ms > 0) g_usleep((gulong)app->delay_ms * 1000);
    return !g_atomic_int_get(&app->cancel_requested);
}

/* Asked by the library before each chunk of a long prompt and each token: Cancel
 * also stops a prefill, which the piece callback cannot reach. */
static bool on_abort(void *user_data) {
    App *app = user_data;
    return g_atomic_int_get(&app->cancel_requested) != 0;
}

static gpointer generate_worker(gpointer data) {
    Job *job = data;
    App *app = job->app;
    Update *done = g_new0(Update, 1);
    done->app = app;
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = app->max_tokens;
    gp.on_piece = on_piece;
    gp.user_data = app;
    starkv_generate_result_default(&done->result);
    const uint32_t n_past_before = starkv_context_n_past(app->ctx);
    done->status = starkv_generate(app->ctx, app->sampler, job->tokens, job->n_tokens, &gp, &done->result);
    if (done->status == STARKV_ERR_CANCELLED) {
        /* Stopped by on_abort: an ordinary Cancel. A cancelled prompt left the
         * context as it was; otherwise every emitted token is cached. */
        const uint32_t held = starkv_context_n_past(app->ctx) - n_past_before;
        done->status = STARKV_OK;
        done->result.stop_reason = STARKV_STOP_CALLBACK;
        done->result.n_prompt_tokens = held ? (uint32_t)job->n_tokens : 0;
        done->result.n_generated = held ? held - (uint32_t)job->n_tokens : 0;
    }
    if (done->status != STARKV_OK) g_strlcpy(done->error, starkv_last_error(), sizeof done->error);
    starkv_kv_stats_default(&done->kv);
    starkv_context_kv_stats(app->ctx, &done->kv);
    g_free(job->tokens);
    g_free(job);
    g_idle_add(show_update, done);
    return NULL;
}

static const char *stop_name(int reason) {
    switch (reason) {
    case STARKV_STOP_MAX_TOKENS: return "max-tokens";
    case STARKV_STOP_EOS: return "eos";
    case STARKV_STOP_CALLBACK: return "cancelled";
    case STARKV_STOP_CONTEXT_FULL: return "context-full";
    default: return "unknown";
    }
}

/* Main thread: one piece, or the end of the generation. */
static gboolean show_update(gpointer data) {
    Update *u = data;
    App *app = u->app;
    if (app->closing) { /* the window is gone; the worker was joined by on_close_request */
        g_free(u->piece);
        g_free(u);
        return G_SOURCE_REMOVE;
    }
    show_kv(app, &u->kv);
    if (u->piece) {
        append_text(app, u->piece, NULL);
        app->pieces_shown++;
        if (app->cancel_after > 0 && app->pieces_shown == app->cancel_after &&
            gtk_widget_get_sensitive(app->cancel))
            g_signal_emit_by_name(app->cancel, "clicked");
        g_free(u->piece);
        g_free(u);
        return G_SOURCE_REMOVE;
    }
    /* The worker's last message: every piece before it has been shown (g_idle_add keeps order). */
    g_thread_join(app->worker);
    app->worker = NULL;
    char line[512];
    if (u->status == STARKV_OK) {
        double tps = u->result.decode_seconds > 0 ? u->result.n_generated / u->result.decode_seconds : 0;
        snprintf(line, sizeof line, "%u tokens, %.1f tokens/s, stop: %s", u->result.n_generated, tps,
                 stop_name(u->result.stop_reason));
        app->ctx_has_text = true;
    } else {
        snprintf(line, sizeof line, "error %s: %s", starkv_status_name(u->status), u->error);
    }
    gtk_label_set_text(GTK_LABEL(app->status_label), line);
    set_busy(app, false);
    gtk_widget_grab_focus(app->entry);
    if (app->self_test_prompt) {
        if (u->status == STARKV_OK) {
            printf("self-test: generated=%u stop=%s pieces=%d\n", u->result.n_generated,
                   stop_name(u->result.stop_reason), app->pieces_shown);
            fflush(stdout);
        } else {
            fprintf(stderr, "self-test: %s\n", line);
            app->self_test_status = 1;
        }
        /* Let GTK lay out and draw the last text before the screenshot. */
        g_timeout_add(300, finish_self_test, app);
    }
    g_free(u);
    return G_SOURCE_REMOVE;
}

/* ---- buttons ---------------------------------------------------------------- */

static void on_send(GtkWidget *widget, gpointer data) {
    (void)widget;
    App *app = data;
    if (app->worker) return;
    const char *prompt = gtk_editable_get_text(GTK_EDITABLE(app->entry));
    if (!*prompt) return;
    size_t len = strlen(prompt), n = 0, cap = len + 8;
    starkv_token *tokens = g_new(starkv_token, cap);
    starkv_status st = starkv_tokenize(app->model, prompt, len, !app->ctx_has_text, false, tokens, cap, &n);
    /* A conversation that no longer fits starts over. */
    if (st == STARKV_OK && starkv_context_n_past(app->ctx) + n + 1 > starkv_context_n_ctx(app->ctx)) {
        starkv_context_reset(app->ctx);
        starkv_sampler_reset(app->sampler);
        app->ctx_has_text = false;
        st = starkv_tokenize(app->model, prompt, len, true, false, tokens, cap, &n);
    }
    if (st != STARKV_OK) {
        gtk_label_set_text(GTK_LABEL(app->status_label), starkv_last_error());
        g_free(tokens);
        return;
    }
    if (gtk_text_buffer_get_char_count(app->buffer) > 0) append_text(app, "\n\n", NULL);
    append_text(app, prompt, "prompt");
    gtk_editable_set_text(GTK_EDITABLE(app->entry), "");
    gtk_label_set_text(GTK_LABEL(app->status_label), "generating\xe2\x80\xa6");
    set_busy(app, true);

    Job *job = g_new0(Job, 1);
    job->app = app;
    job->tokens = tokens;
    job->n_tokens = n;
    g_atomic_int_set(&app->cancel_requested, 0);
    app->pieces_shown = 0;
    app->worker = g_thread_new("starkv-generate", generate_worker, job);
}

static void on_cancel(GtkWidget *widget, gpointer data) {
    (void)widget;
    App *app = data;
    g_atomic_int_set(&app->cancel_requested, 1);
    gtk_widget_set_sensitive(app->cancel, false);
    gtk_label_set_text(GTK_LABEL(app->status_label), "cancelling\xe2\x80\xa6");
}

/* Closing the window mid-generation: stop the worker before the context goes. */
static gboolean on_close_request(GtkWindow *window, gpointer data) {
    (void)window;
    App *app = data;
    app->closing = true;
    if (app->worker) {
        g_atomic_int_set(&app->cancel_requested, 1);
        g_thread_join(app->worker);
        app->worker = NULL;
    }
    return FALSE;
}

static gboolean start_self_test(gpointer data) {
    App *app = data;
    gtk_editable_set_text(GTK_EDITABLE(app->entry), app->self_test_prompt);
    g_signal_emit_by_name(app->send, "clicked");
    if (!app->worker) { /* Send refused the prompt */
        fprintf(stderr, "self-test: Send did not start a generation\n");
        app->self_test_status = 1;
        gtk_window_destroy(GTK_WINDOW(app->window));
    }
    return G_SOURCE_REMOVE;
}

static void on_activate(GtkApplication *gtk_app, gpointer data) {
    App *app = data;
    app->window = gtk_application_window_new(gtk_app);
    gtk_window_set_title(GTK_WINDOW(app->window), "starkv chat");
    gtk_window_set_default_size(GTK_WINDOW(app->window), 720, 480);
    g_signal_connect(app->window, "close-request", G_CALLBACK(on_close_request), app);

    GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 6);
    gtk_widget_set_margin_start(box, 8);
    gtk_widget_set_margin_end(box, 8);
    gtk_widget_set_margin_top(box, 8);
    gtk_widget_set_margin_bottom(box, 8);
    gtk_window_set_child(GTK_WINDOW(app->window), box);

    app->view = gtk_text_view_new();
    gtk_text_view_set_editable(GTK_TEXT_VIEW(app->view), FALSE);
    gtk_text_view_set_cursor_visible(GTK_TEXT_VIEW(app->view), FALSE);
    gtk_text_view_set_wrap_mode(GTK_TEXT_VIEW(app->view), GTK_WRAP_WORD_CHAR);
    gtk_text_view_set_left_margin(GTK_TEXT_VIEW(app->view), 6);
    gtk_text_view_set_right_margin(GTK_TEXT_VIEW(app->view), 6);
    app->buffer = gtk_text_view_get_buffer(GTK_TEXT_VIEW(app->view));
    gtk_text_buffer_create_tag(app->buffer, "prompt", "weight", PANGO_WEIGHT_BOLD, "foreground", "#1c5fb0", NULL);
    GtkWidget *scroll = gtk_scrolled_window_new();
    gtk_scrolled_window_set_child(GTK_SCROLLED_WINDOW(scroll), app->view);
    gtk_widget_set_vexpand(scroll, TRUE);
    gtk_box_append(GTK_BOX(box), scroll);

    GtkWidget *row = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 6);
    app->entry = gtk_entry_new();
    gtk_entry_set_placeholder_text(GTK_ENTRY(app->entry), "Once upon a time");
    gtk_widget_set_hexpand(app->entry, TRUE);
    app->send = gtk_button_new_with_label("Send");
    app->cancel = gtk_button_new_with_label("Cancel");
    gtk_box_append(GTK_BOX(row), app->entry);
    gtk_box_append(GTK_BOX(row), app->send);
    gtk_box_append(GTK_BOX(row), app->cancel);
    gtk_box_append(GTK_BOX(box), row);
    g_signal_connect(app->send, "clicked", G_CALLBACK(on_send), app);
    g_signal_connect(app->entry, "activate", G_CALLBACK(on_send), app);
    g_signal_connect(app->cancel, "clicked", G_CALLBACK(on_cancel), app);

    app->kv_label = gtk_label_new("");
    app->status_label = gtk_label_new("ready");
    gtk_label_set_xalign(GTK_LABEL(app->kv_label), 0);
    gtk_label_set_xalign(GTK_LABEL(app->status_label), 0);
    gtk_label_set_wrap(GTK_LABEL(app->kv_label), TRUE);
    gtk_box_append(GTK_BOX(box), app->kv_label);
    gtk_box_append(GTK_BOX(box), app->status_label);

    set_busy(app, false);
    refresh_kv(app);
    gtk_window_present(GTK_WINDOW(app->window));
    gtk_widget_grab_focus(app->entry);
    if (app->self_test_prompt) g_timeout_add(200, start_self_test, app);
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s MODEL [--temp T] [-n N] [--self-test PROMPT [--cancel-after K] "
            "[--delay-ms D] [--dump-text FILE] [--screenshot FILE.png]]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    App app = {0};
    app.temperature = 0.0f; /* greedy: the same prompt gives the same text */
    app.max_tokens = 128;
    const char *model_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--temp") && has_value) app.temperature = (float)atof(argv[++i]);
        else if (!strcmp(a, "-n") && has_value) app.max_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--self-test") && has_value) app.self_test_prompt = argv[++i];
        else if (!strcmp(a, "--cancel-after") && has_value) app.cancel_after = atoi(argv[++i]);
        else if (!strcmp(a, "--delay-ms") && has_value) app.delay_ms = atoi(argv[++i]);
        else if (!strcmp(a, "--dump-text") && has_value) app.dump_text_path = argv[++i];
        else if (!strcmp(a, "--screenshot") && has_value) app.screenshot_path = argv[++i];
        else if (a[0] != '-' && !model_path) model_path = a;
        else return usage(argv[0]);
    }
    if (!model_path || app.max_tokens <= 0) return usage(argv[0]);

    if (starkv_model_load(model_path, NULL, &app.model) != STARKV_OK) {
        fprintf(stderr, "starkv-desktop: %s\n", starkv_last_error());
        return 1;
    }
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = app.temperature;
    if (starkv_context_create(app.model, &cp, &app.ctx) != STARKV_OK ||
        starkv_context_set_abort_callback(app.ctx, on_abort, &app) != STARKV_OK ||
        starkv_sampler_create(&sp, &app.sampler) != STARKV_OK) {
        fprintf(stderr, "starkv-desktop: %s\n", starkv_last_error());
        starkv_context_free(app.ctx);
        starkv_model_free(app.model);
        return 1;
    }

    /* Our own options are parsed above: GTK gets only the program name. NON_UNIQUE:
     * several windows (or test runs) may be open at once. */
    GtkApplication *gtk_app = gtk_application_new("org.starkv.Chat", G_APPLICATION_NON_UNIQUE);
    g_signal_connect(gtk_app, "activate", G_CALLBACK(on_activate), &app);
    int rc = g_application_run(G_APPLICATION(gtk_app), 1, argv);
    g_object_unref(gtk_app);
    if (app.worker) g_thread_join(app.worker);

    starkv_sampler_free(app.sampler);
    starkv_context_free(app.ctx);
    starkv_model_free(app.model);
    if (app.self_test_prompt) return app.self_test_status;
    return rc;
}
