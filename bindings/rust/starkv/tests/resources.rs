//! Handles are freed: repeated create/destroy does not grow the process.
//! (Its own test binary, so no other test's allocations move the numbers.)
mod common;

use std::sync::Arc;

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn cycle(model: &Model, prompt: &[i32]) {
    let mut ctx = Context::new(model, &ContextParams::default().n_ctx(512).n_threads(1)).unwrap();
    let mut sampler = Sampler::greedy().unwrap();
    ctx.generate_to_string(Some(&mut sampler), prompt, &GenerateParams::default().max_tokens(4))
        .unwrap();
}

#[test]
fn repeated_create_destroy_200x() {
    let model = Arc::new(common::load());
    let prompt = model.tokenize("Once upon a time", true, false).unwrap();
    for _ in 0..20 {
        cycle(&model, &prompt);
    }
    let before = rss_bytes();
    for _ in 0..200 {
        cycle(&model, &prompt);
        // Errors allocate messages too.
        assert!(Model::load("/nonexistent.gguf").is_err());
    }
    let after_contexts = rss_bytes();
    // A leaked context keeps its KV pages (>= 320 KiB once a token is in), scratch and
    // thread pool: forgetting the 200 contexts grew RSS by about 70 MB when checked.
    assert!(
        after_contexts < before + 32 * 1024 * 1024,
        "RSS grew from {before} to {after_contexts} over 200 context cycles"
    );

    // Models too (1.2 MB file each; 200 leaks would be > 200 MB).
    for _ in 0..200 {
        let m = Model::load(common::model_path()).unwrap();
        let c = Context::with_shared_model(Arc::new(m), &ContextParams::default().n_ctx(64).n_threads(1)).unwrap();
        drop(c);
    }
    let after_models = rss_bytes();
    assert!(
        after_models < after_contexts + 32 * 1024 * 1024,
        "RSS grew from {after_contexts} to {after_models} over 200 model loads"
    );
}
