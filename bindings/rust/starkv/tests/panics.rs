//! A panicking callback stops the C call cleanly and the panic resumes in the caller.
mod common;

use std::panic::{self, AssertUnwindSafe};

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler};

fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn panic_in_piece_callback_resumes_after_generate() {
    let model = common::load();
    let mut ctx = Context::new(&model, &ContextParams::default()).unwrap();
    let mut sampler = Sampler::greedy().unwrap();
    let prompt = model.tokenize("Once upon a time", true, false).unwrap();
    let params = GenerateParams::default().max_tokens(50).stop_at_eos(false);

    let mut calls = 0;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        ctx.generate(Some(&mut sampler), &prompt, &params, |_| {
            calls += 1;
            if calls == 3 {
                panic!("boom in callback");
            }
            true
        })
    }));
    let payload = result.expect_err("the panic comes back to the caller");
    assert_eq!(payload_text(&*payload), "boom in callback");
    assert_eq!(calls, 3, "generation stopped at the panicking call");
    // The library stopped where the callback panicked. As for a callback that
    // returns false, the context holds every emitted token: prompt + 3.
    assert_eq!(ctx.n_past() as usize, prompt.len() + 3);

    // The context and sampler still work, and give the normal text.
    ctx.reset().unwrap();
    sampler.reset().unwrap();
    let (text, _) = ctx.generate_to_string(Some(&mut sampler), &prompt, &params).unwrap();
    assert_eq!(text, {
        let mut c = Context::new(&model, &ContextParams::default()).unwrap();
        let mut s = Sampler::greedy().unwrap();
        c.generate_to_string(Some(&mut s), &prompt, &params).unwrap().0
    });
}

#[test]
fn panic_in_progress_callback_resumes_after_load() {
    let result =
        panic::catch_unwind(|| Model::load_with_progress(common::model_path(), |_| panic!("boom in progress")));
    let payload = result.expect_err("the panic comes back to the caller");
    assert_eq!(payload_text(&*payload), "boom in progress");
    // Loading still works afterwards.
    Model::load(common::model_path()).unwrap();
}
