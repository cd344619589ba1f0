//! Loads a model, streams a story to stdout, prints tokens/s to stderr.
//!
//!   cargo run --example generate -- [MODEL] [PROMPT] [N_TOKENS]
//!
//! MODEL defaults to `$STARKV_SHARED_DIR/models/stories260K.gguf` (or
//! `<repo>/../shared/...`). Sampling: temperature 0.8, seed 0 (set `TEMP` / `SEED`).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler, SamplerParams};

fn default_model() -> PathBuf {
    let shared = std::env::var_os("STARKV_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../../shared"));
    shared.join("models/stories260K.gguf")
}

fn run() -> starkv::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args.next().map(PathBuf::from).unwrap_or_else(default_model);
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".to_string());
    let n_tokens: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let temp: f32 = std::env::var("TEMP").ok().and_then(|s| s.parse().ok()).unwrap_or(0.8);
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);

    let model = Model::load(&model_path)?;
    let mut ctx = Context::new(&model, &ContextParams::default())?;
    let mut sampler = Sampler::new(&SamplerParams::default().temperature(temp).seed(seed))?;
    let tokens = model.tokenize(&prompt, true, false)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let r = ctx.generate(
        Some(&mut sampler),
        &tokens,
        &GenerateParams::default().max_tokens(n_tokens),
        |piece| {
            // Stop quietly if stdout is closed (e.g. piped into `head`).
            write!(out, "{piece}").and_then(|_| out.flush()).is_ok()
        },
    )?;
    let _ = writeln!(out);
    eprintln!(
        "prompt: {} tokens in {:.3} s | decode: {} tokens, {:.1} tokens/s | stop: {:?}",
        r.n_prompt_tokens,
        r.prompt_seconds,
        r.n_generated,
        r.decode_tokens_per_second(),
        r.stop_reason
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
