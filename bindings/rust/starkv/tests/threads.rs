//! The thread-safety contract: one model shared by threads, one context per thread.
mod common;

use std::sync::Arc;
use std::thread;

use starkv::{Context, ContextParams, GenerateParams, Model, Sampler};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn marker_traits() {
    assert_send::<Model>();
    assert_sync::<Model>();
    assert_send::<Context<'static>>();
    assert_send::<Sampler>();
    // Context and Sampler are !Sync: checked at compile time in the crate itself
    // (src/lib.rs) and by a compile_fail doctest on Context.
}

fn greedy(ctx: &mut Context<'_>, model: &Model) -> String {
    let prompt = model.tokenize("Once upon a time", true, false).unwrap();
    let mut s = Sampler::greedy().unwrap();
    ctx.generate_to_string(
        Some(&mut s),
        &prompt,
        &GenerateParams::default().max_tokens(120).stop_at_eos(false),
    )
    .unwrap()
    .0
}

#[test]
fn one_arc_model_four_threads_identical_greedy_text() {
    let model = Arc::new(common::load());
    let reference = {
        let mut ctx = Context::new(&model, &ContextParams::default()).unwrap();
        greedy(&mut ctx, &model)
    };
    assert!(reference.len() > 100);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let model = Arc::clone(&model);
            thread::spawn(move || {
                let mut texts = Vec::new();
                for _ in 0..3 {
                    // Alternate the two ways to tie a context to its model.
                    if i % 2 == 0 {
                        let mut ctx = Context::new(&model, &ContextParams::default().n_threads(2)).unwrap();
                        texts.push(greedy(&mut ctx, &model));
                    } else {
                        let mut ctx =
                            Context::with_shared_model(Arc::clone(&model), &ContextParams::default().n_threads(2))
                                .unwrap();
                        texts.push(greedy(&mut ctx, &model));
                    }
                }
                texts
            })
        })
        .collect();
    for h in handles {
        for text in h.join().unwrap() {
            assert_eq!(text, reference);
        }
    }
}

#[test]
fn scoped_threads_borrow_the_model() {
    let model = common::load();
    let texts: Vec<String> = thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut ctx = Context::new(&model, &ContextParams::default().n_threads(1)).unwrap();
                    greedy(&mut ctx, &model)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(texts.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn context_moves_between_threads_and_outlives_the_last_arc() {
    let model = Arc::new(common::load());
    let prompt = model.tokenize("Once upon a time", true, false).unwrap();
    let mut ctx = Context::with_shared_model(Arc::clone(&model), &ContextParams::default()).unwrap();
    let mut sampler = Sampler::greedy().unwrap();
    ctx.eval(&prompt, false).unwrap();
    drop(model); // the context keeps the model alive
                 // Continue the same sequence on another thread (Context and Sampler are Send).
    let (ctx, text) = thread::spawn(move || {
        let (text, _) = ctx
            .generate_to_string(
                Some(&mut sampler),
                &[],
                &GenerateParams::default().max_tokens(30).stop_at_eos(false),
            )
            .unwrap();
        (ctx, text)
    })
    .join()
    .unwrap();
    assert!(!text.is_empty());
    assert_eq!(ctx.n_past() as usize, prompt.len() + 30);
}
