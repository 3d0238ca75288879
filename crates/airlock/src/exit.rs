//! Exit codes, per the command-line contract, and the error that carries one.

use std::fmt;

pub use engine::{EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_REFUSED};

/// An error that ends the command with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    /// Exit code.
    pub code: i32,
    /// Message for standard error.
    pub message: String,
}

impl Exit {
    /// Bad input (exit 2).
    pub fn bad_input(message: impl Into<String>) -> Exit {
        Exit {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Whether `e` is a write to a closed pipe (stdout piped into `head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for an error that reached `main`.
pub fn code_of(e: &anyhow::Error) -> i32 {
    if let Some(exit) = e.downcast_ref::<Exit>() {
        return exit.code;
    }
    if e.downcast_ref::<spec::SpecError>().is_some() {
        return EXIT_BAD_INPUT;
    }
    match e.downcast_ref::<engine::EngineError>() {
        Some(engine::EngineError::Refused(engine::Refusal::BadInput(_))) => EXIT_BAD_INPUT,
        Some(engine::EngineError::Refused(engine::Refusal::Unavailable(_))) => EXIT_REFUSED,
        _ => EXIT_INTERNAL,
    }
}
