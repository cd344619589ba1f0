//! The process-wide log callback (its own test binary: the callback is global).
mod common;

use std::sync::{Arc, Mutex};

use starkv::{LogLevel, Model};

#[test]
fn log_messages_reach_the_callback_until_cleared() {
    let seen: Arc<Mutex<Vec<(LogLevel, String)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    starkv::set_log_callback(move |level, msg| sink.lock().unwrap().push((level, msg.to_string())));
    let _m = Model::load(common::model_path()).unwrap();
    let n = {
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(l, m)| *l == LogLevel::Info && m.contains("stories260K.gguf")),
            "{seen:?}"
        );
        seen.len()
    };

    // A panicking logger is contained (the library must not see an unwind).
    starkv::set_log_callback(|_, _| panic!("logger panics"));
    let _m2 = Model::load(common::model_path()).unwrap();

    starkv::clear_log_callback();
    let _m3 = Model::load(common::model_path()).unwrap();
    assert_eq!(seen.lock().unwrap().len(), n);
}
