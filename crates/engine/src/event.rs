//! The typed events of a run, and the bus that hands them to subscribers.
//!
//! Everything the engine does becomes an [`Event`]; the run record, the log
//! files and the terminal are subscribers (the audit log and the monitor
//! will be too). A job's output lines are not events: they travel to the
//! same subscribers through [`Subscriber::output`], after redaction.

use std::time::Duration;

use serde::Serialize;
use state::{RunId, Status};

/// Something that happened in a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run was admitted and recorded.
    RunStarted {
        /// Run id.
        run: RunId,
        /// Pipeline name.
        pipeline: String,
        /// Jobs of the run, in topological order.
        jobs: Vec<String>,
        /// Layers running degraded by the operator's choice, with why.
        degraded: Vec<String>,
    },
    /// A job's sandbox is being created.
    JobStarted {
        /// Job id.
        job: String,
    },
    /// The job's sandbox is up.
    SandboxReady {
        /// Job id.
        job: String,
        /// The isolation layers in force (seccomp, landlock, capabilities,
        /// rlimits, proc_masking, cgroup).
        layers: Vec<String>,
        /// Time to create it.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// A secret was leased to a job (never its value).
    SecretLeased {
        /// Job id.
        job: String,
        /// Secret name.
        name: String,
        /// Version leased.
        version: u32,
        /// Lease id.
        lease: String,
    },
    /// A job's lease was revoked as the job ended.
    SecretRevoked {
        /// Job id.
        job: String,
        /// Secret name.
        name: String,
        /// Lease id.
        lease: String,
    },
    /// The job registered a value to mask (never the value itself).
    MaskAdded {
        /// Job id.
        job: String,
        /// Values the job has registered so far.
        count: usize,
    },
    /// The job registered a value that cannot be masked; output is not
    /// masked for it.
    MaskRefused {
        /// Job id.
        job: String,
        /// Why (never the value).
        reason: String,
    },
    /// A job's output reached the most a job may have kept: its log and
    /// the live output stop here; the job runs on, its output read and
    /// dropped.
    OutputLimited {
        /// Job id.
        job: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// As a job whose output reached its limit ends: how much more it
    /// wrote.
    OutputDropped {
        /// Job id.
        job: String,
        /// Bytes written past the limit.
        bytes: u64,
    },
    /// A job's egress proxy or DNS responder handled a connection or a
    /// query, allowed or denied (reported when it ends), or a call of the
    /// job tried to reach an address directly. Names the job chose are
    /// redacted with the job's secrets.
    Egress {
        /// Job id.
        job: String,
        /// `http` (a proxied request), `connect` (a tunnel), `dns`, or
        /// `direct` (a call that named an address, bypassing the proxy).
        kind: String,
        /// The host the job asked for.
        host: String,
        /// The port it asked for (53 for DNS).
        port: u16,
        /// The address connected to or resolved, if any.
        addr: Option<String>,
        /// Whether the allowlist let it through.
        allowed: bool,
        /// The rule that allowed it, or why it was denied.
        detail: String,
        /// Bytes from the job to the remote.
        bytes_up: u64,
        /// Bytes from the remote to the job.
        bytes_down: u64,
        /// How long it lasted.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// A detection rule matched something the job did.
    Alert {
        /// Job id.
        job: String,
        /// The rule's id.
        rule: String,
        /// `info`, `low`, `medium`, `high` or `critical`.
        severity: String,
        /// What the rule catches.
        description: String,
        /// `alert`, or `kill` (the job is being contained).
        action: String,
        /// The matching observation in one line, redacted.
        summary: String,
        /// The observation's fields, redacted.
        observation: serde_json::Value,
    },
    /// A rule matched more often than a job's alerts may show; the rest
    /// are counted here as the job ends.
    AlertsSuppressed {
        /// Job id.
        job: String,
        /// The rule's id.
        rule: String,
        /// Matches not reported one by one.
        count: u64,
    },
    /// A rule's `kill` action contained the job: its cgroup was frozen,
    /// its process tree recorded, every process killed and its leases
    /// revoked.
    Contained {
        /// Job id.
        job: String,
        /// The rule that acted.
        rule: String,
        /// What it matched, redacted.
        summary: String,
        /// The job's processes as they were frozen (arguments redacted).
        processes: Vec<state::Process>,
        /// From the triggering observation to the job being dead.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// What a job did, as it ends: the processes it executed (the first
    /// ones), the files left in its workspace, and the endpoints and
    /// binaries a successful run adds to the job's baseline.
    JobActivity {
        /// Job id.
        job: String,
        /// Execs seen in all.
        execs: u64,
        /// Exec events the kernel dropped when the watch fell behind.
        execs_lost: u64,
        /// How execs were seen: `connector`, `polling`, or `off`.
        source: String,
        /// The first processes it executed.
        processes: Vec<state::Process>,
        /// Files in its workspace when it ended.
        files: Vec<state::FileChange>,
        /// Endpoints the egress proxy allowed (`host:port`).
        endpoints: std::collections::BTreeSet<String>,
        /// Executable paths it ran.
        binaries: std::collections::BTreeSet<String>,
    },
    /// A step began.
    StepStarted {
        /// Job id.
        job: String,
        /// 0-based step index.
        index: usize,
        /// Step name.
        name: String,
    },
    /// A step ended.
    StepFinished {
        /// Job id.
        job: String,
        /// 0-based step index.
        index: usize,
        /// Step name.
        name: String,
        /// Outcome.
        status: Status,
        /// Exit code, when it exited.
        exit_code: Option<i32>,
        /// Wall time.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// A job ended (its sandbox is gone).
    JobFinished {
        /// Job id.
        job: String,
        /// Outcome.
        status: Status,
        /// Exit code of the failing step, or 0.
        exit_code: Option<i32>,
        /// Why it did not succeed.
        reason: Option<String>,
        /// Wall time, sandbox included.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// A job did not run because a job it needs did not succeed.
    JobSkipped {
        /// Job id.
        job: String,
        /// The need that failed.
        because: String,
    },
    /// Processes of a job survived its teardown (never expected).
    TeardownFailed {
        /// Job id.
        job: String,
        /// Host pids still alive.
        pids: Vec<i32>,
        /// cgroup directories not removed.
        cgroups: Vec<std::path::PathBuf>,
    },
    /// The run ended.
    RunFinished {
        /// Run id.
        run: RunId,
        /// Outcome.
        status: Status,
        /// Exit code of `airlock run`.
        exit_code: i32,
        /// Wall time.
        #[serde(with = "millis")]
        took: Duration,
    },
}

/// One line of a job's output, redacted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line, without its line break.
    pub text: &'a [u8],
    /// The job has not finished the line yet: it was passed on to keep
    /// output live (the job paused) or because it grew too long.
    pub partial: bool,
}

/// Receives events and output lines. Called from job threads (and their
/// steps' output threads) concurrently.
pub trait Subscriber: Send + Sync {
    /// An event happened.
    fn event(&self, event: &Event);
    /// A job wrote these lines, in this order. A chatty job's lines come
    /// in batches of up to a few hundred, so that a subscriber pays its
    /// per-call costs (locks, lookups, clocks) per batch, not per line.
    fn output(&self, _job: &str, _lines: &[Line<'_>]) {}
    /// The job's output paused (an idle tick, or a step ended): a
    /// subscriber that batches output lines shows what it holds now.
    fn flush(&self) {}
}

/// Hands every event to every subscriber, in order.
#[derive(Default)]
pub struct Bus<'a> {
    subscribers: Vec<&'a dyn Subscriber>,
}

impl<'a> Bus<'a> {
    /// A bus with these subscribers.
    pub fn new(subscribers: Vec<&'a dyn Subscriber>) -> Bus<'a> {
        Bus { subscribers }
    }

    /// Publishes an event.
    pub fn emit(&self, event: Event) {
        for s in &self.subscribers {
            s.event(&event);
        }
    }

    /// Tells every subscriber that output paused.
    pub fn flush(&self) {
        for s in &self.subscribers {
            s.flush();
        }
    }

    /// Publishes output lines of `job`.
    pub fn output(&self, job: &str, lines: &[Line<'_>]) {
        for s in &self.subscribers {
            s.output(job, lines);
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
