//! Detection rule files: `monitor::Rules::load` must never panic, every
//! error but "too large" must point into the file, and evaluating what
//! loaded must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::{Kind, Observation, Rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Rules::load(&[("fuzz.yaml", text)]) {
        Ok(rules) => {
            let obs = Observation::new(Kind::Exec)
                .with("binary", "nc")
                .with("argv", text)
                .with("pid", 1u64)
                .with("new_binary", true);
            let _ = rules.evaluate(&obs).count();
        }
        Err(e) => {
            if let Some(at) = e.position() {
                assert!(at.line >= 1 && at.col >= 1, "error without a position: {e}");
            }
            let _ = e.to_string();
        }
    }
});
