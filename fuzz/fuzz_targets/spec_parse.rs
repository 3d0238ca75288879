//! Pipeline files: `spec::parse` must never panic, and every error must
//! point into the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The file's directory (the working directory) exists, so the default
    // `source` resolves and validation runs to the end.
    if let Err(e) = spec::parse(text, Path::new("fuzz.yml")) {
        assert!(e.line >= 1 && e.col >= 1, "error without a position: {e}");
        let _ = e.to_string();
    }
});
