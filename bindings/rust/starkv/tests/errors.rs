//! Failures surface as Err with the library's status and message.
mod common;

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler, SamplerParams, Status};

#[test]
fn missing_file_is_io() {
    let err = Model::load("/nonexistent/dir/model.gguf").unwrap_err();
    assert_eq!(err.status(), Status::Io);
    assert!(!err.message().is_empty());
    assert!(err.to_string().starts_with("STARKV_ERR_IO"), "{err}");
}

#[test]
fn garbage_file_is_corrupt() {
    let path = common::temp_path("garbage.gguf");
    std::fs::write(&path, b"this is not a model file at all, not even close.........").unwrap();
    let err = Model::load(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert_eq!(err.status(), Status::Corrupt, "{err}");
    assert!(!err.message().is_empty());
}

#[test]
fn truncated_model_is_corrupt() {
    let bytes = std::fs::read(common::model_path()).unwrap();
    for keep in [bytes.len() / 2, 4096, 24] {
        let path = common::temp_path(&format!("truncated-{keep}.gguf"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = Model::load(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert_eq!(err.status(), Status::Corrupt, "{keep} bytes: {err}");
    }
}

#[test]
fn nul_in_path_is_invalid_argument() {
    let err = Model::load("bad\0path").unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
}

#[test]
fn context_overflow_is_context_full() {
    let model = common::load();
    let mut ctx = Context::new(&model, &ContextParams::default().n_ctx(16)).unwrap();
    let tokens = model
        .tokenize(&"Once upon a time there was a dog. ".repeat(4), true, false)
        .unwrap();
    assert!(tokens.len() > 16);
    let err = ctx.eval(&tokens, false).unwrap_err();
    assert_eq!(err.status(), Status::ContextFull, "{err}");
    assert!(!err.message().is_empty());
    assert_eq!(ctx.n_past(), 0, "nothing changed");
    // A prompt that does not fit is an error of generate too.
    let err = ctx
        .generate_to_string(None, &tokens, &GenerateParams::default())
        .unwrap_err();
    assert_eq!(err.status(), Status::ContextFull);
    // And the context still works.
    ctx.eval(&tokens[..8], false).unwrap();
    let err = ctx.eval(&tokens[..9], false).unwrap_err();
    assert_eq!(err.status(), Status::ContextFull);
    assert_eq!(ctx.n_past(), 8);
}

#[test]
fn bad_arguments_are_invalid_argument() {
    let model = common::load();
    let mut ctx = Context::new(&model, &ContextParams::default()).unwrap();
    // Token id out of range.
    let err = ctx.eval(&[100_000], false).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    // Logits before any eval.
    assert!(ctx.logits().is_err());
    // Rewind past the end.
    assert_eq!(ctx.rewind(5).unwrap_err().status(), Status::InvalidArgument);
    // Score needs two tokens.
    assert_eq!(ctx.score(&[1]).unwrap_err().status(), Status::InvalidArgument);
    // Sampling an empty row.
    let mut s = Sampler::new(&SamplerParams::default()).unwrap();
    assert!(s.sample(&[]).is_err());
}

#[test]
fn progress_callback_reports_and_cancels() {
    let mut seen = Vec::new();
    let model = Model::load_with_progress(common::model_path(), |p| {
        seen.push(p);
        true
    })
    .unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|p| (0.0..=1.0).contains(p)));
    drop(model);

    let err = Model::load_with_progress(common::model_path(), |_| false).unwrap_err();
    assert_eq!(err.status(), Status::Cancelled, "{err}");
}

#[test]
fn errors_are_per_thread_messages() {
    // The message is read on the failing thread: another thread's success does
    // not clear it, and concurrent failures keep their own messages.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/nonexistent/{i}/model.gguf");
                let err = Model::load(&path).unwrap_err();
                (path, err)
            })
        })
        .collect();
    for h in handles {
        let (path, err) = h.join().unwrap();
        assert_eq!(err.status(), Status::Io);
        assert!(
            err.message().contains(&path),
            "message {:?} names {path}",
            err.message()
        );
    }
}
