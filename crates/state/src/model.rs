//! What the run record holds: the inputs to record a run and the records
//! read back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Identifies a run: 1, 2, 3, ... in the order runs began. Ids are never
/// reused, even if runs are deleted.
pub type RunId = i64;

/// Where a run, job or step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, not started yet.
    Pending,
    /// Started, not finished yet.
    Running,
    /// Finished with exit code 0 (a run: every job succeeded).
    Success,
    /// Finished unsuccessfully: non-zero exit, resource limit, containment.
    Failed,
    /// Killed at its wall-clock timeout.
    Timeout,
    /// Never ran, e.g. because a job it needs failed.
    Skipped,
    /// The runner process disappeared while this was in progress; how it
    /// ended is unknown.
    Lost,
    /// Stopped on request (e.g. Ctrl-C) before it finished.
    Cancelled,
    /// Stopped by a detection rule's `kill` action: frozen, its process
    /// tree recorded, killed, its leases revoked (jobs only).
    Contained,
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Timeout,
        Status::Skipped,
        Status::Lost,
        Status::Cancelled,
        Status::Contained,
    ];

    /// The lowercase name used in the database, JSON and on screen.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
            Status::Lost => "lost",
            Status::Cancelled => "cancelled",
            Status::Contained => "contained",
        }
    }

    /// Whether this status is final: everything but `Pending` and `Running`.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Whether this final status counts as a failure in run summaries:
    /// `Failed`, `Timeout`, `Lost`, `Cancelled` and `Contained`.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Status::Failed | Status::Timeout | Status::Lost | Status::Cancelled | Status::Contained
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct ParseStatusError(pub String);

impl FromStr for Status {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Status, ParseStatusError> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_owned()))
    }
}

impl ToSql for Status {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for Status {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A run about to start: what [`Store::begin_run`](crate::Store::begin_run)
/// records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// The jobs that will run, in the order they should be listed.
    pub jobs: Vec<NewJob>,
    /// The isolation layers that run degraded by the operator's explicit
    /// choice, one human-readable line each (e.g. "cgroups: not available to
    /// an unprivileged user; allowed by --allow-degraded cgroups"); empty
    /// when every layer is in force.
    pub degraded: Vec<String>,
}

/// A job of a [`NewRun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The job id, unique within the run.
    pub id: String,
    /// Ids of the jobs it needs.
    pub needs: Vec<String>,
    /// Its step names, in order; steps are addressed by index.
    pub steps: Vec<String>,
}

/// How a job ended: what [`Store::job_finished`](crate::Store::job_finished)
/// records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// The final status; must be [terminal](Status::is_terminal).
    pub status: Status,
    /// The exit code of the step that decided the outcome, if any.
    pub exit_code: Option<i32>,
    /// Why it ended this way, for people ("step compile exited 2",
    /// "memory limit", "skipped: needs build").
    pub reason: Option<String>,
    /// The job's (redacted) log file.
    pub log_path: Option<PathBuf>,
    /// The artifacts copied out, as the engine names them (e.g. paths under
    /// the job's workdir).
    pub artifacts: Vec<String>,
}

/// One line of `airlock runs list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run id.
    pub id: RunId,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// Where the run stands.
    pub status: Status,
    /// The exit code `airlock run` ended with, once finished.
    pub exit_code: Option<i32>,
    /// When the run began.
    pub started_at: Timestamp,
    /// When the run finished (absent while running, and for lost runs).
    pub finished_at: Option<Timestamp>,
    /// `finished_at - started_at`.
    pub duration_ms: Option<u64>,
    /// How many jobs the run has.
    pub jobs_total: usize,
    /// How many ended `Success`.
    pub jobs_succeeded: usize,
    /// How many ended `Failed`, `Timeout`, `Lost` or `Cancelled`.
    pub jobs_failed: usize,
    /// How many ended `Skipped`.
    pub jobs_skipped: usize,
    /// See [`NewRun::degraded`]; empty for runs recorded before this was
    /// kept.
    pub degraded: Vec<String>,
}

/// Everything recorded about one run: `airlock runs show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// The run itself.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Its jobs, in the order they were given to `begin_run`.
    pub jobs: Vec<JobRecord>,
}

/// Everything recorded about one job of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// Ids of the jobs it needs.
    pub needs: Vec<String>,
    /// Where the job stands.
    pub status: Status,
    /// See [`JobEnd::exit_code`].
    pub exit_code: Option<i32>,
    /// See [`JobEnd::reason`].
    pub reason: Option<String>,
    /// When the job started (absent if it never did).
    pub started_at: Option<Timestamp>,
    /// When the job finished.
    pub finished_at: Option<Timestamp>,
    /// `finished_at - started_at`.
    pub duration_ms: Option<u64>,
    /// See [`JobEnd::log_path`].
    pub log_path: Option<PathBuf>,
    /// See [`JobEnd::artifacts`].
    pub artifacts: Vec<String>,
    /// Its steps, by index.
    pub steps: Vec<StepRecord>,
    /// Its connections through the egress proxy and DNS responder, in the
    /// order they ended.
    pub egress: Vec<Egress>,
    /// Alerts detection rules raised, in order.
    pub alerts: Vec<crate::monitoring::Alert>,
    /// Containments, with the process tree each froze.
    pub incidents: Vec<crate::monitoring::Incident>,
    /// Execs seen in all (`processes` may hold only the first ones).
    pub execs: u64,
    /// Exec events the kernel dropped (the watch fell behind a burst).
    pub execs_lost: u64,
    /// The processes it executed, in order (capped by the engine).
    pub processes: Vec<crate::monitoring::Process>,
    /// Files it created or changed in its workspace.
    pub files: Vec<crate::monitoring::FileChange>,
    /// Where its log was cut, if its output reached the limit.
    pub output_cut: Option<OutputCut>,
}

/// A job's output reached its limit (`--max-output`): what came after was
/// neither kept nor shown, and the job ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutputCut {
    /// The limit, in bytes: the log holds this much of the output.
    pub limit: u64,
    /// Bytes the job wrote past it (counted as the job ends; 0 until then,
    /// or if the runner died first).
    pub dropped: u64,
}

/// One connection (or DNS query) of a job through its egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Egress {
    /// When it ended.
    pub at: Timestamp,
    /// `http` (a proxied request), `connect` (a tunnel), `dns`, or
    /// `direct` (a call that named an address itself, bypassing the proxy).
    pub kind: String,
    /// The host the job asked for (a name or an IP literal).
    pub host: String,
    /// The port it asked for (53 for DNS).
    pub port: u16,
    /// The address the proxy connected to or resolved, if any.
    pub addr: Option<String>,
    /// Whether the allowlist let it through.
    pub allowed: bool,
    /// The rule that allowed it, or why it was denied.
    pub detail: String,
    /// Bytes from the job to the remote.
    pub bytes_up: u64,
    /// Bytes from the remote to the job.
    pub bytes_down: u64,
    /// How long it lasted.
    pub duration_ms: u64,
}

/// Everything recorded about one step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Zero-based position in the job.
    pub index: usize,
    /// The step's name.
    pub name: String,
    /// Where the step stands.
    pub status: Status,
    /// The step's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// When the step started (absent if it never did).
    pub started_at: Option<Timestamp>,
    /// When the step finished.
    pub finished_at: Option<Timestamp>,
    /// `finished_at - started_at`.
    pub duration_ms: Option<u64>,
}

/// `finished - started` when both are known.
pub(crate) fn duration(started: Option<Timestamp>, finished: Option<Timestamp>) -> Option<u64> {
    u64::try_from(started?.until(finished?).as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(
            "Running".parse::<Status>(),
            Err(ParseStatusError("Running".into()))
        );
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal.len(), 7);
        assert!(!Status::Pending.is_terminal() && !Status::Running.is_terminal());
        assert!(Status::ALL
            .into_iter()
            .filter(|s| s.is_failure())
            .all(Status::is_terminal));
    }
}
