//! Subscribers the engine always runs: the run record (SQLite) and the
//! per-job log files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use state::{JobEnd, RunId, Status, Store};

use crate::event::{Event, Line, Subscriber};

/// Writes the run record as events arrive.
pub(crate) struct Recorder<'a> {
    pub store: &'a Store,
    pub run: RunId,
    pub logs: &'a LogFiles,
    pub artifacts: HashMap<String, Vec<String>>,
    /// The first write error, reported at the end of the run.
    pub error: Mutex<Option<state::StateError>>,
}

impl Recorder<'_> {
    fn keep(&self, r: Result<(), state::StateError>) {
        if let Err(e) = r {
            tracing::error!("cannot update the run record: {e}");
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(e);
            }
        }
    }
}

impl Subscriber for Recorder<'_> {
    fn event(&self, event: &Event) {
        let (store, run) = (self.store, self.run);
        match event {
            Event::JobStarted { job } => self.keep(store.job_started(run, job)),
            Event::StepStarted { job, index, .. } => {
                self.keep(store.step_started(run, job, *index));
            }
            Event::StepFinished {
                job,
                index,
                status,
                exit_code,
                ..
            } => self.keep(store.step_finished(run, job, *index, *status, *exit_code)),
            Event::JobFinished {
                job,
                status,
                exit_code,
                reason,
                ..
            } => {
                let artifacts = if *status == Status::Success {
                    self.artifacts.get(job).cloned().unwrap_or_default()
                } else {
                    Vec::new()
                };
                let end = JobEnd {
                    status: *status,
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    log_path: Some(self.logs.path(job)),
                    artifacts,
                };
                self.keep(store.job_finished(run, job, &end));
            }
            Event::JobSkipped { job, because } => {
                let end = JobEnd {
                    status: Status::Skipped,
                    exit_code: None,
                    reason: Some(because.clone()),
                    log_path: None,
                    artifacts: Vec::new(),
                };
                self.keep(store.job_finished(run, job, &end));
            }
            Event::RunFinished {
                status, exit_code, ..
            } => self.keep(store.run_finished(run, *status, *exit_code)),
            Event::Egress {
                job,
                kind,
                host,
                port,
                addr,
                allowed,
                detail,
                bytes_up,
                bytes_down,
                took,
            } => {
                let egress = state::Egress {
                    at: state::Timestamp::now(),
                    kind: kind.clone(),
                    host: host.clone(),
                    port: *port,
                    addr: addr.clone(),
                    allowed: *allowed,
                    detail: detail.clone(),
                    bytes_up: *bytes_up,
                    bytes_down: *bytes_down,
                    duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                };
                self.keep(store.egress(run, job, &egress));
            }
            Event::RunStarted { .. }
            | Event::SandboxReady { .. }
            | Event::TeardownFailed { .. }
            | Event::SecretLeased { .. }
            | Event::MaskAdded { .. }
            | Event::MaskRefused { .. }
            | Event::SecretRevoked { .. } => {}
        }
    }
}

/// Bytes of a job's log held before they are written to the file.
const LOG_BUFFER: usize = 64 * 1024;

/// One log file per job under `RUN_DIR/logs/`, mode 0600: the job's
/// (redacted) output with a header line per step. Synced to disk when the
/// job ends.
pub struct LogFiles {
    dir: PathBuf,
    open: Mutex<HashMap<String, BufWriter<File>>>,
}

impl LogFiles {
    /// Log files in `dir` (created when the first job starts).
    pub fn new(dir: &Path) -> LogFiles {
        LogFiles {
            dir: dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The log file of `job`.
    pub fn path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.log"))
    }

    fn with(&self, job: &str, f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if let Some(w) = open.get_mut(job) {
            if let Err(e) = f(w) {
                tracing::error!("cannot write the log of job {job}: {e}");
            }
        }
    }

    fn create(&self, job: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(self.path(job))?;
        if let Ok(mut open) = self.open.lock() {
            // Large enough that a chatty job costs one write(2) per
            // several hundred lines.
            open.insert(job.to_string(), BufWriter::with_capacity(LOG_BUFFER, file));
        }
        Ok(())
    }

    fn close(&self, job: &str) -> std::io::Result<()> {
        let w = self.open.lock().ok().and_then(|mut open| open.remove(job));
        if let Some(w) = w {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Ok(())
    }
}

impl Subscriber for LogFiles {
    fn event(&self, event: &Event) {
        match event {
            Event::JobStarted { job } => {
                if let Err(e) = self.create(job) {
                    tracing::error!("cannot create the log of job {job}: {e}");
                }
            }
            Event::StepStarted { job, index, name } => {
                self.with(job, |w| writeln!(w, "── step {}: {name}", index + 1))
            }
            Event::StepFinished {
                job,
                status,
                exit_code,
                took,
                ..
            } => self.with(job, |w| {
                let code = exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
                writeln!(w, "── {status}{code} in {}", crate::job::human(*took))
            }),
            Event::JobFinished { job, .. } => {
                if let Err(e) = self.close(job) {
                    tracing::error!("cannot finish the log of job {job}: {e}");
                }
            }
            _ => {}
        }
    }

    fn output(&self, job: &str, lines: &[Line<'_>]) {
        self.with(job, |w| {
            for line in lines {
                w.write_all(line.text)?;
                if !line.partial {
                    w.write_all(b"\n")?;
                }
            }
            Ok(())
        });
    }
}
