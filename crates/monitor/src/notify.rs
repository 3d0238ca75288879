//! Alert delivery: a signed webhook and an operator's command hook, fed
//! by a background worker that never blocks the engine.
//!
//! The engine builds an [`Alert`] (already redacted) and hands it to
//! [`Notifier::send`], which queues it and returns at once. A worker
//! thread delivers each alert to every [`Target`] in order: a [`Webhook`]
//! gets a JSON POST signed with HMAC-SHA256 (see [`verify`]) and retried
//! with backoff; a [`CommandHook`] gets the JSON on stdin. Each outcome is
//! passed to a callback as it happens, so the engine can audit a failed
//! delivery, and [`Notifier::finish`] sums them up.
//!
//! Unlike the rest of this crate, this module does I/O: it opens
//! connections and runs processes.

mod alert;
mod hook;
mod sign;
mod webhook;
mod worker;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

pub use alert::Alert;
pub use hook::{CommandHook, PASSED_ENV};
pub use sign::{sign, verify, SCHEME};
pub use webhook::{
    Retry, Webhook, WebhookKey, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, USER_AGENT,
};
pub use worker::{DeliveryReport, Failure, Notifier, NotifierBuilder, Outcome};

/// Why an alert could not be delivered, or a target not set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The webhook URL is not one alerts can be posted to.
    #[error("webhook url {url}: {reason}")]
    BadUrl {
        /// The URL, without query or credentials.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The receiver answered with a status that is not 2xx.
    #[error("webhook {url}: status {status} on attempt {attempt} of {of}")]
    Status {
        /// The URL, without query.
        url: String,
        /// The status of the last attempt.
        status: u16,
        /// The attempts made.
        attempt: u32,
        /// The attempts allowed.
        of: u32,
    },
    /// No answer: connection refused or reset, timeout, TLS failure.
    #[error("webhook {url}: {reason} on attempt {attempt} of {of}")]
    Transport {
        /// The URL, without query.
        url: String,
        /// What went wrong on the last attempt.
        reason: String,
        /// The attempts made.
        attempt: u32,
        /// The attempts allowed.
        of: u32,
    },
    /// The key file could not be read.
    #[error("webhook key file {}: {source}", .path.display())]
    KeyRead {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file is open to group or others.
    #[error(
        "webhook key file {} has mode {mode:04o}: group or others may read or write it (chmod 600 it)",
        .path.display()
    )]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a usable key.
    #[error("webhook key file {}: {reason}", .path.display())]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The hook's program could not be started.
    #[error("hook {}: cannot start: {source}", .program.display())]
    HookSpawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Waiting for the hook failed.
    #[error("hook {}: waiting for it: {source}", .program.display())]
    HookWait {
        /// The program.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The hook exited with a non-zero status or was killed by a signal.
    #[error("hook {}: {status}{}", .program.display(), stderr_suffix(.stderr))]
    HookExit {
        /// The program.
        program: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The first line it wrote to stderr, cut short.
        stderr: String,
    },
    /// The hook ran past its timeout and was killed.
    #[error("hook {}: killed after running past its {timeout:?} timeout", .program.display())]
    HookTimeout {
        /// The program.
        program: PathBuf,
        /// Its timeout.
        timeout: Duration,
    },
    /// The hook was killed because the notifier ran out of time.
    #[error("hook {}: killed, delivery out of time", .program.display())]
    HookCancelled {
        /// The program.
        program: PathBuf,
    },
    /// The delivery thread could not be started.
    #[error("starting the alert delivery thread: {0}")]
    Thread(io::Error),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Somewhere alerts go.
#[derive(Debug)]
pub enum Target {
    /// A signed JSON POST.
    Webhook(Webhook),
    /// An operator's command.
    Command(CommandHook),
}

impl Target {
    /// How messages name it: `webhook <url>` or `hook <program>`.
    pub fn name(&self) -> String {
        match self {
            Target::Webhook(w) => format!("webhook {}", w.url()),
            Target::Command(c) => format!("hook {}", c.program().display()),
        }
    }

    /// Delivers `alert`, blocking; returns the attempts it took.
    pub fn deliver(&self, alert: &Alert) -> Result<u32, NotifyError> {
        self.deliver_until(alert, &Cancel::default())
    }

    fn deliver_until(&self, alert: &Alert, cancel: &Cancel) -> Result<u32, NotifyError> {
        match self {
            Target::Webhook(w) => w.deliver_until(alert, cancel),
            Target::Command(c) => c.deliver_until(alert, cancel).map(|()| 1),
        }
    }
}

impl From<Webhook> for Target {
    fn from(w: Webhook) -> Target {
        Target::Webhook(w)
    }
}

impl From<CommandHook> for Target {
    fn from(c: CommandHook) -> Target {
        Target::Command(c)
    }
}

/// A flag that stops waits early: set when the notifier runs out of time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<(Mutex<bool>, Condvar)>);

impl Cancel {
    /// Sets the flag and wakes every sleeper.
    pub(crate) fn cancel(&self) {
        let (flag, wake) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Whether the flag is set.
    pub(crate) fn is_cancelled(&self) -> bool {
        *self.0 .0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps for `duration` or until the flag is set; whether it is set.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let (flag, wake) = &*self.0;
        let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = wake
            .wait_timeout_while(guard, duration, |cancelled| !*cancelled)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}
