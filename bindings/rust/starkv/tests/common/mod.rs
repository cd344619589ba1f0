//! Paths and helpers shared by the integration tests.
#![allow(dead_code)]

use std::env;
use std::path::PathBuf;

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler};

/// The repository root (bindings/rust/starkv/../../..).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// `STARKV_SHARED_DIR`, else `<repo>/../shared`.
pub fn shared_dir() -> PathBuf {
    env::var_os("STARKV_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

pub fn model_path() -> PathBuf {
    let p = shared_dir().join("models/stories260K.gguf");
    assert!(
        p.is_file(),
        "test model {} is missing (set STARKV_SHARED_DIR)",
        p.display()
    );
    p
}

pub fn load() -> Model {
    Model::load(model_path()).expect("load stories260K")
}

/// The `starkv` CLI: `STARKV_CLI`, else beside the library the crate linked.
pub fn cli_path() -> Option<PathBuf> {
    if let Some(p) = env::var_os("STARKV_CLI") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(option_env!("STARKV_BUILT_LIB_DIR")?).join("starkv");
    p.is_file().then_some(p)
}

/// Greedy continuation of `prompt` (tokenized with BOS), as the CLI prints it.
pub fn greedy_text(model: &Model, prompt: &str, n: u32) -> String {
    let mut ctx = Context::new(model, &ContextParams::default()).unwrap();
    let mut sampler = Sampler::greedy().unwrap();
    let tokens = model.tokenize(prompt, true, false).unwrap();
    let (text, r) = ctx
        .generate_to_string(Some(&mut sampler), &tokens, &GenerateParams::default().max_tokens(n))
        .unwrap();
    assert!(r.n_generated <= n);
    text
}

/// A scratch file path unique to this process and `name`.
pub fn temp_path(name: &str) -> PathBuf {
    env::temp_dir().join(format!("starkv-rust-{}-{}", std::process::id(), name))
}
