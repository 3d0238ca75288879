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

/// `e` and its causes, for standard error, each said once. Most of our
/// errors already end with their cause (`cannot create directory X: Not a
/// directory`), so a cause whose text is already there is left out;
/// anyhow's `{:#}` would repeat it.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        // A home below a file: the store's error names its cause.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("write");
        let home = file.join("home");
        let said =
            std::io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()).to_string();
        let e = anyhow::Error::new(state::Store::open(&home).expect_err("not a directory"))
            .context("cannot open the state directory");
        // What anyhow alone says, the cause twice:
        assert_eq!(format!("{e:#}").matches(&said).count(), 2, "{e:#}");
        assert_eq!(
            describe(&e),
            format!(
                "cannot open the state directory: cannot create directory {}: {said}",
                home.display()
            )
        );
        // A cause that its error does not name is still said.
        let bare = anyhow::anyhow!("disk full").context("cannot write the log");
        assert_eq!(describe(&bare), "cannot write the log: disk full");
    }
}
